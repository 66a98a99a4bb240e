import { test } from 'node:test';
import assert from 'node:assert/strict';
import { formatPlatform, isAttestation, parseIndex, parsePlatform, MediaType, type ImageIndex } from '../oci/index.js';
import { validateImageTree } from '../image/index.js';
import { ArchwayError } from '../util/index.js';
import { createIndex, parseAnnotation, type IndexSource } from './index-create.js';
import { MemoryTarget } from './memory.js';
import { pushAttestation, pushBuildxIndex, pushImage } from './fixtures.test-support.js';

function indexAt(t: MemoryTarget, tag: string): ImageIndex {
  const d = t.tags.get(tag);
  assert.ok(d, `no tag ${tag}`);
  return parseIndex(t.blobs.get(d.digest) as Buffer, undefined, tag).value;
}
function platformsOf(i: ImageIndex): string[] {
  return i.manifests.filter((d) => !isAttestation(d)).map((d) => formatPlatform(d.platform!));
}
const src = (t: MemoryTarget, ref: string, platform?: string): IndexSource => ({ input: `${t.name}:${ref}`, source: t, reference: ref, ...(platform ? { platform: parsePlatform(platform) } : {}) });

test('index create from per-platform tags: platforms read from the configs, source digests kept', async () => {
  const repo = new MemoryTarget('repo');
  const a = await pushImage(repo, 'linux/amd64', { tag: '1-amd64' });
  const b = await pushImage(repo, 'linux/arm64', { tag: '1-arm64' });
  const c = await pushImage(repo, 'linux/arm/v7', { tag: '1-armv7' });
  const r = await createIndex([src(repo, '1-amd64'), src(repo, '1-arm64'), src(repo, '1-armv7', 'linux/arm/v7')], [{ input: 'repo:1', target: repo, reference: '1' }]);
  const idx = indexAt(repo, '1');
  assert.equal(idx.mediaType, MediaType.OciIndex);
  assert.deepEqual(platformsOf(idx), ['linux/amd64', 'linux/arm64', 'linux/arm/v7']);
  assert.deepEqual(idx.manifests.map((d) => d.digest), [a.digest, b.digest, c.digest]);
  assert.deepEqual(r.pushed, ['repo:1']);
  await validateImageTree(repo, r.descriptor);
});

test('Docker manifests give a Docker list by default; --format oci an OCI index', async () => {
  const repo = new MemoryTarget('repo');
  await pushImage(repo, 'linux/amd64', { tag: 'a', format: 'docker' });
  await pushImage(repo, 'linux/arm64', { tag: 'b', format: 'docker' });
  const r = await createIndex([src(repo, 'a'), src(repo, 'b')], [{ input: 'l', target: repo, reference: 'list' }]);
  assert.equal(r.descriptor.mediaType, MediaType.DockerManifestList);
  const r2 = await createIndex([src(repo, 'a'), src(repo, 'b')], [{ input: 'o', target: repo, reference: 'oci' }], { format: 'oci' });
  assert.equal(r2.descriptor.mediaType, MediaType.OciIndex);
});

test('sources in another repository are copied into the target first', async () => {
  const other = new MemoryTarget('other');
  const repo = new MemoryTarget('repo');
  const a = await pushImage(other, 'linux/amd64', { tag: 'a' });
  const b = await pushImage(other, 'linux/arm64', { tag: 'b' });
  await createIndex([src(other, 'a'), src(other, 'b')], [{ input: 'repo:v1', target: repo, reference: 'v1' }]);
  assert.ok(await repo.exists(a));
  assert.ok(await repo.exists(b));
  await validateImageTree(repo, await repo.resolve('v1'));
});

test('merging two buildx indexes keeps attestations attached, or drops them', async () => {
  const repo = new MemoryTarget('repo');
  const x = await pushBuildxIndex(repo, ['linux/amd64', 'linux/arm64'], 'x');
  const y = await pushBuildxIndex(repo, ['linux/ppc64le'], 'y');
  await createIndex([src(repo, 'x'), src(repo, 'y')], [{ input: 'repo:m', target: repo, reference: 'm' }]);
  const m = indexAt(repo, 'm');
  assert.deepEqual(platformsOf(m), ['linux/amd64', 'linux/arm64', 'linux/ppc64le']);
  const atts = m.manifests.filter(isAttestation);
  assert.equal(atts.length, 3);
  const subjects = atts.map((d) => d.annotations?.['vnd.docker.reference.digest']).sort();
  assert.deepEqual(subjects, [...x.images, ...y.images].map((d) => d.digest).sort());
  await validateImageTree(repo, await repo.resolve('m'));
  await createIndex([src(repo, 'x'), src(repo, 'y')], [{ input: 'repo:n', target: repo, reference: 'n' }], { attestations: false });
  assert.equal(indexAt(repo, 'n').manifests.filter(isAttestation).length, 0);
});

test('two sources for one platform is an error naming both; --duplicates last picks', async () => {
  const repo = new MemoryTarget('repo');
  await pushImage(repo, 'linux/amd64', { tag: 'a' });
  await pushImage(repo, 'linux/amd64', { tag: 'b', salt: 'other' });
  await assert.rejects(createIndex([src(repo, 'a'), src(repo, 'b')], [{ input: 't', target: repo, reference: 't' }]), (e: ArchwayError) => e.code === 'PLATFORM' && e.message.includes('repo:a') && e.message.includes('repo:b'));
  assert.equal(repo.tags.has('t'), false);
  const r = await createIndex([src(repo, 'a'), src(repo, 'b')], [{ input: 't', target: repo, reference: 't' }], { duplicates: 'last' });
  assert.equal(r.entries[0]!.from, 'repo:b');
});

test('a given platform that disagrees with the config is an error unless forced', async () => {
  const repo = new MemoryTarget('repo');
  await pushImage(repo, 'linux/arm64', { tag: 'a' });
  await assert.rejects(createIndex([src(repo, 'a', 'linux/amd64')], [{ input: 't', target: repo, reference: 't' }]), (e: ArchwayError) => e.code === 'PLATFORM' && e.message.includes('repo:a says linux/arm64 but was given linux/amd64'));
  assert.equal(repo.tags.has('t'), false);
  const r = await createIndex([src(repo, 'a', 'linux/amd64')], [{ input: 't', target: repo, reference: 't' }], { forcePlatform: true });
  assert.equal(r.entries[0]!.platform, 'linux/amd64');
});

test('a missing source fails and nothing is tagged', async () => {
  const repo = new MemoryTarget('repo');
  await pushImage(repo, 'linux/arm64', { tag: 'a' });
  await assert.rejects(createIndex([src(repo, 'a'), src(repo, 'nope')], [{ input: 't', target: repo, reference: 't' }]), /repo:nope/);
  assert.equal(repo.tags.has('t'), false);
});

test('a schema 1 manifest is refused with a clear error', async () => {
  const repo = new MemoryTarget('repo');
  const raw = Buffer.from(JSON.stringify({ schemaVersion: 1, name: 'x', tag: 'y', architecture: 'amd64', fsLayers: [], history: [] }));
  const { descriptorFor } = await import('../oci/index.js');
  const d = descriptorFor(raw, MediaType.DockerSchema1SignedManifest);
  await repo.push(d, raw);
  await repo.tag(d, 'old');
  await assert.rejects(createIndex([src(repo, 'old')], [{ input: 't', target: repo, reference: 't' }]), (e: ArchwayError) => e.code === 'FORMAT' && /schema 1/.test(e.message) && e.message.includes('repo:old'));
  assert.equal(repo.tags.has('t'), false);
});

test('--append adds and replaces platforms; --remove takes one out', async () => {
  const repo = new MemoryTarget('repo');
  await pushBuildxIndex(repo, ['linux/amd64', 'linux/arm64'], 'v1');
  const newArm = await pushImage(repo, 'linux/arm64', { tag: 'arm-new', salt: 'new' });
  await pushImage(repo, 'linux/s390x', { tag: 's390x' });
  await createIndex([src(repo, 'arm-new'), src(repo, 's390x')], [{ input: 'repo:v1', target: repo, reference: 'v1' }], { append: true });
  let idx = indexAt(repo, 'v1');
  assert.deepEqual(platformsOf(idx), ['linux/amd64', 'linux/arm64', 'linux/s390x']);
  assert.equal(idx.manifests[1]!.digest, newArm.digest);
  assert.equal(idx.manifests.filter(isAttestation).length, 1, 'the replaced image loses its attestation, amd64 keeps its');
  await createIndex([], [{ input: 'repo:v1', target: repo, reference: 'v1' }], { append: true, remove: [parsePlatform('linux/amd64')] });
  idx = indexAt(repo, 'v1');
  assert.deepEqual(platformsOf(idx), ['linux/arm64', 'linux/s390x']);
  assert.equal(idx.manifests.filter(isAttestation).length, 0);
  await assert.rejects(createIndex([], [{ input: 'repo:v1', target: repo, reference: 'v1' }], { append: true, remove: [parsePlatform('linux/386')] }), /cannot remove linux\/386/);
});

test('annotations for the index and for one descriptor; dry run pushes nothing', async () => {
  const repo = new MemoryTarget('repo');
  await pushImage(repo, 'linux/amd64', { tag: 'a' });
  await pushImage(repo, 'linux/arm64', { tag: 'b' });
  const before = repo.pushes.length;
  const r = await createIndex([src(repo, 'a'), src(repo, 'b')], [{ input: 't', target: repo, reference: 't' }], {
    dryRun: true,
    annotations: ['org.opencontainers.image.source=https://x', 'index:foo=bar', 'manifest-descriptor[linux/arm64]:arch=arm'],
  });
  assert.equal(repo.pushes.length, before);
  assert.equal(repo.tags.has('t'), false);
  const idx = JSON.parse(r.raw.toString()) as ImageIndex;
  assert.deepEqual(idx.annotations, { 'org.opencontainers.image.source': 'https://x', foo: 'bar' });
  assert.equal(idx.manifests[0]!.annotations, undefined);
  assert.deepEqual(idx.manifests[1]!.annotations, { arch: 'arm' });
  assert.throws(() => parseAnnotation('manifest:foo=bar'), /only index and manifest-descriptor/);
  assert.throws(() => parseAnnotation('novalue'), /invalid annotation/);
});

test('a source index with a platform picks that image; several targets all get the index', async () => {
  const repo = new MemoryTarget('repo');
  const other = new MemoryTarget('other');
  const x = await pushBuildxIndex(repo, ['linux/amd64', 'linux/arm64'], 'x');
  const r = await createIndex([src(repo, 'x', 'linux/arm64')], [{ input: 'repo:a', target: repo, reference: 'a' }, { input: 'other:b', target: other, reference: 'b' }]);
  assert.deepEqual(r.entries.map((e) => e.platform), ['linux/arm64']);
  assert.equal(r.entries[0]!.digest, x.images[1]!.digest);
  assert.equal(r.entries[0]!.attestations.length, 1);
  assert.equal(other.tags.get('b')!.digest, r.descriptor.digest);
  await validateImageTree(other, r.descriptor);
});

test('--format docker converts OCI images and drops attestations', async () => {
  const repo = new MemoryTarget('repo');
  await pushBuildxIndex(repo, ['linux/amd64', 'linux/arm64'], 'x');
  const r = await createIndex([src(repo, 'x')], [{ input: 't', target: repo, reference: 't' }], { format: 'docker' });
  const idx = indexAt(repo, 't');
  assert.equal(idx.mediaType, MediaType.DockerManifestList);
  assert.equal(idx.manifests.length, 2);
  assert.match(r.notes.join('\n'), /dropped attestations/);
  await validateImageTree(repo, r.descriptor);
});

test('an OCI 1.1 referrer (a manifest with subject) is kept with its subject, not counted as a platform', async () => {
  const repo = new MemoryTarget('repo');
  const img = await pushImage(repo, 'linux/amd64', { tag: 'a' });
  const { descriptorFor, encodeJson } = await import('../oci/index.js');
  const empty = Buffer.from('{}');
  const ed = descriptorFor(empty, MediaType.OciEmpty);
  const sig = Buffer.from('signature');
  const sd = descriptorFor(sig, 'application/vnd.example.sig');
  const man = encodeJson({ schemaVersion: 2, mediaType: MediaType.OciManifest, artifactType: 'application/vnd.example.sig', config: ed, layers: [sd], subject: { mediaType: img.mediaType, digest: img.digest, size: img.size } });
  const md = descriptorFor(man, MediaType.OciManifest);
  await repo.push(ed, empty);
  await repo.push(sd, sig);
  await repo.push(md, man);
  const { buildIndex } = await import('../image/index.js');
  const built = buildIndex([img, { ...md, artifactType: 'application/vnd.example.sig' }]);
  await repo.push(built.descriptor, built.raw);
  await repo.tag(built.descriptor, 'withsig');
  const r = await createIndex([src(repo, 'withsig')], [{ input: 't', target: repo, reference: 't' }]);
  assert.deepEqual(r.entries.map((e) => e.platform), ['linux/amd64']);
  assert.deepEqual(r.entries[0]!.attestations, [md.digest]);
});

test('one image in two repositories: its attestation is read from the one that has it, in either order and with --append', async () => {
  const app = new MemoryTarget('app');
  const attapp = new MemoryTarget('attapp');
  const img = await pushImage(app, 'linux/amd64', { tag: 'amd' });
  const arm = await pushImage(app, 'linux/arm64', { tag: 'arm' });
  assert.equal((await pushImage(attapp, 'linux/amd64')).digest, img.digest);
  assert.equal((await pushImage(attapp, 'linux/arm64')).digest, arm.digest);
  const att = await pushAttestation(attapp, img);
  const armAtt = await pushAttestation(attapp, arm);
  const { buildIndex } = await import('../image/index.js');
  const one = buildIndex([img, att], { format: 'oci' });
  await attapp.push(one.descriptor, one.raw);
  await attapp.tag(one.descriptor, 'amd');
  const both = buildIndex([img, arm, att, armAtt], { format: 'oci' });
  await attapp.push(both.descriptor, both.raw);
  await attapp.tag(both.descriptor, 'both');
  for (const order of [[src(app, 'amd'), src(attapp, 'amd')], [src(attapp, 'amd'), src(app, 'amd')]]) {
    const out = new MemoryTarget('out');
    const r = await createIndex(order, [{ input: 'out:1', target: out, reference: '1' }]);
    assert.deepEqual(indexAt(out, '1').manifests.map((d) => d.digest), [img.digest, att.digest]);
    await validateImageTree(out, r.descriptor);
  }
  const r = await createIndex([src(app, 'arm')], [{ input: 'attapp:both', target: attapp, reference: 'both' }], { append: true });
  assert.deepEqual(indexAt(attapp, 'both').manifests.map((d) => d.digest), [img.digest, arm.digest, att.digest, armAtt.digest]);
  await validateImageTree(attapp, r.descriptor);
});

async function pushAnnotated(t: MemoryTarget, tag: string, platforms: string[], annotations: Record<string, string>, salt: string): Promise<{ raw: Buffer; digest: string }> {
  const { descriptorFor } = await import('../oci/index.js');
  const manifests = [];
  for (const p of platforms) manifests.push({ ...(await pushImage(t, p, { salt })), platform: parsePlatform(p), annotations: { 'org.example.desc': p } });
  // Indented, as buildx writes an index: archway never writes these bytes itself.
  const raw = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: MediaType.OciIndex, manifests, annotations }, null, 2));
  const d = descriptorFor(raw, MediaType.OciIndex);
  await t.push(d, raw);
  await t.tag(d, tag);
  return { raw, digest: d.digest };
}

test('index annotations of source indexes: one alone is kept byte for byte; several keep what all agree on; --annotation adds', async () => {
  const repo = new MemoryTarget('repo');
  const out = new MemoryTarget('out');
  const a = await pushAnnotated(repo, 'a', ['linux/amd64', 'linux/arm64'], { src: 'x', rev: '1' }, 'a');
  await pushAnnotated(repo, 'b', ['linux/s390x'], { src: 'x', rev: '2' }, 'b');
  let r = await createIndex([src(repo, 'a')], [{ input: 'out:1', target: out, reference: '1' }]);
  assert.equal(r.descriptor.digest, a.digest);
  assert.ok(out.blobs.get(a.digest)!.equals(a.raw));
  await validateImageTree(out, r.descriptor);
  r = await createIndex([src(repo, 'a')], [{ input: 'out:2', target: out, reference: '2' }], { annotations: ['index:extra=y'] });
  assert.deepEqual(indexAt(out, '2').annotations, { src: 'x', rev: '1', extra: 'y' });
  r = await createIndex([src(repo, 'a'), src(repo, 'b')], [{ input: 'out:3', target: out, reference: '3' }]);
  assert.deepEqual(indexAt(out, '3').annotations, { src: 'x' });
  assert.deepEqual(indexAt(out, '3').manifests.map((d) => d.annotations), [{ 'org.example.desc': 'linux/amd64' }, { 'org.example.desc': 'linux/arm64' }, { 'org.example.desc': 'linux/s390x' }]);
  // Anything that changes the index writes a new one: here a platform taken out.
  r = await createIndex([src(repo, 'a')], [{ input: 'out:4', target: out, reference: '4' }], { remove: [parsePlatform('linux/arm64')] });
  assert.notEqual(r.descriptor.digest, a.digest);
  assert.deepEqual(indexAt(out, '4').annotations, { src: 'x', rev: '1' });
});

test('a Docker manifest list never holds annotations', async () => {
  const repo = new MemoryTarget('repo');
  await pushImage(repo, 'linux/amd64', { tag: 'a', format: 'docker' });
  await pushImage(repo, 'linux/arm64', { tag: 'b', format: 'docker' });
  // Chosen by content: an OCI index instead, and why.
  let r = await createIndex([src(repo, 'a'), src(repo, 'b')], [{ input: 't', target: repo, reference: 't' }], { annotations: ['manifest-descriptor[linux/arm64]:k=v'] });
  assert.equal(r.descriptor.mediaType, MediaType.OciIndex);
  assert.match(r.notes.join('\n'), /OCI index.*Docker manifest list cannot hold annotations/);
  // Asked for: refused, naming the annotation, before anything is read or written.
  const before = repo.pushes.length;
  await assert.rejects(
    createIndex([src(repo, 'a'), src(repo, 'b')], [{ input: 'u', target: repo, reference: 'u' }], { format: 'docker', annotations: ['index:k=v'] }),
    (e: ArchwayError) => e.code === 'USAGE' && e.message.includes('index:k=v') && (e.hint ?? '').includes('--format oci'),
  );
  assert.equal(repo.pushes.length, before);
  assert.equal(repo.tags.has('u'), false);
  // Inherited (a source index's) under --format docker: dropped, said so.
  await pushAnnotated(repo, 'ann', ['linux/amd64'], { src: 'x' }, 'ann');
  r = await createIndex([src(repo, 'ann')], [{ input: 'd', target: repo, reference: 'd' }], { format: 'docker' });
  assert.equal(r.descriptor.mediaType, MediaType.DockerManifestList);
  assert.doesNotMatch(r.raw.toString(), /annotations/);
  assert.match(r.notes.join('\n'), /dropped annotations/);
  await validateImageTree(repo, r.descriptor);
});
