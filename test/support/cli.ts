/** Runs the archway CLI as a user would (bin/archway, the installed command) and captures the result. */
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough, Readable } from 'node:stream';
import { parsePlatformList } from '../../src/oci/index.js';
import { main } from '../../src/cli/main.js';
import { makeBusyboxContext } from './make-busybox-context.js';

export const ARCHWAY_BIN = fileURLToPath(new URL('../../../bin/archway', import.meta.url));
export const REPO_ROOT = fileURLToPath(new URL('../../../', import.meta.url));

export interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

export interface CliOptions {
  env?: NodeJS.ProcessEnv;
  cwd?: string;
  input?: string;
  timeoutMs?: number;
  /** Called with the child as soon as it starts (to send signals). */
  onSpawn?: (child: import('node:child_process').ChildProcess) => void;
}

export function archway(args: string[], opts: CliOptions = {}): Promise<CliResult> {
  // The launcher runs the bundle with ARCHWAY_NODE: the Node running the tests (20 or 24).
  return runCommand(ARCHWAY_BIN, args, { ...opts, env: { ARCHWAY_NODE: process.execPath, ...opts.env } });
}

/**
 * `archway ARGS` in this process, through the CLI's library form (main), with its own environment
 * and an empty stdin: for tests that need the compiled code, not the bundle, or a fault server
 * in the same process.
 */
export async function archwayInProcess(args: string[], env: NodeJS.ProcessEnv): Promise<{ code: number; stdout: string; stderr: string }> {
  const out = new PassThrough();
  const err = new PassThrough();
  let stdout = '';
  let stderr = '';
  out.on('data', (d: Buffer) => (stdout += d.toString()));
  err.on('data', (d: Buffer) => (stderr += d.toString()));
  const code = await main(args, { stdout: out, stderr: err, stdin: Readable.from([]), env }, new AbortController().signal);
  return { code, stdout, stderr };
}

/** Writes `files` (paths relative to `dir`, parents made) into `dir`, a build context; returns `dir`. */
export function writeFiles(dir: string, files: Record<string, string>): string {
  mkdirSync(dir, { recursive: true });
  for (const [name, content] of Object.entries(files)) {
    mkdirSync(join(dir, name, '..'), { recursive: true });
    writeFileSync(join(dir, name), content);
  }
  return dir;
}

export function runCommand(cmd: string, args: string[], opts: CliOptions = {}): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { env: { ...process.env, ...opts.env }, cwd: opts.cwd, stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 600_000);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
    opts.onSpawn?.(child);
    if (opts.input !== undefined) child.stdin.end(opts.input);
    else child.stdin.end();
  });
}

/** A fresh ARCHWAY_HOME (and config dirs) for one test file; removed at the end. */
export function tempHome(prefix = 'archway-test-'): { env: NodeJS.ProcessEnv; dir: string; cleanup: () => void } {
  const dir = mkdtempSync(join(process.env.ARCHWAY_TEST_TMP ?? tmpdir(), prefix));
  return {
    dir,
    env: { ARCHWAY_HOME: join(dir, 'home'), DOCKER_CONFIG: join(dir, 'docker'), ARCHWAY_CONFIG: join(dir, 'config.toml'), XDG_CONFIG_HOME: join(dir, 'xdg') },
    cleanup: () => rmSync(dir, { recursive: true, force: true }),
  };
}

/** Fails with the command's output when it did not exit as expected. */
export function expectCode(r: CliResult, code: number, what: string): CliResult {
  if (r.code !== code) throw new Error(`${what}: exit ${r.code}, expected ${code}\n--- stdout\n${r.stdout}\n--- stderr\n${r.stderr}`);
  return r;
}

/**
 * Builds the busybox base image `tag` for `platforms` (from Debian's busybox-static) into the store
 * of `env`, with archway itself, as the integration tests' FROM.
 */
export async function buildBusyboxBase(dir: string, env: NodeJS.ProcessEnv, platforms: string, tag: string): Promise<void> {
  const ctx = join(dir, `busybox-ctx-${tag.replace(/[^a-z0-9]+/gi, '-')}`);
  await makeBusyboxContext(ctx, parsePlatformList(platforms));
  expectCode(await archway(['build', '--progress', 'plain', '--platform', platforms, '-t', tag, ctx], { env }), 0, `build the busybox base ${tag}`);
}
