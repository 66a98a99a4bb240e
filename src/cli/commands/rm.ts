import { ArchwayError, isArchwayError } from '../../util/index.js';
import type { Command } from '../command.js';
import { usageError } from '../command.js';
import { openStore } from './images.js';

export const rmCommand: Command = {
  name: 'rm',
  usage: 'NAME [NAME...]',
  summary: 'Remove image names from the local store',
  description: 'Removes the names (or the name of a digest, as archway images shows it); the blobs they used are\nfreed by `archway prune`.',
  options: { force: { type: 'boolean', short: 'f', help: 'do not fail when a name is not in the store; remove every name of a digest' } },
  async run(ctx) {
    if (ctx.positionals.length === 0) throw usageError('"archway rm" requires at least one NAME', 'rm');
    const store = await openStore(ctx);
    const missing: string[] = [];
    for (const name of ctx.positionals) {
      try {
        // A digest as `archway images` shows it (sha256:abc..., or its first 12 or more hex
        // digits) names the images with that digest, as an image ID does for docker rmi.
        const byDigest = /^(sha256:)?[0-9a-f]{12,64}$/.test(name) ? (await store.list({ signal: ctx.signal })).filter((e) => e.descriptor.digest.startsWith(name.startsWith('sha256:') ? name : `sha256:${name}`)) : [];
        const digests = new Set(byDigest.map((e) => e.descriptor.digest));
        if (digests.size > 1) throw new ArchwayError('USAGE', `"${name}" is the start of several image digests; give more of it`);
        if (byDigest.length > 1 && ctx.values.force !== true) {
          throw new ArchwayError('USAGE', `${name} is named ${byDigest.map((e) => e.name).join(', ')}; remove the names, or all of them with -f`);
        }
        const names = byDigest.length > 0 ? byDigest.map((e) => e.name) : [name];
        for (const n of names) ctx.stdout.write(`Untagged: ${await store.remove(n, { signal: ctx.signal })}\n`);
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
