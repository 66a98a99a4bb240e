/**
 * `--registry-config FILE` names a file the user wants read: a missing one is an error naming it
 * (exit 2), not silently no settings. The default path and $ARCHWAY_CONFIG may be missing, as
 * Docker treats $DOCKER_CONFIG (and as the [sandbox] settings of the same file are read).
 */
import { strict as assert } from 'node:assert';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { describe, it } from 'node:test';
import { archwayInProcess } from '../support/cli.js';

const archway = archwayInProcess;

describe('--registry-config', () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'archway-registry-config-'));
  const env: NodeJS.ProcessEnv = { ...process.env, ARCHWAY_HOME: path.join(dir, 'home'), XDG_CONFIG_HOME: path.join(dir, 'xdg'), ARCHWAY_CONFIG: '' };
  // Port 1 refuses connections: a registry error is exit 3, a settings error exit 2 before any connection.
  const image = '127.0.0.1:1/x/y:1';

  it('a missing file named by the flag: exit 2 naming the file, before any connection', async () => {
    const missing = path.join(dir, 'nonexistent.toml');
    for (const cmd of [['inspect'], ['copy']]) {
      const args = cmd[0] === 'copy' ? ['copy', '--registry-config', missing, image, '127.0.0.1:1/x/z:1'] : ['inspect', '--registry-config', missing, image];
      const r = await archway(args, env);
      assert.equal(r.code, 2, `${cmd[0]}: ${r.stderr}`);
      assert.ok(r.stderr.includes(`registry config file ${missing} does not exist`), r.stderr);
      assert.ok(!r.stderr.includes('cannot talk to'), r.stderr);
    }
  });

  it('a named file that exists is read (a bad one is a parse error naming it)', async () => {
    const bad = path.join(dir, 'bad.toml');
    writeFileSync(bad, '[registry."127.0.0.1:1"]\nmirrorz = ["x"]\n');
    const r = await archway(['inspect', '--registry-config', bad, image], env);
    assert.equal(r.code, 2, r.stderr);
    assert.ok(r.stderr.includes(bad) && r.stderr.includes('mirrorz'), r.stderr);
  });

  it('$ARCHWAY_CONFIG naming a missing file, or no config at all, means no settings', async () => {
    for (const e of [{ ...env, ARCHWAY_CONFIG: path.join(dir, 'missing-env.toml') }, env]) {
      const r = await archway(['inspect', image], e);
      assert.equal(r.code, 3, r.stderr);
      assert.ok(r.stderr.includes(`${image}: cannot talk to 127.0.0.1:1`), r.stderr);
    }
  });
});
