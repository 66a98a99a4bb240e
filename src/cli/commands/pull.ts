import { parsePlatform } from '../../oci/index.js';
import { familiarName, formatReference, parseLocation, parseReference, withDefaultTag } from '../../ref/index.js';
import { copyImage, openSource, openTarget } from '../../imagetools/index.js';
import { boolOpt, requirePositionals, stringOpt, usageError, type Command } from '../command.js';
import { intOpt, openContextFor, REGISTRY_OPTIONS } from './copy.js';

export const pullCommand: Command = {
  name: 'pull',
  usage: '[OPTIONS] REF',
  summary: "Pull an image from a registry into the local store, under Docker's name for it",
  description: `The image for this host's platform is pulled (or --platform's, or every platform with
--all-platforms) and named as Docker names local images: busybox is docker.io/library/busybox:latest.`,
  options: {
    platform: { type: 'string', help: 'PLATFORM:pull the image for this platform' },
    'all-platforms': { type: 'boolean', help: 'pull the whole index' },
    concurrency: { type: 'string', help: 'N:blobs copied at once (default 4)' },
    ...REGISTRY_OPTIONS,
  },
  async run(ctx) {
    requirePositionals(ctx, 1, 1, 'a REF', 'pull');
    const input = ctx.positionals[0] as string;
    if (/^(oci|oci-archive|docker-archive|store):/.test(input)) throw usageError('pull takes a registry reference; use "archway copy" for other locations', 'pull');
    const ref = withDefaultTag(parseReference(input.replace(/^docker:\/\//, '')));
    const platformText = stringOpt(ctx, 'platform');
    const all = boolOpt(ctx, 'all-platforms');
    if (platformText && all) throw usageError('--platform and --all-platforms exclude each other', 'pull');
    const octx = openContextFor(ctx);
    const src = await openSource(parseLocation(formatReference(ref)), octx);
    // Named as Docker names the pull: by its tag, or by its digest alone (no tag is invented).
    const { digest: _d, ...named } = ref;
    const name = formatReference(named.tag ? named : ref);
    const dst = await openTarget(parseLocation(`store:${name}`), octx);
    const r = await copyImage(src.content, src.reference, dst.content, [dst.reference], {
      signal: ctx.signal,
      progress: ctx.progress,
      // One platform, as Docker pulls it: that platform's image itself, not a new one-entry index.
      multiArch: all ? 'all' : 'system',
      ...(platformText ? { host: parsePlatform(platformText) } : {}),
      concurrency: intOpt(ctx, 'concurrency', 4, 'pull'),
    });
    ctx.stdout.write(`${familiarName(parseReference(name))}: ${r.descriptor.digest} [${r.platforms.join(', ')}]\n`);
    return 0;
  },
};
