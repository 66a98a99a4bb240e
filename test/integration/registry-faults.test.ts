import { strict as assert } from 'node:assert';
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { gunzipSync } from 'node:zlib';
import { Readable } from 'node:stream';
import { describe, it, before, beforeEach } from 'node:test';
import { ArchwayError } from '../../src/util/index.js';
import { MediaType, computeDigest, digestHex, parseManifest, type Descriptor } from '../../src/oci/index.js';
import { parseReference } from '../../src/ref/index.js';
import { RegistryClient, StaticCredentials } from '../../src/registry/index.js';
import { startRegistry, type TestRegistry } from '../support/registries.js';
import { startFaultProxy, type FaultProxy } from '../support/fault-proxy.js';

function blob(text: string): { desc: Descriptor; data: Buffer } {
  const data = Buffer.from(text.repeat(50));
  return { desc: { mediaType: MediaType.OciLayer, digest: computeDigest(data), size: data.length }, data };
}

async function readAll(r: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of r) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

describe('faults through a proxy in front of a real registry', () => {
  let reg: TestRegistry;
  let proxy: FaultProxy;
  const clients: RegistryClient[] = [];
  const client = (retries = 3): RegistryClient => {
    const c = new RegistryClient({ credentials: new StaticCredentials({}), retries, retryBaseMs: 20 });
    clients.push(c);
    return c;
  };
  before(async () => {
    reg = await startRegistry({ kind: 'anonymous' });
    proxy = await startFaultProxy(reg);
  });
  beforeEach(() => proxy.clear());

  it('a reset connection succeeds after a retry', async () => {
    const repo = client().repository(parseReference(`${proxy.host}/faults/reset`));
    const { desc, data } = blob('reset ');
    proxy.inject({ kind: 'reset', method: 'POST', path: '/blobs/uploads/' });
    await repo.push(desc, data);
    proxy.inject({ kind: 'reset', method: 'GET', path: '/blobs/' });
    assert.deepEqual(await readAll(await repo.fetch(desc)), data);
    assert.equal(proxy.requests.filter((r) => r.fault === 'reset').length, 2);
  });

  it('a 500 then success', async () => {
    const repo = client().repository(parseReference(`${proxy.host}/faults/five`));
    const { desc, data } = blob('five hundred ');
    proxy.inject({ kind: 'status', status: 500, method: 'PUT', path: '/blobs/uploads/' });
    await repo.push(desc, data);
    proxy.inject({ kind: 'status', status: 503, method: 'GET', path: '/blobs/', times: 2 });
    assert.deepEqual(await readAll(await repo.fetch(desc)), data);
  });

  it('429 with Retry-After is honoured', async () => {
    const repo = client().repository(parseReference(`${proxy.host}/faults/slow`));
    const { desc, data } = blob('rate limited ');
    await repo.push(desc, data);
    proxy.clear();
    proxy.inject({ kind: 'status', status: 429, retryAfter: '1', method: 'GET', path: '/blobs/' });
    const t0 = Date.now();
    assert.deepEqual(await readAll(await repo.fetch(desc)), data);
    const [limited, next] = proxy.requests.filter((r) => r.method === 'GET' && r.path.includes('/blobs/'));
    assert.equal(limited?.status, 429);
    assert.equal(next?.status, 200);
    assert.ok((next?.at ?? 0) - (limited?.at ?? 0) >= 950, `waited ${(next?.at ?? 0) - (limited?.at ?? 0)} ms`);
    assert.ok(Date.now() - t0 >= 950);
    // An HTTP date works too.
    proxy.inject({ kind: 'status', status: 429, retryAfter: new Date(Date.now() + 1500).toUTCString(), method: 'GET', path: '/blobs/' });
    const t1 = Date.now();
    assert.deepEqual(await readAll(await repo.fetch(desc)), data);
    assert.ok(Date.now() - t1 >= 400);
  });

  it('429 that persists ends in a REGISTRY error (exit 3) after bounded retries', async () => {
    const repo = client(2).repository(parseReference(`${proxy.host}/faults/slow`));
    const { desc } = blob('rate limited ');
    proxy.inject({ kind: 'status', status: 429, retryAfter: '0', method: 'GET', path: '/blobs/', times: 10 });
    await assert.rejects(repo.fetch(desc), (e: unknown) => e instanceof ArchwayError && e.code === 'REGISTRY' && e.exitCode === 3 && e.message.includes(`${proxy.host}/faults/slow`));
    assert.equal(proxy.requests.filter((r) => r.status === 429).length, 3);
  });

  it('a truncated body is resumed (Range) and verified', async () => {
    const repo = client().repository(parseReference(`${proxy.host}/faults/cut`));
    const { desc, data } = blob('truncated body ');
    await repo.push(desc, data);
    proxy.inject({ kind: 'truncate', method: 'GET', path: '/blobs/sha256' });
    assert.deepEqual(await readAll(await repo.fetch(desc)), data);
  });

  it('a body truncated every time ends in an INTEGRITY error naming the reference', async () => {
    const repo = client(2).repository(parseReference(`${proxy.host}/faults/cut`));
    const { desc } = blob('truncated body ');
    proxy.inject({ kind: 'truncate', method: 'GET', path: '/blobs/sha256', times: 20 });
    await assert.rejects(readAll(await repo.fetch(desc)), (e: unknown) => e instanceof ArchwayError && e.code === 'INTEGRITY' && e.exitCode === 5 && e.message.includes(`${proxy.host}/faults/cut@${desc.digest}`));
  });

  it('wrong blob bytes are an INTEGRITY error, for blobs and for manifests', async () => {
    const repo = client().repository(parseReference(`${proxy.host}/faults/flip`));
    const { desc, data } = blob('flipped ');
    await repo.push(desc, data);
    proxy.inject({ kind: 'flip', method: 'GET', path: '/blobs/sha256' });
    await assert.rejects(readAll(await repo.fetch(desc)), (e: unknown) => e instanceof ArchwayError && e.code === 'INTEGRITY' && e.message.includes(desc.digest));
    const manifest = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: MediaType.OciManifest, config: { mediaType: MediaType.OciConfig, digest: desc.digest, size: desc.size }, layers: [] }));
    const mdesc: Descriptor = { mediaType: MediaType.OciManifest, digest: computeDigest(manifest), size: manifest.length };
    await repo.push(mdesc, manifest);
    const fresh = client().repository(parseReference(`${proxy.host}/faults/flip`));
    proxy.inject({ kind: 'flip', method: 'GET', path: '/manifests/sha256' });
    await assert.rejects(fresh.fetch(mdesc), (e: unknown) => e instanceof ArchwayError && e.code === 'INTEGRITY');
  });

  it('no tag is created when a push fails midway', async () => {
    const repo = client(1).repository(parseReference(`${proxy.host}/faults/half`));
    const layer = blob('layer that never arrives ');
    const config = Buffer.from('{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}');
    const cdesc: Descriptor = { mediaType: MediaType.OciConfig, digest: computeDigest(config), size: config.length };
    const manifest = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: MediaType.OciManifest, config: cdesc, layers: [layer.desc] }));
    const mdesc: Descriptor = { mediaType: MediaType.OciManifest, digest: computeDigest(manifest), size: manifest.length };
    proxy.inject({ kind: 'status', status: 500, method: 'PUT', path: `digest=sha256%3A${digestHex(layer.desc.digest)}`, times: 100 });
    const publish = async (): Promise<void> => {
      await repo.push(cdesc, config);
      await repo.push(layer.desc, Readable.from([layer.data]));
      await repo.push(mdesc, manifest);
      await repo.tag(mdesc, 'v1');
    };
    await assert.rejects(publish(), (e: unknown) => e instanceof ArchwayError && e.code === 'REGISTRY');
    proxy.clear();
    await assert.rejects(client().getManifest(parseReference(`${proxy.host}/faults/half:v1`)), (e: unknown) => e instanceof ArchwayError && e.code === 'NOT_FOUND');
    assert.equal(await repo.exists(mdesc), false);
  });

  it('a refused connection is a NETWORK error (exit 3) naming the host', async () => {
    const c = new RegistryClient({ credentials: new StaticCredentials({}), retries: 1, retryBaseMs: 10 });
    clients.push(c);
    await assert.rejects(c.getManifest(parseReference('127.0.0.1:1/nothing:here')), (e: unknown) => e instanceof ArchwayError && e.code === 'NETWORK' && e.exitCode === 3 && e.message.includes('127.0.0.1:1'));
  });

  it('an aborted signal stops a transfer with INTERRUPTED', async () => {
    const repo = client().repository(parseReference(`${proxy.host}/faults/abort`));
    const { desc } = blob('aborted ');
    const ac = new AbortController();
    ac.abort();
    await assert.rejects(repo.fetch(desc, { signal: ac.signal }), (e: unknown) => e instanceof ArchwayError && e.code === 'INTERRUPTED');
  });
});

describe('credentials never appear in errors or output', () => {
  it('basic auth through a failing proxy: the password is absent from every message', async () => {
    const reg = await startRegistry({ kind: 'htpasswd' });
    const proxy = await startFaultProxy(reg);
    const password = reg.password as string;
    const client = new RegistryClient({ credentials: new StaticCredentials({ [proxy.host]: { username: reg.user as string, password } }), retries: 1, retryBaseMs: 10 });
    const repo = client.repository(parseReference(`${proxy.host}/secret/app`));
    const { desc, data } = blob('secret ');
    const errors: unknown[] = [];
    for (const fault of [{ kind: 'status' as const, status: 500 }, { kind: 'reset' as const }]) {
      proxy.inject({ ...fault, times: 100 });
      try {
        await repo.push(desc, data);
      } catch (e) {
        errors.push(e);
      }
      proxy.clear();
    }
    const bad = new RegistryClient({ credentials: new StaticCredentials({ [proxy.host]: { username: reg.user as string, password: `${password}-wrong` } }) });
    try {
      await bad.repository(parseReference(`${proxy.host}/secret/app`)).push(desc, data);
    } catch (e) {
      errors.push(e);
    }
    assert.equal(errors.length, 3);
    const basic = Buffer.from(`${reg.user}:${password}`).toString('base64');
    for (const e of errors) {
      assert.ok(e instanceof ArchwayError);
      const text = `${e.message} ${e.hint ?? ''} ${JSON.stringify(e.details)} ${String(e.stack)} ${e.cause instanceof Error ? e.cause.message : ''}`;
      assert.ok(!text.includes(password), text);
      assert.ok(!text.includes(basic), text);
    }
    client.close();
    bad.close();
    await proxy.close();
    await reg.stop();
  });
});

describe('interop with skopeo', () => {
  it('reads back what `skopeo copy` pushed from an OCI layout, byte for byte', async (t) => {
    if (spawnSync('skopeo', ['--version']).status !== 0) {
      t.skip('skopeo is not installed');
      return;
    }
    const reg = await startRegistry({ kind: 'anonymous' });
    const dir = mkdtempSync(path.join(tmpdir(), 'archway-oci-layout-'));
    const blobs = path.join(dir, 'blobs', 'sha256');
    mkdirSync(blobs, { recursive: true });
    const put = (data: Buffer): { digest: Descriptor['digest']; size: number; data: Buffer } => {
      const digest = computeDigest(data);
      writeFileSync(path.join(blobs, digestHex(digest)), data);
      return { digest, size: data.length, data };
    };
    const layer = put(Buffer.from('not really a tar, but skopeo copies bytes as they are'));
    const config = put(Buffer.from(JSON.stringify({ architecture: 'arm64', os: 'linux', rootfs: { type: 'layers', diff_ids: [layer.digest] }, config: {} })));
    const manifest = put(Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: MediaType.OciManifest, config: { mediaType: MediaType.OciConfig, digest: config.digest, size: config.size }, layers: [{ mediaType: MediaType.OciLayer, digest: layer.digest, size: layer.size }] })));
    writeFileSync(path.join(dir, 'oci-layout'), '{"imageLayoutVersion":"1.0.0"}');
    writeFileSync(path.join(dir, 'index.json'), JSON.stringify({ schemaVersion: 2, manifests: [{ mediaType: MediaType.OciManifest, digest: manifest.digest, size: manifest.size, annotations: { 'org.opencontainers.image.ref.name': 'v1' } }] }));
    const copy = spawnSync('skopeo', ['copy', '--dest-tls-verify=false', `oci:${dir}:v1`, `docker://${reg.host}/interop/app:v1`], { encoding: 'utf8' });
    assert.equal(copy.status, 0, copy.stderr);
    const inspect = spawnSync('skopeo', ['inspect', '--raw', '--tls-verify=false', `docker://${reg.host}/interop/app:v1`], {});
    assert.equal(inspect.status, 0, inspect.stderr.toString());
    const client = new RegistryClient({ credentials: new StaticCredentials({}) });
    const m = await client.getManifest(parseReference(`${reg.host}/interop/app:v1`));
    assert.deepEqual(m.raw, inspect.stdout);
    assert.equal(m.digest, computeDigest(inspect.stdout));
    const repo = client.repository(parseReference(`${reg.host}/interop/app`));
    // skopeo compresses uncompressed layers for a registry: read the layers its manifest names.
    const pushed = parseManifest(m.raw, m.mediaType, 'skopeo manifest').value;
    assert.equal(pushed.layers.length, 1);
    const pushedLayer = pushed.layers[0] as Descriptor;
    const layerBytes = await readAll(await repo.fetch(pushedLayer));
    assert.deepEqual(pushedLayer.mediaType.endsWith('gzip') ? gunzipSync(layerBytes) : layerBytes, layer.data);
    assert.deepEqual(await readAll(await repo.fetch(pushed.config)), config.data);

    // And the other way: what archway pushes, skopeo reads with the same digest.
    const img = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: MediaType.OciManifest, config: { mediaType: MediaType.OciConfig, digest: config.digest, size: config.size }, layers: [] }));
    const idesc: Descriptor = { mediaType: MediaType.OciManifest, digest: computeDigest(img), size: img.length };
    const out = client.repository(parseReference(`${reg.host}/interop/back`));
    await out.push({ mediaType: MediaType.OciConfig, digest: config.digest, size: config.size }, config.data);
    await out.push(idesc, img);
    await out.tag(idesc, 'v2');
    const back = spawnSync('skopeo', ['inspect', '--raw', '--tls-verify=false', `docker://${reg.host}/interop/back:v2`], {});
    assert.equal(back.status, 0, back.stderr.toString());
    assert.deepEqual(back.stdout, img);
    client.close();
    await reg.stop();
  });
});
