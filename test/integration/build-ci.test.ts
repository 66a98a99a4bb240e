/**
 * `archway build` wired into CI as buildx is: push-by-digest pushes what the metadata names (the
 * index and its images), so `archway index create` can assemble runners' results; --metadata-file
 * is written for every build, in buildx's keys, and a bad path is refused before the build; an
 * optional platform that the base lacks, or that cannot run here, is left out with a warning
 * instead of failing the build. Judged by skopeo and a real registry.
 */
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { archway, expectCode, runCommand, tempHome, writeFiles } from '../support/cli.js';
import { startRegistry, type TestRegistry } from '../support/registries.js';
import { busyboxRootfs } from '../support/busybox-rootfs.js';
import { parsePlatform } from '../../src/oci/index.js';

const home = tempHome('archway-build-ci-');
const registry: TestRegistry = await startRegistry({ kind: 'anonymous' });
const REG = registry.host;

after(() => home.cleanup());

function aw(args: string[]): ReturnType<typeof archway> {
  return archway(args, { env: home.env });
}

const write = writeFiles;

/** A context that builds without a base image or emulator: every platform is one COPY. */
const ctx = write(join(home.dir, 'ctx'), { Dockerfile: 'FROM scratch\nCOPY a.txt /a.txt\n', 'a.txt': 'a\n' });

interface Metadata {
  'containerimage.digest': string;
  'containerimage.descriptor': { mediaType: string; digest: string; size: number };
  'containerimage.config.digest'?: string;
  'image.name'?: string;
  platforms: Record<string, { digest: string; name?: string }>;
}

function readMetadata(file: string): Metadata {
  return JSON.parse(readFileSync(file, 'utf8')) as Metadata;
}

interface RawIndex {
  mediaType: string;
  manifests: Array<{ digest: string; platform?: { os: string; architecture: string; variant?: string } }>;
}

async function skopeoRaw(ref: string): Promise<{ code: number | null; value?: RawIndex & { config?: { digest: string } } }> {
  const r = await runCommand('skopeo', ['inspect', '--raw', '--tls-verify=false', `docker://${ref}`]);
  return r.code === 0 ? { code: 0, value: JSON.parse(r.stdout) as RawIndex & { config?: { digest: string } } } : { code: r.code };
}

function platformsOf(index: RawIndex): string[] {
  return index.manifests.map((m) => [m.platform?.os, m.platform?.architecture, m.platform?.variant].filter(Boolean).join('/')).sort();
}

/** Lines of --progress plain that show a step starting, finishing or cached. */
function stepLines(stderr: string): string[] {
  return stderr.split('\n').filter((l) => /^\[linux\//.test(l));
}

async function storeImages(): Promise<Array<{ name: string; digest: string }>> {
  return JSON.parse(expectCode(await aw(['images', '--format', 'json']), 0, 'images').stdout) as Array<{ name: string; digest: string }>;
}

describe('push by digest', () => {
  test('two platforms: the index and both images are pushed by digest, no tag; index create reads it', async () => {
    const meta = join(home.dir, 'pbd.json');
    const repo = `${REG}/ci/app2`;
    expectCode(await aw(['build', '--platform', 'linux/arm/v7,linux/arm64', '-t', repo, '--push-by-digest', '--metadata-file', meta, ctx]), 0, 'push-by-digest');
    const m = readMetadata(meta);
    assert.match(m['containerimage.digest'], /^sha256:[0-9a-f]{64}$/);
    assert.equal(m['containerimage.descriptor'].digest, m['containerimage.digest']);
    assert.equal(m['containerimage.descriptor'].mediaType, 'application/vnd.oci.image.index.v1+json');
    assert.equal(m['image.name'], repo);
    // What the metadata names is in the registry, and lists both platforms' images.
    const raw = await skopeoRaw(`${repo}@${m['containerimage.digest']}`);
    assert.equal(raw.code, 0, 'the index named by containerimage.digest was not pushed');
    const index = raw.value as RawIndex;
    assert.deepEqual(platformsOf(index), ['linux/arm/v7', 'linux/arm64']);
    assert.deepEqual(index.manifests.map((d) => d.digest).sort(), [m.platforms['linux/arm/v7']?.digest, m.platforms['linux/arm64']?.digest].sort());
    for (const d of index.manifests) assert.equal((await skopeoRaw(`${repo}@${d.digest}`)).code, 0, `image ${d.digest} was not pushed`);
    // By digest only: no tag was written.
    assert.notEqual((await skopeoRaw(`${repo}:latest`)).code, 0, 'push-by-digest wrote a tag');
    // The CI step after the runners: a tag over the pushed index.
    expectCode(await aw(['index', 'create', '-t', `${repo}:1`, `${repo}@${m['containerimage.digest']}`]), 0, 'index create');
    const tagged = await skopeoRaw(`${repo}:1`);
    assert.equal(tagged.code, 0);
    assert.deepEqual(platformsOf(tagged.value as RawIndex), ['linux/arm/v7', 'linux/arm64']);
  });

  test('--index on one platform pushes the index by digest too', async () => {
    const meta = join(home.dir, 'pbd-index.json');
    const repo = `${REG}/ci/one-index`;
    expectCode(await aw(['build', '--platform', 'linux/arm64', '--index', '-t', repo, '--push-by-digest', '--metadata-file', meta, ctx]), 0, 'push-by-digest --index');
    const m = readMetadata(meta);
    const raw = await skopeoRaw(`${repo}@${m['containerimage.digest']}`);
    assert.equal(raw.code, 0, 'the index was not pushed');
    assert.deepEqual(platformsOf(raw.value as RawIndex), ['linux/arm64']);
  });

  test("buildx's split-runner recipe: one platform per runner by digest (name-canonical=true), then index create", async () => {
    const repo = `${REG}/ci/split`;
    const digests: string[] = [];
    for (const platform of ['linux/amd64', 'linux/arm64']) {
      const meta = join(home.dir, `split-${platform.replace('/', '-')}.json`);
      const out = `type=image,name=${repo},push-by-digest=true,name-canonical=true,push=true`;
      expectCode(await aw(['build', '--platform', platform, '-o', out, '--metadata-file', meta, ctx]), 0, `runner ${platform}`);
      const m = readMetadata(meta);
      // One platform, no --index: the digest is the image's, and buildx's config digest is there too.
      assert.equal(m['containerimage.descriptor'].mediaType, 'application/vnd.oci.image.manifest.v1+json');
      const raw = await skopeoRaw(`${repo}@${m['containerimage.digest']}`);
      assert.equal(raw.code, 0, `${platform}: the image was not pushed`);
      assert.equal(raw.value?.config?.digest, m['containerimage.config.digest']);
      digests.push(m['containerimage.digest']);
    }
    expectCode(await aw(['index', 'create', '-t', `${repo}:1`, ...digests.map((d) => `${repo}@${d}`)]), 0, 'index create');
    assert.deepEqual(platformsOf((await skopeoRaw(`${repo}:1`)).value as RawIndex), ['linux/amd64', 'linux/arm64']);
  });

  test('oci-mediatypes=false pushes Docker schema 2; a bad name-canonical value is refused', async () => {
    const meta = join(home.dir, 'docker-types.json');
    const repo = `${REG}/ci/docker-types`;
    expectCode(await aw(['build', '--platform', 'linux/amd64,linux/arm64', '-o', `type=registry,name=${repo},push-by-digest=true,oci-mediatypes=false`, '--metadata-file', meta, ctx]), 0, 'docker media types');
    const m = readMetadata(meta);
    assert.equal(m['containerimage.descriptor'].mediaType, 'application/vnd.docker.distribution.manifest.list.v2+json');
    assert.equal((await skopeoRaw(`${repo}@${m['containerimage.digest']}`)).value?.mediaType, 'application/vnd.docker.distribution.manifest.list.v2+json');
    const bad = expectCode(await aw(['build', '-o', `type=image,name=x:1,name-canonical=yes`, ctx]), 2, 'name-canonical=yes');
    assert.match(bad.stderr, /name-canonical=yes: expected true or false/);
  });
});

describe('--metadata-file', () => {
  test('a store-only build writes it: containerimage.digest is what `archway images` shows', async () => {
    const meta = join(home.dir, 'store.json');
    const r = expectCode(await aw(['build', '--platform', 'linux/amd64,linux/arm64', '-t', 'ci-meta:1', '--metadata-file', meta, ctx]), 0, 'store-only build');
    const m = readMetadata(meta);
    const stored = (await storeImages()).find((i) => i.name === 'docker.io/library/ci-meta:1');
    assert.ok(stored, 'the build was not tagged');
    assert.equal(m['containerimage.digest'], stored.digest);
    assert.equal(m['containerimage.digest'], r.stdout.trim());
    assert.equal(m['image.name'], 'docker.io/library/ci-meta:1');
    assert.deepEqual(Object.keys(m.platforms).sort(), ['linux/amd64', 'linux/arm64']);
  });

  test('an archive build writes it too; an unnamed build has no image.name', async () => {
    const meta = join(home.dir, 'oci.json');
    const dest = join(home.dir, 'meta-layout');
    expectCode(await aw(['build', '-o', `type=oci,dest=${dest},tar=false`, '--metadata-file', meta, ctx]), 0, 'oci output');
    const m = readMetadata(meta);
    const index = JSON.parse(readFileSync(join(dest, 'index.json'), 'utf8')) as { manifests: Array<{ digest: string }> };
    assert.equal(m['containerimage.digest'], index.manifests[0]?.digest);
    assert.equal(m['image.name'], undefined);
    assert.match(m['containerimage.config.digest'] ?? '', /^sha256:/);
  });

  test('a directory that does not exist: exit 2 naming the file, before any step ran, nothing tagged', async () => {
    const meta = join(home.dir, 'no-such-dir', 'm.json');
    const r = expectCode(await aw(['build', '--progress', 'plain', '-t', 'ci-nometa:1', '--metadata-file', meta, ctx]), 2, 'missing metadata dir');
    assert.ok(r.stderr.includes(`--metadata-file "${meta}"`), r.stderr);
    assert.match(r.stderr, /does not exist/);
    assert.deepEqual(stepLines(r.stderr), [], 'steps ran before the metadata file was refused');
    assert.ok(!(await storeImages()).some((i) => i.name.includes('ci-nometa')));
  });

  test('a directory that cannot be written: exit 2 naming the file, before any step ran', async () => {
    let meta: string;
    if (process.getuid?.() === 0) {
      // root writes through any mode bits; sysfs takes no new files from anyone.
      meta = '/sys/archway-metadata-test.json';
    } else {
      const dir = join(home.dir, 'read-only');
      mkdirSync(dir, { mode: 0o555 });
      meta = join(dir, 'm.json');
    }
    const r = expectCode(await aw(['build', '--progress', 'plain', '-t', 'ci-rometa:1', '--metadata-file', meta, ctx]), 2, 'unwritable metadata dir');
    assert.ok(r.stderr.includes(`--metadata-file "${meta}"`), r.stderr);
    assert.match(r.stderr, /cannot write/);
    assert.deepEqual(stepLines(r.stderr), []);
    assert.ok(!existsSync(meta));
    assert.ok(!(await storeImages()).some((i) => i.name.includes('ci-rometa')));
  });
});

describe('optional platforms in the checks before the build', () => {
  const base = `${REG}/ci/base:1`;

  test('a base without the optional platform: exit 0, a warning, the index without it', async () => {
    // The base is only in the registry (type=registry,name= does not name the store).
    expectCode(await aw(['build', '--platform', 'linux/amd64,linux/arm64', '-o', `type=registry,name=${base}`, ctx]), 0, 'base');
    const app = write(join(home.dir, 'on-base'), { Dockerfile: `FROM ${base}\nCOPY b.txt /b.txt\n`, 'b.txt': 'b\n' });
    const tag = `${REG}/ci/opt:1`;
    const r = expectCode(
      await aw(['build', '--progress', 'plain', '--platform', 'linux/amd64,linux/arm64,linux/s390x', '--optional-platform', 'linux/s390x', '-t', tag, '--push', app]),
      0,
      'optional platform the base lacks',
    );
    assert.match(r.stderr, /linux\/s390x is optional and is left out: the base image .*has no image for linux\/s390x/);
    assert.match(r.stderr, /without linux\/s390x/);
    assert.doesNotMatch(r.stderr, /\[linux\/s390x\]/, 'a step ran for the platform left out');
    const raw = await skopeoRaw(tag);
    assert.equal(raw.code, 0);
    assert.deepEqual(platformsOf(raw.value as RawIndex), ['linux/amd64', 'linux/arm64']);
  });

  test('the same platform, required: exit 2 before any step', async () => {
    const app = join(home.dir, 'on-base');
    const r = expectCode(await aw(['build', '--progress', 'plain', '--platform', 'linux/amd64,linux/s390x', app]), 2, 'required platform the base lacks');
    assert.match(r.stderr, /has no image for linux\/s390x/);
    assert.deepEqual(stepLines(r.stderr), []);
  });

  // The mips64el emulator is the one this needs absent (it is not in the test setup's --install list).
  const mipsRegistered = existsSync('/proc/sys/fs/binfmt_misc/qemu-mips64el');
  test('an optional platform whose RUN steps cannot run here: exit 0, a warning, the others built', { skip: mipsRegistered ? 'an emulator for linux/mips64le is registered here' : false }, async () => {
    // A base with a real amd64 busybox and a mips64le image that is never run.
    const baseCtx = write(join(home.dir, 'mips-base'), {
      Dockerfile: 'FROM scratch\nARG TARGETARCH\nCOPY rootfs-${TARGETARCH}/ /\n',
      'rootfs-mips64le/marker': 'mips64le\n',
    });
    const rootfs = await busyboxRootfs(parsePlatform('linux/amd64'));
    const cp = spawnSync('cp', ['-a', rootfs, join(baseCtx, 'rootfs-amd64')]);
    assert.equal(cp.status, 0, cp.stderr.toString());
    const mipsBase = `${REG}/ci/mips-base:1`;
    expectCode(await aw(['build', '--platform', 'linux/amd64,linux/mips64le', '-o', `type=registry,name=${mipsBase}`, baseCtx]), 0, 'mips base');
    const app = write(join(home.dir, 'mips-app'), { Dockerfile: `FROM ${mipsBase}\nRUN echo built > /built.txt\n` });
    const tag = `${REG}/ci/mips-app:1`;
    const r = expectCode(
      await aw(['build', '--progress', 'plain', '--platform', 'linux/amd64,linux/mips64le', '--optional-platform', 'linux/mips64le', '-t', tag, '--push', app]),
      0,
      'optional platform without an emulator',
    );
    assert.match(r.stderr, /linux\/mips64le is optional and is left out: its RUN steps cannot run here/);
    const raw = await skopeoRaw(tag);
    assert.equal(raw.code, 0);
    // One platform left: a plain image, as for an optional platform whose RUN failed.
    assert.equal(raw.value?.mediaType, 'application/vnd.oci.image.manifest.v1+json');
    // Required, the same platform still stops the build (exit 7).
    const req = expectCode(await aw(['build', '--progress', 'plain', '--platform', 'linux/amd64,linux/mips64le', app]), 7, 'required platform without an emulator');
    assert.match(req.stderr, /linux\/mips64le/);
  });
});
