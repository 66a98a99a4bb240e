/**
 * RUN --mount end to end, on a busybox base for two platforms (arm64 under QEMU): cache mounts that
 * persist across builds and platforms and never reach the image, secrets that a RUN can read but
 * that no layer, config or cache key holds, bind mounts (read-only, rw with changes discarded,
 * filtered by .dockerignore, from a stage) and tmpfs.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { archway, buildBusyboxBase, expectCode, tempHome, writeFiles } from '../support/cli.js';

const PLATFORMS = 'linux/amd64,linux/arm64';
const BASE = 'archway-test/busybox:mounts';
const home = tempHome('archway-mounts-');

const write = writeFiles;

function aw(args: string[], env: NodeJS.ProcessEnv = {}): ReturnType<typeof archway> {
  return archway(args, { env: { ...home.env, ...env } });
}

function lines(out: string, marker: string): string[] {
  return out.split('\n').filter((l) => l.includes(marker));
}

/** Every blob of an oci-archive, decompressed when gzip: what anyone pulling the image gets. */
function archiveBlobs(archive: string): Buffer[] {
  const dir = join(home.dir, `unpacked-${Math.random().toString(36).slice(2)}`);
  mkdirSync(dir);
  execFileSync('tar', ['-xf', archive, '-C', dir]);
  const blobs = join(dir, 'blobs', 'sha256');
  return readdirSync(blobs).map((n) => {
    const raw = readFileSync(join(blobs, n));
    return raw[0] === 0x1f && raw[1] === 0x8b ? gunzipSync(raw) : raw;
  });
}

before(async () => {
  expectCode(await aw(['binfmt', '--install', 'arm64']), 0, 'binfmt --install arm64');
  await buildBusyboxBase(home.dir, home.env, PLATFORMS, BASE);
});

after(() => home.cleanup());

describe('RUN --mount=type=cache', () => {
  test('persists across builds and is shared by platforms, by id; its content is not in the image', async () => {
    const first = write(join(home.dir, 'cache-1'), {
      Dockerfile: `FROM ${BASE}\nARG TARGETARCH\nRUN --mount=type=cache,id=app-cache,target=/var/cache/app echo "$TARGETARCH" >> /var/cache/app/seen && echo done > /step1.txt\n`,
    });
    const out1 = join(home.dir, 'cache-1-out');
    expectCode(await aw(['build', '--platform', PLATFORMS, '--output', `type=local,dest=${out1}`, first]), 0, 'first build');
    for (const p of ['linux_amd64', 'linux_arm64']) {
      assert.equal(readFileSync(join(out1, p, 'step1.txt'), 'utf8'), 'done\n');
      assert.ok(!existsSync(join(out1, p, 'var', 'cache', 'app')), `the cache mount's content (or its mount point) reached the ${p} image`);
    }
    // Another build, another Dockerfile, another target: the same id sees what both platforms wrote.
    const second = write(join(home.dir, 'cache-2'), {
      Dockerfile: `FROM ${BASE}\nRUN --mount=type=cache,id=app-cache,target=/mnt/c,sharing=locked cat /mnt/c/seen > /seen.txt\n`,
    });
    const out2 = join(home.dir, 'cache-2-out');
    expectCode(await aw(['build', '--platform', 'linux/amd64', '--output', `type=local,dest=${out2}`, second]), 0, 'second build');
    assert.deepEqual(readFileSync(join(out2, 'seen.txt'), 'utf8').split('\n').filter(Boolean).sort(), ['amd64', 'arm64']);
    // Without an id the target is the id: a different cache, empty.
    const third = write(join(home.dir, 'cache-3'), {
      Dockerfile: `FROM ${BASE}\nRUN --mount=type=cache,target=/mnt/c ls -A /mnt/c | wc -l > /count.txt\n`,
    });
    const out3 = join(home.dir, 'cache-3-out');
    expectCode(await aw(['build', '--output', `type=local,dest=${out3}`, third]), 0, 'third build');
    assert.equal(readFileSync(join(out3, 'count.txt'), 'utf8').trim(), '0');
  });

  test('a rebuild with --no-cache runs again and finds what the last run left', async () => {
    const ctx = write(join(home.dir, 'cache-grow'), {
      Dockerfile: `FROM ${BASE}\nRUN --mount=type=cache,target=/root/.cache,uid=0,mode=0700 echo run >> /root/.cache/runs && wc -l < /root/.cache/runs > /runs.txt\n`,
    });
    const out = join(home.dir, 'cache-grow-out');
    expectCode(await aw(['build', '--output', `type=local,dest=${out}`, ctx]), 0, 'first');
    assert.equal(readFileSync(join(out, 'runs.txt'), 'utf8').trim(), '1');
    expectCode(await aw(['build', '--no-cache', '--output', `type=local,dest=${out}`, ctx]), 0, 'second');
    assert.equal(readFileSync(join(out, 'runs.txt'), 'utf8').trim(), '2');
  });
});

function rot13(s: string): string {
  return s.replace(/[a-z]/g, (c) => String.fromCharCode(((c.charCodeAt(0) - 97 + 13) % 26) + 97));
}

describe('RUN --mount=type=secret', () => {
  const SECRET = 'sw0rdfish-7d1c0a9e-never-in-a-layer';

  test('is readable during RUN, as a file and as an env variable, and absent from every layer', async () => {
    const secretFile = join(home.dir, 'token.txt');
    writeFileSync(secretFile, SECRET);
    const ctx = write(join(home.dir, 'secret'), {
      Dockerfile: [
        `FROM ${BASE}`,
        // The Dockerfile (and so the image history) only holds the rot13 of the values.
        `RUN --mount=type=secret,id=token test "$(tr a-z n-za-m < /run/secrets/token)" = "${rot13(SECRET)}" && stat -c %a /run/secrets/token > /mode.txt && wc -c < /run/secrets/token > /size.txt`,
        `RUN --mount=type=secret,id=api,env=API_KEY test "$(echo "$API_KEY" | tr a-z n-za-m)" = "${rot13('from-env')}" && echo env-ok > /env.txt`,
        'RUN --mount=type=secret,id=absent test ! -e /run/secrets/absent && echo skipped > /absent.txt',
        '',
      ].join('\n'),
    });
    const oci = join(home.dir, 'secret.oci.tar');
    const r = expectCode(
      await aw(['build', '--progress', 'plain', '--platform', PLATFORMS, '--secret', `id=token,src=${secretFile}`, '--secret', 'id=api,env=MY_API_KEY', '--output', `type=oci,dest=${oci}`, ctx], { MY_API_KEY: 'from-env' }),
      0,
      'build with secrets',
    );
    assert.ok(!r.stderr.includes(SECRET) && !r.stdout.includes(SECRET), 'the secret reached the output');
    const blobs = archiveBlobs(oci);
    assert.ok(blobs.length >= 6, 'layers, configs and manifests');
    for (const b of blobs) {
      assert.ok(!b.includes(SECRET), 'a layer, config or manifest holds the secret');
      assert.ok(!b.includes('from-env'), 'a blob holds the env secret');
    }
    const local = join(home.dir, 'secret-out');
    expectCode(await aw(['build', '--platform', PLATFORMS, '--secret', `id=token,src=${secretFile}`, '--secret', 'id=api,env=MY_API_KEY', '--output', `type=local,dest=${local}`, ctx], { MY_API_KEY: 'from-env' }), 0, 'local output');
    for (const p of ['linux_amd64', 'linux_arm64']) {
      assert.equal(readFileSync(join(local, p, 'mode.txt'), 'utf8').trim(), '400');
      assert.equal(readFileSync(join(local, p, 'size.txt'), 'utf8').trim(), String(SECRET.length));
      assert.equal(readFileSync(join(local, p, 'env.txt'), 'utf8'), 'env-ok\n');
      assert.equal(readFileSync(join(local, p, 'absent.txt'), 'utf8'), 'skipped\n');
      assert.ok(!existsSync(join(local, p, 'run')), 'the secret mount point reached a layer');
    }
  });

  test("the secret's value is not in the cache key; a required secret that is missing stops the build", async () => {
    const ctx = write(join(home.dir, 'secret-key'), { Dockerfile: `FROM ${BASE}\nRUN --mount=type=secret,id=token,required=true cat /run/secrets/token > /dev/null && echo used > /used.txt\n` });
    const a = join(home.dir, 'a.txt');
    const b = join(home.dir, 'b.txt');
    writeFileSync(a, 'value-a');
    writeFileSync(b, 'value-b');
    expectCode(await aw(['build', '--progress', 'plain', '--secret', `id=token,src=${a}`, ctx]), 0, 'first');
    const again = expectCode(await aw(['build', '--progress', 'plain', '--secret', `id=token,src=${b}`, ctx]), 0, 'another value');
    assert.equal(lines(again.stderr, 'CACHED').length, 1, again.stderr);
    const missing = await aw(['build', '--no-cache', ctx]);
    assert.equal(missing.code, 2, missing.stderr);
    assert.match(missing.stderr, /secret "token" is required/);
    assert.match(missing.stderr, /Dockerfile:2/);
    const badFile = await aw(['build', '--secret', `id=token,src=${join(home.dir, 'nope.txt')}`, ctx]);
    assert.equal(badFile.code, 2, badFile.stderr);
    assert.match(badFile.stderr, /secret "token"/);
  });
});

describe('RUN --mount=type=bind and tmpfs', () => {
  test('bind: read-only by default, rw changes discarded, .dockerignore applied, from a stage; in the cache key', async () => {
    const ctx = write(join(home.dir, 'bind'), {
      Dockerfile: [
        `FROM ${BASE} AS builder`,
        'RUN mkdir /out && echo "built on $(uname -m)" > /out/artifact',
        `FROM ${BASE}`,
        'RUN --mount=type=bind,source=src,target=/src cat /src/hello.txt > /hello-copy.txt && if touch /src/new 2>/dev/null; then exit 9; fi && if [ -e /src/ignored.txt ]; then exit 8; fi',
        'RUN --mount=type=bind,source=src,target=/src,rw echo changed > /src/hello.txt && cat /src/hello.txt > /rw-saw.txt',
        'RUN --mount=type=bind,from=builder,source=/out,target=/from-builder cp /from-builder/artifact /artifact',
        'RUN --mount=type=tmpfs,target=/scratch,size=1m echo x > /scratch/f && grep " /scratch " /proc/mounts > /tmpfs.txt',
        '',
      ].join('\n'),
      'src/hello.txt': 'hello\n',
      'src/ignored.txt': 'not for the build\n',
      '.dockerignore': 'src/ignored.txt\n',
    });
    const out = join(home.dir, 'bind-out');
    expectCode(await aw(['build', '--platform', PLATFORMS, '--output', `type=local,dest=${out}`, ctx]), 0, 'build');
    assert.equal(readFileSync(join(ctx, 'src', 'hello.txt'), 'utf8'), 'hello\n', 'a rw bind mount changed the context');
    for (const [p, machine] of [['linux_amd64', 'x86_64'], ['linux_arm64', 'aarch64']] as const) {
      assert.equal(readFileSync(join(out, p, 'hello-copy.txt'), 'utf8'), 'hello\n');
      assert.equal(readFileSync(join(out, p, 'rw-saw.txt'), 'utf8'), 'changed\n');
      assert.equal(readFileSync(join(out, p, 'artifact'), 'utf8'), `built on ${machine}\n`);
      assert.match(readFileSync(join(out, p, 'tmpfs.txt'), 'utf8'), /^tmpfs \/scratch tmpfs .*size=1024k/);
      for (const gone of ['src', 'from-builder', 'scratch']) assert.ok(!existsSync(join(out, p, gone)), `/${gone} reached the ${p} image`);
    }
    // The bound files are inputs of the step: changing them runs it again, and only it.
    writeFileSync(join(ctx, 'src', 'hello.txt'), 'hello again\n');
    const again = expectCode(await aw(['build', '--progress', 'plain', '--platform', 'linux/amd64', '--output', `type=local,dest=${out}`, ctx]), 0, 'rebuild');
    assert.ok(lines(again.stderr, '] DONE').some((l) => l.includes('RUN --mount=type=bind,target=/src cat')), again.stderr);
    assert.ok(lines(again.stderr, 'CACHED').some((l) => l.includes('mkdir /out')), again.stderr);
    assert.equal(readFileSync(join(out, 'hello-copy.txt'), 'utf8'), 'hello again\n');
  });

  test('a bind source that does not exist is named', async () => {
    const ctx = write(join(home.dir, 'bind-missing'), { Dockerfile: `FROM ${BASE}\nRUN --mount=type=bind,source=nothere,target=/x true\n` });
    const r = await aw(['build', ctx]);
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, /mount source "nothere" not found in the build context/);
  });
});
