/**
 * Credentials stay with the host they belong to when pulls go through a mirror
 * (`[registry."ORIGIN"] mirrors = ["MIRROR"]`): a mirror gets only the credentials saved for the
 * mirror's own host (Docker's config.json), never the origin's password or a token issued for the
 * origin; and the origin never gets the mirror's. Run through the CLI (`archway inspect`) with a
 * real config.json and config.toml, as a user would.
 */
import { strict as assert } from 'node:assert';
import { mkdtempSync, writeFileSync, mkdirSync } from 'node:fs';
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { before, describe, it } from 'node:test';
import { MediaType, computeDigest, type Descriptor } from '../../src/oci/index.js';
import { parseReference } from '../../src/ref/index.js';
import { RegistryClient, StaticCredentials } from '../../src/registry/index.js';
import { archwayInProcess } from '../support/cli.js';
import { startRegistry, type TestRegistry } from '../support/registries.js';

interface Part {
  desc: Descriptor;
  data: Buffer;
}

function imageOf(text: string): { parts: Part[]; manifest: Part } {
  const layerData = Buffer.from(text);
  const layer = { desc: { mediaType: MediaType.OciLayer, digest: computeDigest(layerData), size: layerData.length }, data: layerData };
  const configData = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: [layer.desc.digest] }, config: {} }));
  const config = { desc: { mediaType: MediaType.OciConfig, digest: computeDigest(configData), size: configData.length }, data: configData };
  const manifestData = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: MediaType.OciManifest, config: config.desc, layers: [layer.desc] }));
  const manifest = { desc: { mediaType: MediaType.OciManifest, digest: computeDigest(manifestData), size: manifestData.length }, data: manifestData };
  return { parts: [layer, config, manifest], manifest };
}

/** Pushes an image with archway's client (the credentials given) and tags it. */
async function pushImage(reg: TestRegistry, repository: string, tag: string, text: string): Promise<string> {
  const creds = reg.user ? new StaticCredentials({ [reg.host]: { username: reg.user, password: reg.password as string } }) : new StaticCredentials({});
  const client = new RegistryClient({ credentials: creds });
  try {
    const repo = client.repository(parseReference(`${reg.host}/${repository}`));
    const img = imageOf(text);
    for (const p of img.parts) await repo.push(p.desc, p.data);
    await repo.tag(img.manifest.desc, tag);
    return img.manifest.desc.digest;
  } finally {
    client.close();
  }
}

interface Seen {
  method: string;
  path: string;
  authorization: string | undefined;
}

/**
 * A host that is not a registry of ours: it records every request's Authorization header and
 * answers 401 with the challenge given (and, for Bearer, serves /token itself with a token of its own).
 */
async function recordingMirror(challenge: (port: number) => string): Promise<{ host: string; seen: Seen[]; close(): Promise<void> }> {
  const seen: Seen[] = [];
  const server = http.createServer((req, res) => {
    seen.push({ method: req.method ?? '', path: req.url ?? '', authorization: req.headers.authorization });
    req.resume();
    if ((req.url ?? '').startsWith('/token')) {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ token: 'the-mirrors-own-token', expires_in: 300 }));
      return;
    }
    if (req.headers.authorization === 'Bearer the-mirrors-own-token') {
      // Its own token is good, but it has no such image: the pull goes on to the origin.
      res.writeHead(404, { 'content-type': 'application/json', 'docker-distribution-api-version': 'registry/2.0' });
      res.end(JSON.stringify({ errors: [{ code: 'MANIFEST_UNKNOWN', message: 'manifest unknown' }] }));
      return;
    }
    const port = (server.address() as AddressInfo).port;
    res.writeHead(401, { 'content-type': 'application/json', 'www-authenticate': challenge(port), 'docker-distribution-api-version': 'registry/2.0' });
    res.end(JSON.stringify({ errors: [{ code: 'UNAUTHORIZED', message: 'authentication required' }] }));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const host = `127.0.0.1:${(server.address() as AddressInfo).port}`;
  return {
    host,
    seen,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

function basic(user: string, password: string): string {
  return Buffer.from(`${user}:${password}`).toString('base64');
}

/** The user:password inside a Basic header, else the header itself. */
function decoded(authorization: string): string {
  return authorization.startsWith('Basic ') ? Buffer.from(authorization.slice(6), 'base64').toString('utf8') : authorization;
}

const archway = archwayInProcess;

/** A Docker config dir with `auths` for the hosts given, and an archway config naming the mirror. */
function setup(auths: Record<string, { user: string; password: string }>, origin: string, mirror: string): NodeJS.ProcessEnv {
  const dir = mkdtempSync(path.join(tmpdir(), 'archway-mirror-auth-'));
  const docker = path.join(dir, 'docker');
  mkdirSync(docker);
  writeFileSync(path.join(docker, 'config.json'), JSON.stringify({ auths: Object.fromEntries(Object.entries(auths).map(([h, c]) => [h, { auth: basic(c.user, c.password) }])) }), { mode: 0o600 });
  const config = path.join(dir, 'config.toml');
  writeFileSync(config, `[registry."${origin}"]\nmirrors = ["${mirror}"]\n`);
  return { ...process.env, DOCKER_CONFIG: docker, ARCHWAY_CONFIG: config, ARCHWAY_HOME: path.join(dir, 'home'), XDG_CONFIG_HOME: path.join(dir, 'xdg') };
}

describe('mirrors get their own credentials, never the origin\'s', () => {
  let origin: TestRegistry;
  let originDigest: string;
  before(async () => {
    origin = await startRegistry({ kind: 'htpasswd' });
    originDigest = await pushImage(origin, 'priv/y', '1', 'the origin image');
  });

  it('a mirror answering 401 Basic gets no Authorization when only the origin is logged in; the origin answers', async (t) => {
    const mirror = await recordingMirror(() => 'Basic realm="mirror"');
    t.after(() => mirror.close());
    const env = setup({ [origin.host]: { user: origin.user as string, password: origin.password as string } }, origin.host, mirror.host);
    const r = await archway(['inspect', '--format', 'json', `${origin.host}/priv/y:1`], env);
    assert.equal(r.code, 0, r.stderr);
    assert.ok(r.stdout.includes(originDigest), r.stdout);
    assert.ok(mirror.seen.length > 0, 'the mirror was asked first');
    for (const s of mirror.seen) {
      assert.equal(s.authorization, undefined, `${s.method} ${s.path} carried credentials to the mirror`);
    }
    assert.ok(!r.stderr.includes(origin.password as string));
  });

  it('a mirror with its own saved credentials gets those, and the image comes from the mirror', async () => {
    // A real registry with htpasswd of another user and password, holding its own image.
    const mirror = await startRegistry({ kind: 'htpasswd', user: 'mirror-user' });
    const mirrorDigest = await pushImage(mirror, 'priv/y', '1', 'the mirror image');
    assert.notEqual(mirrorDigest, originDigest);
    const env = setup(
      {
        [origin.host]: { user: origin.user as string, password: origin.password as string },
        [mirror.host]: { user: mirror.user as string, password: mirror.password as string },
      },
      origin.host,
      mirror.host,
    );
    // If the origin's credentials went to the mirror, it would refuse them and the origin would answer.
    const r = await archway(['inspect', '--format', 'json', `${origin.host}/priv/y:1`], env);
    assert.equal(r.code, 0, r.stderr);
    assert.ok(r.stdout.includes(mirrorDigest), `expected the mirror's image ${mirrorDigest}:\n${r.stdout}`);
    await mirror.stop();
  });

  it('a real mirror without saved credentials refuses, and the pull falls back to the origin with the origin\'s', async () => {
    const mirror = await startRegistry({ kind: 'htpasswd', user: 'mirror-user' });
    await pushImage(mirror, 'priv/y', '1', 'the mirror image, not reachable');
    const env = setup({ [origin.host]: { user: origin.user as string, password: origin.password as string } }, origin.host, mirror.host);
    const r = await archway(['inspect', '--format', 'json', `${origin.host}/priv/y:1`], env);
    assert.equal(r.code, 0, r.stderr);
    assert.ok(r.stdout.includes(originDigest));
    await mirror.stop();
  });

  it('the library client: a mirror never sees the origin\'s password (StaticCredentials keyed by registry)', async (t) => {
    const mirror = await recordingMirror(() => 'Basic realm="mirror"');
    t.after(() => mirror.close());
    const client = new RegistryClient({
      credentials: new StaticCredentials({ [origin.host]: { username: origin.user as string, password: origin.password as string } }),
      settings: { hosts: { [origin.host]: { mirrors: [mirror.host] } } },
    });
    try {
      const m = await client.getManifest(parseReference(`${origin.host}/priv/y:1`));
      assert.equal(m.digest, originDigest);
      // Blobs too go to the mirror first.
      const repo = client.repository(parseReference(`${origin.host}/priv/y`));
      const layers = (JSON.parse(m.raw.toString('utf8')) as { layers: Descriptor[] }).layers;
      for await (const _ of await repo.fetch(layers[0] as Descriptor)) void _;
    } finally {
      client.close();
    }
    assert.ok(mirror.seen.some((s) => s.path.includes('/blobs/')), 'blobs were asked of the mirror as well');
    for (const s of mirror.seen) assert.equal(s.authorization, undefined, `${s.method} ${s.path}`);
  });
});

describe('mirrors and bearer tokens', () => {
  let origin: TestRegistry;
  let originDigest: string;
  before(async () => {
    origin = await startRegistry({ kind: 'token' });
    originDigest = await pushImage(origin, 'priv/t', '1', 'the token origin image');
  });

  it('neither the origin\'s password nor its token reaches a bearer mirror; the mirror\'s token is asked for anonymously', async (t) => {
    const mirror = await recordingMirror((port) => `Bearer realm="http://127.0.0.1:${port}/token",service="mirror"`);
    t.after(() => mirror.close());
    const env = setup({ [origin.host]: { user: origin.user as string, password: origin.password as string } }, origin.host, mirror.host);
    const before = origin.tokenRequests?.length ?? 0;
    const r = await archway(['inspect', '--format', 'json', `${origin.host}/priv/t:1`], env);
    assert.equal(r.code, 0, r.stderr);
    assert.ok(r.stdout.includes(originDigest));
    assert.ok(mirror.seen.some((s) => s.path.startsWith('/token')), 'the mirror\'s token server was asked');
    for (const s of mirror.seen) {
      if (s.authorization === undefined) continue;
      assert.ok(!decoded(s.authorization).includes(origin.password as string), `the origin's password went to the mirror: ${s.method} ${s.path}`);
      assert.equal(s.authorization, 'Bearer the-mirrors-own-token', `only the mirror's own token may go to it: ${s.method} ${s.path}`);
    }
    // The origin's token server was asked with the origin's user.
    const asked = (origin.tokenRequests ?? []).slice(before);
    assert.ok(asked.length > 0);
    for (const t of asked) assert.equal(t.user, origin.user);
  });

  it('a bearer mirror with saved credentials gets its own at its token realm; the origin never gets the mirror\'s', async (t) => {
    const mirror = await recordingMirror((port) => `Bearer realm="http://127.0.0.1:${port}/token",service="mirror"`);
    t.after(() => mirror.close());
    const mirrorPassword = 'mirror-only-secret-9f3a';
    const env = setup(
      {
        [origin.host]: { user: origin.user as string, password: origin.password as string },
        [mirror.host]: { user: 'mirror-user', password: mirrorPassword },
      },
      origin.host,
      mirror.host,
    );
    const before = origin.tokenRequests?.length ?? 0;
    const r = await archway(['inspect', '--format', 'json', `${origin.host}/priv/t:1`], env);
    assert.equal(r.code, 0, r.stderr);
    const tokenAsks = mirror.seen.filter((s) => s.path.startsWith('/token'));
    assert.ok(tokenAsks.length > 0);
    for (const s of tokenAsks) assert.equal(decoded(s.authorization ?? ''), `mirror-user:${mirrorPassword}`);
    for (const s of mirror.seen.filter((x) => !x.path.startsWith('/token') && x.authorization !== undefined)) assert.equal(s.authorization, 'Bearer the-mirrors-own-token');
    for (const t of (origin.tokenRequests ?? []).slice(before)) assert.equal(t.user, origin.user, 'the origin\'s token server got only the origin\'s user');
  });
});
