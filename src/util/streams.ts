import { createHash, type Hash } from 'node:crypto';
import { pipeline, Transform, type TransformCallback, type Readable } from 'node:stream';
import { abortError, ArchwayError } from './errors.js';

/** Counts and hashes bytes as they pass, so a digest is computed while streaming, never after buffering. */
export class HashingCounter extends Transform {
  readonly hash: Hash;
  bytes = 0;
  constructor(readonly algorithm: string = 'sha256') {
    super();
    this.hash = createHash(algorithm);
  }
  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    this.bytes += chunk.length;
    this.hash.update(chunk);
    cb(null, chunk);
  }
  /** Hex digest; valid once the stream has ended. */
  hex(): string {
    return this.hash.copy().digest('hex');
  }
}

/** A stream that ends only when its bytes have a given digest and size, and fails otherwise. */
export interface SelfVerifying {
  verifies(algorithm: string, hex: string, size: number): boolean;
}

/** Whether `s` is a stream that already checks exactly these bytes (so they need not be hashed again). */
export function verifiesContent(s: unknown, algorithm: string, hex: string, size: number): boolean {
  return typeof s === 'object' && s !== null && typeof (s as Partial<SelfVerifying>).verifies === 'function' && (s as SelfVerifying).verifies(algorithm, hex, size);
}

export interface VerifyExpectation {
  algorithm: string;
  hex: string;
  size: number;
  /** What is read, in the user's words (a reference or a digest), for the error message. */
  what: string;
}

/**
 * Passes bytes through while checking them against an expected size and digest. Reading more than
 * `size` bytes fails at once (a lying server cannot make us read forever); a mismatch at the end
 * fails the stream instead of ending it, so a consumer never takes bad bytes for good ones.
 */
export class VerifyingStream extends Transform implements SelfVerifying {
  private readonly hash: Hash;
  private bytes = 0;
  constructor(private readonly expect: VerifyExpectation) {
    super();
    this.hash = createHash(expect.algorithm);
  }
  /**
   * Whether this stream checks exactly these bytes: a consumer (an upload) can then skip hashing
   * them a second time, since the stream fails instead of ending when they do not match.
   */
  verifies(algorithm: string, hex: string, size: number): boolean {
    return this.expect.algorithm === algorithm && this.expect.hex === hex && this.expect.size === size;
  }
  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    this.bytes += chunk.length;
    if (this.bytes > this.expect.size) {
      cb(
        new ArchwayError(
          'INTEGRITY',
          `${this.expect.what}: more than the expected ${this.expect.size} bytes`,
        ),
      );
      return;
    }
    this.hash.update(chunk);
    cb(null, chunk);
  }
  override _flush(cb: TransformCallback): void {
    if (this.bytes !== this.expect.size) {
      cb(
        new ArchwayError(
          'INTEGRITY',
          `${this.expect.what}: got ${this.bytes} bytes, expected ${this.expect.size}`,
        ),
      );
      return;
    }
    const got = this.hash.digest('hex');
    if (got !== this.expect.hex) {
      cb(
        new ArchwayError(
          'INTEGRITY',
          `${this.expect.what}: digest mismatch: content is ${this.expect.algorithm}:${got}, expected ${this.expect.algorithm}:${this.expect.hex}`,
        ),
      );
      return;
    }
    cb();
  }
}

/**
 * `source` read through `check` (a verifier), for a consumer that starts reading later: what
 * `fetch()` of a file-backed source returns. Joined with pipeline(), not pipe(): a read error
 * fails `check`, a failure of `check` (a digest mismatch) stops the read, and destroying `check`
 * (a consumer giving up) closes `source`. A failure that comes before anyone listens (a small blob
 * read whole and found corrupt while its consumer is still opening a file) stays in
 * `check.errored`, where the consumer's pipeline() or async iteration finds it, instead of being
 * thrown as an uncaught 'error' event. Consumers must read it with pipeline() or `for await`,
 * never with pipe(), which loses such a failure and waits forever.
 */
export function verifiedStream<T extends Transform>(source: Readable, check: T, opts: { signal?: AbortSignal | undefined; what?: string } = {}): T {
  check.on('error', () => undefined);
  pipeline(source, check, () => undefined);
  const signal = opts.signal;
  if (signal) {
    const onAbort = (): void => {
      check.destroy(abortError(signal, `reading ${opts.what ?? 'a blob'}`));
    };
    if (signal.aborted) onAbort();
    else {
      signal.addEventListener('abort', onAbort, { once: true });
      check.once('close', () => signal.removeEventListener('abort', onAbort));
    }
  }
  return check;
}

/** Reads a whole stream into memory, refusing more than `limit` bytes. For manifests and configs only. */
export async function readAllLimited(stream: Readable, limit: number, what: string): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let total = 0;
  for await (const chunk of stream) {
    const buf = chunk as Buffer;
    total += buf.length;
    if (total > limit) {
      stream.destroy();
      throw new ArchwayError('INTEGRITY', `${what}: larger than the limit of ${limit} bytes`);
    }
    chunks.push(buf);
  }
  return Buffer.concat(chunks, total);
}

export const MiB = 1024 * 1024;
/**
 * Blobs up to this size (configs, small layers) are sent outside the bound on transfers at once:
 * they cost a few round trips, not memory or bandwidth, and should not wait behind large layers.
 */
export const SMALL_BLOB = 1 * MiB;
/** Caps from DESIGN.md's safety rules. */
export const LIMITS = {
  manifest: 4 * MiB,
  config: 4 * MiB,
  errorBody: 1 * MiB,
  tokenResponse: 1 * MiB,
} as const;
