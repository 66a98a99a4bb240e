import { ArchwayError, isArchwayError } from '../../util/index.js';
import { parsePlatform } from '../../oci/index.js';
import { parseLocation } from '../../ref/index.js';
import { formatInspectText, inspect, inspectJson, openSource } from '../../imagetools/index.js';
import { boolOpt, requirePositionals, stringOpt, usageError, type Command } from '../command.js';
import { openContextFor, REGISTRY_OPTIONS } from './copy.js';

export const inspectCommand: Command = {
  name: 'inspect',
  usage: '[OPTIONS] IMAGE',
  summary: 'Show an image or index: its platforms and attestations, or one platform\'s config and layers',
  description: `IMAGE is a registry reference (the default), oci:DIR[:TAG], oci-archive:FILE, docker-archive:FILE
or store:NAME. Attestations are listed under the image they describe, never as platforms.

Examples:
  archway inspect alpine:3.19
  archway inspect --platform linux/arm64 alpine:3.19
  archway inspect --raw localhost:5000/app:v1 | jq .`,
  options: {
    raw: { type: 'boolean', help: 'print the exact bytes of the manifest or index' },
    format: { type: 'string', default: 'text', help: 'FORMAT:text or json' },
    platform: { type: 'string', help: 'PLATFORM:show the image for this platform' },
    ...REGISTRY_OPTIONS,
  },
  async run(ctx) {
    requirePositionals(ctx, 1, 1, 'an IMAGE', 'inspect');
    const format = stringOpt(ctx, 'format') ?? 'text';
    if (format !== 'text' && format !== 'json') throw usageError(`--format must be text or json, not "${format}"`, 'inspect');
    const platformText = stringOpt(ctx, 'platform');
    const platform = platformText ? parsePlatform(platformText) : undefined;
    const input = ctx.positionals[0] as string;
    const location = parseLocation(input);
    const octx = openContextFor(ctx);
    const src = await openSource(location, octx);
    const r = await inspect(src.content, src.reference, { signal: ctx.signal, progress: ctx.progress, ...(platform ? { platform } : {}) }).catch(async (e: unknown) => {
      // A bare name means a registry, as for buildx imagetools; when the registry fails and the
      // local store has that name, say how to look there.
      if (location.transport !== 'registry' || input.startsWith('docker://') || !isArchwayError(e) || ctx.signal.aborted) throw e;
      const local = await openSource(parseLocation(`store:${input}`), octx)
        .then((s) => s.content.resolve(s.reference, { signal: ctx.signal }))
        .then(() => true, () => false);
      if (local) throw new ArchwayError(e.code, e.message, { cause: e, details: e.details, hint: `the local store has ${input}: archway inspect store:${input}` });
      throw e;
    });
    if (boolOpt(ctx, 'raw')) {
      if (platform && r.image) {
        const img = await inspect(src.content, r.image.digest, { signal: ctx.signal });
        ctx.stdout.write(img.raw);
      } else ctx.stdout.write(r.raw);
      return 0;
    }
    r.name = src.input;
    if (format === 'json') ctx.stdout.write(`${JSON.stringify(inspectJson(r), null, 2)}\n`);
    else ctx.stdout.write(formatInspectText(r));
    return 0;
  },
};
