/**
 * What `prune` must leave alone while another process uses it: that process's temp files and
 * working directories, and the snapshots and blobs it holds a lease on (even when no image names
 * them any more). Once that process is gone (exited, or killed), the next prune frees them.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdir, mkdtemp, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { gzipSync } from 'node:zlib';
import { buildTar } from '../layer/index.js';
import { buildImage, emptyConfig } from '../image/index.js';
import { computeDigest, descriptorFor, MediaType, parsePlatform, type Descriptor } from '../oci/index.js';
import { processStartTicks, Store, tempName } from './index.js';

const storeIndexUrl = new URL('./index.js', import.meta.url).href;

async function tempHome(t: { after: (fn: () => Promise<void>) => void }): Promise<string> {
  const home = await mkdtemp(join(tmpdir(), 'archway-leases-'));
  t.after(() => rm(home, { recursive: true, force: true }));
  return home;
}

/** An untagged image of one layer, with its snapshot unpacked. */
async function untaggedImage(store: Store, text: string): Promise<{ layer: Descriptor; others: Descriptor[]; diffID: string }> {
  const tar = buildTar([{ header: { name: 'f.txt' }, data: text }]);
  const data = gzipSync(tar);
  const layer = descriptorFor(data, MediaType.OciLayerGzip);
  const diffID = computeDigest(tar);
  const built = buildImage(emptyConfig(parsePlatform('linux/amd64')), [{ descriptor: layer, diffID }]);
  await store.push(layer, data);
  await store.push(built.configDescriptor, built.config);
  await store.push(built.manifestDescriptor, built.manifest);
  await store.ensureSnapshot(diffID, async (dir) => writeFile(join(dir, 'f.txt'), text));
  return { layer, others: [built.configDescriptor, built.manifestDescriptor], diffID };
}

/**
 * Another archway process: makes a working directory in the store's tmp (as a build step does),
 * one in tmp/mounts (as a COPY --from does), and leases what LEASE names (as `archway run` does);
 * says "ready", then exits on "exit" or waits to be killed.
 */
const holderScript = `
import { Store, tempName } from ${JSON.stringify(storeIndexUrl)};
import { mkdir, mkdtemp, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
const [home] = process.argv.slice(2);
const store = await Store.open({ home });
const work = await mkdtemp(join(store.tmpDir, tempName('run-')));
await mkdir(join(work, 'upper', 'etc'), { recursive: true });
await writeFile(join(work, 'upper', 'etc', 'note'), 'a step is writing this');
await mkdir(join(store.tmpDir, 'mounts'), { recursive: true });
await mkdtemp(join(store.tmpDir, 'mounts', tempName('merged-')));
if (process.env.LEASE) await store.lease(JSON.parse(process.env.LEASE));
console.log('ready');
process.stdin.setEncoding('utf8');
process.stdin.on('data', (d) => { if (d.includes('exit')) process.exit(0); });
`;

interface Holder {
  child: ChildProcess;
  closed: Promise<void>;
}

async function startHolder(home: string, lease?: { snapshots: string[]; blobs: string[] }): Promise<Holder> {
  const script = join(home, 'holder.mjs');
  await writeFile(script, holderScript);
  const child = spawn(process.execPath, [script, home], { stdio: ['pipe', 'pipe', 'pipe'], env: { ...process.env, LEASE: lease ? JSON.stringify(lease) : '' } });
  let out = '';
  const closed = new Promise<void>((r) => child.on('close', () => r()));
  await new Promise<void>((resolve, reject) => {
    child.stdout?.on('data', (c: Buffer) => {
      out += c.toString();
      if (out.includes('ready')) resolve();
    });
    child.stderr?.on('data', (c: Buffer) => (out += c.toString()));
    child.on('close', (code) => reject(new Error(`holder exited (${code}) before it was ready: ${out}`)));
  });
  return { child, closed };
}

test('prune keeps the working directories of a live writer, removes them once it is killed, and counts their bytes', async (t) => {
  const home = await tempHome(t);
  const store = await Store.open({ home });
  const holder = await startHolder(home);
  t.after(() => holder.child.kill('SIGKILL'));
  const theirs = (await readdir(store.tmpDir)).filter((n) => n !== 'mounts');
  const theirMounts = await readdir(join(store.tmpDir, 'mounts'));
  assert.equal(theirs.length, 1);
  assert.equal(theirMounts.length, 1);
  // Leftovers of no known writer (an older archway's bare `run-XXXXXX`) go at once.
  await mkdir(join(store.tmpDir, 'run-legacy', 'upper'), { recursive: true });

  const during = await store.prune({ gracePeriodMs: 0 });
  assert.equal(during.temp.count, 1, 'only the leftover of no writer is removed');
  assert.ok(during.temp.bytes > 0, 'a tree of empty directories is not 0 bytes');
  assert.deepEqual((await readdir(store.tmpDir)).sort(), [...theirs, 'mounts'].sort());
  assert.deepEqual(await readdir(join(store.tmpDir, 'mounts')), theirMounts);
  await stat(join(store.tmpDir, theirs[0]!, 'upper', 'etc', 'note'));

  const du = await store.diskUsage();
  assert.equal(du.temp.count, 2, 'the working directory and the one in mounts');

  holder.child.kill('SIGKILL');
  await holder.closed;
  const after = await store.prune({ gracePeriodMs: 0 });
  assert.equal(after.temp.count, 2);
  assert.ok(after.temp.bytes >= 'a step is writing this'.length + 4096, `bytes ${after.temp.bytes}`);
  assert.deepEqual(await readdir(store.tmpDir), ['mounts'], 'the shared mounts directory stays');
  assert.deepEqual(await readdir(join(store.tmpDir, 'mounts')), []);
});

test('a temp whose pid now belongs to a later process is a dead writer\'s', async (t) => {
  const home = await tempHome(t);
  const store = await Store.open({ home });
  const sleeper = spawn(process.execPath, ['-e', 'setTimeout(() => {}, 30000)'], { stdio: 'ignore' });
  t.after(() => sleeper.kill('SIGKILL'));
  const pid = sleeper.pid as number;
  const start = processStartTicks(pid);
  if (start === undefined) return t.skip('no /proc/PID/stat here');
  // Same pid, other start time: the writer died and its pid was given to the sleeper.
  await mkdir(join(store.tmpDir, `${pid}.0123456789abcdef.s${Number(start) - 1}.run-aaaaaa`));
  // The sleeper's own.
  await mkdir(join(store.tmpDir, `${pid}.0123456789abcdef.s${start}.run-bbbbbb`));
  // This process's, named as every archway temp is.
  await mkdir(join(store.tmpDir, tempName('copy-')));
  const r = await store.prune({ gracePeriodMs: 0 });
  assert.equal(r.temp.count, 1);
  const left = await readdir(store.tmpDir);
  assert.equal(left.length, 2);
  assert.ok(left.some((n) => n.endsWith('.run-bbbbbb')));
  assert.ok(left.some((n) => n.includes('.copy-')));
});

test('prune keeps the snapshots and layer blobs a live process leased after their image is gone; frees them when it exits', async (t) => {
  const home = await tempHome(t);
  const store = await Store.open({ home });
  const img = await untaggedImage(store, 'a running container reads this');
  const holder = await startHolder(home, { snapshots: [img.diffID], blobs: [img.layer.digest] });
  t.after(() => holder.child.kill('SIGKILL'));

  const during = await store.prune({ gracePeriodMs: 0 });
  assert.equal(during.snapshots.count, 0);
  assert.equal(during.blobs.count, img.others.length, 'the config and manifest go, the leased layer stays');
  await stat(join(store.snapshotPath(img.diffID), 'f.txt'));
  assert.equal(await store.exists(img.layer), true);
  const dry = await store.prune({ gracePeriodMs: 0, dryRun: true });
  assert.equal(dry.snapshots.count, 0, 'a dry run sees the lease too (du)');

  holder.child.stdin?.write('exit\n');
  await holder.closed;
  assert.deepEqual(await readdir(join(home, 'leases')), [], 'the lease file goes when its process exits');
  const after = await store.prune({ gracePeriodMs: 0 });
  assert.equal(after.snapshots.count, 1);
  assert.equal(after.blobs.count, 1);
  await assert.rejects(stat(store.snapshotPath(img.diffID)), /ENOENT/);
  assert.equal(await store.exists(img.layer), false);
});

test('the lease of a killed process keeps nothing, and prune removes its file', async (t) => {
  const home = await tempHome(t);
  const store = await Store.open({ home });
  const img = await untaggedImage(store, 'a crashed run used this');
  const holder = await startHolder(home, { snapshots: [img.diffID], blobs: [img.layer.digest] });
  holder.child.kill('SIGKILL');
  await holder.closed;
  assert.equal((await readdir(join(home, 'leases'))).length, 1);
  const r = await store.prune({ gracePeriodMs: 0 });
  assert.equal(r.snapshots.count, 1);
  assert.equal(r.blobs.count, 3);
  assert.deepEqual(await readdir(join(home, 'leases')), []);
});

test('a lease in this process holds until released; leases of the same content count', async (t) => {
  const home = await tempHome(t);
  const store = await Store.open({ home });
  const img = await untaggedImage(store, 'held twice');
  const a = await store.lease({ snapshots: [img.diffID], blobs: [img.layer.digest] });
  const b = await store.lease({ snapshots: [img.diffID] });
  assert.equal((await store.prune({ gracePeriodMs: 0 })).snapshots.count, 0);
  await a.release();
  await a.release(); // twice is once
  assert.equal((await store.prune({ gracePeriodMs: 0 })).snapshots.count, 0, 'b still holds the snapshot');
  assert.equal(await store.exists(img.layer), false, 'nothing holds the blob since a was released');
  await b.release();
  assert.deepEqual(await readdir(join(home, 'leases')), []);
  assert.equal((await store.prune({ gracePeriodMs: 0 })).snapshots.count, 1);
});

test('a lease waits for a running prune instead of racing it', async (t) => {
  const home = await tempHome(t);
  const store = await Store.open({ home });
  const img = await untaggedImage(store, 'looked up while a prune runs');
  // The prune holds the index lock; a lease taken meanwhile is written after it, so the caller
  // then finds the snapshot gone (and unpacks it again) rather than losing it under its feet.
  let leased = false;
  const pruning = store.layout.withIndexLock(async () => {
    const p = store.lease({ snapshots: [img.diffID] }).then((l) => {
      leased = true;
      return l;
    });
    await new Promise((r) => setTimeout(r, 100));
    assert.equal(leased, false, 'the lease waits for the lock');
    return { p };
  });
  const lease = await (await pruning).p;
  assert.equal(leased, true);
  assert.equal((await store.prune({ gracePeriodMs: 0 })).snapshots.count, 0);
  await lease.release();
});
