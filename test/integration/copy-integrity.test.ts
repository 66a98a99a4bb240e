/**
 * `archway copy` and `archway pull` as a user runs them (a process, its exit code, its stderr, the
 * files it leaves), when the bytes lie or the copy stops early:
 *
 * - a registry (behind a proxy that flips a byte) serves a layer whose bytes do not match its
 *   digest, copied to every local destination (oci:, oci-archive:, docker-archive:, the store);
 * - a blob corrupted at rest in a local OCI layout, copied to every destination, a registry too;
 * - archive destinations when the copy fails (a missing tag, a refused option, an index of several
 *   platforms for a docker-archive) or is interrupted (SIGINT while a layer is in flight).
 *
 * Every case: the exit code of DESIGN.md (5 integrity, 2 usage, 130 interrupted), a message that
 * names the reference and the digest with no stack trace, no blob committed, no tag written, and
 * no staging directory or temp file left beside the target.
 *
 * The command runs from the compiled modules (dist/src/cli/main.js, what bin/archway bundles), in a
 * process of its own: a promise that never settles shows as an exit 0 there, and an uncaught
 * 'error' event as a crash, which is what users saw.
 */
import { strict as assert } from 'node:assert';
import type { ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, beforeEach, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { computeDigest, MediaType, type Descriptor } from '../../src/oci/index.js';
import { parseReference } from '../../src/ref/index.js';
import { RegistryClient, StaticCredentials } from '../../src/registry/index.js';
import { OciLayout, Store } from '../../src/store/index.js';
import { startRegistry, type TestRegistry } from '../support/registries.js';
import { startFaultProxy, type FaultProxy } from '../support/fault-proxy.js';
import { runCommand, tempHome, type CliOptions, type CliResult } from '../support/cli.js';

const MAIN = fileURLToPath(new URL('../../src/cli/main.js', import.meta.url));
const RUNNER = `const { runCli } = await import(${JSON.stringify(MAIN)}); await runCli(process.argv.slice(1));`;

const home = tempHome('archway-copy-integrity-');
after(() => home.cleanup());

function cli(args: string[], opts: CliOptions = {}): Promise<CliResult> {
  return runCommand(process.execPath, ['--input-type=module', '-e', RUNNER, ...args], { timeoutMs: 60_000, ...opts, env: { ...home.env, ...opts.env } });
}

interface Part {
  desc: Descriptor;
  data: Buffer;
}

function part(mediaType: string, data: Buffer): Part {
  return { desc: { mediaType, digest: computeDigest(data), size: data.length }, data };
}

interface Img {
  manifest: Part;
  config: Part;
  layer: Part;
  platform: { os: string; architecture: string };
}

function image(platform: string, layerSize: number): Img {
  const [os, architecture] = platform.split('/') as [string, string];
  const layer = part(MediaType.OciLayer, randomBytes(layerSize));
  const config = part(MediaType.OciConfig, Buffer.from(JSON.stringify({ architecture, os, rootfs: { type: 'layers', diff_ids: [layer.desc.digest] }, config: {} })));
  const manifest = part(MediaType.OciManifest, Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: MediaType.OciManifest, config: config.desc, layers: [layer.desc] })));
  return { manifest, config, layer, platform: { os, architecture } };
}

async function publish(client: RegistryClient, name: string, imgs: Img[], tag: string): Promise<void> {
  const repo = client.repository(parseReference(name));
  for (const i of imgs) {
    await repo.push(i.layer.desc, i.layer.data);
    await repo.push(i.config.desc, i.config.data);
    await repo.push(i.manifest.desc, i.manifest.data);
  }
  if (imgs.length === 1) {
    await repo.tag((imgs[0] as Img).manifest.desc, tag);
    return;
  }
  const index = part(MediaType.OciIndex, Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: MediaType.OciIndex, manifests: imgs.map((i) => ({ ...i.manifest.desc, platform: i.platform })) })));
  await repo.push(index.desc, index.data);
  await repo.tag(index.desc, tag);
}

async function writeLayout(dir: string, img: Img): Promise<void> {
  const layout = await OciLayout.open(dir, { create: true });
  await layout.push(img.layer.desc, img.layer.data);
  await layout.push(img.config.desc, img.config.data);
  await layout.push(img.manifest.desc, img.manifest.data);
  await layout.tag(img.manifest.desc, 'latest');
}

function flipByteOf(file: string): void {
  const b = readFileSync(file);
  const at = Math.floor(b.length / 2);
  b[at] = (b[at] ?? 0) ^ 0xff;
  writeFileSync(file, b);
}

let dirs = 0;
function freshDir(base: string, name: string): string {
  const dir = join(base, `${name}-${++dirs}`);
  mkdirSync(dir, { recursive: true });
  return dir;
}

/** The failure a user should see: this exit code, these words, no stack trace, no crash, no success line. */
function assertFailure(r: CliResult, code: number, ...words: string[]): void {
  const all = `exit ${r.code}\nstdout: ${r.stdout}\nstderr: ${r.stderr}`;
  assert.equal(r.code, code, all);
  for (const w of words) assert.ok(r.stderr.includes(w), `stderr names ${w}\n${all}`);
  assert.doesNotMatch(r.stderr, /\n\s+at |node:events|Unhandled 'error'|internal error/, all);
  assert.doesNotMatch(r.stdout, /platforms:/, all);
}

async function manifestStatus(reg: TestRegistry, repo: string, ref: string): Promise<number> {
  const res = await fetch(`${reg.url}/v2/${repo}/manifests/${ref}`, { method: 'HEAD', headers: { accept: [MediaType.OciIndex, MediaType.OciManifest].join(', ') } });
  return res.status;
}

async function blobStatus(reg: TestRegistry, repo: string, digest: string): Promise<number> {
  return (await fetch(`${reg.url}/v2/${repo}/blobs/${digest}`, { method: 'HEAD' })).status;
}

/** An OCI layout left by a failed copy: no image named, the lied-about blob absent, no temp file. */
function assertEmptyLayout(dir: string, digest: string): void {
  const index = JSON.parse(readFileSync(join(dir, 'index.json'), 'utf8')) as { manifests: unknown[] };
  assert.deepEqual(index.manifests, [], `${dir}: no image named`);
  assert.equal(existsSync(join(dir, 'blobs', 'sha256', digest.slice('sha256:'.length))), false, `${dir}: the bad blob is not committed`);
  const tmp = join(dir, '.archway-tmp');
  assert.deepEqual(existsSync(tmp) ? readdirSync(tmp) : [], [], `${dir}: no temp file`);
}

async function assertStoreHasNothing(digest: string): Promise<void> {
  const store = await Store.open({ env: home.env });
  assert.deepEqual(await store.list(), [], 'nothing named in the store');
  assert.equal(await store.exists({ mediaType: MediaType.OciLayer, digest: digest as Descriptor['digest'], size: 0 }), false, 'the bad blob is not in the store');
  assert.equal(existsSync(store.layout.blobPath(digest)), false, 'the bad blob is not in the store');
  const tmp = store.layout.tmpDir;
  assert.deepEqual(existsSync(tmp) ? readdirSync(tmp) : [], [], 'no temp file in the store');
}

let reg: TestRegistry;
let proxy: FaultProxy;
let small: Img;
let big: Img;
let multi: Img[];
const work = freshDir(home.dir, 'work');

before(async () => {
  reg = await startRegistry({ kind: 'anonymous' });
  proxy = await startFaultProxy(reg);
  small = image('linux/amd64', 4096);
  big = image('linux/amd64', 3 * 1024 * 1024);
  multi = [image('linux/amd64', 2048), image('linux/arm64', 2048)];
  const client = new RegistryClient({ credentials: new StaticCredentials({}) });
  await publish(client, `${reg.host}/x/single`, [small], '1');
  await publish(client, `${reg.host}/x/big`, [big], '1');
  await publish(client, `${reg.host}/x/multi`, multi, '1');
  client.close();
});
beforeEach(() => proxy.clear());

describe('a registry serves a layer whose bytes do not match its digest', () => {
  for (const which of ['small', 'big'] as const) {
    const dests: Array<{ kind: string; args: (ref: string, out: string) => string[]; check: (out: string, digest: string) => void | Promise<void> }> = [
      { kind: 'oci:', args: (ref, out) => ['copy', ref, `oci:${out}/e:1`], check: (out, d) => (assert.deepEqual(readdirSync(out), ['e']), assertEmptyLayout(join(out, 'e'), d)) },
      { kind: 'oci-archive:', args: (ref, out) => ['copy', ref, `oci-archive:${out}/m.tar`], check: (out) => assert.deepEqual(readdirSync(out), [], 'no archive, no staging directory') },
      { kind: 'docker-archive:', args: (ref, out) => ['copy', ref, `docker-archive:${out}/d.tar`], check: (out) => assert.deepEqual(readdirSync(out), [], 'no archive, no staging directory') },
      { kind: 'store: (pull)', args: (ref) => ['pull', ref], check: (_out, d) => assertStoreHasNothing(d) },
      { kind: 'store: (copy)', args: (ref) => ['copy', ref, 'store:x/single:1'], check: (_out, d) => assertStoreHasNothing(d) },
    ];
    for (const dst of dests) {
      it(`${which} layer to ${dst.kind}: exit 5 naming the reference and digest; nothing committed, nothing tagged, nothing left`, async () => {
        const img = which === 'small' ? small : big;
        const repo = which === 'small' ? 'x/single' : 'x/big';
        proxy.inject({ kind: 'flip', method: 'GET', path: `/blobs/${img.layer.desc.digest}`, times: 20 });
        const out = freshDir(work, 'flip');
        const r = await cli(dst.args(`${proxy.host}/${repo}:1`, out));
        assertFailure(r, 5, `${proxy.host}/${repo}@${img.layer.desc.digest}`, 'digest mismatch');
        await dst.check(out, img.layer.desc.digest);
        assert.ok(proxy.requests.some((q) => q.fault === 'flip'), 'the lie was served');
      });
    }
  }
});

describe('a blob corrupted at rest in a local OCI layout', () => {
  let src: string;
  before(async () => {
    src = join(freshDir(work, 'corrupt'), 'corr');
    await writeLayout(src, small);
    flipByteOf(join(src, 'blobs', 'sha256', small.layer.desc.digest.slice('sha256:'.length)));
  });
  const cases: Array<{ kind: string; dst: (out: string) => string; check: (out: string) => void | Promise<void> }> = [
    { kind: 'oci:', dst: (out) => `oci:${out}/corr2:1`, check: (out) => (assert.deepEqual(readdirSync(out), ['corr2']), assertEmptyLayout(join(out, 'corr2'), small.layer.desc.digest)) },
    { kind: 'oci-archive:', dst: (out) => `oci-archive:${out}/corr.tar`, check: (out) => assert.deepEqual(readdirSync(out), [], 'no archive, no staging directory') },
    { kind: 'docker-archive:', dst: (out) => `docker-archive:${out}/corr.tar`, check: (out) => assert.deepEqual(readdirSync(out), [], 'no archive, no staging directory') },
    { kind: 'store:', dst: () => 'store:corr/copy:1', check: () => assertStoreHasNothing(small.layer.desc.digest) },
    {
      kind: 'a registry',
      dst: () => `${reg.host}/corr/copy:1`,
      check: async () => {
        assert.equal(await manifestStatus(reg, 'corr/copy', '1'), 404, 'no tag in the registry');
        assert.equal(await blobStatus(reg, 'corr/copy', small.layer.desc.digest), 404, 'the bad blob is not in the repository');
      },
    },
  ];
  for (const c of cases) {
    it(`copied to ${c.kind}: exit 5 naming the layout and the digest, no crash, nothing left`, async () => {
      const out = freshDir(work, 'corr-out');
      const r = await cli(['copy', `oci:${src}`, c.dst(out)]);
      assertFailure(r, 5, `oci:${src}@${small.layer.desc.digest}`, 'digest mismatch');
      await c.check(out);
    });
  }
});

describe('archive destinations leave nothing behind when the copy fails', () => {
  for (const kind of ['oci-archive', 'docker-archive']) {
    it(`${kind}: a missing source tag`, async () => {
      const out = freshDir(work, 'missing');
      const r = await cli(['copy', `${proxy.host}/x/single:nope`, `${kind}:${out}/m.tar`]);
      assert.notEqual(r.code, 0, r.stderr);
      assert.match(r.stderr, /nope/);
      assert.deepEqual(readdirSync(out), []);
    });

    it(`${kind}: an option refused after the destination was opened`, async () => {
      const out = freshDir(work, 'refused');
      const r = await cli(['copy', '--tag', 'extra', `${proxy.host}/x/single:1`, `${kind}:${out}/m.tar`]);
      assertFailure(r, 2, '--tag');
      assert.deepEqual(readdirSync(out), []);
    });
  }

  it('docker-archive refuses an index of two platforms before it downloads any blob', async () => {
    const out = freshDir(work, 'multi');
    const r = await cli(['copy', `${proxy.host}/x/multi:1`, `docker-archive:${out}/d.tar`]);
    assertFailure(r, 2, 'docker-archive holds one platform', 'linux/amd64', 'linux/arm64');
    assert.match(r.stderr, /--platform/);
    assert.deepEqual(readdirSync(out), []);
    const blobGets = proxy.requests.filter((q) => q.method === 'GET' && q.path.includes('/blobs/'));
    assert.deepEqual(blobGets, [], 'no blob was downloaded');
    // With --platform it works, and the archive holds that one.
    const ok = await cli(['copy', '--platform', 'linux/arm64', `${proxy.host}/x/multi:1`, `docker-archive:${out}/d.tar`]);
    assert.equal(ok.code, 0, ok.stderr);
    assert.deepEqual(readdirSync(out), ['d.tar']);
  });
});

/** A proxy that passes everything to the registry except GETs of one blob, which it holds open. */
async function startStallingProxy(upstream: TestRegistry, digest: string): Promise<{ host: string; stalled: Promise<void>; close: () => Promise<void> }> {
  const [upHost, upPort] = [upstream.host.slice(0, upstream.host.lastIndexOf(':')), Number(upstream.host.slice(upstream.host.lastIndexOf(':') + 1))];
  let onStall: () => void = () => undefined;
  const stalled = new Promise<void>((resolve) => (onStall = resolve));
  const agent = new http.Agent({ keepAlive: false });
  const server = http.createServer((req, res) => {
    if (req.method === 'GET' && (req.url ?? '').includes(`/blobs/${digest}`)) {
      onStall();
      return; // never answered
    }
    const up = http.request({ host: upHost, port: upPort, method: req.method, path: req.url, headers: req.headers, agent }, (upRes) => {
      res.writeHead(upRes.statusCode ?? 502, upRes.headers);
      upRes.pipe(res);
    });
    up.on('error', () => res.destroy());
    req.pipe(up);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    host: `127.0.0.1:${(server.address() as AddressInfo).port}`,
    stalled,
    close: async () => {
      server.closeAllConnections();
      agent.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

describe('an interrupted copy to an archive leaves nothing behind', () => {
  for (const kind of ['oci-archive', 'docker-archive']) {
    it(`${kind}: SIGINT while the layer is in flight exits 130, no archive, no staging directory`, async () => {
      const stall = await startStallingProxy(reg, big.layer.desc.digest);
      try {
        const out = freshDir(work, 'sigint');
        let child: ChildProcess | undefined;
        const done = cli(['copy', `${stall.host}/x/big:1`, `${kind}:${out}/i.tar`], { onSpawn: (c) => (child = c) });
        await stall.stalled;
        // The config (small, sent at once) is staged beside the target by now.
        for (let i = 0; i < 200 && readdirSync(out).length === 0; i++) await sleep(25);
        assert.equal(readdirSync(out).length, 1, 'a staging directory while the copy runs');
        child?.kill('SIGINT');
        const r = await done;
        assert.equal(r.code, 130, r.stderr);
        assert.match(r.stderr, /interrupted/);
        assert.deepEqual(readdirSync(out), []);
      } finally {
        await stall.close();
      }
    });
  }
});
