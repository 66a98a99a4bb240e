/**
 * Crafted hostile layers. Each is built inside its test, applied into <tmp>/target next to a
 * sentinel directory <tmp>/sentinel. A refused layer must fail UNSAFE naming the entry; a layer
 * whose links are resolved inside the root as a chroot would (absolute targets, `..` above the
 * root) must write only at the resolved place inside the target. Either way the sentinel (and
 * /etc, /tmp) must not change and nothing may appear next to the target.
 */
import { after, test } from 'node:test';
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

const boxes: string[] = [];
after(() => Promise.all(boxes.map((d) => fsp.rm(d, { recursive: true, force: true }))));

async function box(): Promise<Box> {
  const dir = await fsp.mkdtemp(join(tmpdir(), 'archway-hostile-'));
  boxes.push(dir);
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

/** Nothing appeared next to the target: <tmp> still holds only sentinel/ and target/. */
async function nothingBeside(b: Box): Promise<void> {
  assert.deepEqual((await fsp.readdir(b.dir)).sort(), ['sentinel', 'target']);
}

/** Applies the layers in order, all must succeed; the sentinel must not change. */
async function expectConfined(layers: Buffer[], b: Box, opts: ApplyOptions = {}): Promise<void> {
  const before = await snapshot(b.sentinel);
  for (const l of layers) await apply(l, b.target, opts);
  assert.deepEqual(await snapshot(b.sentinel), before, 'sentinel changed');
  await nothingBeside(b);
}

/** <target> + an absolute host path, which is where a chroot puts it. */
const inRoot = (b: Box, hostPath: string): string => join(b.target, hostPath);

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

test('hostile: symlink parent with a relative target climbing above the root stays inside', async () => {
  const b = await box();
  await expectConfined([tar([{ header: { name: 'esc', type: 'symlink', linkname: '../sentinel' } }, { header: { name: 'esc/pwn' }, data: 'x' }])], b);
  // `..` at the root is the root: ../sentinel is <target>/sentinel.
  assert.equal(await fsp.readFile(join(b.target, 'sentinel/pwn'), 'utf8'), 'x');
  assert.ok(!existsSync(join(b.sentinel, 'pwn')));
  assert.equal(await fsp.readlink(join(b.target, 'esc')), '../sentinel');
});

test('hostile: symlink to / then a write through it lands in the root', async () => {
  const b = await box();
  const n = uniq();
  await expectConfined([tar([{ header: { name: 'rootlink', type: 'symlink', linkname: '/' } }, { header: { name: `rootlink/tmp/${n}` }, data: 'x' }])], b);
  assert.ok(!existsSync(`/tmp/${n}`));
  assert.equal(await fsp.readFile(join(b.target, 'tmp', n), 'utf8'), 'x');
});

test('hostile: absolute symlink to the sentinel then a write through it', async () => {
  const b = await box();
  await expectConfined([tar([{ header: { name: 'l', type: 'symlink', linkname: b.sentinel } }, { header: { name: 'l/keep' }, data: 'pwned' }])], b);
  assert.equal(await fsp.readFile(join(inRoot(b, b.sentinel), 'keep'), 'utf8'), 'pwned');
  assert.equal(await fsp.readFile(join(b.sentinel, 'keep'), 'utf8'), 'original');
});

test('hostile: second layer writes through a link planted by the first', async () => {
  const b = await box();
  const layer1 = tar([{ header: { name: 'usr', type: 'dir' } }, { header: { name: 'usr/lib', type: 'symlink', linkname: b.sentinel } }]);
  const layer2 = tar([{ header: { name: 'usr/lib/keep' }, data: 'pwned' }]);
  await expectConfined([layer1, layer2], b);
  assert.equal(await fsp.readFile(join(inRoot(b, b.sentinel), 'keep'), 'utf8'), 'pwned');
});

test('hostile: a link to ../../.. means the root itself', async () => {
  const b = await box();
  await expectConfined(
    [
      tar([
        { header: { name: 'a/b', type: 'dir' } },
        { header: { name: 'a/b/up', type: 'symlink', linkname: '../../../../../..' } },
        { header: { name: 'a/b/up/sentinel/keep' }, data: 'pwned' },
        { header: { name: 'a/b/up/a/b/x' }, data: 'x' },
      ]),
    ],
    b,
  );
  assert.equal(await fsp.readFile(join(b.target, 'sentinel/keep'), 'utf8'), 'pwned');
  assert.equal(await fsp.readFile(join(b.target, 'a/b/x'), 'utf8'), 'x');
});

test('chroot: var/run -> /run puts var/run/foo at <root>/run/foo', async () => {
  const b = await box();
  await expectConfined(
    [
      tar([{ header: { name: 'run', type: 'dir', mode: 0o755 } }, { header: { name: 'var', type: 'dir' } }, { header: { name: 'var/run', type: 'symlink', linkname: '/run' } }]),
      tar([{ header: { name: 'var/run/foo' }, data: 'pid' }, { header: { name: 'var/run/sub/bar' }, data: 'bar' }]),
    ],
    b,
  );
  assert.equal(await fsp.readFile(join(b.target, 'run/foo'), 'utf8'), 'pid');
  assert.equal(await fsp.readFile(join(b.target, 'run/sub/bar'), 'utf8'), 'bar');
  assert.ok((await fsp.lstat(join(b.target, 'var/run'))).isSymbolicLink());
});

test('chroot: a dangling absolute link gets its target made inside the root', async () => {
  const b = await box();
  const n = uniq();
  await expectConfined([tar([{ header: { name: 'l', type: 'symlink', linkname: `/${n}/deep` } }, { header: { name: 'l/f' }, data: 'f' }])], b);
  assert.equal(await fsp.readFile(join(b.target, n, 'deep/f'), 'utf8'), 'f');
  assert.ok(!existsSync(`/${n}`));
});

test('chroot: a chain of relative and absolute links resolves inside the root', async () => {
  const b = await box();
  await expectConfined(
    [
      tar([
        { header: { name: 'usr/lib', type: 'dir' } },
        { header: { name: 'one', type: 'symlink', linkname: 'two/../three' } },
        { header: { name: 'two', type: 'dir' } },
        { header: { name: 'three', type: 'symlink', linkname: '/../../four' } },
        { header: { name: 'four', type: 'symlink', linkname: '../usr/./lib' } },
        { header: { name: 'one/so' }, data: 'elf' },
      ]),
    ],
    b,
  );
  assert.equal(await fsp.readFile(join(b.target, 'usr/lib/so'), 'utf8'), 'elf');
});

test('chroot: a whiteout and a hardlink through an absolute link act inside the root', async () => {
  const b = await box();
  const layer1 = tar([
    { header: { name: 'etc', type: 'dir' } },
    { header: { name: 'etc/passwd' }, data: 'root:x:0:0' },
    { header: { name: 'etc/gone' }, data: 'x' },
    { header: { name: 'alt', type: 'symlink', linkname: '/etc' } },
  ]);
  const layer2 = tar([{ header: { name: 'alt/.wh.gone' } }, { header: { name: 'pw', type: 'hardlink', linkname: 'alt/passwd' } }]);
  await expectConfined([layer1, layer2], b);
  assert.ok(!existsSync(join(b.target, 'etc/gone')));
  const [a, c] = await Promise.all([fsp.stat(join(b.target, 'etc/passwd')), fsp.stat(join(b.target, 'pw'))]);
  assert.equal(a.ino, c.ino);
  assert.ok(existsSync('/etc/passwd'));
});

test('hostile: hardlink to /etc/passwd', async () => {
  const b = await expectUnsafe([tar([{ header: { name: 'pw', type: 'hardlink', linkname: '/etc/passwd' } }])], 'pw');
  assert.ok(!existsSync(join(b.target, 'pw')));
});

test('hostile: hardlink to ../ outside path', async () => {
  await expectUnsafe([tar([{ header: { name: 'h', type: 'hardlink', linkname: '../sentinel/keep' } }])], 'h');
});

test('hostile: hardlink through a planted symlink directory never links the outside file', async () => {
  const b = await box();
  const before = await snapshot(b.sentinel);
  // s -> <abs sentinel> resolves to <target><abs sentinel>, where there is no keep.
  await assert.rejects(
    apply(tar([{ header: { name: 's', type: 'symlink', linkname: b.sentinel } }, { header: { name: 'h', type: 'hardlink', linkname: 's/keep' } }]), b.target),
    (e: unknown) => isArchwayError(e, 'FORMAT') && e.message.includes('"h"') && e.message.includes('does not exist'),
  );
  assert.ok(!existsSync(join(b.target, 'h')));
  assert.deepEqual(await snapshot(b.sentinel), before);
  await nothingBeside(b);
  // With a keep at the resolved place inside the root, the link is to that one.
  await expectConfined(
    [tar([{ header: { name: `${b.sentinel.slice(1)}/keep` }, data: 'inside' }, { header: { name: 'h2', type: 'hardlink', linkname: 's/keep' } }])],
    b,
  );
  assert.equal(await fsp.readFile(join(b.target, 'h2'), 'utf8'), 'inside');
  assert.equal((await fsp.stat(join(b.sentinel, 'keep'))).nlink, 1);
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

test('hostile: symlink loops through absolute targets and the root', async () => {
  await expectUnsafe([tar([{ header: { name: 'self', type: 'symlink', linkname: '/self' } }, { header: { name: 'self/x' }, data: 'x' }])], 'self/x');
  await expectUnsafe([tar([{ header: { name: 'd', type: 'dir' } }, { header: { name: 'd/up', type: 'symlink', linkname: '../../d/up' } }, { header: { name: 'd/up/x' }, data: 'x' }])], 'd/up/x');
});

test('hostile: a chain longer than 40 links is refused, 40 are followed', async () => {
  const chain = (n: number): E[] => {
    const es: E[] = [{ header: { name: 'end', type: 'dir' } }];
    for (let i = 0; i < n; i++) es.push({ header: { name: `l${i}`, type: 'symlink', linkname: i === n - 1 ? '/end' : `/l${i + 1}` } });
    return es;
  };
  const b = await expectUnsafe([tar([...chain(41), { header: { name: 'l0/x' }, data: 'x' }])], 'l0/x');
  assert.ok(!existsSync(join(b.target, 'end/x')));
  const ok = await box();
  await expectConfined([tar([...chain(40), { header: { name: 'l0/x' }, data: 'x' }])], ok);
  assert.equal(await fsp.readFile(join(ok.target, 'end/x'), 'utf8'), 'x');
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

test('hostile: whiteout through a symlinked parent deletes only inside the root', async () => {
  const b = await box();
  const layer1 = tar([{ header: { name: 'sentinel/keep' }, data: 'in-root' }, { header: { name: 's', type: 'symlink', linkname: '../sentinel' } }]);
  await expectConfined([layer1, tar([{ header: { name: 's/.wh.keep' } }])], b);
  assert.ok(!existsSync(join(b.target, 'sentinel/keep')));
  // Nothing to delete at the resolved place is no error either.
  await expectConfined([tar([{ header: { name: 's/.wh.keep' } }, { header: { name: 's/sub/.wh.keep2' } }])], b);
});

test('hostile: opaque whiteout in a symlinked dir empties only the in-root directory', async () => {
  const b = await box();
  const layer1 = tar([{ header: { name: 'd', type: 'symlink', linkname: b.sentinel } }, { header: { name: 'd/keep' }, data: 'lower' }]);
  const layer2 = tar([{ header: { name: 'd/.wh..wh..opq' } }]);
  await expectConfined([layer1], b);
  assert.equal(await fsp.readFile(join(inRoot(b, b.sentinel), 'keep'), 'utf8'), 'lower');
  await expectConfined([layer2], b);
  assert.deepEqual(await fsp.readdir(inRoot(b, b.sentinel)), []);
});

test('hostile: a directory component replaced by a symlink in a later layer', async () => {
  const b = await box();
  const layer1 = tar([{ header: { name: 'd', type: 'dir' } }, { header: { name: 'd/x' }, data: 'x' }]);
  const layer2 = tar([{ header: { name: 'd', type: 'symlink', linkname: join(b.sentinel, 'sub') } }, { header: { name: 'd/keep2' }, data: 'pwned' }]);
  await expectConfined([layer1, layer2], b);
  assert.equal(await fsp.readFile(join(inRoot(b, b.sentinel), 'sub/keep2'), 'utf8'), 'pwned');
  assert.equal(await fsp.readFile(join(b.sentinel, 'sub/keep2'), 'utf8'), 'original2');
  assert.ok(!existsSync(join(b.target, 'd/x')));
});

test('hostile: a directory replaced by a symlink in the same layer is not trusted afterwards', async () => {
  const b = await box();
  await expectConfined(
    [
      tar([
        { header: { name: 'd', type: 'dir' } },
        { header: { name: 'd/x' }, data: 'x' },
        { header: { name: 'd', type: 'symlink', linkname: b.sentinel } },
        { header: { name: 'd/keep' }, data: 'pwned' },
        { header: { name: 'e', type: 'dir' } },
        { header: { name: 'e/.wh..wh..opq' } },
        { header: { name: 'e', type: 'symlink', linkname: '../sentinel' } },
        { header: { name: 'e/y' }, data: 'y' },
      ]),
    ],
    b,
  );
  assert.equal(await fsp.readFile(join(inRoot(b, b.sentinel), 'keep'), 'utf8'), 'pwned');
  assert.equal(await fsp.readFile(join(b.target, 'sentinel/y'), 'utf8'), 'y');
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
