import { readFile } from 'node:fs/promises';
import { ArchwayError } from '../../util/index.js';
import { parsePlatformList } from '../../oci/index.js';
import { mirror, parseImageList, type MultiArch } from '../../imagetools/index.js';
import { boolOpt, stringOpt, usageError, type Command } from '../command.js';
import { formatOpt, intOpt, openContextFor, REGISTRY_OPTIONS } from './copy.js';

export const mirrorCommand: Command = {
  name: 'mirror',
  usage: '[OPTIONS] --to PREFIX [IMAGE...]',
  summary: 'Copy many images, every platform, under a registry prefix',
  description: `docker.io/library/golang:1.17 mirrored --to localhost:5000/mirror becomes
localhost:5000/mirror/library/golang:1.17. Images come from the arguments or --file (one per line,
# comments allowed). Digests are kept; the output says what each became.`,
  options: {
    to: { type: 'string', help: 'PREFIX:registry and path prefix to copy under' },
    file: { type: 'string', short: 'f', help: 'FILE:images to mirror, one per line' },
    jobs: { type: 'string', short: 'j', help: 'N:images copied at once (default 3)' },
    concurrency: { type: 'string', help: 'N:blobs copied at once, across all the images (default 4)' },
    'multi-arch': { type: 'string', default: 'all', help: 'WHAT:all, system or index-only' },
    platform: { type: 'string', help: 'PLATFORMS:mirror only these platforms (new indexes)' },
    format: { type: 'string', help: 'FORMAT:oci or docker' },
    'keep-going': { type: 'boolean', help: 'continue after a failed image; exit non-zero at the end' },
    json: { type: 'boolean', help: 'print the results as JSON' },
    ...REGISTRY_OPTIONS,
  },
  async run(ctx) {
    const prefix = stringOpt(ctx, 'to');
    if (!prefix) throw usageError('--to PREFIX is required', 'mirror');
    const images = [...ctx.positionals];
    const file = stringOpt(ctx, 'file');
    if (file) {
      let text: string;
      try {
        text = await readFile(file, 'utf8');
      } catch (e) {
        throw new ArchwayError('NOT_FOUND', `cannot read ${file}: ${(e as Error).message}`);
      }
      images.push(...parseImageList(text));
    }
    if (images.length === 0) throw usageError('no image to mirror: give IMAGE arguments or --file', 'mirror');
    const multiArch = stringOpt(ctx, 'multi-arch') ?? 'all';
    if (multiArch !== 'all' && multiArch !== 'system' && multiArch !== 'index-only') throw usageError(`--multi-arch must be all, system or index-only`, 'mirror');
    const platformText = stringOpt(ctx, 'platform');
    const format = formatOpt(ctx, 'mirror');
    const keepGoing = boolOpt(ctx, 'keep-going');
    const { items: results, firstError } = await mirror(images, prefix, openContextFor(ctx), {
      concurrency: intOpt(ctx, 'jobs', 3, 'mirror'),
      blobConcurrency: intOpt(ctx, 'concurrency', 4, 'mirror'),
      multiArch: multiArch as MultiArch,
      ...(platformText ? { platforms: parsePlatformList(platformText) } : {}),
      ...(format ? { format } : {}),
      keepGoing,
    });
    if (boolOpt(ctx, 'json')) ctx.stdout.write(`${JSON.stringify(results, null, 2)}\n`);
    else {
      for (const r of results) {
        if (r.error) ctx.stdout.write(`${r.source} -> ${r.target}: FAILED: ${r.error}\n`);
        else if (r.skipped) ctx.stdout.write(`${r.source} -> ${r.target}: not copied (an earlier image failed)\n`);
        else ctx.stdout.write(`${r.source} -> ${r.target} ${r.digest} [${(r.platforms ?? []).join(', ')}]${r.rewritten ? ' (rewritten)' : ''}\n`);
      }
    }
    const failed = results.filter((r) => r.error);
    if (failed.length > 0) {
      const skipped = results.filter((r) => r.skipped).length;
      // The first failure's kind is the run's exit status (a missing image 2, the network 3, ...).
      const code = firstError instanceof ArchwayError ? firstError.code : 'REGISTRY';
      throw new ArchwayError(code, `${failed.length} of ${results.length} images failed to mirror${skipped > 0 ? `; ${skipped} not started (--keep-going copies the rest)` : ''}`);
    }
    return 0;
  },
};
