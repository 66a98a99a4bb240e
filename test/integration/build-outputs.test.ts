/**
 * `archway build` outputs and names as a buildx user meets them: a bad --output or -t is refused
 * before any step runs and leaves nothing behind; a failed push leaves no new name in the store;
 * buildx's output keys (tar=false, name=) do what they say, and unknown keys are refused; an image
 * that cannot be pulled is named with its Dockerfile line. Judged by skopeo and a real registry.
 */
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { archway, expectCode, runCommand, tempHome, writeFiles } from '../support/cli.js';
import { startRegistry, type TestRegistry } from '../support/registries.js';

const home = tempHome('archway-build-outputs-');
const registry: TestRegistry = await startRegistry({ kind: 'anonymous' });
const authRegistry: TestRegistry = await startRegistry({ kind: 'htpasswd' });
// Nothing listens on port 1 of loopback: a registry that cannot be reached, refused at once.
const UNREACHABLE = '127.0.0.1:1';

after(() => home.cleanup());

function aw(args: string[]): ReturnType<typeof archway> {
  return archway(args, { env: home.env });
}

const write = writeFiles;

/** A context that builds without a base image or emulator: every platform is one COPY. */
const ctx = write(join(home.dir, 'ctx'), { Dockerfile: 'FROM scratch\nCOPY a.txt /a.txt\n', 'a.txt': 'a\n' });

async function storeNames(): Promise<string[]> {
  const r = expectCode(await aw(['images', '--format', 'json']), 0, 'images');
  return (JSON.parse(r.stdout) as Array<{ name: string }>).map((i) => i.name);
}

/** Lines of --progress plain that show a step starting, finishing or cached. */
function stepLines(stderr: string): string[] {
  return stderr.split('\n').filter((l) => /^\[linux\//.test(l));
}

describe('bad outputs and tags are refused before the build', () => {
  test('type=docker with two platforms: exit 2 naming the output, no step ran, nothing tagged or written', async () => {
    const dest = join(home.dir, 'two.docker.tar');
    const r = expectCode(await aw(['build', '--progress', 'plain', '--platform', 'linux/amd64,linux/arm64', '-t', 't3docker:1', '-o', `type=docker,dest=${dest}`, ctx]), 2, 'docker output of two platforms');
    assert.match(r.stderr, /--output type=docker/);
    assert.match(r.stderr, /one platform/);
    assert.deepEqual(stepLines(r.stderr), [], 'steps ran before the output was refused');
    assert.ok(!existsSync(dest));
    assert.ok(!(await storeNames()).some((n) => n.includes('t3docker')), 'the failed build left its tag in the store');
  });

  test('an invalid -t is refused naming the option, before any step runs', async () => {
    const r = expectCode(await aw(['build', '--progress', 'plain', '-t', 'ok:1', '-t', 'MyApp', ctx]), 2, '-t MyApp');
    assert.match(r.stderr, /--tag "MyApp"/);
    assert.match(r.stderr, /lowercase/);
    assert.deepEqual(stepLines(r.stderr), []);
    assert.ok(!(await storeNames()).includes('docker.io/library/ok:1'));
  });

  test('--dry-run checks the outputs and tags too', async () => {
    const r = expectCode(await aw(['build', '--dry-run', '-t', 'Bad:1', ctx]), 2, 'dry-run with a bad tag');
    assert.match(r.stderr, /--tag "Bad:1"/);
  });

  test('an unknown --output key is refused, naming the key, the type and the keys it takes', async () => {
    const dest = join(home.dir, 'never');
    const cases: Array<[string, RegExp]> = [
      [`type=oci,dest=${dest},bogus=1`, /type=oci does not take "bogus" \(it takes dest, tar, name\)/],
      [`type=local,dest=${dest},name=x:1`, /type=local does not take "name" \(it takes dest\)/],
      [`type=registry,name=x:1,dest=${dest}`, /type=registry does not take "dest" \(it takes name, push, push-by-digest, name-canonical, oci-mediatypes\)/],
      [`type=docker,dest=${dest},tar=false`, /type=docker writes a tar only/],
      [`type=oci,dest=${dest},tar=no`, /tar=no: expected true or false/],
    ];
    for (const [spec, message] of cases) {
      const r = expectCode(await aw(['build', '--progress', 'plain', '-o', spec, ctx]), 2, spec);
      assert.match(r.stderr, message, spec);
      assert.deepEqual(stepLines(r.stderr), [], spec);
    }
    assert.ok(!existsSync(dest));
  });

  test('an invalid name= is refused naming the output', async () => {
    const r = expectCode(await aw(['build', '--progress', 'plain', '-o', `type=docker,dest=${join(home.dir, 'n.tar')},name=Up/Per:1`, ctx]), 2, 'bad name=');
    assert.match(r.stderr, /--output type=docker.*name "Up\/Per:1"/);
    assert.deepEqual(stepLines(r.stderr), []);
  });
});

describe('store tags come last', () => {
  test('a push that fails leaves no new tag in the store (exit 3)', async () => {
    const r = expectCode(await aw(['build', '--progress', 'plain', '-t', `${UNREACHABLE}/x:1`, '-t', 'pushfail:1', '--push', ctx]), 3, 'push to an unreachable registry');
    assert.match(r.stderr, /127\.0\.0\.1:1/);
    const names = await storeNames();
    assert.ok(!names.some((n) => n.includes('pushfail') || n.includes('/x:1')), `tags left by a failed push: ${names.join(', ')}`);
  });

  test('a push that succeeds tags the store as well', async () => {
    const pushed = `${registry.host}/outputs/app:1`;
    const also = `${registry.host}/outputs/app:also`;
    const r = expectCode(await aw(['build', '--platform', 'linux/amd64,linux/arm64', '-t', pushed, '-t', also, '--push', ctx]), 0, 'push');
    const digest = r.stdout.trim();
    const raw = expectCode(await runCommand('skopeo', ['inspect', '--raw', '--tls-verify=false', `docker://${pushed}`]), 0, 'skopeo inspect');
    assert.equal((JSON.parse(raw.stdout) as { manifests: unknown[] }).manifests.length, 2);
    const names = await storeNames();
    assert.ok(names.includes(pushed) && names.includes(also), names.join(', '));
    assert.match(digest, /^sha256:[0-9a-f]{64}$/);
  });
});

describe("buildx's output keys", () => {
  test('type=oci,tar=false writes an OCI layout directory that skopeo reads', async () => {
    const dest = join(home.dir, 'layout');
    const r = expectCode(await aw(['build', '--platform', 'linux/amd64,linux/arm64', '-t', 'layout:1', '-o', `type=oci,dest=${dest},tar=false`, ctx]), 0, 'oci layout output');
    assert.ok(statSync(dest).isDirectory(), 'tar=false wrote a file');
    assert.ok(existsSync(join(dest, 'oci-layout')));
    const index = JSON.parse(readFileSync(join(dest, 'index.json'), 'utf8')) as { manifests: Array<{ digest: string; annotations?: Record<string, string> }> };
    assert.equal(index.manifests.length, 1);
    assert.equal(index.manifests[0]?.digest, r.stdout.trim());
    const ref = index.manifests[0]?.annotations?.['org.opencontainers.image.ref.name'] ?? '';
    const raw = expectCode(await runCommand('skopeo', ['inspect', '--raw', `oci:${dest}:${ref}`]), 0, 'skopeo inspect oci layout');
    assert.equal((JSON.parse(raw.stdout) as { manifests: unknown[] }).manifests.length, 2);
    // skopeo copy checks every digest it reads.
    expectCode(await runCommand('skopeo', ['copy', '--all', `oci:${dest}:${ref}`, `oci:${join(home.dir, 'layout-copy')}:x`]), 0, 'skopeo copy');
  });

  test('name= on type=docker becomes the RepoTags of the archive (every name, -t aside)', async () => {
    const dest = join(home.dir, 'named.docker.tar');
    expectCode(await aw(['build', '--platform', 'linux/arm64', '-t', 'other:1', '-o', `type=docker,dest=${dest},"name=my/img:2,my/img:latest"`, ctx]), 0, 'docker output with name=');
    const manifest = JSON.parse(expectCode(await runCommand('tar', ['-xOf', dest, 'manifest.json']), 0, 'tar').stdout) as Array<{ RepoTags: string[] }>;
    assert.deepEqual(manifest[0]?.RepoTags, ['my/img:2', 'my/img:latest']);
    const inspect = expectCode(await runCommand('skopeo', ['inspect', `docker-archive:${dest}:my/img:2`]), 0, 'skopeo finds the image by its name');
    assert.equal((JSON.parse(inspect.stdout) as { Architecture: string }).Architecture, 'arm64');
  });

  test('name= on type=oci names the image in index.json instead of -t', async () => {
    const dest = join(home.dir, 'named.oci.tar');
    expectCode(await aw(['build', '-t', 'other:1', '-o', `type=oci,dest=${dest},name=named/thing:7`, ctx]), 0, 'oci output with name=');
    const index = JSON.parse(expectCode(await runCommand('tar', ['-xOf', dest, 'index.json']), 0, 'tar').stdout) as { manifests: Array<{ annotations?: Record<string, string> }> };
    assert.equal(index.manifests[0]?.annotations?.['org.opencontainers.image.ref.name'], 'thing');
  });

  test('type=image,name= names the result in the local store', async () => {
    expectCode(await aw(['build', '-o', 'type=image,name=stored:1', ctx]), 0, 'image output');
    assert.ok((await storeNames()).includes('docker.io/library/stored:1'));
  });
});

describe('an image that cannot be pulled', () => {
  test('FROM names the Dockerfile line and the reference, and keeps the registry exit code', async () => {
    const dir = write(join(home.dir, 'from-unreachable'), { Dockerfile: `# base\nFROM ${UNREACHABLE}/no/such-image:1\nRUN true\n` });
    const r = expectCode(await aw(['build', dir]), 3, 'FROM an unreachable registry');
    assert.match(r.stderr, new RegExp(`Dockerfile:2: FROM ${UNREACHABLE}/no/such-image:1: cannot pull ${UNREACHABLE}/no/such-image:1: `));
  });

  test('COPY --from names its line and the reference', async () => {
    const dir = write(join(home.dir, 'copy-unreachable'), { Dockerfile: `FROM scratch\nCOPY --from=${UNREACHABLE}/no/such-image:2 /a /a\n` });
    const r = expectCode(await aw(['build', dir]), 3, 'COPY --from an unreachable registry');
    assert.match(r.stderr, new RegExp(`Dockerfile:2: COPY --from=${UNREACHABLE}/no/such-image:2: cannot pull ${UNREACHABLE}/no/such-image:2: `));
  });

  test('a registry that wants credentials: exit 4, naming the line and the reference', async () => {
    const ref = `${authRegistry.host}/private/base:1`;
    const dir = write(join(home.dir, 'from-auth'), { Dockerfile: `FROM ${ref}\n` });
    const r = expectCode(await aw(['build', dir]), 4, 'FROM a registry without credentials');
    assert.match(r.stderr, new RegExp(`Dockerfile:1: FROM ${ref}: cannot pull ${ref}: `));
  });

  test('a missing repository on a real registry is named, with the Dockerfile line', async () => {
    const ref = `${registry.host}/no/such-image:1`;
    const dir = write(join(home.dir, 'from-missing'), { Dockerfile: `FROM ${ref}\n` });
    // The registry says the manifest is unknown: a named thing that does not exist, exit 2.
    const r = expectCode(await aw(['build', dir]), 2, 'FROM a missing repository');
    assert.match(r.stderr, new RegExp(`Dockerfile:1: FROM ${ref}: cannot pull ${ref}: `));
  });
});

describe('build options as buildx takes them', () => {
  test('-f - reads the Dockerfile from stdin; its errors name Dockerfile and the line', async () => {
    const ok = await archway(['build', '-f', '-', '-t', 'from-stdin:1', ctx], { env: home.env, input: 'FROM scratch\nCOPY a.txt /from-stdin.txt\n' });
    expectCode(ok, 0, 'build from stdin');
    assert.ok((await storeNames()).includes('docker.io/library/from-stdin:1'));
    const bad = await archway(['build', '-f', '-', ctx], { env: home.env, input: 'FROM scratch\nCOPPY a.txt /a\n' });
    expectCode(bad, 2, 'syntax error from stdin');
    assert.match(bad.stderr, /Dockerfile:2:1: unknown instruction "COPPY"/);
  });

  test('--platform local is the host platform', async () => {
    const r = expectCode(await aw(['build', '--dry-run', '--platform', 'local', ctx]), 0, 'dry run');
    assert.match(r.stdout, /platform linux\/amd64/);
  });

  test('a --build-arg that no ARG declares is warned about, by name', async () => {
    const r = expectCode(await aw(['build', '--build-arg', 'VERSON=1', '--build-arg', 'HTTP_PROXY=http://proxy:3128', ctx]), 0, 'build');
    assert.match(r.stderr, /--build-arg VERSON is not used: no ARG VERSON in .*Dockerfile/);
    assert.doesNotMatch(r.stderr, /HTTP_PROXY is not used/);
  });

  test('--build-arg SOURCE_DATE_EPOCH sets the image times, as the environment variable does', async () => {
    const dest = join(home.dir, 'epoch-layout');
    expectCode(await aw(['build', '--build-arg', 'SOURCE_DATE_EPOCH=1700000000', '--output', `type=oci,dest=${dest},tar=false`, ctx]), 0, 'build');
    const config = JSON.parse(expectCode(await runCommand('skopeo', ['inspect', '--config', '--raw', `oci:${dest}`]), 0, 'skopeo inspect').stdout) as { created?: string };
    assert.equal(config.created, '2023-11-14T22:13:20.000Z');
  });
});
