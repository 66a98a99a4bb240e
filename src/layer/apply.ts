/**
 * Applies a layer onto a directory: the safe extraction path for untrusted tars.
 *
 * Path policy (DESIGN.md safety rules):
 * - entry names that are absolute or contain a `..` component are refused (UNSAFE);
 * - parent components are walked from the root one at a time with lstat; a symlink met on the
 *   way is followed only when its target is relative and stays inside the root (Debian's
 *   `lib -> usr/lib`); an absolute target or one climbing above the root is refused (UNSAFE),
 *   as is a chain of more than 40 links (loops);
 * - the final component is never followed: an existing non-directory is unlinked first and files
 *   are created with O_CREAT|O_EXCL|O_NOFOLLOW, so a planted link cannot redirect the write;
 * - hardlink targets go through the same resolution, so they cannot name a file outside;
 * - device nodes are refused unless `allowDevices` (and are skipped when not root);
 * - limits on total uncompressed bytes and entry count stop decompression bombs.
 * The check-then-use window against *another* process racing in the same tree is not closed
 * (Node has no openat2); layers are applied into directories nobody else writes to.
 */
import { spawn } from 'node:child_process';
import { constants as C, promises as fsp } from 'node:fs';
import type { FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { pipeline } from 'node:stream';
import type { Readable } from 'node:stream';
import { parseDigest, type Digest } from '../oci/index.js';
import { ArchwayError, HashingCounter, abortError, isErrnoException, throwIfAborted } from '../util/index.js';
import { createDecompressor, sniffCompression } from './compress.js';
import { readTar, type TarHeader } from './tar.js';
import { setXattrs } from './xattr.js';

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

async function lstatOrUndefined(p: string): Promise<Awaited<ReturnType<typeof fsp.lstat>> | undefined> {
  try {
    return await fsp.lstat(p);
  } catch (e) {
    if (isErrnoException(e, 'ENOENT')) return undefined;
    throw e;
  }
}

function run(cmd: string, args: string[]): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ['ignore', 'ignore', 'pipe'] });
    let err = '';
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    child.on('error', reject);
    child.on('close', (code) => (code === 0 ? resolve() : reject(new Error(`${cmd}: ${err.trim()}`))));
  });
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
  mode: number;
  mtime: number;
}

/** Resolution state for one layer application. */
class Applier {
  /** Real paths (relative to root) this layer created: whiteouts must spare them. */
  private readonly seen = new Set<string>();
  private readonly seenAncestors = new Set<string>();
  private readonly dirs: DirMeta[] = [];
  readonly xattrs: Array<{ path: string; xattrs: Record<string, Buffer> }> = [];
  skippedXattrs = 0;

  constructor(
    private readonly root: string,
    private readonly opts: ApplyOptions,
  ) {}

  private abs(parts: readonly string[]): string {
    return parts.length === 0 ? this.root : join(this.root, ...parts);
  }

  /**
   * Resolves directory components inside the root, following only in-root relative links.
   * Returns the real components, or undefined when something is missing and `create` is false.
   */
  async resolveDir(parts: readonly string[], create: boolean, entry: string): Promise<string[] | undefined> {
    const stack: string[] = [];
    const queue = [...parts];
    let links = 0;
    while (queue.length > 0) {
      const c = queue.shift() as string;
      if (c === '' || c === '.') continue;
      if (c === '..') {
        if (stack.length === 0) throw unsafe(entry, 'a symlink on its path points above the layer root');
        stack.pop();
        continue;
      }
      const p = this.abs([...stack, c]);
      const st = await lstatOrUndefined(p);
      if (st === undefined) {
        if (!create) return undefined;
        await fsp.mkdir(p, { mode: 0o755 });
        await fsp.chmod(p, 0o755); // implied parents get 0755 whatever the umask, as umoci does
        stack.push(c);
        this.markSeenAncestor(stack.join('/'));
        continue;
      }
      if (st.isSymbolicLink()) {
        if (++links > MAX_LINKS) throw unsafe(entry, 'too many levels of symbolic links (loop)');
        const target = await fsp.readlink(p);
        if (target.startsWith('/')) {
          throw unsafe(entry, `would be written through symlink "${[...stack, c].join('/')}" -> "${target}", which points outside the layer root`);
        }
        queue.unshift(...target.split('/'));
        continue;
      }
      if (!st.isDirectory()) {
        if (!create) return undefined;
        throw new ArchwayError('FORMAT', `layer entry "${entry}": "${[...stack, c].join('/')}" is not a directory`, { details: { entry } });
      }
      stack.push(c);
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
    const full = join(this.root, rel);
    if (!this.seen.has(rel) && !this.seenAncestors.has(rel)) {
      await fsp.rm(full, { recursive: true, force: true });
      return;
    }
    const st = await lstatOrUndefined(full);
    if (st === undefined || !st.isDirectory()) return;
    for (const child of await fsp.readdir(full)) await this.removeLower(`${rel}/${child}`);
  }

  /** Removes whatever is at full so that a non-directory can take its place. */
  private async clear(full: string): Promise<void> {
    const st = await lstatOrUndefined(full);
    if (st === undefined) return;
    if (st.isDirectory()) await fsp.rm(full, { recursive: true, force: true });
    else await fsp.unlink(full);
  }

  async apply(h: TarHeader, body: Readable): Promise<void> {
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
        const dir = await this.resolveDir(dirParts, true, name);
        if (dir === undefined) throw unsafe(name, 'parent could not be resolved');
        if (base === OPAQUE) {
          this.xattrs.push({ path: dir.join('/'), xattrs: { 'trusted.overlay.opaque': Buffer.from('y') } });
          return;
        }
        const full = this.abs([...dir, target]);
        await this.clear(full);
        await run('mknod', ['-m', '0', full, 'c', '0', '0']);
        return;
      }
      if (base === OPAQUE) {
        const dir = await this.resolveDir(dirParts, false, name);
        if (dir === undefined) return;
        const drel = dir.join('/');
        const full = this.abs(dir);
        for (const child of await fsp.readdir(full)) await this.removeLower(drel === '' ? child : `${drel}/${child}`);
        return;
      }
      if (base.startsWith(`${WHITEOUT}${WHITEOUT}`)) return; // other AUFS metadata (.wh..wh.plnk ...)
      const target = base.slice(WHITEOUT.length);
      if (target === '' || target === '.' || target === '..') throw unsafe(name, 'whiteout names no file');
      const dir = await this.resolveDir(dirParts, false, name);
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
      await this.chown(this.root, h);
      this.dirs.push({ rel: '', mode: h.mode, mtime: h.mtime });
      this.keepXattrs('', h);
      return;
    }

    const parent = await this.resolveDir(parts.slice(0, -1), true, name);
    if (parent === undefined) throw unsafe(name, 'parent could not be resolved');
    const realParts = [...parent, base];
    const rel = realParts.join('/');
    const full = this.abs(realParts);
    this.markSeen(rel);

    switch (h.type) {
      case 'dir': {
        const st = await lstatOrUndefined(full);
        if (st === undefined || !st.isDirectory()) {
          if (st !== undefined) await fsp.unlink(full);
          await fsp.mkdir(full, { mode: 0o700 });
        }
        await this.chown(full, h);
        this.dirs.push({ rel, mode: h.mode, mtime: h.mtime });
        this.keepXattrs(rel, h);
        return;
      }
      case 'file': {
        await this.clear(full);
        let fh: FileHandle | undefined;
        try {
          fh = await fsp.open(full, C.O_WRONLY | C.O_CREAT | C.O_EXCL | C.O_NOFOLLOW, 0o600);
          for await (const chunk of body) {
            throwIfAborted(this.opts.signal, 'applying layer');
            await fh.write(chunk as Buffer);
          }
          if (isRoot) await fh.chown(h.uid, h.gid);
          await fh.chmod(h.mode); // after chown, which clears setuid/setgid
          await fh.utimes(h.mtime, h.mtime);
        } finally {
          await fh?.close();
        }
        this.keepXattrs(rel, h);
        return;
      }
      case 'symlink': {
        await this.clear(full);
        await fsp.symlink(h.linkname, full); // kept verbatim: it is only data until something follows it
        if (isRoot) await fsp.lchown(full, h.uid, h.gid);
        await fsp.lutimes(full, h.mtime, h.mtime);
        return;
      }
      case 'hardlink': {
        const tparts = entryComponents(h.linkname, 'hardlink target', name);
        const tbase = tparts[tparts.length - 1];
        if (tbase === undefined) throw unsafe(name, 'hardlink to the layer root');
        const tdir = await this.resolveDir(tparts.slice(0, -1), false, name);
        if (tdir === undefined) throw new ArchwayError('FORMAT', `layer entry "${name}": hardlink target "${h.linkname}" does not exist`, { details: { entry: name } });
        const tfull = this.abs([...tdir, tbase]);
        const tst = await lstatOrUndefined(tfull);
        if (tst === undefined) throw new ArchwayError('FORMAT', `layer entry "${name}": hardlink target "${h.linkname}" does not exist`, { details: { entry: name } });
        if (tst.isDirectory()) throw unsafe(name, `hardlink to directory "${h.linkname}" refused`);
        if (tfull === full) return;
        await this.clear(full);
        await fsp.link(tfull, full); // link(2) does not follow a symlink target
        return;
      }
      case 'fifo':
      case 'char':
      case 'block': {
        await this.clear(full);
        const mode = (h.mode & 0o7777).toString(8);
        if (h.type === 'fifo') await run('mknod', ['-m', mode, full, 'p']);
        else await run('mknod', ['-m', mode, full, h.type === 'char' ? 'c' : 'b', String(h.devmajor), String(h.devminor)]);
        if (isRoot) await fsp.lchown(full, h.uid, h.gid);
        await fsp.lutimes(full, h.mtime, h.mtime);
        return;
      }
    }
  }

  private async chown(full: string, h: TarHeader): Promise<void> {
    if (isRoot) await fsp.lchown(full, h.uid, h.gid);
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
  private async plainDir(rel: string): Promise<boolean> {
    let p = this.root;
    for (const c of rel === '' ? [] : rel.split('/')) {
      p = join(p, c);
      const st = await lstatOrUndefined(p);
      if (st === undefined || !st.isDirectory()) return false;
    }
    return true;
  }

  /** Directory modes and mtimes, deepest first, after their contents were written. */
  async finish(): Promise<void> {
    this.skippedXattrs += await setXattrs(this.root, this.xattrs, this.opts.signal ? { signal: this.opts.signal } : {});
    const byDepth = [...this.dirs].sort((a, b) => b.rel.split('/').length - a.rel.split('/').length);
    for (const d of byDepth) {
      if (!(await this.plainDir(d.rel))) continue;
      const fh = await fsp.open(join(this.root, d.rel), C.O_RDONLY | C.O_DIRECTORY | C.O_NOFOLLOW);
      try {
        await fh.chmod(d.mode);
        await fh.utimes(d.mtime, d.mtime);
      } finally {
        await fh.close();
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
  const root = await fsp.realpath(targetDir).catch((e: unknown) => {
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

  const applier = new Applier(root, opts);
  let entries = 0;
  let current: string | undefined;
  try {
    for await (const { header, body } of readTar(tarStream, {
      ...(opts.signal ? { signal: opts.signal } : {}),
      onHeader: (h) => {
        current = h.name;
        entries++;
        if (entries > limits.maxEntries) throw unsafe(h.name, `more than the limit of ${limits.maxEntries} entries`);
        if (h.size > limits.maxBytes) {
          throw unsafe(h.name, `size ${h.size} exceeds the layer byte limit of ${limits.maxBytes}`);
        }
      },
    })) {
      try {
        await applier.apply(header, body);
      } catch (e) {
        throw wrapFsError(e, header.name);
      }
    }
    await applier.finish();
  } catch (e) {
    // A stream failure (bad gzip, limit) surfaces here as whatever readTar saw; prefer its cause.
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

function wrapFsError(e: unknown, entry: string): unknown {
  if (e instanceof ArchwayError) return e;
  if (isErrnoException(e)) {
    if (e.code === 'ELOOP') return unsafe(entry, 'refused to follow a symlink');
    if (e.code === 'EEXIST') return unsafe(entry, 'something appeared at its path while extracting');
    return new ArchwayError('STORAGE', `layer entry "${entry}": ${e.message}`, { cause: e, details: { entry } });
  }
  return e;
}
