import { strict as assert } from 'node:assert';
import { existsSync, mkdtempSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import * as http from 'node:http';
import * as https from 'node:https';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { Readable } from 'node:stream';
import { describe, it, before } from 'node:test';
import { ArchwayError } from '../../src/util/index.js';
import { MediaType, computeDigest, type Descriptor } from '../../src/oci/index.js';
import { parseReference } from '../../src/ref/index.js';
import { ProgressRecorder } from '../../src/progress/index.js';
import { RegistryClient, StaticCredentials, DockerConfigCredentials, login, logout, type RegistrySettings } from '../../src/registry/index.js';
import { startRegistry, blobDataPath, repositoryLayerLinkPath, type TestRegistry } from '../support/registries.js';

function blob(text: string): { desc: Descriptor; data: Buffer } {
  const data = Buffer.from(text);
  return { desc: { mediaType: MediaType.OciLayer, digest: computeDigest(data), size: data.length }, data };
}

function imageOf(layerText: string): { config: { desc: Descriptor; data: Buffer }; layer: { desc: Descriptor; data: Buffer }; manifest: { desc: Descriptor; data: Buffer } } {
  const layer = blob(layerText);
  const configData = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: [layer.desc.digest] }, config: {} }));
  const config = { desc: { mediaType: MediaType.OciConfig, digest: computeDigest(configData), size: configData.length }, data: configData };
  const manifestData = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: MediaType.OciManifest, config: config.desc, layers: [layer.desc] }));
  const manifest = { desc: { mediaType: MediaType.OciManifest, digest: computeDigest(manifestData), size: manifestData.length }, data: manifestData };
  return { config, layer, manifest };
}

async function readAll(r: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of r) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

/** Plain HTTP requests, no archway code: the judge for the registry helper. */
function raw(url: string, opts: { method: string; headers?: Record<string, string>; body?: Buffer; ca?: Buffer }): Promise<{ status: number; headers: http.IncomingHttpHeaders; body: Buffer }> {
  return new Promise((resolve, reject) => {
    const mod = url.startsWith('https:') ? https : http;
    const req = mod.request(url, { method: opts.method, headers: { ...opts.headers, ...(opts.body ? { 'content-length': String(opts.body.length) } : {}) }, ...(opts.ca ? { ca: opts.ca } : {}), agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }));
    });
    req.on('error', reject);
    req.end(opts.body);
  });
}

describe('test registries (plain HTTP judge)', () => {
  for (const kind of ['anonymous', 'htpasswd', 'tls'] as const) {
    it(`pushes a blob to the ${kind} registry with plain HTTP requests and reads it back`, async () => {
      const reg = await startRegistry({ kind });
      const ca = reg.caFile ? readFileSync(reg.caFile) : undefined;
      const headers: Record<string, string> = reg.user ? { authorization: `Basic ${Buffer.from(`${reg.user}:${reg.password}`).toString('base64')}` } : {};
      if (kind === 'htpasswd') {
        const denied = await raw(`${reg.url}/v2/`, { method: 'GET', ...(ca ? { ca } : {}) });
        assert.equal(denied.status, 401);
      }
      const { desc, data } = blob(`hello ${kind}`);
      const start = await raw(`${reg.url}/v2/judge/blobs/uploads/`, { method: 'POST', headers, ...(ca ? { ca } : {}) });
      assert.equal(start.status, 202);
      const loc = new URL(String(start.headers.location), reg.url);
      loc.searchParams.set('digest', desc.digest);
      const put = await raw(loc.toString(), { method: 'PUT', headers: { ...headers, 'content-type': 'application/octet-stream' }, body: data, ...(ca ? { ca } : {}) });
      assert.equal(put.status, 201);
      const got = await raw(`${reg.url}/v2/judge/blobs/${desc.digest}`, { method: 'GET', headers, ...(ca ? { ca } : {}) });
      assert.equal(got.status, 200);
      assert.deepEqual(got.body, data);
      assert.ok(existsSync(blobDataPath(reg, desc.digest)));
      await reg.stop();
    });
  }
});

describe('RegistryRepository against an anonymous registry', () => {
  let reg: TestRegistry;
  before(async () => {
    reg = await startRegistry({ kind: 'anonymous' });
  });

  it('pushes blobs and a manifest, tags it, reads everything back', async () => {
    const progress = new ProgressRecorder();
    const client = new RegistryClient({ credentials: new StaticCredentials({}), progress });
    const repo = client.repository(parseReference(`${reg.host}/team/app`));
    const img = imageOf('layer bytes one');
    assert.equal(await repo.exists(img.layer.desc), false);
    await repo.push(img.layer.desc, Readable.from([img.layer.data]));
    await repo.push(img.config.desc, img.config.data);
    await repo.push(img.layer.desc, img.layer.data); // second time: skipped
    await repo.push(img.manifest.desc, img.manifest.data);
    await repo.tag(img.manifest.desc, 'v1');
    assert.equal(await repo.exists(img.layer.desc), true);
    assert.equal(await repo.exists(img.manifest.desc), true);
    assert.ok(progress.events.some((e) => e.kind === 'blob' && e.phase === 'skip'));
    assert.ok(progress.events.some((e) => e.kind === 'tag'));

    const fresh = new RegistryClient({ credentials: new StaticCredentials({}) });
    const m = await fresh.getManifest(parseReference(`${reg.host}/team/app:v1`));
    assert.deepEqual(m.raw, img.manifest.data);
    assert.equal(m.digest, img.manifest.desc.digest);
    assert.equal(m.mediaType, MediaType.OciManifest);
    const resolved = await fresh.repository(parseReference(`${reg.host}/team/app`)).resolve('v1');
    assert.deepEqual(resolved, img.manifest.desc);
    const byDigest = await fresh.getManifest(parseReference(`${reg.host}/team/app@${img.manifest.desc.digest}`));
    assert.deepEqual(byDigest.raw, img.manifest.data);
    const layer = await readAll(await fresh.repository(parseReference(`${reg.host}/team/app`)).fetch(img.layer.desc));
    assert.deepEqual(layer, img.layer.data);
    const man = await readAll(await fresh.repository(parseReference(`${reg.host}/team/app`)).fetch(img.manifest.desc));
    assert.deepEqual(man, img.manifest.data);
    assert.deepEqual(await fresh.listTags(parseReference(`${reg.host}/team/app`)), ['v1']);
    client.close();
    fresh.close();
  });

  it('uploads a large blob in PATCH chunks', async () => {
    const client = new RegistryClient({ credentials: new StaticCredentials({}), chunkSize: 64 * 1024 });
    const repo = client.repository(parseReference(`${reg.host}/chunky`));
    const data = Buffer.alloc(200 * 1024 + 17);
    for (let i = 0; i < data.length; i++) data[i] = (i * 7919) % 251;
    const desc: Descriptor = { mediaType: MediaType.OciLayer, digest: computeDigest(data), size: data.length };
    await repo.push(desc, Readable.from([data.subarray(0, 1000), data.subarray(1000)]));
    assert.deepEqual(readFileSync(blobDataPath(reg, desc.digest)), data);
    assert.deepEqual(await readAll(await repo.fetch(desc)), data);
    client.close();
  });

  it('refuses content that does not match the descriptor (INTEGRITY) and leaves no blob', async () => {
    const client = new RegistryClient({ credentials: new StaticCredentials({}) });
    const repo = client.repository(parseReference(`${reg.host}/liar`));
    const { desc } = blob('the real content');
    const wrong = Buffer.from('the fake content');
    await assert.rejects(repo.push(desc, Readable.from([wrong])), (e: unknown) => e instanceof ArchwayError && e.code === 'INTEGRITY' && e.exitCode === 5);
    assert.equal(existsSync(blobDataPath(reg, desc.digest)), false);
    await assert.rejects(repo.push(desc, wrong), (e: unknown) => e instanceof ArchwayError && e.code === 'INTEGRITY');
    client.close();
  });

  it('names the reference in NOT_FOUND for an unknown tag', async () => {
    const client = new RegistryClient({ credentials: new StaticCredentials({}) });
    await assert.rejects(client.getManifest(parseReference(`${reg.host}/team/app:nope`)), (e: unknown) => e instanceof ArchwayError && e.code === 'NOT_FOUND' && e.message.includes(`${reg.host}/team/app:nope`));
    client.close();
  });

  it('pulls through a mirror first, and from the origin when the mirror lacks the image', async () => {
    const mirror = await startRegistry({ kind: 'anonymous' });
    const client = new RegistryClient({ credentials: new StaticCredentials({}) });
    const origin = client.repository(parseReference(`${reg.host}/mirrored/app`));
    const img = imageOf('mirror test');
    for (const part of [img.layer, img.config, img.manifest]) await origin.push(part.desc, part.data);
    await origin.tag(img.manifest.desc, 'latest');
    const settings: RegistrySettings = { hosts: { [reg.host]: { mirrors: [mirror.host] } } };
    // The mirror is empty: the origin answers.
    const viaMirror = new RegistryClient({ credentials: new StaticCredentials({}), settings });
    const m1 = await viaMirror.getManifest(parseReference(`${reg.host}/mirrored/app:latest`));
    assert.equal(m1.digest, img.manifest.desc.digest);
    // Put a different image under the same name on the mirror: now the mirror answers.
    const other = imageOf('only on the mirror');
    const mrepo = client.repository(parseReference(`${mirror.host}/mirrored/app`));
    for (const part of [other.layer, other.config, other.manifest]) await mrepo.push(part.desc, part.data);
    await mrepo.tag(other.manifest.desc, 'latest');
    const viaMirror2 = new RegistryClient({ credentials: new StaticCredentials({}), settings });
    const m2 = await viaMirror2.getManifest(parseReference(`${reg.host}/mirrored/app:latest`));
    assert.equal(m2.digest, other.manifest.desc.digest);
    await mirror.stop();
    for (const c of [client, viaMirror, viaMirror2]) c.close();
  });
});

describe('basic auth (htpasswd)', () => {
  let reg: TestRegistry;
  let configDir: string;
  before(async () => {
    reg = await startRegistry({ kind: 'htpasswd' });
    configDir = mkdtempSync(path.join(tmpdir(), 'archway-docker-config-'));
  });

  it('refuses a wrong password with AUTH (exit 4), saves nothing, and never shows the password', async () => {
    const wrong = 'WrongPassword-s3cr3t-XYZ';
    let err: unknown;
    try {
      await login(reg.host, { username: reg.user as string, password: wrong, configDir });
    } catch (e) {
      err = e;
    }
    assert.ok(err instanceof ArchwayError, String(err));
    assert.equal(err.code, 'AUTH');
    assert.equal(err.exitCode, 4);
    assert.ok(!err.message.includes(wrong));
    assert.ok(!JSON.stringify(err.details).includes(wrong));
    assert.ok(!String(err.hint).includes(wrong));
    assert.equal(existsSync(path.join(configDir, 'config.json')), false);
  });

  it('an anonymous push fails with AUTH naming the registry', async () => {
    const client = new RegistryClient({ credentials: new StaticCredentials({}) });
    const { desc, data } = blob('needs auth');
    await assert.rejects(client.repository(parseReference(`${reg.host}/private`)).push(desc, data), (e: unknown) => e instanceof ArchwayError && e.code === 'AUTH' && e.message.includes(reg.host));
    client.close();
  });

  it('logs in (config.json 0600, base64 auth), pushes with the saved credentials, logs out', async () => {
    const result = await login(reg.host, { username: reg.user as string, password: reg.password as string, configDir });
    assert.equal(result.storedIn, 'file');
    assert.equal(result.scheme, 'basic');
    const file = path.join(configDir, 'config.json');
    assert.equal(statSync(file).mode & 0o777, 0o600);
    const cfg = JSON.parse(readFileSync(file, 'utf8')) as { auths: Record<string, { auth: string }> };
    assert.equal(Buffer.from(cfg.auths[reg.host]?.auth ?? '', 'base64').toString(), `${reg.user}:${reg.password}`);

    const client = new RegistryClient({ credentials: new DockerConfigCredentials({ configDir }) });
    const repo = client.repository(parseReference(`${reg.host}/private/app`));
    const img = imageOf('private layer');
    for (const part of [img.layer, img.config, img.manifest]) await repo.push(part.desc, part.data);
    await repo.tag(img.manifest.desc, 'v1');
    assert.deepEqual(await readAll(await repo.fetch(img.layer.desc)), img.layer.data);
    client.close();

    assert.equal(await logout(reg.host, { configDir }), true);
    const after = JSON.parse(readFileSync(file, 'utf8')) as { auths: Record<string, unknown> };
    assert.equal(after.auths[reg.host], undefined);
    assert.equal(await logout(reg.host, { configDir }), false);
  });

  it('stores through a credsStore helper when configured (docker-credential protocol)', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'archway-helper-'));
    const store = path.join(dir, 'store.json');
    const helper = path.join(dir, 'docker-credential-testhelper');
    writeFileSync(
      helper,
      `#!/usr/bin/env node
const fs = require('fs'); const f = ${JSON.stringify(store)};
const db = fs.existsSync(f) ? JSON.parse(fs.readFileSync(f, 'utf8')) : {};
let input = ''; process.stdin.on('data', (d) => (input += d)); process.stdin.on('end', () => {
  const action = process.argv[2];
  if (action === 'store') { const c = JSON.parse(input); db[c.ServerURL] = c; fs.writeFileSync(f, JSON.stringify(db)); }
  else if (action === 'get') { const c = db[input.trim()]; if (!c) { process.stdout.write('credentials not found in native keychain'); process.exit(1); } process.stdout.write(JSON.stringify(c)); }
  else if (action === 'erase') { if (!db[input.trim()]) { process.stdout.write('credentials not found in native keychain'); process.exit(1); } delete db[input.trim()]; fs.writeFileSync(f, JSON.stringify(db)); }
});
`,
      { mode: 0o755 },
    );
    const helperConfig = mkdtempSync(path.join(tmpdir(), 'archway-docker-config-'));
    writeFileSync(path.join(helperConfig, 'config.json'), JSON.stringify({ credsStore: 'testhelper' }));
    const env = { ...process.env, PATH: `${dir}:${process.env['PATH'] ?? ''}` };
    const result = await login(reg.host, { username: reg.user as string, password: reg.password as string, configDir: helperConfig, env });
    assert.equal(result.storedIn, 'helper');
    assert.ok(!readFileSync(path.join(helperConfig, 'config.json'), 'utf8').includes(reg.password as string));
    const creds = new DockerConfigCredentials({ configDir: helperConfig, env });
    assert.deepEqual(await creds.get(reg.host), { username: reg.user, password: reg.password });
    assert.equal(await logout(reg.host, { configDir: helperConfig, env }), true);
    assert.equal(await creds.get(reg.host), undefined);
  });
});

describe('TLS registry', () => {
  let reg: TestRegistry;
  before(async () => {
    reg = await startRegistry({ kind: 'tls' });
  });

  it('pushes and pulls with ca = [cert]', async () => {
    const client = new RegistryClient({ credentials: new StaticCredentials({}), settings: { hosts: { [reg.host]: { ca: [reg.caFile as string] } } } });
    const repo = client.repository(parseReference(`${reg.host}/secure/app`));
    const { desc, data } = blob('over tls with ca');
    await repo.push(desc, data);
    assert.deepEqual(await readAll(await repo.fetch(desc)), data);
    client.close();
  });

  it('pushes and pulls with insecure (settings and insecureRegistries)', async () => {
    for (const client of [
      new RegistryClient({ credentials: new StaticCredentials({}), settings: { hosts: { [reg.host]: { insecure: true } } } }),
      new RegistryClient({ credentials: new StaticCredentials({}), insecureRegistries: [reg.host] }),
    ]) {
      const repo = client.repository(parseReference(`${reg.host}/secure/insecure`));
      const { desc, data } = blob('over tls without verification');
      await repo.push(desc, data);
      assert.deepEqual(await readAll(await repo.fetch(desc)), data);
      client.close();
    }
  });

  it('fails with a clear TLS error naming the host without ca or insecure', async () => {
    const client = new RegistryClient({ credentials: new StaticCredentials({}), settings: { hosts: { [reg.host]: { http: false } } }, retries: 0 });
    await assert.rejects(client.getManifest(parseReference(`${reg.host}/secure/app:latest`)), (e: unknown) => {
      assert.ok(e instanceof ArchwayError);
      assert.equal(e.code, 'NETWORK');
      assert.match(e.message, /TLS/);
      assert.ok(e.message.includes(reg.host), e.message);
      assert.ok(e.hint?.includes('ca'));
      return true;
    });
    // By default a loopback host speaks plain HTTP, which a TLS registry refuses: say so.
    const plain = new RegistryClient({ credentials: new StaticCredentials({}), retries: 0 });
    await assert.rejects(plain.getManifest(parseReference(`${reg.host}/secure/app:latest`)), (e: unknown) => e instanceof ArchwayError && e.code === 'NETWORK' && e.message.includes(reg.host) && /TLS/.test(e.message));
    client.close();
    plain.close();
  });
});

describe('token auth', () => {
  let reg: TestRegistry;
  before(async () => {
    reg = await startRegistry({ kind: 'token', refreshTokens: { 'refresh-abc': 'archway' } });
  });

  it('pushes with a bearer token, mounts across repositories, pulls', async () => {
    const progress = new ProgressRecorder();
    const creds = new StaticCredentials({ [reg.host]: { username: reg.user as string, password: reg.password as string } });
    const client = new RegistryClient({ credentials: creds, progress });
    const src = client.repository(parseReference(`${reg.host}/source/app`));
    const dst = client.repository(parseReference(`${reg.host}/dest/app`));
    const { desc, data } = blob('mount me');
    await src.push(desc, data);
    assert.equal(existsSync(repositoryLayerLinkPath(reg, 'dest/app', desc.digest)), false);
    const requestsBefore = reg.tokenRequests?.length ?? 0;
    assert.equal(await dst.mount(desc, src), true);
    assert.ok(progress.events.some((e) => e.kind === 'blob' && e.phase === 'mount' && e.digest === desc.digest));
    assert.ok(existsSync(repositoryLayerLinkPath(reg, 'dest/app', desc.digest)), 'the destination repository links the blob');
    const mountToken = reg.tokenRequests?.slice(requestsBefore).find((r) => r.scopes.includes('repository:source/app:pull'));
    assert.ok(mountToken, 'a token with pull on the source repository was requested');
    assert.ok(mountToken.scopes.includes('repository:dest/app:pull,push'));
    assert.deepEqual(await readAll(await dst.fetch(desc)), data);
    // A mount of a blob the source lacks falls back (false), and the caller pushes.
    const other = blob('not in the source');
    assert.equal(await dst.mount(other.desc, src), false);
    client.close();
  });

  it('anonymous pulls are refused with AUTH; a refresh token (identitytoken) works', async () => {
    const anon = new RegistryClient({ credentials: new StaticCredentials({}) });
    await assert.rejects(anon.getManifest(parseReference(`${reg.host}/source/app:latest`)), (e: unknown) => e instanceof ArchwayError && (e.code === 'AUTH' || e.code === 'DENIED'));
    anon.close();
    const configDir = mkdtempSync(path.join(tmpdir(), 'archway-docker-config-'));
    writeFileSync(path.join(configDir, 'config.json'), JSON.stringify({ auths: { [reg.host]: { identitytoken: 'refresh-abc' } } }));
    const client = new RegistryClient({ credentials: new DockerConfigCredentials({ configDir }) });
    const repo = client.repository(parseReference(`${reg.host}/refreshed/app`));
    const { desc, data } = blob('pushed with a refresh token');
    await repo.push(desc, data);
    assert.ok(reg.tokenRequests?.some((r) => r.grantType === 'refresh_token' && r.user === 'archway'));
    client.close();
  });

  it('login checks the credentials with a token fetch; a wrong password saves nothing', async () => {
    const configDir = mkdtempSync(path.join(tmpdir(), 'archway-docker-config-'));
    await assert.rejects(login(reg.host, { username: reg.user as string, password: 'nope-nope', configDir }), (e: unknown) => e instanceof ArchwayError && e.code === 'AUTH' && !e.message.includes('nope-nope'));
    assert.equal(existsSync(path.join(configDir, 'config.json')), false);
    const r = await login(reg.host, { username: reg.user as string, password: reg.password as string, configDir });
    assert.equal(r.scheme, 'bearer');
  });
});
