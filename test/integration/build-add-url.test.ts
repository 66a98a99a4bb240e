/**
 * ADD of http(s) URLs, against a real HTTP server started here on 127.0.0.1 (no internet needed):
 * naming, mode and mtime as BuildKit gives them, --checksum (verified, and the cache key: no
 * download on a rebuild), re-download and content keying without it, no auto-extraction, and
 * clear errors for a wrong checksum or a missing file.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdirSync, readFileSync, statSync, writeFileSync, rmSync } from 'node:fs';
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { archway, expectCode, tempHome } from '../support/cli.js';

const home = tempHome('archway-add-url-');
const LAST_MODIFIED = 'Wed, 21 Oct 2015 07:28:00 GMT';

/** What the server serves (mutable per test) and how often each path was asked for. */
const files = new Map<string, { body: Buffer; lastModified?: string }>();
const hits = new Map<string, number>();
let base = '';
let server: http.Server;

before(async () => {
  server = http.createServer((req, res) => {
    const p = (req.url ?? '/').split('?')[0] as string;
    hits.set(p, (hits.get(p) ?? 0) + 1);
    if (p.startsWith('/redirect/')) {
      res.writeHead(302, { location: p.slice('/redirect'.length) });
      res.end();
      return;
    }
    const f = files.get(p);
    if (!f) {
      res.writeHead(404, { 'content-type': 'text/plain' });
      res.end('not here\n');
      return;
    }
    res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': f.body.length, ...(f.lastModified ? { 'last-modified': f.lastModified } : {}) });
    res.end(f.body);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});

after(async () => {
  await new Promise<void>((resolve) => server.close(() => resolve()));
  home.cleanup();
});

function context(name: string, dockerfile: string): string {
  const dir = join(home.dir, name);
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'Dockerfile'), dockerfile);
  return dir;
}

function aw(args: string[]): ReturnType<typeof archway> {
  return archway(args, { env: home.env });
}

function sha256(b: Buffer | string): string {
  return createHash('sha256').update(b).digest('hex');
}

function lines(out: string, marker: string): string[] {
  return out.split('\n').filter((l) => l.includes(marker));
}

describe('ADD <url>', () => {
  test('names the file like BuildKit, with mode 0600 and the Last-Modified time, for every platform', async () => {
    files.set('/files/app.txt', { body: Buffer.from('hello from the web\n'), lastModified: LAST_MODIFIED });
    files.set('/files/data.bin', { body: Buffer.from('data\n') });
    files.set('/files/config.json', { body: Buffer.from('{"a":1}\n') });
    const ctx = context(
      'naming',
      [
        'FROM scratch',
        `ADD ${base}/files/app.txt /opt/`,
        `ADD ${base}/files/data.bin?version=2 /renamed.bin`,
        `ADD --chmod=644 ${base}/redirect/files/config.json /etc/`,
        '',
      ].join('\n'),
    );
    const out = join(home.dir, 'naming-out');
    const r = expectCode(await aw(['build', '--progress', 'plain', '--platform', 'linux/amd64,linux/arm64', '--output', `type=local,dest=${out}`, ctx]), 0, 'build');
    for (const p of ['linux_amd64', 'linux_arm64']) {
      const app = join(out, p, 'opt', 'app.txt');
      assert.equal(readFileSync(app, 'utf8'), 'hello from the web\n');
      assert.equal(statSync(app).mode & 0o7777, 0o600, 'a URL download has mode 0600, as in BuildKit');
      assert.equal(statSync(app).mtime.getTime(), Date.parse(LAST_MODIFIED), 'the mtime comes from Last-Modified');
      // The query string is not part of the name; a destination without / is the file's name.
      assert.equal(readFileSync(join(out, p, 'renamed.bin'), 'utf8'), 'data\n');
      assert.equal(statSync(join(out, p, 'renamed.bin')).mtime.getTime(), 0, 'no Last-Modified: the epoch, as in BuildKit');
      // Redirects are followed; the name comes from the URL as written; --chmod wins over 0600.
      assert.equal(readFileSync(join(out, p, 'etc', 'config.json'), 'utf8'), '{"a":1}\n');
      assert.equal(statSync(join(out, p, 'etc', 'config.json')).mode & 0o7777, 0o644);
    }
    // Downloaded once for both platforms, and the layer is made once.
    assert.equal(hits.get('/files/app.txt'), 1);
    assert.equal(lines(r.stderr, '] DONE').filter((l) => l.includes('app.txt')).length, 2);
  });

  test('an archive from a URL is not extracted', async () => {
    const tar = gzipSync(Buffer.alloc(1024));
    files.set('/dl/tools.tar.gz', { body: tar });
    const ctx = context('archive', `FROM scratch\nADD ${base}/dl/tools.tar.gz /\n`);
    const out = join(home.dir, 'archive-out');
    expectCode(await aw(['build', '--output', `type=local,dest=${out}`, ctx]), 0, 'build');
    assert.equal(sha256(readFileSync(join(out, 'tools.tar.gz'))), sha256(tar));
  });

  test('--checksum is verified, and is the cache key: a rebuild downloads nothing', async () => {
    const body = Buffer.from('pinned content\n');
    files.set('/pinned.txt', { body });
    const ctx = context('checksum', `FROM scratch\nADD --checksum=sha256:${sha256(body)} ${base}/pinned.txt /pinned.txt\n`);
    const out = join(home.dir, 'checksum-out');
    expectCode(await aw(['build', '--progress', 'plain', '--output', `type=local,dest=${out}`, ctx]), 0, 'first build');
    assert.equal(readFileSync(join(out, 'pinned.txt'), 'utf8'), 'pinned content\n');
    assert.equal(hits.get('/pinned.txt'), 1);
    const again = expectCode(await aw(['build', '--progress', 'plain', '-t', 'pinned:1', ctx]), 0, 'rebuild');
    assert.equal(lines(again.stderr, 'CACHED').length, 1, again.stderr);
    assert.equal(hits.get('/pinned.txt'), 1, 'a rebuild with --checksum must not download again');
  });

  test('a wrong checksum stops the build with an integrity error naming the URL and the line', async () => {
    files.set('/changed.txt', { body: Buffer.from('not what you pinned\n') });
    const wrong = sha256('something else');
    const ctx = context('bad-checksum', `FROM scratch\n\nADD --checksum=sha256:${wrong} ${base}/changed.txt /x\n`);
    const r = expectCode(await aw(['build', ctx]), 5, 'checksum mismatch');
    assert.match(r.stderr, /Dockerfile:3/);
    assert.match(r.stderr, new RegExp(`${base.replace(/[.]/g, '\\.')}/changed\\.txt`));
    assert.match(r.stderr, new RegExp(`expected sha256:${wrong}`));
    assert.match(r.stderr, new RegExp(`sha256:${sha256('not what you pinned\n')}`));
    assert.doesNotMatch(r.stderr, /internal error|at .*\.js/);
  });

  test('without --checksum the file is downloaded on every build and keyed on its content', async () => {
    files.set('/moving.txt', { body: Buffer.from('version 1\n') });
    const ctx = context('moving', `FROM scratch\nADD ${base}/moving.txt /moving.txt\n`);
    expectCode(await aw(['build', '--progress', 'plain', '-t', 'moving:1', ctx]), 0, 'first build');
    const same = expectCode(await aw(['build', '--progress', 'plain', '-t', 'moving:1', ctx]), 0, 'same content');
    assert.equal(hits.get('/moving.txt'), 2, 'the URL is asked again on a rebuild');
    assert.equal(lines(same.stderr, 'CACHED').length, 1, `unchanged content is a cache hit:\n${same.stderr}`);
    files.set('/moving.txt', { body: Buffer.from('version 2\n') });
    const out = join(home.dir, 'moving-out');
    const changed = expectCode(await aw(['build', '--progress', 'plain', '--output', `type=local,dest=${out}`, ctx]), 0, 'changed content');
    assert.equal(lines(changed.stderr, '] DONE').length, 1, `changed content runs the step again:\n${changed.stderr}`);
    assert.equal(readFileSync(join(out, 'moving.txt'), 'utf8'), 'version 2\n');
  });

  test('a URL that is not there is a network error naming it and the line', async () => {
    const ctx = context('missing', `FROM scratch\nADD ${base}/nothing-here.txt /x\n`);
    const r = expectCode(await aw(['build', ctx]), 3, 'missing URL');
    assert.match(r.stderr, /Dockerfile:2/);
    assert.match(r.stderr, /nothing-here\.txt/);
    assert.match(r.stderr, /404/);
  });

  test('several sources need a directory destination', async () => {
    files.set('/a.txt', { body: Buffer.from('a\n') });
    files.set('/b.txt', { body: Buffer.from('b\n') });
    const ctx = context('several', `FROM scratch\nADD ${base}/a.txt ${base}/b.txt /both\n`);
    const r = expectCode(await aw(['build', ctx]), 2, 'several into a file');
    assert.match(r.stderr, /must be a directory/);
    const ok = context('several-ok', `FROM scratch\nADD ${base}/a.txt ${base}/b.txt /both/\n`);
    const out = join(home.dir, 'several-out');
    expectCode(await aw(['build', '--output', `type=local,dest=${out}`, ok]), 0, 'several into a dir');
    assert.equal(readFileSync(join(out, 'both', 'a.txt'), 'utf8') + readFileSync(join(out, 'both', 'b.txt'), 'utf8'), 'a\nb\n');
  });
});
