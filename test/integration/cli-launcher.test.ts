/**
 * bin/archway, the installed command: a shell launcher that defers NODE_EXTRA_CA_CERTS, and a loader
 * that runs the bundled CLI through V8's code cache. Checked as a user meets them.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, utimesSync, writeFileSync } from 'node:fs';
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
    const cache = join(root, 'dist', 'archway.cjs.v8cache');
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
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});
