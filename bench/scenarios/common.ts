/**
 * Shared helpers of the benchmark scenarios: running commands, temp dirs, buildah/podman storage
 * roots of their own, deterministic data sets, plain-HTTP registries on fixed loopback ports.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createCipheriv, createHash } from 'node:crypto';
import { promises as fs, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import * as net from 'node:net';
import * as http from 'node:http';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Scenario } from '../harness.js';

/** The repository root (dist/bench/scenarios/common.js → ../../..). */
export const REPO_ROOT = fileURLToPath(new URL('../../../', import.meta.url));
export const ARCHWAY_BIN = path.join(REPO_ROOT, 'bin', 'archway');
export const DIST_BENCH = fileURLToPath(new URL('../', import.meta.url));

/** BENCH_SCALE (default 1) scales the data sizes down (or up). */
export function scale(): number {
  const s = Number(process.env['BENCH_SCALE'] ?? '1');
  return Number.isFinite(s) && s > 0 ? s : 1;
}

export interface PreparedScenario {
  scenario: Scenario;
  cleanup: () => Promise<void>;
}

export interface ScenarioDef {
  name: string;
  setup: () => Promise<PreparedScenario>;
}

export class PeerUnavailable extends Error {}

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

export function runCommand(argv: string[], opts: { env?: NodeJS.ProcessEnv; cwd?: string } = {}): Promise<RunResult> {
  return new Promise((resolve) => {
    const [cmd, ...args] = argv as [string, ...string[]];
    const child = spawn(cmd, args, { env: { ...process.env, ...opts.env }, cwd: opts.cwd, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout = (stdout + d.toString()).slice(-20000)));
    child.stderr.on('data', (d: Buffer) => (stderr = (stderr + d.toString()).slice(-20000)));
    child.on('error', (e) => resolve({ code: 127, stdout, stderr: stderr + String(e) }));
    child.on('close', (code) => resolve({ code: code ?? 1, stdout, stderr }));
  });
}

/** Runs a command and throws (with its output) when it fails. */
export async function mustRun(argv: string[], opts: { env?: NodeJS.ProcessEnv; cwd?: string } = {}): Promise<RunResult> {
  const r = await runCommand(argv, opts);
  if (r.code !== 0) throw new Error(`${argv.join(' ')} failed (${r.code}): ${(r.stderr.trim() || r.stdout.trim()).split('\n').slice(-8).join('\n')}`);
  return r;
}

export function makeTempDir(label: string): string {
  return mkdtempSync(path.join(tmpdir(), `archway-bench-${label}-`));
}

/** Unmounts whatever is still mounted below dir (overlay leftovers), then removes it. */
export async function removeTree(dir: string): Promise<void> {
  let mounts: string[] = [];
  try {
    mounts = readFileSync('/proc/mounts', 'utf8')
      .split('\n')
      .map((l) => (l.split(' ')[1] ?? '').replace(/\\040/g, ' '))
      .filter((m) => m === dir || m.startsWith(`${dir}/`))
      .sort((a, b) => b.length - a.length);
  } catch {
    /* no /proc: nothing to unmount */
  }
  for (const m of mounts) await runCommand(['umount', '-l', m]);
  await fs.rm(dir, { recursive: true, force: true });
}

export function archwayArgv(...args: string[]): string[] {
  // bin/archway is the installed command: a launcher that runs dist/archway.mjs.
  return [ARCHWAY_BIN, ...args];
}

/** An archway with its own store. */
export interface ArchwayEnv {
  home: string;
  env: NodeJS.ProcessEnv;
}

export function archwayEnv(base: string): ArchwayEnv {
  const home = path.join(base, 'archway-home');
  return { home, env: { ARCHWAY_HOME: home, NO_COLOR: '1' } };
}

/** buildah/podman with their own storage root, runroot and containers.conf. */
export interface ContainersEnv {
  root: string;
  runroot: string;
  driver: string;
  env: NodeJS.ProcessEnv;
  /** `buildah --root R --runroot RR --storage-driver D` */
  buildah: (...args: string[]) => string[];
  podman: (...args: string[]) => string[];
}

export function containersEnv(base: string, driver: string): ContainersEnv {
  const root = path.join(base, `containers-root-${driver}`);
  // podman refuses a runroot longer than 50 characters: keep it short, apart from `base`.
  const runroot = path.join(mkdtempSync(path.join(tmpdir(), 'awb-')), driver);
  const conf = path.join(base, 'containers.conf');
  writeFileSync(conf, '[containers]\ndefault_ulimits = []\n');
  const env: NodeJS.ProcessEnv = { CONTAINERS_CONF: conf, TMPDIR: base };
  const global = ['--root', root, '--runroot', runroot, '--storage-driver', driver];
  return {
    root,
    runroot,
    driver,
    env,
    buildah: (...args) => ['buildah', ...global, ...args],
    podman: (...args) => ['podman', ...global, '--events-backend', 'file', '--cgroup-manager', 'cgroupfs', ...args],
  };
}

export async function removeContainersEnv(c: ContainersEnv): Promise<void> {
  await runCommand(c.buildah('rm', '--all'), { env: c.env });
  await removeTree(path.dirname(c.runroot));
  await removeTree(c.root);
}

/**
 * Runs `first` with overlay storage; when that fails, wipes and runs it with vfs. Returns the
 * environment that worked; throws PeerUnavailable when neither does.
 */
export async function containersWithFallback(base: string, first: (c: ContainersEnv) => Promise<void>): Promise<ContainersEnv> {
  const errors: string[] = [];
  for (const driver of ['overlay', 'vfs']) {
    const c = containersEnv(base, driver);
    try {
      await first(c);
      return c;
    } catch (e) {
      errors.push(`${driver}: ${e instanceof Error ? e.message : String(e)}`);
      await removeContainersEnv(c);
      if (driver === 'overlay') console.log(`# overlay storage failed for the peer, falling back to vfs: ${errors[0]?.split('\n').slice(-1)[0] ?? ''}`);
    }
  }
  throw new PeerUnavailable(errors.join('\n'));
}

// ---------------------------------------------------------------------------------------------
// Deterministic data

/** A deterministic pseudo-random byte stream (AES-128-CTR over zeros, keyed by the seed). */
export function pseudoRandom(seed: string, size: number): Buffer {
  const key = createHash('sha256').update(`key:${seed}`).digest().subarray(0, 16);
  const iv = createHash('sha256').update(`iv:${seed}`).digest().subarray(0, 16);
  const c = createCipheriv('aes-128-ctr', key, iv);
  return Buffer.concat([c.update(Buffer.alloc(size)), c.final()]);
}

const WORDS = ['layer', 'image', 'index', 'manifest', 'platform', 'arm64', 'amd64', 'blob', 'digest', 'config', 'registry', 'build', 'stage', 'copy', 'run', 'cache'];

/** Compressible, text-like content. */
function textLike(seed: string, size: number): Buffer {
  const rnd = pseudoRandom(seed, Math.ceil(size / 4) + 16);
  const parts: string[] = [];
  let len = 0;
  let i = 0;
  while (len < size) {
    const w = `${WORDS[(rnd[i % rnd.length] ?? 0) % WORDS.length]}${(rnd[(i + 1) % rnd.length] ?? 0) % 7 === 0 ? '\n' : ' '}`;
    parts.push(w);
    len += w.length;
    i += 2;
  }
  return Buffer.from(parts.join('')).subarray(0, size);
}

export interface DataSetOptions {
  /** Total bytes (approximately). */
  bytes: number;
  seed: string;
  /** Share of bytes in a few large files (default 0.7). */
  largeShare?: number;
  /** Share of compressible (text-like) content among the small files; large files alternate (default: random). */
  mixed?: boolean;
}

/**
 * Writes a deterministic tree: 4 large files holding `largeShare` of the bytes, and the rest in
 * many small files (1–32 KiB) spread over nested directories.
 */
export async function writeDataSet(dir: string, opts: DataSetOptions): Promise<void> {
  await fs.mkdir(dir, { recursive: true });
  const largeShare = opts.largeShare ?? 0.7;
  const largeTotal = Math.floor(opts.bytes * largeShare);
  const largeCount = 4;
  for (let i = 0; i < largeCount; i++) {
    const size = Math.floor(largeTotal / largeCount);
    const seed = `${opts.seed}/large/${i}`;
    const content = opts.mixed && i % 2 === 1 ? textLike(seed, size) : pseudoRandom(seed, size);
    await fs.writeFile(path.join(dir, `large-${i}.bin`), content);
  }
  let remaining = opts.bytes - largeTotal;
  const sizes = pseudoRandom(`${opts.seed}/sizes`, 1 << 16);
  let n = 0;
  while (remaining > 0) {
    const size = Math.min(remaining, 1024 + (((sizes[(2 * n) % sizes.length] ?? 0) << 8) | (sizes[(2 * n + 1) % sizes.length] ?? 0)) % (31 * 1024));
    const sub = path.join(dir, `d${n % 16}`, `e${Math.floor(n / 16) % 8}`);
    if (n < 128) await fs.mkdir(sub, { recursive: true });
    const seed = `${opts.seed}/small/${n}`;
    const content = opts.mixed && n % 3 === 0 ? textLike(seed, size) : pseudoRandom(seed, size);
    await fs.writeFile(path.join(sub, `f${n}.dat`), content);
    remaining -= size;
    n++;
  }
}

// ---------------------------------------------------------------------------------------------
// Registries

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      const port = typeof addr === 'object' && addr ? addr.port : 0;
      srv.close(() => resolve(port));
    });
  });
}

export interface BenchRegistry {
  host: string;
  stop(): Promise<void>;
}

const liveRegistries = new Set<ChildProcess>();
process.on('exit', () => {
  for (const c of liveRegistries) if (c.exitCode === null) c.kill('SIGKILL');
});

function probe(url: string): Promise<number> {
  return new Promise((resolve) => {
    const req = http.get(url, { agent: false }, (res) => {
      res.resume();
      resolve(res.statusCode ?? 0);
    });
    req.on('error', () => resolve(0));
    req.setTimeout(1000, () => req.destroy());
  });
}

/** A plain-HTTP docker-registry (distribution) on 127.0.0.1:port with fresh storage. */
export async function startRegistry(port?: number): Promise<BenchRegistry> {
  const p = port ?? (await freePort());
  const dir = makeTempDir('registry');
  const config = path.join(dir, 'config.yml');
  writeFileSync(
    config,
    [
      'version: 0.1',
      'log:',
      '  level: error',
      '  accesslog:',
      '    disabled: true',
      'storage:',
      '  filesystem:',
      `    rootdirectory: ${JSON.stringify(path.join(dir, 'storage'))}`,
      '  delete:',
      '    enabled: true',
      '  maintenance:',
      '    uploadpurging:',
      '      enabled: false',
      'http:',
      `  addr: "127.0.0.1:${p}"`,
      '',
    ].join('\n'),
  );
  const child = spawn('docker-registry', ['serve', config], { stdio: ['ignore', 'ignore', 'pipe'], env: { PATH: process.env['PATH'] ?? '/usr/bin:/bin', HOME: dir } });
  liveRegistries.add(child);
  let logs = '';
  child.stderr?.on('data', (d: Buffer) => (logs = (logs + d.toString()).slice(-4000)));
  const deadline = Date.now() + 20_000;
  for (;;) {
    if (child.exitCode !== null) {
      rmSync(dir, { recursive: true, force: true });
      throw new Error(`docker-registry exited (${child.exitCode}): ${logs}`);
    }
    if ((await probe(`http://127.0.0.1:${p}/v2/`)) === 200) break;
    if (Date.now() > deadline) {
      child.kill('SIGKILL');
      rmSync(dir, { recursive: true, force: true });
      throw new Error(`docker-registry did not come up on port ${p}: ${logs}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  let stopped = false;
  return {
    host: `127.0.0.1:${p}`,
    async stop() {
      if (stopped) return;
      stopped = true;
      if (child.exitCode === null) {
        const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
        child.kill('SIGTERM');
        const t = setTimeout(() => child.kill('SIGKILL'), 3000);
        await exited;
        clearTimeout(t);
      }
      liveRegistries.delete(child);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
