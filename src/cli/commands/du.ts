import type { Command } from '../command.js';
import { stringOpt, usageError } from '../command.js';
import { humanSize, openStore, table } from './images.js';

export const duCommand: Command = {
  name: 'du',
  usage: '[OPTIONS]',
  summary: 'Show the disk usage of the local store',
  options: { format: { type: 'string', help: 'FORMAT:table (default) or json' } },
  async run(ctx) {
    const format = stringOpt(ctx, 'format') ?? 'table';
    if (format !== 'table' && format !== 'json') throw usageError(`unknown --format "${format}" (table or json)`, 'du');
    const store = await openStore(ctx);
    const du = await store.diskUsage({ signal: ctx.signal });
    if (format === 'json') {
      ctx.stdout.write(`${JSON.stringify(du, null, 2)}\n`);
      return 0;
    }
    const rows = [
      ['TYPE', 'COUNT', 'SIZE'],
      ['Blobs', String(du.blobs.count), humanSize(du.blobs.bytes)],
      ['Snapshots', String(du.snapshots.count), humanSize(du.snapshots.bytes)],
      ['Cache records', String(du.cacheRecords.count), humanSize(du.cacheRecords.bytes)],
      ['Temp files', String(du.temp.count), humanSize(du.temp.bytes)],
    ];
    ctx.stdout.write(`Store: ${du.home} (${du.images} images)\n${table(rows)}Reclaimable: ${humanSize(du.reclaimable)} (archway prune --all)\n`);
    return 0;
  },
};
