/**
 * The distribution client: auth chain (anonymous, Basic, Bearer tokens), retries with backoff and
 * jitter, redirects that keep credentials with their host, verified downloads, uploads
 * (monolithic or chunked), cross-repository mounts, mirrors for pulls.
 */
import { Readable, pipeline } from 'node:stream';
import { ArchwayError, Limiter, LIMITS, abortError, readAllLimited, redact, sleep, throwIfAborted, MiB } from '../util/index.js';
import {
  MediaType,
  computeDigest,
  isDigest,
  isIndexMediaType,
  isManifestMediaType,
  isSchema1MediaType,
  parseDigest,
  parseManifestOrIndex,
  verifier,
  verifyBytes,
  type Descriptor,
  type Digest,
} from '../oci/index.js';
import { formatReference, registryApiHost, type Reference } from '../ref/index.js';
import { nullProgress, type ProgressSink } from '../progress/index.js';
import type { CallOptions, ContentSource, ContentTarget } from '../image/index.js';
import { mergeScopes, parseChallenge, pullScope, pushScope, retryAfterMs, type Challenge } from './auth.js';
import { DockerConfigCredentials, type Credential, type CredentialSource } from './credentials.js';
import { settingsFor, type HostSettings, type RegistrySettings } from './settings.js';
import { NetworkFailure, Transport, discard, parseRegistryErrors, readErrorBody, type HttpResponse } from './transport.js';

export interface RegistryClientOptions {
  /** `[registry."host"]` settings (see loadRegistrySettings). */
  settings?: RegistrySettings;
  /** Hosts that may use plain HTTP or unverified TLS (`--insecure-registry`). */
  insecureRegistries?: string[];
  /** Default: Docker's config.json ($DOCKER_CONFIG honoured). */
  credentials?: CredentialSource;
  userAgent?: string;
  /** Connections per host and blob transfers at once (default 4). */
  concurrency?: number;
  connectTimeoutMs?: number;
  idleTimeoutMs?: number;
  /** Retries after the first attempt for resets, 5xx and 429 (default 4). */
  retries?: number;
  /** First backoff delay; doubles each retry, with jitter (default 250 ms). */
  retryBaseMs?: number;
  /** A Retry-After longer than this fails instead of waiting (default 60 s). */
  maxRetryAfterMs?: number;
  /** Blobs up to this size go in one PUT; larger ones in PATCH chunks of this size (default 32 MiB). */
  chunkSize?: number;
  progress?: ProgressSink;
}

export interface ManifestResult {
  raw: Buffer;
  mediaType: string;
  digest: Digest;
  size: number;
}

export const MANIFEST_ACCEPT = [MediaType.OciIndex, MediaType.OciManifest, MediaType.DockerManifestList, MediaType.DockerManifest].join(', ');

interface HostAuth {
  ping?: Promise<Challenge>;
  challenge?: Challenge;
  tokens: Map<string, { token: string; expiresAt: number }>;
}

interface RegRequest {
  /** The registry name (for credentials and messages). */
  registry: string;
  /** The host to talk to (the registry's API host, or a mirror). */
  host: string;
  method: string;
  /** A path under the host (`/v2/...`), or an absolute URL (an upload location). */
  path?: string;
  url?: URL;
  headers?: Record<string, string>;
  body?: Buffer | Readable;
  scopes: string[];
  what: string;
  signal?: AbortSignal | undefined;
  /** Whether to retry on resets/5xx/429 (default: unless the body is a stream). */
  retry?: boolean;
}

function isRetryableStatus(status: number): boolean {
  return status === 429 || status === 500 || status === 502 || status === 503 || status === 504;
}

export class RegistryClient {
  readonly transport: Transport;
  readonly credentials: CredentialSource;
  readonly progress: ProgressSink;
  readonly retries: number;
  readonly retryBaseMs: number;
  readonly maxRetryAfterMs: number;
  readonly chunkSize: number;
  readonly transfers: Limiter;
  private readonly auth = new Map<string, HostAuth>();
  private readonly creds = new Map<string, Promise<Credential | undefined>>();

  constructor(readonly options: RegistryClientOptions = {}) {
    const concurrency = Math.max(1, options.concurrency ?? 4);
    this.transport = new Transport(
      {
        userAgent: options.userAgent ?? 'archway/0.1',
        maxSockets: concurrency + 2,
        connectTimeoutMs: options.connectTimeoutMs ?? 30_000,
        idleTimeoutMs: options.idleTimeoutMs ?? 120_000,
      },
      (host) => this.hostSettings(host),
    );
    this.credentials = options.credentials ?? new DockerConfigCredentials();
    this.progress = options.progress ?? nullProgress;
    this.retries = options.retries ?? 4;
    this.retryBaseMs = options.retryBaseMs ?? 250;
    this.maxRetryAfterMs = options.maxRetryAfterMs ?? 60_000;
    this.chunkSize = options.chunkSize ?? 32 * MiB;
    this.transfers = new Limiter(concurrency);
  }

  hostSettings(host: string): HostSettings {
    return settingsFor(this.options.settings, host, this.options.insecureRegistries ?? []);
  }

  repository(ref: Reference): RegistryRepository {
    return new RegistryRepository(this, ref);
  }

  async getManifest(ref: Reference, opts: { signal?: AbortSignal } = {}): Promise<ManifestResult> {
    return this.repository(ref).getManifest(ref.digest ?? ref.tag ?? 'latest', opts);
  }

  async listTags(ref: Reference, opts: { signal?: AbortSignal } = {}): Promise<string[]> {
    return this.repository(ref).listTags(opts);
  }

  /**
   * Checks credentials against a registry (for `login`): GET /v2/ with Basic, or a token fetch.
   * Resolves when they are accepted (or the registry needs none); AUTH error otherwise.
   */
  async checkAuth(registry: string, credential: Credential | undefined, opts: { signal?: AbortSignal } = {}): Promise<'none' | 'basic' | 'bearer'> {
    const host = registryApiHost(registry);
    // A fresh state so cached tokens or credentials of this client do not decide the answer.
    this.auth.delete(host);
    this.creds.set(registry, Promise.resolve(credential));
    try {
      const challenge = await this.ping(registry, host, opts.signal);
      if (challenge.scheme === 'none') return 'none';
      if (challenge.scheme === 'basic') {
        const res = await this.request({ registry, host, method: 'GET', path: '/v2/', scopes: [], what: registry, signal: opts.signal });
        if (res.status !== 200) throw await this.failure(res, registry);
        discard(res);
        return 'basic';
      }
      if (credential === undefined) throw new ArchwayError('AUTH', `${registry}: no credentials given`);
      await this.token(registry, host, challenge, [], opts.signal, true);
      return 'bearer';
    } finally {
      this.auth.delete(host);
      this.creds.delete(registry);
    }
  }

  close(): void {
    this.transport.close();
  }

  private hostAuth(host: string): HostAuth {
    let a = this.auth.get(host);
    if (!a) {
      a = { tokens: new Map() };
      this.auth.set(host, a);
    }
    return a;
  }

  private credential(registry: string, signal?: AbortSignal): Promise<Credential | undefined> {
    let p = this.creds.get(registry);
    if (!p) {
      p = this.credentials.get(registry, signal ? { signal } : {});
      this.creds.set(registry, p);
      p.catch(() => this.creds.delete(registry));
    }
    return p;
  }

  private tlsError(host: string, e: NetworkFailure): ArchwayError {
    return new ArchwayError('NETWORK', `TLS connection to ${host} failed: ${e.message}`, {
      hint: `if ${host} uses a private CA, set ca = ["/path/ca.pem"] under [registry."${host}"] in the archway config; to skip verification use insecure = true there or --insecure-registry ${host}`,
      details: { host, code: e.code },
    });
  }

  private networkError(host: string, what: string, e: NetworkFailure): ArchwayError {
    if (e.tls) return this.tlsError(host, e);
    return new ArchwayError('NETWORK', `${what}: cannot talk to ${host}: ${e.message}${e.code && !e.message.includes(e.code) ? ` (${e.code})` : ''}`, { details: { host, code: e.code } });
  }

  private backoff(attempt: number): number {
    const base = this.retryBaseMs * 2 ** attempt;
    return Math.min(base + Math.random() * base, 30_000);
  }

  /** GET /v2/ without credentials: learns the scheme that works and the auth challenge. */
  ping(registry: string, host: string, signal?: AbortSignal): Promise<Challenge> {
    const a = this.hostAuth(host);
    if (a.challenge) return Promise.resolve(a.challenge);
    a.ping ??= this.doPing(registry, host, signal).then(
      (c) => {
        a.challenge = c;
        return c;
      },
      (e: unknown) => {
        a.ping = undefined;
        throw e;
      },
    );
    return a.ping;
  }

  private async doPing(registry: string, host: string, signal?: AbortSignal): Promise<Challenge> {
    const schemes = this.transport.schemes(host);
    let lastError: unknown;
    for (const scheme of schemes) {
      for (let attempt = 0; ; attempt++) {
        throwIfAborted(signal);
        let res: HttpResponse;
        try {
          res = await this.transport.send({ method: 'GET', url: new URL(`${scheme}://${host}/v2/`), ...(signal ? { signal } : {}) });
        } catch (e) {
          if (!(e instanceof NetworkFailure)) throw e;
          lastError = e.tls ? this.tlsError(host, e) : this.networkError(host, registry, e);
          if (!e.tls && attempt < this.retries && e.code !== 'ECONNREFUSED' && e.code !== 'ENOTFOUND') {
            await sleep(this.backoff(attempt), signal);
            continue;
          }
          break; // next scheme
        }
        if (isRetryableStatus(res.status) && attempt < this.retries) {
          const wait = this.retryDelay(res, attempt);
          discard(res);
          await sleep(wait, signal);
          continue;
        }
        if (res.status === 200) {
          discard(res);
          this.transport.rememberScheme(host, scheme);
          return { scheme: 'none' };
        }
        if (res.status === 401) {
          const c = parseChallenge(res.headers['www-authenticate']);
          discard(res);
          this.transport.rememberScheme(host, scheme);
          return c ?? { scheme: 'basic' };
        }
        const body = await readErrorBody(res);
        if (res.status === 400 && /HTTP request to an HTTPS server/i.test(body)) {
          lastError = new ArchwayError('NETWORK', `${host} speaks TLS, but archway used plain HTTP`, {
            hint: `set http = false (and ca = [...] or insecure = true) under [registry."${host}"] in the archway config, or use --insecure-registry ${host}`,
          });
          break;
        }
        throw new ArchwayError('REGISTRY', `${host} does not answer as a registry: GET /v2/ returned ${res.status}${body ? `: ${redact(body.slice(0, 200))}` : ''}`, { details: { host } });
      }
    }
    throw lastError instanceof Error ? lastError : new ArchwayError('NETWORK', `cannot reach ${host}`);
  }

  private retryDelay(res: HttpResponse, attempt: number): number {
    const header = res.headers['retry-after'];
    const ra = retryAfterMs(Array.isArray(header) ? header[0] : header);
    if (ra !== undefined) return ra;
    return this.backoff(attempt);
  }

  /** A bearer token for a set of scopes (cached until shortly before it expires). */
  async token(registry: string, host: string, challenge: Challenge & { scheme: 'bearer' }, scopes: string[], signal: AbortSignal | undefined, fresh = false): Promise<string> {
    const merged = mergeScopes(scopes).sort();
    const key = merged.join(' ');
    const a = this.hostAuth(host);
    const cached = a.tokens.get(key);
    if (!fresh && cached && cached.expiresAt > Date.now()) return cached.token;
    const cred = await this.credential(registry, signal);
    let realm: URL;
    try {
      realm = new URL(challenge.realm);
    } catch {
      throw new ArchwayError('AUTH', `${registry}: the registry's token realm "${redact(challenge.realm)}" is not a URL`);
    }
    if (realm.protocol !== 'https:' && realm.protocol !== 'http:') throw new ArchwayError('AUTH', `${registry}: token realm must be http(s)`);
    // Credentials go to a realm on another host only over TLS (or on this machine).
    const realmHost = realm.hostname;
    const mayCredential = realm.protocol === 'https:' || realm.host === host || realmHost === '127.0.0.1' || realmHost === 'localhost' || realmHost === '[::1]' || realmHost.startsWith('127.');
    const useCred = cred !== undefined && mayCredential ? cred : undefined;
    let res: HttpResponse;
    const what = `${registry}: token from ${realm.host}`;
    if (useCred?.identityToken !== undefined) {
      const form = new URLSearchParams({ grant_type: 'refresh_token', refresh_token: useCred.identityToken, client_id: 'archway', ...(challenge.service ? { service: challenge.service } : {}) });
      if (merged.length > 0) form.set('scope', merged.join(' '));
      res = await this.send(realm, 'POST', { 'content-type': 'application/x-www-form-urlencoded' }, Buffer.from(form.toString()), what, signal);
    } else {
      const url = new URL(realm);
      if (challenge.service) url.searchParams.set('service', challenge.service);
      for (const s of merged) url.searchParams.append('scope', s);
      const headers: Record<string, string> = {};
      if (useCred) headers['authorization'] = `Basic ${Buffer.from(`${useCred.username}:${useCred.password}`).toString('base64')}`;
      res = await this.send(url, 'GET', headers, undefined, what, signal);
    }
    if (res.status === 401 || res.status === 403) {
      const body = await readErrorBody(res);
      const errs = parseRegistryErrors(body);
      throw new ArchwayError('AUTH', `${registry}: the token server refused ${useCred ? 'the credentials' : 'anonymous access'}${errs[0]?.message ? `: ${redact(errs[0].message)}` : ''}`, {
        hint: useCred ? `check the user and password (archway login ${registry})` : `log in first: archway login ${registry}`,
        details: { registry },
      });
    }
    if (res.status !== 200) throw await this.failure(res, what);
    let parsed: { token?: unknown; access_token?: unknown; expires_in?: unknown };
    try {
      parsed = JSON.parse((await readAllLimited(res.body, LIMITS.tokenResponse, what)).toString('utf8')) as typeof parsed;
    } catch (e) {
      if (e instanceof ArchwayError) throw e;
      throw new ArchwayError('AUTH', `${what}: the answer is not JSON`);
    }
    const token = typeof parsed.token === 'string' && parsed.token ? parsed.token : typeof parsed.access_token === 'string' ? parsed.access_token : '';
    if (!token) throw new ArchwayError('AUTH', `${what}: the answer holds no token`);
    const expiresIn = typeof parsed.expires_in === 'number' && parsed.expires_in > 0 ? parsed.expires_in : 60;
    a.tokens.set(key, { token, expiresAt: Date.now() + expiresIn * 900 });
    return token;
  }

  /** One exchange with retries on resets/5xx/429, for the token endpoint. */
  private async send(url: URL, method: string, headers: Record<string, string>, body: Buffer | undefined, what: string, signal: AbortSignal | undefined): Promise<HttpResponse> {
    for (let attempt = 0; ; attempt++) {
      throwIfAborted(signal);
      try {
        const res = await this.transport.send({ method, url, headers, ...(body ? { body } : {}), ...(signal ? { signal } : {}) });
        if (isRetryableStatus(res.status) && attempt < this.retries) {
          const wait = this.retryDelay(res, attempt);
          discard(res);
          await sleep(wait, signal);
          continue;
        }
        return res;
      } catch (e) {
        if (!(e instanceof NetworkFailure)) throw e;
        if (e.tls || attempt >= this.retries) throw this.networkError(url.host, what, e);
        await sleep(this.backoff(attempt), signal);
      }
    }
  }

  private async authorization(req: RegRequest, challenge: Challenge, fresh: boolean): Promise<string | undefined> {
    if (challenge.scheme === 'none') return undefined;
    if (challenge.scheme === 'basic') {
      const cred = await this.credential(req.registry, req.signal);
      if (!cred || cred.identityToken !== undefined) return undefined;
      return `Basic ${Buffer.from(`${cred.username}:${cred.password}`).toString('base64')}`;
    }
    const scopes = challenge.scope && fresh ? [...req.scopes, challenge.scope] : req.scopes;
    return `Bearer ${await this.token(req.registry, req.host, challenge, scopes, req.signal, fresh)}`;
  }

  /**
   * Sends a request to a registry host with auth, redirects (credentials only to the same host),
   * and retries. The caller reads or discards the body and checks the status.
   */
  async request(req: RegRequest): Promise<HttpResponse> {
    const challenge0 = await this.ping(req.registry, req.host, req.signal);
    const scheme = this.transport.schemes(req.host)[0] ?? 'https';
    let url = req.url ?? new URL(`${scheme}://${req.host}${req.path ?? '/v2/'}`);
    const replayable = req.body === undefined || Buffer.isBuffer(req.body);
    const retry = req.retry ?? replayable;
    let challenge = challenge0;
    let reauthed = false;
    let redirects = 0;
    let method = req.method;
    for (let attempt = 0; ; ) {
      throwIfAborted(req.signal, req.what);
      const headers: Record<string, string> = { ...req.headers };
      const sameHost = url.host === req.host;
      if (sameHost) {
        const auth = await this.authorization(req, challenge, reauthed);
        if (auth) headers['authorization'] = auth;
      }
      let res: HttpResponse;
      try {
        res = await this.transport.send({ method, url, headers, ...(req.body !== undefined && redirects === 0 ? { body: req.body } : {}), ...(req.signal ? { signal: req.signal } : {}) });
      } catch (e) {
        if (!(e instanceof NetworkFailure)) throw e;
        if (e.tls || !retry || !replayable || attempt >= this.retries) throw this.networkError(url.host, req.what, e);
        await sleep(this.backoff(attempt++), req.signal);
        continue;
      }
      if (res.status === 401 && sameHost && !reauthed && replayable) {
        reauthed = true;
        const c = parseChallenge(res.headers['www-authenticate']);
        if (c) {
          challenge = c;
          this.hostAuth(req.host).challenge = c.scheme === 'bearer' ? { ...c, scope: undefined } as Challenge : c;
        }
        discard(res);
        if (challenge.scheme === 'none') throw new ArchwayError('AUTH', `${req.what}: ${req.host} asks for authentication without saying how`);
        continue;
      }
      if (isRetryableStatus(res.status) && retry && replayable && attempt < this.retries) {
        const wait = this.retryDelay(res, attempt);
        if (wait > this.maxRetryAfterMs) return res;
        discard(res);
        attempt++;
        await sleep(wait, req.signal);
        continue;
      }
      if ([301, 302, 303, 307, 308].includes(res.status) && (method === 'GET' || method === 'HEAD') && res.headers.location) {
        discard(res);
        if (++redirects > 10) throw new ArchwayError('REGISTRY', `${req.what}: too many redirects`);
        const next = new URL(res.headers.location, url);
        if (next.protocol !== 'https:' && next.protocol !== 'http:') throw new ArchwayError('REGISTRY', `${req.what}: redirect to an unsupported scheme`);
        if (url.protocol === 'https:' && next.protocol === 'http:' && next.host !== req.host) throw new ArchwayError('REGISTRY', `${req.what}: refusing a redirect from HTTPS to plain HTTP (${next.host})`);
        url = next;
        if (res.status === 303) method = 'GET';
        continue;
      }
      return res;
    }
  }

  /** Turns an unexpected answer into an ArchwayError naming `what` and what the registry said. */
  async failure(res: HttpResponse, what: string): Promise<ArchwayError> {
    const body = await readErrorBody(res);
    const errs = parseRegistryErrors(body);
    const said = errs.length > 0 ? errs.map((e) => `${e.code}${e.message ? `: ${e.message}` : ''}`).join('; ') : body.trim().slice(0, 200);
    const text = redact(`${what}: ${res.url.host} answered ${res.status}${said ? ` (${said})` : ''}`);
    const codes = errs.map((e) => e.code);
    const details = { status: res.status, host: res.url.host, registryErrors: codes };
    if (res.status === 401 || codes.includes('UNAUTHORIZED')) return new ArchwayError('AUTH', text, { details, hint: `log in with: archway login ${res.url.host}` });
    if (res.status === 403 || codes.includes('DENIED')) return new ArchwayError('DENIED', text, { details });
    if (res.status === 404 || codes.some((c) => c === 'MANIFEST_UNKNOWN' || c === 'NAME_UNKNOWN' || c === 'BLOB_UNKNOWN')) return new ArchwayError('NOT_FOUND', text, { details });
    if (codes.includes('DIGEST_INVALID') || codes.includes('SIZE_INVALID')) return new ArchwayError('INTEGRITY', text, { details });
    if (res.status === 429) {
      const ra = res.headers['retry-after'];
      return new ArchwayError('REGISTRY', `${text}${ra ? `; retry after ${String(ra)}` : ''}`, { details });
    }
    return new ArchwayError('REGISTRY', text, { details });
  }
}

function isManifestDescriptor(desc: Descriptor): boolean {
  return isManifestMediaType(desc.mediaType) || isIndexMediaType(desc.mediaType);
}

const TAG_RE = /^[\w][\w.-]{0,127}$/;

/** One repository on a registry: the ContentTarget of registry pushes and the ContentSource of pulls. */
export class RegistryRepository implements ContentTarget {
  readonly name: string;
  readonly registry: string;
  readonly repository: string;
  readonly host: string;
  private readonly manifests = new Map<string, { raw: Buffer; mediaType: string }>();

  constructor(
    readonly client: RegistryClient,
    ref: Reference,
  ) {
    this.registry = ref.registry;
    this.repository = ref.repository;
    this.host = registryApiHost(ref.registry);
    this.name = `${ref.registry}/${ref.repository}`;
  }

  private get pullScopes(): string[] {
    return [pullScope(this.repository)];
  }

  private get pushScopes(): string[] {
    return [pushScope(this.repository)];
  }

  /** Hosts for pulls: mirrors first, then the origin. */
  pullHosts(): string[] {
    const mirrors = this.client.hostSettings(this.registry).mirrors ?? [];
    return [...mirrors.filter((m) => m !== this.host), this.host];
  }

  private async fromHosts<T>(fn: (host: string) => Promise<T>, signal?: AbortSignal): Promise<T> {
    const hosts = this.pullHosts();
    let last: unknown;
    for (const host of hosts) {
      try {
        return await fn(host);
      } catch (e) {
        if (signal?.aborted || host === this.host) throw e;
        last = e;
      }
    }
    throw last;
  }

  private what(reference: string): string {
    return reference.startsWith('sha256:') || reference.startsWith('sha512:') ? `${this.name}@${reference}` : `${this.name}:${reference}`;
  }

  private progress(opts?: CallOptions): ProgressSink {
    return opts?.progress ?? this.client.progress;
  }

  /** A manifest or index by tag or digest: raw bytes, media type, computed digest. */
  async getManifest(reference: string, opts: { signal?: AbortSignal; accept?: string } = {}): Promise<ManifestResult> {
    const byDigest = isDigest(reference);
    if (!byDigest && !TAG_RE.test(reference)) throw new ArchwayError('REFERENCE', `"${reference}" is neither a tag nor a digest`);
    const what = this.what(reference);
    if (byDigest) {
      const cached = this.manifests.get(reference);
      if (cached) return { raw: cached.raw, mediaType: cached.mediaType, digest: reference, size: cached.raw.length };
    }
    return this.fromHosts(async (host) => {
      const res = await this.client.request({ registry: this.registry, host, method: 'GET', path: `/v2/${this.repository}/manifests/${reference}`, headers: { accept: opts.accept ?? MANIFEST_ACCEPT }, scopes: this.pullScopes, what, signal: opts.signal });
      if (res.status !== 200) throw await this.client.failure(res, what);
      const contentType = (res.headers['content-type'] ?? '').split(';')[0]?.trim() ?? '';
      if (isSchema1MediaType(contentType) && contentType !== 'application/json') {
        res.body.destroy();
        throw new ArchwayError('FORMAT', `${what} is a Docker schema 1 manifest, which archway does not support`, { hint: 'push the image again with a current tool (schema 2 or OCI)' });
      }
      const raw = await readAllLimited(res.body, LIMITS.manifest, what);
      let digest: Digest;
      if (byDigest) {
        verifyBytes(raw, reference, undefined, what);
        digest = reference;
      } else digest = computeDigest(raw);
      let mediaType: string;
      if (opts.accept !== undefined && !isManifestMediaType(contentType) && !isIndexMediaType(contentType) && contentType !== '') {
        mediaType = contentType;
      } else {
        mediaType = parseManifestOrIndex(raw, contentType || undefined, what).mediaType;
      }
      this.manifests.set(digest, { raw, mediaType });
      return { raw, mediaType, digest, size: raw.length };
    }, opts.signal);
  }

  async resolve(reference: string, opts: CallOptions = {}): Promise<Descriptor> {
    const m = await this.getManifest(reference, opts.signal ? { signal: opts.signal } : {});
    return { mediaType: m.mediaType, digest: m.digest, size: m.size };
  }

  async fetch(desc: Descriptor, opts: CallOptions = {}): Promise<Readable> {
    const digest = parseDigest(desc.digest);
    const what = `${this.name}@${digest}`;
    if (isManifestDescriptor(desc)) {
      if (desc.size > LIMITS.manifest) throw new ArchwayError('INTEGRITY', `${what}: manifest larger than ${LIMITS.manifest} bytes`);
      const m = await this.getManifest(digest, { ...(opts.signal ? { signal: opts.signal } : {}), accept: `${desc.mediaType}, ${MANIFEST_ACCEPT}` });
      verifyBytes(m.raw, digest, desc.size, what);
      return Readable.from([m.raw]);
    }
    return this.fromHosts((host) => this.fetchBlob(host, desc, digest, what, opts), opts.signal);
  }

  /**
   * Streams a blob through a verifier. A body cut short is resumed with a Range request (bounded
   * retries); the verifier fails the stream unless exactly desc.size bytes with the digest came.
   */
  private async fetchBlob(host: string, desc: Descriptor, digest: Digest, what: string, opts: CallOptions): Promise<Readable> {
    const client = this.client;
    const signal = opts.signal;
    const first = await client.request({ registry: this.registry, host, method: 'GET', path: `/v2/${this.repository}/blobs/${digest}`, scopes: this.pullScopes, what, signal });
    if (first.status !== 200) throw await client.failure(first, what);
    const registry = this.registry;
    const path = `/v2/${this.repository}/blobs/${digest}`;
    const scopes = this.pullScopes;
    const progress = this.progress(opts);
    async function* bytes(): AsyncGenerator<Buffer> {
      let res: HttpResponse | undefined = first;
      let received = 0;
      let failures = 0;
      let lastReport = 0;
      for (;;) {
        if (!res) {
          res = await client.request({ registry, host, method: 'GET', path, headers: { range: `bytes=${received}-` }, scopes, what, signal });
          if (res.status !== 206) {
            const e = res.status === 200 ? new ArchwayError('INTEGRITY', `${what}: the body was cut short after ${received} of ${desc.size} bytes and the registry cannot resume it`) : await client.failure(res, what);
            res.body.destroy();
            throw e;
          }
        }
        try {
          for await (const chunk of res.body) {
            const buf = chunk as Buffer;
            received += buf.length;
            if (received - lastReport >= MiB || received >= desc.size) {
              lastReport = received;
              progress.emit({ kind: 'blob-bytes', digest, bytes: received, total: desc.size });
            }
            yield buf;
          }
          if (received >= desc.size) return;
          if (signal?.aborted) throw abortError(signal, what);
        } catch (e) {
          if (signal?.aborted) throw abortError(signal, what);
          if (e instanceof ArchwayError) throw e;
        }
        // Cut short (connection closed before the body's end).
        res.body.destroy();
        res = undefined;
        if (++failures > client.retries) throw new ArchwayError('INTEGRITY', `${what}: the body was cut short after ${received} of ${desc.size} bytes (after ${client.retries} retries)`, { details: { reference: what } });
        await sleep(client.retryBaseMs * 2 ** (failures - 1), signal);
      }
    }
    const out = verifier(digest, desc.size, what);
    pipeline(Readable.from(bytes()), out, () => undefined);
    return out;
  }

  async exists(desc: Descriptor, opts: CallOptions = {}): Promise<boolean> {
    const digest = parseDigest(desc.digest);
    const kind = isManifestDescriptor(desc) ? 'manifests' : 'blobs';
    const what = `${this.name}@${digest}`;
    const res = await this.client.request({
      registry: this.registry,
      host: this.host,
      method: 'HEAD',
      path: `/v2/${this.repository}/${kind}/${digest}`,
      ...(kind === 'manifests' ? { headers: { accept: `${desc.mediaType}, ${MANIFEST_ACCEPT}` } } : {}),
      scopes: this.pushScopes,
      what,
      signal: opts.signal,
    });
    discard(res);
    if (res.status === 200) return true;
    if (res.status === 404) return false;
    throw await this.client.failure(res, what);
  }

  async push(desc: Descriptor, content: Readable | Buffer, opts: CallOptions = {}): Promise<void> {
    const digest = parseDigest(desc.digest);
    const progress = this.progress(opts);
    if (isManifestDescriptor(desc)) {
      const raw = Buffer.isBuffer(content) ? content : await readAllLimited(content, LIMITS.manifest, `${this.name}@${digest}`);
      await this.putManifest(desc, raw, digest, opts);
      return;
    }
    await this.client.transfers.run(async () => {
      if (await this.exists(desc, opts)) {
        if (!Buffer.isBuffer(content)) content.destroy();
        progress.emit({ kind: 'blob', phase: 'skip', digest, size: desc.size });
        return;
      }
      progress.emit({ kind: 'blob', phase: 'start', digest, size: desc.size });
      await this.uploadBlob(desc, digest, content, opts);
      progress.emit({ kind: 'blob', phase: 'done', digest, size: desc.size });
    }, opts.signal);
  }

  private async putManifest(desc: Descriptor, raw: Buffer, reference: string, opts: CallOptions): Promise<void> {
    const digest = parseDigest(desc.digest);
    const what = this.what(reference);
    if (raw.length > LIMITS.manifest) throw new ArchwayError('INTEGRITY', `${what}: manifest larger than ${LIMITS.manifest} bytes`);
    verifyBytes(raw, digest, desc.size, what);
    const res = await this.client.request({ registry: this.registry, host: this.host, method: 'PUT', path: `/v2/${this.repository}/manifests/${reference}`, headers: { 'content-type': desc.mediaType }, body: raw, scopes: this.pushScopes, what, signal: opts.signal });
    if (res.status !== 201 && res.status !== 200) throw await this.client.failure(res, what);
    discard(res);
    this.manifests.set(digest, { raw, mediaType: desc.mediaType });
    if (reference === digest) this.progress(opts).emit({ kind: 'manifest', phase: 'done', digest, mediaType: desc.mediaType, what });
  }

  async tag(desc: Descriptor, reference: string, opts: CallOptions = {}): Promise<void> {
    if (!TAG_RE.test(reference)) throw new ArchwayError('REFERENCE', `"${reference}" is not a valid tag`);
    if (!isManifestDescriptor(desc)) throw new ArchwayError('USAGE', `${this.name}:${reference}: only a manifest or an index can be tagged (got ${desc.mediaType})`);
    throwIfAborted(opts.signal, `tagging ${this.name}:${reference}`);
    const digest = parseDigest(desc.digest);
    let raw = this.manifests.get(digest)?.raw;
    if (!raw) {
      const res = await this.client.request({ registry: this.registry, host: this.host, method: 'GET', path: `/v2/${this.repository}/manifests/${digest}`, headers: { accept: `${desc.mediaType}, ${MANIFEST_ACCEPT}` }, scopes: this.pushScopes, what: `${this.name}@${digest}`, signal: opts.signal });
      if (res.status !== 200) throw await this.client.failure(res, `${this.name}@${digest}`);
      raw = await readAllLimited(res.body, LIMITS.manifest, `${this.name}@${digest}`);
    }
    await this.putManifest(desc, raw, reference, opts);
    this.progress(opts).emit({ kind: 'tag', reference: `${this.name}:${reference}`, digest });
  }

  async mount(desc: Descriptor, source: ContentSource, opts: CallOptions = {}): Promise<boolean> {
    if (!(source instanceof RegistryRepository) || source.registry !== this.registry || source.repository === this.repository || isManifestDescriptor(desc)) return false;
    const digest = parseDigest(desc.digest);
    const what = `${this.name}@${digest}`;
    const query = new URLSearchParams({ mount: digest, from: source.repository });
    const res = await this.client.request({
      registry: this.registry,
      host: this.host,
      method: 'POST',
      path: `/v2/${this.repository}/blobs/uploads/?${query.toString()}`,
      headers: { 'content-length': '0' },
      scopes: [...this.pushScopes, pullScope(source.repository)],
      what,
      signal: opts.signal,
    });
    if (res.status === 201) {
      discard(res);
      this.progress(opts).emit({ kind: 'blob', phase: 'mount', digest, size: desc.size, what: `from ${source.name}` });
      return true;
    }
    if (res.status === 202) {
      // The registry started an ordinary upload instead; cancel it, the caller pushes.
      discard(res);
      await this.cancelUpload(res, opts.signal);
      return false;
    }
    throw await this.client.failure(res, what);
  }

  private location(res: HttpResponse, what: string): URL {
    const loc = res.headers.location;
    if (!loc) throw new ArchwayError('REGISTRY', `${what}: ${res.url.host} started an upload without a Location`);
    const url = new URL(loc, res.url);
    if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new ArchwayError('REGISTRY', `${what}: upload location has an unsupported scheme`);
    return url;
  }

  private async cancelUpload(res: HttpResponse | URL, signal?: AbortSignal): Promise<void> {
    try {
      const url = res instanceof URL ? res : this.location(res, this.name);
      const del = await this.client.request({ registry: this.registry, host: this.host, method: 'DELETE', url, scopes: this.pushScopes, what: this.name, signal, retry: false });
      discard(del);
    } catch {
      // best effort
    }
  }

  private async uploadBlob(desc: Descriptor, digest: Digest, content: Readable | Buffer, opts: CallOptions): Promise<void> {
    const what = `${this.name}@${digest}`;
    const signal = opts.signal;
    if (Buffer.isBuffer(content)) verifyBytes(content, digest, desc.size, what);
    const attempts = Buffer.isBuffer(content) ? this.client.retries + 1 : 1;
    for (let attempt = 0; ; attempt++) {
      try {
        await this.uploadOnce(desc, digest, content, what, signal);
        return;
      } catch (e) {
        const retryable = e instanceof ArchwayError && (e.code === 'NETWORK' || e.code === 'REGISTRY');
        if (!retryable || attempt + 1 >= attempts || signal?.aborted) throw e;
        await sleep(this.client.retryBaseMs * 2 ** attempt, signal);
      }
    }
  }

  private async uploadOnce(desc: Descriptor, digest: Digest, content: Readable | Buffer, what: string, signal: AbortSignal | undefined): Promise<void> {
    const client = this.client;
    const start = await client.request({ registry: this.registry, host: this.host, method: 'POST', path: `/v2/${this.repository}/blobs/uploads/`, headers: { 'content-length': '0' }, scopes: this.pushScopes, what, signal });
    if (start.status !== 202) throw await client.failure(start, what);
    discard(start);
    let location = this.location(start, what);
    const minChunk = Number(start.headers['oci-chunk-min-length'] ?? 0) || 0;
    let verifyError: unknown;
    try {
      if (desc.size <= client.chunkSize && minChunk === 0) {
        let body: Buffer | Readable;
        if (Buffer.isBuffer(content)) body = content;
        else {
          const v = verifier(digest, desc.size, what);
          v.on('error', (e) => (verifyError = e));
          pipeline(content, v, () => undefined);
          body = v;
        }
        const url = new URL(location);
        url.searchParams.set('digest', digest);
        const res = await client.request({ registry: this.registry, host: this.host, method: 'PUT', url, headers: { 'content-type': 'application/octet-stream', 'content-length': String(desc.size) }, body, scopes: this.pushScopes, what, signal, retry: false });
        if (verifyError) {
          discard(res);
          throw verifyError;
        }
        if (res.status !== 201) throw await client.failure(res, what);
        discard(res);
        return;
      }
      // Chunked: PATCH pieces of chunkSize (at least the registry's minimum), then PUT ?digest=.
      const size = Math.max(client.chunkSize, minChunk);
      const source: Readable = Buffer.isBuffer(content) ? Readable.from([content]) : content;
      const v = verifier(digest, desc.size, what);
      pipeline(source, v, () => undefined);
      let offset = 0;
      for await (const chunk of chunksOf(v, size)) {
        const res = await client.request({
          registry: this.registry,
          host: this.host,
          method: 'PATCH',
          url: location,
          headers: { 'content-type': 'application/octet-stream', 'content-length': String(chunk.length), 'content-range': `${offset}-${offset + chunk.length - 1}` },
          body: chunk,
          scopes: this.pushScopes,
          what,
          signal,
          retry: false,
        });
        if (res.status !== 202) throw await client.failure(res, what);
        discard(res);
        location = this.location(res, what);
        offset += chunk.length;
      }
      const url = new URL(location);
      url.searchParams.set('digest', digest);
      const res = await client.request({ registry: this.registry, host: this.host, method: 'PUT', url, headers: { 'content-length': '0' }, scopes: this.pushScopes, what, signal, retry: false });
      if (res.status !== 201) throw await client.failure(res, what);
      discard(res);
    } catch (e) {
      await this.cancelUpload(location);
      if (verifyError) throw verifyError;
      throw e;
    }
  }

  /** All tags of the repository (following `Link: <...>; rel="next"` pages). */
  async listTags(opts: { signal?: AbortSignal } = {}): Promise<string[]> {
    const tags: string[] = [];
    let path: string | undefined = `/v2/${this.repository}/tags/list?n=1000`;
    const what = this.name;
    for (let page = 0; path && page < 1000; page++) {
      const p: string = path;
      const res = await this.fromHosts(async (host) => {
        const r = await this.client.request({ registry: this.registry, host, method: 'GET', path: p, scopes: this.pullScopes, what, signal: opts.signal });
        if (r.status !== 200) throw await this.client.failure(r, what);
        return r;
      }, opts.signal);
      const body = await readAllLimited(res.body, LIMITS.manifest, `${what} tags`);
      let parsed: { tags?: unknown };
      try {
        parsed = JSON.parse(body.toString('utf8')) as { tags?: unknown };
      } catch {
        throw new ArchwayError('REGISTRY', `${what}: the tag list is not JSON`);
      }
      if (Array.isArray(parsed.tags)) for (const t of parsed.tags) if (typeof t === 'string') tags.push(t);
      const link = res.headers.link;
      const m = typeof link === 'string' ? /<([^>]+)>\s*;\s*rel="?next"?/.exec(link) : null;
      path = m?.[1] ? (m[1].startsWith('/') ? m[1] : new URL(m[1]).pathname + new URL(m[1]).search) : undefined;
    }
    return tags;
  }

  /** For messages: `host/repo:tag`. */
  format(reference: string): string {
    return formatReference(isDigest(reference) ? { registry: this.registry, repository: this.repository, digest: reference } : { registry: this.registry, repository: this.repository, tag: reference });
  }
}

/** Groups a stream's bytes into buffers of exactly `size` (the last may be shorter). */
async function* chunksOf(stream: Readable, size: number): AsyncGenerator<Buffer> {
  let parts: Buffer[] = [];
  let have = 0;
  for await (const c of stream) {
    let buf = c as Buffer;
    while (buf.length > 0) {
      const take = Math.min(size - have, buf.length);
      parts.push(buf.subarray(0, take));
      have += take;
      buf = buf.subarray(take);
      if (have === size) {
        yield Buffer.concat(parts, have);
        parts = [];
        have = 0;
      }
    }
  }
  if (have > 0) yield Buffer.concat(parts, have);
}
