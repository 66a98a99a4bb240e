import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { promisify } from 'node:util';
import { gzipSync } from 'node:zlib';
import { buildTar } from '../layer/index.js';
import { buildImage, buildIndex, emptyConfig, validateImageTree } from '../image/index.js';
import { computeDigest, descriptorFor, MediaType, parsePlatform, type Descriptor } from '../oci/index.js';
import { parseLocation } from '../ref/index.js';
import { isArchwayError } from '../util/index.js';
import { DockerArchiveSource, DockerArchiveTarget, OciArchiveSource, OciArchiveTarget, openFileSource, openFileTarget, ONE_PLATFORM_MESSAGE, writeTarFile } from './index.js';

const exec = promisify(execFile);

function image(platform: string, opts: { gzip?: boolean; text?: string } = {}): { blobs: Array<{ descriptor: Descriptor; data: Buffer }>; manifest: Descriptor; layerTar: Buffer } {
  const tar = buildTar([
    { header: { name: 'etc', type: 'dir' } },
    { header: { name: 'etc/hello.txt' }, data: opts.text ?? `hello ${platform}\n` },
  ]);
  const data = opts.gzip ? gzipSync(tar) : tar;
  const layer = { descriptor: descriptorFor(data, opts.gzip ? MediaType.OciLayerGzip : MediaType.OciLayer), data };
  const built = buildImage(emptyConfig(parsePlatform(platform)), [{ descriptor: layer.descriptor, diffID: computeDigest(tar) }]);
  return {
    blobs: [layer, { descriptor: built.configDescriptor, data: built.config }, { descriptor: built.manifestDescriptor, data: built.manifest }],
    manifest: built.manifestDescriptor,
    layerTar: tar,
  };
}

async function tempDir(t: { after: (fn: () => Promise<void>) => void }): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'archway-archive-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

interface SkopeoInspect {
  Digest: string;
  RepoTags: string[];
  Architecture: string;
  Os: string;
  Layers: string[];
}

async function skopeoInspect(location: string, raw = false): Promise<string> {
  const { stdout } = await exec('skopeo', ['inspect', ...(raw ? ['--raw'] : []), location]);
  return stdout;
}

for (const gzip of [false, true]) {
  test(`docker-archive (${gzip ? 'gzip' : 'uncompressed'} layer) written by archway is read by skopeo and by archway`, async (t) => {
    const dir = await tempDir(t);
    const file = join(dir, 'img.tar');
    const img = image('linux/arm64', { gzip });
    const target = await DockerArchiveTarget.create(file);
    for (const b of img.blobs) await target.push(b.descriptor, b.data);
    await target.tag(img.manifest, 'example.com/team/app:v1');
    await target.close();
    assert.deepEqual((await readdir(dir)).sort(), ['img.tar']); // no staging left behind
    const info = JSON.parse(await skopeoInspect(`docker-archive:${file}`)) as SkopeoInspect;
    assert.equal(info.Architecture, 'arm64');
    assert.equal(info.Os, 'linux');
    assert.equal(info.Layers.length, 1);
    assert.deepEqual(info.RepoTags, []); // skopeo lists registry tags here; docker-archive names show in the raw manifest.json
    const source = await DockerArchiveSource.open(file);
    assert.deepEqual(source.images[0]?.RepoTags, ['example.com/team/app:v1']);
    const root = await source.resolve('example.com/team/app:v1');
    assert.equal(root.mediaType, MediaType.DockerManifest);
    assert.equal(root.platform?.architecture, 'arm64');
    const report = await validateImageTree(source, root);
    assert.deepEqual(report.platforms, ['linux/arm64']);
    // deterministic synthesized manifest, and the layer digest is that of the stored bytes
    const again = await (await DockerArchiveSource.open(file)).resolve('');
    assert.equal(again.digest, root.digest);
  });
}

test('docker-archive target refuses an index of several platforms with a clear message', async (t) => {
  const dir = await tempDir(t);
  const a = image('linux/amd64');
  const b = image('linux/arm64');
  const idx = buildIndex([a.manifest, b.manifest]);
  const target = await DockerArchiveTarget.create(join(dir, 'x.tar'));
  for (const blob of [...a.blobs, ...b.blobs]) await target.push(blob.descriptor, blob.data);
  await target.push(idx.descriptor, idx.raw);
  await assert.rejects(target.tag(idx.descriptor, 'app:v1'), (e) => isArchwayError(e) && e.message.includes(ONE_PLATFORM_MESSAGE));
  // an index of ONE platform is fine
  const one = buildIndex([a.manifest]);
  await target.push(one.descriptor, one.raw);
  await target.tag(one.descriptor, 'app:v1');
  await target.close();
  const src = await DockerArchiveSource.open(join(dir, 'x.tar'));
  const root = await src.resolve('app:v1');
  assert.deepEqual((await validateImageTree(src, root)).platforms, ['linux/amd64']);
});

test('docker-archive source reads the legacy `<id>/layer.tar` layout with symlinked duplicate layers', async (t) => {
  const dir = await tempDir(t);
  const img = image('linux/amd64');
  const layerTar = img.layerTar;
  const config = img.blobs[1]!.data;
  const configHex = computeDigest(config).slice(7);
  const manifestJson = JSON.stringify([{ Config: `${configHex}.json`, RepoTags: ['busybox:latest'], Layers: ['aaaa/layer.tar'] }]);
  const file = join(dir, 'legacy.tar');
  // a symlink entry: aaaa/layer.tar -> ../bbbb/layer.tar, as docker save writes for repeated layers
  const tarBytes = buildTar([
    { header: { name: 'bbbb', type: 'dir' } },
    { header: { name: 'bbbb/layer.tar' }, data: layerTar },
    { header: { name: 'aaaa', type: 'dir' } },
    { header: { name: 'aaaa/layer.tar', type: 'symlink', linkname: '../bbbb/layer.tar' } },
    { header: { name: `${configHex}.json` }, data: config },
    { header: { name: 'manifest.json' }, data: manifestJson },
  ]);
  await writeFile(file, tarBytes);
  const src = await DockerArchiveSource.open(file);
  const root = await src.resolve('docker.io/library/busybox');
  const report = await validateImageTree(src, root);
  assert.deepEqual(report.platforms, ['linux/amd64']);
  const info = JSON.parse(await skopeoInspect(`docker-archive:${file}`)) as SkopeoInspect;
  assert.equal(info.Architecture, 'amd64');
  await assert.rejects(src.resolve('other:1'), (e) => isArchwayError(e, 'NOT_FOUND'));
});

test('oci-archive written by archway is read by skopeo (by tag) and by archway', async (t) => {
  const dir = await tempDir(t);
  const file = join(dir, 'multi.tar');
  const a = image('linux/amd64', { gzip: true });
  const b = image('linux/arm/v7', { gzip: true });
  const idx = buildIndex([a.manifest, b.manifest]);
  const target = await OciArchiveTarget.create(file);
  for (const blob of [...a.blobs, ...b.blobs]) await target.push(blob.descriptor, blob.data);
  await target.push(idx.descriptor, idx.raw);
  await target.tag(idx.descriptor, 'v1');
  await target.close();
  assert.deepEqual((await readdir(dir)).sort(), ['multi.tar']);
  const raw = JSON.parse(await skopeoInspect(`oci-archive:${file}:v1`, true)) as { manifests: Descriptor[] };
  assert.equal(raw.manifests.length, 2);
  assert.equal(computeDigest(await skopeoInspect(`oci-archive:${file}:v1`, true)), idx.descriptor.digest);
  const { stdout } = await exec('skopeo', ['inspect', '--override-arch', 'arm', '--override-variant', 'v7', `oci-archive:${file}:v1`]);
  assert.equal((JSON.parse(stdout) as SkopeoInspect).Architecture, 'arm');
  const src = await OciArchiveSource.open(file);
  const report = await validateImageTree(src, await src.resolve('v1'));
  assert.deepEqual(report.platforms.sort(), ['linux/amd64', 'linux/arm/v7']);
});

test('openFileTarget/openFileSource follow the transports; a failed target leaves FILE untouched', async (t) => {
  const dir = await tempDir(t);
  const a = image('linux/amd64');
  for (const loc of [`oci:${dir}/layout:v2`, `oci-archive:${dir}/o.tar:v2`, `docker-archive:${dir}/d.tar:app:v2`]) {
    const l = parseLocation(loc);
    if (l.transport !== 'oci' && l.transport !== 'oci-archive' && l.transport !== 'docker-archive') throw new Error(loc);
    const { target, reference } = await openFileTarget(l);
    for (const b of a.blobs) await target.push(b.descriptor, b.data);
    await target.tag(a.manifest, reference);
    await target.close?.();
    const { source, reference: r2 } = await openFileSource(l);
    const root = await source.resolve(r2);
    assert.deepEqual((await validateImageTree(source, root)).platforms, ['linux/amd64'], loc);
    await skopeoInspect(loc.replace(':app:v2', ':docker.io/library/app:v2'));
  }
  // an archive target that is aborted leaves the previous file and no staging directory
  const before = (await readdir(dir)).sort();
  const tgt = await OciArchiveTarget.create(join(dir, 'o.tar'));
  await tgt.push(a.blobs[0]!.descriptor, a.blobs[0]!.data);
  await tgt.abort();
  assert.deepEqual((await readdir(dir)).sort(), before);
});

test('tar reader: pax long names round-trip; a gzip-compressed archive gets a clear error', async (t) => {
  const dir = await tempDir(t);
  const long = `${'d'.repeat(120)}/${'f'.repeat(130)}`;
  const file = join(dir, 'long.tar');
  await writeTarFile(file, [{ name: long, content: Buffer.from('x') }, { name: 'oci-layout', content: Buffer.from('{"imageLayoutVersion":"1.0.0"}') }]);
  const { TarFile } = await import('./index.js');
  const tf = await TarFile.open(file, 'long.tar');
  assert.deepEqual(await tf.readFile(long, 10), Buffer.from('x'));
  const { stdout } = await exec('tar', ['-tf', file]);
  assert.ok(stdout.split('\n').includes(long));
  await writeFile(join(dir, 'z.tar'), gzipSync(await import('node:fs/promises').then((f) => f.readFile(file))));
  await assert.rejects(OciArchiveSource.open(join(dir, 'z.tar')), (e) => isArchwayError(e, 'FORMAT') && /gzip/.test(e.message));
});
