import { strict as assert } from 'node:assert';
import { execFileSync, spawnSync } from 'node:child_process';
import { promises as fs, readFileSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { isArchwayError } from '../util/index.js';
import { mergeLayers, parseSubIds, rootfsDriverSetting, sweepStaleTemps } from './index.js';

const isRoot = process.getuid?.() === 0;

/** Every entry with what overlayfs would show of it (mtimes included), and file contents. */
function listing(dir: string): string {
  return execFileSync('sh', ['-c', 'cd "$1" && find . -mindepth 1 -printf "%P %y %m %U %G %s %l %T@\\n" | sort && find . -type f -print0 | sort -z | xargs -0 -r md5sum', 'x', dir]).toString();
}

function mountinfoMentions(s: string): string[] {
  return readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .filter((l) => l.includes(s));
}

describe('mergeLayers', { skip: !isRoot && 'needs root (whiteout devices, trusted.* xattrs, overlay as the judge)' }, () => {
  let tmp: string;
  let l1: string;
  let l2: string;
  let l3: string;
  let hostTarget: string;
  before(async () => {
    tmp = await fs.mkdtemp(path.join(os.tmpdir(), 'archway-tree-test-'));
    hostTarget = path.join(tmp, 'host-target');
    await fs.mkdir(hostTarget);
    l1 = path.join(tmp, 'l1');
    l2 = path.join(tmp, 'l2');
    l3 = path.join(tmp, 'l3');
    const sh = (script: string): void => {
      execFileSync('sh', ['-ec', script, 'x', l1, l2, l3, hostTarget]);
    };
    sh(`
      mkdir -p "$1" "$2" "$3"
      cd "$1"
      mkdir -p a b e opq/sub keepdir
      echo one > a/file1; echo two > a/file2; echo x > b/x; echo c > c; echo keep > e/keep
      ln -s "$4" d
      echo h > hard1; ln hard1 hard2
      echo o1 > opq/old1; echo o2 > opq/sub/old2
      echo k > keepdir/k; chmod 0751 keepdir; chown 12:34 keepdir/k
      touch -h -d @1000000 d a/file1 keepdir/k; touch -d @2000000 a b e opq keepdir
      cd "$2"
      mkdir -p a c d opq
      echo two-replaced > a/file1
      mknod -m 0 a/file2 c 0 0
      echo now-a-file > b
      echo y > c/y
      echo planted > d/planted
      echo new > opq/new
      mknod -m 0 e c 0 0
      setfattr -n trusted.overlay.opaque -v y opq 2>/dev/null || python3 -c 'import os,sys; os.setxattr(sys.argv[1], "trusted.overlay.opaque", b"y")' opq
      touch -d @3000000 a c d opq
      cd "$3"
      mkdir -p keepdir
      echo added > keepdir/added
      touch -d @4000000 keepdir
    `);
  });
  after(async () => {
    await fs.rm(tmp, { recursive: true, force: true });
  });

  it('gives the tree an overlay mount of the same snapshots shows', async () => {
    const layers = [l1, l2, l3];
    const merged = path.join(tmp, 'merged');
    await mergeLayers(layers, merged);
    const ovl = path.join(tmp, 'ovl');
    await fs.mkdir(ovl);
    execFileSync('mount', ['-t', 'overlay', 'overlay', '-o', `ro,lowerdir=${[...layers].reverse().join(':')}`, ovl]);
    try {
      assert.equal(listing(merged), listing(ovl));
    } finally {
      execFileSync('umount', [ovl]);
    }
    assert.deepEqual(mountinfoMentions(tmp), []);
    // what the test relies on really is there
    const got = listing(merged);
    assert.match(got, /^a\/file1 f 644 0 0 13 {2}/m);
    assert.doesNotMatch(got, /^a\/file2 /m);
    assert.doesNotMatch(got, /^e[ /]/m);
    assert.match(got, /^b f /m);
    assert.match(got, /^c d /m);
    assert.match(got, /^d d /m);
    assert.match(got, /^opq\/new f /m);
    assert.doesNotMatch(got, /^opq\/(old1|sub)/m);
    assert.match(got, /^keepdir d 755 /m);
    assert.match(got, /^keepdir\/k f 644 12 34 /m);
  });

  it('never writes through a link planted by a lower layer, and copies are independent', async () => {
    const merged = path.join(tmp, 'merged2');
    await mergeLayers([l1, l2], merged);
    assert.deepEqual(await fs.readdir(hostTarget), []);
    assert.equal(await fs.readFile(path.join(merged, 'd', 'planted'), 'utf8'), 'planted\n');
    // hard links of a layer stay linked to each other, not to the snapshot
    const h1 = await fs.stat(path.join(merged, 'hard1'));
    const h2 = await fs.stat(path.join(merged, 'hard2'));
    const src = await fs.stat(path.join(l1, 'hard1'));
    assert.equal(h1.ino, h2.ino);
    assert.notEqual(h1.ino, src.ino);
    await fs.writeFile(path.join(merged, 'a', 'file1'), 'changed\n');
    assert.equal(await fs.readFile(path.join(l2, 'a', 'file1'), 'utf8'), 'two-replaced\n');
    // no whiteout device is left in the result
    assert.equal(execFileSync('find', [merged, '-type', 'c']).toString(), '');
  });

  it("'link' mode makes the same tree out of hard links", async () => {
    const a = path.join(tmp, 'm-copy');
    const b = path.join(tmp, 'm-link');
    await mergeLayers([l1, l2, l3], a);
    await mergeLayers([l1, l2, l3], b, { mode: 'link' });
    assert.equal(listing(b), listing(a));
    assert.equal((await fs.stat(path.join(b, 'a', 'file1'))).ino, (await fs.stat(path.join(l2, 'a', 'file1'))).ino);
  });

  it('a layer on top of an existing tree; an opaque root hides everything below', async () => {
    const dest = path.join(tmp, 'm-opq');
    await mergeLayers([l1], dest);
    const top = path.join(tmp, 'l-opq-root');
    await fs.mkdir(top);
    await fs.writeFile(path.join(top, 'only'), 'x');
    execFileSync('python3', ['-c', 'import os,sys; os.setxattr(sys.argv[1], "trusted.overlay.opaque", b"y")', top]);
    await mergeLayers([top], dest);
    assert.deepEqual(await fs.readdir(dest), ['only']);
  });
});

describe('rootfsDriverSetting', () => {
  let tmp: string;
  before(async () => {
    tmp = await fs.mkdtemp(path.join(os.tmpdir(), 'archway-driver-test-'));
  });
  after(async () => {
    await fs.rm(tmp, { recursive: true, force: true });
  });

  it('reads ARCHWAY_ROOTFS_DRIVER, then [sandbox] rootfs-driver in config.toml, else auto', async () => {
    const none = path.join(tmp, 'none.toml');
    assert.equal(await rootfsDriverSetting({ ARCHWAY_CONFIG: none }), 'auto');
    assert.equal(await rootfsDriverSetting({ ARCHWAY_CONFIG: none, ARCHWAY_ROOTFS_DRIVER: 'copy' }), 'copy');
    const cfg = path.join(tmp, 'config.toml');
    await fs.writeFile(cfg, '[registry."localhost:5000"]\nhttp = true\n\n[sandbox]\nrootfs-driver = "copy"\n');
    assert.equal(await rootfsDriverSetting({ ARCHWAY_CONFIG: cfg }), 'copy');
    assert.equal(await rootfsDriverSetting({ ARCHWAY_CONFIG: cfg, ARCHWAY_ROOTFS_DRIVER: 'overlay' }), 'overlay', 'the variable wins');
    const other = path.join(tmp, 'other.toml');
    await fs.writeFile(other, '[registry."r"]\nhttp = true\n');
    assert.equal(await rootfsDriverSetting({ ARCHWAY_CONFIG: other }), 'auto');
  });

  it('refuses unknown values and settings', async () => {
    await assert.rejects(rootfsDriverSetting({ ARCHWAY_ROOTFS_DRIVER: 'vfs' }), (e: unknown) => isArchwayError(e, 'USAGE') && /auto, overlay or copy/.test(e.message));
    const bad = path.join(tmp, 'bad.toml');
    await fs.writeFile(bad, '[sandbox]\nrootfs-driver = "zfs"\n');
    await assert.rejects(rootfsDriverSetting({ ARCHWAY_CONFIG: bad }), (e: unknown) => isArchwayError(e, 'USAGE') && e.message.includes(bad));
    const unknown = path.join(tmp, 'unknown.toml');
    await fs.writeFile(unknown, '[sandbox]\nrootfs = "copy"\n');
    await assert.rejects(rootfsDriverSetting({ ARCHWAY_CONFIG: unknown }), (e: unknown) => isArchwayError(e, 'PARSE') && /unknown setting "rootfs"/.test(e.message));
  });
});

describe('parseSubIds', () => {
  it("finds the caller's first range by name or by number", () => {
    const text = '# comment\nalice:100000:65536\n1001:165536:65536\nbob:0:10\nbob:200000:1000\n';
    assert.deepEqual(parseSubIds(text, 'alice', 1000), { start: 100000, count: 65536 });
    assert.deepEqual(parseSubIds(text, 'carol', 1001), { start: 165536, count: 65536 });
    assert.deepEqual(parseSubIds(text, 'bob', 1002), { start: 200000, count: 1000 }, 'a range starting at 0 is not usable');
    assert.equal(parseSubIds(text, 'dave', 1003), undefined);
    assert.equal(parseSubIds('', undefined, 5), undefined);
  });
});

describe('sweepStaleTemps', () => {
  it("removes the temp dirs of dead archway processes only", async () => {
    const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'archway-sweep-test-'));
    try {
      const dead = spawnSync('true').pid as number;
      const names = [
        `${dead}.0123456789abcdef.archway-rootfs`,
        `${dead}.0123456789abcdef.archway-sandbox`,
        `1.0123456789abcdef.archway-rootfs`, // alive (init)
        `${process.pid}.0123456789abcdef.archway-sandbox`, // ours
        `${dead}.0123456789abcdef.other`, // not the sandbox's
        'archway-sandbox-x',
      ];
      for (const n of names) await fs.mkdir(path.join(dir, n, 'sub'), { recursive: true });
      await sweepStaleTemps(dir);
      assert.deepEqual((await fs.readdir(dir)).sort(), names.slice(2).sort());
    } finally {
      await fs.rm(dir, { recursive: true, force: true });
    }
  });
});
