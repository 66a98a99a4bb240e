/**
 * Compression for layers: detection by magic bytes, streaming decompression, and compressors
 * (pigz-style parallel gzip on worker threads, zstd through Node's zlib or the `zstd` binary).
 */
import { spawn } from 'node:child_process';
import { availableParallelism } from 'node:os';
import { Duplex, PassThrough, Readable, Transform, type TransformCallback } from 'node:stream';
import { Worker } from 'node:worker_threads';
import * as zlib from 'node:zlib';
import { layerCompression, type LayerCompression } from '../oci/index.js';
import { ArchwayError } from '../util/index.js';

export type Compression = LayerCompression;

/** What the first bytes say: gzip 1f8b, zstd 28b52ffd, anything else is plain tar. */
export function detectCompression(head: Buffer): Compression {
  if (head.length >= 2 && head[0] === 0x1f && head[1] === 0x8b) return 'gzip';
  if (head.length >= 4 && head.readUInt32BE(0) === 0x28b52ffd) return 'zstd';
  return 'none';
}

// ---------------------------------------------------------------------------------------------
// CRC32 (zlib.crc32 exists from Node 20.15 / 22.2; a table version otherwise)

type Crc32Fn = (data: Buffer, value?: number) => number;
function makeTableCrc(): Crc32Fn {
  const table = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    table[n] = c >>> 0;
  }
  return (data, value = 0) => {
    let c = (value ^ 0xffffffff) >>> 0;
    for (let i = 0; i < data.length; i++) c = (table[(c ^ (data[i] ?? 0)) & 0xff] ?? 0) ^ (c >>> 8);
    return (c ^ 0xffffffff) >>> 0;
  };
}
let chosenCrc: Crc32Fn | undefined;
function chooseCrc(): Crc32Fn {
  const zlibCrc = (zlib as unknown as { crc32?: Crc32Fn }).crc32;
  return typeof zlibCrc === 'function' ? zlibCrc : makeTableCrc();
}
/** Chosen at the first call, not at load: the bundle loads zlib only when it is used. */
export const crc32: Crc32Fn = (data, value) => (chosenCrc ??= chooseCrc())(data, value);

// ---------------------------------------------------------------------------------------------
// zstd: Node's zlib when it has it (≥ 22.15), else the zstd binary

interface ZstdZlib {
  createZstdDecompress?: () => Transform;
  createZstdCompress?: (o?: { params?: Record<number, number> }) => Transform;
  constants: Record<string, number>;
}
const zz = zlib as unknown as ZstdZlib;

/** Wraps a child process as a Duplex: writes go to stdin, reads come from stdout, a failure is an error. */
function processDuplex(cmd: string, args: string[], what: string): Duplex {
  const child = spawn(cmd, args, { stdio: ['pipe', 'pipe', 'pipe'] });
  let stderr = '';
  const dup = new Duplex({
    write(chunk: Buffer, _e, cb): void {
      if (child.stdin.write(chunk)) cb();
      else child.stdin.once('drain', () => cb());
    },
    final(cb): void {
      child.stdin.end();
      cb();
    },
    read(): void {
      child.stdout.resume();
    },
    destroy(err, cb): void {
      if (child.exitCode === null && child.signalCode === null) child.kill();
      cb(err);
    },
  });
  child.stderr.on('data', (d: Buffer) => {
    if (stderr.length < 4096) stderr += d.toString();
  });
  child.stdout.on('data', (d: Buffer) => {
    if (!dup.push(d)) child.stdout.pause();
  });
  child.stdin.on('error', () => undefined); // EPIPE shows up as the exit status instead
  child.on('error', (e: NodeJS.ErrnoException) => {
    dup.destroy(
      e.code === 'ENOENT'
        ? new ArchwayError('STORAGE', `${what}: the "${cmd}" program is not installed`, { hint: 'install the Debian package "zstd" (apt-get install zstd)' })
        : new ArchwayError('STORAGE', `${what}: cannot run ${cmd}: ${e.message}`),
    );
  });
  // 'close' comes after stdout has delivered everything, so the end is only signalled on success.
  child.on('close', (code) => {
    if (code === 0) dup.push(null);
    else if (!dup.destroyed) dup.destroy(new ArchwayError('FORMAT', `${what}: ${cmd} exited with ${code}: ${stderr.trim()}`));
  });
  return dup;
}

export function createZstdDecompressor(): Duplex {
  if (typeof zz.createZstdDecompress === 'function') return zz.createZstdDecompress();
  return processDuplex('zstd', ['-dc', '-q'], 'zstd decompression');
}

export function createZstdCompressor(level = 3): Duplex {
  if (typeof zz.createZstdCompress === 'function') {
    const p = zz.constants['ZSTD_c_compressionLevel'];
    return zz.createZstdCompress(p === undefined ? {} : { params: { [p]: level } });
  }
  // Single-threaded so the output does not depend on the machine's core count.
  return processDuplex('zstd', ['-c', '-q', `-${level}`, '-T1', '--no-check'], 'zstd compression');
}

/** Output chunk of gunzip: bigger than zlib's 16 KiB default, so fewer callbacks per layer. */
const GUNZIP_CHUNK = 256 * 1024;

export function createDecompressor(c: Compression): Duplex {
  if (c === 'gzip') return zlib.createGunzip({ chunkSize: GUNZIP_CHUNK });
  if (c === 'zstd') return createZstdDecompressor();
  return new PassThrough();
}

/**
 * Peeks at the first bytes of a stream and returns its compression and a stream that replays
 * them. When `mediaType` declares a compression, a mismatch is a FORMAT error.
 */
export async function sniffCompression(input: Readable, mediaType?: string): Promise<{ compression: Compression; stream: Readable }> {
  const it = input[Symbol.asyncIterator]() as AsyncIterator<Buffer>;
  const head: Buffer[] = [];
  let len = 0;
  let ended = false;
  while (len < 4) {
    const r = await it.next();
    if (r.done) {
      ended = true;
      break;
    }
    head.push(r.value);
    len += r.value.length;
  }
  const first = Buffer.concat(head);
  const compression = detectCompression(first);
  if (mediaType !== undefined) {
    const declared = layerCompression(mediaType);
    if (declared === undefined) throw new ArchwayError('FORMAT', `"${mediaType}" is not a layer media type`);
    if (declared !== compression) {
      throw new ArchwayError('FORMAT', `layer declared as ${mediaType} (${declared}) but its content is ${compression === 'none' ? 'uncompressed' : compression}`);
    }
  }
  async function* replay(): AsyncGenerator<Buffer> {
    if (first.length > 0) yield first;
    if (ended) return;
    for (;;) {
      const r = await it.next();
      if (r.done) return;
      yield r.value;
    }
  }
  return { compression, stream: Readable.from(replay(), { objectMode: false }) };
}

// ---------------------------------------------------------------------------------------------
// Parallel gzip (pigz's scheme): independent raw-deflate chunks, each primed with the previous
// 32 KiB as a dictionary and ended with a full flush so they concatenate into one valid stream.

/**
 * Deflates one chunk as a piece of a raw-deflate stream that the pieces are concatenated into:
 * primed with `dict` (up to 32 KiB of input before it) and ended with a full flush, or with the
 * final block when `last`. 8 KiB segments that look incompressible (compressed or encrypted
 * content: order-0 entropy within 0.005 bits of 8 per byte, allowing for the estimate's bias)
 * are written as stored blocks instead; deflate would spend its full effort on them to save
 * nothing (measured: no larger output on /usr, on a tar of .gz/.png/.jar files, or on random
 * data, and less CPU). The output depends only on the bytes, so it is the same on every
 * machine and worker count. It also runs inside the workers, as source text, so it uses
 * nothing but its arguments.
 */
function deflatePart(z: typeof zlib, data: Buffer, dict: Buffer, last: boolean, level: number): Buffer[] {
  const SEG = 8192;
  const THRESHOLD = 7.995 - 255 / (2 * SEG * Math.LN2);
  const MAX_STORED = 65535;
  const WINDOW = 32768;
  const n = data.length;
  if (n === 0) return [z.deflateRawSync(data, { level, finishFlush: last ? z.constants.Z_FINISH : z.constants.Z_FULL_FLUSH })];
  const stored: boolean[] = [];
  const hist = new Uint32Array(256);
  for (let s = 0; s < n; s += SEG) {
    const e = Math.min(n, s + SEG);
    hist.fill(0);
    for (let i = s; i < e; i++) {
      const v = data[i] as number;
      hist[v] = (hist[v] as number) + 1;
    }
    let bits = 0;
    for (let k = 0; k < 256; k++) {
      const c = hist[k] as number;
      if (c > 0) bits -= c * Math.log2(c / SEG);
    }
    stored.push(e - s === SEG && bits / SEG >= THRESHOLD);
  }
  const parts: Buffer[] = [];
  for (let i = 0; i < stored.length; ) {
    let j = i + 1;
    while (j < stored.length && stored[j] === stored[i]) j++;
    const s = i * SEG;
    const e = Math.min(n, j * SEG);
    const final = last && e === n;
    if (stored[i] === true) {
      for (let b = s; b < e; b += MAX_STORED) {
        const be = Math.min(e, b + MAX_STORED);
        const head = Buffer.alloc(5);
        head[0] = final && be === e ? 1 : 0; // BFINAL, BTYPE 00; byte-aligned after a full flush
        head.writeUInt16LE(be - b, 1);
        head.writeUInt16LE(~(be - b) & 0xffff, 3);
        parts.push(head, data.subarray(b, be));
      }
    } else {
      const o: zlib.ZlibOptions = {
        level,
        finishFlush: final ? z.constants.Z_FINISH : z.constants.Z_FULL_FLUSH,
        // Room for the whole output in one buffer, and no more: a bigger one is only garbage.
        chunkSize: e - s + ((e - s) >> 8) + 1024,
      };
      // Only the chunk's first run gets the 32 KiB before it as dictionary. A later run follows
      // a stored one, whose bytes are no use to match against, and zlib keeps each dictionary
      // until the garbage collector happens by (+90 MB peak RSS with one per run).
      if (s === 0 && dict.length > 0) o.dictionary = dict.length > WINDOW ? dict.subarray(dict.length - WINDOW) : dict;
      parts.push(z.deflateRawSync(data.subarray(s, e), o));
    }
    i = j;
  }
  return parts;
}

/**
 * The worker deflates `len` bytes of `buf` with the `dictLen` bytes after them as dictionary,
 * sends `buf` back to be reused for a later chunk, and transfers its output gathered into an
 * ArrayBuffer of its own (zlib's buffers may be pooled and untransferable: Node 24's are).
 */
const WORKER_SOURCE = `
const { parentPort } = require('node:worker_threads');
const zlib = require('node:zlib');
const deflatePart = ${deflatePart.toString()};
parentPort.on('message', (m) => {
  const back = [m.buf.buffer];
  try {
    const data = Buffer.from(m.buf.buffer, 0, m.len);
    const dict = Buffer.from(m.buf.buffer, m.len, m.dictLen);
    const parts = deflatePart(zlib, data, dict, m.last, m.level);
    const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
    let off = 0;
    for (const p of parts) {
      out.set(p, off);
      off += p.length;
    }
    parentPort.postMessage({ id: m.id, buf: m.buf, out: out.buffer, outLen: out.length }, [m.buf.buffer, out.buffer]);
  } catch (e) {
    parentPort.postMessage({ id: m.id, buf: m.buf, error: String((e && e.message) || e) }, back);
  }
});
`;

interface Job {
  data: Buffer;
  dict: Buffer;
  last: boolean;
  resolve: (b: Buffer) => void;
  reject: (e: Error) => void;
}

interface Reply {
  id: number;
  buf: Uint8Array;
  out?: ArrayBuffer;
  outLen?: number;
  error?: string;
}

class DeflatePool {
  private readonly workers: Worker[] = [];
  private readonly idle: Worker[] = [];
  private readonly queue: Array<Job & { id: number }> = [];
  private readonly pending = new Map<number, Job>();
  /** Transfer buffers the workers gave back, for the next chunks (as many as were in flight). */
  private readonly free: ArrayBuffer[] = [];
  private nextId = 0;
  constructor(
    private readonly size: number,
    private readonly level: number,
  ) {}

  run(data: Buffer, dict: Buffer, last: boolean): Promise<Buffer> {
    return new Promise((resolve, reject) => {
      this.queue.push({ id: this.nextId++, data, dict, last, resolve, reject });
      this.pump();
    });
  }

  private spawnWorker(): Worker {
    // A small young generation: the garbage a worker makes (zlib handles, whose native memory
    // V8 does not see) is collected every few chunks instead of piling up for dozens of MB.
    const w = new Worker(WORKER_SOURCE, { eval: true, resourceLimits: { maxYoungGenerationSizeMb: 2 } });
    w.on('message', (m: Reply) => {
      this.free.push(m.buf.buffer as ArrayBuffer);
      const job = this.pending.get(m.id);
      this.pending.delete(m.id);
      this.idle.push(w);
      if (job !== undefined) {
        if (m.out !== undefined) job.resolve(Buffer.from(m.out, 0, m.outLen ?? 0));
        else job.reject(new ArchwayError('FAILED', `gzip worker: ${m.error ?? 'unknown error'}`));
      }
      this.pump();
    });
    w.on('error', (e) => {
      for (const j of this.pending.values()) j.reject(e);
      this.pending.clear();
    });
    this.workers.push(w);
    return w;
  }

  private pump(): void {
    while (this.queue.length > 0) {
      let w = this.idle.pop();
      if (w === undefined) {
        if (this.workers.length >= this.size) return;
        w = this.spawnWorker();
      }
      const job = this.queue.shift();
      if (job === undefined) return;
      this.pending.set(job.id, job);
      // A copy into a buffer of our own, so that the transfer never detaches the caller's memory.
      const need = job.data.length + job.dict.length;
      let ab = this.free.pop();
      if (ab === undefined || ab.byteLength < need) ab = new ArrayBuffer(need);
      const buf = new Uint8Array(ab);
      buf.set(job.data, 0);
      buf.set(job.dict, job.data.length);
      w.postMessage({ id: job.id, buf, len: job.data.length, dictLen: job.dict.length, last: job.last, level: this.level }, [ab]);
      job.data = EMPTY;
      job.dict = EMPTY;
    }
  }

  async close(): Promise<void> {
    this.free.length = 0;
    await Promise.all(this.workers.map((w) => w.terminate()));
  }
}

const EMPTY = Buffer.alloc(0);

export interface GzipOptions {
  level?: number;
  /** Uncompressed bytes per chunk (default 1 MiB). */
  chunkSize?: number;
  /** Worker threads (default: available cores, at most 8; 0 compresses on this thread). */
  workers?: number;
}

const GZIP_HEADER = Buffer.from([0x1f, 0x8b, 0x08, 0x00, 0, 0, 0, 0, 0x00, 0xff]);
const DICT = 32 * 1024;

/**
 * A gzip stream compressed in parallel chunks. Deterministic: no name or mtime in the header,
 * and the output depends only on input bytes, level and chunk size (not on the worker count).
 * Memory is bounded: at most 2×workers chunks are compressing or waiting for their turn to be
 * pushed, input is not taken while they are, and the readable side's backpressure holds input
 * back while the consumer is slower.
 */
export class ParallelGzip extends Transform {
  private readonly level: number;
  private readonly chunkSize: number;
  private readonly pool: DeflatePool | undefined;
  private buf: Buffer[] = [];
  private bufLen = 0;
  private prevTail = EMPTY;
  private crc = 0;
  private total = 0;
  private headerSent = false;
  private readonly inflight: Array<Promise<Buffer>> = [];
  private readonly maxInflight: number;

  constructor(opts: GzipOptions = {}) {
    super();
    this.level = opts.level ?? 6;
    this.chunkSize = opts.chunkSize ?? 1024 * 1024;
    const n = opts.workers ?? Math.min(8, availableParallelism());
    this.pool = n > 0 ? new DeflatePool(n, this.level) : undefined;
    this.maxInflight = Math.max(2, n * 2);
  }

  private submit(data: Buffer, last: boolean): Promise<Buffer> {
    const dict = this.prevTail;
    this.prevTail = Buffer.from(data.subarray(Math.max(0, data.length - DICT)));
    if (this.pool === undefined) return Promise.resolve(Buffer.concat(deflatePart(zlib, data, dict, last, this.level)));
    return this.pool.run(data, dict, last);
  }

  private async pushOldest(): Promise<void> {
    const p = this.inflight.shift();
    if (p !== undefined) this.push(await p);
  }

  /** The first n buffered bytes, without a copy when they lie in one buffer. */
  private takeBytes(n: number): Buffer {
    const first = this.buf[0] as Buffer;
    let out: Buffer;
    if (first.length >= n) {
      out = first.subarray(0, n);
      if (first.length === n) this.buf.shift();
      else this.buf[0] = first.subarray(n);
    } else {
      const all = Buffer.concat(this.buf, this.bufLen);
      out = all.subarray(0, n);
      this.buf = all.length > n ? [all.subarray(n)] : [];
    }
    this.bufLen -= n;
    return out;
  }

  private async takeChunks(final: boolean): Promise<void> {
    if (!this.headerSent) {
      this.push(GZIP_HEADER);
      this.headerSent = true;
    }
    while (this.bufLen >= this.chunkSize || (final && this.bufLen > 0)) {
      const chunk = this.takeBytes(Math.min(this.chunkSize, this.bufLen));
      const last = final && this.bufLen === 0;
      this.inflight.push(this.submit(chunk, last));
      while (this.inflight.length >= this.maxInflight) await this.pushOldest();
      if (last) return;
    }
  }

  override _transform(chunk: Buffer, _e: BufferEncoding, cb: TransformCallback): void {
    this.crc = crc32(chunk, this.crc);
    this.total += chunk.length;
    this.buf.push(chunk);
    this.bufLen += chunk.length;
    if (this.bufLen < this.chunkSize) {
      cb();
      return;
    }
    this.takeChunks(false).then(() => cb(), cb);
  }

  override _flush(cb: TransformCallback): void {
    (async (): Promise<void> => {
      if (this.bufLen === 0) {
        if (!this.headerSent) {
          this.push(GZIP_HEADER);
          this.headerSent = true;
        }
        // A final empty block, needed when the input was empty or ended on a chunk boundary.
        this.inflight.push(this.submit(EMPTY, true));
      } else {
        await this.takeChunks(true);
      }
      while (this.inflight.length > 0) await this.pushOldest();
      const trailer = Buffer.alloc(8);
      trailer.writeUInt32LE(this.crc >>> 0, 0);
      trailer.writeUInt32LE(this.total % 0x100000000, 4);
      this.push(trailer);
      await this.pool?.close();
    })().then(() => cb(), (e: unknown) => cb(e instanceof Error ? e : new Error(String(e))));
  }

  override _destroy(err: Error | null, cb: (e: Error | null) => void): void {
    const closing = this.pool?.close() ?? Promise.resolve();
    closing.then(
      () => cb(err),
      () => cb(err),
    );
  }
}

export interface CompressorOptions {
  level?: number;
  /** For gzip: worker threads (see GzipOptions). */
  workers?: number;
}

export function createCompressor(c: Compression, opts: CompressorOptions = {}): Duplex {
  if (c === 'gzip') return new ParallelGzip({ ...(opts.level !== undefined ? { level: opts.level } : {}), ...(opts.workers !== undefined ? { workers: opts.workers } : {}) });
  if (c === 'zstd') return createZstdCompressor(opts.level ?? 3);
  return new PassThrough();
}
