/**
 * One suite for every ContentTarget backend (OciLayout, Store, oci-archive, and the registry when
 * the lead adds it): push, fetch, exists, resolve, tag and integrity checks. A backend joins by
 * calling `targetConformance(name, factory)` from a test file.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { ContentSource, ContentTarget } from '../../src/image/index.js';
import { validateImageTree } from '../../src/image/index.js';
import { isArchwayError } from '../../src/util/index.js';
import { computeDigest, type Descriptor } from '../../src/oci/index.js';
import { tinyImage, tinyIndex } from './fixture.js';

export interface BackendHandle {
  target: ContentTarget;
  /** Flips a byte of a stored blob, when the backend stores blobs where a test can reach them. */
  corrupt?(desc: Descriptor): Promise<void>;
  /** Finishes writing (close) and returns a source that reads what was written back, when it differs from target. */
  reopen?(): Promise<ContentSource>;
  cleanup(): Promise<void>;
}

export type BackendFactory = () => Promise<BackendHandle>;

async function readAll(s: ContentSource, d: Descriptor): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of await s.fetch(d)) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

async function drain(s: ContentSource, d: Descriptor): Promise<void> {
  await pipeline(await s.fetch(d), new Writable({ write: (_c, _e, cb) => cb() }));
}

function code(e: unknown): string {
  return isArchwayError(e) ? e.code : `not an ArchwayError: ${String(e)}`;
}

export function targetConformance(name: string, factory: BackendFactory): void {
  const withBackend = (title: string, fn: (h: BackendHandle) => Promise<void>): void => {
    test(`${name}: ${title}`, async () => {
      const h = await factory();
      try {
        await fn(h);
      } finally {
        await h.cleanup();
      }
    });
  };

  withBackend('push, exists and fetch round-trip (Buffer and stream)', async ({ target }) => {
    const img = tinyImage();
    const [layer, config, manifest] = img.blobs as [typeof img.layer, typeof img.layer, typeof img.layer];
    assert.equal(await target.exists(layer.descriptor), false);
    await target.push(layer.descriptor, Readable.from([layer.data.subarray(0, 100), layer.data.subarray(100)]));
    await target.push(config.descriptor, config.data);
    await target.push(manifest.descriptor, manifest.data);
    for (const b of img.blobs) {
      assert.equal(await target.exists(b.descriptor), true);
      assert.deepEqual(await readAll(target, b.descriptor), b.data);
    }
    // pushing again succeeds and consumes the stream
    const again = Readable.from([layer.data]);
    await target.push(layer.descriptor, again);
    assert.equal(again.readableEnded, true);
  });

  withBackend('bytes that do not match the digest are refused and nothing lands', async ({ target }) => {
    const data = Buffer.from('the real bytes');
    const lie: Descriptor = { mediaType: 'application/octet-stream', digest: computeDigest('other bytes!!!'), size: data.length };
    await assert.rejects(target.push(lie, data), (e) => code(e) === 'INTEGRITY');
    assert.equal(await target.exists(lie), false);
    await assert.rejects(target.push(lie, Readable.from([data])), (e) => code(e) === 'INTEGRITY');
    assert.equal(await target.exists(lie), false);
    const right = { mediaType: 'application/octet-stream', digest: computeDigest(data), size: data.length };
    await assert.rejects(target.push({ ...right, size: data.length - 1 }, data), (e) => code(e) === 'INTEGRITY');
    await assert.rejects(target.push({ ...right, size: data.length + 1 }, data), (e) => code(e) === 'INTEGRITY');
    assert.equal(await target.exists(right), false);
  });

  withBackend('a digest with bad grammar is refused before it becomes a path', async ({ target }) => {
    const bad = { mediaType: 'application/octet-stream', digest: 'sha256:../../../etc/passwd', size: 1 } as unknown as Descriptor;
    await assert.rejects(target.fetch(bad), (e) => code(e) === 'FORMAT');
    await assert.rejects(target.push(bad, Buffer.from('x')), (e) => code(e) === 'FORMAT');
  });

  withBackend('fetch of an absent blob is NOT_FOUND; resolve of an unknown name is NOT_FOUND', async ({ target }) => {
    const d = { mediaType: 'application/octet-stream', digest: computeDigest('absent'), size: 6 };
    await assert.rejects(target.fetch(d), (e) => code(e) === 'NOT_FOUND');
    await assert.rejects(target.resolve('nothing:here'), (e) => code(e) === 'NOT_FOUND');
  });

  withBackend('tag then resolve; a multi-platform index validates end to end', async (h) => {
    const { target } = h;
    const idx = tinyIndex();
    for (const b of idx.blobs) await target.push(b.descriptor, b.data);
    await target.tag(idx.index.descriptor, 'app:v1');
    const got = await target.resolve('app:v1');
    assert.equal(got.digest, idx.index.descriptor.digest);
    assert.equal(got.size, idx.index.descriptor.size);
    // re-tagging moves the name
    const single = idx.images[0]!.built.manifestDescriptor;
    await target.tag(single, 'app:v1');
    assert.equal((await target.resolve('app:v1')).digest, single.digest);
    await target.tag(idx.index.descriptor, 'app:v1');
    const report = await validateImageTree(target, await target.resolve('app:v1'));
    assert.deepEqual(report.platforms.sort(), ['linux/amd64', 'linux/arm64']);
    if (h.reopen) {
      const source = await h.reopen();
      const root = await source.resolve('app:v1');
      assert.equal(root.digest, idx.index.descriptor.digest);
      const r2 = await validateImageTree(source, root);
      assert.deepEqual(r2.platforms.sort(), ['linux/amd64', 'linux/arm64']);
    }
  });

  withBackend('a blob corrupted at rest is detected on read', async (h) => {
    if (!h.corrupt) return;
    const img = tinyImage();
    for (const b of img.blobs) await h.target.push(b.descriptor, b.data);
    await h.corrupt(img.layer.descriptor);
    await assert.rejects(drain(h.target, img.layer.descriptor), (e) => code(e) === 'INTEGRITY');
  });
}
