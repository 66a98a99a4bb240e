import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtemp, readdir, readFile, rm, stat, writeFile, mkdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { gzipSync } from 'node:zlib';
import { buildTar } from '../layer/index.js';
import { buildImage, buildIndex, emptyConfig, validateImageTree } from '../image/index.js';
import { computeDigest, descriptorFor, MediaType, parsePlatform, type Descriptor } from '../oci/index.js';
import { isArchwayError } from '../util/index.js';
import { OciLayout, Store, storeHome, normalizeImageName } from './index.js';

const storeIndexUrl = new URL('./index.js', import.meta.url).href;

interface Blob {
  descriptor: Descriptor;
  data: Buffer;
}

function image(platform: string, text: string): { blobs: Blob[]; manifest: Descriptor; diffID: string } {
  const tar = buildTar([{ header: { name: 'f.txt' }, data: text }]);
  const data = gzipSync(tar);
  const layer = { descriptor: descriptorFor(data, MediaType.OciLayerGzip), data };
  const diffID = computeDigest(tar);
  const built = buildImage(emptyConfig(parsePlatform(platform)), [{ descriptor: layer.descriptor, diffID }]);
  return {
    blobs: [layer, { descriptor: built.configDescriptor, data: built.config }, { descriptor: built.manifestDescriptor, data: built.manifest }],
    manifest: built.manifestDescriptor,
    diffID,
  };
}

async function pushAll(t: Store | OciLayout, blobs: Blob[]): Promise<void> {
  for (const b of blobs) await t.push(b.descriptor, b.data);
}

async function tempHome(t: { after: (fn: () => Promise<void>) => void }): Promise<string> {
  const home = await mkdtemp(join(tmpdir(), 'archway-store-'));
  t.after(() => rm(home, { recursive: true, force: true }));
  return home;
}

function run(script: string, args: string[]): { done: Promise<{ code: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string }>; pid: number; kill: (s: NodeJS.Signals) => void } {
  const child = spawn(process.execPath, [script, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
  child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
  const done = new Promise<{ code: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string }>((resolve) => {
    child.on('close', (code, signal) => resolve({ code, signal, stdout, stderr }));
  });
  return { done, pid: child.pid as number, kill: (s) => child.kill(s) };
}

test('storeHome: ARCHWAY_HOME, then XDG_DATA_HOME, then ~/.local/share', () => {
  assert.equal(storeHome({ ARCHWAY_HOME: '/a', XDG_DATA_HOME: '/x', HOME: '/h' }), '/a');
  assert.equal(storeHome({ XDG_DATA_HOME: '/x', HOME: '/h' }), '/x/archway');
  assert.equal(storeHome({ HOME: '/h' }), '/h/.local/share/archway');
  assert.equal(normalizeImageName('busybox'), 'docker.io/library/busybox:latest');
  assert.equal(normalizeImageName('localhost:5000/app:v1'), 'localhost:5000/app:v1');
});

test('Store names images by full reference and resolves familiar names; images() and remove()', async (t) => {
  const home = await tempHome(t);
  const store = await Store.open({ home });
  const a = image('linux/amd64', 'a');
  const b = image('linux/arm64', 'b');
  await pushAll(store, [...a.blobs, ...b.blobs]);
  const idx = buildIndex([a.manifest, b.manifest]);
  await store.push(idx.descriptor, idx.raw);
  await store.tag(idx.descriptor, 'app:v1');
  await store.tag(a.manifest, 'busybox');
  const index = JSON.parse(await readFile(join(home, 'content', 'index.json'), 'utf8')) as { manifests: Descriptor[] };
  assert.deepEqual(index.manifests.map((m) => m.annotations?.['org.opencontainers.image.ref.name']).sort(), ['docker.io/library/app:v1', 'docker.io/library/busybox:latest']);
  assert.equal((await store.resolve('docker.io/library/app:v1')).digest, idx.descriptor.digest);
  assert.equal((await store.resolve('busybox:latest')).digest, a.manifest.digest);
  assert.equal((await store.resolve(`app@${a.manifest.digest}`)).digest, a.manifest.digest);
  const images = await store.images();
  assert.equal(images.length, 2);
  const app = images.find((i) => i.name === 'docker.io/library/app:v1');
  assert.ok(app);
  assert.deepEqual(app.platforms, ['linux/amd64', 'linux/arm64']);
  const expected = [...a.blobs, ...b.blobs].reduce((s, x) => s + x.data.length, 0) + idx.raw.length;
  assert.equal(app.size, expected);
  assert.equal(await store.remove('app:v1'), 'docker.io/library/app:v1');
  await assert.rejects(store.remove('app:v1'), (e) => isArchwayError(e, 'NOT_FOUND'));
  await assert.rejects(store.resolve('app:v1'), (e) => isArchwayError(e, 'NOT_FOUND'));
});

test('a blob whose bytes do not match is refused with INTEGRITY and nothing lands', async (t) => {
  const store = await Store.open({ home: await tempHome(t) });
  const data = Buffer.from('payload');
  const d: Descriptor = { mediaType: 'application/octet-stream', digest: computeDigest('not the payload'), size: data.length };
  await assert.rejects(store.push(d, data), (e) => isArchwayError(e, 'INTEGRITY'));
  await assert.rejects(stat(store.layout.blobPath(d.digest)), /ENOENT/);
  assert.deepEqual(await readdir(store.layout.tmpDir), []);
});

test('prune removes unreferenced blobs and snapshots, keeps tagged images and cache-record roots', async (t) => {
  const home = await tempHome(t);
  const store = await Store.open({ home });
  const kept = image('linux/amd64', 'kept');
  const dropped = image('linux/amd64', 'dropped');
  const cached = image('linux/arm64', 'cached');
  await pushAll(store, [...kept.blobs, ...dropped.blobs, ...cached.blobs]);
  await store.tag(kept.manifest, 'kept:1');
  await store.putCacheRecord('step-key', { layer: cached.blobs[0]!.descriptor.digest, diffID: cached.diffID });
  const mk = (text: string) => async (dir: string) => writeFile(join(dir, 'f.txt'), text);
  await store.ensureSnapshot(kept.diffID, mk('kept'));
  await store.ensureSnapshot(dropped.diffID, mk('dropped'));
  await store.ensureSnapshot(cached.diffID, mk('cached'));

  // the default grace period protects fresh blobs (a build that has not tagged yet)
  const gentle = await store.prune();
  assert.equal(gentle.blobs.count, 0);

  const dry = await store.prune({ gracePeriodMs: 0, dryRun: true });
  const result = await store.prune({ gracePeriodMs: 0 });
  assert.deepEqual(dry.blobs, result.blobs);
  // all of dropped's blobs, and cached's config and manifest (the record names only its layer)
  assert.equal(result.blobs.count, dropped.blobs.length + 2);
  assert.equal(result.blobs.bytes, [...dropped.blobs, ...cached.blobs.slice(1)].reduce((s, b) => s + b.data.length, 0));
  assert.equal(result.snapshots.count, 1);
  for (const b of kept.blobs) assert.equal(await store.exists(b.descriptor), true);
  assert.equal(await store.exists(cached.blobs[0]!.descriptor), true);
  assert.equal(await store.exists(dropped.blobs[2]!.descriptor), false);
  await validateImageTree(store, await store.resolve('kept:1'));
  await stat(store.snapshotPath(kept.diffID));
  await stat(store.snapshotPath(cached.diffID));
  await assert.rejects(stat(store.snapshotPath(dropped.diffID)), /ENOENT/);
  assert.equal(await store.getCacheRecord('step-key').then((r) => (r as { diffID: string }).diffID), cached.diffID);

  // removing the tag and the record frees the rest
  await store.remove('kept:1');
  await store.deleteCacheRecord('step-key');
  const after = await store.prune({ gracePeriodMs: 0 });
  assert.equal(after.snapshots.count, 2);
  const du = await store.diskUsage();
  assert.equal(du.blobs.count, 0);
  assert.equal(du.snapshots.count, 0);
});

test('ensureSnapshot runs create once for concurrent callers and renames atomically', async (t) => {
  const store = await Store.open({ home: await tempHome(t) });
  const diffID = computeDigest('layer');
  let calls = 0;
  const create = async (dir: string): Promise<void> => {
    calls++;
    await new Promise((r) => setTimeout(r, 20));
    await mkdir(join(dir, 'etc'));
    await writeFile(join(dir, 'etc', 'x'), 'x');
  };
  const paths = await Promise.all([store.ensureSnapshot(diffID, create), store.ensureSnapshot(diffID, create), store.ensureSnapshot(diffID, create)]);
  assert.equal(calls, 1);
  assert.equal(new Set(paths).size, 1);
  assert.equal(await readFile(join(paths[0]!, 'etc', 'x'), 'utf8'), 'x');
  assert.equal(await store.ensureSnapshot(diffID, create), paths[0]);
  assert.equal(calls, 1);
  await assert.rejects(store.ensureSnapshot(computeDigest('boom'), async () => { throw new Error('boom'); }));
  assert.deepEqual(await readdir(store.tmpDir), []);
});

test('a lock held by a live process times out with LOCKED; a dead holder is broken', async (t) => {
  const home = await tempHome(t);
  const store = await Store.open({ home, lockTimeoutMs: 300 });
  const a = image('linux/amd64', 'lock');
  await pushAll(store, a.blobs);
  const lockPath = join(home, 'content', 'index.json.lock');
  const sleeper = spawn(process.execPath, ['-e', 'setTimeout(() => {}, 20000)'], { stdio: 'ignore' });
  t.after(() => sleeper.kill('SIGKILL'));
  await writeFile(lockPath, `${sleeper.pid}\n`);
  await assert.rejects(store.tag(a.manifest, 'x:1'), (e) => isArchwayError(e, 'LOCKED'));
  const dead = spawn(process.execPath, ['-e', ''], { stdio: 'ignore' });
  await new Promise((r) => dead.on('close', r));
  await writeFile(lockPath, `${dead.pid}\n`);
  await store.tag(a.manifest, 'x:1');
  assert.equal((await store.resolve('x:1')).digest, a.manifest.digest);
  await assert.rejects(stat(lockPath), /ENOENT/);
});

const writerScript = `
import { Store } from ${JSON.stringify(storeIndexUrl)};
import { createHash } from 'node:crypto';
const [home, who, count] = process.argv.slice(2);
const store = await Store.open({ home, lockTimeoutMs: 60000 });
const blobs = JSON.parse(process.env.BLOBS);
for (let round = 0; round < 3; round++) {
  await Promise.all(blobs.map(async (b) => {
    const data = Buffer.alloc(b.size, b.fill);
    await store.push({ mediaType: 'application/octet-stream', digest: b.digest, size: b.size }, data);
  }));
}
const m = JSON.parse(process.env.MANIFEST);
await store.push(m.descriptor, Buffer.from(m.data, 'base64'));
for (let i = 0; i < Number(count); i++) await store.tag(m.descriptor, 'app:' + who + '-' + i);
console.log('ok');
`;

test('two processes writing the same blobs and tagging at once both succeed; index.json keeps every tag', async (t) => {
  const home = await tempHome(t);
  const script = join(home, 'writer.mjs');
  await writeFile(script, writerScript);
  const blobs = [1, 2, 3, 4].map((i) => {
    const size = i * 1024 * 1024 + i;
    const data = Buffer.alloc(size, i);
    return { size, fill: i, digest: computeDigest(data) };
  });
  const img = image('linux/amd64', 'shared');
  const store = await Store.open({ home });
  await pushAll(store, img.blobs.slice(0, 2));
  const m = img.blobs[2]!;
  const env = { ...process.env, BLOBS: JSON.stringify(blobs), MANIFEST: JSON.stringify({ descriptor: m.descriptor, data: m.data.toString('base64') }) };
  const spawnW = (who: string) => {
    const child = spawn(process.execPath, [script, home, who, '15'], { stdio: ['ignore', 'pipe', 'pipe'], env });
    let out = '';
    child.stdout.on('data', (c: Buffer) => (out += c.toString()));
    child.stderr.on('data', (c: Buffer) => (out += c.toString()));
    return new Promise<{ code: number | null; out: string }>((r) => child.on('close', (code) => r({ code, out })));
  };
  const [r1, r2] = await Promise.all([spawnW('a'), spawnW('b')]);
  assert.equal(r1.code, 0, r1.out);
  assert.equal(r2.code, 0, r2.out);
  const index = JSON.parse(await readFile(join(home, 'content', 'index.json'), 'utf8')) as { manifests: Descriptor[] };
  const names = index.manifests.map((d) => d.annotations?.['org.opencontainers.image.ref.name']);
  assert.equal(names.length, 30);
  for (const who of ['a', 'b']) for (let i = 0; i < 15; i++) assert.ok(names.includes(`docker.io/library/app:${who}-${i}`), `${who}-${i}`);
  for (const b of blobs) assert.equal(await store.exists({ mediaType: 'x', digest: b.digest as Descriptor['digest'], size: b.size }), true);
  assert.deepEqual(await readdir(store.layout.tmpDir), []);
  await validateImageTree(store, await store.resolve('app:a-14'));
});

const slowWriterScript = `
import { Store } from ${JSON.stringify(storeIndexUrl)};
import { Readable } from 'node:stream';
const [home, digest, size] = process.argv.slice(2);
const store = await Store.open({ home });
const chunk = Buffer.alloc(1024 * 1024);
for (let i = 0; i < chunk.length; i++) chunk[i] = (i * 31) & 0xff;
async function* gen() {
  for (let i = 0; i < Number(size) / chunk.length; i++) {
    await new Promise((r) => setTimeout(r, 5));
    yield chunk;
  }
}
console.log('start');
await store.push({ mediaType: 'application/octet-stream', digest, size: Number(size) }, Readable.from(gen()));
console.log('finished');
`;

test('a writer killed with SIGKILL mid-blob leaves a readable, consistent store; prune removes its temp file', async (t) => {
  const home = await tempHome(t);
  const store = await Store.open({ home });
  const a = image('linux/amd64', 'before');
  await pushAll(store, a.blobs);
  await store.tag(a.manifest, 'before:1');
  const size = 200 * 1024 * 1024;
  const chunk = Buffer.alloc(1024 * 1024);
  for (let i = 0; i < chunk.length; i++) chunk[i] = (i * 31) & 0xff;
  const h = createHash('sha256');
  for (let i = 0; i < size / chunk.length; i++) h.update(chunk);
  const digest = `sha256:${h.digest('hex')}`;
  const script = join(home, 'slow.mjs');
  await writeFile(script, slowWriterScript);
  const child = run(script, [home, digest, String(size)]);
  // wait until the temp file holds some megabytes, then kill
  const deadline = Date.now() + 30_000;
  let killedAt = 0;
  while (Date.now() < deadline) {
    const names = await readdir(store.layout.tmpDir).catch(() => [] as string[]);
    const blobTmp = names.find((n) => n.endsWith('.blob'));
    if (blobTmp) {
      const st = await stat(join(store.layout.tmpDir, blobTmp)).catch(() => undefined);
      if (st && st.size > 20 * 1024 * 1024) {
        killedAt = st.size;
        child.kill('SIGKILL');
        break;
      }
    }
    await new Promise((r) => setTimeout(r, 10));
  }
  const res = await child.done;
  assert.ok(killedAt > 0, `never saw the temp file grow: ${res.stdout} ${res.stderr}`);
  assert.equal(res.signal, 'SIGKILL');
  assert.ok(!res.stdout.includes('finished'));
  const desc: Descriptor = { mediaType: 'application/octet-stream', digest: digest as Descriptor['digest'], size };
  await assert.rejects(stat(store.layout.blobPath(desc.digest)), /ENOENT/);
  const reopened = await Store.open({ home });
  assert.equal(await reopened.exists(desc), false);
  await validateImageTree(reopened, await reopened.resolve('before:1'));
  assert.equal((await reopened.images()).length, 1);
  const pruned = await reopened.prune();
  assert.equal(pruned.temp.count, 1);
  assert.ok(pruned.temp.bytes >= killedAt);
  assert.equal(pruned.blobs.count, 0);
  assert.deepEqual(await readdir(reopened.layout.tmpDir), []);
});

test('OciLayout: open without create refuses a non-layout; resolve by digest and sole entry', async (t) => {
  const dir = await tempHome(t);
  await assert.rejects(OciLayout.open(join(dir, 'nope')), (e) => isArchwayError(e, 'NOT_FOUND'));
  const layout = await OciLayout.open(join(dir, 'l'), { create: true });
  const a = image('linux/amd64', 'x');
  await pushAll(layout, a.blobs);
  await layout.tag(a.manifest, 'v1');
  assert.equal((await layout.resolve('')).digest, a.manifest.digest);
  assert.equal((await layout.resolve(a.manifest.digest)).mediaType, MediaType.OciManifest);
  assert.deepEqual((await layout.list()).map((e) => e.name), ['v1']);
  assert.equal(await layout.untag('v1'), true);
  assert.equal(await layout.untag('v1'), false);
  const idx = JSON.parse(await readFile(join(dir, 'l', 'index.json'), 'utf8')) as { schemaVersion: number; manifests: unknown[] };
  assert.equal(idx.schemaVersion, 2);
  assert.deepEqual(idx.manifests, []);
});

test('adoptFile moves a written file into the blobs; a wrong size is refused and the file left in place', async (t) => {
  const store = await Store.open({ home: await tempHome(t) });
  const data = Buffer.from('a layer written by this process');
  const desc = descriptorFor(data, MediaType.OciLayerGzip);
  const file = join(store.tmpDir, 'layer.tar.gz');
  await mkdir(store.tmpDir, { recursive: true });
  await writeFile(file, data);
  await store.adoptFile({ ...desc, size: desc.size + 1 }, file).then(
    () => assert.fail('a size mismatch must be refused'),
    (e: unknown) => assert.ok(isArchwayError(e) && e.code === 'INTEGRITY', String(e)),
  );
  assert.equal(await store.exists(desc), false);
  await stat(file);
  await store.adoptFile(desc, file);
  await assert.rejects(stat(file), /ENOENT/);
  const chunks: Buffer[] = [];
  for await (const c of await store.fetch(desc)) chunks.push(c as Buffer);
  assert.deepEqual(Buffer.concat(chunks), data);
  // Adopting the same content again leaves the existing blob and the caller's file alone.
  await writeFile(file, data);
  await store.adoptFile(desc, file);
  await stat(file);
});

test('prune with buildCache drops old cache records and cache mounts first, then what only they kept', async (t) => {
  const store = await Store.open({ home: await tempHome(t) });
  const cached = image('linux/arm64', 'only the cache keeps this');
  await pushAll(store, cached.blobs);
  await store.putCacheRecord('step-key', { layer: cached.blobs[0]!.descriptor.digest });
  await mkdir(join(store.cacheMountsDir, 'abc', 'data'), { recursive: true });
  await writeFile(join(store.cacheMountsDir, 'abc', 'data', 'f'), 'cached download');

  // Within the grace period the cache is kept, as fresh blobs are.
  const gentle = await store.prune({ buildCache: true });
  assert.equal(gentle.buildCache.count, 0);

  const dry = await store.prune({ buildCache: true, gracePeriodMs: 0, dryRun: true });
  assert.equal(dry.buildCache.count, 2);
  assert.equal(dry.blobs.count, cached.blobs.length, 'a dry run counts the blobs the records alone kept');
  assert.notEqual(await store.getCacheRecord('step-key'), undefined, 'a dry run removes nothing');

  const r = await store.prune({ buildCache: true, gracePeriodMs: 0 });
  assert.deepEqual(r.blobs, dry.blobs);
  assert.equal(r.buildCache.count, 2);
  assert.equal(await store.getCacheRecord('step-key'), undefined);
  await assert.rejects(stat(join(store.cacheMountsDir, 'abc')), /ENOENT/);
  assert.equal(await store.exists(cached.blobs[0]!.descriptor), false);
});
