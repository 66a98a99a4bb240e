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
let tableCrc: Crc32Fn | undefined;
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
const zlibCrc = (zlib as unknown as { crc32?: Crc32Fn }).crc32;
export const crc32: Crc32Fn = typeof zlibCrc === 'function' ? zlibCrc : (tableCrc ??= makeTableCrc());

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

const WORKER_SOURCE = `
const { parentPort } = require('node:worker_threads');
const zlib = require('node:zlib');
parentPort.on('message', (m) => {
  try {
    const opts = { level: m.level, finishFlush: m.last ? zlib.constants.Z_FINISH : zlib.constants.Z_FULL_FLUSH };
    if (m.dict && m.dict.length > 0) opts.dictionary = Buffer.from(m.dict);
    const out = zlib.deflateRawSync(Buffer.from(m.data), opts);
    const u8 = new Uint8Array(out.buffer, out.byteOffset, out.length).slice();
    parentPort.postMessage({ id: m.id, out: u8 }, [u8.buffer]);
  } catch (e) {
    parentPort.postMessage({ id: m.id, error: String(e && e.message || e) });
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

class DeflatePool {
  private readonly workers: Worker[] = [];
  private readonly idle: Worker[] = [];
  private readonly queue: Array<Job & { id: number }> = [];
  private readonly pending = new Map<number, Job>();
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
    const w = new Worker(WORKER_SOURCE, { eval: true });
    w.on('message', (m: { id: number; out?: Uint8Array; error?: string }) => {
      const job = this.pending.get(m.id);
      this.pending.delete(m.id);
      this.idle.push(w);
      if (job !== undefined) {
        if (m.out !== undefined) job.resolve(Buffer.from(m.out.buffer, m.out.byteOffset, m.out.length));
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
      // Copies, so that the transfer does not detach a pooled Buffer's shared memory.
      const data = new Uint8Array(job.data);
      const dict = new Uint8Array(job.dict);
      w.postMessage({ id: job.id, data, dict, last: job.last, level: this.level }, [data.buffer, dict.buffer]);
    }
  }

  async close(): Promise<void> {
    await Promise.all(this.workers.map((w) => w.terminate()));
  }
}

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
 * At most 2×workers chunks are in flight, which bounds memory.
 */
export class ParallelGzip extends Transform {
  private readonly level: number;
  private readonly chunkSize: number;
  private readonly pool: DeflatePool | undefined;
  private buf: Buffer[] = [];
  private bufLen = 0;
  private prevTail = Buffer.alloc(0);
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
    if (this.pool === undefined) {
      const o: zlib.ZlibOptions = { level: this.level, finishFlush: last ? zlib.constants.Z_FINISH : zlib.constants.Z_FULL_FLUSH };
      if (dict.length > 0) o.dictionary = dict;
      return Promise.resolve(zlib.deflateRawSync(data, o));
    }
    return this.pool.run(data, dict, last);
  }

  private async pushOldest(): Promise<void> {
    const p = this.inflight.shift();
    if (p !== undefined) this.push(await p);
  }

  private async takeChunks(final: boolean): Promise<void> {
    if (!this.headerSent) {
      this.push(GZIP_HEADER);
      this.headerSent = true;
    }
    while (this.bufLen >= this.chunkSize || (final && this.bufLen >= 0 && this.buf.length > 0)) {
      const all = Buffer.concat(this.buf, this.bufLen);
      const take = Math.min(this.chunkSize, all.length);
      const chunk = all.subarray(0, take);
      const rest = all.subarray(take);
      this.buf = rest.length > 0 ? [rest] : [];
      this.bufLen = rest.length;
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
      if (this.buf.length === 0) {
        if (!this.headerSent) {
          this.push(GZIP_HEADER);
          this.headerSent = true;
        }
        // A final empty block, needed when the input was empty or ended on a chunk boundary.
        this.inflight.push(this.submit(Buffer.alloc(0), true));
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
