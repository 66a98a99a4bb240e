/**
 * One HTTP exchange on node:http/node:https with keep-alive agents per host: TLS options per host,
 * timeouts, AbortSignal, no automatic redirects (the client follows them itself, so credentials
 * never go to another host). Retries and auth live in client.ts.
 */
import { readFileSync } from 'node:fs';
import type * as http from 'node:http';
import type * as https from 'node:https';
import type * as tls from 'node:tls';
import type { Readable } from 'node:stream';
import { ArchwayError, LIMITS, abortError, errorMessage, readAllLimited, redact } from '../util/index.js';
import { endpointFor, type Endpoint, type HostSettings } from './settings.js';


interface TlsModules {
  https: typeof https;
  tls: typeof tls;
}

/**
 * Node's HTTP and TLS modules, loaded on the first request that needs them: node:http costs ~7 ms
 * of start-up that commands which never talk to a registry (a cached build, run) would pay for
 * nothing, and node:https with node:tls as much again, which a plain-HTTP registry never needs.
 * process.getBuiltinModule (Node 20.16+) loads synchronously and works in bin/archway.cjs's vm script.
 */
let httpModule: Promise<typeof http> | undefined;
let tlsModules: Promise<TlsModules> | undefined;
function loadHttp(): Promise<typeof http> {
  const get = process.getBuiltinModule?.bind(process);
  httpModule ??= get ? Promise.resolve(get('node:http')) : import('node:http');
  return httpModule;
}
function loadTls(): Promise<TlsModules> {
  const get = process.getBuiltinModule?.bind(process);
  tlsModules ??= get
    ? Promise.resolve({ https: get('node:https'), tls: get('node:tls') })
    : Promise.all([import('node:https'), import('node:tls')]).then(([hs, t]) => ({ https: hs, tls: t }));
  return tlsModules;
}

/**
 * The certificates of NODE_EXTRA_CA_CERTS, which bin/archway passes on as ARCHWAY_EXTRA_CA_CERTS
 * so that Node does not parse them at start-up; read once, when the first TLS agent is made.
 */
let extraCa: Buffer | null | undefined;
function extraCaCertificates(): Buffer | null {
  if (extraCa !== undefined) return extraCa;
  const file = process.env['ARCHWAY_EXTRA_CA_CERTS'];
  extraCa = null;
  if (file) {
    try {
      extraCa = readFileSync(file);
    } catch (e) {
      // Node itself only warns when NODE_EXTRA_CA_CERTS cannot be read; do the same.
      process.emitWarning(`ignoring extra CA certificates ${file}: ${errorMessage(e)}`);
    }
  }
  return extraCa;
}

export interface HttpResponse {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: http.IncomingMessage;
  url: URL;
}

export interface SendOptions {
  method: string;
  url: URL;
  headers?: Record<string, string>;
  body?: Buffer | Readable;
  signal?: AbortSignal;
  /** Overrides the transport's responseTimeoutMs for this request; 0: only the idle timeout. */
  responseTimeoutMs?: number;
}

export interface TransportOptions {
  userAgent: string;
  /** Sockets per host. */
  maxSockets: number;
  /** A connection not established in this long fails the request. */
  connectTimeoutMs: number;
  /**
   * A request without a streamed body (a ping, a manifest, a HEAD, a token, the first answer of a
   * blob download) whose answer's headers have not come this long after it was sent fails: a host
   * that accepts connections but never answers is noticed in seconds, not minutes.
   */
  responseTimeoutMs: number;
  /**
   * No byte in either direction for this long fails the request: what bounds a streamed upload,
   * and a body that stops flowing (a large blob is never bounded by a total time).
   */
  idleTimeoutMs: number;
}

/** What ran out, when a NetworkFailure is a timeout. */
export type TimeoutKind = 'connect' | 'response' | 'idle';

/** A network-level failure (before or during the response), retryable by the caller. */
export class NetworkFailure extends Error {
  constructor(
    message: string,
    readonly code: string | undefined,
    readonly tls: boolean,
    /** Set when one of the transport's timeouts ended the request. */
    readonly timeout?: { kind: TimeoutKind; ms: number },
  ) {
    super(message);
    this.name = 'NetworkFailure';
  }
}

/** "30 s", "200 ms": a duration as messages show it. */
export function formatDuration(ms: number): string {
  return ms >= 1000 && ms % 1000 === 0 ? `${ms / 1000} s` : ms >= 10_000 ? `${Math.round(ms / 1000)} s` : `${ms} ms`;
}

/** The timeout error a request is destroyed with; `timeout` tells NetworkFailure which one. */
class TimeoutError extends Error {
  readonly code = 'ETIMEDOUT';
  constructor(
    readonly kind: TimeoutKind,
    readonly ms: number,
  ) {
    super(kind === 'connect' ? `no connection after ${formatDuration(ms)}` : kind === 'response' ? `no answer in ${formatDuration(ms)}` : `no data for ${formatDuration(ms)}`);
    this.name = 'TimeoutError';
  }
}

const TLS_CODES = /^(ERR_TLS_|ERR_SSL_|DEPTH_ZERO_SELF_SIGNED_CERT|SELF_SIGNED_CERT_IN_CHAIN|UNABLE_TO_VERIFY_LEAF_SIGNATURE|UNABLE_TO_GET_ISSUER_CERT|CERT_|HOSTNAME_MISMATCH|EPROTO)/;

export function isTlsFailure(e: unknown): boolean {
  return e instanceof NetworkFailure && e.tls;
}

interface HostConn {
  endpoint: Endpoint;
  /** The scheme that worked, once known. */
  scheme?: 'http' | 'https';
  httpAgent?: http.Agent;
  httpsAgent?: https.Agent;
}

export class Transport {
  private readonly hosts = new Map<string, HostConn>();
  private readonly contexts = new Map<string, tls.SecureContext>();
  constructor(
    readonly options: TransportOptions,
    private readonly settingsOf: (host: string) => HostSettings,
  ) {}

  private conn(host: string): HostConn {
    let c = this.hosts.get(host);
    if (!c) {
      c = { endpoint: endpointFor(host, this.settingsOf(host)) };
      this.hosts.set(host, c);
    }
    return c;
  }

  /** Schemes to try for a host, the one that worked first. */
  schemes(host: string): Array<'http' | 'https'> {
    const c = this.conn(host);
    return c.scheme ? [c.scheme] : c.endpoint.schemes;
  }

  rememberScheme(host: string, scheme: 'http' | 'https'): void {
    this.conn(host).scheme = scheme;
  }

  private agent(url: URL, net: { http: typeof http } | TlsModules): http.Agent {
    const c = this.conn(url.host);
    if ('http' in net) {
      c.httpAgent ??= new net.http.Agent({ keepAlive: true, maxSockets: this.options.maxSockets });
      return c.httpAgent;
    }
    const { https, tls } = net;
    if (!c.httpsAgent) {
      // Without verification no CA is read at all; with it, one context per set of CA files is
      // shared by every host that uses it (parsing the root store with NODE_EXTRA_CA_CERTS's
      // bundle costs tens of milliseconds each time).
      const secureContext = c.endpoint.verify ? this.secureContext(c.endpoint.ca, url.host, tls) : undefined;
      c.httpsAgent = new https.Agent({
        keepAlive: true,
        maxSockets: this.options.maxSockets,
        rejectUnauthorized: c.endpoint.verify,
        ...(secureContext ? { secureContext } : {}),
      });
    }
    return c.httpsAgent;
  }

  /** The configured CAs (and NODE_EXTRA_CA_CERTS's) in addition to the system's; undefined: Node's default. */
  private secureContext(files: readonly string[], host: string, tls: TlsModules['tls']): tls.SecureContext | undefined {
    const extra = extraCaCertificates();
    if (files.length === 0 && !extra) return undefined;
    const key = files.join('\n');
    let ctx = this.contexts.get(key);
    if (!ctx) {
      let ca: Buffer[];
      try {
        ca = files.map((f) => readFileSync(f));
      } catch (e) {
        throw new ArchwayError('NETWORK', `cannot read the CA file configured for ${host}: ${errorMessage(e)}`);
      }
      if (extra) ca.push(extra);
      ctx = tls.createSecureContext({ ca: [...tls.rootCertificates, ...ca.map((b) => b.toString('utf8'))] });
      this.contexts.set(key, ctx);
    }
    return ctx;
  }

  send(opts: SendOptions): Promise<HttpResponse> {
    return opts.url.protocol === 'https:' ? loadTls().then((net) => this.sendWith(net.https, net, opts)) : loadHttp().then((h) => this.sendWith(h, { http: h }, opts));
  }

  private sendWith(mod: typeof http | typeof https, net: { http: typeof http } | TlsModules, opts: SendOptions): Promise<HttpResponse> {
    const { signal } = opts;
    if (signal?.aborted) return Promise.reject(abortError(signal));
    const url = opts.url;
    const headers: Record<string, string> = { 'user-agent': this.options.userAgent, ...opts.headers };
    if (Buffer.isBuffer(opts.body)) headers['content-length'] = String(opts.body.length);
    let agent: http.Agent;
    try {
      agent = this.agent(url, net);
    } catch (e) {
      return Promise.reject(e);
    }
    const { connectTimeoutMs, responseTimeoutMs, idleTimeoutMs } = this.options;
    // A streamed body (an upload) may take long to send and the registry long to check it: only
    // the idle timeout bounds it. Everything else must be answered in responseTimeoutMs.
    const answerTimeoutMs = opts.responseTimeoutMs ?? (opts.body === undefined || Buffer.isBuffer(opts.body) ? responseTimeoutMs : 0);
    return new Promise<HttpResponse>((resolve, reject) => {
      let settled = false;
      let connectTimer: NodeJS.Timeout | undefined;
      let answerTimer: NodeJS.Timeout | undefined;
      const stopTimers = (): void => {
        clearTimeout(connectTimer);
        clearTimeout(answerTimer);
      };
      const req = mod.request(url, { method: opts.method, headers, agent });
      const onAbort = (): void => {
        stopTimers();
        req.destroy();
        if (!settled) {
          settled = true;
          reject(abortError(signal));
        }
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      const cleanup = (): void => signal?.removeEventListener('abort', onAbort);
      req.setTimeout(idleTimeoutMs, () => {
        req.destroy(new TimeoutError('idle', idleTimeoutMs));
      });
      // The connect clock starts when the request has a new socket (waiting in the agent's queue
      // behind other transfers to the same host is not the host's silence); the answer's when the
      // whole request has been sent (a slow link sending a manifest is not the host's silence either).
      req.on('socket', (socket) => {
        if (settled || connectTimeoutMs <= 0 || !socket.connecting) return;
        connectTimer = setTimeout(() => req.destroy(new TimeoutError('connect', connectTimeoutMs)), connectTimeoutMs);
        socket.once(url.protocol === 'https:' ? 'secureConnect' : 'connect', () => clearTimeout(connectTimer));
      });
      req.on('finish', () => {
        if (settled || answerTimeoutMs <= 0) return;
        answerTimer = setTimeout(() => req.destroy(new TimeoutError('response', answerTimeoutMs)), answerTimeoutMs);
      });
      req.on('close', stopTimers);
      req.on('error', (e: NodeJS.ErrnoException) => {
        stopTimers();
        cleanup();
        if (settled) return;
        settled = true;
        if (signal?.aborted) {
          reject(abortError(signal));
          return;
        }
        const code = e.code;
        if (e instanceof TimeoutError) {
          reject(new NetworkFailure(e.message, code, false, { kind: e.kind, ms: e.ms }));
          return;
        }
        const tls = url.protocol === 'https:' && (TLS_CODES.test(code ?? '') || /ssl|tls|certificate|wrong version number/i.test(e.message));
        reject(new NetworkFailure(redact(e.message), code, tls));
      });
      req.on('response', (res) => {
        stopTimers();
        if (settled) {
          res.destroy();
          return;
        }
        settled = true;
        res.on('close', cleanup);
        // Idle timeout keeps applying while the body streams.
        res.on('error', () => undefined);
        resolve({ status: res.statusCode ?? 0, headers: res.headers, body: res, url });
      });
      const body = opts.body;
      if (body === undefined) req.end();
      else if (Buffer.isBuffer(body)) req.end(body);
      else if (body.destroyed) {
        // Failed or closed before it could be sent (pipe would wait for it forever).
        req.destroy(body.errored ?? new Error('the request body was closed before it was sent'));
      } else {
        body.on('error', (e) => req.destroy(e));
        body.pipe(req);
      }
    });
  }

  close(): void {
    for (const c of this.hosts.values()) {
      c.httpAgent?.destroy();
      c.httpsAgent?.destroy();
    }
    this.hosts.clear();
  }
}

/** Reads (at most 1 MiB of) an error body; never throws. */
export async function readErrorBody(res: HttpResponse): Promise<string> {
  try {
    const buf = await readAllLimited(res.body, LIMITS.errorBody, 'error body');
    return buf.toString('utf8');
  } catch {
    res.body.destroy();
    return '';
  }
}

export interface RegistryErrorEntry {
  code: string;
  message: string;
}

/** The `errors` of a registry's error body (distribution spec), if it has any. */
export function parseRegistryErrors(body: string): RegistryErrorEntry[] {
  try {
    const v: unknown = JSON.parse(body);
    if (typeof v === 'object' && v !== null && 'errors' in v && Array.isArray((v as { errors: unknown }).errors)) {
      return ((v as { errors: unknown[] }).errors)
        .filter((x): x is Record<string, unknown> => typeof x === 'object' && x !== null)
        .map((x) => ({ code: typeof x['code'] === 'string' ? x['code'] : 'UNKNOWN', message: typeof x['message'] === 'string' ? x['message'] : '' }));
    }
  } catch {
    // not JSON
  }
  return [];
}

/** Drains a response body without keeping it, so the socket returns to the pool. */
export function discard(res: HttpResponse): void {
  res.body.resume();
}
