/**
 * Applies a layer onto a directory: the safe extraction path for untrusted tars.
 *
 * Path policy (DESIGN.md safety rules):
 * - entry names (and hardlink targets) that are absolute or contain a `..` component are
 *   refused (UNSAFE);
 * - parent components are resolved inside the root as a chroot would, one at a time with lstat
 *   and readlink: a symlink met on the way is followed, an absolute target starts again from the
 *   root, and `..` never climbs above the root. So `var/run/x` with `var/run -> /run` lands in
 *   `<root>/run/x`, and a link to `/` or `../../..` means the root itself. More than 40 links on
 *   one path is refused (UNSAFE, a loop);
 * - the final component is never followed: files, links and nodes are created with
 *   O_CREAT|O_EXCL|O_NOFOLLOW semantics, and whatever is in the way is removed first, so a
 *   planted link cannot redirect the write;
 * - hardlink targets go through the same resolution, so they cannot name a file outside;
 * - device nodes are refused unless `allowDevices` (and are skipped when not root);
 * - limits on total uncompressed bytes and entry count stop decompression bombs.
 *
 * Speed: the file work is done with synchronous calls on this thread, as tar does it (one
 * syscall each, no thread-pool round trip per call), while gunzip runs on the thread pool.
 * Directories already resolved in this apply are remembered (as real paths without links) so
 * their components are not looked at again; anything this apply removes clears that memory.
 * The check-then-use window against *another* process racing in the same tree is not closed
 * (Node has no openat2); layers are applied into directories nobody else writes to.
 */
import * as fs from 'node:fs';
import { join } from 'node:path';
import { pipeline } from 'node:stream';
import type { Readable } from 'node:stream';
import { parseDigest, type Digest } from '../oci/index.js';
import { ArchwayError, HashingCounter, abortError, isErrnoException, runTool, throwIfAborted } from '../util/index.js';
import { createDecompressor, sniffCompression } from './compress.js';
import { TarReader, type TarHeader } from './tar.js';
import { sharedHelper, type Helper, type XattrItem } from './xattr.js';

const C = fs.constants;

export interface LayerLimits {
  /** Most uncompressed tar bytes accepted (default 64 GiB). */
  maxBytes?: number;
  /** Most entries accepted (default 2,000,000). */
  maxEntries?: number;
}

export interface ApplyOptions {
  /** The declared media type; content that is compressed differently is a FORMAT error. */
  mediaType?: string;
  limits?: LayerLimits;
  /** Create char/block devices (only as root). Otherwise a device entry is UNSAFE. */
  allowDevices?: boolean;
  /**
   * Unpacking a layer on its own into a snapshot that overlayfs stacks: whiteouts become overlay
   * whiteouts (a 0/0 character device, the `trusted.overlay.opaque` xattr) instead of deletions,
   * so the lower snapshots stay hidden when mounted. Needs root.
   */
  overlayWhiteouts?: boolean;
  /** Set xattrs (security.capability and user.*) through the python3 helper. Default true. */
  xattrs?: boolean;
  signal?: AbortSignal;
}

export interface ApplyResult {
  diffID: Digest;
  digest: Digest;
  /** Compressed size in bytes. */
  size: number;
  entries: number;
  /** xattrs not set: not an allowed name, python3 missing, or refused by the filesystem. */
  skippedXattrs: number;
}

export const DEFAULT_LIMITS: Required<LayerLimits> = { maxBytes: 64 * 1024 ** 3, maxEntries: 2_000_000 };
const MAX_LINKS = 40;
const WHITEOUT = '.wh.';
const OPAQUE = '.wh..wh..opq';
/** Largest piece of a file body taken at once (a view into the decompressed chunk). */
const WRITE_CHUNK = 1024 * 1024;
const isRoot = typeof process.getuid === 'function' && process.getuid() === 0;

function unsafe(entry: string, why: string): ArchwayError {
  return new ArchwayError('UNSAFE', `layer entry "${entry}": ${why}`, { details: { entry } });
}

/** Splits an entry name into components, refusing absolute names and `..`. */
export function entryComponents(name: string, what = 'path', entry = name): string[] {
  if (name.includes('\0')) throw unsafe(entry, `${what} contains a NUL byte`);
  if (name.startsWith('/')) throw unsafe(entry, `absolute ${what} "${name}" refused`);
  const parts = name.split('/').filter((p) => p !== '' && p !== '.');
  if (parts.includes('..')) throw unsafe(entry, `${what} "${name}" with ".." refused`);
  return parts;
}

function lstat(p: string): fs.Stats | undefined {
  return fs.lstatSync(p, { throwIfNoEntry: false });
}

function isExists(e: unknown): boolean {
  return isErrnoException(e, 'EEXIST');
}

/** Counts and hashes the uncompressed stream and stops it past the byte limit. */
class LimitedHasher extends HashingCounter {
  constructor(private readonly max: number) {
    super('sha256');
  }
  override _transform(chunk: Buffer, enc: BufferEncoding, cb: (e?: Error | null, d?: Buffer) => void): void {
    if (this.bytes + chunk.length > this.max) {
      cb(new ArchwayError('UNSAFE', `layer expands to more than the limit of ${this.max} bytes`));
      return;
    }
    super._transform(chunk, enc, cb);
  }
}

interface DirMeta {
  rel: string;
  depth: number;
  mode: number;
  mtime: number;
}

type NodeKind = 'p' | 'c' | 'b';

/** Resolution state for one layer application. */
class Applier {
  /** Real paths (relative to root) this layer created: whiteouts must spare them. */
  private readonly seen = new Set<string>();
  private readonly seenAncestors = new Set<string>();
  /**
   * Real paths (relative to root, no symlink in them) seen to be directories during this apply.
   * Cleared whenever this apply removes a directory, so it never vouches for a stale path.
   */
  private readonly knownDirs = new Set<string>();
  private readonly dirs = new Map<string, DirMeta>();
  private readonly xattrs: XattrItem[] = [];
  /** The process's python3 helper, asked for on first need; null when python3 is missing. */
  private helper: Helper | null | undefined;
  skippedXattrs = 0;

  constructor(
    private readonly root: string,
    private readonly opts: ApplyOptions,
    private readonly reader: TarReader,
  ) {}

  private abs(rel: string): string {
    return rel === '' ? this.root : join(this.root, rel);
  }

  /**
   * Resolves directory components inside the root as a chroot would (see the module comment).
   * Returns the real components, or undefined when something is missing and `create` is false.
   * With `create`, missing directories are made (0755), also where a link pointed.
   */
  resolveDir(parts: readonly string[], create: boolean, entry: string): string[] | undefined {
    const stack: string[] = [];
    let rel = '';
    const todo = [...parts].reverse(); // the next component is the last element
    let links = 0;
    for (let c = todo.pop(); c !== undefined; c = todo.pop()) {
      if (c === '' || c === '.') continue;
      if (c === '..') {
        // Only link targets bring `..` here; at the root it stays at the root.
        stack.pop();
        rel = stack.join('/');
        continue;
      }
      const next = rel === '' ? c : `${rel}/${c}`;
      if (!this.knownDirs.has(next)) {
        const p = this.abs(next);
        const st = lstat(p);
        if (st === undefined) {
          if (!create) return undefined;
          fs.mkdirSync(p, 0o755);
          fs.chmodSync(p, 0o755); // implied parents get 0755 whatever the umask, as umoci does
          this.markSeenAncestor(next);
        } else if (st.isSymbolicLink()) {
          if (++links > MAX_LINKS) throw unsafe(entry, `too many levels of symbolic links at "${next}" (a symlink loop?)`);
          const target = fs.readlinkSync(p);
          if (target.startsWith('/')) {
            stack.length = 0;
            rel = '';
          }
          const tparts = target.split('/');
          for (let i = tparts.length - 1; i >= 0; i--) todo.push(tparts[i] as string);
          continue;
        } else if (!st.isDirectory()) {
          if (!create) return undefined;
          throw new ArchwayError('FORMAT', `layer entry "${entry}": "${next}" is not a directory`, { details: { entry } });
        }
        this.knownDirs.add(next);
      }
      stack.push(c);
      rel = next;
    }
    return stack;
  }

  private markSeen(rel: string): void {
    this.seen.add(rel);
    this.markSeenAncestor(rel.slice(0, Math.max(0, rel.lastIndexOf('/'))));
  }

  private markSeenAncestor(rel: string): void {
    let r = rel;
    while (r !== '' && !this.seenAncestors.has(r)) {
      this.seenAncestors.add(r);
      const i = r.lastIndexOf('/');
      r = i < 0 ? '' : r.slice(0, i);
    }
  }

  /** Removes what lower layers put at rel, sparing anything this layer created. */
  private async removeLower(rel: string): Promise<void> {
    const full = this.abs(rel);
    const st = lstat(full);
    if (st === undefined) return;
    if (!this.seen.has(rel) && !this.seenAncestors.has(rel)) {
      if (st.isDirectory()) {
        this.knownDirs.clear();
        await fs.promises.rm(full, { recursive: true, force: true }); // can be big: off this thread
      } else fs.unlinkSync(full);
      return;
    }
    if (!st.isDirectory()) return;
    for (const child of fs.readdirSync(full)) await this.removeLower(`${rel}/${child}`);
  }

  /** Removes whatever is at full so that a non-directory can take its place. */
  private async clear(full: string): Promise<void> {
    const st = lstat(full);
    if (st === undefined) return;
    if (st.isDirectory()) {
      this.knownDirs.clear();
      await fs.promises.rm(full, { recursive: true, force: true });
    } else fs.unlinkSync(full);
  }

  /** Runs make (which must not follow a final link); when something is in the way, removes it and tries once more. */
  private async replacing<T>(full: string, make: () => T): Promise<T> {
    try {
      return make();
    } catch (e) {
      if (!isExists(e)) throw e;
    }
    await this.clear(full);
    return make();
  }

  private async mknod(rel: string, full: string, kind: NodeKind, mode: number, major: number, minor: number): Promise<void> {
    if (this.helper === undefined) this.helper = sharedHelper() ?? null;
    if (this.helper !== null && (await this.helper.mknod(this.root, rel, { kind, mode, major, minor }))) return;
    this.helper = null;
    const args = ['-m', (mode & 0o7777).toString(8), full, kind];
    await runTool('mknod', kind === 'p' ? args : [...args, String(major), String(minor)], { code: 'STORAGE' });
  }

  async apply(h: TarHeader): Promise<void> {
    const name = h.name;
    const parts = entryComponents(name);
    const base = parts[parts.length - 1];

    // Whiteouts: delete from lower layers, never create anything.
    if (base !== undefined && base.startsWith(WHITEOUT)) {
      const dirParts = parts.slice(0, -1);
      if (this.opts.overlayWhiteouts) {
        if (base !== OPAQUE && base.startsWith(`${WHITEOUT}${WHITEOUT}`)) return;
        const target = base === OPAQUE ? '' : base.slice(WHITEOUT.length);
        if (base !== OPAQUE && (target === '' || target === '.' || target === '..')) throw unsafe(name, 'whiteout names no file');
        const dir = this.resolveDir(dirParts, true, name) as string[];
        if (base === OPAQUE) {
          this.xattrs.push({ path: dir.join('/'), xattrs: { 'trusted.overlay.opaque': Buffer.from('y') } });
          return;
        }
        const rel = [...dir, target].join('/');
        const full = this.abs(rel);
        await this.clear(full);
        await this.mknod(rel, full, 'c', 0, 0, 0);
        return;
      }
      if (base === OPAQUE) {
        const dir = this.resolveDir(dirParts, false, name);
        if (dir === undefined) return;
        const drel = dir.join('/');
        for (const child of fs.readdirSync(this.abs(drel))) await this.removeLower(drel === '' ? child : `${drel}/${child}`);
        return;
      }
      if (base.startsWith(`${WHITEOUT}${WHITEOUT}`)) return; // other AUFS metadata (.wh..wh.plnk ...)
      const target = base.slice(WHITEOUT.length);
      if (target === '' || target === '.' || target === '..') throw unsafe(name, 'whiteout names no file');
      const dir = this.resolveDir(dirParts, false, name);
      if (dir === undefined) return;
      await this.removeLower([...dir, target].join('/'));
      return;
    }

    if (h.type === 'char' || h.type === 'block') {
      if (!this.opts.allowDevices) throw unsafe(name, `${h.type} device ${h.devmajor}:${h.devminor} refused (devices are not allowed)`);
      if (!isRoot) return;
    }

    if (base === undefined) {
      // The root itself ("./"): only its metadata can change.
      if (h.type !== 'dir') throw unsafe(name, 'the layer root can only be a directory');
      if (isRoot) fs.lchownSync(this.root, h.uid, h.gid);
      this.dirs.set('', { rel: '', depth: 0, mode: h.mode, mtime: h.mtime });
      this.keepXattrs('', h);
      return;
    }

    const parent = this.resolveDir(parts.slice(0, -1), true, name) as string[];
    const rel = parent.length === 0 ? base : `${parent.join('/')}/${base}`;
    const full = this.abs(rel);
    this.markSeen(rel);

    switch (h.type) {
      case 'dir': {
        if (!this.knownDirs.has(rel)) {
          try {
            fs.mkdirSync(full, 0o700);
          } catch (e) {
            if (!isExists(e)) throw e;
            if (lstat(full)?.isDirectory() !== true) {
              fs.unlinkSync(full);
              fs.mkdirSync(full, 0o700);
            }
          }
          this.knownDirs.add(rel);
        }
        if (isRoot) fs.lchownSync(full, h.uid, h.gid);
        this.dirs.set(rel, { rel, depth: parent.length + 1, mode: h.mode, mtime: h.mtime });
        this.keepXattrs(rel, h);
        return;
      }
      case 'file': {
        const fd = await this.replacing(full, () => fs.openSync(full, C.O_WRONLY | C.O_CREAT | C.O_EXCL | C.O_NOFOLLOW, 0o600));
        try {
          for (let b = await this.reader.read(WRITE_CHUNK); b !== null; b = await this.reader.read(WRITE_CHUNK)) {
            throwIfAborted(this.opts.signal, 'applying layer');
            for (let off = 0; off < b.length; ) off += fs.writeSync(fd, b, off, b.length - off);
          }
          if (isRoot) fs.fchownSync(fd, h.uid, h.gid);
          fs.fchmodSync(fd, h.mode); // after chown, which clears setuid/setgid
          fs.futimesSync(fd, h.mtime, h.mtime);
        } finally {
          fs.closeSync(fd);
        }
        this.keepXattrs(rel, h);
        return;
      }
      case 'symlink': {
        // Kept verbatim: it is only data until something follows it.
        await this.replacing(full, () => fs.symlinkSync(h.linkname, full));
        if (isRoot) fs.lchownSync(full, h.uid, h.gid);
        fs.lutimesSync(full, h.mtime, h.mtime);
        return;
      }
      case 'hardlink': {
        const tparts = entryComponents(h.linkname, 'hardlink target', name);
        const tbase = tparts[tparts.length - 1];
        if (tbase === undefined) throw unsafe(name, 'hardlink to the layer root');
        const tdir = this.resolveDir(tparts.slice(0, -1), false, name);
        const tfull = tdir === undefined ? undefined : join(this.abs(tdir.join('/')), tbase);
        const tst = tfull === undefined ? undefined : lstat(tfull);
        if (tfull === undefined || tst === undefined) {
          throw new ArchwayError('FORMAT', `layer entry "${name}": hardlink target "${h.linkname}" does not exist`, { details: { entry: name } });
        }
        if (tst.isDirectory()) throw unsafe(name, `hardlink to directory "${h.linkname}" refused`);
        if (tfull === full) return;
        await this.replacing(full, () => fs.linkSync(tfull, full)); // link(2) does not follow a symlink target
        return;
      }
      case 'fifo':
      case 'char':
      case 'block': {
        await this.clear(full);
        await this.mknod(rel, full, h.type === 'fifo' ? 'p' : h.type === 'char' ? 'c' : 'b', h.mode, h.devmajor, h.devminor);
        if (isRoot) {
          fs.lchownSync(full, h.uid, h.gid);
          // chown cleared setuid/setgid; the node was just made here, so chmod's path is ours.
          if ((h.mode & 0o6000) !== 0) fs.chmodSync(full, h.mode);
        }
        fs.lutimesSync(full, h.mtime, h.mtime);
        return;
      }
    }
  }

  private keepXattrs(rel: string, h: TarHeader): void {
    const keep: Record<string, Buffer> = {};
    let any = false;
    for (const [k, v] of Object.entries(h.xattrs)) {
      if (this.opts.xattrs !== false && (k === 'security.capability' || k.startsWith('user.'))) {
        keep[k] = v;
        any = true;
      } else this.skippedXattrs++;
    }
    if (any) this.xattrs.push({ path: rel, xattrs: keep });
  }

  /** True when every component of rel is a real directory (no link was planted later). */
  private plainDir(rel: string): boolean {
    if (rel === '' || this.knownDirs.has(rel)) return true;
    let p = this.root;
    for (const c of rel.split('/')) {
      p = join(p, c);
      if (lstat(p)?.isDirectory() !== true) return false;
    }
    return true;
  }

  /** xattrs, then directory modes and mtimes, deepest first, after their contents were written. */
  async finish(): Promise<void> {
    if (this.xattrs.length > 0) {
      if (this.helper === undefined) this.helper = sharedHelper() ?? null;
      this.skippedXattrs +=
        this.helper === null ? this.xattrs.reduce((n, i) => n + Object.keys(i.xattrs).length, 0) : await this.helper.setXattrs(this.root, this.xattrs);
    }
    const byDepth = [...this.dirs.values()].sort((a, b) => b.depth - a.depth);
    for (const d of byDepth) {
      throwIfAborted(this.opts.signal, 'applying layer');
      if (!this.plainDir(d.rel)) continue;
      const fd = fs.openSync(this.abs(d.rel), C.O_RDONLY | C.O_DIRECTORY | C.O_NOFOLLOW);
      try {
        fs.fchmodSync(fd, d.mode);
        fs.futimesSync(fd, d.mtime, d.mtime);
      } finally {
        fs.closeSync(fd);
      }
    }
  }
}

/**
 * Applies one layer (tar, tar+gzip or tar+zstd, detected by magic bytes) onto targetDir, which
 * must exist. Computes the compressed digest and the diffID in the same pass.
 */
export async function applyLayer(input: Readable, targetDir: string, opts: ApplyOptions = {}): Promise<ApplyResult> {
  throwIfAborted(opts.signal, 'applying layer');
  const limits = { ...DEFAULT_LIMITS, ...opts.limits };
  const root = await fs.promises.realpath(targetDir).catch((e: unknown) => {
    throw new ArchwayError('STORAGE', `cannot use "${targetDir}" as a layer target: ${e instanceof Error ? e.message : String(e)}`);
  });

  const compressed = new HashingCounter('sha256');
  const failures: Error[] = [];
  const recordFailure = (e: Error | null | undefined): void => {
    if (e) failures.push(e);
  };
  pipeline(input, compressed, recordFailure);
  const { compression, stream } = await sniffCompression(compressed, opts.mediaType);
  const uncompressed = new LimitedHasher(limits.maxBytes);
  const tarStream = pipeline(stream, createDecompressor(compression), uncompressed, recordFailure);
  const onAbort = (): void => {
    tarStream.destroy(abortError(opts.signal, 'applying layer'));
  };
  opts.signal?.addEventListener('abort', onAbort, { once: true });

  let entries = 0;
  let current: string | undefined;
  const reader = new TarReader(tarStream, {
    ...(opts.signal ? { signal: opts.signal } : {}),
    onHeader: (h) => {
      current = h.name;
      entries++;
      if (entries > limits.maxEntries) throw unsafe(h.name, `more than the limit of ${limits.maxEntries} entries`);
      if (h.size > limits.maxBytes) {
        throw unsafe(h.name, `size ${h.size} exceeds the layer byte limit of ${limits.maxBytes}`);
      }
    },
  });
  const applier = new Applier(root, opts, reader);
  try {
    for (let h = await reader.next(); h !== undefined; h = await reader.next()) {
      try {
        await applier.apply(h);
      } catch (e) {
        throw wrapFsError(e, h.name);
      }
    }
    await applier.finish();
  } catch (e) {
    // A stream failure (bad gzip, limit) surfaces here as whatever the reader saw; prefer its cause.
    const first = failures.find((f) => f instanceof ArchwayError);
    const err = !(e instanceof ArchwayError) && first !== undefined ? first : e;
    if (err instanceof ArchwayError) {
      // Name the entry being read when a stream-level limit fired in the middle of it.
      if (err.code === 'UNSAFE' && err.details['entry'] === undefined && current !== undefined) throw unsafe(current, err.message);
      throw err;
    }
    if (opts.signal?.aborted) throw abortError(opts.signal, 'applying layer');
    throw new ArchwayError('FORMAT', `layer: ${e instanceof Error ? e.message : String(e)}`, { cause: e });
  } finally {
    opts.signal?.removeEventListener('abort', onAbort);
    reader.close();
    // On failure nothing reads the source any more; release it (file descriptors, sockets).
    if (!input.readableEnded && !input.destroyed) input.destroy();
  }
  if (failures.length > 0) {
    const f = failures[0] as Error;
    throw f instanceof ArchwayError ? f : new ArchwayError('FORMAT', `layer: ${f.message}`, { cause: f });
  }
  return {
    diffID: parseDigest(`sha256:${uncompressed.hex()}`),
    digest: parseDigest(`sha256:${compressed.hex()}`),
    size: compressed.bytes,
    entries,
    skippedXattrs: applier.skippedXattrs,
  };
}

/** Turns a failed file call into an error naming the entry; anything else (a stream's error) passes. */
function wrapFsError(e: unknown, entry: string): unknown {
  if (e instanceof ArchwayError) return e;
  if (isErrnoException(e) && typeof e.syscall === 'string') {
    if (e.code === 'ELOOP') return unsafe(entry, 'refused to follow a symlink');
    if (e.code === 'EEXIST') return unsafe(entry, 'something appeared at its path while extracting');
    return new ArchwayError('STORAGE', `layer entry "${entry}": ${e.message}`, { cause: e, details: { entry } });
  }
  return e;
}
