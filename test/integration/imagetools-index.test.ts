/**
 * imagetools against a real registry (docker-registry on loopback), with skopeo as the judge:
 * index create from per-platform tags, merges with attestations, append/remove, Docker and OCI
 * outputs, copy (byte-identical, platform subsets), and bad input that must push nothing.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { descriptorFor, encodeJson, MediaType, parsePlatform, formatPlatform, type Descriptor } from '../../src/oci/index.js';
import { buildImage, buildIndex, emptyConfig, type ManifestFormat } from '../../src/image/index.js';
import { OciLayout } from '../../src/store/index.js';
import { nullProgress } from '../../src/progress/index.js';
import { ArchwayError } from '../../src/util/index.js';
import { parseCommandArgs, type Command, type CommandContext } from '../../src/cli/command.js';
import { makeProgress } from '../../src/cli/render.js';
import { indexCommand } from '../../src/cli/commands/index-command.js';
import { copyCommand } from '../../src/cli/commands/copy.js';
import { inspectCommand } from '../../src/cli/commands/inspect.js';
import { mirrorCommand } from '../../src/cli/commands/mirror.js';
import { freePort, startRegistry, type TestRegistry } from '../support/registries.js';

// Started at the top level, so that the support module's `after` hook belongs to the file, not to a hook.
const work: string = mkdtempSync(join(tmpdir(), 'archway-imagetools-'));
const reg: TestRegistry = await startRegistry({ kind: 'anonymous' });

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

/**
 * Runs one of our commands in process, as main() would (exit code from the error's code).
 * `progress: 'plain'` renders progress to stderr as `--progress plain` does, so stderr is what a user sees.
 */
async function run(cmd: Command, argv: string[], opts: { progress?: 'plain' } = {}): Promise<Run> {
  let c = cmd;
  let rest = argv;
  while (c.subcommands && rest[0]) {
    const sub = c.subcommands.find((s) => s.name === rest[0]);
    assert.ok(sub, `no subcommand ${rest[0]}`);
    c = sub;
    rest = rest.slice(1);
  }
  let stdout = '';
  let stderr = '';
  const out = { write: (s: string | Buffer) => ((stdout += s.toString()), true) } as unknown as CommandContext['stdout'];
  const err = { write: (s: string | Buffer) => ((stderr += s.toString()), true) } as unknown as CommandContext['stderr'];
  try {
    const { values, positionals } = parseCommandArgs(c, rest, `archway ${cmd.name}`);
    const ctx: CommandContext = { values, positionals, stdout: out, stderr: err, stdin: process.stdin, env: { ...process.env, ARCHWAY_HOME: join(work, 'home'), DOCKER_CONFIG: join(work, 'docker') }, signal: new AbortController().signal, progress: opts.progress ? makeProgress(opts.progress, err as unknown as NodeJS.WritableStream) : nullProgress, debug: false };
    const code = await (c.run as NonNullable<Command['run']>)(ctx);
    return { code, stdout, stderr };
  } catch (e) {
    if (e instanceof ArchwayError) return { code: e.exitCode, stdout, stderr: `${stderr}${e.message}\n${e.hint ?? ''}` };
    throw e;
  }
}

function skopeo(args: string[]): { code: number; stdout: string; stderr: string } {
  const r = spawnSync('skopeo', ['--insecure-policy', ...args], { encoding: 'utf8', timeout: 120_000 });
  return { code: r.status ?? 1, stdout: r.stdout, stderr: r.stderr };
}

function rawManifest(ref: string): { mediaType?: string; manifests?: Descriptor[] } & Record<string, unknown> {
  const r = skopeo(['inspect', '--raw', '--tls-verify=false', `docker://${ref}`]);
  assert.equal(r.code, 0, r.stderr);
  return JSON.parse(r.stdout) as { mediaType?: string; manifests?: Descriptor[] };
}

function rawBytes(ref: string): string {
  const r = skopeo(['inspect', '--raw', '--tls-verify=false', `docker://${ref}`]);
  assert.equal(r.code, 0, r.stderr);
  return r.stdout;
}

async function tagExists(repo: string, tag: string): Promise<boolean> {
  const res = await fetch(`${reg.url}/v2/${repo}/manifests/${tag}`, { method: 'HEAD', headers: { accept: [MediaType.OciIndex, MediaType.DockerManifestList, MediaType.OciManifest, MediaType.DockerManifest].join(', ') } });
  return res.status === 200;
}

function platformsOf(idx: { manifests?: Descriptor[] }): string[] {
  return (idx.manifests ?? []).filter((d) => d.annotations?.['vnd.docker.reference.type'] !== 'attestation-manifest').map((d) => formatPlatform(d.platform!));
}

/** A layer that is a real gzip'd tar with one file naming the platform. */
function tarLayer(platform: string, salt: string): Buffer {
  const dir = mkdtempSync(join(work, 'layer-'));
  writeFileSync(join(dir, 'platform.txt'), `${platform} ${salt}\n`);
  const r = spawnSync('tar', ['-C', dir, '-czf', '-', '--owner=0', '--group=0', '--mtime=@0', 'platform.txt'], { maxBuffer: 1 << 20 });
  assert.equal(r.status, 0);
  return r.stdout;
}

function diffIdOf(gz: Buffer): Descriptor['digest'] {
  const r = spawnSync('sh', ['-c', 'gzip -dc | sha256sum'], { input: gz });
  return `sha256:${r.stdout.toString().split(' ')[0]}` as Descriptor['digest'];
}

/** Writes a one-layer image into an OCI layout and returns its manifest descriptor. */
async function writeImage(layout: OciLayout, platform: string, opts: { format?: ManifestFormat; salt?: string } = {}): Promise<Descriptor> {
  const format = opts.format ?? 'oci';
  const layer = tarLayer(platform, opts.salt ?? '');
  const layerDesc = descriptorFor(layer, format === 'docker' ? MediaType.DockerLayerGzip : MediaType.OciLayerGzip);
  const cfg = emptyConfig(parsePlatform(platform));
  cfg.config = { ...cfg.config, Cmd: ['cat', '/platform.txt'] };
  const built = buildImage(cfg, [{ descriptor: layerDesc, diffID: diffIdOf(layer) }], { format });
  await layout.push(layerDesc, layer);
  await layout.push(built.configDescriptor, built.config);
  await layout.push(built.manifestDescriptor, built.manifest);
  return built.manifestDescriptor;
}

/** Pushes one image for a platform to the registry with skopeo; returns its digest. */
async function pushSingle(platform: string, ref: string, opts: { format?: ManifestFormat; salt?: string } = {}): Promise<string> {
  const dir = mkdtempSync(join(work, 'oci-'));
  const layout = await OciLayout.open(dir, { create: true });
  const d = await writeImage(layout, platform, { ...(opts.salt ? { salt: opts.salt } : {}) });
  await layout.tag(d, 'v');
  // skopeo's oci: transport finds OCI media types only; it converts to Docker's itself.
  const docker = opts.format === 'docker';
  const r = skopeo(['copy', '--dest-tls-verify=false', ...(docker ? ['--format', 'v2s2'] : ['--preserve-digests']), `oci:${dir}:v`, `docker://${reg.host}/${ref}`]);
  assert.equal(r.code, 0, r.stderr);
  if (!docker) return d.digest;
  const dg = skopeo(['inspect', '--tls-verify=false', '--format', '{{.Digest}}', `docker://${reg.host}/${ref}`]);
  return dg.stdout.trim();
}

/** Writes a BuildKit-style provenance attestation manifest for `img` into a layout; returns its index entry. */
async function writeAttestation(layout: OciLayout, img: Descriptor, ref: string, salt: string): Promise<Descriptor> {
  const statement = encodeJson({ _type: 'https://in-toto.io/Statement/v0.1', predicateType: 'https://slsa.dev/provenance/v0.2', subject: [{ name: ref, digest: { sha256: img.digest.slice(7) } }], predicate: { salt } });
  const layerDesc = descriptorFor(statement, MediaType.InTotoJson, { annotations: { 'in-toto.io/predicate-type': 'https://slsa.dev/provenance/v0.2' } });
  const config = encodeJson({ architecture: 'unknown', os: 'unknown', config: {}, rootfs: { type: 'layers', diff_ids: [descriptorFor(statement, 'x').digest] } });
  const configDesc = descriptorFor(config, MediaType.OciConfig);
  const manifest = encodeJson({ schemaVersion: 2, mediaType: MediaType.OciManifest, config: configDesc, layers: [layerDesc] });
  const md = descriptorFor(manifest, MediaType.OciManifest);
  await layout.push(layerDesc, statement);
  await layout.push(configDesc, config);
  await layout.push(md, manifest);
  return { ...md, platform: { os: 'unknown', architecture: 'unknown' }, annotations: { 'vnd.docker.reference.type': 'attestation-manifest', 'vnd.docker.reference.digest': img.digest } };
}

/**
 * Writes an OCI index over `manifests` into the layout and pushes it (and all under it) to `ref`
 * unchanged. `indent` writes it as buildx does (indented JSON), which archway never would.
 */
async function pushLayoutIndex(dir: string, layout: OciLayout, manifests: Descriptor[], ref: string, opts: { annotations?: Record<string, string>; indent?: boolean } = {}): Promise<Descriptor> {
  const value = { schemaVersion: 2, mediaType: MediaType.OciIndex, manifests, ...(opts.annotations ? { annotations: opts.annotations } : {}) };
  const raw = opts.indent ? Buffer.from(JSON.stringify(value, null, 2)) : encodeJson(value);
  const d = descriptorFor(raw, MediaType.OciIndex);
  await layout.push(d, raw);
  const tag = `t${createHash('sha256').update(ref).digest('hex').slice(0, 8)}`;
  await layout.tag(d, tag);
  const r = skopeo(['copy', '--all', '--dest-tls-verify=false', '--preserve-digests', `oci:${dir}:${tag}`, `docker://${reg.host}/${ref}`]);
  assert.equal(r.code, 0, r.stderr);
  return d;
}

/** Pushes one image of a layout to `ref` unchanged. */
async function pushLayoutImage(dir: string, layout: OciLayout, img: Descriptor, ref: string): Promise<void> {
  const tag = `t${createHash('sha256').update(ref).digest('hex').slice(0, 8)}`;
  await layout.tag(img, tag);
  const r = skopeo(['copy', '--dest-tls-verify=false', '--preserve-digests', `oci:${dir}:${tag}`, `docker://${reg.host}/${ref}`]);
  assert.equal(r.code, 0, r.stderr);
}

/** Pushes an index laid out as buildx writes one (images, then provenance attestations). */
async function pushBuildx(platforms: string[], ref: string, salt: string): Promise<{ index: string; images: string[] }> {
  const dir = mkdtempSync(join(work, 'oci-'));
  const layout = await OciLayout.open(dir, { create: true });
  const images: Descriptor[] = [];
  for (const p of platforms) images.push(await writeImage(layout, p, { salt }));
  const atts: Descriptor[] = [];
  for (const img of images) atts.push(await writeAttestation(layout, img, ref, salt));
  const idx = buildIndex([...images, ...atts], { format: 'oci' });
  await layout.push(idx.descriptor, idx.raw);
  await layout.tag(idx.descriptor, 'v');
  const r = skopeo(['copy', '--all', '--dest-tls-verify=false', '--preserve-digests', `oci:${dir}:v`, `docker://${reg.host}/${ref}`]);
  assert.equal(r.code, 0, r.stderr);
  return { index: idx.descriptor.digest, images: images.map((d) => d.digest) };
}

const digests: Record<string, string> = {};

before(async () => {
  mkdirSync(join(work, 'home'));
  digests.amd64 = await pushSingle('linux/amd64', 'app:1-amd64');
  digests.arm64 = await pushSingle('linux/arm64', 'app:1-arm64');
  digests.armv7 = await pushSingle('linux/arm/v7', 'app:1-armv7');
});

after(async () => {
  await reg.stop();
  rmSync(work, { recursive: true, force: true });
});

test('index create from three per-platform tags: skopeo sees exactly those platforms and digests', async () => {
  const h = reg.host;
  const r = await run(indexCommand, ['create', '-t', `${h}/app:1`, `${h}/app:1-amd64`, `${h}/app:1-arm64`, '--platform-for', `${h}/app:1-armv7=linux/arm/v7`]);
  assert.equal(r.code, 0, r.stderr);
  const idx = rawManifest(`${h}/app:1`);
  assert.equal(idx.mediaType, MediaType.OciIndex);
  assert.deepEqual(platformsOf(idx), ['linux/amd64', 'linux/arm64', 'linux/arm/v7']);
  assert.deepEqual(idx.manifests!.map((d) => d.digest), [digests.amd64, digests.arm64, digests.armv7]);
  const out = skopeo(['copy', '--all', '--src-tls-verify=false', `docker://${h}/app:1`, `oci:${join(work, 'judge-1')}:x`]);
  assert.equal(out.code, 0, out.stderr);
  const plats = await run(indexCommand, ['inspect', '--platforms', `${h}/app:1`]);
  assert.equal(plats.stdout, 'linux/amd64\nlinux/arm64\nlinux/arm/v7\n');
});

test('Docker manifests make a Docker manifest list; --format oci an OCI index', async () => {
  const h = reg.host;
  await pushSingle('linux/amd64', 'dock:amd64', { format: 'docker' });
  await pushSingle('linux/arm64', 'dock:arm64', { format: 'docker' });
  let r = await run(indexCommand, ['create', '-t', `${h}/dock:list`, `${h}/dock:amd64`, `${h}/dock:arm64`]);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(rawManifest(`${h}/dock:list`).mediaType, MediaType.DockerManifestList);
  r = await run(indexCommand, ['create', '--format', 'oci', '-t', `${h}/dock:oci`, `${h}/dock:amd64`, `${h}/dock:arm64`]);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(rawManifest(`${h}/dock:oci`).mediaType, MediaType.OciIndex);
});

test('merging buildx indexes keeps attestations with their images, or drops them; sources from another repository are copied', async () => {
  const h = reg.host;
  const a = await pushBuildx(['linux/amd64', 'linux/arm64'], 'bx-a:v1', 'a');
  const b = await pushBuildx(['linux/ppc64le'], 'bx-b:v1', 'b');
  let r = await run(indexCommand, ['create', '-t', `${h}/merged:v1`, `${h}/bx-a:v1`, `${h}/bx-b:v1`]);
  assert.equal(r.code, 0, r.stderr);
  let idx = rawManifest(`${h}/merged:v1`);
  assert.deepEqual(platformsOf(idx), ['linux/amd64', 'linux/arm64', 'linux/ppc64le']);
  const atts = idx.manifests!.filter((d) => d.annotations?.['vnd.docker.reference.type'] === 'attestation-manifest');
  assert.deepEqual(atts.map((d) => d.annotations!['vnd.docker.reference.digest']).sort(), [...a.images, ...b.images].sort());
  const judge = skopeo(['copy', '--all', '--src-tls-verify=false', `docker://${h}/merged:v1`, `oci:${join(work, 'judge-merged')}:x`]);
  assert.equal(judge.code, 0, judge.stderr);
  r = await run(indexCommand, ['create', '--no-attestations', '-t', `${h}/merged:noatt`, `${h}/bx-a:v1`, `${h}/bx-b:v1`]);
  assert.equal(r.code, 0, r.stderr);
  idx = rawManifest(`${h}/merged:noatt`);
  assert.equal(idx.manifests!.length, 3);
  // inspect shows attestations under their subject, not as platforms.
  const ins = await run(inspectCommand, ['--format', 'json', `${h}/merged:v1`]);
  const j = JSON.parse(ins.stdout) as { manifests: Array<{ platform: string; attestations: unknown[] }> };
  assert.deepEqual(j.manifests.map((m) => m.platform), ['linux/amd64', 'linux/arm64', 'linux/ppc64le']);
  assert.ok(j.manifests.every((m) => m.attestations.length === 1));
});

test('--append replaces and adds, --remove takes out; --dry-run pushes nothing', async () => {
  const h = reg.host;
  let r = await run(indexCommand, ['create', '-t', `${h}/app:2`, `${h}/app:1-amd64`, `${h}/app:1-arm64`]);
  assert.equal(r.code, 0, r.stderr);
  const s390 = await pushSingle('linux/s390x', 'app:1-s390x');
  const arm2 = await pushSingle('linux/arm64', 'app:2-arm64', { salt: 'two' });
  r = await run(indexCommand, ['create', '--append', '-t', `${h}/app:2`, `${h}/app:1-s390x`, `${h}/app:2-arm64`]);
  assert.equal(r.code, 0, r.stderr);
  let idx = rawManifest(`${h}/app:2`);
  assert.deepEqual(platformsOf(idx), ['linux/amd64', 'linux/arm64', 'linux/s390x']);
  assert.equal(idx.manifests![1]!.digest, arm2);
  assert.equal(idx.manifests![2]!.digest, s390);
  r = await run(indexCommand, ['create', '--append', '-t', `${h}/app:2`, '--remove', 'linux/amd64']);
  assert.equal(r.code, 0, r.stderr);
  idx = rawManifest(`${h}/app:2`);
  assert.deepEqual(platformsOf(idx), ['linux/arm64', 'linux/s390x']);
  r = await run(indexCommand, ['create', '--dry-run', '-t', `${h}/app:dry`, `${h}/app:1-amd64`, '--annotation', 'index:org.opencontainers.image.source=https://example.com']);
  assert.equal(r.code, 0, r.stderr);
  assert.equal((JSON.parse(r.stdout) as { annotations: Record<string, string> }).annotations['org.opencontainers.image.source'], 'https://example.com');
  assert.equal(await tagExists('app', 'dry'), false);
});

test('from-spec and from-args (manifest-tool formats)', async () => {
  const h = reg.host;
  const spec = join(work, 'spec.yaml');
  writeFileSync(spec, `image: ${h}/spec:1.0\ntags: ['1', 'latest']\nmanifests:\n  - image: ${h}/app:1-amd64\n    platform:\n      architecture: amd64\n      os: linux\n  - image: ${h}/app:1-armv7\n    platform:\n      architecture: arm\n      os: linux\n      variant: v7\n`);
  let r = await run(indexCommand, ['create', '--from-spec', spec]);
  assert.equal(r.code, 0, r.stderr);
  for (const t of ['1.0', '1', 'latest']) assert.deepEqual(platformsOf(rawManifest(`${h}/spec:${t}`)), ['linux/amd64', 'linux/arm/v7']);
  await pushSingle('linux/amd64', 'tpl:v1-linux-amd64');
  await pushSingle('linux/arm/v7', 'tpl:v1-linux-arm-v7');
  r = await run(indexCommand, ['create', '--from-args', '--platforms', 'linux/amd64,linux/arm/v7', '--template', `${h}/tpl:v1-OS-ARCH[-VARIANT]`, '--target', `${h}/tpl:v1`]);
  assert.equal(r.code, 0, r.stderr);
  assert.deepEqual(platformsOf(rawManifest(`${h}/tpl:v1`)), ['linux/amd64', 'linux/arm/v7']);
});

test('bad input: a clear error each, exit code, and no tag at TARGET', async () => {
  const h = reg.host;
  const cases: Array<{ args: string[]; code: number; message: RegExp; tag: string }> = [
    { args: ['-t', `${h}/bad:missing`, `${h}/app:1-amd64`, `${h}/app:nope`], code: 2, message: /app:nope/, tag: 'missing' },
    { args: ['-t', `${h}/bad:dup`, `${h}/app:1-arm64`, `${h}/app:2-arm64`], code: 2, message: /two sources for linux\/arm64: .*app:1-arm64.* and .*app:2-arm64/, tag: 'dup' },
    { args: ['-t', `${h}/bad:mismatch`, '--platform-for', `${h}/app:1-arm64=linux/amd64`], code: 2, message: /app:1-arm64 says linux\/arm64 but was given linux\/amd64/, tag: 'mismatch' },
  ];
  for (const c of cases) {
    const r = await run(indexCommand, ['create', ...c.args]);
    assert.equal(r.code, c.code, `${c.args.join(' ')}: ${r.stderr}`);
    assert.match(r.stderr, c.message);
    assert.equal(await tagExists('bad', c.tag), false, `tag ${c.tag} must not exist`);
  }
  // An unreachable registry (a closed port).
  const port = await freePort();
  const r = await run(indexCommand, ['create', '-t', `${h}/bad:unreachable`, `${h}/app:1-amd64`, `127.0.0.1:${port}/app:1-arm64`]);
  assert.equal(r.code, 3, r.stderr);
  assert.match(r.stderr, new RegExp(`127.0.0.1:${port}`));
  assert.equal(await tagExists('bad', 'unreachable'), false);
  // Schema 1 through an OCI layout (distribution refuses schema 1 pushes).
  const dir = mkdtempSync(join(work, 'oci-s1-'));
  const layout = await OciLayout.open(dir, { create: true });
  const raw = Buffer.from(JSON.stringify({ schemaVersion: 1, name: 'old', tag: 'v1', architecture: 'amd64', fsLayers: [], history: [] }));
  const d = descriptorFor(raw, MediaType.DockerSchema1SignedManifest);
  await layout.push(d, raw);
  await layout.tag(d, 'old');
  const s1 = await run(indexCommand, ['create', '-t', `${h}/bad:schema1`, `oci:${dir}:old`]);
  assert.equal(s1.code, 5, s1.stderr);
  assert.match(s1.stderr, /schema 1/);
  assert.equal(await tagExists('bad', 'schema1'), false);
});

test('copy keeps digests byte for byte; --platform writes a subset index; skopeo copies the result', async () => {
  const h = reg.host;
  let r = await run(copyCommand, [`${h}/app:1`, `${h}/copied/app:1`]);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(rawBytes(`${h}/copied/app:1`), rawBytes(`${h}/app:1`));
  const out = skopeo(['copy', '--all', '--src-tls-verify=false', `docker://${h}/copied/app:1`, `oci:${join(work, 'judge-copy')}:x`]);
  assert.equal(out.code, 0, out.stderr);
  r = await run(copyCommand, ['--platform', 'linux/arm64,linux/arm/v7', `${h}/app:1`, `${h}/subset/app:1`]);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /rewritten/);
  const idx = rawManifest(`${h}/subset/app:1`);
  assert.deepEqual(platformsOf(idx), ['linux/arm64', 'linux/arm/v7']);
  assert.deepEqual(idx.manifests!.map((d) => d.digest), [digests.arm64, digests.armv7]);
  // To an OCI layout and back.
  r = await run(copyCommand, [`${h}/merged:v1`, `oci:${join(work, 'layout-out')}:m`]);
  assert.equal(r.code, 0, r.stderr);
  const sk = skopeo(['inspect', '--raw', `oci:${join(work, 'layout-out')}:m`]);
  assert.equal(sk.code, 0, sk.stderr);
  assert.equal(sk.stdout, rawBytes(`${h}/merged:v1`));
  // --format docker: converted, said so.
  r = await run(copyCommand, ['--format', 'docker', `${h}/app:1`, `${h}/docker/app:1`]);
  assert.equal(r.code, 0, r.stderr);
  const dl = rawManifest(`${h}/docker/app:1`);
  assert.equal(dl.mediaType, MediaType.DockerManifestList);
  assert.equal(skopeo(['copy', '--all', '--src-tls-verify=false', `docker://${h}/docker/app:1`, `oci:${join(work, 'judge-docker')}:x`]).code, 0);
});

test('mirror copies several images under a prefix and reports each', async () => {
  const h = reg.host;
  const r = await run(mirrorCommand, ['--to', `${h}/mirror`, '--json', `${h}/app:1`, `${h}/bx-a:v1`]);
  assert.equal(r.code, 0, r.stderr);
  const items = JSON.parse(r.stdout) as Array<{ target: string; digest: string; platforms: string[] }>;
  assert.equal(items[0]!.target, `${h}/mirror/app:1`);
  assert.deepEqual(items[0]!.platforms, ['linux/amd64', 'linux/arm64', 'linux/arm/v7']);
  assert.equal(rawBytes(`${h}/mirror/app:1`), rawBytes(`${h}/app:1`));
  assert.equal(items[1]!.target, `${h}/mirror/bx-a:v1`);
});

test('copy checks every name before it writes anything: a bad -t or layout name leaves no tag', async () => {
  const h = reg.host;
  let r = await run(copyCommand, ['-t', 'bad tag', `${h}/app:1`, `${h}/fresh/t:1`]);
  assert.equal(r.code, 2, r.stderr);
  assert.match(r.stderr, /"bad tag" is not a valid tag/);
  assert.equal(await tagExists('fresh/t', '1'), false, 'the main tag was written before the bad -t was noticed');
  r = await run(copyCommand, [`${h}/app:1`, `oci:${join(work, 'bad-name')}:bad tag`]);
  assert.equal(r.code, 2, r.stderr);
  assert.match(r.stderr, /"bad tag" is not a valid name in an OCI layout/);
});

test('inspect of a name the registry cannot serve points at the local store when it has that name', async () => {
  const h = reg.host;
  // Nothing listens on port 1: the registry half fails at once.
  let r = await run(copyCommand, [`${h}/app:1`, 'store:127.0.0.1:1/app:1']);
  assert.equal(r.code, 0, r.stderr);
  r = await run(inspectCommand, ['127.0.0.1:1/app:1']);
  assert.equal(r.code, 3, r.stderr);
  assert.match(r.stderr, /the local store has 127\.0\.0\.1:1\/app:1: archway inspect store:127\.0\.0\.1:1\/app:1/);
  r = await run(inspectCommand, ['127.0.0.1:1/other:1']);
  assert.equal(r.code, 3);
  assert.doesNotMatch(r.stderr, /local store/);
});

test('rm takes a digest as images shows it: one name goes, several need -f', async () => {
  const h = reg.host;
  const { rmCommand } = await import('../../src/cli/commands/rm.js');
  const { imagesCommand } = await import('../../src/cli/commands/images.js');
  assert.equal((await run(copyCommand, [`${h}/bx-a:v1`, 'store:rm-by-digest:a'])).code, 0);
  assert.equal((await run(copyCommand, [`${h}/bx-a:v1`, 'store:rm-by-digest:b'])).code, 0);
  const listed = JSON.parse((await run(imagesCommand, ['--format', 'json'])).stdout) as Array<{ name: string; digest: string }>;
  const digest = listed.find((i) => i.name === 'docker.io/library/rm-by-digest:a')?.digest ?? '';
  const short = digest.slice('sha256:'.length, 'sha256:'.length + 12);
  let r = await run(rmCommand, [short]);
  assert.equal(r.code, 2);
  assert.match(r.stderr, /is named .*rm-by-digest:a.*rm-by-digest:b.*with -f/);
  r = await run(rmCommand, ['-f', short]);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /Untagged: docker.io\/library\/rm-by-digest:a\nUntagged: docker.io\/library\/rm-by-digest:b\n/);
});

test('a mirror run that meets a missing image still reports every image, and exits with its kind', async () => {
  const h = reg.host;
  const r = await run(mirrorCommand, ['--to', `${h}/mirror-fail`, '--json', '--jobs', '1', `${h}/app:1`, `${h}/no/such:1`, `${h}/bx-a:v1`]);
  assert.equal(r.code, 2, r.stderr);
  assert.match(r.stderr, /1 of 3 images failed to mirror; 1 not started \(--keep-going copies the rest\)/);
  const items = JSON.parse(r.stdout) as Array<{ target: string; digest?: string; error?: string; skipped?: boolean }>;
  assert.equal(items.length, 3);
  assert.equal(items[0]!.digest, `sha256:${createHash('sha256').update(rawBytes(`${h}/app:1`)).digest('hex')}`);
  assert.equal(rawBytes(`${h}/mirror-fail/app:1`), rawBytes(`${h}/app:1`), 'what was copied stays copied');
  assert.match(items[1]!.error ?? '', /no\/such/);
  assert.equal(items[2]!.skipped, true);
  assert.equal(await tagExists('mirror-fail/bx-a', 'v1'), false);
});

test("pull --platform stores that platform's image itself; a pull by digest is named by its digest, no tag invented", async () => {
  const h = reg.host;
  const { pullCommand } = await import('../../src/cli/commands/pull.js');
  const { imagesCommand } = await import('../../src/cli/commands/images.js');
  const { rmCommand } = await import('../../src/cli/commands/rm.js');
  const index = rawManifest(`${h}/app:1`);
  const arm64 = index.manifests?.find((d) => d.platform?.architecture === 'arm64');
  assert.ok(arm64);
  let r = await run(pullCommand, ['--platform', 'linux/arm64', `${h}/app:1`]);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout, `${h}/app:1: ${arm64.digest} [linux/arm64]\n`, 'the registry\'s own arm64 manifest, as docker pull --platform stores it');
  const indexDigest = `sha256:${createHash('sha256').update(rawBytes(`${h}/app:1`)).digest('hex')}`;
  r = await run(pullCommand, [`${h}/app@${indexDigest}`]);
  assert.equal(r.code, 0, r.stderr);
  const names = (JSON.parse((await run(imagesCommand, ['--format', 'json'])).stdout) as Array<{ name: string }>).map((i) => i.name);
  assert.ok(names.includes(`${h}/app@${indexDigest}`), names.join(' '));
  assert.ok(!names.includes(`${h}/app:latest`), 'a pull by digest made up a latest tag');
  r = await run(rmCommand, [`${h}/app@${indexDigest}`]);
  assert.equal(r.code, 0, r.stderr);
});

test('pull into the store under the image name, push back out (all platforms pulled with --all-platforms)', async () => {
  const h = reg.host;
  const { pullCommand } = await import('../../src/cli/commands/pull.js');
  const { pushCommand } = await import('../../src/cli/commands/push.js');
  let r = await run(pullCommand, ['--platform', 'linux/arm64', `${h}/app:1`]);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /linux\/arm64/);
  r = await run(pullCommand, ['--all-platforms', `${h}/app:1`]);
  assert.equal(r.code, 0, r.stderr);
  r = await run(pushCommand, [`${h}/app:1`, `${h}/pushed/app:1`]);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(rawBytes(`${h}/pushed/app:1`), rawBytes(`${h}/app:1`));
});

test('one image from two repositories: its attestation is read from the repository that has it (create, and --append onto an index holding it)', async () => {
  const h = reg.host;
  const dir = mkdtempSync(join(work, 'oci-'));
  const layout = await OciLayout.open(dir, { create: true });
  const amd = await writeImage(layout, 'linux/amd64', { salt: 'shared' });
  const arm = await writeImage(layout, 'linux/arm64', { salt: 'shared' });
  await pushLayoutImage(dir, layout, amd, 'app:sh-amd64');
  await pushLayoutImage(dir, layout, arm, 'app:sh-arm64');
  const amdAtt = await writeAttestation(layout, amd, 'attapp', 'shared');
  const armAtt = await writeAttestation(layout, arm, 'attapp', 'shared');
  await pushLayoutIndex(dir, layout, [amd, amdAtt], 'attapp:amd');
  await pushLayoutIndex(dir, layout, [amd, arm, amdAtt, armAtt], 'attapp:both');
  // Either order: the image is in app and attapp, its attestation in attapp only.
  for (const [tag, srcs] of [['1', [`${h}/app:sh-amd64`, `${h}/attapp:amd`]], ['2', [`${h}/attapp:amd`, `${h}/app:sh-amd64`]]] as const) {
    const r = await run(indexCommand, ['create', '-t', `${h}/newrepo:${tag}`, ...srcs]);
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(rawManifest(`${h}/newrepo:${tag}`).manifests!.map((d) => d.digest), [amd.digest, amdAtt.digest]);
    const judge = skopeo(['copy', '--all', '--src-tls-verify=false', `docker://${h}/newrepo:${tag}`, `oci:${join(work, `judge-two-repos-${tag}`)}:x`]);
    assert.equal(judge.code, 0, judge.stderr);
  }
  // --append of an image the target index already holds (with its attestation), named in another repository.
  const r = await run(indexCommand, ['create', '--append', '-t', `${h}/attapp:both`, `${h}/app:sh-arm64`]);
  assert.equal(r.code, 0, r.stderr);
  assert.deepEqual(rawManifest(`${h}/attapp:both`).manifests!.map((d) => d.digest), [amd.digest, arm.digest, amdAtt.digest, armAtt.digest]);
  // And into a third repository: every manifest and blob comes from a repository that has it.
  const r2 = await run(indexCommand, ['create', '-t', `${h}/third:1`, `${h}/app:sh-arm64`, `${h}/attapp:both`]);
  assert.equal(r2.code, 0, r2.stderr);
  const judge = skopeo(['copy', '--all', '--src-tls-verify=false', `docker://${h}/third:1`, `oci:${join(work, 'judge-third')}:x`]);
  assert.equal(judge.code, 0, judge.stderr);
});

/** An OCI index with index and descriptor annotations, written indented (as buildx writes one). */
async function pushAnnotatedIndex(ref: string, platforms: string[], annotations: Record<string, string>, salt: string): Promise<{ images: Descriptor[] }> {
  const dir = mkdtempSync(join(work, 'oci-'));
  const layout = await OciLayout.open(dir, { create: true });
  const images: Descriptor[] = [];
  for (const p of platforms) {
    const d = await writeImage(layout, p, { salt });
    images.push({ ...d, platform: parsePlatform(p), annotations: { 'org.opencontainers.image.description': `for ${p}` } });
  }
  await pushLayoutIndex(dir, layout, images, ref, { annotations, indent: true });
  return { images };
}

test('a source index keeps its annotations: one source index alone is copied byte for byte; several keep what they agree on', async () => {
  const h = reg.host;
  const ann = { 'org.opencontainers.image.source': 'https://example.com/app', 'org.opencontainers.image.revision': 'abc' };
  await pushAnnotatedIndex('app:ann', ['linux/amd64', 'linux/arm64'], ann, 'ann');
  let r = await run(indexCommand, ['create', '-t', `${h}/copy:1`, `${h}/app:ann`]);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(rawBytes(`${h}/copy:1`), rawBytes(`${h}/app:ann`), 'a single source index is copied as it is');
  // Another repository, through --dry-run: the same bytes.
  r = await run(indexCommand, ['create', '--dry-run', '-t', `${h}/copy:dry`, `${h}/app:ann`]);
  assert.equal(r.code, 0, r.stderr);
  assert.deepEqual(JSON.parse(r.stdout), JSON.parse(rawBytes(`${h}/app:ann`)));
  // With an --annotation: the source's and the given one.
  r = await run(indexCommand, ['create', '-t', `${h}/copy:2`, `${h}/app:ann`, '--annotation', 'index:org.example.extra=1']);
  assert.equal(r.code, 0, r.stderr);
  const two = rawManifest(`${h}/copy:2`);
  assert.deepEqual(two.annotations, { ...ann, 'org.example.extra': '1' });
  assert.equal(two.manifests![1]!.annotations?.['org.opencontainers.image.description'], 'for linux/arm64');
  // One source index and a single image: the index's annotations.
  r = await run(indexCommand, ['create', '-t', `${h}/copy:3`, `${h}/app:ann`, `${h}/app:1-armv7`]);
  assert.equal(r.code, 0, r.stderr);
  assert.deepEqual(rawManifest(`${h}/copy:3`).annotations, ann);
  // Two source indexes: the annotations both have, with the same value.
  await pushAnnotatedIndex('app:ann2', ['linux/s390x'], { 'org.opencontainers.image.source': 'https://example.com/app', 'org.opencontainers.image.revision': 'def' }, 'ann2');
  r = await run(indexCommand, ['create', '-t', `${h}/copy:4`, `${h}/app:ann`, `${h}/app:ann2`]);
  assert.equal(r.code, 0, r.stderr);
  const four = rawManifest(`${h}/copy:4`);
  assert.deepEqual(platformsOf(four), ['linux/amd64', 'linux/arm64', 'linux/s390x']);
  assert.deepEqual(four.annotations, { 'org.opencontainers.image.source': 'https://example.com/app' });
});

test('annotations never go into a Docker manifest list: OCI index instead (said why), refused with --format docker, inherited ones dropped (said so)', async () => {
  const h = reg.host;
  await pushSingle('linux/amd64', 'dockann:amd64', { format: 'docker', salt: 'dockann' });
  await pushSingle('linux/arm64', 'dockann:arm64', { format: 'docker', salt: 'dockann' });
  // Docker images and an annotation: an OCI index, and a note saying why.
  let r = await run(indexCommand, ['create', '-t', `${h}/dockann:auto`, `${h}/dockann:amd64`, `${h}/dockann:arm64`, '--annotation', 'index:org.example.a=1'], { progress: 'plain' });
  assert.equal(r.code, 0, r.stderr);
  let idx = rawManifest(`${h}/dockann:auto`);
  assert.equal(idx.mediaType, MediaType.OciIndex);
  assert.deepEqual(idx.annotations, { 'org.example.a': '1' });
  assert.match(r.stderr, /OCI index.*Docker manifest list cannot hold annotations/);
  // The same with --format docker: refused, naming the annotation, nothing tagged.
  r = await run(indexCommand, ['create', '--format', 'docker', '-t', `${h}/dockann:refused`, `${h}/dockann:amd64`, `${h}/dockann:arm64`, '--annotation', 'manifest-descriptor[linux/arm64]:org.example.b=2']);
  assert.equal(r.code, 2, r.stderr);
  assert.match(r.stderr, /manifest-descriptor\[linux\/arm64\]:org\.example\.b=2/);
  assert.match(r.stderr, /--format oci/);
  assert.equal(await tagExists('dockann', 'refused'), false);
  // --format docker of an index with index and descriptor annotations: a Docker list without them, and a note.
  await pushAnnotatedIndex('dockann:src', ['linux/amd64', 'linux/arm64'], { 'org.opencontainers.image.source': 'https://example.com/app' }, 'dockann-src');
  r = await run(indexCommand, ['create', '--format', 'docker', '-t', `${h}/dockann:list`, `${h}/dockann:src`], { progress: 'plain' });
  assert.equal(r.code, 0, r.stderr);
  const raw = rawBytes(`${h}/dockann:list`);
  idx = JSON.parse(raw) as typeof idx;
  assert.equal(idx.mediaType, MediaType.DockerManifestList);
  assert.doesNotMatch(raw, /annotations/);
  assert.match(r.stderr, /dropped annotations.*org\.opencontainers\.image\.source.*org\.opencontainers\.image\.description/);
  const judge = skopeo(['copy', '--all', '--src-tls-verify=false', `docker://${h}/dockann:list`, `oci:${join(work, 'judge-dockann')}:x`]);
  assert.equal(judge.code, 0, judge.stderr);
});

test('each note of index create is printed once', async () => {
  const h = reg.host;
  const r = await run(indexCommand, ['create', '--dry-run', '-t', `${h}/notes:1`, `${h}/app:1-amd64`, `${h}/app:1-arm64`, '--remove', 'linux/amd64'], { progress: 'plain' });
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stderr.split('\n').filter((l) => l.includes('removed linux/amd64')).length, 1, r.stderr);
});
