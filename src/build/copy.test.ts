import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, existsSync, lstatSync, mkdirSync, mkdtempSync, readFileSync, readlinkSync, rmSync, statSync, symlinkSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { isArchwayError } from '../util/index.js';
import type { SourceTree } from './context.js';
import { digestCopySources, expandCopySource, parseChmod, stageCopy, type CopySourceEntry, type LinkScope } from './copy.js';

const top = mkdtempSync(join(tmpdir(), 'archway-copy-'));
after(() => rmSync(top, { recursive: true, force: true }));
let n = 0;

/** A tree from `{ path: content }`; a value `{ link }` makes a symlink, a path ending in '/' a directory. */
function makeTree(files: Record<string, string | { link: string }>, label = 'build context'): SourceTree {
  const root = join(top, `tree-${++n}`);
  mkdirSync(root);
  for (const [p, v] of Object.entries(files)) {
    const abs = join(root, p);
    mkdirSync(p.endsWith('/') ? abs : dirname(abs), { recursive: true });
    if (p.endsWith('/')) continue;
    if (typeof v === 'string') writeFileSync(abs, v);
    else symlinkSync(v.link, abs);
  }
  return { label, root, ignored: () => false };
}

/** Runs `COPY [--parents] SOURCES DEST` against `tree` into a fresh staging dir and returns it. */
async function copy(tree: SourceTree, sources: string[], dest: string, opts: { parents?: boolean; scope?: LinkScope } = {}): Promise<string> {
  const matches: CopySourceEntry[] = [];
  for (const s of sources) matches.push(...(await expandCopySource(tree, s, { parents: opts.parents ?? false, scope: opts.scope ?? 'context' })));
  const staging = join(top, `staging-${++n}`);
  mkdirSync(staging);
  await stageCopy({ tree, matches, dest, destIsDir: opts.parents ?? false }, staging);
  return staging;
}

const read = (p: string): string => readFileSync(p, 'utf8');

describe('COPY --parents', () => {
  test('keeps each source path under the destination instead of overwriting (./x/a.txt ./y/a.txt /parents/)', async () => {
    const tree = makeTree({ 'x/a.txt': 'fromx\n', 'y/a.txt': 'fromy\n' });
    const out = await copy(tree, ['./x/a.txt', './y/a.txt'], '/parents/', { parents: true });
    assert.equal(read(join(out, 'parents/x/a.txt')), 'fromx\n');
    assert.equal(read(join(out, 'parents/y/a.txt')), 'fromy\n');
    assert.equal(existsSync(join(out, 'parents/a.txt')), false);
    // Without --parents the second one wins, as in BuildKit.
    const flat = await copy(tree, ['./x/a.txt', './y/a.txt'], '/no_parents/');
    assert.equal(read(join(flat, 'no_parents/a.txt')), 'fromy\n');
  });

  test('a wildcard match keeps its directories (x/*.txt keeps x/), and a destination without / is a directory', async () => {
    const tree = makeTree({ 'x/a.txt': 'a', 'x/b.txt': 'b', 'x/c.md': 'c', 'src/m1/config.json': '1', 'src/m2/config.json': '2' });
    const out = await copy(tree, ['x/*.txt', './src/*/config.json'], '/p', { parents: true });
    assert.equal(read(join(out, 'p/x/a.txt')), 'a');
    assert.equal(read(join(out, 'p/x/b.txt')), 'b');
    assert.equal(existsSync(join(out, 'p/x/c.md')), false);
    assert.equal(read(join(out, 'p/src/m1/config.json')), '1');
    assert.equal(read(join(out, 'p/src/m2/config.json')), '2');
  });

  test('a /./ in the source marks where the kept path starts', async () => {
    const tree = makeTree({ 'x/y/a.txt': 'a', 'x/y/b.txt': 'b', 'x/z.txt': 'z' });
    const one = await copy(tree, ['./x/./y/a.txt'], '/p/', { parents: true });
    assert.equal(read(join(one, 'p/y/a.txt')), 'a');
    assert.equal(existsSync(join(one, 'p/x')), false);
    const wild = await copy(tree, ['./x/./y/*.txt'], '/p/', { parents: true });
    assert.equal(read(join(wild, 'p/y/a.txt')), 'a');
    assert.equal(read(join(wild, 'p/y/b.txt')), 'b');
    assert.equal(existsSync(join(wild, 'p/z.txt')), false);
    // A pivot right before the file keeps only the file.
    const file = await copy(tree, ['x/y/./a.txt'], '/p/', { parents: true });
    assert.equal(read(join(file, 'p/a.txt')), 'a');
  });

  test('a directory source is kept with its name and whole tree; ** matches any depth', async () => {
    const tree = makeTree({ 'src/a.txt': 'a', 'src/x/b.txt': 'b', 'src/x/y/c.txt': 'c', 'src/x/y/d.md': 'd' });
    const dir = await copy(tree, ['src/x'], '/p/', { parents: true });
    assert.equal(read(join(dir, 'p/src/x/b.txt')), 'b');
    assert.equal(read(join(dir, 'p/src/x/y/d.md')), 'd');
    const deep = await copy(tree, ['./src/**/*.txt'], '/p/', { parents: true });
    assert.equal(read(join(deep, 'p/src/a.txt')), 'a');
    assert.equal(read(join(deep, 'p/src/x/b.txt')), 'b');
    assert.equal(read(join(deep, 'p/src/x/y/c.txt')), 'c');
    assert.equal(existsSync(join(deep, 'p/src/x/y/d.md')), false);
  });

  test('kept directories take the mode and time of the source directories', async () => {
    const tree = makeTree({ 'x/y/a.txt': 'a' });
    chmodSync(join(tree.root, 'x'), 0o750);
    utimesSync(join(tree.root, 'x'), new Date(1_000_000_000_000), new Date(1_000_000_000_000));
    const out = await copy(tree, ['x/y/a.txt'], '/p/', { parents: true });
    const st = statSync(join(out, 'p/x'));
    assert.equal(st.mode & 0o7777, 0o750);
    assert.equal(st.mtimeMs, 1_000_000_000_000);
  });

  test('with a stage as the source: absolute paths, and the /./ pivot', async () => {
    const stage = makeTree({ 'app/dist/a.js': 'a', 'app/dist/b.js': 'b' }, 'stage build');
    const all = await copy(stage, ['/app/dist/a.js'], '/out/', { parents: true, scope: 'rootfs' });
    assert.equal(read(join(all, 'out/app/dist/a.js')), 'a');
    const pivot = await copy(stage, ['/app/./dist/*.js'], '/out/', { parents: true, scope: 'rootfs' });
    assert.equal(read(join(pivot, 'out/dist/a.js')), 'a');
    assert.equal(read(join(pivot, 'out/dist/b.js')), 'b');
  });

  test('a missing literal source is an error naming it, as without --parents', async () => {
    const tree = makeTree({ 'x/a.txt': 'a' });
    await assert.rejects(copy(tree, ['./x/./nothere.txt'], '/p/', { parents: true }), (e: unknown) => isArchwayError(e, 'NOT_FOUND') && /nothere\.txt/.test(e.message));
  });

  test('matched symlinks stay symlinks (the copy source is the directory above them, as in BuildKit)', async () => {
    const tree = makeTree({ 'x/real.txt': 'real', 'x/link.txt': { link: 'real.txt' } });
    const out = await copy(tree, ['x/link.txt'], '/p/', { parents: true });
    assert.equal(readlinkSync(join(out, 'p/x/link.txt')), 'real.txt');
  });

  test('a link copied by one source is replaced by a later directory, never written through', async () => {
    const victim = join(top, `victim-${++n}`);
    mkdirSync(victim);
    // A stage whose /d is a link to an absolute path; inside the stage that path holds x.txt.
    const stage = makeTree({ [`${victim.slice(1)}/x.txt`]: 'inside the stage', d: { link: victim } }, 'stage s');
    const out = await copy(stage, ['d', 'd/x.txt'], '/p/', { parents: true, scope: 'rootfs' });
    assert.equal(existsSync(join(victim, 'x.txt')), false, 'wrote on the host through a copied link');
    assert.ok(lstatSync(join(out, 'p/d')).isDirectory());
    assert.equal(read(join(out, 'p/d/x.txt')), 'inside the stage');
  });
});

describe('COPY of a symlink follows it', () => {
  test('a link to a file copies the file, under the destination name or the link name', async () => {
    const tree = makeTree({ 'real.txt': 'real\n', 'link.txt': { link: 'real.txt' } });
    const out = await copy(tree, ['link.txt'], '/c.txt');
    assert.ok(lstatSync(join(out, 'c.txt')).isFile());
    assert.equal(read(join(out, 'c.txt')), 'real\n');
    const into = await copy(tree, ['link.txt'], '/d/');
    assert.ok(lstatSync(join(into, 'd/link.txt')).isFile());
    assert.equal(read(join(into, 'd/link.txt')), 'real\n');
    // A wildcard match that is a link is followed too.
    const wild = await copy(tree, ['l*.txt'], '/w/');
    assert.equal(read(join(wild, 'w/link.txt')), 'real\n');
  });

  test('a link to a directory copies its contents; links inside it stay links', async () => {
    const tree = makeTree({ 'realdir/a.txt': 'a', 'realdir/sub/b.txt': 'b', 'realdir/inner': { link: 'a.txt' }, 'realdir/abs': { link: '/etc/passwd' }, linkdir: { link: 'realdir' } });
    const out = await copy(tree, ['linkdir'], '/d/');
    assert.equal(read(join(out, 'd/a.txt')), 'a');
    assert.equal(read(join(out, 'd/sub/b.txt')), 'b');
    assert.equal(readlinkSync(join(out, 'd/inner')), 'a.txt');
    assert.equal(readlinkSync(join(out, 'd/abs')), '/etc/passwd');
  });

  test('a chain of links, and a link through a linked directory, are followed', async () => {
    const tree = makeTree({ 'data/real.txt': 'real', 'l1': { link: 'l2' }, 'l2': { link: 'data/real.txt' }, 'dl': { link: 'data' } });
    const out = await copy(tree, ['l1', 'dl/real.txt'], '/d/');
    assert.equal(read(join(out, 'd/l1')), 'real');
    assert.equal(read(join(out, 'd/real.txt')), 'real');
  });

  test('a link out of the build context is refused, naming the file', async () => {
    const outside = join(top, `outside-${++n}.txt`);
    writeFileSync(outside, 'host secret');
    const tree = makeTree({ 'abs.txt': { link: outside }, 'up.txt': { link: `../${outside.split('/').pop()}` }, 'updir': { link: '..' }, 'ok.txt': 'ok' });
    for (const src of ['abs.txt', 'up.txt', `updir/${outside.split('/').pop()}`]) {
      await assert.rejects(copy(tree, [src], '/x'), (e: unknown) => {
        assert.ok(isArchwayError(e, 'UNSAFE'), String(e));
        assert.match(e.message, new RegExp(src.split('/')[0] as string));
        assert.match(e.message, /outside the build context/);
        return true;
      }, src);
    }
  });

  test('a wildcard skips a directory link that leaves the context; a link it matches is followed or refused', async () => {
    const tree = makeTree({ 'x/a.txt': 'a', ext: { link: '/etc' }, 'l/a.txt': { link: '../x/a.txt' } });
    const out = await copy(tree, ['*/a.txt'], '/d/', { parents: true });
    assert.equal(read(join(out, 'd/x/a.txt')), 'a');
    assert.equal(readlinkSync(join(out, 'd/l/a.txt')), '../x/a.txt');
    assert.equal(existsSync(join(out, 'd/ext')), false);
    await assert.rejects(copy(tree, ['ext/passwd'], '/d/'), (e: unknown) => isArchwayError(e, 'UNSAFE') && /"ext\/passwd": "ext" is a symbolic link to "\/etc"/.test(e.message));
  });

  test('a dangling link and a loop are clear errors', async () => {
    const tree = makeTree({ 'dangling.txt': { link: 'nothere.txt' }, 'loop1': { link: 'loop2' }, 'loop2': { link: 'loop1' } });
    await assert.rejects(copy(tree, ['dangling.txt'], '/x'), (e: unknown) => isArchwayError(e, 'NOT_FOUND') && /dangling\.txt/.test(e.message) && /nothere\.txt/.test(e.message));
    await assert.rejects(copy(tree, ['loop1'], '/x'), (e: unknown) => isArchwayError(e, 'UNSAFE') && /loop1/.test(e.message) && /too many levels/.test(e.message));
  });

  test('in a stage root, absolute targets and .. resolve inside that root, never on the host', async () => {
    const stage = makeTree({ 'etc/passwd': 'root:x:0:0:stage\n', 'bin/busybox': 'bb', 'bin/sh': { link: '/bin/busybox' }, 'x/pw': { link: '../../../../etc/passwd' }, 'y/abs': { link: '/etc/passwd' } }, 'stage s');
    const out = await copy(stage, ['/bin/sh', '/x/pw', '/y/abs'], '/d/', { scope: 'rootfs' });
    assert.equal(read(join(out, 'd/sh')), 'bb');
    assert.equal(read(join(out, 'd/pw')), 'root:x:0:0:stage\n');
    assert.equal(read(join(out, 'd/abs')), 'root:x:0:0:stage\n');
  });

  test('the cache digest follows the link: a new target content gives a new digest; --parents gives another', async () => {
    const tree = makeTree({ 'real.txt': 'one', 'link.txt': { link: 'real.txt' } });
    const digest = async (parents: boolean): Promise<string> => digestCopySources(tree, await expandCopySource(tree, 'link.txt', { parents, scope: 'context' }));
    const before = await digest(false);
    writeFileSync(join(tree.root, 'real.txt'), 'two');
    const changed = await digest(false);
    assert.notEqual(changed, before);
    assert.notEqual(await digest(true), changed);
  });
});

describe('--chmod', () => {
  const mode = (text: string, from: number, isDir = false): string => parseChmod(text)(from, isDir).toString(8);

  test('an octal mode replaces the mode', () => {
    assert.equal(mode('755', 0o600), '755');
    assert.equal(mode('0640', 0o755, true), '640');
  });

  test('a symbolic mode changes the mode each file has, as chmod(1) does', () => {
    assert.equal(mode('u+x', 0o644), '744');
    assert.equal(mode('go-w', 0o666), '644');
    assert.equal(mode('+x', 0o644), '755');
    assert.equal(mode('a=r,u+w', 0o777), '644');
    assert.equal(mode('g=u', 0o640), '660');
    assert.equal(mode('u+s,+t', 0o755), '5755');
  });

  test('X gives execute to directories and to files that have it for someone already', () => {
    assert.equal(mode('a+X', 0o644), '644');
    assert.equal(mode('a+X', 0o744), '755');
    assert.equal(mode('a+X', 0o700, true), '711');
  });

  test('anything else is a usage error that shows the accepted forms', () => {
    for (const bad of ['999', 'u+q', 'x+r', '', 'u+x,']) {
      assert.throws(() => parseChmod(bad), (e: unknown) => isArchwayError(e, 'USAGE') && /octal mode .* symbolic one/.test((e as Error).message), bad);
    }
  });
});
