/**
 * archway's main job, end to end, judged by independent consumers: a six-platform build on a
 * busybox base (made from Debian's busybox-static with archway itself), pushed to a real
 * distribution registry, read by skopeo, and run per platform by podman and by archway run.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync, existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { archway, buildBusyboxBase, expectCode, runCommand, tempHome, writeFiles } from '../support/cli.js';
import { startRegistry, type TestRegistry } from '../support/registries.js';
import { formatPlatform } from '../../src/oci/index.js';

const PLATFORMS = 'linux/amd64,linux/arm64,linux/arm/v7,linux/ppc64le,linux/s390x,linux/386';
const UNAME: Record<string, string> = {
  'linux/amd64': 'x86_64',
  'linux/arm64': 'aarch64',
  'linux/arm/v7': 'armv7l',
  'linux/ppc64le': 'ppc64le',
  'linux/s390x': 's390x',
  'linux/386': 'i686',
};
const BASE = 'archway-test/busybox:1';

const home = tempHome('archway-build-');
// Started at the top level, so the helper's cleanup hook belongs to the whole file.
const registry: TestRegistry = await startRegistry({ kind: 'anonymous' });

const write = writeFiles;

function aw(args: string[], extra: Parameters<typeof archway>[1] = {}): ReturnType<typeof archway> {
  return archway(args, { env: home.env, ...extra });
}

function stepLines(out: string, marker: string): string[] {
  return out.split('\n').filter((l) => l.includes(marker));
}

before(async () => {
  expectCode(await aw(['binfmt', '--install', 'arm64,arm,ppc64le,s390x']), 0, 'binfmt --install');
  await buildBusyboxBase(home.dir, home.env, PLATFORMS, BASE);
});

after(() => home.cleanup());

describe('a six-platform build', () => {
  let out = '';
  const tag = () => `${registry.host}/test/app:1`;

  test('builds and pushes one index with every platform, read by skopeo', async () => {
    const ctx = write(join(home.dir, 'app'), {
      Dockerfile: `FROM ${BASE}\nARG TARGETPLATFORM\nARG BUILDPLATFORM\nRUN echo "target=$TARGETPLATFORM build=$BUILDPLATFORM uname=$(uname -m)" > /info.txt\nCOPY data.txt /data.txt\nCMD ["cat", "/info.txt"]\n`,
      'data.txt': 'shared by every platform\n',
    });
    const r = expectCode(await aw(['build', '--progress', 'plain', '--platform', PLATFORMS, '-t', tag(), '--push', ctx]), 0, 'build --push');
    out = r.stderr;
    const raw = expectCode(await runCommand('skopeo', ['inspect', '--raw', '--tls-verify=false', `docker://${tag()}`]), 0, 'skopeo inspect --raw');
    const index = JSON.parse(raw.stdout) as { mediaType: string; manifests: Array<{ digest: string; platform: { os: string; architecture: string; variant?: string } }> };
    assert.equal(index.mediaType, 'application/vnd.oci.image.index.v1+json');
    const got = index.manifests.map((m) => formatPlatform(m.platform)).sort();
    assert.deepEqual(got, Object.keys(UNAME).sort());
    // skopeo copy verifies every digest it reads.
    const dest = join(home.dir, 'skopeo-copy');
    expectCode(await runCommand('skopeo', ['copy', '--all', '--src-tls-verify=false', `docker://${tag()}`, `oci:${dest}:app`]), 0, 'skopeo copy --all');
  });

  test('each platform ran its own RUN step with its own values (archway run)', async () => {
    for (const [platform, machine] of Object.entries(UNAME)) {
      const r = expectCode(await aw(['run', '--platform', platform, tag()]), 0, `archway run --platform ${platform}`);
      assert.equal(r.stdout.trim(), `target=${platform} build=linux/amd64 uname=${machine}`);
    }
  });

  test('podman runs every platform of the pushed tag', async (t) => {
    // Sandboxed machines (CI containers) often lack CAP_SYS_RESOURCE, and podman's default ulimits
    // then make runc fail; a containers.conf without them lets podman run there too.
    const conf = join(home.dir, 'containers.conf');
    writeFileSync(conf, '[containers]\ndefault_ulimits = []\n');
    const env = { CONTAINERS_CONF: conf };
    const probe = await runCommand('podman', ['run', '--rm', '--tls-verify=false', '--platform', 'linux/amd64', tag()], { env });
    if (probe.code !== 0) {
      t.skip(`podman cannot run containers on this machine: ${probe.stderr.trim().split('\n').pop()}`);
      console.log(`# skipped podman checks: ${probe.stderr.trim().split('\n').pop()}`);
      return;
    }
    for (const [platform, machine] of Object.entries(UNAME)) {
      const r = expectCode(await runCommand('podman', ['run', '--rm', '--tls-verify=false', '--platform', platform, tag()], { env }), 0, `podman run --platform ${platform}`);
      assert.equal(r.stdout.trim(), `target=${platform} build=linux/amd64 uname=${machine}`);
    }
  });

  test('the COPY layer is computed once and shared by every platform', async () => {
    const raw = JSON.parse(expectCode(await runCommand('skopeo', ['inspect', '--raw', '--tls-verify=false', `docker://${tag()}`]), 0, 'inspect').stdout) as { manifests: Array<{ digest: string }> };
    const lastLayers = new Set<string>();
    for (const m of raw.manifests) {
      const man = JSON.parse(expectCode(await runCommand('skopeo', ['inspect', '--raw', '--tls-verify=false', `docker://${registry.host}/test/app@${m.digest}`]), 0, 'inspect child').stdout) as { layers: Array<{ digest: string }> };
      lastLayers.add(man.layers[man.layers.length - 1]?.digest ?? '');
    }
    assert.equal(lastLayers.size, 1, 'the COPY layer digest differs between platforms');
    assert.equal(stepLines(out, 'DONE').filter((l) => l.includes('COPY data.txt')).length, 6);
  });

  test('a rebuild with no change runs nothing; a changed file re-runs only what reads it', async () => {
    const ctx = join(home.dir, 'app');
    const again = expectCode(await aw(['build', '--progress', 'plain', '--platform', PLATFORMS, '-t', 'app:cache', ctx]), 0, 'rebuild');
    assert.equal(stepLines(again.stderr, '] DONE').length, 0, `steps ran again:\n${again.stderr}`);
    assert.equal(stepLines(again.stderr, 'CACHED').length, 12);
    // Times come from when steps ran, so an unchanged rebuild is the same image, digest included.
    const digest = (r: { stdout: string }): string => r.stdout.trim().split('\n').pop() ?? '';
    const third = expectCode(await aw(['build', '--progress', 'plain', '--platform', PLATFORMS, '-t', 'app:cache', ctx]), 0, 'rebuild again');
    assert.match(digest(again), /^sha256:[0-9a-f]{64}$/);
    assert.equal(digest(third), digest(again), 'an unchanged rebuild published a new digest');
    writeFileSync(join(ctx, 'data.txt'), 'changed\n');
    const changed = expectCode(await aw(['build', '--progress', 'plain', '--platform', PLATFORMS, '-t', 'app:cache', ctx]), 0, 'rebuild after a change');
    assert.notEqual(digest(changed), digest(again));
    const done = stepLines(changed.stderr, '] DONE');
    assert.equal(done.length, 6, changed.stderr);
    assert.ok(done.every((l) => l.includes('COPY data.txt')));
    assert.equal(stepLines(changed.stderr, 'CACHED').filter((l) => l.includes('RUN')).length, 6);
  });
});

describe('index create from per-platform images pushed by skopeo', () => {
  test('combines app:1-amd64, app:1-arm64 and app:1-armv7 into one tag that podman runs per platform', async (t) => {
    const ctx = write(join(home.dir, 'per-platform'), { Dockerfile: `FROM ${BASE}\nCMD ["uname", "-m"]\n` });
    const sources: Record<string, string> = {};
    for (const [platform, suffix] of [['linux/amd64', 'amd64'], ['linux/arm64', 'arm64'], ['linux/arm/v7', 'armv7']] as const) {
      const archive = join(home.dir, `pp-${suffix}.tar`);
      expectCode(await aw(['build', '--platform', platform, '--output', `type=oci,dest=${archive}`, ctx]), 0, `build ${platform}`);
      const tag = `${registry.host}/test/combined:1-${suffix}`;
      expectCode(await runCommand('skopeo', ['copy', '--dest-tls-verify=false', `oci-archive:${archive}`, `docker://${tag}`]), 0, `skopeo copy ${suffix}`);
      const digest = expectCode(await runCommand('skopeo', ['inspect', '--tls-verify=false', '--format', '{{.Digest}}', `docker://${tag}`]), 0, 'digest').stdout.trim();
      sources[platform] = digest;
    }
    const target = `${registry.host}/test/combined:1`;
    expectCode(await aw(['index', 'create', '-t', target, ...['amd64', 'arm64', 'armv7'].map((s) => `${registry.host}/test/combined:1-${s}`)]), 0, 'index create');
    const index = JSON.parse(expectCode(await runCommand('skopeo', ['inspect', '--raw', '--tls-verify=false', `docker://${target}`]), 0, 'inspect').stdout) as { manifests: Array<{ digest: string; platform: { os: string; architecture: string; variant?: string } }> };
    const got = Object.fromEntries(index.manifests.map((m) => [formatPlatform(m.platform), m.digest]));
    assert.deepEqual(got, sources);
    const conf = join(home.dir, 'containers-index.conf');
    writeFileSync(conf, '[containers]\ndefault_ulimits = []\n');
    const r = await runCommand('podman', ['run', '--rm', '--tls-verify=false', '--platform', 'linux/arm64', target, 'uname', '-m'], { env: { CONTAINERS_CONF: conf } });
    if (r.code !== 0 && /rlimit|cgroup|OCI runtime|runc/.test(r.stderr)) {
      t.skip(`podman cannot run containers here: ${r.stderr.trim().split('\n').pop()}`);
      return;
    }
    assert.equal(expectCode(r, 0, 'podman run').stdout.trim(), 'aarch64');
  });
});

describe('cross-compiling stages', () => {
  test('a FROM --platform=$BUILDPLATFORM stage runs natively, once per target that needs it', async () => {
    const ctx = write(join(home.dir, 'cross'), {
      Dockerfile: [
        `FROM --platform=$BUILDPLATFORM ${BASE} AS tools`,
        'RUN echo "tools made on $(uname -m)" > /tools.txt',
        `FROM --platform=$BUILDPLATFORM ${BASE} AS build`,
        'ARG TARGETARCH',
        'COPY --from=tools /tools.txt /tools.txt',
        'RUN mkdir -p /out && echo "app for $TARGETARCH built on $(uname -m)" > /out/app.txt',
        `FROM ${BASE}`,
        'COPY --from=build /out/app.txt /app.txt',
        'COPY --from=tools /tools.txt /tools.txt',
        'CMD ["cat", "/app.txt", "/tools.txt"]',
        '',
      ].join('\n'),
    });
    const r = expectCode(await aw(['build', '--progress', 'plain', '--platform', 'linux/arm64,linux/s390x', '-t', 'cross:1', ctx]), 0, 'cross build');
    assert.equal(stepLines(r.stderr, 'DONE').filter((l) => l.includes('tools made')).length, 1, 'the target-independent stage ran more than once');
    assert.equal(stepLines(r.stderr, 'DONE').filter((l) => l.includes('app for')).length, 2);
    for (const [p, arch] of [['linux/arm64', 'arm64'], ['linux/s390x', 's390x']]) {
      const run = expectCode(await aw(['run', '--platform', p as string, 'cross:1']), 0, `run ${p}`);
      assert.equal(run.stdout, `app for ${arch} built on x86_64\ntools made on x86_64\n`);
    }
  });
});

describe('outputs', () => {
  test('oci and docker archives are read by skopeo; local writes each platform root', async () => {
    const ctx = write(join(home.dir, 'out'), { Dockerfile: `FROM ${BASE}\nRUN echo hi > /hi.txt\n` });
    const oci = join(home.dir, 'out.oci.tar');
    expectCode(await aw(['build', '--platform', 'linux/amd64,linux/arm64', '-t', 'out:1', '--output', `type=oci,dest=${oci}`, ctx]), 0, 'oci output');
    const inspectOci = expectCode(await runCommand('skopeo', ['inspect', '--raw', `oci-archive:${oci}`]), 0, 'skopeo inspect oci-archive');
    assert.equal((JSON.parse(inspectOci.stdout) as { manifests: unknown[] }).manifests.length, 2);
    const docker = join(home.dir, 'out.docker.tar');
    expectCode(await aw(['build', '--platform', 'linux/arm64', '-t', 'out:1', '--output', `type=docker,dest=${docker}`, ctx]), 0, 'docker output');
    const inspectDocker = expectCode(await runCommand('skopeo', ['inspect', `docker-archive:${docker}`]), 0, 'skopeo inspect docker-archive');
    assert.equal((JSON.parse(inspectDocker.stdout) as { Architecture: string }).Architecture, 'arm64');
    const local = join(home.dir, 'local');
    expectCode(await aw(['build', '--platform', 'linux/amd64,linux/arm/v7', '--output', `type=local,dest=${local}`, ctx]), 0, 'local output');
    assert.deepEqual(readdirSync(local).sort(), ['linux_amd64', 'linux_arm_v7']);
    assert.equal(readFileSync(join(local, 'linux_arm_v7', 'hi.txt'), 'utf8'), 'hi\n');
    assert.ok(existsSync(join(local, 'linux_amd64', 'bin', 'busybox')));
  });

  test('one platform publishes a plain image manifest; --index forces an index', async () => {
    const ctx = write(join(home.dir, 'single'), { Dockerfile: `FROM ${BASE}\nCMD ["true"]\n` });
    const plain = `${registry.host}/test/single:1`;
    expectCode(await aw(['build', '--platform', 'linux/arm64', '-t', plain, '--push', ctx]), 0, 'single push');
    const raw = JSON.parse(expectCode(await runCommand('skopeo', ['inspect', '--raw', '--tls-verify=false', `docker://${plain}`]), 0, 'inspect').stdout) as { mediaType: string };
    assert.equal(raw.mediaType, 'application/vnd.oci.image.manifest.v1+json');
    const forced = `${registry.host}/test/single:index`;
    expectCode(await aw(['build', '--platform', 'linux/arm64', '--index', '-t', forced, '--push', ctx]), 0, 'single --index');
    const raw2 = JSON.parse(expectCode(await runCommand('skopeo', ['inspect', '--raw', '--tls-verify=false', `docker://${forced}`]), 0, 'inspect').stdout) as { mediaType: string };
    assert.equal(raw2.mediaType, 'application/vnd.oci.image.index.v1+json');
  });
});

describe('RUN as BuildKit runs it', () => {
  test('a heredoc that starts with #! runs as a script, natively and under QEMU', async () => {
    const ctx = write(join(home.dir, 'heredoc-script'), {
      Dockerfile: `FROM ${BASE}\nRUN <<EOF\n#!/bin/sh\nset -e\necho "script on $(uname -m) as $0" > /script.txt\nEOF\nCMD ["cat", "/script.txt"]\n`,
    });
    expectCode(await aw(['build', '--platform', 'linux/amd64,linux/arm64', '-t', 'heredoc-script:1', ctx]), 0, 'build');
    for (const [platform, machine] of [['linux/amd64', 'x86_64'], ['linux/arm64', 'aarch64']] as const) {
      const r = expectCode(await aw(['run', '--platform', platform, 'heredoc-script:1']), 0, `run ${platform}`);
      assert.equal(r.stdout, `script on ${machine} as /dev/pipes/EOF\n`);
    }
  });

  test('the last line of output shows even without a newline, on its own stream', async () => {
    const ctx = write(join(home.dir, 'no-newline'), { Dockerfile: `FROM ${BASE}\nRUN printf 'out-begun '; printf 'err-line\\n' >&2; printf 'out-ended'\n` });
    const r = expectCode(await aw(['build', '--progress', 'plain', '--no-cache', ctx]), 0, 'build');
    assert.match(r.stderr, /^\[linux\/amd64\] out-begun out-ended$/m);
    assert.match(r.stderr, /^\[linux\/amd64\] err-line$/m);
  });

  test("a base image's SHELL runs the shell-form RUN and CMD of an image built on it", async () => {
    // sh -x traces each command it runs on stderr: the trace shows which shell ran it.
    const base = write(join(home.dir, 'shell-base'), { Dockerfile: `FROM ${BASE}\nSHELL ["/bin/sh", "-xc"]\n` });
    expectCode(await aw(['build', '-t', 'shell-base:1', base]), 0, 'build the base');
    const child = write(join(home.dir, 'shell-child'), { Dockerfile: 'FROM shell-base:1\nRUN echo built > /built.txt\nCMD cat /built.txt\n' });
    const r = expectCode(await aw(['build', '--progress', 'plain', '-t', 'shell-child:1', child]), 0, 'build the child');
    assert.match(r.stderr, /\+ echo built/);
    const run = expectCode(await aw(['run', 'shell-child:1']), 0, 'run the child');
    assert.equal(run.stdout, 'built\n');
    assert.match(run.stderr, /\+ cat \/built\.txt/);
  });
});

describe('archway run as docker run', () => {
  test('stdin reaches the command only with -i', async () => {
    const without = expectCode(await aw(['run', BASE, 'cat'], { input: 'typed\n' }), 0, 'run without -i');
    assert.equal(without.stdout, '');
    const withI = expectCode(await aw(['run', '-i', BASE, 'cat'], { input: 'typed\n' }), 0, 'run -i');
    assert.equal(withI.stdout, 'typed\n');
  });

  test('a single-platform image of another platform runs without --platform, with a warning', async () => {
    const ctx = write(join(home.dir, 'arm64-only'), { Dockerfile: `FROM ${BASE}\nLABEL only=arm64\n` });
    expectCode(await aw(['build', '--platform', 'linux/arm64', '-t', 'arm64-only:1', ctx]), 0, 'build a plain arm64 image');
    const r = expectCode(await aw(['run', 'arm64-only:1', 'uname', '-m']), 0, 'run it');
    assert.equal(r.stdout, 'aarch64\n');
    assert.match(r.stderr, /arm64-only:1 is an image for linux\/arm64 only, not this host's linux\/amd64; running it under emulation/);
    const asked = await aw(['run', '--platform', 'linux/amd64', 'arm64-only:1', 'true']);
    assert.equal(asked.code, 2, 'an explicit --platform the image lacks is still an error');
  });
});

describe('bad input', () => {
  test('a syntax error names file:line:col and exits 2', async () => {
    const ctx = write(join(home.dir, 'bad-syntax'), { Dockerfile: `FROM ${BASE}\nCOPPY a /b\n` });
    const r = expectCode(await aw(['build', ctx]), 2, 'syntax error');
    assert.match(r.stderr, /Dockerfile:2:1/);
    assert.match(r.stderr, /did you mean COPY/);
  });

  test('a USER the image does not know fails its RUN with the Dockerfile line', async () => {
    const ctx = write(join(home.dir, 'bad-user'), { Dockerfile: `FROM ${BASE}\nUSER nosuchuser\nRUN id\n` });
    const r = expectCode(await aw(['build', ctx]), 2, 'unknown user');
    assert.match(r.stderr, /Dockerfile:3: RUN id: unable to find user nosuchuser/);
  });

  test('a missing context file is named', async () => {
    const ctx = write(join(home.dir, 'bad-missing'), { Dockerfile: `FROM ${BASE}\nCOPY nothere.txt /x\n` });
    const r = expectCode(await aw(['build', ctx]), 2, 'missing file');
    assert.match(r.stderr, /nothere\.txt/);
  });

  test('an unknown stage is reported with its position', async () => {
    const ctx = write(join(home.dir, 'bad-stage'), { Dockerfile: `FROM ${BASE}\nCOPY --from=nosuch /a /b\n` });
    const r = await aw(['build', '--target', 'nope', ctx]);
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, /nope/);
  });

  test('a base without a target platform stops before any work, listing what it has', async () => {
    const ctx = write(join(home.dir, 'bad-base'), { Dockerfile: `FROM ${BASE}\nRUN echo should-not-run\n` });
    const r = expectCode(await aw(['build', '--progress', 'plain', '--platform', 'linux/amd64,linux/riscv64', ctx]), 2, 'base lacks riscv64');
    assert.match(r.stderr, /linux\/riscv64/);
    assert.match(r.stderr, /linux\/arm64/);
    assert.doesNotMatch(r.stderr, /DONE/);
  });

  test('a failing RUN names the platform, the step, the exit code and the last output; others finish', async () => {
    const ctx = write(join(home.dir, 'bad-run'), {
      Dockerfile: `FROM ${BASE}\nRUN echo "about to fail on $(uname -m)"; if [ "$(uname -m)" = s390x ]; then exit 3; fi\n`,
    });
    const tag = `${registry.host}/test/failing:1`;
    const r = expectCode(await aw(['build', '--progress', 'plain', '--platform', 'linux/amd64,linux/s390x', '-t', tag, '--push', ctx]), 1, 'failing RUN');
    assert.match(r.stderr, /linux\/s390x/);
    assert.match(r.stderr, /exited with code 3/);
    assert.match(r.stderr, /Dockerfile:2/);
    assert.match(r.stderr, /about to fail on s390x/);
    assert.match(r.stderr, /linux\/amd64: ok/);
    const gone = await runCommand('skopeo', ['inspect', '--raw', '--tls-verify=false', `docker://${tag}`]);
    assert.notEqual(gone.code, 0, 'a tag was published for a failed build');
    // --optional-platform lets it fail and publishes the rest, saying so.
    const opt = expectCode(await aw(['build', '--platform', 'linux/amd64,linux/s390x', '--optional-platform', 'linux/s390x', '-t', tag, '--push', ctx]), 0, 'optional platform');
    assert.match(opt.stderr, /without linux\/s390x/);
    const raw = JSON.parse(expectCode(await runCommand('skopeo', ['inspect', '--raw', '--tls-verify=false', `docker://${tag}`]), 0, 'inspect').stdout) as { mediaType: string; architecture?: string };
    assert.equal(raw.mediaType, 'application/vnd.oci.image.manifest.v1+json');
  });

  test('SIGINT during a build exits 130, publishes nothing and leaves no mount', async () => {
    const ctx = write(join(home.dir, 'interrupt'), { Dockerfile: `FROM ${BASE}\nRUN echo started; sleep 30\n` });
    const tag = `${registry.host}/test/interrupted:1`;
    const r = await aw(['build', '--progress', 'plain', '--platform', 'linux/amd64,linux/arm64', '-t', tag, '--push', ctx], {
      onSpawn: (child) => {
        let sent = false;
        child.stderr?.on('data', (d: Buffer) => {
          if (!sent && d.toString().includes('started')) {
            sent = true;
            setTimeout(() => child.kill('SIGINT'), 300);
          }
        });
      },
    });
    assert.equal(r.code, 130, r.stderr);
    const gone = await runCommand('skopeo', ['inspect', '--raw', '--tls-verify=false', `docker://${tag}`]);
    assert.notEqual(gone.code, 0);
    const mounts = readFileSync('/proc/self/mountinfo', 'utf8');
    assert.ok(!mounts.includes(home.dir), 'a mount under the test home was left behind');
    const images = expectCode(await aw(['images', '--format', 'json']), 0, 'images after interrupt');
    assert.ok(!images.stdout.includes('interrupted'));
  });
});

