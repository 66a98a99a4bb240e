/** `login` and `logout`: check credentials against the registry, then save them the way Docker does. */
import { ArchwayError } from '../util/index.js';
import { DockerConfigCredentials, type CredentialSource } from './credentials.js';
import { RegistryClient, type RegistryClientOptions } from './client.js';

export interface LoginOptions extends Omit<RegistryClientOptions, 'credentials'> {
  username: string;
  password: string;
  /** Directory of Docker's config.json (default $DOCKER_CONFIG or ~/.docker). */
  configDir?: string;
  env?: NodeJS.ProcessEnv;
  signal?: AbortSignal;
}

export interface LoginResult {
  registry: string;
  /** Where the credentials went. */
  storedIn: 'helper' | 'file';
  file: string;
  /** How the registry authenticates ('none' when it needs no credentials at all). */
  scheme: 'none' | 'basic' | 'bearer';
}

/** Normalizes what a user types after `archway login` (`https://host/`, `docker.io`, `host:5000`). */
export function normalizeRegistryName(input: string): string {
  let r = input.trim().replace(/^https?:\/\//, '');
  const slash = r.indexOf('/');
  if (slash >= 0) r = r.slice(0, slash);
  if (r === '' ) throw new ArchwayError('USAGE', 'a registry name is required');
  if (r === 'index.docker.io' || r === 'registry-1.docker.io') r = 'docker.io';
  if (!/^[A-Za-z0-9.-]+(?::\d+)?$|^\[[0-9a-fA-F:]+\](?::\d+)?$/.test(r)) throw new ArchwayError('USAGE', `"${input}" is not a registry host`);
  return r;
}

export async function login(registryInput: string, opts: LoginOptions): Promise<LoginResult> {
  const registry = normalizeRegistryName(registryInput);
  if (opts.username === '') throw new ArchwayError('USAGE', 'a user name is required');
  if (opts.password === '') throw new ArchwayError('USAGE', 'a password is required');
  const store = new DockerConfigCredentials({ ...(opts.configDir ? { configDir: opts.configDir } : {}), ...(opts.env ? { env: opts.env } : {}) });
  const none: CredentialSource = { get: async () => undefined };
  const client = new RegistryClient({ ...opts, credentials: none });
  let scheme: LoginResult['scheme'];
  try {
    scheme = await client.checkAuth(registry, { username: opts.username, password: opts.password }, opts.signal ? { signal: opts.signal } : {});
  } catch (e) {
    if (e instanceof ArchwayError && e.code === 'AUTH') {
      throw new ArchwayError('AUTH', `login to ${registry} failed: the registry refused the user "${opts.username}" with this password`, { cause: e, hint: 'nothing was saved', details: { registry } });
    }
    throw e;
  } finally {
    client.close();
  }
  const storedIn = await store.store(registry, { username: opts.username, password: opts.password }, opts.signal ? { signal: opts.signal } : {});
  return { registry, storedIn, file: store.file, scheme };
}

/** Removes saved credentials; resolves false when there were none. */
export async function logout(registryInput: string, opts: { configDir?: string; env?: NodeJS.ProcessEnv; signal?: AbortSignal } = {}): Promise<boolean> {
  const registry = normalizeRegistryName(registryInput);
  const store = new DockerConfigCredentials({ ...(opts.configDir ? { configDir: opts.configDir } : {}), ...(opts.env ? { env: opts.env } : {}) });
  return store.erase(registry, opts.signal ? { signal: opts.signal } : {});
}
