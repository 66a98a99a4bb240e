import { strict as assert } from 'node:assert';
import { existsSync, lstatSync, mkdirSync, mkdtempSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { PassThrough, Readable } from 'node:stream';
import { describe, it, before } from 'node:test';
import { ArchwayError } from '../../src/util/index.js';
import { nullProgress } from '../../src/progress/index.js';
import { parseCommandArgs, type Command, type CommandContext } from '../../src/cli/command.js';
import { loginCommand } from '../../src/cli/commands/login.js';
import { logoutCommand } from '../../src/cli/commands/logout.js';
import { startRegistry, type TestRegistry } from '../support/registries.js';

interface Run {
  code: number | undefined;
  error: unknown;
  stdout: string;
  stderr: string;
}

async function run(cmd: Command, argv: string[], env: NodeJS.ProcessEnv, stdin: string): Promise<Run> {
  const out = new PassThrough();
  const err = new PassThrough();
  let stdout = '';
  let stderr = '';
  out.on('data', (d: Buffer) => (stdout += d.toString()));
  err.on('data', (d: Buffer) => (stderr += d.toString()));
  const { values, positionals } = parseCommandArgs(cmd, argv, `archway ${cmd.name}`);
  const ctx: CommandContext = { values, positionals, stdout: out, stderr: err, stdin: Readable.from([Buffer.from(stdin)]), env, signal: new AbortController().signal, progress: nullProgress, debug: false };
  try {
    const code = await cmd.run?.(ctx);
    return { code, error: undefined, stdout, stderr };
  } catch (e) {
    return { code: undefined, error: e, stdout, stderr };
  }
}

describe('archway login / logout commands', () => {
  let reg: TestRegistry;
  let env: NodeJS.ProcessEnv;
  let configDir: string;
  before(async () => {
    reg = await startRegistry({ kind: 'htpasswd' });
    configDir = mkdtempSync(path.join(tmpdir(), 'archway-docker-config-'));
    env = { ...process.env, DOCKER_CONFIG: configDir, ARCHWAY_CONFIG: path.join(configDir, 'missing.toml') };
  });

  it('--password-stdin with a wrong password: AUTH (exit 4), nothing saved, no password in output', async () => {
    const wrong = 'Totally-Wrong-Pass-123';
    const r = await run(loginCommand, [reg.host, '-u', reg.user as string, '--password-stdin'], env, `${wrong}\n`);
    assert.ok(r.error instanceof ArchwayError);
    assert.equal(r.error.exitCode, 4);
    for (const text of [r.stdout, r.stderr, r.error.message, r.error.hint ?? '']) assert.ok(!text.includes(wrong));
    assert.equal(existsSync(path.join(configDir, 'config.json')), false);
  });

  it('a config.json that is a symlink stays one: login writes the file it points to', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'archway-docker-config-link-'));
    const real = path.join(dir, 'dotfiles');
    mkdirSync(real);
    writeFileSync(path.join(real, 'config.json'), '{"auths":{},"psFormat":"table {{.ID}}"}\n', { mode: 0o600 });
    const linked = path.join(dir, 'docker');
    mkdirSync(linked);
    symlinkSync('../dotfiles/config.json', path.join(linked, 'config.json'));
    const r = await run(loginCommand, [reg.host, '-u', reg.user as string, '--password-stdin'], { ...env, DOCKER_CONFIG: linked }, `${reg.password as string}\n`);
    assert.equal(r.code, 0, String(r.error));
    assert.ok(lstatSync(path.join(linked, 'config.json')).isSymbolicLink(), 'the link was replaced by a file');
    const cfg = JSON.parse(readFileSync(path.join(real, 'config.json'), 'utf8')) as { auths: Record<string, unknown>; psFormat?: string };
    assert.ok(cfg.auths[reg.host], 'the credentials went to the file the link points to');
    assert.equal(cfg.psFormat, 'table {{.ID}}', 'other settings are kept');
  });

  it('-p warns that it is insecure and logs in; logout removes the entry', async () => {
    const r = await run(loginCommand, [reg.host, '-u', reg.user as string, '-p', reg.password as string], env, '');
    assert.equal(r.code, 0, String(r.error));
    assert.match(r.stderr, /insecure/);
    assert.match(r.stdout, /Login succeeded/);
    assert.ok(!r.stdout.includes(reg.password as string) && !r.stderr.includes(reg.password as string));
    const cfg = JSON.parse(readFileSync(path.join(configDir, 'config.json'), 'utf8')) as { auths: Record<string, unknown> };
    assert.ok(cfg.auths[reg.host]);
    const out = await run(logoutCommand, [reg.host], env, '');
    assert.equal(out.code, 0);
    const after = JSON.parse(readFileSync(path.join(configDir, 'config.json'), 'utf8')) as { auths: Record<string, unknown> };
    assert.equal(after.auths[reg.host], undefined);
  });

  it('without a terminal and without a password: a usage error', async () => {
    const r = await run(loginCommand, [reg.host, '-u', 'x'], env, '');
    assert.ok(r.error instanceof ArchwayError && r.error.code === 'USAGE');
  });
});
