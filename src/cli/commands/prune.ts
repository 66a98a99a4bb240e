import type { Command } from '../command.js';
import { stringOpt, usageError } from '../command.js';
import { humanSize, openStore } from './images.js';

export const pruneCommand: Command = {
  name: 'prune',
  usage: '[OPTIONS]',
  summary: 'Free the build cache, and blobs, snapshots and temp files that no image uses',
  description:
    'Removes the build cache (step records and RUN --mount=type=cache directories) and then what no image\n' +
    'uses. Anything changed in the last 10 minutes is kept (a running build may not have tagged yet);\n' +
    '--all prunes it too. What a running container or build uses (its unpacked layers, their blobs and\n' +
    'its working directories) is kept, even when its image was removed. Temp files of writers that are\n' +
    'gone are removed.',
  options: {
    all: { type: 'boolean', short: 'a', help: 'no grace period for recent content' },
    'keep-cache': { type: 'boolean', help: 'keep the build cache; free only what neither an image nor the cache uses' },
    'dry-run': { type: 'boolean', help: 'print what would be freed, free nothing' },
    format: { type: 'string', help: 'FORMAT:text (default) or json' },
  },
  async run(ctx) {
    const format = stringOpt(ctx, 'format') ?? 'text';
    if (format !== 'text' && format !== 'json') throw usageError(`unknown --format "${format}" (text or json)`, 'prune');
    const store = await openStore(ctx);
    const r = await store.prune({
      signal: ctx.signal,
      dryRun: ctx.values['dry-run'] === true,
      buildCache: ctx.values['keep-cache'] !== true,
      ...(ctx.values.all === true ? { gracePeriodMs: 0 } : {}),
    });
    if (format === 'json') {
      ctx.stdout.write(`${JSON.stringify(r, null, 2)}\n`);
      return 0;
    }
    const verb = r.dryRun ? 'Would remove' : 'Removed';
    ctx.stdout.write(
      `${verb} ${r.buildCache.count} build cache entries (${humanSize(r.buildCache.bytes)}), ${r.blobs.count} blobs (${humanSize(r.blobs.bytes)}), ${r.snapshots.count} snapshots (${humanSize(r.snapshots.bytes)}), ${r.temp.count} temp files (${humanSize(r.temp.bytes)})\n` +
        `Total ${r.dryRun ? 'reclaimable' : 'reclaimed'}: ${humanSize(r.totalBytes)}\n`,
    );
    return 0;
  },
};
