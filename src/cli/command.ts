import { parseArgs, type ParseArgsConfig } from 'node:util';
import { ArchwayError } from '../util/index.js';
import type { ProgressSink } from '../progress/index.js';

export type OptionSpec = {
  type: 'string' | 'boolean';
  short?: string;
  multiple?: boolean;
  default?: string | boolean | string[];
  /** One line for `archway COMMAND --help`; the value's name before a colon: 'ARCH:platforms to build'. */
  help: string;
  /** The value's name when it holds a colon itself (HOST:CONTAINER); `help` is then all text. */
  value?: string;
};

export interface CommandContext {
  /** Parsed flags; string options with `multiple` are string[]. */
  values: Record<string, string | boolean | string[] | undefined>;
  positionals: string[];
  stdout: NodeJS.WritableStream & { isTTY?: boolean };
  stderr: NodeJS.WritableStream & { isTTY?: boolean };
  stdin: NodeJS.ReadableStream;
  env: NodeJS.ProcessEnv;
  signal: AbortSignal;
  progress: ProgressSink;
  debug: boolean;
  /**
   * Lets a command take the first SIGINT/SIGTERM instead of having `signal` abort: the handler
   * returns true when it dealt with it (archway run passes it to the container). The next signal
   * aborts as usual. Absent when the caller does not run archway as a process.
   */
  interceptSignal?: (handler: (sig: NodeJS.Signals) => boolean) => void;
}

export interface Command {
  name: string;
  /** `archway NAME` usage line after the command name: '[OPTIONS] SRC DST'. */
  usage: string;
  summary: string;
  /** More text for `--help`: what it does, examples. */
  description?: string;
  options: Record<string, OptionSpec>;
  /** Subcommands (`archway index create`); when set, `run` is not called for the parent. */
  subcommands?: Command[];
  /** Returns the exit code (0 on success); errors are thrown as ArchwayError. */
  run?(ctx: CommandContext): Promise<number>;
  /** Whether positionals after the first may look like flags (`archway run IMAGE sh -c ...`). */
  stopAtFirstPositional?: number;
}

export function stringOpt(ctx: CommandContext, name: string): string | undefined {
  const v = ctx.values[name];
  if (Array.isArray(v)) return v[v.length - 1];
  return typeof v === 'string' ? v : undefined;
}

export function listOpt(ctx: CommandContext, name: string): string[] {
  const v = ctx.values[name];
  if (Array.isArray(v)) return v;
  return typeof v === 'string' ? [v] : [];
}

export function boolOpt(ctx: CommandContext, name: string): boolean {
  return ctx.values[name] === true;
}

export function usageError(message: string, command?: string): ArchwayError {
  return new ArchwayError('USAGE', message, { hint: `see 'archway ${command ? `${command} ` : ''}--help'` });
}

export function requirePositionals(ctx: CommandContext, min: number, max: number, names: string, command: string): void {
  if (ctx.positionals.length < min) throw usageError(`"archway ${command}" requires ${names}`, command);
  if (ctx.positionals.length > max) throw usageError(`"archway ${command}" got unexpected argument "${ctx.positionals[max]}"`, command);
}

export const GLOBAL_OPTIONS: Record<string, OptionSpec> = {
  help: { type: 'boolean', short: 'h', help: 'show help' },
  debug: { type: 'boolean', help: 'print stack traces and internal detail' },
};

/** Parses argv for one command; unknown flags are usage errors that name the flag. */
/** Whether a usage line names operands (IMAGE, SRC...), not only options and their values. */
function takesOperands(usage: string): boolean {
  return /\b[A-Z]{2,}\b/.test(usage.replace(/\[OPTIONS\]/g, '').replace(/--[a-z-]+( [A-Z]+)?/g, ''));
}

export function parseCommandArgs(cmd: Command, argv: string[], path: string): { values: CommandContext['values']; positionals: string[] } {
  const options: ParseArgsConfig['options'] = {};
  for (const [name, spec] of Object.entries({ ...GLOBAL_OPTIONS, ...cmd.options })) {
    options[name] = { type: spec.type, ...(spec.short ? { short: spec.short } : {}), ...(spec.multiple ? { multiple: true } : {}) };
  }
  // Everything after the N-th positional belongs to the program being run, not to archway.
  let own = argv;
  let rest: string[] = [];
  if (cmd.stopAtFirstPositional !== undefined) {
    let seen = 0;
    for (let i = 0; i < argv.length; i++) {
      const a = argv[i] as string;
      if (a === '--') {
        own = argv.slice(0, i);
        rest = argv.slice(i + 1);
        break;
      }
      if (a.startsWith('-')) {
        const name = a.replace(/^-+/, '').split('=')[0] as string;
        const spec = Object.entries({ ...GLOBAL_OPTIONS, ...cmd.options }).find(([n, s]) => n === name || s.short === name);
        if (spec && spec[1].type === 'string' && !a.includes('=')) i++;
        continue;
      }
      seen++;
      if (seen === cmd.stopAtFirstPositional) {
        own = argv.slice(0, i + 1);
        rest = argv.slice(i + 1);
        break;
      }
    }
  }
  try {
    const parsed = parseArgs({ args: own, options, allowPositionals: true, strict: true });
    const values = parsed.values as CommandContext['values'];
    for (const [name, spec] of Object.entries(cmd.options)) {
      if (values[name] === undefined && spec.default !== undefined) values[name] = spec.default;
    }
    if (parsed.positionals.length > 0 && !takesOperands(cmd.usage)) throw new Error(`takes no arguments, got "${parsed.positionals[0] as string}"`);
    return { values, positionals: [...parsed.positionals, ...rest] };
  } catch (e) {
    const msg = (e as Error).message.replace(/\. To specify a positional argument.*$/, '');
    throw usageError(`${path}: ${msg}`, path.replace(/^archway ?/, ''));
  }
}

export function formatHelp(cmd: Command, path: string): string {
  const lines = [`Usage: ${path} ${cmd.usage}`, '', cmd.summary];
  if (cmd.description) lines.push('', cmd.description.trim());
  if (cmd.subcommands && cmd.subcommands.length > 0) {
    lines.push('', 'Commands:');
    const w = Math.max(...cmd.subcommands.map((c) => c.name.length));
    for (const c of cmd.subcommands) lines.push(`  ${c.name.padEnd(w)}  ${c.summary}`);
  }
  const opts = Object.entries({ ...cmd.options, ...GLOBAL_OPTIONS });
  if (opts.length > 0) {
    lines.push('', 'Options:');
    const rows = opts.map(([name, spec]) => {
      const [valueName, text] = spec.value !== undefined ? [spec.value, spec.help] : spec.help.includes(':') && spec.type === 'string' ? (spec.help.split(/:(.*)/s) as [string, string]) : ['', spec.help];
      const flag = `${spec.short ? `-${spec.short}, ` : '    '}--${name}${spec.type === 'string' ? ` ${valueName || 'VALUE'}` : ''}`;
      const shownDefault = typeof spec.default === 'string' && spec.default !== '' && !/default/.test(text) ? ` (default ${spec.default})` : '';
      return [flag, text + shownDefault + (spec.multiple ? ' (repeatable)' : '')] as const;
    });
    const w = Math.max(...rows.map((r) => r[0].length));
    for (const [flag, text] of rows) lines.push(`  ${flag.padEnd(w)}  ${text}`);
  }
  return `${lines.join('\n')}\n`;
}

/** All of stdin as text (a password, a Dockerfile), refusing more than `limit` bytes; `what` names the option in the error. */
export async function readStdin(ctx: CommandContext, limit: number, what: string): Promise<string> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of ctx.stdin) {
    const b = typeof chunk === 'string' ? Buffer.from(chunk) : (chunk as Buffer);
    size += b.length;
    if (size > limit) throw new ArchwayError('USAGE', `${what}: more than ${limit >= 1024 * 1024 ? `${limit / 1024 / 1024} MiB` : `${limit / 1024} KiB`} on stdin`);
    chunks.push(b);
  }
  return Buffer.concat(chunks).toString('utf8');
}
