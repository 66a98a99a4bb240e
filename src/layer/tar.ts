/**
 * Our own tar reader and writer (ustar, pax, GNU long names). Written here rather than taken from
 * npm because popular tar packages have had extraction escapes; this module only parses and
 * encodes, path safety lives in apply.ts.
 */
import { Readable } from 'node:stream';
import { ArchwayError, throwIfAborted } from '../util/index.js';

export type EntryType = 'file' | 'dir' | 'symlink' | 'hardlink' | 'char' | 'block' | 'fifo';

export interface TarHeader {
  /** Path as stored (pax/GNU long name applied), without a trailing slash for directories. */
  name: string;
  type: EntryType;
  /** Permission bits including setuid/setgid/sticky (mode & 0o7777). */
  mode: number;
  uid: number;
  gid: number;
  size: number;
  /** Seconds since the epoch; may be fractional when a pax mtime says so. */
  mtime: number;
  linkname: string;
  devmajor: number;
  devminor: number;
  /** From pax `SCHILY.xattr.*` records; values are raw bytes. */
  xattrs: Record<string, Buffer>;
}

export interface TarEntry {
  header: TarHeader;
  /** The entry's content, streamed. Left unread, it is skipped when the next entry is requested. */
  body: Readable;
}

const BLOCK = 512;
/** Caps on metadata we must buffer: a pax header or GNU long name larger than this is hostile. */
const MAX_META = 1024 * 1024;
const BODY_CHUNK = 64 * 1024;

// ---------------------------------------------------------------------------------------------
// Encoding helpers

function readString(buf: Buffer, off: number, len: number): string {
  const end = buf.indexOf(0, off);
  const stop = end < 0 || end > off + len ? off + len : end;
  return buf.toString('utf8', off, stop);
}

/** Octal with NUL/space padding, or GNU base-256 when the high bit of the first byte is set. */
function readNumber(buf: Buffer, off: number, len: number, field: string): number {
  const first = buf[off] ?? 0;
  if (first & 0x80) {
    // base-256, big-endian; the first byte's top bit is only the marker (0xff means negative).
    if (first === 0xff) throw new ArchwayError('FORMAT', `tar header: negative ${field}`);
    let v = first & 0x7f;
    for (let i = 1; i < len; i++) {
      v = v * 256 + (buf[off + i] ?? 0);
      if (v > Number.MAX_SAFE_INTEGER) throw new ArchwayError('FORMAT', `tar header: ${field} too large`);
    }
    return v;
  }
  const s = buf.toString('latin1', off, off + len).replace(/[\0 ]+$/g, '').replace(/^[ ]+/, '');
  if (s === '') return 0;
  if (!/^[0-7]+$/.test(s)) throw new ArchwayError('FORMAT', `tar header: bad ${field} field "${s}"`);
  return parseInt(s, 8);
}

function checksum(block: Buffer): number {
  let sum = 0;
  for (let i = 0; i < BLOCK; i++) sum += i >= 148 && i < 156 ? 32 : (block[i] ?? 0);
  return sum;
}

function isZeroBlock(b: Buffer): boolean {
  for (let i = 0; i < BLOCK; i++) if (b[i] !== 0) return false;
  return true;
}

/** Parses `len key=value\n` records; values stay bytes because xattr values are binary. */
export function parsePax(data: Buffer): Map<string, Buffer> {
  const out = new Map<string, Buffer>();
  let pos = 0;
  while (pos < data.length) {
    if (data[pos] === 0) break; // some writers pad with NULs
    const sp = data.indexOf(0x20, pos);
    if (sp < 0) throw new ArchwayError('FORMAT', 'tar: malformed pax record (no length)');
    const lenText = data.toString('latin1', pos, sp);
    if (!/^[0-9]+$/.test(lenText)) throw new ArchwayError('FORMAT', `tar: malformed pax record length "${lenText}"`);
    const len = parseInt(lenText, 10);
    if (len <= sp - pos || pos + len > data.length || data[pos + len - 1] !== 0x0a) {
      throw new ArchwayError('FORMAT', 'tar: malformed pax record');
    }
    const rec = data.subarray(sp + 1, pos + len - 1);
    const eq = rec.indexOf(0x3d);
    if (eq < 0) throw new ArchwayError('FORMAT', 'tar: malformed pax record (no "=")');
    out.set(rec.toString('utf8', 0, eq), Buffer.from(rec.subarray(eq + 1)));
    pos += len;
  }
  return out;
}

function typeOf(flag: string, name: string): EntryType | 'meta' | undefined {
  switch (flag) {
    case '0':
    case '\0':
    case '7':
      // Pre-POSIX archives mark directories only with a trailing slash.
      return name.endsWith('/') ? 'dir' : 'file';
    case '1':
      return 'hardlink';
    case '2':
      return 'symlink';
    case '3':
      return 'char';
    case '4':
      return 'block';
    case '5':
      return 'dir';
    case '6':
      return 'fifo';
    default:
      return undefined;
  }
}

// ---------------------------------------------------------------------------------------------
// Reading

/**
 * Pulls exact byte counts out of an async chunk source. Works on the current chunk in place
 * (subarrays, no copy) and only assembles a new buffer when a read spans chunks.
 */
class ByteSource {
  private buf: Buffer = Buffer.alloc(0);
  private off = 0;
  private done = false;
  constructor(private readonly it: AsyncIterator<Buffer | string>) {}

  private get left(): number {
    return this.buf.length - this.off;
  }

  /** Replaces the (used up) current chunk with the next one; false at end of input. */
  private async fill(): Promise<boolean> {
    if (this.done) return false;
    const r = await this.it.next();
    if (r.done) {
      this.done = true;
      return false;
    }
    this.buf = typeof r.value === 'string' ? Buffer.from(r.value) : r.value;
    this.off = 0;
    return true;
  }

  /** Exactly n bytes, or fewer only at end of input. */
  async read(n: number): Promise<Buffer> {
    if (this.left >= n) {
      const out = this.buf.subarray(this.off, this.off + n);
      this.off += n;
      return out;
    }
    const parts: Buffer[] = [];
    let got = 0;
    while (got < n) {
      if (this.left === 0 && !(await this.fill())) break;
      const take = Math.min(n - got, this.left);
      parts.push(this.buf.subarray(this.off, this.off + take));
      this.off += take;
      got += take;
    }
    return parts.length === 1 ? (parts[0] as Buffer) : Buffer.concat(parts, got);
  }

  /** Between 1 and max bytes, or empty at end of input. */
  async readSome(max: number): Promise<Buffer> {
    while (this.left === 0) if (!(await this.fill())) return Buffer.alloc(0);
    const take = Math.min(max, this.left);
    const out = this.buf.subarray(this.off, this.off + take);
    this.off += take;
    return out;
  }

  /** Skips up to n bytes; returns how many were skipped (fewer only at end of input). */
  async skip(n: number): Promise<number> {
    let left = n;
    while (left > 0) {
      while (this.left === 0) if (!(await this.fill())) return n - left;
      const take = Math.min(left, this.left);
      this.off += take;
      left -= take;
    }
    return n;
  }

  async drain(): Promise<void> {
    this.off = this.buf.length;
    while (await this.fill()) this.off = this.buf.length;
  }
}

/** Serializes reads from the source between the entry body and the iterator. */
class Mutex {
  private tail: Promise<unknown> = Promise.resolve();
  run<T>(fn: () => Promise<T>): Promise<T> {
    const p = this.tail.then(fn, fn);
    this.tail = p.catch(() => undefined);
    return p;
  }
}

export interface ReadTarOptions {
  signal?: AbortSignal;
  /** Called with each header before its body is read, so callers can refuse a huge size early. */
  onHeader?: (h: TarHeader) => void;
}

/**
 * The tar parser as a pull interface: `next()` gives the next header (skipping whatever is left
 * of the previous body), `read()` gives the current body in chunks. Calls must not overlap.
 * Used directly by applyLayer (no stream per entry); `readTar` wraps it for everyone else.
 */
export class TarReader {
  private readonly src: ByteSource;
  private globalPax = new Map<string, Buffer>();
  private remaining = 0;
  private bodySize = 0;
  private name = '';
  private ended = false;

  constructor(
    private readonly input: Readable,
    private readonly opts: ReadTarOptions = {},
  ) {
    this.src = new ByteSource(input[Symbol.asyncIterator]() as AsyncIterator<Buffer | string>);
  }

  /**
   * The next entry's header, or undefined after the end-of-archive blocks. Reads the input to its
   * very end then, so that a hash taken upstream covers every byte.
   */
  async next(): Promise<TarHeader | undefined> {
    if (this.ended) return undefined;
    await this.finishBody();
    let pax: Map<string, Buffer> | undefined;
    let longName: string | undefined;
    let longLink: string | undefined;
    for (;;) {
      throwIfAborted(this.opts.signal, 'reading tar');
      const block = await this.src.read(BLOCK);
      // EOF without end-of-archive blocks is tolerated, as GNU tar does.
      if (block.length === 0 || (block.length === BLOCK && isZeroBlock(block))) {
        this.ended = true;
        await this.src.drain();
        return undefined;
      }
      if (block.length < BLOCK) throw new ArchwayError('FORMAT', 'tar: truncated header');
      const stored = readNumber(block, 148, 8, 'checksum');
      if (stored !== checksum(block)) throw new ArchwayError('FORMAT', `tar: header checksum mismatch for "${readString(block, 0, 100)}"`);

      const flag = String.fromCharCode(block[156] ?? 0);
      const magic = block.toString('latin1', 257, 263);
      let name = readString(block, 0, 100);
      if (magic === 'ustar\0') {
        // POSIX prefix; GNU's "ustar  " magic uses those bytes for atime/ctime instead.
        const prefix = readString(block, 345, 155);
        if (prefix !== '') name = `${prefix}/${name}`;
      }
      const size = readNumber(block, 124, 12, 'size');

      if (flag === 'x' || flag === 'g' || flag === 'L' || flag === 'K') {
        if (size > MAX_META) throw new ArchwayError('UNSAFE', `tar: metadata entry of ${size} bytes for "${name}" exceeds ${MAX_META}`);
        const data = await this.src.read(size);
        if (data.length < size) throw new ArchwayError('FORMAT', 'tar: truncated metadata entry');
        await this.src.skip(padding(size));
        if (flag === 'x') pax = parsePax(data);
        else if (flag === 'g') this.globalPax = new Map([...this.globalPax, ...parsePax(data)]);
        else {
          const nul = data.indexOf(0);
          const text = data.toString('utf8', 0, nul < 0 ? data.length : nul);
          if (flag === 'L') longName = text;
          else longLink = text;
        }
        continue;
      }

      const type = typeOf(flag, name);
      if (type === undefined || type === 'meta') {
        throw new ArchwayError('FORMAT', `tar entry "${name}": unsupported type flag ${JSON.stringify(flag)}`);
      }
      const h: TarHeader = {
        name,
        type,
        mode: readNumber(block, 100, 8, 'mode') & 0o7777,
        uid: readNumber(block, 108, 8, 'uid'),
        gid: readNumber(block, 116, 8, 'gid'),
        size,
        mtime: readNumber(block, 136, 12, 'mtime'),
        linkname: readString(block, 157, 100),
        devmajor: readNumber(block, 329, 8, 'devmajor'),
        devminor: readNumber(block, 337, 8, 'devminor'),
        xattrs: {},
      };
      if (longName !== undefined) h.name = longName;
      if (longLink !== undefined) h.linkname = longLink;
      const merged = pax === undefined ? this.globalPax : new Map([...this.globalPax, ...pax]);
      for (const [k, v] of merged) {
        const s = (): string => v.toString('utf8');
        const num = (): number => {
          const t = s();
          if (!/^-?[0-9]+(\.[0-9]+)?$/.test(t)) throw new ArchwayError('FORMAT', `tar entry "${h.name}": bad pax ${k} "${t}"`);
          return Number(t);
        };
        if (k === 'path') h.name = s();
        else if (k === 'linkpath') h.linkname = s();
        else if (k === 'size') h.size = num();
        else if (k === 'uid') h.uid = num();
        else if (k === 'gid') h.gid = num();
        else if (k === 'mtime') h.mtime = num();
        else if (k.startsWith('SCHILY.xattr.')) h.xattrs[k.slice('SCHILY.xattr.'.length)] = v;
      }
      if (h.type === 'dir' && h.name.length > 1) h.name = h.name.replace(/\/+$/, '');
      // Links, dirs and devices carry no data even when a size is written (hardlinks in some writers).
      if (h.type !== 'file') h.size = h.type === 'hardlink' ? h.size : 0;
      if (!Number.isSafeInteger(h.size) || h.size < 0) throw new ArchwayError('FORMAT', `tar entry "${h.name}": bad size`);
      this.opts.onHeader?.(h);
      this.name = h.name;
      this.remaining = h.size;
      this.bodySize = h.size;
      return h;
    }
  }

  /**
   * Up to `max` bytes of the current entry's body (a view into the source's chunk, not a copy), or
   * null at its end. A body cut short by the end of input is a FORMAT error.
   */
  async read(max = BODY_CHUNK): Promise<Buffer | null> {
    if (this.remaining === 0) return null;
    const b = await this.src.readSome(Math.min(this.remaining, max));
    if (b.length === 0) {
      this.remaining = 0;
      throw this.truncated();
    }
    this.remaining -= b.length;
    return b;
  }

  /** Skips the rest of the current body and its padding. */
  private async finishBody(): Promise<void> {
    if (this.remaining > 0) {
      const want = this.remaining;
      this.remaining = 0;
      if ((await this.src.skip(want)) < want) throw this.truncated();
    }
    await this.src.skip(padding(this.bodySize));
    this.bodySize = 0;
  }

  private truncated(): ArchwayError {
    return new ArchwayError('FORMAT', `tar entry "${this.name}": truncated body`);
  }

  /** Releases the input when it was not read to its end (an error, or the caller stopped). */
  close(): void {
    if (!this.input.destroyed && !this.input.readableEnded) this.input.destroy();
  }
}

/**
 * Iterates the entries of an uncompressed tar stream. Reads the input to its very end (past the
 * end-of-archive blocks) so that a hash taken upstream covers every byte.
 */
export async function* readTar(input: Readable, opts: ReadTarOptions = {}): AsyncGenerator<TarEntry> {
  const reader = new TarReader(input, opts);
  const lock = new Mutex();
  try {
    for (;;) {
      const h = await lock.run(() => reader.next());
      if (h === undefined) return;
      const body = new Readable({
        highWaterMark: BODY_CHUNK,
        read(): void {
          lock.run(() => reader.read()).then(
            (b) => this.push(b),
            (e: unknown) => this.destroy(e instanceof Error ? e : new Error(String(e))),
          );
        },
      });
      yield { header: h, body };
      // The consumer moved on: whatever it left unread is skipped by the next `next()`.
      if (!body.readableEnded && !body.destroyed) body.destroy();
    }
  } finally {
    reader.close();
  }
}

// ---------------------------------------------------------------------------------------------
// Writing

function writeString(buf: Buffer, off: number, len: number, s: string): boolean {
  const b = Buffer.from(s, 'utf8');
  if (b.length > len) return false;
  b.copy(buf, off);
  return true;
}

function writeOctal(buf: Buffer, off: number, len: number, v: number): boolean {
  const s = Math.floor(v).toString(8);
  if (v < 0 || s.length > len - 1) return false;
  buf.write(s.padStart(len - 1, '0') + '\0', off, 'latin1');
  return true;
}

export function paxRecord(key: string, value: Buffer): Buffer {
  const kv = Buffer.concat([Buffer.from(` ${key}=`, 'utf8'), value, Buffer.from('\n')]);
  let len = kv.length + 1;
  while (String(len).length + kv.length !== len) len = String(len).length + kv.length;
  return Buffer.concat([Buffer.from(String(len), 'latin1'), kv]);
}

const TYPE_FLAG: Record<EntryType, string> = {
  file: '0',
  hardlink: '1',
  symlink: '2',
  char: '3',
  block: '4',
  dir: '5',
  fifo: '6',
};

function splitUstarName(name: string): { prefix: string; name: string } | undefined {
  if (Buffer.byteLength(name) <= 100) return { prefix: '', name };
  // Split at a slash so that prefix ≤ 155 bytes and name ≤ 100 bytes.
  for (let i = name.length - 1; i > 0; i--) {
    if (name[i] !== '/') continue;
    const p = name.slice(0, i);
    const n = name.slice(i + 1);
    if (Buffer.byteLength(p) <= 155 && Buffer.byteLength(n) <= 100 && n !== '') return { prefix: p, name: n };
    if (Buffer.byteLength(n) > 100) break;
  }
  return undefined;
}

function rawHeader(h: TarHeader, name: string, prefix: string, size: number, flag: string, linkname: string): Buffer {
  const b = Buffer.alloc(BLOCK);
  writeString(b, 0, 100, name);
  writeOctal(b, 100, 8, h.mode & 0o7777);
  if (!writeOctal(b, 108, 8, h.uid)) writeOctal(b, 108, 8, 0);
  if (!writeOctal(b, 116, 8, h.gid)) writeOctal(b, 116, 8, 0);
  if (!writeOctal(b, 124, 12, size)) writeOctal(b, 124, 12, 0);
  if (!writeOctal(b, 136, 12, Math.max(0, h.mtime))) writeOctal(b, 136, 12, 0);
  b.write(flag, 156, 'latin1');
  writeString(b, 157, 100, linkname);
  b.write('ustar\0' + '00', 257, 'latin1');
  if (h.type === 'char' || h.type === 'block') {
    writeOctal(b, 329, 8, h.devmajor);
    writeOctal(b, 337, 8, h.devminor);
  }
  writeString(b, 345, 155, prefix);
  b.write(checksum(b).toString(8).padStart(6, '0') + '\0 ', 148, 'latin1');
  return b;
}

/**
 * Encodes one entry's header block(s): a pax extended header first when a field does not fit
 * ustar (long names or links, big ids or sizes, xattrs). No uname/gname, no atime/ctime, so the
 * bytes depend only on the header's values.
 */
export function encodeHeader(h: TarHeader): Buffer {
  const fullName = h.type === 'dir' ? (h.name.endsWith('/') ? h.name : `${h.name}/`) : h.name;
  const size = h.type === 'file' ? h.size : 0;
  const records: Buffer[] = [];
  let split = splitUstarName(fullName);
  if (split === undefined) {
    records.push(paxRecord('path', Buffer.from(fullName, 'utf8')));
    split = { prefix: '', name: truncateBytes(fullName, 100) };
  }
  let linkname = h.linkname;
  if (Buffer.byteLength(linkname) > 100) {
    records.push(paxRecord('linkpath', Buffer.from(linkname, 'utf8')));
    linkname = truncateBytes(linkname, 100);
  }
  if (h.uid > 0o7777777) records.push(paxRecord('uid', Buffer.from(String(h.uid))));
  if (h.gid > 0o7777777) records.push(paxRecord('gid', Buffer.from(String(h.gid))));
  if (size > 0o77777777777) records.push(paxRecord('size', Buffer.from(String(size))));
  if (!Number.isInteger(h.mtime) || h.mtime > 0o77777777777 || h.mtime < 0) {
    records.push(paxRecord('mtime', Buffer.from(String(h.mtime))));
  }
  for (const k of Object.keys(h.xattrs).sort()) {
    const v = h.xattrs[k];
    if (v !== undefined) records.push(paxRecord(`SCHILY.xattr.${k}`, v));
  }
  const main = rawHeader(h, split.name, split.prefix, size, TYPE_FLAG[h.type], linkname);
  if (records.length === 0) return main;
  const data = Buffer.concat(records);
  const paxName = truncateBytes(`PaxHeaders/${fullName.replace(/\/$/, '').split('/').pop() ?? ''}`, 100);
  const paxHdr = rawHeader(
    { ...h, type: 'file', mode: 0o644, uid: 0, gid: 0, mtime: 0, xattrs: {} },
    paxName,
    '',
    data.length,
    'x',
    '',
  );
  return Buffer.concat([paxHdr, data, Buffer.alloc(padding(data.length)), main]);
}

function truncateBytes(s: string, max: number): string {
  const b = Buffer.from(s, 'utf8');
  if (b.length <= max) return s;
  return b.subarray(0, max).toString('utf8').replace(/\uFFFD+$/, '');
}

export function padding(size: number): number {
  return (BLOCK - (size % BLOCK)) % BLOCK;
}

/** Two zero blocks end an archive. */
export const END_OF_ARCHIVE: Buffer = Buffer.alloc(BLOCK * 2);

/** A full header for tests and writers: defaults for everything not given. */
export function tarHeader(partial: Partial<TarHeader> & { name: string }): TarHeader {
  return {
    type: 'file',
    mode: partial.type === 'dir' ? 0o755 : 0o644,
    uid: 0,
    gid: 0,
    size: 0,
    mtime: 0,
    linkname: '',
    devmajor: 0,
    devminor: 0,
    xattrs: {},
    ...partial,
  };
}

/** Builds a whole tar in memory. For tests and tiny layers; real layers stream (see write.ts). */
export function buildTar(entries: ReadonlyArray<{ header: Partial<TarHeader> & { name: string }; data?: Buffer | string }>): Buffer {
  const parts: Buffer[] = [];
  for (const e of entries) {
    const data = e.data === undefined ? Buffer.alloc(0) : Buffer.from(e.data);
    const h = tarHeader({ ...e.header, size: e.header.size ?? data.length });
    parts.push(encodeHeader(h));
    if (h.type === 'file') {
      parts.push(data, Buffer.alloc(padding(data.length)));
    }
  }
  parts.push(END_OF_ARCHIVE);
  return Buffer.concat(parts);
}

/** A raw ustar header block with arbitrary bytes in the name fields (hostile tests). */
export function rawTarBlock(fields: { name: string; flag: string; size?: number; linkname?: string; mode?: number; prefix?: string }): Buffer {
  const h = tarHeader({ name: fields.name, mode: fields.mode ?? 0o644 });
  return rawHeader(h, fields.name, fields.prefix ?? '', fields.size ?? 0, fields.flag, fields.linkname ?? '');
}
