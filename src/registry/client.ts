/**
 * The distribution client: auth chain (anonymous, Basic, Bearer tokens), retries with backoff and
 * jitter, redirects that keep credentials with their host, verified downloads, uploads
 * (monolithic or chunked), cross-repository mounts, mirrors for pulls.
 */
import { Readable, pipeline } from 'node:stream';
import { ArchwayError, Limiter, LIMITS, SMALL_BLOB, verifiesContent, readAllLimited, redact, sleep, throwIfAborted, MiB } from '../util/index.js';
import {
  MediaType,
  computeDigest,
  digestAlgorithm,
  digestHex,
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
import { BlobBody } from './body.js';
import { NetworkFailure, Transport, discard, formatDuration, parseRegistryErrors, readErrorBody, type HttpResponse } from './transport.js';

export interface RegistryClientOptions {
  /** `[registry."host"]` settings (see loadRegistrySettings). */
  settings?: RegistrySettings;
  /** Hosts that may use plain HTTP or unverified TLS (`--insecure-registry`). */
  insecureRegistries?: string[];
  /** Default: Docker's config.json ($DOCKER_CONFIG honoured). */
  credentials?: CredentialSource;
  userAgent?: string;
  /** Blob transfers at once (default 4; small blobs go besides them); connections per host are this plus 2. */
  concurrency?: number;
  /** A connection not made in this long fails (default 30 s). */
  connectTimeoutMs?: number;
  /**
   * An answer (its headers) not come this long after a request without a streamed body was sent
   * fails it (default: settings' responseTimeoutMs, else 30 s). Downloads are not bounded by it
   * once their body flows; uploads only by idleTimeoutMs.
   */
  responseTimeoutMs?: number;
  /** No byte either way for this long fails a request, a download's body included (default: settings', else 120 s). */
  idleTimeoutMs?: number;
  /** Retries after the first attempt for resets, 5xx and 429 (default 4). */
  retries?: number;
  /**
   * Retries when a host lets a request time out (default 1): a host that accepts connections but
   * does not answer fails in about (timeoutRetries + 1) × responseTimeoutMs, not after every retry
   * of a flaky network. Counted per host over consecutive timeouts, reset by any answer.
   */
  timeoutRetries?: number;
  /** First backoff delay; doubles each retry, with jitter (default 250 ms). */
  retryBaseMs?: number;
  /** A Retry-After longer than this fails instead of waiting (default 60 s). */
  maxRetryAfterMs?: number;
  /**
   * Blobs larger than this go up in PATCH chunks of this size. Default: none, every blob goes in
   * one streaming PUT (the fastest way, and what distribution expects when the size is known);
   * chunks only when the registry asks for them (`OCI-Chunk-Min-Length`).
   */
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
  /** The registry name (the image reference's; credentials are the contacted host's, see credentialName). */
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
  /**
   * The answer may take long to come (an upload's last request, when the registry may check the
   * whole blob): only the idle timeout bounds it, not the client's response timeout.
   */
  slowAnswer?: boolean;
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
  readonly chunkSize: number | undefined;
  readonly transfers: Limiter;
  private readonly auth = new Map<string, HostAuth>();
  /**
   * Manifest bytes by digest, from whichever repository they were read or written (they are
   * content-addressed and verified), so that tagging a manifest copied from elsewhere needs no GET.
   */
  private readonly manifestBytes = new Map<string, { raw: Buffer; mediaType: string }>();
  /** Credentials by the name they are looked up under (credentialName): a registry, or a mirror host. */
  private readonly creds = new Map<string, Promise<Credential | undefined>>();
  /** Timeouts in a row per host (reset by any answer from it). */
  private readonly timeouts = new Map<string, number>();
  readonly timeoutRetries: number;

  constructor(readonly options: RegistryClientOptions = {}) {
    const concurrency = Math.max(1, options.concurrency ?? 4);
    const t = options.settings?.timeouts;
    this.transport = new Transport(
      {
        userAgent: options.userAgent ?? 'archway/0.1',
        maxSockets: concurrency + 2,
        connectTimeoutMs: options.connectTimeoutMs ?? t?.connectMs ?? 30_000,
        responseTimeoutMs: options.responseTimeoutMs ?? t?.responseMs ?? 30_000,
        idleTimeoutMs: options.idleTimeoutMs ?? t?.idleMs ?? 120_000,
      },
      (host) => this.hostSettings(host),
    );
    this.credentials = options.credentials ?? new DockerConfigCredentials();
    this.progress = options.progress ?? nullProgress;
    this.retries = options.retries ?? 4;
    this.timeoutRetries = Math.max(0, options.timeoutRetries ?? 1);
    this.retryBaseMs = options.retryBaseMs ?? 250;
    this.maxRetryAfterMs = options.maxRetryAfterMs ?? 60_000;
    this.chunkSize = options.chunkSize;
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

  /** Remembers verified manifest bytes (a bounded number; the oldest are forgotten first). */
  rememberManifest(digest: Digest, raw: Buffer, mediaType: string): void {
    if (this.manifestBytes.size >= 512 && !this.manifestBytes.has(digest)) {
      const oldest = this.manifestBytes.keys().next();
      if (!oldest.done) this.manifestBytes.delete(oldest.value);
    }
    this.manifestBytes.set(digest, { raw, mediaType });
  }

  knownManifest(digest: Digest): { raw: Buffer; mediaType: string } | undefined {
    return this.manifestBytes.get(digest);
  }

  private hostAuth(host: string): HostAuth {
    let a = this.auth.get(host);
    if (!a) {
      a = { tokens: new Map() };
      this.auth.set(host, a);
    }
    return a;
  }

  /**
   * The name whose credentials may go to `host`: the registry's own when `host` is its API host,
   * else the host itself (a mirror). A mirror never gets the origin's credentials or tokens, only
   * those saved for the mirror (as BuildKit looks credentials up by the host it contacts, and
   * containers/image drops the origin's for a mirror).
   */
  credentialName(registry: string, host: string): string {
    return host === registryApiHost(registry) || host === registry ? registry : host;
  }

  /** Credentials for what a request to `host` on behalf of `registry` may carry. */
  private credential(registry: string, host: string, signal?: AbortSignal): Promise<Credential | undefined> {
    const name = this.credentialName(registry, host);
    let p = this.creds.get(name);
    if (!p) {
      p = this.credentials.get(name, signal ? { signal } : {});
      this.creds.set(name, p);
      p.catch(() => this.creds.delete(name));
    }
    return p;
  }

  /**
   * A request to `host` timed out: true (after a warning) when it may be tried again, false when
   * the host has had its chances. Consecutive timeouts are counted per host, so a probe, the ping
   * after it and the request itself share the budget.
   */
  private timedOut(host: string, e: NetworkFailure): boolean {
    if (!e.timeout) return false;
    const n = (this.timeouts.get(host) ?? 0) + 1;
    this.timeouts.set(host, n);
    if (n > this.timeoutRetries) return false;
    const what = e.timeout.kind === 'connect' ? `could not be reached in ${formatDuration(e.timeout.ms)}` : e.timeout.kind === 'response' ? `did not answer in ${formatDuration(e.timeout.ms)}` : `sent nothing for ${formatDuration(e.timeout.ms)}`;
    this.progress.emit({ kind: 'message', level: 'warn', text: `${host} ${what}; retrying (${n + 1}/${this.timeoutRetries + 1})` });
    return true;
  }

  /** Mirrors that could not be reached (a network error after retries): not asked again by this client. */
  private readonly downMirrors = new Set<string>();

  /** A mirror failed with a network error: later pulls go straight to the origin, after one warning. */
  mirrorFailed(mirror: string, origin: string, e: unknown): void {
    if (!(e instanceof ArchwayError) || e.code !== 'NETWORK' || this.downMirrors.has(mirror)) return;
    this.downMirrors.add(mirror);
    this.progress.emit({ kind: 'message', level: 'warn', text: `mirror ${mirror} cannot be reached; pulling from ${origin} instead` });
  }

  mirrorDown(mirror: string): boolean {
    return this.downMirrors.has(mirror);
  }

  /** Any answer from a host ends its run of timeouts. */
  private answered(host: string): void {
    if (this.timeouts.size > 0) this.timeouts.delete(host);
  }

  private tlsError(host: string, e: NetworkFailure): ArchwayError {
    return new ArchwayError('NETWORK', `TLS connection to ${host} failed: ${e.message}`, {
      hint: `if ${host} uses a private CA, set ca = ["/path/ca.pem"] under [registry."${host}"] in the archway config; to skip verification use insecure = true there or --insecure-registry ${host}`,
      details: { host, code: e.code },
    });
  }

  private networkError(host: string, what: string, e: NetworkFailure): ArchwayError {
    if (e.tls) return this.tlsError(host, e);
    const prefix = what === host ? '' : `${what}: `;
    if (e.timeout) {
      const tries = Math.min(this.timeouts.get(host) ?? 1, this.timeoutRetries + 1);
      return new ArchwayError('NETWORK', `${prefix}cannot talk to ${host}: ${e.message}${tries > 1 ? ` (${tries} attempts)` : ''}`, {
        hint: e.timeout.kind === 'idle'
          ? `the transfer stalled; set ARCHWAY_REGISTRY_IDLE_TIMEOUT (seconds) to wait longer`
          : `${host} ${e.timeout.kind === 'connect' ? 'cannot be reached' : 'accepts connections but does not answer'}; check it, or set ARCHWAY_REGISTRY_TIMEOUT (seconds) to wait longer`,
        details: { host, code: e.code, timeout: e.timeout.kind, timeoutMs: e.timeout.ms },
      });
    }
    return new ArchwayError('NETWORK', `${prefix}cannot talk to ${host}: ${e.message}${e.code && !e.message.includes(e.code) ? ` (${e.code})` : ''}`, { details: { host, code: e.code } });
  }

  private backoff(attempt: number): number {
    const base = this.retryBaseMs * 2 ** attempt;
    return Math.min(base + Math.random() * base, 30_000);
  }

  /**
   * GET /v2/ without credentials: learns the scheme that works and the auth challenge. `what`
   * (an image reference) names what failed in errors; the registry name when absent.
   */
  ping(registry: string, host: string, signal?: AbortSignal, what: string = registry): Promise<Challenge> {
    const a = this.hostAuth(host);
    if (a.challenge) return Promise.resolve(a.challenge);
    a.ping ??= this.doPing(host, what, signal).then(
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

  private async doPing(host: string, what: string, signal?: AbortSignal): Promise<Challenge> {
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
          const again = e.timeout ? this.timedOut(host, e) : !e.tls && attempt < this.retries && e.code !== 'ECONNREFUSED' && e.code !== 'ENOTFOUND';
          lastError = e.tls ? this.tlsError(host, e) : this.networkError(host, what, e);
          // A host that lets requests time out would do the same on the other scheme (same port).
          if (e.timeout && !again) throw lastError;
          if (again) {
            await sleep(this.backoff(attempt), signal);
            continue;
          }
          break; // next scheme
        }
        this.answered(host);
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
    throw lastError instanceof Error ? lastError : new ArchwayError('NETWORK', `${what}: cannot reach ${host}`);
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
    // The token is asked for with the credentials of the host that sent the challenge (a mirror's
    // own, never the origin's), wherever its realm is; it is kept for that host only.
    const name = this.credentialName(registry, host);
    const cred = await this.credential(registry, host, signal);
    let realm: URL;
    try {
      realm = new URL(challenge.realm);
    } catch {
      throw new ArchwayError('AUTH', `${name}: the registry's token realm "${redact(challenge.realm)}" is not a URL`);
    }
    if (realm.protocol !== 'https:' && realm.protocol !== 'http:') throw new ArchwayError('AUTH', `${name}: token realm must be http(s)`);
    // Credentials go to a realm on another host only over TLS (or on this machine).
    const realmHost = realm.hostname;
    const mayCredential = realm.protocol === 'https:' || realm.host === host || realmHost === '127.0.0.1' || realmHost === 'localhost' || realmHost === '[::1]' || realmHost.startsWith('127.');
    const useCred = cred !== undefined && mayCredential ? cred : undefined;
    let res: HttpResponse;
    const what = `${name}: token from ${realm.host}`;
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
      throw new ArchwayError('AUTH', `${name}: the token server refused ${useCred ? 'the credentials' : 'anonymous access'}${errs[0]?.message ? `: ${redact(errs[0].message)}` : ''}`, {
        hint: useCred ? `check the user and password (archway login ${name})` : `log in first: archway login ${name}`,
        details: { registry: name },
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
        this.answered(url.host);
        if (isRetryableStatus(res.status) && attempt < this.retries) {
          const wait = this.retryDelay(res, attempt);
          discard(res);
          await sleep(wait, signal);
          continue;
        }
        return res;
      } catch (e) {
        if (!(e instanceof NetworkFailure)) throw e;
        if (e.timeout ? !this.timedOut(url.host, e) : e.tls || attempt >= this.retries) throw this.networkError(url.host, what, e);
        await sleep(this.backoff(attempt), signal);
      }
    }
  }

  private async authorization(req: RegRequest, challenge: Challenge, fresh: boolean): Promise<string | undefined> {
    if (challenge.scheme === 'none') return undefined;
    if (challenge.scheme === 'basic') {
      const cred = await this.credential(req.registry, req.host, req.signal);
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
    const replayable = req.body === undefined || Buffer.isBuffer(req.body);
    const retry = req.retry ?? replayable;
    // The first request to a host goes out without pinging /v2/ first when it can be repeated:
    // its answer tells the scheme and the auth challenge as well as the ping's would (containerd
    // works this way), which saves a round trip. Anything else falls back to the ping, which
    // also gives the clearest errors (TLS, not a registry, refused connections).
    const a = this.auth.get(req.host);
    let probe = replayable && req.url === undefined && (req.method === 'GET' || req.method === 'HEAD') && a?.challenge === undefined && a?.ping === undefined;
    let challenge: Challenge = probe ? { scheme: 'none' } : await this.ping(req.registry, req.host, req.signal, req.what);
    let scheme = this.transport.schemes(req.host)[0] ?? 'https';
    let url = req.url ?? new URL(`${scheme}://${req.host}${req.path ?? '/v2/'}`);
    const unprobe = async (): Promise<void> => {
      probe = false;
      challenge = await this.ping(req.registry, req.host, req.signal, req.what);
      scheme = this.transport.schemes(req.host)[0] ?? 'https';
      url = req.url ?? new URL(`${scheme}://${req.host}${req.path ?? '/v2/'}`);
    };
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
        res = await this.transport.send({ method, url, headers, ...(req.body !== undefined && redirects === 0 ? { body: req.body } : {}), ...(req.signal ? { signal: req.signal } : {}), ...(req.slowAnswer ? { responseTimeoutMs: 0 } : {}) });
      } catch (e) {
        if (!(e instanceof NetworkFailure)) throw e;
        if (e.timeout) {
          // Timeouts have their own, smaller budget per host (shared with the ping).
          if (!retry || !replayable || !this.timedOut(url.host, e)) throw this.networkError(url.host, req.what, e);
          if (probe) await unprobe();
          else await sleep(this.backoff(attempt++), req.signal);
          continue;
        }
        if (probe) {
          await unprobe();
          continue;
        }
        if (e.tls || !retry || !replayable || attempt >= this.retries) throw this.networkError(url.host, req.what, e);
        await sleep(this.backoff(attempt++), req.signal);
        continue;
      }
      this.answered(url.host);
      if (probe) {
        // A 404 is a registry's answer when it says it speaks the registry API (the distribution
        // registry and most others do): a tag that is not there yet, as a copy asks first.
        const registry404 = res.status === 404 && res.headers['docker-distribution-api-version'] !== undefined;
        if (res.status === 401 || (res.status >= 200 && res.status < 400) || registry404) {
          // The host answers as a registry on this scheme.
          probe = false;
          this.transport.rememberScheme(req.host, scheme);
          const h = this.hostAuth(req.host);
          if (res.status !== 401) h.challenge ??= { scheme: 'none' };
          else if (!parseChallenge(res.headers['www-authenticate'])) {
            // As the ping: a 401 that does not say how means Basic.
            challenge = { scheme: 'basic' };
            h.challenge ??= challenge;
          }
        } else if (!isRetryableStatus(res.status)) {
          discard(res);
          await unprobe();
          continue;
        }
        // A 429 or 5xx is retried below as any answer is (the retry probes again), or returned.
      }
      if (res.status === 401 && sameHost && !reauthed && replayable) {
        reauthed = true;
        const c = parseChallenge(res.headers['www-authenticate']);
        if (c) {
          challenge = c;
          this.hostAuth(req.host).challenge = c.scheme === 'bearer' ? { ...c, scope: undefined } as Challenge : c;
        }
        if (challenge.scheme === 'none') {
          discard(res);
          throw new ArchwayError('AUTH', `${req.what}: ${req.host} asks for authentication without saying how`);
        }
        // Basic with nothing to send for this host (a mirror without saved credentials): asking
        // again would get the same answer.
        if (challenge.scheme === 'basic' && (await this.authorization(req, challenge, true)) === undefined) return res;
        discard(res);
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
  /** Manifest reads under way, so that concurrent callers asking for the same one share a request. */
  private readonly reading = new Map<string, Promise<ManifestResult>>();
  /** What this repository is known to hold (HEAD answers, uploads, mounts): no second HEAD. */
  private readonly present = new Map<string, boolean>();

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
    return [...mirrors.filter((m) => m !== this.host && !this.client.mirrorDown(m)), this.host];
  }

  private async fromHosts<T>(fn: (host: string) => Promise<T>, signal?: AbortSignal): Promise<T> {
    const hosts = this.pullHosts();
    let last: unknown;
    for (const host of hosts) {
      try {
        return await fn(host);
      } catch (e) {
        if (signal?.aborted || host === this.host) throw e;
        this.client.mirrorFailed(host, this.registry, e);
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

  /**
   * Opens the way before the first real request: learns the host's scheme and auth scheme over a
   * kept-alive connection and fetches the token for pulling (or pushing), so that work which
   * starts later does not wait for them. Failures are left for the real requests to report.
   */
  async prepare(opts: { push?: boolean; signal?: AbortSignal } = {}): Promise<void> {
    try {
      const challenge = await this.client.ping(this.registry, this.host, opts.signal, this.name);
      if (challenge.scheme === 'bearer') await this.client.token(this.registry, this.host, challenge, opts.push ? this.pushScopes : this.pullScopes, opts.signal);
    } catch {
      // reported by the request that needs it
    }
  }

  /** A manifest or index by tag or digest: raw bytes, media type, computed digest. */
  async getManifest(reference: string, opts: { signal?: AbortSignal; accept?: string } = {}): Promise<ManifestResult> {
    const byDigest = isDigest(reference);
    if (!byDigest && !TAG_RE.test(reference)) throw new ArchwayError('REFERENCE', `"${reference}" is neither a tag nor a digest`);
    if (byDigest) {
      const cached = this.manifests.get(reference);
      if (cached) return { raw: cached.raw, mediaType: cached.mediaType, digest: reference, size: cached.raw.length };
    }
    const key = `${reference} ${opts.accept ?? ''}`;
    let p = this.reading.get(key);
    if (!p) {
      p = this.readManifest(reference, byDigest ? reference : undefined, opts).finally(() => this.reading.delete(key));
      this.reading.set(key, p);
    }
    return p;
  }

  private async readManifest(reference: string, byDigest: Digest | undefined, opts: { signal?: AbortSignal; accept?: string }): Promise<ManifestResult> {
    const what = this.what(reference);
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
        verifyBytes(raw, byDigest, undefined, what);
        digest = byDigest;
      } else digest = computeDigest(raw);
      let mediaType: string;
      if (opts.accept !== undefined && !isManifestMediaType(contentType) && !isIndexMediaType(contentType) && contentType !== '') {
        mediaType = contentType;
      } else {
        mediaType = parseManifestOrIndex(raw, contentType || undefined, what).mediaType;
      }
      this.manifests.set(digest, { raw, mediaType });
      this.client.rememberManifest(digest, raw, mediaType);
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
    const path = `/v2/${this.repository}/blobs/${digest}`;
    const progress = this.progress(opts);
    let lastReport = 0;
    return new BlobBody(first, {
      algorithm: digestAlgorithm(digest),
      hex: digestHex(digest),
      size: desc.size,
      what,
      retries: client.retries,
      retryBaseMs: client.retryBaseMs,
      signal,
      onBytes: (received) => {
        if (received - lastReport >= MiB || received >= desc.size) {
          lastReport = received;
          progress.emit({ kind: 'blob-bytes', digest, bytes: received, total: desc.size });
        }
      },
      resume: async (offset) => {
        const res = await client.request({ registry: this.registry, host, method: 'GET', path, headers: { range: `bytes=${offset}-` }, scopes: this.pullScopes, what, signal });
        if (res.status !== 206) {
          const e = res.status === 200 ? new ArchwayError('INTEGRITY', `${what}: the body was cut short after ${offset} of ${desc.size} bytes and the registry cannot resume it`) : await client.failure(res, what);
          res.body.destroy();
          throw e;
        }
        return res;
      },
    });
  }

  async exists(desc: Descriptor, opts: CallOptions = {}): Promise<boolean> {
    const digest = parseDigest(desc.digest);
    const kind = isManifestDescriptor(desc) ? 'manifests' : 'blobs';
    if (kind === 'blobs' && this.present.get(digest) === true) return true;
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
    if (res.status === 200 || res.status === 404) {
      discard(res);
      if (kind === 'blobs') this.present.set(digest, res.status === 200);
      return res.status === 200;
    }
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
    const transfer = async (): Promise<void> => {
      // A HEAD that just said "missing" (a copy asks before fetching) is not asked again.
      const known = this.present.get(digest);
      if (known === true || (known === undefined && (await this.exists(desc, opts)))) {
        if (!Buffer.isBuffer(content)) content.destroy();
        progress.emit({ kind: 'blob', phase: 'skip', digest, size: desc.size });
        return;
      }
      progress.emit({ kind: 'blob', phase: 'start', digest, size: desc.size });
      await this.uploadBlob(desc, digest, content, opts);
      this.present.set(digest, true);
      progress.emit({ kind: 'blob', phase: 'done', digest, size: desc.size });
    };
    if (desc.size <= SMALL_BLOB) await transfer();
    else await this.client.transfers.run(transfer, opts.signal);
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
    this.client.rememberManifest(digest, raw, desc.mediaType);
    if (reference === digest) this.progress(opts).emit({ kind: 'manifest', phase: 'done', digest, mediaType: desc.mediaType, what });
  }

  async tag(desc: Descriptor, reference: string, opts: CallOptions = {}): Promise<void> {
    if (!TAG_RE.test(reference)) throw new ArchwayError('REFERENCE', `"${reference}" is not a valid tag`);
    if (!isManifestDescriptor(desc)) throw new ArchwayError('USAGE', `${this.name}:${reference}: only a manifest or an index can be tagged (got ${desc.mediaType})`);
    throwIfAborted(opts.signal, `tagging ${this.name}:${reference}`);
    const digest = parseDigest(desc.digest);
    // The bytes pushed or read before (from any repository: they are content-addressed), else fetched back.
    let raw = this.manifests.get(digest)?.raw ?? this.client.knownManifest(digest)?.raw;
    if (!raw) {
      const res = await this.client.request({ registry: this.registry, host: this.host, method: 'GET', path: `/v2/${this.repository}/manifests/${digest}`, headers: { accept: `${desc.mediaType}, ${MANIFEST_ACCEPT}` }, scopes: this.pushScopes, what: `${this.name}@${digest}`, signal: opts.signal });
      if (res.status !== 200) throw await this.client.failure(res, `${this.name}@${digest}`);
      raw = await readAllLimited(res.body, LIMITS.manifest, `${this.name}@${digest}`);
    }
    await this.putManifest(desc, raw, reference, opts);
    this.progress(opts).emit({ kind: 'tag', reference: `${this.name}:${reference}`, digest });
  }

  async tagged(tag: string, opts: CallOptions = {}): Promise<string | undefined> {
    if (!TAG_RE.test(tag)) return undefined;
    const what = this.what(tag);
    // The manifest's bytes, digested here: Docker-Content-Digest is the registry's word, not a digest.
    const res = await this.client.request({ registry: this.registry, host: this.host, method: 'GET', path: `/v2/${this.repository}/manifests/${tag}`, headers: { accept: MANIFEST_ACCEPT }, scopes: this.pushScopes, what, signal: opts.signal });
    if (res.status !== 200) {
      discard(res);
      return undefined;
    }
    return computeDigest(await readAllLimited(res.body, LIMITS.manifest, what));
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
      this.present.set(digest, true);
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
    // The bytes are checked on the way. A stream that already verifies this digest and size (what a
    // registry or store read returns) is not hashed a second time; anything else goes through a
    // verifier. Either fails instead of ending on a mismatch, so an upload never completes with
    // bad bytes (and the registry checks ?digest= as well).
    let source: Buffer | Readable;
    let streamError: unknown;
    if (Buffer.isBuffer(content)) source = content;
    else {
      if (verifiesContent(content, digestAlgorithm(digest), digestHex(digest), desc.size)) source = content;
      else {
        const v = verifier(digest, desc.size, what);
        pipeline(content, v, () => undefined);
        source = v;
      }
      // (It may have failed already, before anyone listened: `errored` keeps that.)
      streamError = source.errored ?? undefined;
      source.on('error', (e) => (streamError ??= e));
    }
    let reader: ByteReader | undefined;
    try {
      const chunkSize = client.chunkSize !== undefined && desc.size > client.chunkSize ? client.chunkSize : 0;
      if (minChunk === 0 && chunkSize === 0) {
        // One PUT whose body streams from the source, with backpressure: nothing is buffered.
        const url = new URL(location);
        url.searchParams.set('digest', digest);
        const res = await client.request({ registry: this.registry, host: this.host, method: 'PUT', url, headers: { 'content-type': 'application/octet-stream', 'content-length': String(desc.size) }, body: source, scopes: this.pushScopes, what, signal, retry: false, slowAnswer: true });
        if (streamError !== undefined) {
          discard(res);
          throw streamError;
        }
        if (res.status !== 201) throw await client.failure(res, what);
        discard(res);
        return;
      }
      // Chunked (the registry asks for it, or chunkSize says so): PATCH pieces streamed from the
      // source, then PUT ?digest= only once the source has ended with its checks passed.
      const size = Math.max(minChunk, chunkSize || 64 * MiB);
      reader = new ByteReader(source, what);
      let offset = 0;
      while (offset < desc.size) {
        const n = Math.min(size, desc.size - offset);
        const res = await client.request({
          registry: this.registry,
          host: this.host,
          method: 'PATCH',
          url: location,
          headers: { 'content-type': 'application/octet-stream', 'content-length': String(n), 'content-range': `${offset}-${offset + n - 1}` },
          body: Readable.from(reader.take(n), { objectMode: false }),
          scopes: this.pushScopes,
          what,
          signal,
          retry: false,
        });
        if (streamError !== undefined || reader.error !== undefined) {
          discard(res);
          throw streamError ?? reader.error;
        }
        if (res.status !== 202) throw await client.failure(res, what);
        discard(res);
        location = this.location(res, what);
        offset += n;
      }
      await reader.end();
      const url = new URL(location);
      url.searchParams.set('digest', digest);
      const res = await client.request({ registry: this.registry, host: this.host, method: 'PUT', url, headers: { 'content-length': '0' }, scopes: this.pushScopes, what, signal, retry: false, slowAnswer: true });
      if (res.status !== 201) throw await client.failure(res, what);
      discard(res);
    } catch (e) {
      if (!Buffer.isBuffer(source)) source.destroy();
      await this.cancelUpload(location);
      throw streamError ?? reader?.error ?? e;
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

/**
 * Reads a stream in pieces of exact sizes, each piece itself a stream (a PATCH body), without
 * holding more than the chunk the source last gave.
 */
class ByteReader {
  private readonly it: AsyncIterator<unknown>;
  private leftover: Buffer | undefined;
  error: unknown;

  constructor(
    source: Readable | Buffer,
    private readonly what: string,
  ) {
    this.it = Buffer.isBuffer(source)
      ? (async function* (): AsyncGenerator<Buffer> {
          yield source;
        })()
      : source[Symbol.asyncIterator]();
  }

  private fail(e: unknown): never {
    this.error ??= e;
    throw e;
  }

  /** The next `n` bytes; fails when the source ends before them. */
  async *take(n: number): AsyncGenerator<Buffer> {
    let need = n;
    while (need > 0) {
      let buf = this.leftover;
      this.leftover = undefined;
      if (!buf) {
        let r: IteratorResult<unknown>;
        try {
          r = await this.it.next();
        } catch (e) {
          this.fail(e);
        }
        if (r.done) this.fail(new ArchwayError('INTEGRITY', `${this.what}: the content ended early`));
        buf = r.value as Buffer;
      }
      if (buf.length > need) {
        this.leftover = buf.subarray(need);
        buf = buf.subarray(0, need);
      }
      need -= buf.length;
      yield buf;
    }
  }

  /** Resolves when the source has ended (its checks passed) with no byte left over. */
  async end(): Promise<void> {
    if (this.leftover && this.leftover.length > 0) this.fail(new ArchwayError('INTEGRITY', `${this.what}: more bytes than expected`));
    try {
      for (;;) {
        const r = await this.it.next();
        if (r.done) return;
        if ((r.value as Buffer).length > 0) this.fail(new ArchwayError('INTEGRITY', `${this.what}: more bytes than expected`));
      }
    } catch (e) {
      this.fail(e);
    }
  }
}
