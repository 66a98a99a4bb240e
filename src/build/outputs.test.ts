import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { isArchwayError, type ErrorCode } from '../util/index.js';
import { parsePlatform, parsePlatformList, type Descriptor, type Digest } from '../oci/index.js';
import { buildMetadata, planOutputs } from './outputs.js';
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

test('--metadata-file: a missing or unwritable directory, or a directory as the file, is refused up front naming the file', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'archway-outputs-'));
  try {
    const missing = join(dir, 'nope', 'm.json');
    assert.match(await refusal({ metadataFile: missing }), new RegExp(`^--metadata-file "${missing}": its directory ".*nope" does not exist`));
    const file = join(dir, 'file');
    writeFileSync(file, '');
    assert.match(await refusal({ metadataFile: join(file, 'm.json') }), /is not a directory/);
    mkdirSync(join(dir, 'adir'));
    assert.match(await refusal({ metadataFile: join(dir, 'adir') }), /is a directory; the metadata is written to a file/);
    if (process.getuid?.() !== 0) {
      mkdirSync(join(dir, 'ro'), { mode: 0o555 });
      assert.match(await refusal({ metadataFile: join(dir, 'ro', 'm.json') }), /cannot write in/);
    }
    // A good path: accepted, and the probe leaves nothing behind.
    await planOutputs({ context: '.', metadataFile: join(dir, 'm.json') }, ONE);
    assert.deepEqual(readdirSync(dir).sort(), ['adir', 'file']);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('oci-mediatypes picks the build\'s media types; outputs that disagree are refused', async () => {
  assert.equal((await planOutputs({ context: '.' }, ONE)).format, 'oci');
  assert.equal((await planOutputs({ context: '.', outputs: [{ type: 'registry', name: 'r.example/a:1', ociMediatypes: false }] }, ONE)).format, 'docker');
  assert.match(
    await refusal({ outputs: [{ type: 'store', name: 'a:1', ociMediatypes: true }, { type: 'registry', name: 'r.example/a:1', ociMediatypes: false }] }),
    /--output type=registry,name=r.example\/a:1,oci-mediatypes=false asks for Docker media types, and --output type=image,name=a:1,oci-mediatypes=true for OCI ones/,
  );
});

test("the metadata has buildx's keys and each platform's digest", () => {
  const d = (n: string): Digest => `sha256:${n.repeat(64)}` as Digest;
  const images: Descriptor[] = [
    { mediaType: 'application/vnd.oci.image.manifest.v1+json', digest: d('1'), size: 10, platform: parsePlatform('linux/amd64') },
    { mediaType: 'application/vnd.oci.image.manifest.v1+json', digest: d('2'), size: 11, platform: parsePlatform('linux/arm/v7') },
  ];
  const root: Descriptor = { mediaType: 'application/vnd.oci.image.index.v1+json', digest: d('3'), size: 300 };
  assert.deepEqual(buildMetadata(root, images, ['r.example/app'], { repository: 'r.example/app' }), {
    'containerimage.digest': d('3'),
    'containerimage.descriptor': { mediaType: 'application/vnd.oci.image.index.v1+json', digest: d('3'), size: 300 },
    'image.name': 'r.example/app',
    platforms: { 'linux/amd64': { digest: d('1'), name: 'r.example/app' }, 'linux/arm/v7': { digest: d('2'), name: 'r.example/app' } },
    images: [
      { digest: d('1'), platform: 'linux/amd64' },
      { digest: d('2'), platform: 'linux/arm/v7' },
    ],
  });
  const one = buildMetadata(images[0] as Descriptor, [images[0] as Descriptor], [], { configDigest: d('4') });
  assert.equal(one['containerimage.config.digest'], d('4'));
  assert.equal(one['image.name'], undefined);
});
