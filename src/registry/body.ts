/**
 * A blob's bytes as they come from a registry, in one stream layer: counted, hashed, resumed with
 * a Range request when the connection is cut short, and ended only when exactly `size` bytes
 * with the expected digest came; otherwise the stream fails, so that a consumer (a file, an
 * upload) never takes bad bytes for good ones.
 *
 * One layer rather than a generator, a Readable.from and a verifying Transform: every 64 KiB that
 * arrives costs one push, and the body is paused only when the consumer falls behind by more
 * than the high-water mark, not after every chunk.
 */
import { createHash, type Hash } from 'node:crypto';
import { Readable } from 'node:stream';
import { ArchwayError, abortError, streamedBytes, sleep } from '../util/index.js';
import type { HttpResponse } from './transport.js';

export interface BlobBodyOptions {
  algorithm: string;
  hex: string;
  size: number;
  /** In the user's words (a reference with the digest), for messages. */
  what: string;
  /** Asks for the bytes from `offset` on (a Range request); resolves to a 206 answer or rejects. */
  resume: (offset: number) => Promise<HttpResponse>;
  /** Resumptions allowed after cuts. */
  retries: number;
  retryBaseMs: number;
  signal?: AbortSignal | undefined;
  /** Called as bytes arrive (for progress). */
  onBytes?: (received: number) => void;
}

/** Bytes held ahead of a slow consumer before the connection is paused. */
const HIGH_WATER_MARK = 512 * 1024;

export class BlobBody extends Readable {
  private res: HttpResponse | undefined;
  private readonly hash: Hash;
  private received = 0;
  private failures = 0;
  private finished = false;
  private readonly onAbort = (): void => this.fail(abortError(this.o.signal, this.o.what));

  constructor(
    first: HttpResponse,
    private readonly o: BlobBodyOptions,
  ) {
    super({ highWaterMark: HIGH_WATER_MARK });
    // A failure can come before the consumer listens (a small blob read whole while its upload
    // is being started): it stays in `errored`, where pipeline(), async iteration and the
    // transport find it, instead of being thrown as an uncaught 'error'.
    this.on('error', () => undefined);
    this.hash = createHash(o.algorithm);
    o.signal?.addEventListener('abort', this.onAbort, { once: true });
    this.attach(first);
  }

  /** This stream checks exactly these bytes (an upload need not hash them again). */
  verifies(algorithm: string, hex: string, size: number): boolean {
    return this.o.algorithm === algorithm && this.o.hex === hex && this.o.size === size;
  }

  private attach(res: HttpResponse): void {
    this.res = res;
    const body = res.body;
    let ended = false;
    body.on('data', (chunk: Buffer) => this.onData(res, chunk));
    body.on('end', () => {
      ended = true;
      this.onEnd(res);
    });
    // A connection closed before the end (a reset, a proxy that cut it): resume.
    body.on('close', () => {
      if (!ended) this.cut(res);
    });
    body.on('error', () => undefined);
  }

  private onData(res: HttpResponse, chunk: Buffer): void {
    if (res !== this.res || this.finished) return;
    this.received += chunk.length;
    if (this.received > this.o.size) {
      this.fail(new ArchwayError('INTEGRITY', `${this.o.what}: more than the expected ${this.o.size} bytes`));
      return;
    }
    this.hash.update(chunk);
    streamedBytes(chunk.length);
    this.o.onBytes?.(this.received);
    if (!this.push(chunk)) res.body.pause();
  }

  override _read(): void {
    const body = this.res?.body;
    if (body?.isPaused()) body.resume();
  }

  private onEnd(res: HttpResponse): void {
    if (res !== this.res || this.finished) return;
    if (this.received < this.o.size) {
      // The server ended its answer early (a body shorter than the blob): ask for the rest.
      this.cut(res);
      return;
    }
    const got = this.hash.digest('hex');
    if (got !== this.o.hex) {
      this.fail(new ArchwayError('INTEGRITY', `${this.o.what}: digest mismatch: content is ${this.o.algorithm}:${got}, expected ${this.o.algorithm}:${this.o.hex}`));
      return;
    }
    this.finished = true;
    this.release();
    this.push(null);
  }

  private cut(res: HttpResponse): void {
    if (res !== this.res || this.finished) return;
    this.res = undefined;
    res.body.destroy();
    const signal = this.o.signal;
    if (signal?.aborted) {
      this.fail(abortError(signal, this.o.what));
      return;
    }
    if (++this.failures > this.o.retries) {
      this.fail(new ArchwayError('INTEGRITY', `${this.o.what}: the body was cut short after ${this.received} of ${this.o.size} bytes (after ${this.o.retries} retries)`, { details: { reference: this.o.what } }));
      return;
    }
    sleep(this.o.retryBaseMs * 2 ** (this.failures - 1), signal)
      .then(() => this.o.resume(this.received))
      .then(
        (next) => {
          if (this.finished) next.body.destroy();
          else this.attach(next);
        },
        (e: unknown) => this.fail(signal?.aborted ? abortError(signal, this.o.what) : e),
      );
  }

  private fail(e: unknown): void {
    if (this.finished) return;
    this.destroy(e instanceof Error ? e : new ArchwayError('REGISTRY', `${this.o.what}: ${String(e)}`));
  }

  private release(): void {
    this.o.signal?.removeEventListener('abort', this.onAbort);
  }

  override _destroy(err: Error | null, cb: (error?: Error | null) => void): void {
    this.finished = true;
    this.release();
    const body = this.res?.body;
    this.res = undefined;
    body?.destroy();
    cb(err);
  }
}
