import { ArchwayError, isArchwayError } from '../../util/index.js';
import type { Command } from '../command.js';
import { usageError } from '../command.js';
import { openStore } from './images.js';

export const rmCommand: Command = {
  name: 'rm',
  usage: 'NAME [NAME...]',
  summary: 'Remove image names from the local store',
  description: 'Removes the names; the blobs they used are freed by `archway prune`.',
  options: { force: { type: 'boolean', short: 'f', help: 'do not fail when a name is not in the store' } },
  async run(ctx) {
    if (ctx.positionals.length === 0) throw usageError('"archway rm" requires at least one NAME', 'rm');
    const store = await openStore(ctx);
    const missing: string[] = [];
    for (const name of ctx.positionals) {
      try {
        ctx.stdout.write(`Untagged: ${await store.remove(name, { signal: ctx.signal })}\n`);
      } catch (e) {
        if (isArchwayError(e, 'NOT_FOUND')) {
          if (ctx.values.force === true) continue;
          missing.push(name);
          continue;
        }
        throw e;
      }
    }
    if (missing.length > 0) {
      throw new ArchwayError('NOT_FOUND', `not in the local store: ${missing.join(', ')}`, { hint: "see 'archway images'", details: { names: missing } });
    }
    return 0;
  },
};
