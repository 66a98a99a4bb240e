import { formatPlatform, hostPlatform } from '../../oci/index.js';
import { readBinfmt, runnableNatively } from '../../sandbox/index.js';
import { stringOpt, usageError, type Command } from '../command.js';

export const platformsCommand: Command = {
  name: 'platforms',
  usage: '',
  summary: "Print this host's platform and the platforms it can run natively",
  description: 'Emulated platforms (QEMU through binfmt_misc) are listed by `archway binfmt`.',
  options: { format: { type: 'string', default: 'text', help: 'FORMAT:text or json' } },
  async run(ctx) {
    const format = stringOpt(ctx, 'format') ?? 'text';
    if (format !== 'text' && format !== 'json') throw usageError(`--format "${format}": expected text or json`, 'platforms');
    const host = hostPlatform();
    // Probed: a kernel without 32-bit support does not run 386 (or arm on arm64) itself.
    const native = (await runnableNatively(await readBinfmt())).map(formatPlatform);
    if (format === 'json') {
      ctx.stdout.write(`${JSON.stringify({ host: formatPlatform(host), native }, null, 2)}\n`);
    } else {
      ctx.stdout.write(`host: ${formatPlatform(host)}\nnative: ${native.join(', ')}\n`);
    }
    return 0;
  },
};
