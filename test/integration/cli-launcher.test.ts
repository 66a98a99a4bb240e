/**
 * bin/archway, the installed command: a shell launcher that defers NODE_EXTRA_CA_CERTS, and a loader
 * that runs the bundled CLI through V8's code cache. Checked as a user meets them.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, symlinkSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { archway, REPO_ROOT, runCommand, tempHome } from '../support/cli.js';
import { startRegistry } from '../support/registries.js';

const tls = await startRegistry({ kind: 'tls' });

test('--version prints the version of package.json', async () => {
  const { version } = JSON.parse(readFileSync(join(REPO_ROOT, 'package.json'), 'utf8')) as { version: string };
  const r = await archway(['--version']);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout, `archway ${version}\n`);
});

test('certificates in NODE_EXTRA_CA_CERTS are trusted for registries, as Node itself would', async () => {
  const home = tempHome();
  try {
    // A loopback registry is spoken to over plain HTTP unless told otherwise.
    writeFileSync(home.env['ARCHWAY_CONFIG'] as string, `[registry."${tls.host}"]\nhttp = false\n`);
    const ref = `${tls.host}/launcher/absent:1`;
    const env = home.env;
    const untrusted = await archway(['inspect', ref], { env: { ...env, NODE_EXTRA_CA_CERTS: '' } });
    assert.notEqual(untrusted.code, 0);
    assert.match(untrusted.stderr, /TLS|certificate/i, untrusted.stderr);
    const trusted = await archway(['inspect', ref], { env: { ...env, NODE_EXTRA_CA_CERTS: tls.caFile as string } });
    assert.notEqual(trusted.code, 0, 'the repository is empty, so the manifest is not found');
    assert.doesNotMatch(trusted.stderr, /TLS|certificate/i, trusted.stderr);
    assert.match(trusted.stderr, /not found|unknown/i, trusted.stderr);
  } finally {
    home.cleanup();
  }
});

test('the code cache is made when missing or stale, and the command works either way', async () => {
  // A copy of the installed layout (bin/ and the bundle), so the repository's cache is left alone.
  const root = mkdtempSync(join(tmpdir(), 'archway-launcher-'));
  try {
    mkdirSync(join(root, 'bin'));
    mkdirSync(join(root, 'dist'));
    for (const f of ['bin/archway', 'bin/archway.cjs', 'dist/archway.cjs']) copyFileSync(join(REPO_ROOT, f), join(root, f));
    const bin = join(root, 'bin', 'archway');
    const cache = join(root, 'dist', `archway.cjs.${process.version}.v8cache`);
    const env = { ARCHWAY_NODE: process.execPath };
    const first = await runCommand('sh', [bin, 'platforms'], { env });
    assert.equal(first.code, 0, first.stderr);
    assert.ok(existsSync(cache), 'the first run leaves a code cache');
    // A cache older than the bundle is not trusted: it is replaced, and the output is the same.
    const old = new Date(statSync(join(root, 'dist', 'archway.cjs')).mtimeMs - 60_000);
    utimesSync(cache, old, old);
    const second = await runCommand('sh', [bin, 'platforms'], { env });
    assert.equal(second.code, 0, second.stderr);
    assert.equal(second.stdout, first.stdout);
    assert.ok(statSync(cache).mtimeMs > old.getTime(), 'the stale cache was rewritten');
    // A run under other V8 flags cannot use the cache (V8 rejects it) and must not replace it:
    // the build's cache, filled by a training run, is worth more to the runs without them.
    const made = readFileSync(cache);
    const flagged = await runCommand('sh', [bin, 'platforms'], { env: { ...env, NODE_OPTIONS: '--max-semi-space-size=32' } });
    assert.equal(flagged.code, 0, flagged.stderr);
    assert.equal(flagged.stdout, first.stdout);
    assert.ok(readFileSync(cache).equals(made), 'the cache is left as it was');
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});

test("the launcher's malloc settings reach archway's Node only, and a user's own pass through", async () => {
  const home = tempHome();
  const dir = mkdtempSync(join(tmpdir(), 'archway-tunables-'));
  try {
    // The Node the launcher starts records its environment; so does a credential helper that
    // archway starts for `logout` (a process of archway's, as RUN steps, git or skopeo are).
    const nodeWrapper = join(dir, 'node');
    writeFileSync(nodeWrapper, `#!/bin/sh\nenv > "${dir}/node-env"\nexec "${process.execPath}" "$@"\n`, { mode: 0o755 });
    writeFileSync(join(dir, 'docker-credential-envdump'), `#!/bin/sh\nenv > "${dir}/helper-env"\ncat > /dev/null\n`, { mode: 0o755 });
    const config = join(dir, 'docker');
    mkdirSync(config);
    writeFileSync(join(config, 'config.json'), JSON.stringify({ credsStore: 'envdump' }));
    const env = { ...home.env, DOCKER_CONFIG: config, PATH: `${dir}:${process.env['PATH'] ?? ''}`, ARCHWAY_NODE: nodeWrapper };
    const tunables = (file: string): string | undefined =>
      readFileSync(join(dir, file), 'utf8')
        .split('\n')
        .find((l) => l.startsWith('GLIBC_TUNABLES='));

    const tuned = await runCommand(join(REPO_ROOT, 'bin', 'archway'), ['logout', 'registry.example:5000'], { env: { ...env, GLIBC_TUNABLES: '' } });
    assert.equal(tuned.code, 0, tuned.stderr);
    assert.match(tunables('node-env') ?? '', /glibc\.malloc\.trim_threshold=\d+/);
    assert.equal(tunables('helper-env'), undefined, 'the helper runs with glibc untuned');
    assert.doesNotMatch(readFileSync(join(dir, 'helper-env'), 'utf8'), /ARCHWAY_GLIBC_TUNABLES/);

    const own = await runCommand(join(REPO_ROOT, 'bin', 'archway'), ['logout', 'registry.example:5000'], { env: { ...env, GLIBC_TUNABLES: 'glibc.malloc.arena_max=2' } });
    assert.equal(own.code, 0, own.stderr);
    assert.equal(tunables('node-env'), 'GLIBC_TUNABLES=glibc.malloc.arena_max=2');
    assert.equal(tunables('helper-env'), 'GLIBC_TUNABLES=glibc.malloc.arena_max=2');
  } finally {
    home.cleanup();
    rmSync(dir, { recursive: true, force: true });
  }
});

test('the command works called by path, through a relative symlink (npm link), and from its own directory', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'archway-link-'));
  try {
    const env = { ARCHWAY_NODE: process.execPath };
    // npm link: <prefix>/bin/archway -> ../lib/node_modules/archway/bin/archway, the package a link too.
    mkdirSync(join(dir, 'bin'));
    mkdirSync(join(dir, 'lib', 'node_modules'), { recursive: true });
    symlinkSync(REPO_ROOT, join(dir, 'lib', 'node_modules', 'archway'));
    symlinkSync('../lib/node_modules/archway/bin/archway', join(dir, 'bin', 'archway'));
    const runs = [
      await runCommand(join(REPO_ROOT, 'bin', 'archway'), ['--version'], { env }),
      await runCommand(join(dir, 'bin', 'archway'), ['--version'], { env }),
      await runCommand('archway', ['--version'], { env: { ...env, PATH: `${join(dir, 'bin')}:${process.env['PATH'] ?? ''}` } }),
      await runCommand('sh', ['archway', '--version'], { env, cwd: join(REPO_ROOT, 'bin') }),
    ];
    for (const r of runs) {
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stdout, /^archway \d+\.\d+\.\d+/);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('archway platforms prints the probed native platforms, as text or json, and names a bad --format', async () => {
  const text = await archway(['platforms']);
  assert.equal(text.code, 0, text.stderr);
  assert.match(text.stdout, /^host: linux\/\S+\nnative: linux\/\S+/);
  const json = await archway(['platforms', '--format', 'json']);
  assert.equal(json.code, 0, json.stderr);
  const parsed = JSON.parse(json.stdout) as { host: string; native: string[] };
  assert.ok(parsed.native.includes(parsed.host), 'the host runs its own platform');
  assert.equal(text.stdout, `host: ${parsed.host}\nnative: ${parsed.native.join(', ')}\n`);
  const bad = await archway(['platforms', '--format', 'yaml']);
  assert.equal(bad.code, 2);
  assert.match(bad.stderr, /--format "yaml": expected text or json/);
});

test('a --progress mode archway does not know is refused, naming the ones it does', async () => {
  const r = await archway(['inspect', '--progress', 'bogus', 'localhost:5000/x:1']);
  assert.equal(r.code, 2, r.stderr);
  assert.match(r.stderr, /--progress must be auto, tty, plain or json, not "bogus"/);
});

test('a command that takes no operands refuses one; help shows defaults and values with colons whole', async () => {
  const extra = await archway(['images', 'extra']);
  assert.equal(extra.code, 2);
  assert.match(extra.stderr, /archway images: takes no arguments, got "extra"/);
  const copyHelp = await archway(['copy', '--help']);
  assert.match(copyHelp.stdout, /--multi-arch WHAT +all .* \(default all\)/);
  const runHelp = await archway(['run', '--help']);
  assert.match(runHelp.stdout, /-v, --volume HOST:CONTAINER\[:ro\] +bind-mount a host path \(repeatable\)/);
  const buildHelp = await archway(['build', '--help']);
  assert.doesNotMatch(buildHelp.stdout, /\(repeatable\) \(repeatable\)/);
});
