import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { isArchwayError } from '../util/index.js';
import { loadSecrets, MAX_SECRET_SIZE, parseSecretSpec } from './secrets.js';
import { isHttpUrl, parseChecksum, urlFileName } from './download.js';

test('--secret forms, as buildx reads them', () => {
  assert.deepEqual(parseSecretSpec('id=token,src=/run/token'), { id: 'token', file: '/run/token' });
  assert.deepEqual(parseSecretSpec('id=token,source=/run/token'), { id: 'token', file: '/run/token' });
  assert.deepEqual(parseSecretSpec('id=api,env=API_KEY'), { id: 'api', env: 'API_KEY' });
  assert.deepEqual(parseSecretSpec('type=env,id=api,src=API_KEY'), { id: 'api', env: 'API_KEY' });
  assert.deepEqual(parseSecretSpec('id=aws'), { id: 'aws' });
  assert.deepEqual(parseSecretSpec('"id=a,b",src=f'), { id: 'a,b', file: 'f' });
  for (const bad of ['src=/x', 'id=x,foo=bar', 'id=x,type=ssh', 'idx']) {
    assert.throws(() => parseSecretSpec(bad), (e: unknown) => isArchwayError(e, 'USAGE'), bad);
  }
});

test('secret values come from files or variables; with neither, the variable named ID, else the file', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'archway-secrets-'));
  try {
    const file = join(dir, 'token');
    writeFileSync(file, 'from-file');
    const got = await loadSecrets([{ id: 'a', file }, { id: 'b', env: 'B_VAR' }, { id: 'C_ID' }, { id: file }], { B_VAR: 'from-env', C_ID: 'by-id' });
    assert.equal(got.get('a')?.toString(), 'from-file');
    assert.equal(got.get('b')?.toString(), 'from-env');
    assert.equal(got.get('C_ID')?.toString(), 'by-id');
    assert.equal(got.get(file)?.toString(), 'from-file');
    await assert.rejects(loadSecrets([{ id: 'x', env: 'UNSET_VAR' }], {}), /environment variable UNSET_VAR is not set/);
    await assert.rejects(loadSecrets([{ id: 'x', file: join(dir, 'none') }], {}), /secret "x": cannot read/);
    writeFileSync(join(dir, 'big'), Buffer.alloc(MAX_SECRET_SIZE + 1));
    await assert.rejects(loadSecrets([{ id: 'big', file: join(dir, 'big') }], {}), /too big/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a downloaded file is named like dockerfile2llb names it', () => {
  assert.equal(urlFileName('https://example.com/releases/v1/tool.tar.gz'), 'tool.tar.gz');
  assert.equal(urlFileName('https://example.com/a/b/?x=1#frag'), 'b');
  assert.equal(urlFileName('https://example.com/file%20name.txt?sig=abc'), 'file name.txt');
  assert.equal(urlFileName('https://example.com'), '__unnamed__');
  assert.equal(urlFileName('https://example.com/'), '__unnamed__');
  assert.ok(isHttpUrl('http://127.0.0.1:8080/x'));
  assert.ok(!isHttpUrl('https://github.com/moby/buildkit.git#v0.12'));
  assert.ok(!isHttpUrl('git@github.com:moby/buildkit.git'));
});

test('--checksum digests are checked for their length', () => {
  assert.deepEqual(parseChecksum(`sha256:${'a'.repeat(64)}`), { algorithm: 'sha256', hex: 'a'.repeat(64) });
  assert.equal(parseChecksum(`sha512:${'b'.repeat(128)}`).algorithm, 'sha512');
  assert.throws(() => parseChecksum('sha256:abc'), /64 hex/);
  assert.throws(() => parseChecksum(`md5:${'a'.repeat(32)}`), /invalid --checksum/);
});
