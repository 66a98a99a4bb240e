/**
 * Crafted hostile layers. Each is built inside its test, applied into <tmp>/target next to a
 * sentinel directory <tmp>/sentinel; the test asserts an UNSAFE error naming the entry and that
 * the sentinel (and /etc) did not change.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { existsSync, promises as fsp } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { gzipSync } from 'node:zlib';
import { isArchwayError } from '../../src/util/index.js';
import { applyLayer, buildTar, encodeHeader, padding, paxRecord, rawTarBlock, tarHeader, END_OF_ARCHIVE, type ApplyOptions, type TarHeader } from '../../src/layer/index.js';

type E = { header: Partial<TarHeader> & { name: string }; data?: string };

interface Box {
  dir: string;
  target: string;
  sentinel: string;
}

async function box(): Promise<Box> {
  const dir = await fsp.mkdtemp(join(tmpdir(), 'archway-hostile-'));
  const target = join(dir, 'target');
  const sentinel = join(dir, 'sentinel');
  await fsp.mkdir(target);
  await fsp.mkdir(join(sentinel, 'sub'), { recursive: true });
  await fsp.writeFile(join(sentinel, 'keep'), 'original');
  await fsp.writeFile(join(sentinel, 'sub', 'keep2'), 'original2');
  return { dir, target, sentinel };
}

async function snapshot(dir: string): Promise<string[]> {
  const out: string[] = [];
  async function walk(rel: string): Promise<void> {
    for (const n of (await fsp.readdir(join(dir, rel))).sort()) {
      const r = rel === '' ? n : `${rel}/${n}`;
      const st = await fsp.lstat(join(dir, r));
      const extra = st.isFile() ? (await fsp.readFile(join(dir, r))).toString('hex') : st.isSymbolicLink() ? await fsp.readlink(join(dir, r)) : '';
      out.push(`${r} ${st.mode.toString(8)} ${st.uid}:${st.gid} ${st.mtimeMs} ${extra}`);
      if (st.isDirectory()) await walk(r);
    }
  }
  await walk('');
  return out;
}

const apply = (tar: Buffer, target: string, opts: ApplyOptions = {}): ReturnType<typeof applyLayer> => applyLayer(Readable.from([tar]), target, opts);

/** Applies the layers in order; the last must fail UNSAFE naming `entry`; sentinel must not change. */
async function expectUnsafe(layers: Buffer[], entry: string, opts: ApplyOptions = {}, b?: Box): Promise<Box> {
  const bx = b ?? (await box());
  const before = await snapshot(bx.sentinel);
  for (const [i, tar] of layers.entries()) {
    if (i < layers.length - 1) {
      await apply(tar, bx.target, opts);
      continue;
    }
    await assert.rejects(apply(tar, bx.target, opts), (e: unknown) => {
      assert.ok(isArchwayError(e, 'UNSAFE'), `expected UNSAFE, got ${String(e)}`);
      assert.ok(e.message.includes(`"${entry}"`), `message should name "${entry}": ${e.message}`);
      assert.equal(e.exitCode, 6);
      return true;
    });
  }
  assert.deepEqual(await snapshot(bx.sentinel), before, 'sentinel changed');
  return bx;
}

const tar = (entries: E[]): Buffer => buildTar(entries);
const uniq = (): string => `archway-hostile-${randomBytes(6).toString('hex')}`;

test('hostile: ../../ in an entry name', async () => {
  const b = await expectUnsafe([tar([{ header: { name: '../sentinel/pwn' }, data: 'x' }])], '../sentinel/pwn');
  assert.ok(!existsSync(join(b.sentinel, 'pwn')));
});

test('hostile: ../ hidden in the middle of a name', async () => {
  await expectUnsafe([tar([{ header: { name: 'a/b/../../../sentinel/pwn' }, data: 'x' }])], 'a/b/../../../sentinel/pwn');
});

test('hostile: absolute entry name', async () => {
  const n = `/etc/${uniq()}`;
  await expectUnsafe([tar([{ header: { name: n }, data: 'x' }])], n);
  assert.ok(!existsSync(n));
});

test('hostile: symlink parent with a relative target escaping the root', async () => {
  await expectUnsafe(
    [tar([{ header: { name: 'esc', type: 'symlink', linkname: '../sentinel' } }, { header: { name: 'esc/pwn' }, data: 'x' }])],
    'esc/pwn',
  );
});

test('hostile: symlink to / then a write through it', async () => {
  const n = uniq();
  await expectUnsafe([tar([{ header: { name: 'rootlink', type: 'symlink', linkname: '/' } }, { header: { name: `rootlink/tmp/${n}` }, data: 'x' }])], `rootlink/tmp/${n}`);
  assert.ok(!existsSync(`/tmp/${n}`));
});

test('hostile: absolute symlink to the sentinel then a write through it', async () => {
  const b = await box();
  await expectUnsafe([tar([{ header: { name: 'l', type: 'symlink', linkname: b.sentinel } }, { header: { name: 'l/keep' }, data: 'pwned' }])], 'l/keep', {}, b);
});

test('hostile: second layer writes through a link planted by the first', async () => {
  const b = await box();
  const layer1 = tar([{ header: { name: 'usr', type: 'dir' } }, { header: { name: 'usr/lib', type: 'symlink', linkname: b.sentinel } }]);
  const layer2 = tar([{ header: { name: 'usr/lib/keep' }, data: 'pwned' }]);
  await expectUnsafe([layer1, layer2], 'usr/lib/keep', {}, b);
});

test('hostile: hardlink to /etc/passwd', async () => {
  const b = await expectUnsafe([tar([{ header: { name: 'pw', type: 'hardlink', linkname: '/etc/passwd' } }])], 'pw');
  assert.ok(!existsSync(join(b.target, 'pw')));
});

test('hostile: hardlink to ../ outside path', async () => {
  await expectUnsafe([tar([{ header: { name: 'h', type: 'hardlink', linkname: '../sentinel/keep' } }])], 'h');
});

test('hostile: hardlink through a planted symlink directory', async () => {
  const b = await box();
  await expectUnsafe(
    [tar([{ header: { name: 's', type: 'symlink', linkname: b.sentinel } }, { header: { name: 'h', type: 'hardlink', linkname: 's/keep' } }])],
    'h',
    {},
    b,
  );
});

test('hostile: hardlink to a directory', async () => {
  await expectUnsafe([tar([{ header: { name: 'd', type: 'dir' } }, { header: { name: 'h', type: 'hardlink', linkname: 'd' } }])], 'h');
});

test('hostile: symlink loop', async () => {
  await expectUnsafe(
    [
      tar([
        { header: { name: 'a', type: 'symlink', linkname: 'b' } },
        { header: { name: 'b', type: 'symlink', linkname: 'a' } },
        { header: { name: 'a/x' }, data: 'x' },
      ]),
    ],
    'a/x',
  );
});

test('hostile: char device when devices are not allowed', async () => {
  await expectUnsafe([tar([{ header: { name: 'dev/mem', type: 'char', devmajor: 1, devminor: 1 } }])], 'dev/mem');
});

test('hostile: block device when devices are not allowed', async () => {
  await expectUnsafe([tar([{ header: { name: 'sda', type: 'block', devmajor: 8, devminor: 0 } }])], 'sda');
});

test('hostile: huge size header (bomb limit)', async () => {
  const h = encodeHeader(tarHeader({ name: 'big', size: 10 * 1024 ** 3 }));
  await expectUnsafe([Buffer.concat([h, Buffer.alloc(1024)])], 'big', { limits: { maxBytes: 1024 * 1024 } });
});

test('hostile: gzip bomb stops at the byte limit', async () => {
  const inner = tar([{ header: { name: 'zeros' }, data: '\0'.repeat(8 * 1024 * 1024) }]);
  await expectUnsafe([gzipSync(inner)], 'zeros', { limits: { maxBytes: 1024 * 1024 } });
});

test('hostile: entry count limit', async () => {
  const entries: E[] = [];
  for (let i = 0; i < 20; i++) entries.push({ header: { name: `f${i}` }, data: '' });
  await expectUnsafe([tar(entries)], 'f5', { limits: { maxEntries: 5 } });
});

test('hostile: pax path override with ..', async () => {
  const data = paxRecord('path', Buffer.from('../sentinel/pwn'));
  const raw = Buffer.concat([
    rawTarBlock({ name: 'PaxHeaders/ok', flag: 'x', size: data.length }),
    data,
    Buffer.alloc(padding(data.length)),
    rawTarBlock({ name: 'ok', flag: '0', size: 1 }),
    Buffer.from('x'),
    Buffer.alloc(511),
    END_OF_ARCHIVE,
  ]);
  await expectUnsafe([raw], '../sentinel/pwn');
});

test('hostile: pax linkpath override escaping for a hardlink', async () => {
  const data = paxRecord('linkpath', Buffer.from('../sentinel/keep'));
  const raw = Buffer.concat([
    rawTarBlock({ name: 'PaxHeaders/h', flag: 'x', size: data.length }),
    data,
    Buffer.alloc(padding(data.length)),
    rawTarBlock({ name: 'h', flag: '1', linkname: 'harmless' }),
    END_OF_ARCHIVE,
  ]);
  await expectUnsafe([raw], 'h');
});

test('hostile: GNU long name with ..', async () => {
  const long = `${'a/'.repeat(60)}${'../'.repeat(62)}sentinel/pwn`;
  const data = Buffer.from(`${long}\0`);
  const raw = Buffer.concat([
    rawTarBlock({ name: '././@LongLink', flag: 'L', size: data.length }),
    data,
    Buffer.alloc(padding(data.length)),
    rawTarBlock({ name: 'short', flag: '0', size: 0 }),
    END_OF_ARCHIVE,
  ]);
  await expectUnsafe([raw], long);
});

test('hostile: whiteout naming ..', async () => {
  await expectUnsafe([tar([{ header: { name: 'a', type: 'dir' } }, { header: { name: 'a/.wh...' } }])], 'a/.wh...');
});

test('hostile: whiteout escaping via ../', async () => {
  await expectUnsafe([tar([{ header: { name: '../.wh.sentinel' } }])], '../.wh.sentinel');
});

test('hostile: whiteout through a symlinked parent', async () => {
  await expectUnsafe([tar([{ header: { name: 's', type: 'symlink', linkname: '../sentinel' } }, { header: { name: 's/.wh.keep' } }])], 's/.wh.keep');
});

test('hostile: opaque whiteout in a symlinked dir', async () => {
  const b = await box();
  const layer1 = tar([{ header: { name: 'd', type: 'symlink', linkname: b.sentinel } }]);
  const layer2 = tar([{ header: { name: 'd/.wh..wh..opq' } }]);
  await expectUnsafe([layer1, layer2], 'd/.wh..wh..opq', {}, b);
});

test('hostile: a directory component replaced by a symlink in a later layer', async () => {
  const b = await box();
  const layer1 = tar([{ header: { name: 'd', type: 'dir' } }, { header: { name: 'd/x' }, data: 'x' }]);
  const layer2 = tar([{ header: { name: 'd', type: 'symlink', linkname: join(b.sentinel, 'sub') } }, { header: { name: 'd/keep2' }, data: 'pwned' }]);
  await expectUnsafe([layer1, layer2], 'd/keep2', {}, b);
});

test('hostile: oversized pax header', async () => {
  const raw = Buffer.concat([rawTarBlock({ name: 'PaxHeaders/x', flag: 'x', size: 64 * 1024 * 1024 }), END_OF_ARCHIVE]);
  await expectUnsafe([raw], 'PaxHeaders/x');
});

// Not errors, but confinement must hold.

test('confined: a file over a planted symlink replaces the link, not its target', async () => {
  const b = await box();
  const before = await snapshot(b.sentinel);
  await apply(tar([{ header: { name: 'f', type: 'symlink', linkname: join(b.sentinel, 'keep') } }, { header: { name: 'f' }, data: 'new' }]), b.target);
  assert.equal(await fsp.readFile(join(b.target, 'f'), 'utf8'), 'new');
  assert.ok((await fsp.lstat(join(b.target, 'f'))).isFile());
  assert.deepEqual(await snapshot(b.sentinel), before);
});

test('confined: symlinks with absolute and .. targets are kept verbatim', async () => {
  const b = await box();
  await apply(
    tar([
      { header: { name: 'abs', type: 'symlink', linkname: '/etc/passwd' } },
      { header: { name: 'up', type: 'symlink', linkname: '../../../../x' } },
    ]),
    b.target,
  );
  assert.equal(await fsp.readlink(join(b.target, 'abs')), '/etc/passwd');
  assert.equal(await fsp.readlink(join(b.target, 'up')), '../../../../x');
});

test('confined: in-root relative symlink parents are followed inside the root', async () => {
  const b = await box();
  await apply(
    tar([
      { header: { name: 'usr/lib', type: 'dir' } },
      { header: { name: 'lib', type: 'symlink', linkname: 'usr/lib' } },
      { header: { name: 'lib/libx.so' }, data: 'elf' },
    ]),
    b.target,
  );
  assert.equal(await fsp.readFile(join(b.target, 'usr/lib/libx.so'), 'utf8'), 'elf');
});

test('format: a layer whose content does not match its media type', async () => {
  const b = await box();
  await assert.rejects(apply(tar([{ header: { name: 'x' }, data: 'x' }]), b.target, { mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip' }), (e: unknown) =>
    isArchwayError(e, 'FORMAT'),
  );
});

test('format: a truncated body', async () => {
  const b = await box();
  const full = tar([{ header: { name: 'x' }, data: 'y'.repeat(5000) }]);
  await assert.rejects(apply(full.subarray(0, 2048), b.target), (e: unknown) => isArchwayError(e, 'FORMAT') && e.message.includes('"x"'));
});

test('format: a bad header checksum', async () => {
  const b = await box();
  const t = tar([{ header: { name: 'x' }, data: 'y' }]);
  t[0] = 0x7a;
  await assert.rejects(apply(t, b.target), (e: unknown) => isArchwayError(e, 'FORMAT'));
});
