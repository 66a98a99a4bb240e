/**
 * Credentials from Docker's config file (`$DOCKER_CONFIG/config.json`, default ~/.docker): `auths`
 * (base64 `auth`, `identitytoken`), `credsStore` and `credHelpers` through the
 * `docker-credential-<name>` helper protocol (get/store/erase over stdin/stdout).
 */
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { promises as fs } from 'node:fs';
import { homedir } from 'node:os';
import * as path from 'node:path';
import { ArchwayError, abortError, errorMessage, isErrnoException, redact } from '../util/index.js';

export type Credential =
  | { username: string; password: string; identityToken?: undefined }
  /** An OAuth2 refresh token (Docker's `identitytoken`); sent to the token endpoint, never to the registry. */
  | { identityToken: string; username?: string; password?: undefined };

export interface CredentialSource {
  get(registry: string, opts?: { signal?: AbortSignal }): Promise<Credential | undefined>;
}

/** Credentials given directly (tests, --username/--password style programs). */
export class StaticCredentials implements CredentialSource {
  constructor(private readonly byRegistry: Record<string, Credential>) {}
  async get(registry: string): Promise<Credential | undefined> {
    return this.byRegistry[registry];
  }
}

export const anonymousCredentials: CredentialSource = { get: async () => undefined };

export const DOCKER_HUB_CONFIG_KEY = 'https://index.docker.io/v1/';

export function dockerConfigDir(env: NodeJS.ProcessEnv = process.env): string {
  const dir = env['DOCKER_CONFIG'];
  if (dir) return dir;
  return path.join(env['HOME'] ?? homedir(), '.docker');
}

/** The key Docker uses in config.json for a registry name. */
export function configKeyFor(registry: string): string {
  if (registry === 'docker.io' || registry === 'index.docker.io' || registry === 'registry-1.docker.io') return DOCKER_HUB_CONFIG_KEY;
  return registry;
}

/** Docker's ConvertToHostname: a key may be a URL (`https://host/v1/`). */
function keyHostname(key: string): string {
  let h = key.replace(/^https?:\/\//, '');
  const slash = h.indexOf('/');
  if (slash >= 0) h = h.slice(0, slash);
  return h;
}

function sameRegistry(key: string, registry: string): boolean {
  const k = keyHostname(key);
  const r = keyHostname(configKeyFor(registry));
  return k === r || (r === 'index.docker.io' && (k === 'docker.io' || k === 'registry-1.docker.io'));
}

interface DockerConfigFile {
  auths?: Record<string, { auth?: string; identitytoken?: string; username?: string; password?: string }>;
  credsStore?: string;
  credHelpers?: Record<string, string>;
  [other: string]: unknown;
}

interface HelperReply {
  ServerURL?: string;
  Username?: string;
  Secret?: string;
}

/** Runs `docker-credential-NAME ACTION` with `input` on stdin; resolves stdout. */
export function runCredentialHelper(name: string, action: 'get' | 'store' | 'erase' | 'list', input: string, opts: { signal?: AbortSignal; env?: NodeJS.ProcessEnv } = {}): Promise<string> {
  if (!/^[A-Za-z0-9._-]+$/.test(name)) return Promise.reject(new ArchwayError('AUTH', `invalid credential helper name "${name}"`));
  const program = `docker-credential-${name}`;
  return new Promise((resolve, reject) => {
    if (opts.signal?.aborted) {
      reject(abortError(opts.signal));
      return;
    }
    const child = spawn(program, [action], { stdio: ['pipe', 'pipe', 'pipe'], env: opts.env ?? process.env, ...(opts.signal ? { signal: opts.signal } : {}) });
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => {
      if (out.length < 1024 * 1024) out += d.toString('utf8');
    });
    child.stderr.on('data', (d: Buffer) => {
      if (err.length < 4096) err += d.toString('utf8');
    });
    child.on('error', (e) => {
      if (opts.signal?.aborted) reject(abortError(opts.signal));
      else if (isErrnoException(e, 'ENOENT')) reject(new ArchwayError('AUTH', `credential helper ${program} not found in PATH`, { hint: 'install it or remove it from credsStore/credHelpers in the Docker config file' }));
      else reject(new ArchwayError('AUTH', `credential helper ${program}: ${redact(errorMessage(e))}`));
    });
    child.on('close', (code) => {
      if (code === 0) resolve(out);
      else {
        // Helpers answer "credentials not found in native keychain" on stdout for a missing entry.
        const msg = (out.trim() || err.trim()).slice(0, 300);
        const e = new ArchwayError('AUTH', `credential helper ${program} ${action} failed: ${redact(msg)}`, { details: { helperOutput: redact(msg) } });
        reject(e);
      }
    });
    child.stdin.on('error', () => undefined);
    child.stdin.end(input);
  });
}

function isNotFoundReply(e: unknown): boolean {
  return e instanceof ArchwayError && /credentials not found/i.test(e.message);
}

export interface DockerConfigOptions {
  /** The directory holding config.json (default: $DOCKER_CONFIG or ~/.docker). */
  configDir?: string;
  env?: NodeJS.ProcessEnv;
}

/** Reads and writes Docker's config.json the way `docker login` does. */
export class DockerConfigCredentials implements CredentialSource {
  readonly configDir: string;
  readonly file: string;
  private readonly env: NodeJS.ProcessEnv;
  constructor(opts: DockerConfigOptions = {}) {
    this.env = opts.env ?? process.env;
    this.configDir = opts.configDir ?? dockerConfigDir(this.env);
    this.file = path.join(this.configDir, 'config.json');
  }

  async read(): Promise<DockerConfigFile> {
    let text: string;
    try {
      text = await fs.readFile(this.file, 'utf8');
    } catch (e) {
      if (isErrnoException(e, 'ENOENT')) return {};
      throw new ArchwayError('AUTH', `cannot read ${this.file}: ${errorMessage(e)}`);
    }
    try {
      const v: unknown = JSON.parse(text);
      if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new Error('not a JSON object');
      return v as DockerConfigFile;
    } catch (e) {
      // The parser's message may quote the file's content, so it is not repeated.
      throw new ArchwayError('AUTH', `${this.file} is not valid JSON`, { hint: `fix or remove the file (${e instanceof Error ? e.name : 'error'})` });
    }
  }

  /** The helper that holds this registry's credentials, if any. */
  helperFor(cfg: DockerConfigFile, registry: string): string | undefined {
    for (const [key, helper] of Object.entries(cfg.credHelpers ?? {})) if (sameRegistry(key, registry)) return helper;
    return cfg.credsStore || undefined;
  }

  async get(registry: string, opts: { signal?: AbortSignal } = {}): Promise<Credential | undefined> {
    const cfg = await this.read();
    const helper = this.helperFor(cfg, registry);
    if (helper) {
      let out: string;
      try {
        out = await runCredentialHelper(helper, 'get', configKeyFor(registry), { ...opts, env: this.env });
      } catch (e) {
        if (!isNotFoundReply(e)) throw e;
        out = '';
      }
      if (out.trim() !== '') {
        let reply: HelperReply;
        try {
          reply = JSON.parse(out) as HelperReply;
        } catch {
          throw new ArchwayError('AUTH', `credential helper docker-credential-${helper} returned something that is not JSON`);
        }
        if (reply.Secret) {
          if (reply.Username === '<token>') return { identityToken: reply.Secret };
          return { username: reply.Username ?? '', password: reply.Secret };
        }
      }
      // Docker falls back to the file's auths when a store has nothing.
    }
    for (const [key, entry] of Object.entries(cfg.auths ?? {})) {
      if (!sameRegistry(key, registry)) continue;
      if (entry.identitytoken) return { identityToken: entry.identitytoken, ...(entry.username ? { username: entry.username } : {}) };
      if (entry.auth) {
        const decoded = Buffer.from(entry.auth, 'base64').toString('utf8');
        const i = decoded.indexOf(':');
        if (i < 0) throw new ArchwayError('AUTH', `${this.file}: the auth entry for ${key} is not base64 of user:password`);
        return { username: decoded.slice(0, i), password: decoded.slice(i + 1) };
      }
      if (entry.username && entry.password) return { username: entry.username, password: entry.password };
    }
    return undefined;
  }

  /** Saves credentials: to the helper when one is configured, else base64 in `auths` (file mode 0600). */
  async store(registry: string, cred: { username: string; password: string }, opts: { signal?: AbortSignal } = {}): Promise<'helper' | 'file'> {
    const cfg = await this.read();
    const helper = this.helperFor(cfg, registry);
    const key = configKeyFor(registry);
    if (helper) {
      await runCredentialHelper(helper, 'store', JSON.stringify({ ServerURL: key, Username: cred.username, Secret: cred.password }), { ...opts, env: this.env });
      // Docker keeps an empty entry so `docker` knows a login happened.
      cfg.auths = { ...(cfg.auths ?? {}) };
      for (const k of Object.keys(cfg.auths)) if (sameRegistry(k, registry)) delete cfg.auths[k];
      cfg.auths[key] = {};
      await this.write(cfg);
      return 'helper';
    }
    cfg.auths = { ...(cfg.auths ?? {}) };
    for (const k of Object.keys(cfg.auths)) if (sameRegistry(k, registry)) delete cfg.auths[k];
    cfg.auths[key] = { auth: Buffer.from(`${cred.username}:${cred.password}`, 'utf8').toString('base64') };
    await this.write(cfg);
    return 'file';
  }

  /** Removes credentials; resolves false when there were none. */
  async erase(registry: string, opts: { signal?: AbortSignal } = {}): Promise<boolean> {
    const cfg = await this.read();
    const helper = this.helperFor(cfg, registry);
    let found = false;
    if (helper) {
      try {
        await runCredentialHelper(helper, 'erase', configKeyFor(registry), { ...opts, env: this.env });
        found = true;
      } catch (e) {
        if (!isNotFoundReply(e)) throw e;
      }
    }
    const auths = { ...(cfg.auths ?? {}) };
    for (const k of Object.keys(auths)) {
      if (sameRegistry(k, registry)) {
        delete auths[k];
        found = true;
      }
    }
    if (cfg.auths !== undefined) {
      cfg.auths = auths;
      await this.write(cfg);
    }
    return found;
  }

  /**
   * Writes config.json atomically (temp file, fsync, rename) with mode 0600. A config.json that is
   * a symlink (dotfiles kept elsewhere) stays one: the file it points to is replaced, as docker does.
   */
  private async write(cfg: DockerConfigFile): Promise<void> {
    await fs.mkdir(this.configDir, { recursive: true, mode: 0o700 });
    const file = await fs.realpath(this.file).catch(() => this.file);
    const tmp = path.join(path.dirname(file), `.config.json.${process.pid}.${randomBytes(4).toString('hex')}.tmp`);
    try {
      const fh = await fs.open(tmp, 'wx', 0o600);
      try {
        await fh.writeFile(`${JSON.stringify(cfg, null, '\t')}\n`);
        await fh.sync();
      } finally {
        await fh.close();
      }
      await fs.rename(tmp, file);
      await fs.chmod(file, 0o600);
    } catch (e) {
      await fs.rm(tmp, { force: true });
      throw new ArchwayError('STORAGE', `cannot write ${file}: ${errorMessage(e)}`);
    }
  }
}
