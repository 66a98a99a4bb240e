/**
 * Per-host registry settings, in the shape of buildkitd.toml:
 *
 *   [registry."localhost:5000"]
 *   http = true              # plain HTTP
 *   insecure = true          # TLS without verification (falls back to plain HTTP)
 *   ca = ["/etc/certs/ca.pem"]
 *   mirrors = ["mirror.example.com"]
 *
 * Read from the file named by `--registry-config` (which must exist), else $ARCHWAY_CONFIG or
 * ~/.config/archway/config.toml (either may be missing: no settings); `--insecure-registry HOST`
 * adds `insecure` for a host.
 *
 * Timeouts come from the environment: ARCHWAY_REGISTRY_TIMEOUT (seconds to connect, and for an
 * answer to a small request: ping, manifest, token; default 30) and ARCHWAY_REGISTRY_IDLE_TIMEOUT
 * (seconds without a byte during a transfer; default 120).
 */
import { readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import * as path from 'node:path';
import { parse as parseToml } from 'smol-toml';
import { ArchwayError, errorMessage, isErrnoException } from '../util/index.js';
import { isLoopbackRegistry, registryApiHost } from '../ref/index.js';

export interface HostSettings {
  /** true: plain HTTP; false: TLS even on loopback; undefined: HTTP on loopback, TLS elsewhere. */
  http?: boolean;
  /** TLS without certificate verification; plain HTTP when the host does not speak TLS. */
  insecure?: boolean;
  /** PEM files whose certificates are trusted for this host (in addition to the system's). */
  ca?: string[];
  /** Hosts tried first for pulls, with the same repository path. */
  mirrors?: string[];
}

export interface RegistrySettings {
  hosts: Record<string, HostSettings>;
  /** From ARCHWAY_REGISTRY_TIMEOUT / ARCHWAY_REGISTRY_IDLE_TIMEOUT; the client's defaults when absent. */
  timeouts?: { connectMs?: number; responseMs?: number; idleMs?: number };
}

function secondsVar(env: NodeJS.ProcessEnv, name: string): number | undefined {
  const v = env[name];
  if (v === undefined || v.trim() === '') return undefined;
  const n = Number(v);
  if (!Number.isFinite(n) || n <= 0) throw new ArchwayError('USAGE', `${name} must be a number of seconds greater than 0, not "${v}"`);
  return Math.max(1, Math.round(n * 1000));
}

/** Timeouts set in the environment (see the file's comment). */
export function timeoutsFromEnv(env: NodeJS.ProcessEnv = process.env): RegistrySettings['timeouts'] {
  const response = secondsVar(env, 'ARCHWAY_REGISTRY_TIMEOUT');
  const idle = secondsVar(env, 'ARCHWAY_REGISTRY_IDLE_TIMEOUT');
  if (response === undefined && idle === undefined) return undefined;
  return { ...(response !== undefined ? { connectMs: response, responseMs: response } : {}), ...(idle !== undefined ? { idleMs: idle } : {}) };
}

export function defaultConfigPath(env: NodeJS.ProcessEnv = process.env): string {
  const explicit = env['ARCHWAY_CONFIG'];
  if (explicit) return explicit;
  const xdg = env['XDG_CONFIG_HOME'];
  return path.join(xdg && xdg !== '' ? xdg : path.join(env['HOME'] ?? homedir(), '.config'), 'archway', 'config.toml');
}

function strings(v: unknown, where: string, file: string): string[] | undefined {
  if (v === undefined) return undefined;
  if (typeof v === 'string') return [v];
  if (Array.isArray(v) && v.every((x) => typeof x === 'string')) return v as string[];
  throw new ArchwayError('PARSE', `${file}: ${where} must be a string or a list of strings`);
}

function bool(v: unknown, where: string, file: string): boolean | undefined {
  if (v === undefined) return undefined;
  if (typeof v !== 'boolean') throw new ArchwayError('PARSE', `${file}: ${where} must be true or false`);
  return v;
}

/** Parses the `[registry."host"]` tables of a config file's text; relative `ca` paths are relative to the file. */
export function parseRegistrySettings(text: string, file: string): RegistrySettings {
  let doc: Record<string, unknown>;
  try {
    doc = parseToml(text) as Record<string, unknown>;
  } catch (e) {
    throw new ArchwayError('PARSE', `${file}: ${errorMessage(e)}`);
  }
  const hosts: Record<string, HostSettings> = {};
  const reg = doc['registry'];
  if (reg === undefined) return { hosts };
  if (typeof reg !== 'object' || reg === null || Array.isArray(reg)) throw new ArchwayError('PARSE', `${file}: [registry] must be a table of hosts`);
  for (const [host, value] of Object.entries(reg as Record<string, unknown>)) {
    if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new ArchwayError('PARSE', `${file}: [registry."${host}"] must be a table`);
    const t = value as Record<string, unknown>;
    const where = `registry."${host}"`;
    for (const key of Object.keys(t)) {
      if (!['http', 'insecure', 'ca', 'mirrors'].includes(key)) throw new ArchwayError('PARSE', `${file}: ${where}: unknown setting "${key}"`, { hint: 'known settings: http, insecure, ca, mirrors' });
    }
    const s: HostSettings = {};
    const http = bool(t['http'], `${where}.http`, file);
    if (http !== undefined) s.http = http;
    const insecure = bool(t['insecure'], `${where}.insecure`, file);
    if (insecure !== undefined) s.insecure = insecure;
    const ca = strings(t['ca'], `${where}.ca`, file);
    if (ca) s.ca = ca.map((c) => path.resolve(path.dirname(file), c));
    const mirrors = strings(t['mirrors'], `${where}.mirrors`, file);
    if (mirrors) s.mirrors = mirrors.map((m) => m.replace(/^https?:\/\//, '').replace(/\/+$/, ''));
    hosts[host] = s;
  }
  return { hosts };
}

export interface LoadRegistrySettingsOptions {
  /** A file the user named (`--registry-config`); default: $ARCHWAY_CONFIG, else ~/.config/archway/config.toml. */
  file?: string;
  /**
   * Whether a missing file is an error (NOT_FOUND, exit 2). Default: true when `file` is given (a
   * file the user named must exist: a typo must not silently drop every setting), false for the
   * default path and $ARCHWAY_CONFIG, which may be missing (as Docker treats $DOCKER_CONFIG, and
   * as the [sandbox] settings read from the same file do).
   */
  required?: boolean;
  env?: NodeJS.ProcessEnv;
  signal?: AbortSignal;
}

/** Reads the config file (see LoadRegistrySettingsOptions for a missing one) and the timeouts of the environment. */
export async function loadRegistrySettings(opts: LoadRegistrySettingsOptions = {}): Promise<RegistrySettings> {
  const file = opts.file ?? defaultConfigPath(opts.env);
  const required = opts.required ?? opts.file !== undefined;
  const timeouts = timeoutsFromEnv(opts.env ?? process.env);
  const withTimeouts = (s: RegistrySettings): RegistrySettings => (timeouts ? { ...s, timeouts } : s);
  let text: string;
  try {
    // A small file read at the start of every registry command: a blocking read, as the first
    // asynchronous one would start libuv's thread pool for it alone.
    text = readFileSync(file, 'utf8');
  } catch (e) {
    const missing = isErrnoException(e, 'ENOENT') || isErrnoException(e, 'ENOTDIR');
    if (missing && !required) return withTimeouts({ hosts: {} });
    if (missing) throw new ArchwayError('NOT_FOUND', `registry config file ${file} does not exist`, { hint: 'check the path given to --registry-config', details: { file } });
    throw new ArchwayError('STORAGE', `cannot read ${file}: ${errorMessage(e)}`);
  }
  return withTimeouts(parseRegistrySettings(text, file));
}

/** Settings for a registry name or API host (`docker.io` and `registry-1.docker.io` share an entry). */
export function settingsFor(settings: RegistrySettings | undefined, host: string, insecureRegistries: readonly string[] = []): HostSettings {
  const hosts = settings?.hosts ?? {};
  const apiHost = registryApiHost(host);
  const own = hosts[host] ?? hosts[apiHost] ?? (host === 'registry-1.docker.io' ? hosts['docker.io'] : undefined) ?? {};
  const result: HostSettings = { ...own };
  if (insecureRegistries.includes(host) || insecureRegistries.includes(apiHost)) result.insecure = true;
  return result;
}

/** How to reach a host: the schemes to try, in order, and TLS verification. */
export interface Endpoint {
  schemes: Array<'http' | 'https'>;
  verify: boolean;
  ca: string[];
}

export function endpointFor(host: string, s: HostSettings): Endpoint {
  const ca = s.ca ?? [];
  if (s.http === true) return { schemes: ['http'], verify: true, ca };
  if (s.http === false) return { schemes: ['https'], verify: !s.insecure, ca };
  // Insecure: TLS without verification, falling back to plain HTTP; on loopback, where plain
  // HTTP is the default, the other way round (a TLS registry answers plain HTTP with a 400 that
  // says so, and no credential is sent before the scheme is known).
  if (s.insecure) return { schemes: isLoopbackRegistry(host) ? ['http', 'https'] : ['https', 'http'], verify: false, ca };
  if (ca.length > 0) return { schemes: ['https'], verify: true, ca };
  if (isLoopbackRegistry(host)) return { schemes: ['http'], verify: true, ca };
  return { schemes: ['https'], verify: true, ca };
}
