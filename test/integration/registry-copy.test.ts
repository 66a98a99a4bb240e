/**
 * Registry-to-registry copies against two real distribution registries, with a recording proxy in
 * front of one of them: what is asked and sent (each blob asked about once, sent in one streaming
 * PUT; a destination that holds the image is asked about its root only), and what happens when
 * the source lies (an INTEGRITY error, no blob committed, no tag).
 */
import { strict as assert } from 'node:assert';
import { existsSync, readFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import { Readable } from 'node:stream';
import { describe, it, before } from 'node:test';
import { ArchwayError } from '../../src/util/index.js';
import { MediaType, computeDigest, type Descriptor } from '../../src/oci/index.js';
import { parseReference } from '../../src/ref/index.js';
import { RegistryClient, StaticCredentials } from '../../src/registry/index.js';
import { copyImage } from '../../src/imagetools/index.js';
import { startRegistry, blobDataPath, repositoryLayerLinkPath, type TestRegistry } from '../support/registries.js';
import { startFaultProxy, type FaultProxy } from '../support/fault-proxy.js';

interface Part {
  desc: Descriptor;
  data: Buffer;
}

function part(mediaType: string, data: Buffer): Part {
  return { desc: { mediaType, digest: computeDigest(data), size: data.length }, data };
}

interface MultiArch {
  index: Part;
  images: Array<{ manifest: Part; config: Part; layers: Part[] }>;
  blobs: Part[];
}

/** An OCI index over images of several platforms, each with layers of the given sizes. */
function multiArch(platforms: string[], layerSizes: number[]): MultiArch {
  const images = platforms.map((p) => {
    const [os, architecture] = p.split('/') as [string, string];
    const layers = layerSizes.map((n) => part(MediaType.OciLayer, randomBytes(n)));
    const config = part(MediaType.OciConfig, Buffer.from(JSON.stringify({ architecture, os, rootfs: { type: 'layers', diff_ids: layers.map((l) => l.desc.digest) }, config: {} })));
    const manifest = part(MediaType.OciManifest, Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: MediaType.OciManifest, config: config.desc, layers: layers.map((l) => l.desc) })));
    return { manifest, config, layers, platform: { os, architecture } };
  });
  const index = part(
    MediaType.OciIndex,
    Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: MediaType.OciIndex, manifests: images.map((i) => ({ ...i.manifest.desc, platform: i.platform })) })),
  );
  return { index, images, blobs: images.flatMap((i) => [i.config, ...i.layers]) };
}

async function publish(client: RegistryClient, name: string, img: MultiArch, tag: string): Promise<void> {
  const repo = client.repository(parseReference(name));
  for (const b of img.blobs) await repo.push(b.desc, b.data);
  for (const i of img.images) await repo.push(i.manifest.desc, i.manifest.data);
  await repo.push(img.index.desc, img.index.data);
  await repo.tag(img.index.desc, tag);
}

async function readAll(r: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of r) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

describe('copy between two real registries', () => {
  let a: TestRegistry;
  let b: TestRegistry;
  let proxyB: FaultProxy;
  let proxyA: FaultProxy;
  let img: MultiArch;
  const clients: RegistryClient[] = [];
  const client = (opts: { chunkSize?: number } = {}): RegistryClient => {
    const c = new RegistryClient({ credentials: new StaticCredentials({}), retries: 1, retryBaseMs: 10, ...opts });
    clients.push(c);
    return c;
  };

  before(async () => {
    [a, b] = await Promise.all([startRegistry({ kind: 'anonymous' }), startRegistry({ kind: 'anonymous' })]);
    [proxyA, proxyB] = await Promise.all([startFaultProxy(a), startFaultProxy(b)]);
    // Two platforms, each with a 3 MiB and a 40 KiB layer.
    img = multiArch(['linux/amd64', 'linux/arm64'], [3 * 1024 * 1024, 40 * 1024]);
    await publish(client(), `${a.host}/src/app`, img, 'v1');
  });

  it('copies byte for byte; each blob is asked about once and sent in one streaming PUT', async () => {
    proxyB.clear();
    const c = client();
    const r = await copyImage(c.repository(parseReference(`${a.host}/src/app`)), 'v1', c.repository(parseReference(`${proxyB.host}/dst/app`)), ['v1']);
    assert.equal(r.descriptor.digest, img.index.desc.digest);
    assert.equal(r.stats.blobsCopied, img.blobs.length);
    const reqs = proxyB.requests;
    for (const blob of img.blobs) {
      assert.equal(reqs.filter((q) => q.method === 'HEAD' && q.path.endsWith(`/blobs/${blob.desc.digest}`)).length, 1, `HEAD ${blob.desc.digest}`);
    }
    assert.equal(reqs.filter((q) => q.method === 'PATCH').length, 0, 'no chunks');
    assert.equal(reqs.filter((q) => q.method === 'PUT' && q.path.includes('/blobs/uploads/') && q.status === 201).length, img.blobs.length);
    // Only the tag is asked about (is it there already?); it is not, so nothing is read back.
    assert.deepEqual(
      reqs.filter((q) => q.method === 'GET' && q.path.includes('/manifests/')).map((q) => `${q.path} ${q.status}`),
      ['/v2/dst/app/manifests/v1 404'],
      'nothing read back from the destination',
    );
    // What the destination holds, read by a fresh client.
    const fresh = client().repository(parseReference(`${b.host}/dst/app`));
    const m = await fresh.getManifest('v1');
    assert.deepEqual(m.raw, img.index.data);
    for (const blob of img.blobs) assert.deepEqual(readFileSync(blobDataPath(b, blob.desc.digest)), blob.data);
    for (const i of img.images) assert.deepEqual((await fresh.getManifest(i.manifest.desc.digest)).raw, i.manifest.data);
  });

  it('a copy to a registry that holds the image asks about its root only', async () => {
    proxyB.clear();
    const c = client();
    const r = await copyImage(c.repository(parseReference(`${a.host}/src/app`)), 'v1', c.repository(parseReference(`${proxyB.host}/dst/app`)), ['v2']);
    assert.equal(r.descriptor.digest, img.index.desc.digest);
    assert.equal(r.stats.blobsCopied, 0);
    assert.equal(r.stats.present, true);
    const calls = proxyB.requests.filter((q) => q.path !== '/v2/').map((q) => `${q.method} ${q.path}`);
    // The root and the tag are asked about side by side; the tag is new, so it is written.
    assert.deepEqual(calls.sort(), ['GET /v2/dst/app/manifests/v2', `HEAD /v2/dst/app/manifests/${img.index.desc.digest}`, 'PUT /v2/dst/app/manifests/v2']);
    assert.equal((await client().getManifest(parseReference(`${b.host}/dst/app:v2`))).digest, img.index.desc.digest);
  });

  it('a copy whose tag already points at the root writes nothing', async () => {
    proxyB.clear();
    const r = await copyImage(client().repository(parseReference(`${a.host}/src/app`)), 'v1', client().repository(parseReference(`${proxyB.host}/dst/app`)), ['v2']);
    assert.equal(r.descriptor.digest, img.index.desc.digest);
    assert.deepEqual(r.tags, ['v2']);
    // One request: the tag's manifest, which is the root; nothing is asked about or written.
    const calls = proxyB.requests.filter((q) => q.path !== '/v2/').map((q) => `${q.method} ${q.path}`);
    assert.deepEqual(calls, ['GET /v2/dst/app/manifests/v2']);
    assert.equal((await client().getManifest(parseReference(`${b.host}/dst/app:v2`))).digest, img.index.desc.digest);
  });

  it('a present image manifest is taken with its blobs; only the rest is asked about and sent', async () => {
    const c = client();
    const dst = c.repository(parseReference(`${proxyB.host}/partial/app`));
    // The destination holds the first platform's image already.
    const first = img.images[0]!;
    for (const p of [first.config, ...first.layers]) await dst.push(p.desc, p.data);
    await dst.push(first.manifest.desc, first.manifest.data);
    proxyB.clear();
    const r = await copyImage(c.repository(parseReference(`${a.host}/src/app`)), 'v1', dst, ['v1']);
    const second = img.images[1]!;
    assert.equal(r.stats.blobsCopied, 1 + second.layers.length);
    const heads = proxyB.requests.filter((q) => q.method === 'HEAD').map((q) => q.path.split('/').pop());
    for (const p of [first.config, ...first.layers]) assert.ok(!heads.includes(p.desc.digest), `not asked about ${p.desc.digest}`);
    assert.equal((await client().getManifest(parseReference(`${b.host}/partial/app:v1`))).digest, img.index.desc.digest);
  });

  it('a source that serves wrong bytes fails the copy with INTEGRITY: no blob committed, no tag', async () => {
    const big = img.images[1]!.layers[0]!;
    proxyA.clear();
    proxyA.inject({ kind: 'flip', method: 'GET', path: `/blobs/${big.desc.digest}` });
    const c = client();
    await assert.rejects(
      copyImage(c.repository(parseReference(`${proxyA.host}/src/app`)), 'v1', c.repository(parseReference(`${b.host}/liar/app`)), ['v1']),
      (e: unknown) => e instanceof ArchwayError && e.code === 'INTEGRITY' && e.message.includes(big.desc.digest),
    );
    assert.equal(existsSync(repositoryLayerLinkPath(b, 'liar/app', big.desc.digest)), false, 'the lied-about blob is not in the repository');
    await assert.rejects(client().getManifest(parseReference(`${b.host}/liar/app:v1`)), (e: unknown) => e instanceof ArchwayError && e.code === 'NOT_FOUND');
  });
});

describe('first requests', () => {
  it('a fresh client reads a tag with one request (no ping first); a host that is no registry is still named as such', async () => {
    const reg = await startRegistry({ kind: 'anonymous' });
    const proxy = await startFaultProxy(reg);
    const one = multiArch(['linux/amd64'], [1024]);
    const c = new RegistryClient({ credentials: new StaticCredentials({}) });
    await publish(c, `${reg.host}/first/app`, one, 'v1');
    const fresh = new RegistryClient({ credentials: new StaticCredentials({}) });
    const m = await fresh.getManifest(parseReference(`${proxy.host}/first/app:v1`));
    assert.equal(m.digest, one.index.desc.digest);
    assert.deepEqual(proxy.requests.map((q) => `${q.method} ${q.path}`), ['GET /v2/first/app/manifests/v1']);
    // An HTTP server that is not a registry.
    const server = http.createServer((_req, res) => {
      res.writeHead(404, { 'content-type': 'text/html' });
      res.end('<h1>nothing here</h1>');
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const host = `127.0.0.1:${(server.address() as AddressInfo).port}`;
    await assert.rejects(fresh.getManifest(parseReference(`${host}/x/y:z`)), (e: unknown) => e instanceof ArchwayError && e.code === 'REGISTRY' && /does not answer as a registry/.test(e.message));
    await new Promise<void>((resolve) => server.close(() => resolve()));
    c.close();
    fresh.close();
  });
});

describe('a lying source, small blob', () => {
  it('wrong bytes of a small blob, found before its upload starts, fail the copy at once', async () => {
    const [src, dst] = await Promise.all([startRegistry({ kind: 'anonymous' }), startRegistry({ kind: 'anonymous' })]);
    const proxy = await startFaultProxy(src);
    const one = multiArch(['linux/amd64'], [40 * 1024]);
    const c = new RegistryClient({ credentials: new StaticCredentials({}), retries: 1, retryBaseMs: 10, idleTimeoutMs: 20_000 });
    await publish(c, `${src.host}/small/app`, one, 'v1');
    const layer = one.images[0]!.layers[0]!;
    proxy.inject({ kind: 'flip', method: 'GET', path: `/blobs/${layer.desc.digest}` });
    const t0 = Date.now();
    await assert.rejects(
      copyImage(c.repository(parseReference(`${proxy.host}/small/app`)), 'v1', c.repository(parseReference(`${dst.host}/small/app`)), ['v1']),
      (e: unknown) => e instanceof ArchwayError && e.code === 'INTEGRITY' && e.message.includes(layer.desc.digest),
    );
    assert.ok(Date.now() - t0 < 5000, `took ${Date.now() - t0} ms`);
    assert.equal(existsSync(blobDataPath(dst, layer.desc.digest)), false);
    await assert.rejects(c.getManifest(parseReference(`${dst.host}/small/app:v1`)), (e: unknown) => e instanceof ArchwayError && e.code === 'NOT_FOUND');
    c.close();
  });
});

describe('chunked uploads (when asked for) stream their pieces', () => {
  let reg: TestRegistry;
  let proxy: FaultProxy;
  before(async () => {
    reg = await startRegistry({ kind: 'anonymous' });
    proxy = await startFaultProxy(reg);
  });

  it('sends PATCH pieces of chunkSize from a stream, then the PUT', async () => {
    const client = new RegistryClient({ credentials: new StaticCredentials({}), chunkSize: 256 * 1024 });
    const data = randomBytes(1024 * 1024 + 333);
    const p = part(MediaType.OciLayer, data);
    const repo = client.repository(parseReference(`${proxy.host}/chunks/ok`));
    // Uneven pieces, so chunk edges fall inside the source's buffers.
    const pieces: Buffer[] = [];
    for (let at = 0; at < data.length; at += 100_000) pieces.push(data.subarray(at, at + 100_000));
    await repo.push(p.desc, Readable.from(pieces));
    assert.equal(proxy.requests.filter((q) => q.method === 'PATCH').length, 5);
    assert.deepEqual(readFileSync(blobDataPath(reg, p.desc.digest)), data);
    assert.deepEqual(await readAll(await repo.fetch(p.desc)), data);
    client.close();
  });

  it('wrong bytes of the right size: INTEGRITY, and the upload is never completed', async () => {
    const client = new RegistryClient({ credentials: new StaticCredentials({}), chunkSize: 256 * 1024 });
    const p = part(MediaType.OciLayer, randomBytes(600 * 1024));
    const wrong = randomBytes(600 * 1024);
    proxy.clear();
    await assert.rejects(client.repository(parseReference(`${proxy.host}/chunks/bad`)).push(p.desc, Readable.from([wrong])), (e: unknown) => e instanceof ArchwayError && e.code === 'INTEGRITY');
    assert.equal(proxy.requests.filter((q) => q.method === 'PUT').length, 0, 'no final PUT ?digest=');
    assert.equal(existsSync(blobDataPath(reg, p.desc.digest)), false);
    client.close();
  });
});
