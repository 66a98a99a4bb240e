/**
 * OciLayout's streams: every failure of a blob's bytes (a source that failed before push() was
 * called, a corrupt blob at rest read by a consumer that starts late, a source that fails midway)
 * rejects the promise its caller awaits. Nothing hangs, no 'error' event goes uncaught, nothing
 * lands in the blobs, no temp file stays.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough, Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { descriptorFor, MediaType, type Descriptor } from '../oci/index.js';
import { copyImage } from '../imagetools/index.js';
import { buildImage, emptyConfig } from '../image/index.js';
import { parsePlatform } from '../oci/index.js';
import { isArchwayError } from '../util/index.js';
import { LAYOUT_TMP_DIR, OciLayout } from './index.js';

async function tempLayout(t: { after: (fn: () => Promise<void>) => void }, name = 'layout'): Promise<OciLayout> {
  const dir = await mkdtemp(join(tmpdir(), 'archway-layout-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  return OciLayout.open(join(dir, name), { create: true });
}

function blob(size: number): { descriptor: Descriptor; data: Buffer } {
  const data = randomBytes(size);
  return { descriptor: descriptorFor(data, MediaType.OciLayer), data };
}

async function assertNothingLanded(layout: OciLayout, d: Descriptor): Promise<void> {
  assert.equal(await layout.exists(d), false, 'the blob is not in the layout');
  assert.deepEqual(await readdir(layout.tmpDir), [], `no temp file left in ${LAYOUT_TMP_DIR}`);
}

/** Fails the test instead of the process if an 'error' event goes unhandled while `fn` runs. */
async function noUncaught<T>(fn: () => Promise<T>): Promise<T> {
  const seen: unknown[] = [];
  const onUncaught = (e: unknown): void => {
    seen.push(e);
  };
  process.on('uncaughtException', onUncaught);
  try {
    const r = await fn();
    await sleep(20);
    return r;
  } finally {
    process.off('uncaughtException', onUncaught);
    assert.deepEqual(seen, [], 'no uncaught exception');
  }
}

const bad = (e: unknown, re: RegExp): boolean => isArchwayError(e, 'INTEGRITY') && re.test(e.message);

test('push: a source stream that failed before push() was called rejects the push (no hang)', { timeout: 10_000 }, async (t) => {
  const layout = await tempLayout(t);
  const b = blob(4096);
  const source = new PassThrough();
  // What a registry body does: it keeps a failure found before anyone listens in `errored`.
  source.on('error', () => undefined);
  source.destroy(Object.assign(new Error('digest mismatch at the source'), {}));
  await sleep(10);
  await assert.rejects(layout.push(b.descriptor, source), /digest mismatch at the source/);
  await assertNothingLanded(layout, b.descriptor);
});

test('push: a source that fails midway rejects; a source with wrong bytes is INTEGRITY naming the digest', { timeout: 10_000 }, async (t) => {
  const layout = await tempLayout(t);
  const b = blob(300 * 1024);
  const midway = new Readable({ read() {} });
  midway.push(b.data.subarray(0, 100 * 1024));
  setTimeout(() => midway.destroy(new Error('connection reset')), 20);
  await assert.rejects(layout.push(b.descriptor, midway), /connection reset/);
  await assertNothingLanded(layout, b.descriptor);
  const flipped = Buffer.from(b.data);
  flipped[1000] = (flipped[1000] ?? 0) ^ 1;
  await assert.rejects(layout.push(b.descriptor, Readable.from([flipped])), (e) => bad(e, new RegExp(`${b.descriptor.digest}: digest mismatch`)));
  await assertNothingLanded(layout, b.descriptor);
  // and the right bytes still go in afterwards
  await layout.push(b.descriptor, Readable.from([b.data]));
  assert.equal(await layout.exists(b.descriptor), true);
});

test('fetch: a corrupt blob read by a consumer that starts late fails that consumer, never the process', { timeout: 10_000 }, async (t) => {
  const layout = await tempLayout(t);
  for (const size of [100, 64 * 1024, 2 * 1024 * 1024]) {
    const b = blob(size);
    await layout.push(b.descriptor, b.data);
    const file = layout.blobPath(b.descriptor.digest);
    const bytes = await readFile(file);
    bytes[Math.floor(size / 2)] = (bytes[Math.floor(size / 2)] ?? 0) ^ 0xff;
    await writeFile(file, bytes);
    await noUncaught(async () => {
      const stream = await layout.fetch(b.descriptor);
      // The consumer is busy elsewhere (opening its file, asking a registry) before it reads.
      await sleep(50);
      await assert.rejects(pipeline(stream, new Writable({ write: (_c, _e, cb) => cb() })), (e) => bad(e, new RegExp(`${layout.name}@${b.descriptor.digest}: digest mismatch`)));
    });
    // The same through another layout's push, as a copy does it.
    const other = await tempLayout(t, `other-${size}`);
    await noUncaught(async () => {
      const stream = await layout.fetch(b.descriptor);
      await sleep(50);
      await assert.rejects(other.push(b.descriptor, stream), (e) => bad(e, /digest mismatch/));
    });
    await assertNothingLanded(other, b.descriptor);
  }
});

test('copy between layouts from a corrupt layer: INTEGRITY, nothing tagged, no temp file', { timeout: 20_000 }, async (t) => {
  const src = await tempLayout(t, 'src');
  const dst = await tempLayout(t, 'dst');
  const layer = blob(8192);
  const built = buildImage(emptyConfig(parsePlatform('linux/amd64')), [{ descriptor: layer.descriptor, diffID: layer.descriptor.digest }]);
  await src.push(layer.descriptor, layer.data);
  await src.push(built.configDescriptor, built.config);
  await src.push(built.manifestDescriptor, built.manifest);
  await src.tag(built.manifestDescriptor, 'v1');
  const file = src.blobPath(layer.descriptor.digest);
  const bytes = await readFile(file);
  bytes[10] = (bytes[10] ?? 0) ^ 1;
  await writeFile(file, bytes);
  await noUncaught(() => assert.rejects(copyImage(src, 'v1', dst, ['v1']), (e) => bad(e, new RegExp(`${src.name}@${layer.descriptor.digest}: digest mismatch`))));
  await assertNothingLanded(dst, layer.descriptor);
  assert.deepEqual(await dst.list(), []);
});
