import { readFile } from 'node:fs/promises';
import { ArchwayError } from '../../util/index.js';
import { parsePlatform, parsePlatformList, type Platform } from '../../oci/index.js';
import { parseLocation } from '../../ref/index.js';
import {
  createIndex,
  formatInspectText,
  fromArgs,
  inspect,
  inspectJson,
  openSource,
  openTarget,
  parseSpec,
  platformLines,
  type IndexRequest,
  type IndexSource,
  type IndexTarget,
} from '../../imagetools/index.js';
import { boolOpt, listOpt, requirePositionals, stringOpt, usageError, type Command } from '../command.js';
import { formatOpt, intOpt, openContextFor, REGISTRY_OPTIONS } from './copy.js';

/** `--platform-for SRC=PLATFORM`: the last '=' separates, since a platform never holds one. */
function parsePlatformFor(values: string[]): Map<string, Platform> {
  const out = new Map<string, Platform>();
  for (const v of values) {
    const i = v.lastIndexOf('=');
    if (i <= 0 || i === v.length - 1) throw usageError(`--platform-for expects SRC=PLATFORM, got "${v}"`, 'index create');
    out.set(v.slice(0, i), parsePlatform(v.slice(i + 1)));
  }
  return out;
}

const createCommand: Command = {
  name: 'create',
  usage: '[OPTIONS] -t TARGET [SRC...]',
  summary: 'Create, merge or change a multi-platform index from images and indexes',
  description: `Each SRC is a tag, a digest or a whole index (whose platforms and attestations are merged).
A single image's platform is read from its config; --platform-for SRC=PLATFORM states it, and
a disagreement with the config is an error unless --force-platform. Images in other repositories
or registries are copied into TARGET's repository first; the tag is written last. A single source
index that nothing changes is copied as it is (same digest); index annotations are kept from the
index appended to, else from the source indexes (those they all agree on), and --annotation adds.

Examples:
  archway index create -t reg/app:1 reg/app:1-amd64 reg/app:1-arm64 reg/app:1-armv7
  archway index create -t reg/app:1 --append reg/app:1-s390x
  archway index create -t reg/app:1 --append --remove linux/arm/v7
  archway index create -t reg/app:1 reg/app:amd64-build reg/app:arm-builds --annotation index:org.opencontainers.image.source=https://x
  archway index create --from-spec manifest.yaml
  archway index create --from-args --platforms linux/amd64,linux/arm/v7 --template 'reg/app:v1-OS-ARCH[-VARIANT]' --target reg/app:v1`,
  options: {
    tag: { type: 'string', short: 't', multiple: true, help: 'TARGET:where to write the index' },
    'platform-for': { type: 'string', multiple: true, help: 'SRC=PLATFORM:the platform of a source image (or the one to take from a source index)' },
    'force-platform': { type: 'boolean', help: 'write the given platform even when the image config says another' },
    append: { type: 'boolean', help: 'add to (and replace platforms of) the index already at the first TARGET' },
    remove: { type: 'string', multiple: true, help: 'PLATFORM:take this platform out' },
    annotation: { type: 'string', multiple: true, help: 'ANNOTATION:[index:|manifest-descriptor[PLATFORM]:]KEY=VALUE' },
    'dry-run': { type: 'boolean', help: 'print the index and push nothing' },
    format: { type: 'string', help: 'FORMAT:oci or docker (default: that of the index appended to or copied, else docker when all images are Docker manifests and nothing needs OCI: attestations, annotations)' },
    'no-attestations': { type: 'boolean', help: 'drop the attestations of source indexes' },
    duplicates: { type: 'string', default: 'error', help: 'POLICY:two sources for one platform: error, first or last' },
    'from-spec': { type: 'string', help: "FILE:manifest-tool's YAML spec (image, tags, manifests)" },
    'from-args': { type: 'boolean', help: "manifest-tool's from-args: --platforms, --template, --target" },
    platforms: { type: 'string', help: 'PLATFORMS:for --from-args' },
    template: { type: 'string', help: 'TEMPLATE:for --from-args: OS, ARCH, VARIANT and [-VARIANT] are replaced' },
    target: { type: 'string', help: 'TARGET:for --from-args' },
    concurrency: { type: 'string', help: 'N:blobs copied at once (default 4)' },
    ...REGISTRY_OPTIONS,
  },
  async run(ctx) {
    const cmd = 'index create';
    let request: IndexRequest;
    const specFile = stringOpt(ctx, 'from-spec');
    if (specFile) {
      if (ctx.positionals.length > 0 || boolOpt(ctx, 'from-args')) throw usageError('--from-spec takes no SRC arguments and no --from-args', cmd);
      let text: string;
      try {
        text = await readFile(specFile, 'utf8');
      } catch (e) {
        throw new ArchwayError('NOT_FOUND', `cannot read ${specFile}: ${(e as Error).message}`);
      }
      request = parseSpec(text, specFile);
      request.targets.push(...listOpt(ctx, 'tag'));
    } else if (boolOpt(ctx, 'from-args')) {
      const platforms = stringOpt(ctx, 'platforms');
      const template = stringOpt(ctx, 'template');
      const target = stringOpt(ctx, 'target') ?? listOpt(ctx, 'tag')[0];
      if (!platforms || !template || !target) throw usageError('--from-args needs --platforms, --template and --target', cmd);
      if (ctx.positionals.length > 0) throw usageError('--from-args takes no SRC arguments', cmd);
      request = fromArgs(parsePlatformList(platforms), template, target);
      request.targets.push(...listOpt(ctx, 'tag').filter((t) => t !== target));
    } else {
      const given = parsePlatformFor(listOpt(ctx, 'platform-for'));
      const srcs = [...ctx.positionals];
      for (const k of given.keys()) if (!srcs.includes(k)) srcs.push(k);
      request = { targets: listOpt(ctx, 'tag'), sources: srcs.map((image) => ({ image, ...(given.has(image) ? { platform: given.get(image) as Platform } : {}) })) };
    }
    const dryRun = boolOpt(ctx, 'dry-run');
    if (request.targets.length === 0 && !dryRun) throw usageError('no target: give -t TARGET', cmd);
    const duplicates = stringOpt(ctx, 'duplicates') ?? 'error';
    if (duplicates !== 'error' && duplicates !== 'first' && duplicates !== 'last') throw usageError(`--duplicates must be error, first or last, not "${duplicates}"`, cmd);
    const octx = openContextFor(ctx);
    const sources: IndexSource[] = [];
    for (const s of request.sources) {
      const o = await openSource(parseLocation(s.image), octx);
      sources.push({ input: s.image, source: o.content, reference: o.reference, ...(s.platform ? { platform: s.platform } : {}) });
    }
    const targets: IndexTarget[] = [];
    for (const t of request.targets) {
      const loc = parseLocation(t);
      if (loc.transport === 'registry' && loc.ref.digest) throw usageError(`target ${t} names a digest; give a tag`, cmd);
      const o = await openTarget(loc, octx);
      targets.push({ input: t, target: o.content, reference: o.reference });
    }
    const format = formatOpt(ctx, cmd);
    const r = await createIndex(sources, targets, {
      signal: ctx.signal,
      progress: ctx.progress,
      append: boolOpt(ctx, 'append'),
      remove: listOpt(ctx, 'remove').map((p) => parsePlatform(p)),
      annotations: listOpt(ctx, 'annotation'),
      ...(format ? { format } : {}),
      dryRun,
      forcePlatform: boolOpt(ctx, 'force-platform'),
      attestations: !boolOpt(ctx, 'no-attestations'),
      duplicates,
      concurrency: intOpt(ctx, 'concurrency', 4, cmd),
    });
    // Notes (r.notes) reached stderr already, through ctx.progress, as they happened.
    if (dryRun) {
      ctx.stdout.write(`${JSON.stringify(JSON.parse(r.raw.toString('utf8')), null, 2)}\n`);
      return 0;
    }
    for (const e of r.entries) ctx.stdout.write(`${e.platform.padEnd(16)} ${e.digest}  ${e.from}${e.attestations.length ? ` (+${e.attestations.length} attestation${e.attestations.length > 1 ? 's' : ''})` : ''}\n`);
    for (const t of r.pushed) ctx.stdout.write(`${t}: ${r.descriptor.digest} ${r.descriptor.mediaType}\n`);
    return 0;
  },
};

const inspectSub: Command = {
  name: 'inspect',
  usage: '[OPTIONS] REF',
  summary: 'Show an index: its platforms (one per line with --platforms) and attestations',
  options: {
    platforms: { type: 'boolean', help: 'print one platform per line, nothing else' },
    raw: { type: 'boolean', help: 'print the exact bytes' },
    format: { type: 'string', default: 'text', help: 'FORMAT:text or json' },
    ...REGISTRY_OPTIONS,
  },
  async run(ctx) {
    requirePositionals(ctx, 1, 1, 'a REF', 'index inspect');
    const src = await openSource(parseLocation(ctx.positionals[0] as string), openContextFor(ctx));
    const r = await inspect(src.content, src.reference, { signal: ctx.signal, progress: ctx.progress });
    r.name = src.input;
    if (boolOpt(ctx, 'raw')) ctx.stdout.write(r.raw);
    else if (boolOpt(ctx, 'platforms')) ctx.stdout.write(platformLines(r));
    else if (stringOpt(ctx, 'format') === 'json') ctx.stdout.write(`${JSON.stringify(inspectJson(r), null, 2)}\n`);
    else ctx.stdout.write(formatInspectText(r));
    return 0;
  },
};

export const indexCommand: Command = {
  name: 'index',
  usage: 'COMMAND',
  summary: 'Create, merge, annotate and inspect multi-platform indexes (manifest lists)',
  options: {},
  subcommands: [createCommand, inspectSub],
};
