import { test } from 'node:test';
import assert from 'node:assert/strict';
import { formatPlatform, parsePlatform, parsePlatformList } from '../oci/index.js';
import { expandTemplate, fromArgs, parseSpec } from './spec.js';
import { mirrorTargetName, parseImageList } from './mirror.js';
import { inspect, formatInspectText, platformLines } from './inspect.js';
import { MemoryTarget } from './memory.js';
import { pushBuildxIndex, pushImage } from './fixtures.test-support.js';

test('manifest-tool spec: targets with extra tags, platforms with variants', () => {
  const r = parseSpec(`image: reg:5000/app:1.0\ntags: ['1', latest]\nmanifests:\n  - image: reg:5000/app:1.0-amd64\n    platform: {architecture: amd64, os: linux}\n  - image: reg:5000/app:1.0-armv7\n    platform: {architecture: arm, os: linux, variant: v7}\n`, 'spec.yaml');
  assert.deepEqual(r.targets, ['reg:5000/app:1.0', 'reg:5000/app:1', 'reg:5000/app:latest']);
  assert.deepEqual(r.sources.map((s) => s.image), ['reg:5000/app:1.0-amd64', 'reg:5000/app:1.0-armv7']);
  assert.equal(formatPlatform(r.sources[1]!.platform!), 'linux/arm/v7');
  assert.throws(() => parseSpec('image: x\n', 'f.yaml'), /f.yaml: "manifests"/);
  assert.throws(() => parseSpec('manifests: []', 'f.yaml'), /"image"/);
});

test('from-args templates: OS, ARCH, [-VARIANT]', () => {
  assert.equal(expandTemplate('app:v1-OS-ARCH[-VARIANT]', parsePlatform('linux/amd64')), 'app:v1-linux-amd64');
  assert.equal(expandTemplate('app:v1-OS-ARCH[-VARIANT]', parsePlatform('linux/arm/v7')), 'app:v1-linux-arm-v7');
  assert.equal(expandTemplate('app:ARCHVARIANT', parsePlatform('linux/arm/v6')), 'app:armv6');
  const r = fromArgs(parsePlatformList('linux/amd64,linux/arm64'), 'app:OS-ARCH', 'app:v1');
  assert.deepEqual(r.sources.map((s) => s.image), ['app:linux-amd64', 'app:linux-arm64']);
  assert.throws(() => fromArgs(parsePlatformList('linux/amd64'), 'app:v1', 'app:v1'), /neither OS nor ARCH/);
});

test('mirror naming keeps the repository path under the prefix', () => {
  assert.equal(mirrorTargetName('docker.io/library/golang:1.17', 'localhost:5000/mirror'), 'localhost:5000/mirror/library/golang:1.17');
  assert.equal(mirrorTargetName('golang', 'localhost:5000/'), 'localhost:5000/library/golang:latest');
  assert.equal(mirrorTargetName('quay.io/team/app@sha256:' + 'a'.repeat(64), 'reg.example.com/m'), 'reg.example.com/m/team/app@sha256:' + 'a'.repeat(64));
  assert.deepEqual(parseImageList('# images\nalpine:3.19\n\n  busybox # comment\n'), ['alpine:3.19', 'busybox']);
  // Images of the local store keep their repository too; a layout has none to keep.
  assert.equal(mirrorTargetName('store:par:t1', 'localhost:5000/ms'), 'localhost:5000/ms/library/par:t1');
  assert.equal(mirrorTargetName('docker://quay.io/team/app:2', 'localhost:5000/ms'), 'localhost:5000/ms/team/app:2');
  assert.throws(() => mirrorTargetName('oci:./layout:1', 'localhost:5000/ms'), /oci location has no repository name/);
});

test('inspect: platforms with attestations under their subject; --platform shows the image', async () => {
  const t = new MemoryTarget('reg/app');
  const x = await pushBuildxIndex(t, ['linux/amd64', 'linux/arm/v7'], 'v1');
  const r = await inspect(t, 'v1');
  assert.deepEqual(r.manifests!.map((m) => m.platform), ['linux/amd64', 'linux/arm/v7']);
  assert.equal(r.manifests![0]!.attestations[0]!.digest, x.attestations[0]!.digest);
  assert.equal(r.others, undefined);
  assert.equal(platformLines(r), 'linux/amd64\nlinux/arm/v7\n');
  const text = formatInspectText(r);
  assert.match(text, /MediaType: application\/vnd.oci.image.index.v1\+json/);
  assert.match(text, /Attestation: sha256:/);
  assert.doesNotMatch(text, /unknown\/unknown/);
  const p = await inspect(t, 'v1', { platform: parsePlatform('armhf') });
  assert.equal(p.image!.platform, 'linux/arm/v7');
  assert.deepEqual(p.image!.cmd, ['-c', 'echo hi']);
  assert.equal(p.image!.layers.length, 1);
  await pushImage(t, 'linux/arm64', { tag: 'single' });
  const s = await inspect(t, 'single');
  assert.equal(s.image!.architecture, 'arm64');
  assert.deepEqual(s.image!.entrypoint, ['/bin/sh']);
  await assert.rejects(inspect(t, 'single', { platform: parsePlatform('linux/amd64') }), /single-platform image for linux\/arm64/);
});

test("inspect names each manifest after the location inspected, without its tag", async () => {
  const t = new MemoryTarget('reg/app');
  await pushBuildxIndex(t, ['linux/amd64'], 'v1');
  const r = await inspect(t, 'v1');
  const names = (name: string): string[] => [...formatInspectText({ ...r, name }).matchAll(/^ {2}Name: +(\S+)@sha256:/gm)].map((m) => m[1] as string);
  assert.deepEqual(names('store:hello'), ['store:hello']);
  assert.deepEqual(names('store:team/app:1'), ['store:team/app']);
  assert.deepEqual(names('oci:./out:v1'), ['oci:./out']);
  assert.deepEqual(names('localhost:5000/app:1'), ['localhost:5000/app']);
  assert.deepEqual(names('docker.io/library/alpine:3.19'), ['docker.io/library/alpine']);
});

test('inspect shows the whole run configuration an image sets: ports, volumes, stop signal, shell, healthcheck, triggers', async () => {
  const t = new MemoryTarget('reg/app');
  await pushImage(t, 'linux/amd64', {
    tag: 'full',
    config: {
      ExposedPorts: { '8080/tcp': {}, '53/udp': {} },
      Volumes: { '/data': {} },
      StopSignal: 'SIGQUIT',
      Shell: ['/bin/bash', '-c'],
      Healthcheck: { Test: ['CMD', 'curl', '-f', 'http://localhost/'], Interval: 30e9, Retries: 3 },
      OnBuild: ['COPY . /app'],
    },
  });
  const text = formatInspectText(await inspect(t, 'full'));
  assert.match(text, /Ports: {8}8080\/tcp, 53\/udp/);
  assert.match(text, /Volumes: {6}\/data/);
  assert.match(text, /StopSignal: {3}SIGQUIT/);
  assert.match(text, /Shell: {8}\["\/bin\/bash","-c"\]/);
  assert.match(text, /Healthcheck: {2}\["CMD","curl","-f","http:\/\/localhost\/"\] \(interval 30s, retries 3\)/);
  assert.match(text, /OnBuild:\n {4}COPY \. \/app/);
  // An image without them shows none of these lines.
  await pushImage(t, 'linux/arm64', { tag: 'plain' });
  assert.doesNotMatch(formatInspectText(await inspect(t, 'plain')), /Ports:|Volumes:|Healthcheck:/);
});
