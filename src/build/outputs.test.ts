import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { isArchwayError, type ErrorCode } from '../util/index.js';
import { parsePlatformList } from '../oci/index.js';
import { planOutputs } from './outputs.js';
import type { BuildOptions } from './types.js';

const ONE = parsePlatformList('linux/amd64');
const TWO = parsePlatformList('linux/amd64,linux/arm64');

async function refusal(opts: Partial<BuildOptions>, platforms = ONE, code: ErrorCode = 'USAGE'): Promise<string> {
  try {
    await planOutputs({ context: '.', ...opts }, platforms);
  } catch (e) {
    assert.ok(isArchwayError(e, code), String(e));
    return e.message;
  }
  assert.fail('accepted');
}

test('tags and names are normalized; the store gets -t and type=image names', async () => {
  const plan = await planOutputs({ context: '.', tags: ['app', 'r.example/team/app:2'], outputs: [{ type: 'store', name: 'other:1' }, { type: 'docker', dest: 'x.tar' }] }, ONE);
  assert.deepEqual(plan.storeTags, ['docker.io/library/app:latest', 'r.example/team/app:2', 'docker.io/library/other:1']);
  assert.deepEqual(plan.outputs, [{ type: 'docker', dest: 'x.tar', names: ['docker.io/library/app:latest', 'r.example/team/app:2'], what: '--output type=docker,dest=x.tar' }]);
  const named = await planOutputs({ context: '.', tags: ['app:1'], outputs: [{ type: 'registry', name: 'r.example/a:1,r.example/b:1' }, { type: 'oci', dest: 'o', tar: false }] }, TWO);
  assert.deepEqual(named.outputs.map((o) => ('names' in o ? o.names : o.type === 'oci' ? [o.name, o.tar] : [])), [['r.example/a:1', 'r.example/b:1'], ['docker.io/library/app:1', false]]);
});

test('bad tags and names are refused naming the option', async () => {
  assert.match(await refusal({ tags: ['MyApp'] }, ONE, 'REFERENCE'), /^--tag "MyApp": invalid reference "MyApp": repository name must be lowercase/);
  assert.match(await refusal({ tags: [`app@sha256:${'0'.repeat(64)}`] }, ONE, 'REFERENCE'), /holds a digest/);
  assert.match(await refusal({ outputs: [{ type: 'docker', dest: 'x.tar', name: 'ok:1,Bad:1' }] }, ONE, 'REFERENCE'), /--output type=docker,dest=x.tar,name=ok:1,Bad:1: name "Bad:1"/);
});

test('a docker output of several platforms is refused up front', async () => {
  assert.match(await refusal({ outputs: [{ type: 'docker', dest: 'x.tar' }] }, TWO), /--output type=docker,dest=x.tar: a docker archive holds one platform, and this build makes 2 \(linux\/amd64, linux\/arm64\)/);
});

test('pushing without a name is refused up front', async () => {
  assert.match(await refusal({ outputs: [{ type: 'registry' }] }), /pushing needs a name/);
});

test('a dest of the wrong kind is refused up front', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'archway-outputs-'));
  try {
    const file = join(dir, 'file');
    writeFileSync(file, '');
    assert.match(await refusal({ outputs: [{ type: 'oci', dest: dir }] }), /is a directory/);
    assert.match(await refusal({ outputs: [{ type: 'oci', dest: file, tar: false }] }), /is not a directory/);
    assert.match(await refusal({ outputs: [{ type: 'local', dest: file }] }), /is not a directory/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
