/**
 * SIGINT in the middle of a push, against a real registry: `archway build --push` and
 * `archway push` are interrupted while a large layer is being uploaded (a slow proxy in front of
 * the registry keeps the upload going long enough, and says when it has started). Each must exit
 * 130, leave no tag and send no manifest after the signal, leave no mount behind, and leave a store
 * that is whole: every blob matches its digest, and the same push then succeeds.
 */
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes, createHash } from 'node:crypto';
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import type { ChildProcess } from 'node:child_process';
import { archway, expectCode, runCommand, tempHome } from '../support/cli.js';
import { startRegistry, type TestRegistry } from '../support/registries.js';

const home = tempHome('archway-push-sigint-');
const registry: TestRegistry = await startRegistry({ kind: 'anonymous' });

interface Seen {
  method: string;
  path: string;
  at: number;
}

/**
 * A proxy in front of the registry that forwards upload bodies at `bytesPerSecond` and calls
 * `onUpload` once the first 256 KiB of a blob upload went through. The Host header is kept, so
 * the registry's Location headers point back at the proxy.
 */
interface SlowProxy {
  host: string;
  requests: Seen[];
  /** Calls `fn` once, when the next blob upload is under way. */
  onUpload: (fn: () => void) => void;
  /** Calls `fn` once, when the next manifest PUT arrives (which is then held for `holdMs`). */
  onManifest: (fn: () => void, holdMs: number) => void;
  setRate: (bytesPerSecond: number) => void;
  close: () => Promise<void>;
}

async function startSlowProxy(upstream: string): Promise<SlowProxy> {
  const [upHost, upPort] = upstream.split(':') as [string, string];
  const requests: Seen[] = [];
  let listener: (() => void) | undefined;
  let manifestListener: { fn: () => void; holdMs: number } | undefined;
  let rate = 2 * 1024 * 1024;
  let uploaded = 0;
  const server = http.createServer((req, res) => {
    requests.push({ method: req.method ?? '', path: req.url ?? '', at: Date.now() });
    const forward = (): http.ClientRequest => {
      const up = http.request({ host: upHost, port: Number(upPort), method: req.method, path: req.url, headers: req.headers }, (ures) => {
        res.writeHead(ures.statusCode ?? 502, ures.headers);
        ures.pipe(res);
      });
      up.on('error', () => res.destroy());
      res.on('close', () => up.destroy());
      return up;
    };
    if (manifestListener && req.method === 'PUT' && /\/manifests\//.test(req.url ?? '')) {
      // Hold the manifest: read it, wait, and forward it only if the client is still there.
      const { fn, holdMs } = manifestListener;
      manifestListener = undefined;
      fn();
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        setTimeout(() => {
          if (res.destroyed || req.socket.destroyed) return;
          forward().end(Buffer.concat(chunks));
        }, holdMs);
      });
      return;
    }
    const up = forward();
    const isUpload = /\/blobs\/uploads\//.test(req.url ?? '') && (req.method === 'PATCH' || req.method === 'PUT');
    req.on('data', (chunk: Buffer) => {
      up.write(chunk);
      if (!isUpload) return;
      uploaded += chunk.length;
      if (uploaded > 256 * 1024 && listener) {
        const l = listener;
        listener = undefined;
        l();
      }
      req.pause();
      setTimeout(() => req.resume(), (chunk.length / rate) * 1000);
    });
    req.on('end', () => up.end());
    req.on('error', () => up.destroy());
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    host: `127.0.0.1:${(server.address() as AddressInfo).port}`,
    requests,
    onUpload: (fn) => {
      uploaded = 0;
      listener = fn;
    },
    onManifest: (fn, holdMs) => {
      manifestListener = { fn, holdMs };
    },
    setRate: (r) => (rate = r),
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

const proxy = await startSlowProxy(registry.host);
after(async () => {
  await proxy.close();
  home.cleanup();
});

function aw(args: string[], onSpawn?: (child: ChildProcess) => void): ReturnType<typeof archway> {
  return archway(args, { env: home.env, ...(onSpawn ? { onSpawn } : {}) });
}

/** Runs archway and sends SIGINT once the proxy sees a blob upload under way; returns the signal's time too. */
async function interruptDuringUpload(args: string[]): Promise<{ code: number | null; stderr: string; signalledAt: number; exitedAfterMs: number }> {
  let signalledAt = 0;
  const r = await aw(args, (child) => {
    proxy.onUpload(() => {
      signalledAt = Date.now();
      child.kill('SIGINT');
    });
  });
  if (process.env.ARCHWAY_TEST_VERBOSE) console.log(r.stderr);
  return { code: r.code, stderr: r.stderr, signalledAt, exitedAfterMs: Date.now() - signalledAt };
}

async function tagsOf(repo: string): Promise<string[]> {
  const res = await fetch(`${registry.url}/v2/${repo}/tags/list`);
  if (res.status === 404) return [];
  const body = (await res.json()) as { tags?: string[] | null };
  return body.tags ?? [];
}

function archwayMounts(): string[] {
  return readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .filter((l) => l.includes(home.dir));
}

/** Every blob in the store's content has the digest its name says: no half-written blob. */
function assertStoreBlobsWhole(): void {
  const dir = join(home.dir, 'home', 'content', 'blobs', 'sha256');
  const names = readdirSync(dir);
  assert.ok(names.length > 0);
  for (const n of names) {
    const got = createHash('sha256').update(readFileSync(join(dir, n))).digest('hex');
    assert.equal(got, n, `blob ${n} in the store does not match its digest`);
  }
}

/**
 * No manifest PUT began after archway had the signal (kill() returns before the child's handler
 * runs: requests begun within 100 ms of it may predate it), and no PUT of the tag at all.
 */
function assertNoManifestAfter(signalledAt: number, repo: string, tag: string): void {
  const puts = proxy.requests.filter((r) => r.method === 'PUT' && r.path.includes(`/v2/${repo}/manifests/`));
  assert.deepEqual(puts.filter((r) => r.at > signalledAt + 100), [], 'a manifest was sent after SIGINT');
  assert.deepEqual(puts.filter((r) => r.path.endsWith(`/manifests/${tag}`)), [], 'the tag was sent');
}

describe('SIGINT in the middle of a push', () => {
  const ctx = join(home.dir, 'big');
  mkdirSync(ctx, { recursive: true });
  // 12 MiB that gzip cannot shrink: at 2 MiB/s the upload takes some seconds.
  writeFileSync(join(ctx, 'big.bin'), randomBytes(12 * 1024 * 1024));
  writeFileSync(join(ctx, 'Dockerfile'), 'FROM scratch\nCOPY big.bin /big.bin\nCMD ["/big.bin"]\n');

  test('archway build --push: exit 130, no tag, no manifest after the signal, no mount, a whole store', async () => {
    const tag = `${proxy.host}/test/big:1`;
    const r = await interruptDuringUpload(['build', '--progress', 'plain', '--platform', 'linux/amd64,linux/arm64', '-t', tag, '--push', ctx]);
    assert.ok(r.signalledAt > 0, `the upload never started:\n${r.stderr}`);
    assert.equal(r.code, 130, r.stderr);
    assert.match(r.stderr, /interrupted/);
    // The upload is cancelled, not finished: at 2 MiB/s the 12 MiB layer would take 6 s.
    assert.ok(r.exitedAfterMs < 3000, `exited ${r.exitedAfterMs} ms after SIGINT`);
    assert.doesNotMatch(r.stderr, /internal error|at .*\.js:\d+/);
    assert.deepEqual(await tagsOf('test/big'), [], 'a tag was published by an interrupted push');
    const inspect = await runCommand('skopeo', ['inspect', '--raw', '--tls-verify=false', `docker://${registry.host}/test/big:1`]);
    assert.notEqual(inspect.code, 0, 'skopeo found the tag of an interrupted push');
    assertNoManifestAfter(r.signalledAt, 'test/big', '1');
    assert.deepEqual(archwayMounts(), [], 'mounts were left behind');
    assertStoreBlobsWhole();

    // The store is consistent: the same build and push now succeed, and skopeo verifies every digest.
    proxy.setRate(1024 * 1024 * 1024);
    expectCode(await aw(['build', '--progress', 'plain', '--platform', 'linux/amd64,linux/arm64', '-t', tag, '--push', ctx]), 0, 'build --push after the interrupt');
    assert.deepEqual(await tagsOf('test/big'), ['1']);
    const dest = join(home.dir, 'copied');
    expectCode(await runCommand('skopeo', ['copy', '--all', '--src-tls-verify=false', `docker://${registry.host}/test/big:1`, `oci:${dest}:big`]), 0, 'skopeo copy --all');
    expectCode(await aw(['images']), 0, 'images');
    proxy.setRate(2 * 1024 * 1024);
  });

  test('SIGINT while the platform manifests are being written: the tag is never written', async () => {
    proxy.setRate(1024 * 1024 * 1024);
    const tag = `${proxy.host}/test/late:1`;
    let signalledAt = 0;
    const r = await aw(['build', '--platform', 'linux/amd64,linux/arm64', '-t', tag, '--push', ctx], (child) => {
      proxy.onManifest(() => {
        signalledAt = Date.now();
        child.kill('SIGINT');
      }, 1500);
    });
    proxy.setRate(2 * 1024 * 1024);
    assert.ok(signalledAt > 0, `no manifest was pushed:\n${r.stderr}`);
    assert.equal(r.code, 130, r.stderr);
    assertNoManifestAfter(signalledAt, 'test/late', '1');
    // Let a held manifest go through, if it was going to: the tag must still not exist.
    await new Promise((resolve) => setTimeout(resolve, 2000));
    assert.deepEqual(await tagsOf('test/late'), [], 'the tag was written after SIGINT');
    assert.deepEqual(archwayMounts(), []);
    assertStoreBlobsWhole();
  });

  test('archway push: exit 130, no tag, then the push succeeds', async () => {
    expectCode(await aw(['build', '--platform', 'linux/arm64', '-t', 'big:local', ctx]), 0, 'build into the store');
    // A fresh repository, so every blob has to be uploaded again (no cross-repository mount source is named).
    const dest = `${proxy.host}/other/big:2`;
    const r = await interruptDuringUpload(['push', 'big:local', dest]);
    assert.ok(r.signalledAt > 0, `the upload never started:\n${r.stderr}`);
    assert.equal(r.code, 130, r.stderr);
    assert.ok(r.exitedAfterMs < 3000, `exited ${r.exitedAfterMs} ms after SIGINT`);
    assert.deepEqual(await tagsOf('other/big'), []);
    assertNoManifestAfter(r.signalledAt, 'other/big', '2');
    assert.deepEqual(archwayMounts(), []);
    assertStoreBlobsWhole();
    proxy.setRate(1024 * 1024 * 1024);
    expectCode(await aw(['push', 'big:local', dest]), 0, 'push after the interrupt');
    assert.deepEqual(await tagsOf('other/big'), ['2']);
    expectCode(await runCommand('skopeo', ['inspect', '--tls-verify=false', `docker://${registry.host}/other/big:2`]), 0, 'skopeo inspect');
  });
});
