import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { ArchwayError, errorMessage, redact } from '../util/index.js';
import { formatHelp, parseCommandArgs, type Command, type CommandContext } from './command.js';
import { commands } from './commands/index.js';
import { makeProgress } from './render.js';

// Set by scripts/bundle.mjs in dist/archway.mjs; the unbundled modules read package.json instead.
declare const ARCHWAY_VERSION: string | undefined;

function version(): string {
  if (typeof ARCHWAY_VERSION === 'string') return ARCHWAY_VERSION;
  const pkgPath = fileURLToPath(new URL('../../../package.json', import.meta.url));
  return (JSON.parse(readFileSync(pkgPath, 'utf8')) as { version: string }).version;
}

function topHelp(): string {
  const w = Math.max(...commands.map((c) => c.name.length));
  return [
    'Usage: archway COMMAND [OPTIONS]',
    '',
    'Build and publish multi-architecture container images, without a daemon.',
    '',
    'Commands:',
    ...commands.map((c) => `  ${c.name.padEnd(w)}  ${c.summary}`),
    '',
    'Global options:',
    '  -h, --help     show help (archway COMMAND --help for a command)',
    '  --version      print the version',
    '  --debug        print stack traces',
    '',
    'Exit codes: 0 ok, 1 a step failed, 2 usage or parse error, 3 registry or network, 4 auth,',
    '5 integrity, 6 unsafe input refused, 7 sandbox or emulation unavailable, 8 local storage, 130 interrupted.',
    '',
  ].join('\n');
}

export interface Io {
  stdout: CommandContext['stdout'];
  stderr: CommandContext['stderr'];
  stdin: NodeJS.ReadableStream;
  env: NodeJS.ProcessEnv;
}

/** Runs archway with the given arguments and returns the exit code; the library form of the CLI. */
export async function main(argv: string[], io: Io, signal: AbortSignal, hooks: Pick<CommandContext, 'interceptSignal'> = {}): Promise<number> {
  const debug = argv.includes('--debug');
  try {
    if (argv.length === 0 || argv[0] === '--help' || argv[0] === '-h' || argv[0] === 'help') {
      io.stdout.write(topHelp());
      return argv.length === 0 ? 2 : 0;
    }
    if (argv[0] === '--version' || argv[0] === 'version') {
      io.stdout.write(`archway ${version()}\n`);
      return 0;
    }
    let cmd: Command | undefined = commands.find((c) => c.name === argv[0]);
    if (!cmd) {
      const name = argv[0] as string;
      const near = commands.map((c) => c.name).filter((n) => n.startsWith(name.slice(0, 2)));
      throw new ArchwayError('USAGE', `unknown command "${name}"${near.length ? ` (did you mean ${near.join(' or ')}?)` : ''}`, { hint: "see 'archway --help'" });
    }
    let path = `archway ${cmd.name}`;
    let rest = argv.slice(1);
    while (cmd.subcommands && rest[0] && !rest[0].startsWith('-')) {
      const sub: Command | undefined = cmd.subcommands.find((c) => c.name === rest[0]);
      if (!sub) throw new ArchwayError('USAGE', `unknown command "${path} ${rest[0]}"`, { hint: `see '${path} --help'` });
      cmd = sub;
      path = `${path} ${sub.name}`;
      rest = rest.slice(1);
    }
    const { values, positionals } = parseCommandArgs(cmd, rest, path);
    if (values.help === true || !cmd.run) {
      io.stdout.write(formatHelp(cmd, path));
      return values.help === true ? 0 : 2;
    }
    const progressMode = typeof values.progress === 'string' ? values.progress : 'auto';
    const ctx: CommandContext = {
      stdout: io.stdout,
      stderr: io.stderr,
      // Read through: process.stdin is a stream made on first use, which only login needs.
      get stdin() {
        return io.stdin;
      },
      env: io.env,
      values,
      positionals,
      signal,
      debug,
      progress: makeProgress(progressMode, io.stderr),
      ...hooks,
    };
    return await cmd.run(ctx);
  } catch (e) {
    return reportError(e, io, debug, signal);
  }
}

function reportError(e: unknown, io: Io, debug: boolean, signal: AbortSignal): number {
  if (signal.aborted) {
    io.stderr.write('archway: interrupted\n');
    return 130;
  }
  if (e instanceof ArchwayError) {
    io.stderr.write(`archway: error: ${redact(e.message)}\n`);
    if (e.hint) io.stderr.write(`hint: ${redact(e.hint)}\n`);
    if (debug) io.stderr.write(`${redact(e.stack ?? '')}\n`);
    return e.exitCode;
  }
  io.stderr.write(`archway: internal error: ${redact(errorMessage(e))}\n`);
  if (debug && e instanceof Error) io.stderr.write(`${redact(e.stack ?? '')}\n`);
  else io.stderr.write('run again with --debug for a stack trace\n');
  return 1;
}

/** The process entry: wires signals to an AbortSignal (SIGINT/SIGTERM cancel the work; a second one exits at once). */
export async function runCli(argv: string[] = process.argv.slice(2)): Promise<void> {
  const controller = new AbortController();
  let signals = 0;
  let interceptor: ((sig: NodeJS.Signals) => boolean) | undefined;
  const onSignal = (sig: NodeJS.Signals): void => {
    const take = interceptor;
    interceptor = undefined;
    if (take?.(sig)) return;
    signals++;
    if (signals > 1) process.exit(sig === 'SIGINT' ? 130 : 143);
    controller.abort(new ArchwayError('INTERRUPTED', `interrupted by ${sig}`, { details: { signal: sig } }));
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  const io: Io = {
    stdout: process.stdout,
    stderr: process.stderr,
    // Made on first use only: opening stdin costs a stream and a file descriptor at every start.
    get stdin() {
      return process.stdin;
    },
    env: process.env,
  };
  const code = await main(argv, io, controller.signal, {
    interceptSignal: (handler) => {
      interceptor = handler;
    },
  });
  const reason: unknown = controller.signal.reason;
  const bySigterm = reason instanceof ArchwayError && reason.details.signal === 'SIGTERM';
  process.exitCode = controller.signal.aborted && code !== 0 ? (bySigterm ? 143 : 130) : code;
}
