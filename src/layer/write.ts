/**
 * Making layers from directories: a whole tree, an overlayfs upper directory, or the difference
 * of two trees. Output is deterministic: entries sorted bytewise, no uname/gname/atime/ctime,
 * mtimes clamped to SOURCE_DATE_EPOCH, hardlinks as tar hardlinks in sorted order.
 */
import { closeSync, createWriteStream, lstatSync, openSync, readSync, readdirSync, readlinkSync, constants as C, promises as fsp, type Stats } from 'node:fs';
import { join } from 'node:path';
import { Readable, type Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { layerMediaType, parseDigest, type Digest } from '../oci/index.js';
import { ArchwayError, HashingCounter, isErrnoException, throwIfAborted } from '../util/index.js';
import { createCompressor, type Compression } from './compress.js';
import { END_OF_ARCHIVE, encodeHeader, padding, tarHeader, type EntryType, type TarHeader } from './tar.js';
import { getXattrs } from './xattr.js';

export interface WriteLayerOptions {
  compression: Compression;
  level?: number;
  /** Clamp every mtime to at most this (seconds), for reproducible layers. */
  sourceDateEpoch?: number;
  /** Put the tree under this directory in the layer (e.g. "app" for COPY . /app). */
  prefix?: string;
  /** Override owners of every entry. */
  owner?: { uid: number; gid: number };
  /** Media type family of the result (default 'oci'). */
  format?: 'oci' | 'docker';
  /** Carry security.capability and user.* xattrs (read with the python3 helper). Default true. */
  xattrs?: boolean;
  /** gzip worker threads (default: cores, at most 8). */
  workers?: number;
  signal?: AbortSignal;
}

export interface DiffOptions extends WriteLayerOptions {
  /** Also compare bytes of files whose metadata is identical (slower; catches same-mtime edits). */
  compareContent?: boolean;
}

export interface LayerInfo {
  digest: Digest;
  diffID: Digest;
  /** Compressed size in bytes. */
  size: number;
  mediaType: string;
}

interface Item {
  /** Sort key: the name, with an opaque marker placed first among its directory's children. */
  key: Buffer;
  header: TarHeader;
  /** File whose bytes are the body. */
  source?: string;
}

interface Scanned {
  rel: string;
  st: Stats;
}

function byteCompare(a: Buffer, b: Buffer): number {
  return Buffer.compare(a, b);
}

function joinRel(a: string, b: string): string {
  return a === '' ? b : `${a}/${b}`;
}

/**
 * Lists a tree (lstat, no link followed), parents before children. Synchronous calls, one
 * syscall each: a thread-pool round trip per file cost more than the lstat itself.
 */
async function scan(root: string, signal: AbortSignal | undefined, skip?: (rel: string, st: Stats) => boolean): Promise<Scanned[]> {
  const out: Scanned[] = [];
  async function walk(rel: string): Promise<void> {
    throwIfAborted(signal, 'reading directory');
    const names = readdirSync(join(root, rel));
    for (const name of names) {
      const r = joinRel(rel, name);
      const st = lstatSync(join(root, r));
      if (st.isSocket()) continue; // sockets cannot be in a tar
      out.push({ rel: r, st });
      if (skip?.(r, st)) continue;
      if (st.isDirectory()) await walk(r);
    }
  }
  await walk('');
  return out;
}

function typeOfStat(st: Stats): EntryType | undefined {
  if (st.isFile()) return 'file';
  if (st.isDirectory()) return 'dir';
  if (st.isSymbolicLink()) return 'symlink';
  if (st.isCharacterDevice()) return 'char';
  if (st.isBlockDevice()) return 'block';
  if (st.isFIFO()) return 'fifo';
  return undefined;
}

function major(rdev: number): number {
  return Math.floor(rdev / 256) & 0xfff;
}
function minor(rdev: number): number {
  return (rdev & 0xff) | (Math.floor(rdev / 4096) & 0xfff00);
}

function clampTime(st: Stats, opts: WriteLayerOptions): number {
  const t = Math.floor(st.mtimeMs / 1000);
  return opts.sourceDateEpoch !== undefined ? Math.min(t, opts.sourceDateEpoch) : t;
}

function prefixParts(opts: WriteLayerOptions): string[] {
  const p = opts.prefix ?? '';
  const parts = p.split('/').filter((x) => x !== '' && x !== '.');
  if (parts.includes('..')) throw new ArchwayError('USAGE', `layer prefix "${p}" must not contain ".."`);
  return parts;
}

const KEEP_XATTR = (k: string): boolean => k === 'security.capability' || (k.startsWith('user.') && !k.startsWith('user.overlay.'));

/** Turns scanned entries into tar items: headers, hardlinks, xattrs, prefix. */
async function itemsFor(root: string, scanned: Scanned[], opts: WriteLayerOptions): Promise<Item[]> {
  const pre = prefixParts(opts).join('/');
  const name = (rel: string): string => (pre === '' ? rel : rel === '' ? pre : `${pre}/${rel}`);
  let xattrs: Map<string, Record<string, Buffer>> | undefined;
  if (opts.xattrs !== false) {
    const paths = scanned.filter((s) => s.st.isFile() || s.st.isDirectory()).map((s) => (s.rel === '' ? '.' : s.rel));
    xattrs = await getXattrs(root, paths, opts.signal ? { signal: opts.signal } : {});
  }
  const sorted = [...scanned].sort((a, b) => byteCompare(Buffer.from(a.rel), Buffer.from(b.rel)));
  const firstByInode = new Map<string, string>();
  const items: Item[] = [];
  for (const s of sorted) {
    const type = typeOfStat(s.st);
    if (type === undefined) continue;
    const h = tarHeader({
      name: name(s.rel),
      type,
      mode: s.st.mode & 0o7777,
      uid: opts.owner?.uid ?? s.st.uid,
      gid: opts.owner?.gid ?? s.st.gid,
      mtime: clampTime(s.st, opts),
    });
    let source: string | undefined;
    if (type === 'file') {
      const inode = `${s.st.dev}:${s.st.ino}`;
      const first = s.st.nlink > 1 ? firstByInode.get(inode) : undefined;
      if (first !== undefined) {
        h.type = 'hardlink';
        h.linkname = first;
      } else {
        if (s.st.nlink > 1) firstByInode.set(inode, h.name);
        h.size = s.st.size;
        source = join(root, s.rel);
      }
    } else if (type === 'symlink') {
      h.linkname = readlinkSync(join(root, s.rel));
    } else if (type === 'char' || type === 'block') {
      h.devmajor = major(s.st.rdev);
      h.devminor = minor(s.st.rdev);
    }
    const x = xattrs?.get(s.rel === '' ? '.' : s.rel);
    if (x !== undefined && h.type !== 'hardlink') {
      for (const [k, v] of Object.entries(x)) if (KEEP_XATTR(k)) h.xattrs[k] = v;
    }
    items.push({ key: Buffer.from(h.name), header: h, ...(source !== undefined ? { source } : {}) });
  }
  return items;
}

/** Directory entries for the prefix's components (owned by root, 0755). */
function prefixItems(opts: WriteLayerOptions): Item[] {
  const parts = prefixParts(opts);
  const out: Item[] = [];
  for (let i = 1; i < parts.length; i++) {
    const n = parts.slice(0, i).join('/');
    out.push({ key: Buffer.from(n), header: tarHeader({ name: n, type: 'dir', mode: 0o755, mtime: opts.sourceDateEpoch ?? 0, uid: opts.owner?.uid ?? 0, gid: opts.owner?.gid ?? 0 }) });
  }
  return out;
}

/** Size of the tar pieces handed to the compressor: ParallelGzip's chunk, so it never re-slices. */
const TAR_CHUNK = 1024 * 1024;

/** Fills fixed-size chunks with tar bytes; full ones wait in `full` to be taken. */
class Chunker {
  private buf = Buffer.allocUnsafeSlow(TAR_CHUNK);
  private off = 0;
  readonly full: Buffer[] = [];

  private advance(n: number): void {
    this.off += n;
    if (this.off === this.buf.length) {
      this.full.push(this.buf);
      this.buf = Buffer.allocUnsafeSlow(TAR_CHUNK);
      this.off = 0;
    }
  }

  put(b: Buffer): void {
    for (let p = 0; p < b.length; ) {
      const n = b.copy(this.buf, this.off, p);
      p += n;
      this.advance(n);
    }
  }

  zeros(count: number): void {
    for (let left = count; left > 0; ) {
      const n = Math.min(left, this.buf.length - this.off);
      this.buf.fill(0, this.off, this.off + n);
      left -= n;
      this.advance(n);
    }
  }

  /** Reads at most n bytes of fd straight into the chunk; returns how many (0 at end of file). */
  read(fd: number, n: number): number {
    const got = readSync(fd, this.buf, this.off, Math.min(n, this.buf.length - this.off), null);
    this.advance(got);
    return got;
  }

  /** What is left in the last, partial chunk. */
  rest(): Buffer | undefined {
    return this.off === 0 ? undefined : this.buf.subarray(0, this.off);
  }
}

/**
 * The tar as whole 1 MiB chunks. Files are read with synchronous calls straight into the
 * chunk (no buffer per read, no thread-pool round trip per call; small files are most of a
 * layer's entries), and a chunk is yielded only when full, so the compressor downstream gets
 * few, equal pieces and the pipeline's backpressure bounds what is in memory.
 */
async function* tarStream(items: Item[], signal: AbortSignal | undefined): AsyncGenerator<Buffer> {
  const w = new Chunker();
  for (const it of items) {
    throwIfAborted(signal, 'writing layer');
    w.put(encodeHeader(it.header));
    if (it.header.type === 'file' && it.source !== undefined) {
      const size = it.header.size;
      const fd = openSync(it.source, C.O_RDONLY | C.O_NOFOLLOW);
      try {
        let left = size;
        while (left > 0) {
          const got = w.read(fd, left);
          if (got === 0) break;
          left -= got;
          while (w.full.length > 0) yield w.full.shift() as Buffer;
        }
        if (left > 0) throw new ArchwayError('STORAGE', `"${it.source}" shrank while it was being written into a layer`);
      } finally {
        closeSync(fd);
      }
      w.zeros(padding(size));
    }
    while (w.full.length > 0) yield w.full.shift() as Buffer;
  }
  w.put(END_OF_ARCHIVE);
  while (w.full.length > 0) yield w.full.shift() as Buffer;
  const rest = w.rest();
  if (rest !== undefined) yield rest;
}

/** Streams items as a tar through the compressor into out, hashing both sides. */
async function emit(items: Item[], out: Writable | string, opts: WriteLayerOptions): Promise<LayerInfo> {
  items.sort((a, b) => byteCompare(a.key, b.key));
  const diff = new HashingCounter('sha256');
  const comp = new HashingCounter('sha256');
  const compressor = createCompressor(opts.compression, {
    ...(opts.level !== undefined ? { level: opts.level } : {}),
    ...(opts.workers !== undefined ? { workers: opts.workers } : {}),
  });
  const sink = typeof out === 'string' ? createWriteStream(out) : out;
  try {
    // objectMode off and a one-chunk high-water mark: at most a chunk or two read ahead.
    const source = Readable.from(tarStream(items, opts.signal), { objectMode: false, highWaterMark: TAR_CHUNK });
    await pipeline(source, diff, compressor, comp, sink, opts.signal ? { signal: opts.signal } : {});
  } catch (e) {
    if (typeof out === 'string') await fsp.rm(out, { force: true });
    if (e instanceof ArchwayError) throw e;
    if (isErrnoException(e)) throw new ArchwayError('STORAGE', `writing layer: ${e.message}`, { cause: e });
    throw e;
  }
  return {
    digest: parseDigest(`sha256:${comp.hex()}`),
    diffID: parseDigest(`sha256:${diff.hex()}`),
    size: comp.bytes,
    mediaType: layerMediaType(opts.compression, opts.format ?? 'oci'),
  };
}

/** A layer holding a whole tree as additions (COPY results). The root itself is written only under a prefix. */
export async function writeLayerFromDirectory(dir: string, out: Writable | string, opts: WriteLayerOptions): Promise<LayerInfo> {
  const scanned = await scan(dir, opts.signal);
  if (prefixParts(opts).length > 0) scanned.push({ rel: '', st: await fsp.lstat(dir) });
  const items = [...prefixItems(opts), ...(await itemsFor(dir, scanned, opts))];
  return emit(items, out, opts);
}

const OPAQUE_XATTRS = ['trusted.overlay.opaque', 'user.overlay.opaque'];

function whiteoutItem(name: string, st: Stats | undefined, opts: WriteLayerOptions, opaqueOf?: string): Item {
  const slash = name.lastIndexOf('/');
  const dir = slash < 0 ? '' : name.slice(0, slash + 1);
  const base = name.slice(slash + 1);
  const wh = opaqueOf !== undefined ? `${opaqueOf}/.wh..wh..opq` : `${dir}.wh.${base}`;
  // An opaque marker sorts right after its directory so appliers that expect it first are served.
  const key = opaqueOf !== undefined ? Buffer.concat([Buffer.from(`${opaqueOf}/`), Buffer.from([0])]) : Buffer.from(wh);
  return {
    key,
    header: tarHeader({
      name: wh,
      mode: 0,
      uid: opts.owner?.uid ?? st?.uid ?? 0,
      gid: opts.owner?.gid ?? st?.gid ?? 0,
      mtime: st === undefined ? (opts.sourceDateEpoch ?? 0) : clampTime(st, opts),
    }),
  };
}

/**
 * A layer from an overlayfs upper directory: whiteouts (char devices 0:0) become `.wh.NAME`,
 * directories with trusted.overlay.opaque=y (or user.overlay.opaque=y) get `.wh..wh..opq`.
 * Opaque directories are found with one python3 helper run over the upper's directories; without
 * python3 this fails rather than produce a layer that silently keeps hidden files.
 * Not handled: redirect_dir and metacopy uppers (mount overlay without them).
 */
export async function writeLayerFromOverlayUpper(upperDir: string, out: Writable | string, opts: WriteLayerOptions): Promise<LayerInfo> {
  const isWhiteout = (st: Stats): boolean => st.isCharacterDevice() && st.rdev === 0;
  const scanned = await scan(upperDir, opts.signal);
  const dirs = scanned.filter((s) => s.st.isDirectory()).map((s) => s.rel);
  const opaque = await getXattrs(upperDir, dirs, { names: OPAQUE_XATTRS, ...(opts.signal ? { signal: opts.signal } : {}) });
  if (opaque === undefined) {
    throw new ArchwayError('STORAGE', 'cannot read overlay opaque markers: python3 is needed to read xattrs', { hint: 'install the Debian package "python3-minimal"' });
  }
  const pre = prefixParts(opts).join('/');
  const withPre = (rel: string): string => (pre === '' ? rel : `${pre}/${rel}`);
  const regular = scanned.filter((s) => !isWhiteout(s.st));
  const items = [...prefixItems(opts), ...(await itemsFor(upperDir, regular, opts))];
  for (const s of scanned) {
    if (isWhiteout(s.st)) items.push(whiteoutItem(withPre(s.rel), s.st, opts));
    const x = opaque.get(s.rel);
    if (x !== undefined && OPAQUE_XATTRS.some((k) => x[k]?.toString() === 'y')) items.push(whiteoutItem(withPre(s.rel), s.st, opts, withPre(s.rel)));
  }
  return emit(items, out, opts);
}

async function sameContent(a: string, b: string, size: number): Promise<boolean> {
  const fa = await fsp.open(a, C.O_RDONLY | C.O_NOFOLLOW);
  const fb = await fsp.open(b, C.O_RDONLY | C.O_NOFOLLOW);
  try {
    const ba = Buffer.allocUnsafe(256 * 1024);
    const bb = Buffer.allocUnsafe(256 * 1024);
    let left = size;
    while (left > 0) {
      const n = Math.min(left, ba.length);
      const ra = await fa.read(ba, 0, n, null);
      const rb = await fb.read(bb, 0, n, null);
      if (ra.bytesRead !== n || rb.bytesRead !== n || !ba.subarray(0, n).equals(bb.subarray(0, n))) return false;
      left -= n;
    }
    return true;
  } finally {
    await fa.close();
    await fb.close();
  }
}

/**
 * A layer with the changes from lowerDir to upperDir: entries added or changed (type, mode,
 * owner, size, mtime, link target, device number, and bytes when compareContent), their parent
 * directories, and whiteouts for what was deleted.
 */
export async function writeLayerFromDiff(lowerDir: string, upperDir: string, out: Writable | string, opts: DiffOptions): Promise<LayerInfo> {
  const lower = new Map((await scan(lowerDir, opts.signal)).map((s) => [s.rel, s.st]));
  const upperList = await scan(upperDir, opts.signal);
  const upper = new Map(upperList.map((s) => [s.rel, s.st]));
  const changed = new Set<string>();
  for (const { rel, st } of upperList) {
    const l = lower.get(rel);
    let differs =
      l === undefined ||
      typeOfStat(l) !== typeOfStat(st) ||
      (l.mode & 0o7777) !== (st.mode & 0o7777) ||
      l.uid !== st.uid ||
      l.gid !== st.gid ||
      (!st.isDirectory() && l.size !== st.size) ||
      l.mtimeMs !== st.mtimeMs ||
      l.rdev !== st.rdev;
    if (!differs && l !== undefined && st.isSymbolicLink()) {
      differs = (await fsp.readlink(join(lowerDir, rel))) !== (await fsp.readlink(join(upperDir, rel)));
    }
    if (!differs && l !== undefined && opts.compareContent && st.isFile()) {
      differs = !(await sameContent(join(lowerDir, rel), join(upperDir, rel), st.size));
    }
    if (differs) changed.add(rel);
  }
  const pre = prefixParts(opts).join('/');
  const withPre = (rel: string): string => (pre === '' ? rel : `${pre}/${rel}`);
  const whiteouts: Item[] = [];
  for (const [rel, st] of lower) {
    if (upper.has(rel)) continue;
    const slash = rel.lastIndexOf('/');
    const parent = slash < 0 ? '' : rel.slice(0, slash);
    // Only the topmost deleted path: its parent still exists in upper as a directory.
    if (parent !== '' && upper.get(parent)?.isDirectory() !== true) continue;
    if (parent !== '') changed.add(parent);
    whiteouts.push(whiteoutItem(withPre(rel), st, opts));
  }
  // Parents of changed entries go in too, so extraction recreates them with the right metadata.
  for (const rel of [...changed]) {
    let i = rel.lastIndexOf('/');
    while (i > 0) {
      const p = rel.slice(0, i);
      if (changed.has(p)) break;
      changed.add(p);
      i = p.lastIndexOf('/');
    }
  }
  const items = [...prefixItems(opts), ...(await itemsFor(upperDir, upperList.filter((s) => changed.has(s.rel)), opts)), ...whiteouts];
  return emit(items, out, opts);
}
