import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream, promises as fsp } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough, Readable } from 'node:stream';
import { createGunzip, gunzipSync, gzipSync } from 'node:zlib';
import {
  applyLayer,
  buildTar,
  crc32,
  createCompressor,
  ParallelGzip,
  padding,
  rawTarBlock,
  readTar,
  writeLayerFromDiff,
  writeLayerFromDirectory,
  writeLayerFromOverlayUpper,
  END_OF_ARCHIVE,
  type TarHeader,
} from './index.js';

const tmp = (p: string): Promise<string> => fsp.mkdtemp(join(tmpdir(), `archway-layer-${p}-`));
const sh = (cmd: string, args: string[], cwd?: string): string => execFileSync(cmd, args, { encoding: 'utf8', ...(cwd ? { cwd } : {}) });

async function collect(r: Readable): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const c of r) parts.push(c as Buffer);
  return Buffer.concat(parts);
}

/** One line per path: type, mode, owner, size, whole-second mtime (optional), link, content hash. */
async function snapshot(dir: string, opts: { dirMtimes?: boolean; mtimes?: boolean } = {}): Promise<string[]> {
  const out: string[] = [];
  async function walk(rel: string): Promise<void> {
    for (const n of (await fsp.readdir(join(dir, rel))).sort()) {
      const r = rel === '' ? n : `${rel}/${n}`;
      const st = await fsp.lstat(join(dir, r));
      let extra = '';
      if (st.isFile()) extra = createHash('sha256').update(await fsp.readFile(join(dir, r))).digest('hex').slice(0, 16);
      if (st.isSymbolicLink()) extra = `-> ${await fsp.readlink(join(dir, r))}`;
      if (st.isCharacterDevice() || st.isBlockDevice()) extra = `dev ${st.rdev}`;
      const showTime = opts.mtimes !== false && (!st.isDirectory() || opts.dirMtimes !== false) && !st.isSymbolicLink();
      out.push(`${r} ${st.mode.toString(8)} ${st.uid}:${st.gid} ${st.isDirectory() ? '' : st.size} ${showTime ? Math.floor(st.mtimeMs / 1000) : ''} ${st.isFile() ? `n${st.nlink}` : ''} ${extra}`);
      if (st.isDirectory()) await walk(r);
    }
  }
  await walk('');
  return out;
}

// ---------------------------------------------------------------------------------------------
// tar format

test('tar: every entry type round-trips through writer and reader', async () => {
  const xattr = Buffer.from([0x01, 0x00, 0x00, 0x02, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
  const longName = `${'deep/'.repeat(40)}file-with-a-long-name.txt`;
  const entries: Array<{ header: Partial<TarHeader> & { name: string }; data?: string }> = [
    { header: { name: 'dir', type: 'dir', mode: 0o1777, uid: 1, gid: 2, mtime: 1700000000 } },
    { header: { name: 'dir/file', mode: 0o4755, uid: 3000000, gid: 65534, mtime: 1234567890 }, data: 'hello' },
    { header: { name: 'sym', type: 'symlink', linkname: '../../etc/passwd' } },
    { header: { name: 'hard', type: 'hardlink', linkname: 'dir/file' } },
    { header: { name: 'null', type: 'char', devmajor: 1, devminor: 3, mode: 0o666 } },
    { header: { name: 'sda', type: 'block', devmajor: 8, devminor: 1 } },
    { header: { name: 'pipe', type: 'fifo' } },
    { header: { name: longName, xattrs: { 'security.capability': xattr, 'user.note': Buffer.from('hi') } }, data: 'x'.repeat(1000) },
    { header: { name: 'sym-long', type: 'symlink', linkname: `/${'l'.repeat(200)}` } },
    { header: { name: 'frac', mtime: 1.5 }, data: '' },
  ];
  const got: Array<{ h: TarHeader; data: string }> = [];
  for await (const e of readTar(Readable.from([buildTar(entries)]))) {
    got.push({ h: e.header, data: (await collect(e.body)).toString() });
  }
  assert.equal(got.length, entries.length);
  for (const [i, e] of entries.entries()) {
    const g = got[i];
    assert.ok(g);
    for (const [k, v] of Object.entries(e.header)) assert.deepEqual(g.h[k as keyof TarHeader], v, `${e.header.name}.${k}`);
    assert.equal(g.data, e.data ?? '');
  }
});

test('tar: GNU long names and links, bodies left unread are skipped', async () => {
  const name = `${'n'.repeat(150)}/x`;
  const link = `${'t'.repeat(150)}`;
  const dn = Buffer.from(`${name}\0`);
  const dl = Buffer.from(`${link}\0`);
  const raw = Buffer.concat([
    rawTarBlock({ name: '././@LongLink', flag: 'L', size: dn.length }),
    dn,
    Buffer.alloc(padding(dn.length)),
    rawTarBlock({ name: '././@LongLink', flag: 'K', size: dl.length }),
    dl,
    Buffer.alloc(padding(dl.length)),
    rawTarBlock({ name: 'trunc', flag: '2' }),
    rawTarBlock({ name: 'body', flag: '0', size: 3000 }),
    Buffer.alloc(3072, 0x61),
    rawTarBlock({ name: 'after', flag: '0', size: 1 }),
    Buffer.from('z'),
    Buffer.alloc(511),
    END_OF_ARCHIVE,
  ]);
  const seen: string[] = [];
  for await (const e of readTar(Readable.from([raw]))) {
    seen.push(`${e.header.type}:${e.header.name}:${e.header.linkname}`);
    if (e.header.name === 'after') assert.equal((await collect(e.body)).toString(), 'z');
  }
  assert.deepEqual(seen, [`symlink:${name}:${link}`, 'file:body:', 'file:after:']);
});

test('tar: reads what GNU tar writes (pax and gnu formats)', async () => {
  const d = await tmp('gnutar');
  await fsp.mkdir(join(d, 'src', 'a'), { recursive: true });
  await fsp.writeFile(join(d, 'src', 'a', `${'z'.repeat(120)}`), 'long');
  await fsp.symlink('a', join(d, 'src', 'l'));
  for (const format of ['pax', 'gnu']) {
    sh('tar', ['--format', format, '-cf', join(d, `${format}.tar`), '-C', join(d, 'src'), '.']);
    const names: string[] = [];
    for await (const e of readTar(createReadStream(join(d, `${format}.tar`)))) names.push(e.header.name);
    assert.deepEqual(names.sort(), ['.', './a', `./a/${'z'.repeat(120)}`, './l'].sort(), format);
  }
});

// ---------------------------------------------------------------------------------------------
// compression

test('gzip: parallel output is valid, deterministic across worker counts, and decompresses exactly', async () => {
  const input = Buffer.concat([randomBytes(300_000), Buffer.alloc(500_000, 7), randomBytes(123_457)]);
  const run = async (workers: number): Promise<Buffer> => collect(Readable.from([input.subarray(0, 1000), input.subarray(1000)]).pipe(new ParallelGzip({ workers, chunkSize: 64 * 1024, level: 6 })));
  const a = await run(2);
  const b = await run(0);
  const c = await run(2);
  assert.ok(a.equals(b), 'worker count changed the output');
  assert.ok(a.equals(c), 'two runs differ');
  assert.ok(gunzipSync(a).equals(input));
  const d = await tmp('gz');
  await fsp.writeFile(join(d, 'x.gz'), a);
  sh('gzip', ['-t', join(d, 'x.gz')]);
  assert.equal(sh('sh', ['-c', `gzip -dc ${join(d, 'x.gz')} | sha256sum`]).slice(0, 64), createHash('sha256').update(input).digest('hex'));
});

test('gzip: empty input and exact chunk boundaries', async () => {
  for (const len of [0, 1, 65536, 131072]) {
    const input = randomBytes(len);
    const out = await collect(Readable.from(len === 0 ? [] : [input]).pipe(new ParallelGzip({ workers: 2, chunkSize: 65536 })));
    assert.ok(gunzipSync(out).equals(input), `len ${len}`);
  }
});

test('gzip: incompressible segments become stored blocks, anywhere in a chunk and at the very end', async () => {
  const text = Buffer.from('layer image index manifest platform '.repeat(8000));
  const cases = [
    Buffer.concat([randomBytes(200_000), text, randomBytes(70_000)]), // stored, deflated, stored (final)
    Buffer.concat([text, randomBytes(3 * 65535 + 17)]), // the final chunk entirely stored
    randomBytes(65535 * 2), // only stored blocks, exact segments
    Buffer.concat([randomBytes(65535), text.subarray(0, 5000)]), // a short final segment is deflated
  ];
  for (const [i, input] of cases.entries()) {
    for (const chunkSize of [1024 * 1024, 100_000]) {
      const a = await collect(Readable.from([input]).pipe(new ParallelGzip({ workers: 2, chunkSize })));
      const b = await collect(Readable.from([input]).pipe(new ParallelGzip({ workers: 0, chunkSize })));
      assert.ok(a.equals(b), `case ${i}: worker count changed the output`);
      assert.ok(gunzipSync(a).equals(input), `case ${i} chunk ${chunkSize}`);
    }
  }
  // Random bytes cost only the stored blocks' framing, not deflate's.
  const rnd = randomBytes(4 * 1024 * 1024);
  const out = await collect(Readable.from([rnd]).pipe(new ParallelGzip({ workers: 2 })));
  assert.ok(out.length < rnd.length + 1024, `grew by ${out.length - rnd.length}`);
});

test('gzip: a consumer that does not read holds back the input (bounded memory)', async () => {
  let produced = 0;
  const source = new Readable({
    read(): void {
      produced++;
      this.push(produced > 200 ? null : randomBytes(1024 * 1024));
    },
  });
  const gz = new ParallelGzip({ workers: 2 });
  source.pipe(gz); // nobody reads gz
  await new Promise((r) => setTimeout(r, 1500));
  assert.ok(produced < 24, `read ${produced} MiB ahead of a consumer that reads nothing`);
  let total = 0;
  for await (const c of gz) total += (c as Buffer).length;
  assert.ok(produced > 200 && total > 200 * 1024 * 1024);
});

test('crc32 matches zlib gzip trailer', () => {
  const data = randomBytes(10000);
  const gz = gzipSync(data);
  assert.equal(crc32(data), gz.readUInt32LE(gz.length - 8));
  assert.equal(crc32(data.subarray(5000), crc32(data.subarray(0, 5000))), crc32(data));
});

test('zstd: compress and decompress round trip', async () => {
  const input = randomBytes(200_000);
  const z = await collect(Readable.from([input]).pipe(createCompressor('zstd')));
  assert.equal(z.readUInt32BE(0), 0x28b52ffd);
  const d = await tmp('zst');
  await fsp.writeFile(join(d, 'x.zst'), z);
  assert.ok(Buffer.from(execFileSync('zstd', ['-dc', join(d, 'x.zst')])).equals(input));
});

// ---------------------------------------------------------------------------------------------
// writing layers

async function sampleTree(dir: string): Promise<void> {
  await fsp.mkdir(join(dir, 'etc'), { recursive: true });
  await fsp.mkdir(join(dir, 'usr/bin'), { recursive: true });
  await fsp.writeFile(join(dir, 'etc/passwd'), 'root:x:0:0::/root:/bin/sh\n');
  await fsp.writeFile(join(dir, 'usr/bin/tool'), randomBytes(0).toString() + 'x'.repeat(2_500_000));
  await fsp.chmod(join(dir, 'usr/bin/tool'), 0o4755);
  await fsp.link(join(dir, 'usr/bin/tool'), join(dir, 'usr/bin/tool2'));
  await fsp.symlink('/usr/bin/tool', join(dir, 'usr/bin/abs-link'));
  await fsp.symlink('../etc', join(dir, 'usr/etc-link'));
  await fsp.chown(join(dir, 'etc/passwd'), 1000, 1001);
  sh('mkfifo', [join(dir, 'usr/pipe')]);
  await fsp.mkdir(join(dir, 'tmp'), { mode: 0o1777 });
  await fsp.chmod(join(dir, 'tmp'), 0o1777);
}

test('writeLayerFromDirectory: deterministic, from two directories, readable by gzip and GNU tar', async () => {
  const d = await tmp('det');
  const t1 = join(d, 'one');
  await sampleTree(t1);
  await fsp.mkdir(join(d, 'two'));
  sh('cp', ['-a', `${t1}/.`, join(d, 'two')]);
  const opts = { compression: 'gzip' as const, sourceDateEpoch: 1700000000 };
  const a = await writeLayerFromDirectory(t1, join(d, 'a.tgz'), opts);
  const b = await writeLayerFromDirectory(t1, join(d, 'b.tgz'), opts);
  const c = await writeLayerFromDirectory(join(d, 'two'), join(d, 'c.tgz'), opts);
  assert.equal(a.digest, b.digest);
  assert.equal(a.digest, c.digest);
  assert.equal(a.mediaType, 'application/vnd.oci.image.layer.v1.tar+gzip');
  assert.equal(a.size, (await fsp.stat(join(d, 'a.tgz'))).size);
  sh('gzip', ['-t', join(d, 'a.tgz')]);
  const listing = sh('tar', ['-tzvf', join(d, 'a.tgz')]);
  assert.match(listing, /usr\/bin\/tool2 link to usr\/bin\/tool/);
  assert.match(listing, /-rwsr-xr-x 0\/0 +2500000 2023-11-14/);
  assert.match(listing, /drwxrwxrwt/);
  const names = sh('tar', ['-tzf', join(d, 'a.tgz')]).trim().split('\n');
  assert.deepEqual(names, [...names].sort((x, y) => Buffer.compare(Buffer.from(x.replace(/\/$/, '')), Buffer.from(y.replace(/\/$/, '')))));
  const plain = await writeLayerFromDirectory(t1, join(d, 'a.tar'), { ...opts, compression: 'none' });
  assert.equal(plain.diffID, a.diffID);
  assert.equal(plain.digest, plain.diffID);
  // Round trip: apply and compare with the source.
  const out = join(d, 'out');
  await fsp.mkdir(out);
  const r = await applyLayer(createReadStream(join(d, 'a.tgz')), out, { mediaType: a.mediaType });
  assert.equal(r.digest, a.digest);
  assert.equal(r.diffID, a.diffID);
  assert.deepEqual(await snapshot(out, { mtimes: false }), await snapshot(t1, { mtimes: false }));
});

test('writeLayerFromDirectory: prefix and owner override', async () => {
  const d = await tmp('prefix');
  await fsp.mkdir(join(d, 'src'));
  await fsp.writeFile(join(d, 'src/f'), 'x');
  const w = new PassThrough();
  const got = collect(w);
  await writeLayerFromDirectory(join(d, 'src'), w, { compression: 'none', prefix: 'srv/app', owner: { uid: 10, gid: 20 }, sourceDateEpoch: 0 });
  const names: string[] = [];
  for await (const e of readTar(Readable.from([await got]))) names.push(`${e.header.name} ${e.header.uid}:${e.header.gid} ${e.header.mtime}`);
  assert.deepEqual(names, ['srv 10:20 0', 'srv/app 10:20 0', 'srv/app/f 10:20 0']);
});

// ---------------------------------------------------------------------------------------------
// applying several layers, compared with umoci

interface Blob {
  digest: string;
  size: number;
}
async function writeBlob(layout: string, data: Buffer): Promise<Blob> {
  const hex = createHash('sha256').update(data).digest('hex');
  await fsp.mkdir(join(layout, 'blobs', 'sha256'), { recursive: true });
  await fsp.writeFile(join(layout, 'blobs', 'sha256', hex), data);
  return { digest: `sha256:${hex}`, size: data.length };
}

async function ociLayout(layout: string, layers: Buffer[]): Promise<void> {
  await fsp.mkdir(layout, { recursive: true });
  await fsp.writeFile(join(layout, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));
  const descs = [];
  const diffIds = [];
  for (const l of layers) {
    const gz = gzipSync(l);
    descs.push({ mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', ...(await writeBlob(layout, gz)) });
    diffIds.push(`sha256:${createHash('sha256').update(l).digest('hex')}`);
  }
  const config = await writeBlob(layout, Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', config: {}, rootfs: { type: 'layers', diff_ids: diffIds } })));
  const manifest = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: 'application/vnd.oci.image.manifest.v1+json', config: { mediaType: 'application/vnd.oci.image.config.v1+json', ...config }, layers: descs }));
  const m = await writeBlob(layout, manifest);
  await fsp.writeFile(
    join(layout, 'index.json'),
    JSON.stringify({ schemaVersion: 2, manifests: [{ mediaType: 'application/vnd.oci.image.manifest.v1+json', ...m, annotations: { 'org.opencontainers.image.ref.name': 'tag' } }] }),
  );
}

test('applyLayer: whiteouts and opaque dirs across layers match umoci unpack', async () => {
  const d = await tmp('umoci');
  const T = 1600000000;
  const layer1 = buildTar([
    { header: { name: 'etc', type: 'dir', mtime: T } },
    { header: { name: 'etc/passwd', mtime: T, uid: 0 }, data: 'root\n' },
    { header: { name: 'etc/group', mtime: T, gid: 5 }, data: 'g\n' },
    { header: { name: 'usr', type: 'dir', mtime: T } },
    { header: { name: 'usr/lower-a', mtime: T }, data: 'a' },
    { header: { name: 'usr/sub', type: 'dir', mtime: T } },
    { header: { name: 'usr/sub/lower-b', mtime: T }, data: 'b' },
    { header: { name: 'var', type: 'dir', mtime: T, mode: 0o750 } },
    { header: { name: 'var/log', type: 'dir', mtime: T } },
    { header: { name: 'var/log/x', mtime: T }, data: 'x' },
    { header: { name: 'bin', type: 'dir', mtime: T } },
    { header: { name: 'bin/sh', mtime: T, mode: 0o4755, uid: 1000, gid: 1000 }, data: 'ELF' },
    { header: { name: 'bin/sh2', type: 'hardlink', linkname: 'bin/sh', mtime: T } },
    { header: { name: 'bin/ln', type: 'symlink', linkname: '/bin/sh', mtime: T } },
    { header: { name: 'fifo', type: 'fifo', mtime: T } },
    { header: { name: 'tmp', type: 'dir', mode: 0o1777, mtime: T } },
  ]);
  const layer2 = buildTar([
    { header: { name: 'etc', type: 'dir', mtime: T + 1 } },
    { header: { name: 'etc/.wh.passwd', mtime: T + 1 } },
    { header: { name: 'usr', type: 'dir', mtime: T + 1 } },
    { header: { name: 'usr/.wh..wh..opq', mtime: T + 1 } },
    { header: { name: 'usr/new', mtime: T + 1 }, data: 'same layer as the opaque marker' },
    { header: { name: 'usr/sub', type: 'dir', mtime: T + 1 } },
    { header: { name: 'usr/sub/newer', mtime: T + 1 }, data: 'n' },
    { header: { name: '.wh.fifo', mtime: T + 1 } },
  ]);
  const layer3 = buildTar([
    { header: { name: 'etc', type: 'dir', mtime: T + 2 } },
    { header: { name: 'etc/passwd', mtime: T + 2 }, data: 'root again\n' },
    { header: { name: '.wh.var', mtime: T + 2 } },
    { header: { name: 'bin', type: 'dir', mtime: T + 2 } },
    { header: { name: 'bin/.wh.sh', mtime: T + 2 } },
    { header: { name: 'tmp', type: 'dir', mode: 0o1777, mtime: T + 2 } },
    { header: { name: 'tmp/.wh..wh..opq', mtime: T + 2 } },
  ]);
  const layers = [layer1, layer2, layer3];
  const ours = join(d, 'ours');
  await fsp.mkdir(ours);
  for (const l of layers) await applyLayer(Readable.from([l]), ours, {});
  await ociLayout(join(d, 'layout'), layers);
  sh('umoci', ['unpack', '--image', `${join(d, 'layout')}:tag`, join(d, 'bundle')]);
  const theirs = join(d, 'bundle', 'rootfs');
  const mine = await snapshot(ours);
  assert.deepEqual(mine, await snapshot(theirs));
  assert.ok(mine.some((l) => l.startsWith('usr/new ')));
  assert.ok(!mine.some((l) => l.startsWith('usr/lower-a') || l.startsWith('usr/sub/lower-b') || l.startsWith('var') || l.startsWith('fifo')));
});

test('applyLayer: a layer from GNU tar (zstd) round-trips against tar -x', async () => {
  const d = await tmp('gnu');
  await sampleTree(join(d, 'src'));
  sh('sh', ['-c', `tar --numeric-owner --format=pax -C ${join(d, 'src')} -cf - . | zstd -q -c > ${join(d, 'l.tar.zst')}`]);
  await fsp.mkdir(join(d, 'ours'));
  const r = await applyLayer(createReadStream(join(d, 'l.tar.zst')), join(d, 'ours'), { mediaType: 'application/vnd.oci.image.layer.v1.tar+zstd' });
  assert.ok(r.entries > 5);
  assert.deepEqual(await snapshot(join(d, 'ours'), { dirMtimes: false }), await snapshot(join(d, 'src'), { dirMtimes: false }));
});

// ---------------------------------------------------------------------------------------------
// overlay upper and diff

test('writeLayerFromOverlayUpper: overlay whiteouts and opaque dirs become OCI whiteouts', async () => {
  const d = await tmp('upper');
  const upper = join(d, 'upper');
  await fsp.mkdir(join(upper, 'etc'), { recursive: true });
  await fsp.mkdir(join(upper, 'opaque'));
  await fsp.writeFile(join(upper, 'opaque/fresh'), 'f');
  await fsp.writeFile(join(upper, 'etc/added'), 'a');
  sh('mknod', [join(upper, 'etc/gone'), 'c', '0', '0']);
  sh('python3', ['-c', `import os; os.setxattr(${JSON.stringify(join(upper, 'opaque'))}, 'trusted.overlay.opaque', b'y')`]);
  const info = await writeLayerFromOverlayUpper(upper, join(d, 'l.tar'), { compression: 'none' });
  const names: string[] = [];
  for await (const e of readTar(createReadStream(join(d, 'l.tar')))) names.push(`${e.header.type}:${e.header.name}`);
  assert.deepEqual(names, ['dir:etc', 'file:etc/.wh.gone', 'file:etc/added', 'dir:opaque', 'file:opaque/.wh..wh..opq', 'file:opaque/fresh']);
  // Applied onto a lower tree, the whiteouts take effect.
  const lower = join(d, 'lower');
  await fsp.mkdir(join(lower, 'etc'), { recursive: true });
  await fsp.mkdir(join(lower, 'opaque'));
  await fsp.writeFile(join(lower, 'etc/gone'), 'g');
  await fsp.writeFile(join(lower, 'etc/stays'), 's');
  await fsp.writeFile(join(lower, 'opaque/hidden'), 'h');
  const r = await applyLayer(createReadStream(join(d, 'l.tar')), lower, { mediaType: info.mediaType });
  assert.equal(r.diffID, info.diffID);
  assert.deepEqual((await fsp.readdir(join(lower, 'etc'))).sort(), ['added', 'stays']);
  assert.deepEqual(await fsp.readdir(join(lower, 'opaque')), ['fresh']);
});

test('writeLayerFromDiff: applying the diff onto lower reproduces upper', async () => {
  const d = await tmp('diff');
  const lower = join(d, 'lower');
  const upper = join(d, 'upper');
  await sampleTree(lower);
  await fsp.mkdir(join(lower, 'gone-dir/inner'), { recursive: true });
  await fsp.writeFile(join(lower, 'gone-dir/inner/f'), 'f');
  await fsp.mkdir(upper);
  sh('cp', ['-a', `${lower}/.`, upper]);
  await fsp.writeFile(join(upper, 'etc/passwd'), 'changed\n');
  await fsp.rm(join(upper, 'gone-dir'), { recursive: true });
  await fsp.rm(join(upper, 'usr/bin/abs-link'));
  await fsp.writeFile(join(upper, 'usr/bin/new'), 'new');
  await fsp.chmod(join(upper, 'tmp'), 0o755);
  const info = await writeLayerFromDiff(lower, upper, join(d, 'l.tgz'), { compression: 'gzip' });
  const names: string[] = [];
  for await (const e of readTar(createReadStream(join(d, 'l.tgz')).pipe(createGunzip()))) names.push(e.header.name);
  assert.ok(names.includes('.wh.gone-dir'));
  assert.ok(names.includes('usr/bin/.wh.abs-link'));
  assert.ok(names.includes('etc/passwd'));
  assert.ok(!names.includes('usr/etc-link'), 'unchanged entries stay out');
  const target = join(d, 'target');
  await fsp.mkdir(target);
  sh('cp', ['-a', `${lower}/.`, target]);
  await applyLayer(createReadStream(join(d, 'l.tgz')), target, { mediaType: info.mediaType });
  assert.deepEqual(await snapshot(target), await snapshot(upper));
});


test('applyLayer: security.capability and user.* xattrs are set; others are skipped and counted', async () => {
  const d = await tmp('xattr');
  const cap = Buffer.from('0100000200200000000000000000000000000000', 'hex');
  const l = buildTar([
    { header: { name: 'ping', mode: 0o755, xattrs: { 'security.capability': cap, 'user.note': Buffer.from('hi'), 'trusted.secret': Buffer.from('no') } }, data: 'ELF' },
  ]);
  const r = await applyLayer(Readable.from([l]), d, {});
  assert.equal(r.skippedXattrs, 1);
  const got = sh('python3', ['-c', `import os; p=${JSON.stringify(join(d, 'ping'))}; print(os.getxattr(p,'security.capability').hex(), os.getxattr(p,'user.note').decode(), sorted(os.listxattr(p)))`]);
  assert.equal(got.trim(), `${cap.toString('hex')} hi ['security.capability', 'user.note']`);
  // And they are carried into a new layer.
  const out = join(await tmp('xattr-out'), 'l.tar');
  await writeLayerFromDirectory(d, out, { compression: 'none' });
  const xs: string[] = [];
  for await (const e of readTar(createReadStream(out))) xs.push(...Object.keys(e.header.xattrs).map((k) => `${e.header.name}:${k}=${e.header.xattrs[k]?.toString('hex')}`));
  assert.deepEqual(xs, [`ping:security.capability=${cap.toString('hex')}`, `ping:user.note=${Buffer.from('hi').toString('hex')}`]);
});

test('applyLayer: an aborted signal stops the application', async () => {
  const d = await tmp('abort');
  const ac = new AbortController();
  ac.abort();
  await assert.rejects(applyLayer(Readable.from([buildTar([{ header: { name: 'x' }, data: 'x' }])]), d, { signal: ac.signal }), (e: unknown) => e instanceof Error && 'code' in e && e.code === 'INTERRUPTED');
});

test('applyLayer: each entry type replaces whatever a lower layer (or the same layer) had at its path', async () => {
  const d = await tmp('replace');
  const lower = buildTar([
    { header: { name: 'f-over-dir', type: 'dir' } },
    { header: { name: 'f-over-dir/child' }, data: 'c' },
    { header: { name: 'f-over-file' }, data: 'old' },
    { header: { name: 'f-over-link', type: 'symlink', linkname: 'f-over-file' } },
    { header: { name: 'dir-over-file' }, data: 'old' },
    { header: { name: 'dir-over-link', type: 'symlink', linkname: 'f-over-dir' } },
    { header: { name: 'link-over-dir', type: 'dir' } },
    { header: { name: 'link-over-dir/x' }, data: 'x' },
    { header: { name: 'hard-over-file' }, data: 'old' },
    { header: { name: 'fifo-over-file' }, data: 'old' },
    { header: { name: 'twice' }, data: 'first' },
  ]);
  const upper = buildTar([
    { header: { name: 'f-over-dir' }, data: 'new' },
    { header: { name: 'f-over-file' }, data: 'new' },
    { header: { name: 'f-over-link' }, data: 'new' },
    { header: { name: 'dir-over-file', type: 'dir', mode: 0o710 } },
    { header: { name: 'dir-over-link', type: 'dir' } },
    { header: { name: 'link-over-dir', type: 'symlink', linkname: 'f-over-file' } },
    { header: { name: 'hard-over-file', type: 'hardlink', linkname: 'f-over-file' } },
    { header: { name: 'fifo-over-file', type: 'fifo', mode: 0o640 } },
    { header: { name: 'twice' }, data: 'second' },
    { header: { name: 'twice' }, data: 'third' },
  ]);
  for (const l of [lower, upper]) await applyLayer(Readable.from([l]), d, {});
  const kind = async (p: string): Promise<string> => {
    const st = await fsp.lstat(join(d, p));
    if (st.isSymbolicLink()) return `link ${await fsp.readlink(join(d, p))}`;
    if (st.isDirectory()) return `dir ${(st.mode & 0o7777).toString(8)} ${(await fsp.readdir(join(d, p))).join(',')}`;
    if (st.isFIFO()) return `fifo ${(st.mode & 0o7777).toString(8)}`;
    return `file ${await fsp.readFile(join(d, p), 'utf8')} n${st.nlink}`;
  };
  const got = await Promise.all(['f-over-dir', 'f-over-file', 'f-over-link', 'dir-over-file', 'dir-over-link', 'link-over-dir', 'hard-over-file', 'fifo-over-file', 'twice'].map(kind));
  assert.deepEqual(got, ['file new n1', 'file new n2', 'file new n1', 'dir 710 ', 'dir 755 ', 'link f-over-file', 'file new n2', 'fifo 640', 'file third n1']);
});

test('applyLayer: overlay whiteouts become 0/0 character devices and the opaque xattr; nodes get exact modes', { skip: process.getuid?.() !== 0 ? 'needs root' : false }, async () => {
  const d = await tmp('overlay-wh');
  const l = buildTar([
    { header: { name: 'etc', type: 'dir' } },
    { header: { name: 'etc/.wh.passwd' } },
    { header: { name: 'usr', type: 'dir' } },
    { header: { name: 'usr/.wh..wh..opq' } },
    { header: { name: 'usr/kept' }, data: 'k' },
    { header: { name: 'dev/null', type: 'char', devmajor: 1, devminor: 3, mode: 0o666 } },
    { header: { name: 'dev/loop9', type: 'block', devmajor: 7, devminor: 9, mode: 0o660, gid: 6 } },
    { header: { name: 'run/fifo', type: 'fifo', mode: 0o4751 } },
  ]);
  await applyLayer(Readable.from([l]), d, { overlayWhiteouts: true, allowDevices: true });
  const wh = await fsp.lstat(join(d, 'etc/passwd'));
  assert.ok(wh.isCharacterDevice());
  assert.equal(wh.rdev, 0);
  const opq = sh('python3', ['-c', `import os; print(os.getxattr(${JSON.stringify(join(d, 'usr'))}, 'trusted.overlay.opaque').decode())`]);
  assert.equal(opq.trim(), 'y');
  const nul = await fsp.lstat(join(d, 'dev/null'));
  assert.ok(nul.isCharacterDevice());
  assert.equal([nul.rdev, nul.mode & 0o7777].join(' '), `${(1 << 8) | 3} ${0o666}`);
  const loop = await fsp.lstat(join(d, 'dev/loop9'));
  assert.ok(loop.isBlockDevice());
  assert.equal([loop.rdev, loop.mode & 0o7777, loop.gid].join(' '), `${(7 << 8) | 9} ${0o660} 6`);
  const fifo = await fsp.lstat(join(d, 'run/fifo'));
  assert.ok(fifo.isFIFO());
  assert.equal(fifo.mode & 0o7777, 0o4751);
});
