/**
 * ONBUILD end to end: an image built with ONBUILD triggers, then a second Dockerfile FROM it; the
 * triggers run first in that build, on each platform (arm64 under QEMU), and do not carry over
 * into the new image. A broken trigger is reported with the base image and the trigger.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { archway, buildBusyboxBase, expectCode, runCommand, tempHome, writeFiles } from '../support/cli.js';

const PLATFORMS = 'linux/amd64,linux/arm64';
const BASE = 'archway-test/busybox:onbuild';
const home = tempHome('archway-onbuild-');

const write = writeFiles;

function aw(args: string[]): ReturnType<typeof archway> {
  return archway(args, { env: home.env });
}

before(async () => {
  expectCode(await aw(['binfmt', '--install', 'arm64']), 0, 'binfmt --install arm64');
  await buildBusyboxBase(home.dir, home.env, PLATFORMS, BASE);
});

after(() => home.cleanup());

describe('ONBUILD triggers of a base image', () => {
  test('run first in a build FROM that image, on every platform, and are not inherited', async () => {
    const parent = write(join(home.dir, 'parent'), {
      Dockerfile: [
        `FROM ${BASE}`,
        'RUN echo "parent built" > /parent.txt',
        'ONBUILD ARG TARGETPLATFORM',
        'ONBUILD COPY app.txt /app/app.txt',
        'ONBUILD RUN echo "trigger ran for $TARGETPLATFORM on $(uname -m)" > /app/trigger.txt',
        '',
      ].join('\n'),
    });
    expectCode(await aw(['build', '--platform', PLATFORMS, '-t', 'onbuild-parent:1', parent]), 0, 'build the parent');
    // The parent's own config keeps the triggers: that is what a child build reads.
    const parentOut = join(home.dir, 'parent.oci.tar');
    expectCode(await aw(['build', '--platform', 'linux/arm64', '--output', `type=oci,dest=${parentOut}`, parent]), 0, 'parent as oci');
    const parentConfig = JSON.parse(expectCode(await runCommand('skopeo', ['inspect', '--config', '--raw', `oci-archive:${parentOut}`]), 0, 'skopeo inspect parent').stdout) as { config: { OnBuild?: string[] } };
    assert.deepEqual(parentConfig.config.OnBuild, ['ARG TARGETPLATFORM', 'COPY app.txt /app/app.txt', 'RUN echo "trigger ran for $TARGETPLATFORM on $(uname -m)" > /app/trigger.txt']);

    const child = write(join(home.dir, 'child'), {
      Dockerfile: 'FROM onbuild-parent:1\nRUN cat /app/trigger.txt > /child-saw.txt\nCMD ["cat", "/parent.txt", "/app/app.txt", "/app/trigger.txt", "/child-saw.txt"]\n',
      'app.txt': 'the child context\n',
    });
    const r = expectCode(await aw(['build', '--progress', 'plain', '--platform', PLATFORMS, '-t', 'onbuild-child:1', child]), 0, 'build the child');
    assert.equal(r.stderr.split('\n').filter((l) => /DONE .*ONBUILD RUN echo "trigger ran/.test(l)).length, 2, r.stderr);
    for (const [platform, machine] of [['linux/amd64', 'x86_64'], ['linux/arm64', 'aarch64']] as const) {
      const run = expectCode(await aw(['run', '--platform', platform, 'onbuild-child:1']), 0, `run ${platform}`);
      const line = `trigger ran for ${platform} on ${machine}\n`;
      assert.equal(run.stdout, `parent built\nthe child context\n${line}${line}`);
    }
    // The triggers ran here; the child image does not carry them to its own children.
    const childOut = join(home.dir, 'child.oci.tar');
    expectCode(await aw(['build', '--platform', 'linux/arm64', '--output', `type=oci,dest=${childOut}`, child]), 0, 'child as oci');
    const childConfig = JSON.parse(expectCode(await runCommand('skopeo', ['inspect', '--config', '--raw', `oci-archive:${childOut}`]), 0, 'skopeo inspect child').stdout) as { config: { OnBuild?: string[] | null } };
    assert.ok(!childConfig.config.OnBuild || childConfig.config.OnBuild.length === 0, `OnBuild carried over: ${JSON.stringify(childConfig.config.OnBuild)}`);
  });

  test('a trigger that fails names the base image and the trigger', async () => {
    const parent = write(join(home.dir, 'bad-parent'), { Dockerfile: `FROM ${BASE}\nONBUILD COPY needed.txt /needed.txt\n` });
    expectCode(await aw(['build', '--platform', PLATFORMS, '-t', 'onbuild-bad:1', parent]), 0, 'build the parent');
    const child = write(join(home.dir, 'bad-child'), { Dockerfile: '\nFROM onbuild-bad:1\nRUN true\n' });
    const r = expectCode(await aw(['build', '--platform', 'linux/amd64', child]), 2, 'missing file for a trigger');
    assert.match(r.stderr, /needed\.txt/);
    assert.match(r.stderr, /ONBUILD/);
    assert.match(r.stderr, /base image onbuild-bad:1/);
    assert.match(r.stderr, /Dockerfile:2/);

    const parent2 = write(join(home.dir, 'bad-parent2'), { Dockerfile: `FROM ${BASE}\nONBUILD RUNN make\n` });
    const p2 = expectCode(await aw(['build', parent2]), 2, 'a misspelt trigger is refused when it is written');
    assert.match(p2.stderr, /RUNN/);
  });

  test("a base's ENV is seen by the Dockerfile built on it (ENV X=$FOO), and only then does planning read it", async () => {
    const parent = write(join(home.dir, 'env-parent'), { Dockerfile: `FROM ${BASE}\nENV FOO=from-base\n` });
    expectCode(await aw(['build', '--platform', 'linux/amd64', '-t', 'env-parent:1', parent]), 0, 'build the parent');
    const child = write(join(home.dir, 'env-child'), { Dockerfile: 'FROM env-parent:1\nENV X=$FOO-x\nRUN echo "$X ${UNSET:-none}" > /x.txt\n' });
    expectCode(await aw(['build', '--platform', 'linux/amd64', '-t', 'env-child:1', child]), 0, 'build the child');
    const r = expectCode(await aw(['run', 'env-child:1', 'sh', '-c', 'echo $X; cat /x.txt']), 0, 'run the child');
    assert.equal(r.stdout, 'from-base-x\nfrom-base-x none\n');
  });
});
