import { formatReference, parseLocation, parseReference, withDefaultTag } from '../../ref/index.js';
import { copyImage, openSource, openTarget } from '../../imagetools/index.js';
import { requirePositionals, usageError, type Command } from '../command.js';
import { formatOpt, intOpt, openContextFor, REGISTRY_OPTIONS } from './copy.js';

export const pushCommand: Command = {
  name: 'push',
  usage: '[OPTIONS] REF [DEST]',
  summary: 'Push an image from the local store to the registry its name says (every platform)',
  options: {
    format: { type: 'string', help: 'FORMAT:oci or docker media types' },
    concurrency: { type: 'string', help: 'N:blobs copied at once (default 4)' },
    ...REGISTRY_OPTIONS,
  },
  async run(ctx) {
    requirePositionals(ctx, 1, 2, 'a REF', 'push');
    const input = ctx.positionals[0] as string;
    if (/^(oci|oci-archive|docker-archive|docker):/.test(input)) throw usageError('push takes a name in the local store; use "archway copy" for other locations', 'push');
    const ref = withDefaultTag(parseReference(input.replace(/^store:/, '')));
    const octx = openContextFor(ctx);
    const src = await openSource(parseLocation(`store:${formatReference(ref)}`), octx);
    const destText = ctx.positionals[1] ?? formatReference(ref);
    const dst = await openTarget(parseLocation(destText), octx);
    const format = formatOpt(ctx, 'push');
    const r = await copyImage(src.content, src.reference, dst.content, [dst.reference], {
      signal: ctx.signal,
      progress: ctx.progress,
      multiArch: 'all',
      ...(format ? { format } : {}),
      concurrency: intOpt(ctx, 'concurrency', 4, 'push'),
    });
    ctx.stdout.write(`${dst.input}: ${r.descriptor.digest} [${r.platforms.join(', ')}]\n`);
    return 0;
  },
};
