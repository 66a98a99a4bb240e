import { installEmulators, readBinfmt, supportedPlatforms, uninstallEmulators } from '../../sandbox/index.js';
import { boolOpt, stringOpt, usageError, type Command } from '../command.js';

function list(text: string): 'all' | string[] {
  if (text === 'all') return 'all';
  const items = text.split(',').map((s) => s.trim()).filter(Boolean);
  if (items.length === 0) throw usageError('expected "all" or a comma-separated list such as arm64,s390x', 'binfmt');
  return items;
}

export const binfmtCommand: Command = {
  name: 'binfmt',
  usage: '[--install ARCHS | --uninstall NAMES] [--persist] [--format json]',
  summary: 'Show and register QEMU emulators (binfmt_misc) for foreign platforms',
  description: `Without options, prints the registered emulators, whether each has the F (fix-binary) flag that
emulation inside a build's chroot needs, the host's native platforms, and every platform it can run.
--install registers emulators from the installed QEMU user-mode static binaries (Debian package
qemu-user-static) with the F flag; --persist also writes them to /etc/binfmt.d/ so they survive a reboot.

Examples:
  archway binfmt --install all
  archway binfmt --install arm64,s390x --persist
  archway binfmt --format json`,
  options: {
    install: { type: 'string', help: 'ARCHS:all, or a list such as arm64,arm,ppc64le,s390x,riscv64' },
    uninstall: { type: 'string', help: 'NAMES:all, or emulators to remove (qemu-aarch64 or arm64)' },
    persist: { type: 'boolean', help: 'with --install/--uninstall: also write/remove /etc/binfmt.d/ entries' },
    format: { type: 'string', default: 'text', help: 'FORMAT:text or json' },
  },
  async run(ctx) {
    if (ctx.positionals.length > 0) throw usageError(`unexpected argument "${ctx.positionals[0]}"`, 'binfmt');
    const format = stringOpt(ctx, 'format') ?? 'text';
    if (format !== 'text' && format !== 'json') throw usageError(`--format "${format}": expected text or json`, 'binfmt');
    const persist = boolOpt(ctx, 'persist');
    const install = stringOpt(ctx, 'install');
    const uninstall = stringOpt(ctx, 'uninstall');
    const s = { signal: ctx.signal };
    if (install) {
      const r = await installEmulators(list(install), { ...s, persist });
      if (format === 'json') ctx.stdout.write(`${JSON.stringify(r, null, 2)}\n`);
      else {
        for (const n of r.installed) ctx.stdout.write(`installed ${n}\n`);
        for (const n of r.replaced) ctx.stdout.write(`replaced ${n} (it lacked the F flag)\n`);
        for (const n of r.present) ctx.stdout.write(`already registered ${n}\n`);
        for (const k of r.skipped) ctx.stdout.write(`skipped ${k.name}: ${k.reason}\n`);
        for (const f of r.persisted) ctx.stdout.write(`persisted ${f}\n`);
      }
      return 0;
    }
    if (uninstall) {
      const r = await uninstallEmulators(list(uninstall), s);
      if (format === 'json') ctx.stdout.write(`${JSON.stringify(r, null, 2)}\n`);
      else {
        for (const n of r.removed) ctx.stdout.write(`removed ${n}\n`);
        for (const n of r.missing) ctx.stdout.write(`not registered ${n}\n`);
      }
      return 0;
    }
    const state = await readBinfmt(s);
    const supported = await supportedPlatforms(s);
    if (format === 'json') {
      ctx.stdout.write(`${JSON.stringify({ supported: supported.platforms, emulators: state.emulators.map((e) => e.name), native: supported.native, details: state.emulators, warnings: supported.warnings }, null, 2)}\n`);
      return 0;
    }
    const lines = [`binfmt_misc: ${state.mounted ? (state.enabled ? 'mounted, enabled' : 'mounted, DISABLED') : 'not mounted'}`, `native: ${supported.native.join(', ')}`];
    lines.push(`emulators:${state.emulators.length === 0 ? ' none (archway binfmt --install all)' : ''}`);
    for (const e of state.emulators) {
      lines.push(`  ${e.name.padEnd(20)} ${e.enabled ? 'enabled ' : 'disabled'} flags=${e.flags || '-'}${e.fixBinary ? '' : ' (no F flag: fails inside a chroot)'} ${e.interpreter}${e.platform ? ` -> ${e.platform}` : ''}`);
    }
    lines.push(`supported: ${supported.platforms.join(', ')}`);
    for (const w of supported.warnings) lines.push(`warning: ${w}`);
    ctx.stdout.write(`${lines.join('\n')}\n`);
    return 0;
  },
};
