import { test } from 'node:test';
import assert from 'node:assert/strict';
import { formatPlatform, isAttestation, parseIndex, parsePlatform, MediaType } from '../oci/index.js';
import { validateImageTree } from '../image/index.js';
import { ProgressRecorder } from '../progress/index.js';
import { ArchwayError } from '../util/index.js';
import { copyImage } from './copy.js';
import { MemoryTarget } from './memory.js';
import { pushBuildxIndex, pushImage } from './fixtures.test-support.js';

test('copy all: byte-for-byte, digests kept, tag written last', async () => {
  const src = new MemoryTarget('src');
  const { index } = await pushBuildxIndex(src, ['linux/amd64', 'linux/arm64', 'linux/arm/v7'], 'v1');
  const dst = new MemoryTarget('dst');
  const rec = new ProgressRecorder();
  const r = await copyImage(src, 'v1', dst, ['v1', 'latest'], { progress: rec });
  assert.equal(r.descriptor.digest, index.digest);
  assert.equal(r.rewritten, false);
  assert.deepEqual(r.platforms, ['linux/amd64', 'linux/arm64', 'linux/arm/v7']);
  assert.deepEqual(dst.blobs.get(index.digest), src.blobs.get(index.digest));
  assert.equal(dst.pushes.at(-1), index.digest, 'the index is pushed after its children');
  assert.ok(rec.events.every((e) => e.kind !== 'tag' || e.digest === index.digest));
  assert.equal((await dst.resolve('latest')).digest, index.digest);
  const report = await validateImageTree(dst, await dst.resolve('v1'));
  assert.deepEqual(report.platforms.sort(), ['linux/amd64', 'linux/arm/v7', 'linux/arm64']);
  // Copying again sends nothing: the destination holds the index, so nothing under it is asked about.
  const again = await copyImage(src, 'v1', dst, ['v1'], {});
  assert.equal(again.stats.blobsCopied, 0);
  assert.equal(again.stats.present, true);
});

test('copy --platform subset writes a new index with those platforms and their attestations', async () => {
  const src = new MemoryTarget('src');
  const { index, images } = await pushBuildxIndex(src, ['linux/amd64', 'linux/arm64', 'linux/arm/v7'], 'v1');
  const dst = new MemoryTarget('dst');
  const r = await copyImage(src, 'v1', dst, ['v1'], { platforms: [parsePlatform('linux/arm64'), parsePlatform('armhf')] });
  assert.notEqual(r.descriptor.digest, index.digest);
  assert.ok(r.rewritten);
  assert.match(r.notes.join('\n'), /new index/);
  const idx = parseIndex(dst.blobs.get(r.descriptor.digest) as Buffer, undefined, 'x').value;
  const plats = idx.manifests.filter((d) => !isAttestation(d)).map((d) => formatPlatform(d.platform!));
  assert.deepEqual(plats, ['linux/arm64', 'linux/arm/v7']);
  assert.equal(idx.manifests.filter(isAttestation).length, 2);
  assert.equal(await dst.exists(images[0]!), false, 'amd64 was not copied');
  await validateImageTree(dst, r.descriptor);
});

test('copy --platform missing is a PLATFORM error listing what exists; nothing tagged', async () => {
  const src = new MemoryTarget('src');
  await pushBuildxIndex(src, ['linux/amd64'], 'v1');
  const dst = new MemoryTarget('dst');
  await assert.rejects(copyImage(src, 'v1', dst, ['v1'], { platforms: [parsePlatform('linux/s390x')] }), (e: ArchwayError) => e.code === 'PLATFORM' && /linux\/amd64/.test(e.message));
  assert.equal(dst.tags.size, 0);
});

test('copy system picks the host image only', async () => {
  const src = new MemoryTarget('src');
  const { images } = await pushBuildxIndex(src, ['linux/amd64', 'linux/arm64'], 'v1');
  const dst = new MemoryTarget('dst');
  const r = await copyImage(src, 'v1', dst, ['v1'], { multiArch: 'system', host: parsePlatform('linux/arm64') });
  assert.equal(r.descriptor.digest, images[1]!.digest);
  assert.equal((await dst.resolve('v1')).mediaType, MediaType.OciManifest);
});

test('copy index-only copies the index alone', async () => {
  const src = new MemoryTarget('src');
  const { index, images } = await pushBuildxIndex(src, ['linux/amd64', 'linux/arm64'], 'v1');
  const dst = new MemoryTarget('dst');
  await copyImage(src, 'v1', dst, ['v1'], { multiArch: 'index-only' });
  assert.ok(await dst.exists(index));
  assert.equal(await dst.exists(images[0]!), false);
});

test('copy --format docker converts manifests and the list, and drops attestations (said so)', async () => {
  const src = new MemoryTarget('src');
  await pushBuildxIndex(src, ['linux/amd64', 'linux/arm64'], 'v1');
  const dst = new MemoryTarget('dst');
  const r = await copyImage(src, 'v1', dst, ['v1'], { format: 'docker' });
  assert.equal(r.descriptor.mediaType, MediaType.DockerManifestList);
  assert.match(r.notes.join('\n'), /dropped attestation/);
  const idx = parseIndex(dst.blobs.get(r.descriptor.digest) as Buffer, undefined, 'x').value;
  assert.equal(idx.manifests.length, 2);
  for (const m of idx.manifests) assert.equal(m.mediaType, MediaType.DockerManifest);
  const report = await validateImageTree(dst, r.descriptor);
  assert.equal(report.platforms.length, 2);
  // And back to OCI.
  const back = new MemoryTarget('back');
  const r2 = await copyImage(dst, 'v1', back, ['v1'], { format: 'oci' });
  assert.equal(r2.descriptor.mediaType, MediaType.OciIndex);
  await validateImageTree(back, r2.descriptor);
});

test('copy of a single image; --platform mismatch refused', async () => {
  const src = new MemoryTarget('src');
  const d = await pushImage(src, 'linux/arm64', { tag: 'one' });
  const dst = new MemoryTarget('dst');
  const r = await copyImage(src, 'one', dst, ['one'], {});
  assert.equal(r.descriptor.digest, d.digest);
  assert.deepEqual(r.platforms, ['linux/arm64']);
  await assert.rejects(copyImage(src, 'one', new MemoryTarget(), ['x'], { platforms: [parsePlatform('linux/amd64')] }), /single-platform image for linux\/arm64/);
});

test('an abort during the copy leaves no tag', async () => {
  const src = new MemoryTarget('src');
  await pushBuildxIndex(src, ['linux/amd64', 'linux/arm64'], 'v1');
  const dst = new MemoryTarget('dst');
  const ac = new AbortController();
  const origPush = dst.push.bind(dst);
  dst.push = async (d, c, o) => {
    ac.abort(new ArchwayError('INTERRUPTED', 'test abort'));
    return origPush(d, c, o);
  };
  await assert.rejects(copyImage(src, 'v1', dst, ['v1'], { signal: ac.signal }), (e: ArchwayError) => e.code === 'INTERRUPTED');
  assert.equal(dst.tags.size, 0);
});

test('a bad blob in the source fails the copy before any tag', async () => {
  const src = new MemoryTarget('src');
  const { images } = await pushBuildxIndex(src, ['linux/amd64'], 'v1');
  // Corrupt the layer bytes.
  const m = JSON.parse((src.blobs.get(images[0]!.digest) as Buffer).toString()) as { layers: Array<{ digest: string }> };
  src.blobs.set(m.layers[0]!.digest, Buffer.from('tampered'));
  const dst = new MemoryTarget('dst');
  await assert.rejects(copyImage(src, 'v1', dst, ['v1'], { mount: false }), (e: ArchwayError) => e.code === 'INTEGRITY');
  assert.equal(dst.tags.size, 0);
});

test('same-registry copies mount instead of streaming', async () => {
  const src = new MemoryTarget('src');
  await pushBuildxIndex(src, ['linux/amd64'], 'v1', { attestations: false });
  const dst = new MemoryTarget('dst');
  const r = await copyImage(src, 'v1', dst, ['v1'], {});
  assert.equal(r.stats.blobsCopied, 0);
  assert.equal(r.stats.blobsMounted, 2);
});

/** A MemoryTarget that records what it is asked and what is read from it. */
class Recording extends MemoryTarget {
  readonly asked: string[] = [];
  readonly fetched: string[] = [];
  override async exists(desc: Parameters<MemoryTarget['exists']>[0]): Promise<boolean> {
    this.asked.push(desc.digest);
    return super.exists(desc);
  }
  override async fetch(desc: Parameters<MemoryTarget['fetch']>[0]): ReturnType<MemoryTarget['fetch']> {
    this.fetched.push(desc.digest);
    return super.fetch(desc);
  }
}

test('a target that holds the root is asked about the root only; nothing is pushed', async () => {
  const src = new MemoryTarget('src');
  const { index } = await pushBuildxIndex(src, ['linux/amd64', 'linux/arm64'], 'v1');
  const dst = new Recording('dst');
  await copyImage(src, 'v1', dst, ['v1'], { mount: false });
  const pushes = dst.pushes.length;
  dst.asked.length = 0;
  const again = await copyImage(src, 'v1', dst, ['v2'], { mount: false });
  assert.deepEqual(dst.asked, [index.digest]);
  assert.equal(dst.pushes.length, pushes);
  assert.equal(again.stats.blobsCopied, 0);
  assert.equal((await dst.resolve('v2')).digest, index.digest);
});

test('blobs under a manifest the target holds are not asked about', async () => {
  const src = new MemoryTarget('src');
  const { images } = await pushBuildxIndex(src, ['linux/amd64', 'linux/arm64'], 'v1', { attestations: false });
  const dst = new Recording('dst');
  // The amd64 image alone first.
  await copyImage(src, images[0]!.digest, dst, [], { mount: false });
  dst.asked.length = 0;
  const r = await copyImage(src, 'v1', dst, ['v1'], { mount: false });
  const amd64 = JSON.parse((src.blobs.get(images[0]!.digest) as Buffer).toString()) as { config: { digest: string }; layers: Array<{ digest: string }> };
  for (const d of [amd64.config.digest, ...amd64.layers.map((l) => l.digest)]) assert.ok(!dst.asked.includes(d), `asked about ${d}`);
  assert.equal(r.stats.blobsCopied, 2, 'the arm64 config and layer');
  await validateImageTree(dst, await dst.resolve('v1'));
});

test('a single image: the config read to learn its platform is not fetched again', async () => {
  const src = new Recording('src');
  const m = await pushImage(src, 'linux/arm64', { tag: 'one' });
  const config = (JSON.parse((src.blobs.get(m.digest) as Buffer).toString()) as { config: { digest: string } }).config.digest;
  const dst = new MemoryTarget('dst');
  const r = await copyImage(src, 'one', dst, ['one'], { mount: false });
  assert.deepEqual(r.platforms, ['linux/arm64']);
  assert.equal(src.fetched.filter((d) => d === config).length, 1);
  assert.ok(dst.blobs.has(config));
});
