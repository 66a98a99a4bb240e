/**
 * A registry host that accepts connections but never answers fails in seconds with a clear error
 * naming the image reference, after one warned retry, instead of hanging for minutes; while a
 * blob body that flows slowly is never cut by the answer timeout, and one that stops flowing is
 * still bounded by the idle timeout (and resumed). The timeouts are made short through the
 * client's options and, for the CLI, ARCHWAY_REGISTRY_TIMEOUT / ARCHWAY_REGISTRY_IDLE_TIMEOUT.
 */
import { strict as assert } from 'node:assert';
import * as http from 'node:http';
import * as net from 'node:net';
import type { AddressInfo } from 'node:net';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { ArchwayError } from '../../src/util/index.js';
import { MediaType, computeDigest, type Descriptor } from '../../src/oci/index.js';
import { parseReference } from '../../src/ref/index.js';
import { ProgressRecorder } from '../../src/progress/index.js';
import { RegistryClient, StaticCredentials } from '../../src/registry/index.js';
import { archwayInProcess } from '../support/cli.js';
import { startRegistry, type TestRegistry } from '../support/registries.js';

/** A TCP server that accepts every connection and never sends a byte; counts what it was sent. */
async function silentServer(): Promise<{ host: string; connections: () => number; requests: () => number; close(): Promise<void> }> {
  const sockets = new Set<net.Socket>();
  let connections = 0;
  let requests = 0;
  const server = net.createServer((s) => {
    connections++;
    sockets.add(s);
    s.on('data', (d: Buffer) => (requests += d.toString('latin1').match(/^(GET|HEAD|POST|PUT|PATCH|DELETE) /gm)?.length ?? 0));
    s.on('error', () => undefined);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    host: `127.0.0.1:${(server.address() as AddressInfo).port}`,
    connections: () => connections,
    requests: () => requests,
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}

const archway = archwayInProcess;

function cliEnv(extra: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
  const dir = mkdtempSync(path.join(tmpdir(), 'archway-timeouts-'));
  return { ...process.env, ARCHWAY_HOME: path.join(dir, 'home'), ARCHWAY_CONFIG: path.join(dir, 'config.toml'), XDG_CONFIG_HOME: path.join(dir, 'xdg'), ...extra };
}

describe('a registry that accepts connections but never answers', () => {
  let silent: Awaited<ReturnType<typeof silentServer>>;
  before(async () => {
    silent = await silentServer();
  });
  after(() => silent.close());

  it('archway inspect fails with exit 3 in seconds, warns before its one retry, and names the reference', { timeout: 20_000 }, async () => {
    const started = Date.now();
    const r = await archway(['inspect', `${silent.host}/x/y:1`], cliEnv({ ARCHWAY_REGISTRY_TIMEOUT: '0.2' }));
    const took = Date.now() - started;
    assert.equal(r.code, 3, r.stderr);
    assert.ok(took < 5000, `took ${took} ms`);
    assert.ok(r.stderr.includes(`warning: ${silent.host} did not answer in 200 ms; retrying (2/2)`), r.stderr);
    assert.ok(r.stderr.includes(`archway: error: ${silent.host}/x/y:1: cannot talk to ${silent.host}: no answer in 200 ms`), r.stderr);
    assert.match(r.stderr, /hint: .*ARCHWAY_REGISTRY_TIMEOUT/);
  });

  it('the client gives up after timeoutRetries + 1 attempts (probe, ping and request share them)', { timeout: 20_000 }, async () => {
    const progress = new ProgressRecorder();
    const client = new RegistryClient({ credentials: new StaticCredentials({}), responseTimeoutMs: 200, retries: 4, retryBaseMs: 10, progress });
    const before = silent.requests();
    const started = Date.now();
    try {
      await assert.rejects(client.getManifest(parseReference(`${silent.host}/team/app:v1`)), (e: unknown) => {
        assert.ok(e instanceof ArchwayError, String(e));
        assert.equal(e.code, 'NETWORK');
        assert.equal(e.exitCode, 3);
        assert.ok(e.message.startsWith(`${silent.host}/team/app:v1: cannot talk to ${silent.host}`), e.message);
        assert.equal(e.details['timeout'], 'response');
        return true;
      });
    } finally {
      client.close();
    }
    const took = Date.now() - started;
    assert.ok(took < 3000, `took ${took} ms`);
    assert.equal(silent.requests() - before, 2, 'two requests: the first, and one retry');
    const warnings = progress.events.filter((e) => e.kind === 'message' && e.level === 'warn');
    assert.equal(warnings.length, 1);
    assert.ok(warnings[0]?.kind === 'message' && warnings[0].text === `${silent.host} did not answer in 200 ms; retrying (2/2)`);
  });

  it('timeoutRetries: 0 fails at the first timeout, without a warning', { timeout: 20_000 }, async () => {
    const progress = new ProgressRecorder();
    const client = new RegistryClient({ credentials: new StaticCredentials({}), responseTimeoutMs: 150, timeoutRetries: 0, progress });
    const before = silent.requests();
    try {
      await assert.rejects(client.getManifest(parseReference(`${silent.host}/team/app:v1`)), (e: unknown) => e instanceof ArchwayError && e.code === 'NETWORK');
    } finally {
      client.close();
    }
    assert.equal(silent.requests() - before, 1);
    assert.equal(progress.events.length, 0);
  });
});

/**
 * A proxy in front of a real registry that passes blob bodies on in small pieces with pauses
 * (`trickle`), or stops after half of the first one (`stall`), so that the body takes longer than
 * the answer timeout in all.
 */
async function slowBodyProxy(upstream: TestRegistry, mode: { kind: 'trickle'; pieces: number; pauseMs: number } | { kind: 'stall' }): Promise<{ host: string; blobGets: string[]; close(): Promise<void> }> {
  const [upHost, upPort] = [upstream.host.slice(0, upstream.host.lastIndexOf(':')), Number(upstream.host.slice(upstream.host.lastIndexOf(':') + 1))];
  const agent = new http.Agent({ keepAlive: false });
  const blobGets: string[] = [];
  let stalled = false;
  const server = http.createServer((req, res) => {
    const isBlobGet = req.method === 'GET' && (req.url ?? '').includes('/blobs/sha256:');
    if (isBlobGet) blobGets.push(String(req.headers.range ?? 'whole'));
    const up = http.request({ host: upHost, port: upPort, method: req.method, path: req.url, headers: req.headers, agent }, (upRes) => {
      if (!isBlobGet) {
        res.writeHead(upRes.statusCode ?? 502, upRes.headers);
        upRes.pipe(res);
        return;
      }
      const chunks: Buffer[] = [];
      upRes.on('data', (c: Buffer) => chunks.push(c));
      upRes.on('end', () => {
        const body = Buffer.concat(chunks);
        res.writeHead(upRes.statusCode ?? 502, upRes.headers);
        if (mode.kind === 'stall') {
          if (!stalled) {
            stalled = true;
            res.write(body.subarray(0, Math.floor(body.length / 2))); // and then nothing, until the client gives up
            return;
          }
          res.end(body);
          return;
        }
        const size = Math.ceil(body.length / mode.pieces);
        let offset = 0;
        const next = (): void => {
          if (res.destroyed) return;
          if (offset >= body.length) {
            res.end();
            return;
          }
          res.write(body.subarray(offset, offset + size));
          offset += size;
          setTimeout(next, mode.pauseMs);
        };
        next();
      });
    });
    up.on('error', () => {
      if (!res.headersSent) res.writeHead(502);
      res.end();
    });
    req.pipe(up);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    host: `127.0.0.1:${(server.address() as AddressInfo).port}`,
    blobGets,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        agent.destroy();
        server.close(() => resolve());
      }),
  };
}

describe('blob bodies: an idle timeout, never a total one', () => {
  let reg: TestRegistry;
  let desc: Descriptor;
  let data: Buffer;
  before(async () => {
    reg = await startRegistry({ kind: 'anonymous' });
    data = Buffer.alloc(256 * 1024);
    for (let i = 0; i < data.length; i++) data[i] = (i * 31) % 253;
    desc = { mediaType: MediaType.OciLayer, digest: computeDigest(data), size: data.length };
    const client = new RegistryClient({ credentials: new StaticCredentials({}) });
    await client.repository(parseReference(`${reg.host}/slow/blob`)).push(desc, data);
    client.close();
  });

  async function download(host: string, opts: { responseTimeoutMs: number; idleTimeoutMs: number }): Promise<Buffer> {
    const client = new RegistryClient({ credentials: new StaticCredentials({}), retryBaseMs: 10, ...opts });
    try {
      const chunks: Buffer[] = [];
      for await (const c of await client.repository(parseReference(`${host}/slow/blob`)).fetch(desc)) chunks.push(c as Buffer);
      return Buffer.concat(chunks);
    } finally {
      client.close();
    }
  }

  it('a body that keeps flowing for longer than the answer timeout is read whole', { timeout: 20_000 }, async () => {
    const proxy = await slowBodyProxy(reg, { kind: 'trickle', pieces: 6, pauseMs: 150 });
    try {
      const got = await download(proxy.host, { responseTimeoutMs: 200, idleTimeoutMs: 2000 });
      assert.deepEqual(got, data);
      assert.deepEqual(proxy.blobGets, ['whole'], 'read in one request, not cut and resumed');
    } finally {
      await proxy.close();
    }
  });

  it('a body that stops flowing is cut by the idle timeout and resumed from where it stopped', { timeout: 20_000 }, async () => {
    const proxy = await slowBodyProxy(reg, { kind: 'stall' });
    try {
      const got = await download(proxy.host, { responseTimeoutMs: 5000, idleTimeoutMs: 300 });
      assert.deepEqual(got, data);
      assert.equal(proxy.blobGets.length, 2);
      assert.match(proxy.blobGets[1] ?? '', /^bytes=\d+-$/);
    } finally {
      await proxy.close();
    }
  });
});

describe('a mirror that never answers', () => {
  it('is given up after its timeouts, with a warning, and not asked again: the origin serves the pull', { timeout: 20_000 }, async () => {
    const silent = await silentServer();
    const origin = await startRegistry({ kind: 'anonymous' });
    try {
      const layer = Buffer.from('behind a dead mirror');
      const layerDesc: Descriptor = { mediaType: MediaType.OciLayer, digest: computeDigest(layer), size: layer.length };
      const config = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: [layerDesc.digest] }, config: {} }));
      const configDesc: Descriptor = { mediaType: MediaType.OciConfig, digest: computeDigest(config), size: config.length };
      const manifest = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: MediaType.OciManifest, config: configDesc, layers: [layerDesc] }));
      const manifestDesc: Descriptor = { mediaType: MediaType.OciManifest, digest: computeDigest(manifest), size: manifest.length };
      const pusher = new RegistryClient({ credentials: new StaticCredentials({}) });
      const target = pusher.repository(parseReference(`${origin.host}/m/app`));
      await target.push(layerDesc, layer);
      await target.push(configDesc, config);
      await target.push(manifestDesc, manifest);
      await target.tag(manifestDesc, '1');
      pusher.close();

      const progress = new ProgressRecorder();
      const client = new RegistryClient({ credentials: new StaticCredentials({}), responseTimeoutMs: 200, retryBaseMs: 10, progress, settings: { hosts: { [origin.host]: { mirrors: [silent.host] } } } });
      try {
        const m = await client.getManifest(parseReference(`${origin.host}/m/app:1`));
        assert.equal(m.digest, manifestDesc.digest);
        const asked = silent.requests();
        assert.equal(asked, 2);
        const chunks: Buffer[] = [];
        for await (const c of await client.repository(parseReference(`${origin.host}/m/app`)).fetch(layerDesc)) chunks.push(c as Buffer);
        assert.deepEqual(Buffer.concat(chunks), layer);
        assert.equal(silent.requests(), asked, 'the mirror was not asked again');
      } finally {
        client.close();
      }
      const warnings = progress.events.flatMap((e) => (e.kind === 'message' && e.level === 'warn' ? [e.text] : []));
      assert.deepEqual(warnings, [`${silent.host} did not answer in 200 ms; retrying (2/2)`, `mirror ${silent.host} cannot be reached; pulling from ${origin.host} instead`]);
    } finally {
      await silent.close();
      await origin.stop();
    }
  });
});
