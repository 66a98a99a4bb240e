import { createReadStream } from 'node:fs';
import { mkdir, open, readdir, readFile, rename, stat, unlink, utimes } from 'node:fs/promises';
import { join, resolve as resolvePath } from 'node:path';
import { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import {
  Annotation,
  digestAlgorithm,
  digestHex,
  encodeJson,
  isDigest,
  isIndexMediaType,
  MediaType,
  parseConfig,
  parseDigest,
  parseIndex,
  parseManifestOrIndex,
  verifier,
  verifyBytes,
  type Descriptor,
  type Digest,
  type ImageIndex,
} from '../oci/index.js';
import { abortError, ArchwayError, isErrnoException, LIMITS, throwIfAborted, verifiedStream } from '../util/index.js';
import type { CallOptions, ContentTarget } from '../image/index.js';
import { activeTemps, createFileExclusive, fsyncDir, pathExists, readSmallFile, storageError, tempName, withLock, writeFileAtomic, type LockOptions, type SignalOptions } from './fsutil.js';

export const OCI_LAYOUT_FILE = 'oci-layout';
export const OCI_LAYOUT_VERSION = '1.0.0';
/** Temp files of this layout's writers: inside the layout, so a rename never crosses filesystems. */
export const LAYOUT_TMP_DIR = '.archway-tmp';
const INDEX_LIMIT = 64 * 1024 * 1024;

export interface OpenLayoutOptions extends SignalOptions {
  create?: boolean;
  /** Name for messages; default `oci:DIR`. */
  name?: string;
  /** How long `tag` waits for another writer's lock. */
  lockTimeoutMs?: number;
}

export interface TaggedEntry {
  /** The `org.opencontainers.image.ref.name` annotation. */
  name: string;
  descriptor: Descriptor;
}

/** What a walk found: every blob reachable from the roots, and the diffIDs of reachable image configs. */
export interface Reachability {
  blobs: Map<Digest, number>;
  diffIDs: Set<Digest>;
  /** Blobs named by a manifest or index but absent from the layout. */
  missing: Set<Digest>;
}

function emptyIndex(): ImageIndex {
  return { schemaVersion: 2, mediaType: MediaType.OciIndex, manifests: [] };
}

/**
 * An OCI image layout directory (`oci-layout`, `index.json`, `blobs/<alg>/<hex>`). Blobs become
 * visible only complete and verified (temp file, hash while writing, fsync, rename); `index.json`
 * changes under a lock file and is replaced atomically. Every read is verified against its digest.
 */
export class OciLayout implements ContentTarget {
  readonly name: string;
  readonly dir: string;
  private readonly lockTimeoutMs: number;

  private constructor(dir: string, name: string, lockTimeoutMs: number) {
    this.dir = dir;
    this.name = name;
    this.lockTimeoutMs = lockTimeoutMs;
  }

  static async open(dir: string, opts: OpenLayoutOptions = {}): Promise<OciLayout> {
    throwIfAborted(opts.signal);
    const abs = resolvePath(dir);
    const layout = new OciLayout(abs, opts.name ?? `oci:${dir}`, opts.lockTimeoutMs ?? 30_000);
    const layoutFile = join(abs, OCI_LAYOUT_FILE);
    try {
      // An existing layout is only read: creating writes and syncs two files, which every command
      // that opens the store would otherwise pay for.
      if (opts.create) await mkdir(layout.tmpDir, { recursive: true });
      if (opts.create && !(await pathExists(join(abs, 'index.json')))) {
        await mkdir(join(abs, 'blobs'), { recursive: true });
        await createFileExclusive(layoutFile, encodeJson({ imageLayoutVersion: OCI_LAYOUT_VERSION }), layout.tmpDir);
        await createFileExclusive(join(abs, 'index.json'), encodeJson(emptyIndex()), layout.tmpDir);
      }
      let raw: string;
      try {
        raw = await readFile(layoutFile, 'utf8');
      } catch (e) {
        if (isErrnoException(e, 'ENOENT') || isErrnoException(e, 'ENOTDIR')) {
          throw new ArchwayError('NOT_FOUND', `${layout.name}: not an OCI image layout (no ${OCI_LAYOUT_FILE} file)`, { hint: 'check the path, or write an image there first' });
        }
        throw e;
      }
      let version: unknown;
      try {
        version = (JSON.parse(raw) as { imageLayoutVersion?: unknown }).imageLayoutVersion;
      } catch {
        version = undefined;
      }
      if (version !== OCI_LAYOUT_VERSION) throw new ArchwayError('FORMAT', `${layout.name}: unsupported ${OCI_LAYOUT_FILE} (imageLayoutVersion ${JSON.stringify(version)}, expected "1.0.0")`);
    } catch (e) {
      if (e instanceof ArchwayError) throw e;
      throw storageError(`${layout.name}: cannot open`, e);
    }
    return layout;
  }

  get tmpDir(): string {
    return join(this.dir, LAYOUT_TMP_DIR);
  }

  get indexPath(): string {
    return join(this.dir, 'index.json');
  }

  /** The path of a blob; the digest's grammar is checked first, so it can never name another path. */
  blobPath(digest: string): string {
    const d = parseDigest(digest, `${this.name}: blob digest`);
    return join(this.dir, 'blobs', digestAlgorithm(d), digestHex(d));
  }

  async fetch(desc: Descriptor, opts: CallOptions = {}): Promise<Readable> {
    throwIfAborted(opts.signal);
    const path = this.blobPath(desc.digest);
    let h;
    try {
      h = await open(path, 'r');
    } catch (e) {
      if (isErrnoException(e, 'ENOENT')) throw new ArchwayError('NOT_FOUND', `${this.name}: blob ${desc.digest} not found`, { details: { digest: desc.digest } });
      throw storageError(`${this.name}: cannot read blob ${desc.digest}`, e);
    }
    const raw = h.createReadStream({ autoClose: true });
    // Joined so that a corrupt blob fails the stream its consumer reads (never an uncaught 'error').
    return verifiedStream(raw, verifier(desc.digest, desc.size, `${this.name}@${desc.digest}`), { signal: opts.signal, what: `${this.name}@${desc.digest}` });
  }

  /**
   * A small blob's bytes, verified. Read synchronously: a manifest or config is a few KiB, and
   * one blocking read costs a tenth of the thread-pool round trips of an async open, stat, read
   * and close (a cached build reads dozens of them before its first step).
   */
  async readSmall(desc: Descriptor, limit: number, opts: CallOptions = {}): Promise<Buffer> {
    throwIfAborted(opts.signal);
    const what = `${this.name}@${desc.digest}`;
    if (desc.size > limit) throw new ArchwayError('INTEGRITY', `${what}: ${desc.size} bytes is over the ${limit}-byte limit`);
    const data = readSmallFile(this.blobPath(desc.digest), limit, what);
    if (!data) throw new ArchwayError('NOT_FOUND', `${this.name}: blob ${desc.digest} not found`, { details: { digest: desc.digest } });
    verifyBytes(data, parseDigest(desc.digest), desc.size, what);
    return data;
  }

  async exists(desc: Descriptor, opts: CallOptions = {}): Promise<boolean> {
    throwIfAborted(opts.signal);
    try {
      const st = await stat(this.blobPath(desc.digest));
      return st.isFile() && st.size === desc.size;
    } catch (e) {
      if (isErrnoException(e, 'ENOENT')) return false;
      throw storageError(`${this.name}: cannot stat blob ${desc.digest}`, e);
    }
  }

  async push(desc: Descriptor, content: Readable | Buffer, opts: CallOptions = {}): Promise<void> {
    const what = `${this.name}@${desc.digest}`;
    const final = this.blobPath(desc.digest);
    if (!Number.isSafeInteger(desc.size) || desc.size < 0) throw new ArchwayError('FORMAT', `${what}: invalid size ${desc.size}`);
    throwIfAborted(opts.signal);
    if (await this.exists(desc, opts)) {
      // Already here: drain the caller's stream so its producer finishes, and refresh the mtime so a
      // concurrent prune's grace period sees the blob as in use.
      if (!Buffer.isBuffer(content)) await pipeline(content, new Writable({ write: (_c, _e, cb) => cb() }), { signal: opts.signal ?? new AbortController().signal });
      const now = new Date();
      await utimes(final, now, now).catch(() => undefined);
      opts.progress?.emit({ kind: 'blob', phase: 'skip', digest: desc.digest, size: desc.size });
      return;
    }
    opts.progress?.emit({ kind: 'blob', phase: 'start', digest: desc.digest, size: desc.size });
    await mkdir(this.tmpDir, { recursive: true }).catch((e: unknown) => {
      throw storageError(`${this.name}: cannot create ${this.tmpDir}`, e);
    });
    const tmp = join(this.tmpDir, tempName('blob'));
    activeTemps.add(tmp);
    let h;
    try {
      h = await open(tmp, 'wx', 0o644);
    } catch (e) {
      activeTemps.delete(tmp);
      throw storageError(`${this.name}: cannot create a temp file`, e);
    }
    try {
      const source = Buffer.isBuffer(content) ? Readable.from([content]) : content;
      const fh = h;
      // One pipeline from the source through the verifier into the file: a failure of any of them
      // (a source that failed before this was called, a digest mismatch, a write error, the
      // signal) rejects here, and the file is never renamed into place.
      await pipeline(
        source,
        verifier(desc.digest, desc.size, what),
        async (chunks: AsyncIterable<Buffer>) => {
          for await (const buf of chunks) {
            let off = 0;
            while (off < buf.length) off += (await fh.write(buf, off, buf.length - off)).bytesWritten;
          }
        },
        ...(opts.signal ? [{ signal: opts.signal }] : []),
      );
      await h.sync();
      await h.close();
      h = undefined;
      await mkdir(join(this.dir, 'blobs', digestAlgorithm(desc.digest)), { recursive: true });
      await rename(tmp, final);
      await fsyncDir(join(this.dir, 'blobs', digestAlgorithm(desc.digest)));
    } catch (e) {
      await h?.close().catch(() => undefined);
      await unlink(tmp).catch(() => undefined);
      if (e instanceof ArchwayError) throw e;
      if (opts.signal?.aborted) throw abortError(opts.signal, `${what}: write`);
      throw storageError(`${what}: cannot write blob`, e);
    } finally {
      activeTemps.delete(tmp);
    }
    opts.progress?.emit({ kind: 'blob', phase: 'done', digest: desc.digest, size: desc.size });
  }

  /**
   * Moves a file this process wrote, and whose digest it computed while writing, into the blobs
   * (a rename instead of a second read, hash and write of a layer). The size is checked; a file on
   * another filesystem is copied through push(), which verifies the digest.
   */
  async adoptFile(desc: Descriptor, file: string, opts: CallOptions = {}): Promise<void> {
    const what = `${this.name}@${desc.digest}`;
    throwIfAborted(opts.signal);
    try {
      if (await this.exists(desc, opts)) {
        opts.progress?.emit({ kind: 'blob', phase: 'skip', digest: desc.digest, size: desc.size });
        return;
      }
      const h = await open(file, 'r+');
      try {
        const { size } = await h.stat();
        if (size !== desc.size) throw new ArchwayError('INTEGRITY', `${what}: ${file} has ${size} bytes, expected ${desc.size}`);
        await h.sync();
      } finally {
        await h.close();
      }
      const dir = join(this.dir, 'blobs', digestAlgorithm(desc.digest));
      await mkdir(dir, { recursive: true });
      try {
        await rename(file, this.blobPath(desc.digest));
      } catch (e) {
        if (!isErrnoException(e, 'EXDEV')) throw e;
        await this.push(desc, createReadStream(file), opts);
        return;
      }
      await fsyncDir(dir);
    } catch (e) {
      if (e instanceof ArchwayError) throw e;
      throw storageError(`${what}: cannot store ${file}`, e);
    }
    opts.progress?.emit({ kind: 'blob', phase: 'done', digest: desc.digest, size: desc.size });
  }

  /** Reads and validates index.json. */
  async readIndex(opts: SignalOptions = {}): Promise<ImageIndex> {
    throwIfAborted(opts.signal);
    const raw = readSmallFile(this.indexPath, INDEX_LIMIT, `${this.name}/index.json`);
    if (!raw) return emptyIndex();
    return parseIndex(raw, MediaType.OciIndex, `${this.name}/index.json`).value;
  }

  /** Every entry of index.json that carries a ref.name annotation. */
  async list(opts: SignalOptions = {}): Promise<TaggedEntry[]> {
    const index = await this.readIndex(opts);
    const out: TaggedEntry[] = [];
    for (const d of index.manifests) {
      const name = d.annotations?.[Annotation.RefName];
      if (name !== undefined) out.push({ name, descriptor: d });
    }
    return out;
  }

  /**
   * A descriptor for a name (`org.opencontainers.image.ref.name`) or a digest. An empty reference
   * picks the only entry of index.json, as skopeo does for `oci:DIR`.
   */
  async resolve(reference: string, opts: CallOptions = {}): Promise<Descriptor> {
    const index = await this.readIndex(opts);
    if (reference === '') {
      if (index.manifests.length === 1) return index.manifests[0] as Descriptor;
      throw new ArchwayError('NOT_FOUND', `${this.name}: no reference given and index.json holds ${index.manifests.length} images`, { hint: 'add :TAG to the location' });
    }
    const digestPart = reference.includes('@') ? reference.slice(reference.lastIndexOf('@') + 1) : reference;
    if (isDigest(digestPart)) {
      const entry = index.manifests.find((d) => d.digest === digestPart);
      if (entry) return entry;
      return this.describeBlob(digestPart, opts);
    }
    let found: Descriptor | undefined;
    for (const d of index.manifests) if (d.annotations?.[Annotation.RefName] === reference) found = d;
    if (!found) throw new ArchwayError('NOT_FOUND', `${this.name}: no image named "${reference}"`, { details: { reference } });
    return found;
  }

  /** A descriptor for a manifest or index that is present as a blob (media type read from the document). */
  async describeBlob(digest: Digest, opts: CallOptions = {}): Promise<Descriptor> {
    let size: number;
    try {
      size = (await stat(this.blobPath(digest))).size;
    } catch (e) {
      if (isErrnoException(e, 'ENOENT')) throw new ArchwayError('NOT_FOUND', `${this.name}: no manifest ${digest}`, { details: { digest } });
      throw storageError(`${this.name}: cannot stat ${digest}`, e);
    }
    if (size > LIMITS.manifest) throw new ArchwayError('FORMAT', `${this.name}@${digest}: ${size} bytes is too large for a manifest`);
    const raw = await this.readSmall({ mediaType: 'application/octet-stream', digest, size }, LIMITS.manifest, opts);
    const parsed = parseManifestOrIndex(raw, undefined, `${this.name}@${digest}`);
    return { mediaType: parsed.mediaType, digest, size };
  }

  private lockOptions(opts: SignalOptions): LockOptions {
    return { timeoutMs: this.lockTimeoutMs, ...(opts.signal ? { signal: opts.signal } : {}) };
  }

  /** Runs `fn` holding the layout's index lock (for GC and for read-modify-write of index.json). */
  async withIndexLock<T>(fn: () => Promise<T>, opts: SignalOptions & { timeoutMs?: number } = {}): Promise<T> {
    return withLock(join(this.dir, 'index.json.lock'), fn, { ...this.lockOptions(opts), ...(opts.timeoutMs !== undefined ? { timeoutMs: opts.timeoutMs } : {}) });
  }

  private async updateIndex(change: (index: ImageIndex) => boolean, opts: SignalOptions): Promise<boolean> {
    return this.withIndexLock(async () => {
      const index = await this.readIndex(opts);
      if (!change(index)) return false;
      throwIfAborted(opts.signal);
      const out: ImageIndex = { schemaVersion: 2, mediaType: MediaType.OciIndex, manifests: index.manifests };
      if (index.annotations) out.annotations = index.annotations;
      try {
        await writeFileAtomic(this.indexPath, encodeJson(out), this.tmpDir);
      } catch (e) {
        throw storageError(`${this.name}: cannot write index.json`, e);
      }
      return true;
    }, opts);
  }

  /**
   * Points `name` at a manifest or index. The document must already be present (tags are written
   * last); an earlier entry with the same name is replaced.
   */
  async tag(desc: Descriptor, name: string, opts: CallOptions = {}): Promise<void> {
    if (name === '') throw new ArchwayError('USAGE', `${this.name}: empty tag`);
    parseDigest(desc.digest);
    if (!(await this.exists(desc, opts))) {
      throw new ArchwayError('NOT_FOUND', `${this.name}: cannot tag ${desc.digest} as "${name}": the manifest is not in the layout`, { hint: 'push the manifest (and its blobs) before tagging' });
    }
    const entry: Descriptor = { mediaType: desc.mediaType, digest: desc.digest, size: desc.size };
    if (desc.platform) entry.platform = desc.platform;
    if (desc.artifactType) entry.artifactType = desc.artifactType;
    entry.annotations = { ...(desc.annotations ?? {}), [Annotation.RefName]: name };
    await this.updateIndex((index) => {
      const old = index.manifests.filter((d) => d.annotations?.[Annotation.RefName] === name);
      // Already so (an unchanged rebuild): index.json is not rewritten.
      if (old.length === 1 && JSON.stringify(old[0]) === JSON.stringify(entry)) return false;
      index.manifests = index.manifests.filter((d) => d.annotations?.[Annotation.RefName] !== name);
      index.manifests.push(entry);
      return true;
    }, opts);
    opts.progress?.emit({ kind: 'tag', reference: name, digest: desc.digest });
  }

  /** Removes the entry named `name`; resolves whether there was one. Blobs stay until a GC. */
  async untag(name: string, opts: SignalOptions = {}): Promise<boolean> {
    return this.updateIndex((index) => {
      const before = index.manifests.length;
      index.manifests = index.manifests.filter((d) => d.annotations?.[Annotation.RefName] !== name);
      return index.manifests.length !== before;
    }, opts);
  }

  /** Adds an untagged entry to index.json (skopeo keeps digests-only images this way). */
  async addIndexEntry(desc: Descriptor, opts: SignalOptions = {}): Promise<void> {
    await this.updateIndex((index) => {
      if (index.manifests.some((d) => d.digest === desc.digest && d.annotations?.[Annotation.RefName] === undefined)) return false;
      index.manifests.push(desc);
      return true;
    }, opts);
  }

  /** Every blob file present: digest and size. Files whose names are not digests are skipped. */
  async listBlobs(opts: SignalOptions = {}): Promise<Array<{ digest: Digest; size: number; mtimeMs: number }>> {
    const out: Array<{ digest: Digest; size: number; mtimeMs: number }> = [];
    for (const alg of ['sha256', 'sha512']) {
      let names: string[];
      try {
        names = await readdir(join(this.dir, 'blobs', alg));
      } catch (e) {
        if (isErrnoException(e, 'ENOENT')) continue;
        throw storageError(`${this.name}: cannot list blobs`, e);
      }
      for (const hex of names) {
        throwIfAborted(opts.signal);
        const d = `${alg}:${hex}`;
        if (!isDigest(d)) continue;
        try {
          const st = await stat(join(this.dir, 'blobs', alg, hex));
          if (st.isFile()) out.push({ digest: d, size: st.size, mtimeMs: st.mtimeMs });
        } catch {
          // removed meanwhile
        }
      }
    }
    return out;
  }

  async deleteBlob(digest: Digest): Promise<boolean> {
    try {
      await unlink(this.blobPath(digest));
      return true;
    } catch (e) {
      if (isErrnoException(e, 'ENOENT')) return false;
      throw storageError(`${this.name}: cannot remove blob ${digest}`, e);
    }
  }

  /**
   * Walks manifests and indexes from the roots: every reachable blob (manifests, configs, layers,
   * subjects) and the diffIDs of reachable configs. Absent blobs are reported, not fatal.
   */
  async reachable(roots: readonly Descriptor[], opts: SignalOptions = {}): Promise<Reachability> {
    const r: Reachability = { blobs: new Map(), diffIDs: new Set(), missing: new Set() };
    const visit = async (d: Descriptor, depth: number): Promise<void> => {
      if (!isDigest(d.digest) || r.blobs.has(d.digest) || r.missing.has(d.digest)) return;
      throwIfAborted(opts.signal);
      if (!(await pathExists(this.blobPath(d.digest)))) {
        r.missing.add(d.digest);
        return;
      }
      r.blobs.set(d.digest, d.size);
      if (depth > 8 || d.size > LIMITS.manifest) return;
      const isDoc = isIndexMediaType(d.mediaType) || d.mediaType === MediaType.OciManifest || d.mediaType === MediaType.DockerManifest || d.mediaType === 'application/octet-stream';
      if (!isDoc) return;
      let parsed;
      try {
        const raw = await this.readSmall(d, LIMITS.manifest, opts);
        parsed = parseManifestOrIndex(raw, d.mediaType === 'application/octet-stream' ? undefined : d.mediaType, `${this.name}@${d.digest}`);
      } catch {
        return; // not a document (or corrupt): keep the blob, walk no further
      }
      const v = parsed.value;
      if ('manifests' in v) {
        for (const child of v.manifests) await visit(child, depth + 1);
      } else {
        await visit(v.config, depth + 1);
        try {
          if (v.config.size <= LIMITS.config && (await pathExists(this.blobPath(v.config.digest)))) {
            const raw = await this.readSmall(v.config, LIMITS.config, opts);
            for (const id of parseConfig(raw, 'config').rootfs.diff_ids) r.diffIDs.add(id);
          }
        } catch {
          // an artifact's config is not an image config
        }
        for (const l of v.layers) if (!l.urls || l.urls.length === 0) await visit(l, depth + 1);
      }
      if (v.subject) await visit(v.subject, depth + 1);
    };
    for (const root of roots) await visit(root, 0);
    return r;
  }
}
