/**
 * ADD of http(s) URLs: the download, streamed to a file and hashed as it arrives, and the naming
 * and metadata rules BuildKit applies (source/http and dockerfile2llb): the file is named after the
 * last element of the URL's path (`__unnamed__` when there is none), has mode 0600, and its mtime
 * is the response's Last-Modified (the epoch when absent). URLs are never unpacked by default.
 */
import { createHash, type Hash } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { Readable, Transform, type TransformCallback } from 'node:stream';
import type { ReadableStream as WebReadableStream } from 'node:stream/web';
import { pipeline } from 'node:stream/promises';
import { abortError, ArchwayError, errorMessage, redact } from '../util/index.js';

export const URL_FILE_MODE = 0o600;

export interface Downloaded {
  url: string;
  /** Host path holding the bytes. */
  file: string;
  size: number;
  /** Hex digests by algorithm: always sha256, plus any other algorithm asked for. */
  digests: Record<string, string>;
  /** From Last-Modified; the Unix epoch when the server sent none (as BuildKit). */
  mtime: Date;
}

export interface Checksum {
  algorithm: 'sha256' | 'sha384' | 'sha512';
  hex: string;
}

/** Parses `--checksum=sha256:<hex>` (and sha384, sha512). */
export function parseChecksum(text: string): Checksum {
  const m = /^(sha256|sha384|sha512):([0-9a-f]+)$/.exec(text);
  const lengths = { sha256: 64, sha384: 96, sha512: 128 } as const;
  if (!m || (m[2] as string).length !== lengths[m[1] as Checksum['algorithm']]) {
    throw new ArchwayError('USAGE', `invalid --checksum "${text}": expected sha256:<64 hex digits> (or sha384, sha512)`);
  }
  return { algorithm: m[1] as Checksum['algorithm'], hex: m[2] as string };
}

/** An http(s) URL that is not a Git repository (`https://host/repo.git`, with an optional `#ref`). */
export function isHttpUrl(src: string): boolean {
  return /^https?:\/\//i.test(src) && !/\.git(#.*)?$/.test(src);
}

/**
 * The name a downloaded file gets, as dockerfile2llb names it: Go's path.Base of the URL's
 * (unescaped) path, or `__unnamed__` for an empty path or `/`.
 */
export function urlFileName(url: string): string {
  let p: string;
  try {
    p = new URL(url).pathname;
  } catch {
    return '__unnamed__';
  }
  try {
    p = decodeURIComponent(p);
  } catch {
    /* keep it escaped */
  }
  const trimmed = p.replace(/\/+$/, '');
  const base = trimmed.slice(trimmed.lastIndexOf('/') + 1);
  return base === '' || base === '.' || base === '..' ? '__unnamed__' : base;
}

class Hasher extends Transform {
  readonly hashes: Map<string, Hash>;
  size = 0;
  constructor(algorithms: readonly string[]) {
    super();
    this.hashes = new Map(algorithms.map((a) => [a, createHash(a)]));
  }
  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    this.size += chunk.length;
    for (const h of this.hashes.values()) h.update(chunk);
    cb(null, chunk);
  }
}

/**
 * Downloads `url` into `file` (created with mode 0600), hashing with sha256 and `algorithms`.
 * Redirects are followed; no credentials are sent. HTTP and connection failures are NETWORK
 * errors that name the URL (without any userinfo).
 */
export async function downloadUrl(url: string, file: string, opts: { algorithms?: readonly string[]; signal?: AbortSignal } = {}): Promise<Downloaded> {
  const shown = redact(url);
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new ArchwayError('USAGE', `invalid URL "${shown}"`);
  }
  if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:') throw new ArchwayError('USAGE', `unsupported URL scheme in "${shown}" (http and https are supported)`);
  if (parsed.username || parsed.password) {
    throw new ArchwayError('USAGE', `the URL "${shown}" carries credentials; ADD does not send them`, { hint: 'download the file into the build context and COPY it' });
  }
  let res: Response;
  try {
    res = await fetch(parsed, { redirect: 'follow', headers: { 'user-agent': 'archway', accept: '*/*' }, ...(opts.signal ? { signal: opts.signal } : {}) });
  } catch (e) {
    if (opts.signal?.aborted) throw abortError(opts.signal, `download of ${shown}`);
    const cause = e instanceof Error && e.cause instanceof Error ? e.cause.message : errorMessage(e);
    throw new ArchwayError('NETWORK', `cannot download ${shown}: ${cause}`, { cause: e });
  }
  if (!res.ok || res.body === null) {
    await res.body?.cancel().catch(() => undefined);
    throw new ArchwayError('NETWORK', `cannot download ${shown}: the server answered ${res.status} ${res.statusText}`.trimEnd(), { details: { url: shown, status: res.status } });
  }
  const algorithms = [...new Set(['sha256', ...(opts.algorithms ?? [])])];
  const hasher = new Hasher(algorithms);
  try {
    await pipeline(Readable.fromWeb(res.body as WebReadableStream<Uint8Array>), hasher, createWriteStream(file, { mode: URL_FILE_MODE }), ...(opts.signal ? [{ signal: opts.signal }] : []));
  } catch (e) {
    if (opts.signal?.aborted) throw abortError(opts.signal, `download of ${shown}`);
    throw new ArchwayError('NETWORK', `download of ${shown} failed: ${errorMessage(e)}`, { cause: e });
  }
  const lastModified = res.headers.get('last-modified');
  const t = lastModified ? Date.parse(lastModified) : NaN;
  const digests: Record<string, string> = {};
  for (const [a, h] of hasher.hashes) digests[a] = h.digest('hex');
  return { url, file, size: hasher.size, digests, mtime: new Date(Number.isNaN(t) ? 0 : t) };
}
