import { ArchwayError } from '../../util/index.js';
import { parsePlatformList, shortDigest } from '../../oci/index.js';
import { checkTag, parseLocation } from '../../ref/index.js';
import { canMount, copyImage, openSource, openTarget, type MultiArch, type OpenContext } from '../../imagetools/index.js';
import { listOpt, requirePositionals, stringOpt, usageError, type Command, type CommandContext, type OptionSpec } from '../command.js';

/** Options every registry-touching command shares. */
export const REGISTRY_OPTIONS: Record<string, OptionSpec> = {
  'insecure-registry': { type: 'string', multiple: true, help: 'HOST:allow plain HTTP or unverified TLS for this registry' },
  'registry-config': { type: 'string', help: 'FILE:registry settings file' },
  progress: { type: 'string', default: 'auto', help: 'MODE:auto, tty, plain or json (to stderr)' },
};

export function openContextFor(ctx: CommandContext): OpenContext {
  const config = stringOpt(ctx, 'registry-config');
  return {
    signal: ctx.signal,
    progress: ctx.progress,
    env: ctx.env,
    insecureRegistries: listOpt(ctx, 'insecure-registry'),
    ...(config ? { registryConfig: config } : {}),
  };
}

export function formatOpt(ctx: CommandContext, command: string): 'oci' | 'docker' | undefined {
  const f = stringOpt(ctx, 'format');
  if (f === undefined) return undefined;
  if (f !== 'oci' && f !== 'docker') throw usageError(`--format must be oci or docker, not "${f}"`, command);
  return f;
}

export function intOpt(ctx: CommandContext, name: string, fallback: number, command: string): number {
  const v = stringOpt(ctx, name);
  if (v === undefined) return fallback;
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1) throw usageError(`--${name} must be a positive integer, not "${v}"`, command);
  return n;
}

export const copyCommand: Command = {
  name: 'copy',
  usage: '[OPTIONS] SRC DST',
  summary: 'Copy an image or a multi-platform index between registries, the store, layouts and archives',
  description: `SRC and DST are registry references (docker://host/repo:tag or host/repo:tag), oci:DIR[:TAG],
oci-archive:FILE[:TAG], docker-archive:FILE[:NAME:TAG] or store:NAME.
Manifests are copied byte for byte, so digests are kept, unless --platform or --format asks
for a new index or new manifests (the output says so). Tags are written last.

Examples:
  archway copy docker.io/library/alpine:3.19 localhost:5000/alpine:3.19
  archway copy --platform linux/amd64,linux/arm64 app:v1 registry.example.com/app:v1
  archway copy --format docker oci:./out:v1 localhost:5000/app:v1`,
  options: {
    'multi-arch': { type: 'string', default: 'all', help: 'WHAT:all (the index and every image), system (this host\'s image only) or index-only' },
    platform: { type: 'string', help: 'PLATFORMS:copy only these platforms (comma-separated); writes a new index' },
    format: { type: 'string', help: 'FORMAT:oci or docker media types (rewrites manifests of the other format)' },
    tag: { type: 'string', short: 't', multiple: true, help: 'TAG:another tag for the copy in DST\'s repository' },
    concurrency: { type: 'string', help: 'N:blobs copied at once (default 4)' },
    ...REGISTRY_OPTIONS,
  },
  async run(ctx) {
    requirePositionals(ctx, 2, 2, 'SRC and DST', 'copy');
    const multiArch = stringOpt(ctx, 'multi-arch') ?? 'all';
    if (multiArch !== 'all' && multiArch !== 'system' && multiArch !== 'index-only') throw usageError(`--multi-arch must be all, system or index-only, not "${multiArch}"`, 'copy');
    const platformText = stringOpt(ctx, 'platform');
    const platforms = platformText ? parsePlatformList(platformText) : undefined;
    const format = formatOpt(ctx, 'copy');
    const octx = openContextFor(ctx);
    // Every name is checked before anything is read or written: a bad -t must not follow a tag written.
    const srcLocation = parseLocation(ctx.positionals[0] as string);
    const dstLocation = parseLocation(ctx.positionals[1] as string);
    const extra = listOpt(ctx, 'tag').map(checkTag);
    if (extra.length > 0 && dstLocation.transport !== 'registry') throw new ArchwayError('USAGE', '--tag applies to registry destinations only');
    const src = await openSource(srcLocation, octx);
    const dst = await openTarget(dstLocation, octx);
    const r = await copyImage(src.content, src.reference, dst.content, [dst.reference, ...extra], {
      signal: ctx.signal,
      progress: ctx.progress,
      multiArch: multiArch as MultiArch,
      ...(platforms ? { platforms } : {}),
      ...(format ? { format } : {}),
      concurrency: intOpt(ctx, 'concurrency', 4, 'copy'),
      mount: canMount(src, dst),
    });
    ctx.stdout.write(`${dst.input}: ${r.descriptor.digest} ${r.descriptor.mediaType}\n`);
    ctx.stdout.write(`platforms: ${r.platforms.join(', ') || 'none'}\n`);
    if (r.rewritten) ctx.stdout.write(`rewritten: the source was ${r.source.digest} (${shortDigest(r.descriptor.digest)} is new)\n`);
    for (const n of r.notes) ctx.stderr.write(`note: ${n}\n`);
    return 0;
  },
};
