/**
 * COPY as BuildKit does it, through the library's build (FROM scratch, so no sandbox or emulator):
 * --parents keeps source paths (with wildcards, a /./ pivot, and from a stage), a symlink source is
 * copied as what it points to (within the context or the stage's root), and a link out of the
 * context is refused with the file's name.
 */
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, lstatSync, mkdirSync, mkdtempSync, readFileSync, readlinkSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildDockerfile } from '../../src/build/index.js';
import { isArchwayError } from '../../src/util/index.js';

const top = mkdtempSync(join(tmpdir(), 'archway-build-copy-'));
after(() => rmSync(top, { recursive: true, force: true }));
const env = { ...process.env, ARCHWAY_HOME: join(top, 'home') };
let n = 0;

/** A context from `{ path: content }`; `{ link }` makes a symlink. */
function context(files: Record<string, string | { link: string }>): string {
  const dir = join(top, `ctx-${++n}`);
  for (const [p, v] of Object.entries(files)) {
    mkdirSync(join(dir, p, '..'), { recursive: true });
    if (typeof v === 'string') writeFileSync(join(dir, p), v);
    else symlinkSync(v.link, join(dir, p));
  }
  return dir;
}

/** Builds the context and returns the image's root filesystem, unpacked. */
async function build(ctx: string, opts: { noCache?: boolean } = {}): Promise<string> {
  const dest = join(top, `out-${++n}`);
  await buildDockerfile({ context: ctx, env, outputs: [{ type: 'local', dest }], ...(opts.noCache ? { noCache: true } : {}) });
  return dest;
}

const read = (p: string): string => readFileSync(p, 'utf8');

describe('COPY --parents in a build', () => {
  test('./x/a.txt ./y/a.txt /parents/ keeps both files', async () => {
    const ctx = context({ Dockerfile: 'FROM scratch\nCOPY --parents ./x/a.txt ./y/a.txt /parents/\n', 'x/a.txt': 'fromx\n', 'y/a.txt': 'fromy\n' });
    const root = await build(ctx);
    assert.equal(read(join(root, 'parents/x/a.txt')), 'fromx\n');
    assert.equal(read(join(root, 'parents/y/a.txt')), 'fromy\n');
    assert.equal(existsSync(join(root, 'parents/a.txt')), false);
  });

  test('wildcards keep their directories and /./ sets where the kept path starts', async () => {
    const ctx = context({ Dockerfile: 'FROM scratch\nCOPY --parents x/*.txt /p/\nCOPY --parents ./x/./y/a.txt /q/\n', 'x/a.txt': 'a', 'x/b.txt': 'b', 'x/y/a.txt': 'ya' });
    const root = await build(ctx);
    assert.equal(read(join(root, 'p/x/a.txt')), 'a');
    assert.equal(read(join(root, 'p/x/b.txt')), 'b');
    assert.equal(read(join(root, 'q/y/a.txt')), 'ya');
    assert.equal(existsSync(join(root, 'q/x')), false);
  });

  test('from a stage, with absolute paths and a /./ pivot', async () => {
    const ctx = context({
      Dockerfile: 'FROM scratch AS build\nCOPY app /app\nFROM scratch\nCOPY --from=build --parents /app/dist/a.js /full/\nCOPY --from=build --parents /app/./dist/*.js /pivot/\n',
      'app/dist/a.js': 'a',
      'app/dist/b.js': 'b',
    });
    const root = await build(ctx);
    assert.equal(read(join(root, 'full/app/dist/a.js')), 'a');
    assert.equal(read(join(root, 'pivot/dist/a.js')), 'a');
    assert.equal(read(join(root, 'pivot/dist/b.js')), 'b');
  });

  test('the same COPY with and without --parents is not taken from the cache of the other', async () => {
    const files = { 'x/a.txt': 'fromx\n', 'y/a.txt': 'fromy\n' };
    const flat = await build(context({ ...files, Dockerfile: 'FROM scratch\nCOPY ./x/a.txt ./y/a.txt /d/\n' }));
    const kept = await build(context({ ...files, Dockerfile: 'FROM scratch\nCOPY --parents ./x/a.txt ./y/a.txt /d/\n' }));
    assert.equal(read(join(flat, 'd/a.txt')), 'fromy\n');
    assert.equal(existsSync(join(flat, 'd/x')), false);
    assert.equal(read(join(kept, 'd/x/a.txt')), 'fromx\n');
    assert.equal(existsSync(join(kept, 'd/a.txt')), false);
    // From a stage the step reads the stage's state, the same in both builds: the flag (and the
    // paths) must still tell the two layers apart.
    const stage = 'FROM scratch AS s\nCOPY x /x\nCOPY y /y\nFROM scratch\n';
    const fromFlat = await build(context({ ...files, Dockerfile: `${stage}COPY --from=s /x/a.txt /y/a.txt /d/\n` }));
    const fromKept = await build(context({ ...files, Dockerfile: `${stage}COPY --from=s --parents /x/a.txt /y/a.txt /d/\n` }));
    const fromOther = await build(context({ ...files, Dockerfile: `${stage}COPY --from=s /x/a.txt /d/\n` }));
    assert.equal(read(join(fromFlat, 'd/a.txt')), 'fromy\n');
    assert.equal(read(join(fromKept, 'd/x/a.txt')), 'fromx\n');
    assert.equal(read(join(fromKept, 'd/y/a.txt')), 'fromy\n');
    assert.equal(read(join(fromOther, 'd/a.txt')), 'fromx\n');
  });
});

describe('COPY of a symlink in a build', () => {
  test('a link to a file gives the file; a link to a directory gives its contents, inner links kept', async () => {
    const ctx = context({
      Dockerfile: 'FROM scratch\nCOPY link.txt /c.txt\nCOPY linkdir /d/\n',
      'real.txt': 'real\n',
      'link.txt': { link: 'real.txt' },
      'realdir/a.txt': 'a',
      'realdir/inner': { link: 'a.txt' },
      linkdir: { link: 'realdir' },
    });
    const root = await build(ctx);
    assert.ok(lstatSync(join(root, 'c.txt')).isFile(), '/c.txt is not a regular file');
    assert.equal(read(join(root, 'c.txt')), 'real\n');
    assert.equal(read(join(root, 'd/a.txt')), 'a');
    assert.equal(readlinkSync(join(root, 'd/inner')), 'a.txt');
  });

  test('a change to the file a link points to is not hidden by the cache', async () => {
    const ctx = context({ Dockerfile: 'FROM scratch\nCOPY link.txt /c.txt\n', 'real.txt': 'one', 'link.txt': { link: 'real.txt' } });
    assert.equal(read(join(await build(ctx), 'c.txt')), 'one');
    writeFileSync(join(ctx, 'real.txt'), 'two');
    assert.equal(read(join(await build(ctx), 'c.txt')), 'two');
  });

  test('COPY --from=stage follows a link inside the stage root (absolute target), not on the host', async () => {
    const ctx = context({
      Dockerfile: 'FROM scratch AS s\nCOPY tree /\nFROM scratch\nCOPY --from=s /bin/sh /sh\nCOPY --from=s /etc/pw /pw\n',
      'tree/bin/busybox': 'stage busybox',
      'tree/bin/sh': { link: '/bin/busybox' },
      'tree/etc/passwd': 'stage passwd',
      'tree/etc/pw': { link: '../../../../etc/passwd' },
    });
    const root = await build(ctx);
    assert.equal(read(join(root, 'sh')), 'stage busybox');
    assert.equal(read(join(root, 'pw')), 'stage passwd');
  });

  test('a link out of the context fails the build, naming the file and the Dockerfile line', async () => {
    const secret = join(top, 'host-secret.txt');
    writeFileSync(secret, 'host secret');
    const ctx = context({ Dockerfile: 'FROM scratch\nCOPY ok.txt /ok.txt\nCOPY leak.txt /leak.txt\n', 'ok.txt': 'ok', 'leak.txt': { link: secret } });
    await assert.rejects(build(ctx), (e: unknown) => {
      assert.ok(isArchwayError(e, 'UNSAFE'), String(e));
      assert.match(e.message, /leak\.txt/);
      assert.match(e.message, /outside the build context/);
      assert.match(e.message, /Dockerfile:3/);
      assert.doesNotMatch(e.message, /host secret/);
      return true;
    });
  });
});
