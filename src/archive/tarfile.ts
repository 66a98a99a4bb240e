/**
 * Random access to a tar file on disk: one pass over the headers (seeking past the data) builds an
 * index of entries with their data offsets, and entries are then streamed straight from the file.
 * Archives are read lazily this way, never extracted. Writing uses src/layer's header encoder.
 */
import { createReadStream } from 'node:fs';
import { open, rename, unlink, mkdir } from 'node:fs/promises';
import { dirname, join, posix, basename } from 'node:path';
import { Readable } from 'node:stream';
import { END_OF_ARCHIVE, encodeHeader, padding, parsePax, tarHeader } from '../layer/index.js';
import { ArchwayError, isErrnoException, readAllLimited, throwIfAborted } from '../util/index.js';
import { tempName } from '../store/index.js';

const BLOCK = 512;
const MAX_META = 1024 * 1024;
const MAX_ENTRIES = 1_000_000;

export type ArchiveEntryType = 'file' | 'dir' | 'symlink' | 'hardlink' | 'other';

export interface ArchiveEntry {
  name: string;
  type: ArchiveEntryType;
  /** Offset of the data in the file. */
  offset: number;
  size: number;
  linkname: string;
}

function cstr(buf: Buffer, off: number, len: number): string {
  const end = buf.indexOf(0, off);
  const stop = end < 0 || end > off + len ? off + len : end;
  return buf.toString('utf8', off, stop);
}

function octal(buf: Buffer, off: number, len: number, what: string): number {
  const first = buf[off] ?? 0;
  if (first & 0x80) {
    let v = first & 0x7f;
    for (let i = 1; i < len; i++) {
      v = v * 256 + (buf[off + i] ?? 0);
      if (v > Number.MAX_SAFE_INTEGER) throw new ArchwayError('FORMAT', `${what}: tar size too large`);
    }
    return v;
  }
  const s = buf.toString('latin1', off, off + len).replace(/[\0 ]+$/g, '').replace(/^ +/, '');
  if (s === '') return 0;
  if (!/^[0-7]+$/.test(s)) throw new ArchwayError('FORMAT', `${what}: bad tar header field "${s}"`);
  return parseInt(s, 8);
}

/** `./a//b/` → `a/b`; undefined for names that climb out (`..`) or are empty. */
export function normalizeArchivePath(name: string): string | undefined {
  const parts: string[] = [];
  for (const p of name.split('/')) {
    if (p === '' || p === '.') continue;
    if (p === '..') return undefined;
    parts.push(p);
  }
  return parts.length === 0 ? undefined : parts.join('/');
}

export class TarFile {
  private constructor(
    readonly path: string,
    readonly what: string,
    private readonly entries: Map<string, ArchiveEntry>,
  ) {}

  static async open(path: string, what: string, opts: { signal?: AbortSignal } = {}): Promise<TarFile> {
    let h;
    try {
      h = await open(path, 'r');
    } catch (e) {
      if (isErrnoException(e, 'ENOENT')) throw new ArchwayError('NOT_FOUND', `${what}: no such file`, { details: { path } });
      throw new ArchwayError('STORAGE', `${what}: cannot open: ${(e as Error).message}`, { cause: e });
    }
    const entries = new Map<string, ArchiveEntry>();
    try {
      const fileSize = (await h.stat()).size;
      const block = Buffer.alloc(BLOCK);
      let pos = 0;
      let pax: Map<string, Buffer> | undefined;
      let longName: string | undefined;
      let longLink: string | undefined;
      let count = 0;
      const readAt = async (buf: Buffer, at: number): Promise<void> => {
        const { bytesRead } = await h!.read(buf, 0, buf.length, at);
        if (bytesRead !== buf.length) throw new ArchwayError('FORMAT', `${what}: truncated tar archive`);
      };
      if (fileSize >= 2) {
        const magic = Buffer.alloc(2);
        await readAt(magic, 0);
        if (magic[0] === 0x1f && magic[1] === 0x8b) {
          throw new ArchwayError('FORMAT', `${what}: the archive is gzip-compressed`, { hint: 'decompress it first (gunzip)' });
        }
      }
      for (;;) {
        throwIfAborted(opts.signal);
        if (pos + BLOCK > fileSize) {
          if (pos === fileSize) break; // no end marker: tolerated, as tar does
          throw new ArchwayError('FORMAT', `${what}: truncated tar archive`);
        }
        await readAt(block, pos);
        if (block.every((b) => b === 0)) break;
        if (cstr(block, 257, 6) !== 'ustar' && !block.toString('latin1', 257, 263).startsWith('ustar')) {
          let sum = 0;
          for (let i = 0; i < BLOCK; i++) sum += i >= 148 && i < 156 ? 32 : (block[i] ?? 0);
          if (sum !== octal(block, 148, 8, what)) throw new ArchwayError('FORMAT', `${what}: not a tar archive (bad header at offset ${pos})`);
        }
        if (++count > MAX_ENTRIES) throw new ArchwayError('FORMAT', `${what}: more than ${MAX_ENTRIES} entries`);
        const flag = String.fromCharCode(block[156] ?? 0);
        let size = octal(block, 124, 12, what);
        const dataAt = pos + BLOCK;
        const readMeta = async (): Promise<Buffer> => {
          if (size > MAX_META) throw new ArchwayError('FORMAT', `${what}: tar metadata entry of ${size} bytes`);
          const b = Buffer.alloc(size);
          await readAt(b, dataAt);
          return b;
        };
        if (flag === 'x') {
          pax = parsePax(await readMeta());
          pos = dataAt + size + padding(size);
          continue;
        }
        if (flag === 'g') {
          pos = dataAt + size + padding(size);
          continue;
        }
        if (flag === 'L' || flag === 'K') {
          const text = (await readMeta()).toString('utf8').replace(/\0+$/, '');
          if (flag === 'L') longName = text;
          else longLink = text;
          pos = dataAt + size + padding(size);
          continue;
        }
        const prefix = cstr(block, 345, 155);
        let name = cstr(block, 0, 100);
        if (prefix) name = `${prefix}/${name}`;
        let linkname = cstr(block, 157, 100);
        if (longName !== undefined) name = longName;
        if (longLink !== undefined) linkname = longLink;
        const paxPath = pax?.get('path');
        if (paxPath) name = paxPath.toString('utf8');
        const paxLink = pax?.get('linkpath');
        if (paxLink) linkname = paxLink.toString('utf8');
        const paxSize = pax?.get('size');
        if (paxSize) size = Number(paxSize.toString('latin1'));
        if (!Number.isSafeInteger(size) || size < 0) throw new ArchwayError('FORMAT', `${what}: bad size for ${name}`);
        pax = undefined;
        longName = undefined;
        longLink = undefined;
        const type: ArchiveEntryType =
          flag === '0' || flag === '\0' || flag === '7' ? 'file' : flag === '5' ? 'dir' : flag === '2' ? 'symlink' : flag === '1' ? 'hardlink' : 'other';
        const dataSize = type === 'file' || type === 'other' ? size : 0;
        if (dataAt + dataSize > fileSize) throw new ArchwayError('FORMAT', `${what}: truncated tar archive (${name})`);
        const norm = normalizeArchivePath(name);
        if (norm !== undefined) entries.set(norm, { name: norm, type, offset: dataAt, size: dataSize, linkname });
        pos = dataAt + dataSize + padding(dataSize);
      }
    } finally {
      await h.close();
    }
    return new TarFile(path, what, entries);
  }

  names(): string[] {
    return [...this.entries.keys()];
  }

  /** The regular file at `name`, following symlinks and hard links inside the archive. */
  file(name: string): ArchiveEntry | undefined {
    let cur = normalizeArchivePath(name);
    for (let hops = 0; hops < 16 && cur !== undefined; hops++) {
      const e = this.entries.get(cur);
      if (!e) return undefined;
      if (e.type === 'file') return e;
      if (e.type === 'hardlink') cur = normalizeArchivePath(e.linkname);
      else if (e.type === 'symlink') {
        if (e.linkname.startsWith('/')) return undefined;
        const target = posix.normalize(posix.join(posix.dirname(cur), e.linkname));
        cur = normalizeArchivePath(target);
      } else return undefined;
    }
    return undefined;
  }

  stream(entry: ArchiveEntry): Readable {
    if (entry.size === 0) return Readable.from([]);
    return createReadStream(this.path, { start: entry.offset, end: entry.offset + entry.size - 1 });
  }

  async head(entry: ArchiveEntry, n: number): Promise<Buffer> {
    const h = await open(this.path, 'r');
    try {
      const b = Buffer.alloc(Math.min(n, entry.size));
      const { bytesRead } = await h.read(b, 0, b.length, entry.offset);
      return b.subarray(0, bytesRead);
    } finally {
      await h.close();
    }
  }

  async readFile(name: string, limit: number): Promise<Buffer | undefined> {
    const e = this.file(name);
    if (!e) return undefined;
    if (e.size > limit) throw new ArchwayError('FORMAT', `${this.what}: ${name} is larger than ${limit} bytes`);
    return readAllLimited(this.stream(e), limit, `${this.what}: ${name}`);
  }
}

export interface TarSourceEntry {
  name: string;
  /** Directories have no content. */
  dir?: boolean;
  size?: number;
  content?: Buffer | (() => Promise<Readable>);
}

/**
 * Writes a tar to `dest` atomically: a temp file beside it, fsync, rename. Headers are
 * deterministic (mtime 0, uid/gid 0, no user names).
 */
export async function writeTarFile(dest: string, entries: Iterable<TarSourceEntry>, opts: { signal?: AbortSignal } = {}): Promise<void> {
  await mkdir(dirname(dest), { recursive: true });
  const tmp = join(dirname(dest), `.${basename(dest)}.${tempName('tmp')}`);
  const h = await open(tmp, 'wx', 0o644);
  const write = async (buf: Buffer): Promise<void> => {
    let off = 0;
    while (off < buf.length) off += (await h.write(buf, off, buf.length - off)).bytesWritten;
  };
  try {
    for (const e of entries) {
      throwIfAborted(opts.signal);
      if (e.dir) {
        await write(encodeHeader(tarHeader({ name: e.name, type: 'dir', mode: 0o755 })));
        continue;
      }
      const size = Buffer.isBuffer(e.content) ? e.content.length : (e.size ?? 0);
      await write(encodeHeader(tarHeader({ name: e.name, type: 'file', mode: 0o644, size })));
      let written = 0;
      if (Buffer.isBuffer(e.content)) {
        await write(e.content);
        written = e.content.length;
      } else if (e.content) {
        for await (const chunk of await e.content()) {
          throwIfAborted(opts.signal);
          const b = chunk as Buffer;
          written += b.length;
          if (written > size) throw new ArchwayError('INTEGRITY', `${e.name}: more than the expected ${size} bytes`);
          await write(b);
        }
      }
      if (written !== size) throw new ArchwayError('INTEGRITY', `${e.name}: got ${written} bytes, expected ${size}`);
      await write(Buffer.alloc(padding(size)));
    }
    await write(END_OF_ARCHIVE);
    await h.sync();
    await h.close();
    await rename(tmp, dest);
  } catch (e) {
    await h.close().catch(() => undefined);
    await unlink(tmp).catch(() => undefined);
    if (e instanceof ArchwayError) throw e;
    throw new ArchwayError('STORAGE', `cannot write ${dest}: ${(e as Error).message}`, { cause: e });
  }
}
