import { logout, normalizeRegistryName } from '../../registry/index.js';
import { requirePositionals, type Command } from '../command.js';

export const logoutCommand: Command = {
  name: 'logout',
  usage: 'REGISTRY',
  summary: 'Remove the saved credentials of a registry',
  options: {},
  async run(ctx) {
    requirePositionals(ctx, 1, 1, 'a REGISTRY', 'logout');
    const registry = normalizeRegistryName(ctx.positionals[0] as string);
    const removed = await logout(registry, { env: ctx.env, signal: ctx.signal });
    if (removed) ctx.stdout.write(`Removed login credentials for ${registry}\n`);
    else ctx.stderr.write(`Not logged in to ${registry}\n`);
    return 0;
  },
};
