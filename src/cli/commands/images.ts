import { shortDigest } from '../../oci/index.js';
import { familiarName, parseReference } from '../../ref/index.js';
import { Store, storeHome } from '../../store/index.js';
import type { Command, CommandContext } from '../command.js';
import { stringOpt, usageError } from '../command.js';

/** `1.2MB`, as docker prints sizes (decimal units). */
export function humanSize(bytes: number): string {
  const units = ['B', 'kB', 'MB', 'GB', 'TB'];
  let v = bytes;
  let i = 0;
  while (v >= 1000 && i < units.length - 1) {
    v /= 1000;
    i++;
  }
  return i === 0 ? `${v}B` : `${v < 10 ? v.toFixed(2) : v < 100 ? v.toFixed(1) : v.toFixed(0)}${units[i]}`;
}

export function openStore(ctx: CommandContext): Promise<Store> {
  return Store.open({ home: storeHome(ctx.env), signal: ctx.signal });
}

export function table(rows: string[][]): string {
  const widths = rows[0]?.map((_, c) => Math.max(...rows.map((r) => (r[c] ?? '').length))) ?? [];
  return rows.map((r) => r.map((cell, c) => (c === r.length - 1 ? cell : cell.padEnd((widths[c] ?? 0) + 3))).join('').trimEnd()).join('\n') + '\n';
}

function displayName(full: string): string {
  try {
    return familiarName(parseReference(full));
  } catch {
    return full;
  }
}

export const imagesCommand: Command = {
  name: 'images',
  usage: '[OPTIONS]',
  summary: 'List the images in the local store',
  description: 'Shows each tagged image with its digest, platforms and the size of all its blobs (blobs shared by\nimages count in each; `archway du` shows what the store holds). The store lives at $ARCHWAY_HOME\n(default $XDG_DATA_HOME/archway or ~/.local/share/archway).',
  options: {
    format: { type: 'string', help: 'FORMAT:table (default) or json' },
    'no-trunc': { type: 'boolean', help: 'show full names and digests' },
  },
  async run(ctx) {
    const format = stringOpt(ctx, 'format') ?? 'table';
    if (format !== 'table' && format !== 'json') throw usageError(`unknown --format "${format}" (table or json)`, 'images');
    const store = await openStore(ctx);
    const images = await store.images({ signal: ctx.signal });
    if (format === 'json') {
      ctx.stdout.write(`${JSON.stringify(images, null, 2)}\n`);
      return 0;
    }
    const full = ctx.values['no-trunc'] === true;
    const rows = [['NAME', 'DIGEST', 'PLATFORMS', 'SIZE']];
    for (const i of images) rows.push([full ? i.name : displayName(i.name), full ? i.digest : shortDigest(i.digest), i.platforms.join(',') || '-', humanSize(i.size)]);
    ctx.stdout.write(table(rows));
    return 0;
  },
};
