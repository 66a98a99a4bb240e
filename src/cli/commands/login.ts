import { ArchwayError } from '../../util/index.js';
import { login, loadRegistrySettings } from '../../registry/index.js';
import { boolOpt, listOpt, readStdin, requirePositionals, stringOpt, usageError, type Command, type CommandContext } from '../command.js';

/** Asks one question on the terminal; with `hidden`, what is typed is not echoed. */
async function prompt(ctx: CommandContext, question: string, hidden: boolean): Promise<string> {
  const stdin = ctx.stdin as NodeJS.ReadStream;
  ctx.stderr.write(question);
  const raw = typeof stdin.setRawMode === 'function' && stdin.isTTY;
  if (raw) stdin.setRawMode(true);
  stdin.resume();
  try {
    return await new Promise<string>((resolve, reject) => {
      let answer = '';
      const onAbort = (): void => {
        cleanup();
        reject(new ArchwayError('INTERRUPTED', 'login interrupted'));
      };
      const onData = (chunk: Buffer | string): void => {
        for (const ch of chunk.toString()) {
          if (ch === '\r' || ch === '\n') {
            cleanup();
            ctx.stderr.write('\n');
            resolve(answer);
            return;
          }
          if (ch === '\u0003') {
            onAbort();
            return;
          }
          if (ch === '\u007f' || ch === '\b') {
            if (answer.length > 0) {
              answer = answer.slice(0, -1);
              if (!hidden && raw) ctx.stderr.write('\b \b');
            }
            continue;
          }
          answer += ch;
          if (!hidden && raw) ctx.stderr.write(ch);
        }
      };
      const cleanup = (): void => {
        stdin.removeListener('data', onData);
        ctx.signal.removeEventListener('abort', onAbort);
      };
      ctx.signal.addEventListener('abort', onAbort, { once: true });
      stdin.on('data', onData);
    });
  } finally {
    if (raw) stdin.setRawMode(false);
    stdin.pause();
  }
}

export const loginCommand: Command = {
  name: 'login',
  usage: '[OPTIONS] REGISTRY',
  summary: 'Log in to a registry (credentials are checked, then saved in Docker\'s config.json or its credential helper)',
  description: `Checks the user and password against the registry before saving anything. Credentials go to the
credential helper named by credsStore/credHelpers in $DOCKER_CONFIG/config.json (default ~/.docker),
or base64-encoded into its "auths" (file mode 0600).

Examples:
  echo "$TOKEN" | archway login ghcr.io -u me --password-stdin
  archway login localhost:5000`,
  options: {
    username: { type: 'string', short: 'u', help: 'USER:user name' },
    password: { type: 'string', short: 'p', help: 'PASSWORD:password (insecure: prefer --password-stdin)' },
    'password-stdin': { type: 'boolean', help: 'read the password from stdin' },
    'insecure-registry': { type: 'string', multiple: true, help: 'HOST:allow plain HTTP or unverified TLS for this host' },
  },
  async run(ctx) {
    requirePositionals(ctx, 1, 1, 'a REGISTRY', 'login');
    const registry = ctx.positionals[0] as string;
    let username = stringOpt(ctx, 'username');
    let password = stringOpt(ctx, 'password');
    const fromStdin = boolOpt(ctx, 'password-stdin');
    if (password !== undefined && fromStdin) throw usageError('--password and --password-stdin are mutually exclusive', 'login');
    if (password !== undefined) ctx.stderr.write('WARNING! Using --password on the command line is insecure (shell history, process list). Use --password-stdin.\n');
    const tty = (ctx.stdin as NodeJS.ReadStream).isTTY === true;
    if (fromStdin) {
      if (username === undefined) throw usageError('--password-stdin needs --username', 'login');
      // One trailing newline (echo, a file) is not part of the password.
      password = (await readStdin(ctx, 64 * 1024, '--password-stdin')).replace(/\r?\n$/, '');
    }
    if (username === undefined) {
      if (!tty) throw usageError('no user name: use --username (stdin is not a terminal)', 'login');
      username = (await prompt(ctx, 'Username: ', false)).trim();
    }
    if (password === undefined) {
      if (!tty) throw usageError('no password: use --password-stdin (stdin is not a terminal)', 'login');
      password = await prompt(ctx, 'Password: ', true);
    }
    const settings = await loadRegistrySettings({ env: ctx.env, signal: ctx.signal });
    const result = await login(registry, {
      username,
      password,
      settings,
      insecureRegistries: listOpt(ctx, 'insecure-registry'),
      env: ctx.env,
      signal: ctx.signal,
    });
    ctx.stdout.write(`Login succeeded: ${result.registry} (saved in ${result.storedIn === 'helper' ? 'the credential helper' : result.file})\n`);
    return 0;
  },
};
