/**
 * Archive sources and targets when something is wrong: corrupt blobs read by a consumer that
 * starts late (an error, never an uncaught 'error' event), staging that exists only once something
 * was written and is gone after abort(), the one-platform refusal, and a zstd hint that points at
 * something archway really offers.
 */
import assert from 'node:assert/strict';
import { mkdtemp, open, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { buildTar } from '../layer/index.js';
import { buildImage, buildIndex, emptyConfig } from '../image/index.js';
import { computeDigest, descriptorFor, digestHex, MediaType, parsePlatform, type Descriptor } from '../oci/index.js';
import { isArchwayError } from '../util/index.js';
import { copyCommand } from '../cli/commands/copy.js';
import { DockerArchiveSource, DockerArchiveTarget, OciArchiveSource, OciArchiveTarget, ONE_PLATFORM_MESSAGE, TarFile } from './index.js';

function image(platform: string, layerMediaType: string = MediaType.OciLayer): { blobs: Array<{ descriptor: Descriptor; data: Buffer }>; manifest: Descriptor; layer: Descriptor } {
  const tar = buildTar([{ header: { name: 'hello.txt' }, data: `hello ${platform}\n`.repeat(200) }]);
  const layer = { descriptor: descriptorFor(tar, layerMediaType), data: tar };
  const built = buildImage(emptyConfig(parsePlatform(platform)), [{ descriptor: layer.descriptor, diffID: computeDigest(tar) }]);
  return {
    blobs: [layer, { descriptor: built.configDescriptor, data: built.config }, { descriptor: built.manifestDescriptor, data: built.manifest }],
    manifest: built.manifestDescriptor,
    layer: layer.descriptor,
  };
}

async function tempDir(t: { after: (fn: () => Promise<void>) => void }): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'archway-archive-targets-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

/** Flips one byte of an archive member in place. */
async function corruptMember(file: string, member: string): Promise<void> {
  const tf = await TarFile.open(file, file);
  const e = tf.file(member);
  assert.ok(e, member);
  const h = await open(file, 'r+');
  try {
    const b = Buffer.alloc(1);
    const at = e.offset + Math.floor(e.size / 2);
    await h.read(b, 0, 1, at);
    b[0] = (b[0] ?? 0) ^ 0xff;
    await h.write(b, 0, 1, at);
  } finally {
    await h.close();
  }
}

async function noUncaught(fn: () => Promise<void>): Promise<void> {
  const seen: unknown[] = [];
  const onUncaught = (e: unknown): void => {
    seen.push(e);
  };
  process.on('uncaughtException', onUncaught);
  try {
    await fn();
    await sleep(20);
  } finally {
    process.off('uncaughtException', onUncaught);
    assert.deepEqual(seen, [], 'no uncaught exception');
  }
}

const drain = (): Writable => new Writable({ write: (_c, _e, cb) => cb() });

test('a corrupt blob in an oci-archive or a docker-archive fails the consumer that reads it, late or not', { timeout: 20_000 }, async (t) => {
  const dir = await tempDir(t);
  const img = image('linux/amd64');
  const member = `blobs/sha256/${digestHex(img.layer.digest)}`;
  const oci = join(dir, 'o.tar');
  const ot = await OciArchiveTarget.create(oci);
  for (const b of img.blobs) await ot.push(b.descriptor, b.data);
  await ot.tag(img.manifest, 'v1');
  await ot.close();
  await corruptMember(oci, member);
  const docker = join(dir, 'd.tar');
  const dt = await DockerArchiveTarget.create(docker);
  for (const b of img.blobs) await dt.push(b.descriptor, b.data);
  await dt.tag(img.manifest, 'app:v1');
  await dt.close();
  await corruptMember(docker, member);

  const os = await OciArchiveSource.open(oci);
  const ds = await DockerArchiveSource.open(docker);
  await ds.resolve('app:v1');
  for (const src of [os, ds]) {
    await noUncaught(async () => {
      const stream = await src.fetch(img.layer);
      await sleep(50); // the consumer opens its file, asks a registry ...
      await assert.rejects(pipeline(stream, drain()), (e) => isArchwayError(e, 'INTEGRITY') && e.message.includes(`${src.name}@${img.layer.digest}: digest mismatch`));
    });
  }
  // A document served from memory asked for with a wrong size fails the same way.
  const root = await ds.resolve('app:v1');
  await noUncaught(async () => {
    const stream = await ds.fetch({ ...root, size: root.size + 1 });
    await sleep(20);
    await assert.rejects(pipeline(stream, drain()), (e) => isArchwayError(e, 'INTEGRITY'));
  });
});

test('archive targets stage nothing until something is written; abort() removes what was staged', async (t) => {
  const dir = await tempDir(t);
  const img = image('linux/amd64');
  for (const make of [() => OciArchiveTarget.create(join(dir, 'o.tar')), () => DockerArchiveTarget.create(join(dir, 'd.tar'))]) {
    const unused = await make();
    assert.deepEqual(await readdir(dir), [], 'opening a target writes nothing');
    assert.equal(await unused.exists(img.layer), false);
    await assert.rejects(unused.fetch(img.layer), (e) => isArchwayError(e, 'NOT_FOUND'));
    await unused.abort();
    const used = await make();
    await used.push(img.blobs[0]!.descriptor, img.blobs[0]!.data);
    assert.equal((await readdir(dir)).length, 1, 'a staging directory once a blob is written');
    assert.equal(await used.exists(img.layer), true);
    await used.abort();
    assert.deepEqual(await readdir(dir), [], 'abort() leaves nothing');
    await assert.rejects(used.push(img.blobs[1]!.descriptor, img.blobs[1]!.data), (e) => isArchwayError(e, 'FAILED'));
    assert.deepEqual(await readdir(dir), []);
  }
});

test('docker-archive: the one-platform refusal names the platforms and can be asked before any blob', async (t) => {
  const dir = await tempDir(t);
  const target = await DockerArchiveTarget.create(join(dir, 'x.tar'));
  assert.throws(
    () => target.acceptPlatforms(['linux/amd64', 'linux/arm64'], 'example.com/app:v1'),
    (e) => isArchwayError(e, 'USAGE') && e.exitCode === 2 && e.message.includes(ONE_PLATFORM_MESSAGE) && e.message.includes('example.com/app:v1') && e.message.includes('linux/amd64, linux/arm64') && /--platform/.test(e.hint ?? ''),
  );
  target.acceptPlatforms(['linux/amd64'], 'example.com/app:v1');
  assert.deepEqual(await readdir(dir), [], 'asking writes nothing');
  // tag() says the same for an index that was written
  const a = image('linux/amd64');
  const b = image('linux/arm64');
  const idx = buildIndex([a.manifest, b.manifest]);
  for (const blob of [...a.blobs, ...b.blobs]) await target.push(blob.descriptor, blob.data);
  await target.push(idx.descriptor, idx.raw);
  await assert.rejects(target.tag(idx.descriptor, 'app:v1'), (e) => isArchwayError(e, 'USAGE') && e.message.includes('linux/amd64, linux/arm64'));
  await target.abort();
  assert.deepEqual(await readdir(dir), []);
});

test('docker-archive: a zstd layer is refused with a hint that names only options archway copy has', async (t) => {
  const dir = await tempDir(t);
  const img = image('linux/amd64', MediaType.OciLayerZstd);
  const target = await DockerArchiveTarget.create(join(dir, 'z.tar'));
  for (const b of img.blobs) await target.push(b.descriptor, b.data);
  await target.tag(img.manifest, 'app:v1');
  let hint = '';
  await assert.rejects(target.close(), (e) => {
    if (!isArchwayError(e, 'FORMAT') || !e.message.includes('zstd')) return false;
    hint = e.hint ?? '';
    return true;
  });
  assert.match(hint, /oci-archive:/);
  const options = new Set(Object.keys(copyCommand.options ?? {}));
  for (const m of hint.matchAll(/--([a-z][a-z-]*)/g)) assert.ok(options.has(m[1] as string), `archway copy has --${m[1]} (hint: ${hint})`);
  assert.deepEqual(await readdir(dir), [], 'no archive and no staging after the refusal');
});
