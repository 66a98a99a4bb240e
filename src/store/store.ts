import { createHash } from 'node:crypto';
import { homedir } from 'node:os';
import { readFileSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, readdir, rename, rm, stat, utimes } from 'node:fs/promises';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import {
  digestAlgorithm,
  digestHex,
  formatPlatform,
  isDigest,
  isIndexMediaType,
  parseDigest,
  type Descriptor,
  type Digest,
  type Platform,
} from '../oci/index.js';
import { formatReference, parseReference, withDefaultTag } from '../ref/index.js';
import { ArchwayError, isErrnoException, LIMITS, SingleFlight, throwIfAborted } from '../util/index.js';
import { isIndex, loadImage, platformManifests, readManifestOrIndex, type CallOptions, type ContentTarget } from '../image/index.js';
import { activeTemps, cleanTemps, pathExists, storageError, tempName, tempUsage, treeSize, writeFileAtomic, type SignalOptions } from './fsutil.js';
import { OciLayout, type TaggedEntry } from './layout.js';
import { Leases, type Lease, type LeaseContent } from './leases.js';

/**
 * Where the store lives: `$ARCHWAY_HOME`, else `$XDG_DATA_HOME/archway`, else `~/.local/share/archway`.
 */
export function storeHome(env: NodeJS.ProcessEnv = process.env): string {
  if (env.ARCHWAY_HOME) return env.ARCHWAY_HOME;
  if (env.XDG_DATA_HOME) return join(env.XDG_DATA_HOME, 'archway');
  return join(env.HOME || homedir(), '.local', 'share', 'archway');
}

/** The store's spelling of a name: `busybox` is `docker.io/library/busybox:latest`. */
export function normalizeImageName(name: string): string {
  return formatReference(withDefaultTag(parseReference(name)));
}

export interface StoreOptions extends SignalOptions {
  /** The store directory; default storeHome(env). */
  home?: string;
  env?: NodeJS.ProcessEnv;
  lockTimeoutMs?: number;
}

export interface ImageSummary {
  /** Full normalized reference: `docker.io/library/busybox:latest`. */
  name: string;
  digest: Digest;
  mediaType: string;
  /** `linux/amd64`, … (attestations and unknown/unknown left out). */
  platforms: string[];
  /** Bytes of the unique blobs reachable from the image (manifests, configs, layers). */
  size: number;
}

export interface PruneOptions extends SignalOptions {
  /** Report what would be removed without removing it. */
  dryRun?: boolean;
  /**
   * Blobs and snapshots changed within this many ms are kept even when unreferenced: a build that
   * pushed blobs but has not tagged yet is not robbed. Default 10 minutes; 0 prunes everything.
   */
  gracePeriodMs?: number;
  /**
   * Also drop the build cache: step records and RUN --mount=type=cache directories (those not
   * changed within the grace period), so content only the cache kept is freed in the same pass.
   */
  buildCache?: boolean;
}

export interface CountBytes {
  count: number;
  bytes: number;
}

export interface PruneResult {
  blobs: CountBytes;
  /** Build cache records and cache mounts (only with `buildCache`). */
  buildCache: CountBytes;
  snapshots: CountBytes;
  temp: CountBytes;
  totalBytes: number;
  dryRun: boolean;
}

export interface DiskUsage {
  images: number;
  blobs: CountBytes;
  snapshots: CountBytes;
  cacheRecords: CountBytes;
  temp: CountBytes;
  /** What `prune` with no grace period would free. */
  reclaimable: number;
  home: string;
}

const snapshotFlights = new SingleFlight<string>();

const LEASE_LOCK_TIMEOUT_MS = 10 * 60 * 1000;

/**
 * archway's local content store: an OCI layout at `<home>/content` whose index.json names images by
 * full normalized reference, plus unpacked layer snapshots by diffID and the builder's cache records.
 */
export class Store implements ContentTarget {
  readonly name = 'store';
  readonly home: string;
  readonly layout: OciLayout;
  private readonly leases: Leases;

  private constructor(home: string, layout: OciLayout) {
    this.home = home;
    this.layout = layout;
    // The lease is written under the lock prune holds; a long prune is waited for, not failed on.
    this.leases = new Leases(join(home, 'leases'), this.tmpDir, (fn, opts) => layout.withIndexLock(fn, { ...opts, timeoutMs: LEASE_LOCK_TIMEOUT_MS }));
  }

  static async open(opts: StoreOptions = {}): Promise<Store> {
    const home = opts.home ?? storeHome(opts.env ?? process.env);
    try {
      await mkdir(join(home, 'snapshots'), { recursive: true });
      await mkdir(join(home, 'cache'), { recursive: true });
      await mkdir(join(home, 'tmp'), { recursive: true });
    } catch (e) {
      throw storageError(`cannot create the store at ${home}`, e);
    }
    const layout = await OciLayout.open(join(home, 'content'), {
      create: true,
      name: 'store',
      ...(opts.lockTimeoutMs !== undefined ? { lockTimeoutMs: opts.lockTimeoutMs } : {}),
      ...(opts.signal ? { signal: opts.signal } : {}),
    });
    return new Store(home, layout);
  }

  get snapshotsDir(): string {
    return join(this.home, 'snapshots');
  }
  get cacheDir(): string {
    return join(this.home, 'cache');
  }
  /** Where RUN --mount=type=cache directories live, one per cache id. */
  get cacheMountsDir(): string {
    return join(this.home, 'cache-mounts');
  }
  get tmpDir(): string {
    return join(this.home, 'tmp');
  }

  // ------------------------------------------------------------ ContentTarget

  fetch(desc: Descriptor, opts?: CallOptions): Promise<Readable> {
    return this.layout.fetch(desc, opts);
  }
  readSmall(desc: Descriptor, limit: number, opts?: CallOptions): Promise<Buffer> {
    return this.layout.readSmall(desc, limit, opts);
  }
  exists(desc: Descriptor, opts?: CallOptions): Promise<boolean> {
    return this.layout.exists(desc, opts);
  }
  push(desc: Descriptor, content: Readable | Buffer, opts?: CallOptions): Promise<void> {
    return this.layout.push(desc, content, opts);
  }

  /** See OciLayout.adoptFile: a file written and digested by this process, renamed into the store. */
  adoptFile(desc: Descriptor, file: string, opts?: CallOptions): Promise<void> {
    return this.layout.adoptFile(desc, file, opts);
  }

  /** A name (`busybox`, `app:v1`, `docker.io/library/busybox:latest`), `name@digest`, or a bare digest. */
  async resolve(reference: string, opts: CallOptions = {}): Promise<Descriptor> {
    if (isDigest(reference)) return this.layout.resolve(reference, opts);
    const ref = parseReference(reference);
    if (ref.digest && ref.tag === undefined) {
      // A name pulled by digest is kept under that name (pull of an index keeps this host's
      // image, as Docker does); otherwise the digest names content in the store.
      try {
        return await this.layout.resolve(formatReference(ref), opts);
      } catch (e) {
        if (!(e instanceof ArchwayError && e.code === 'NOT_FOUND')) throw e;
      }
    }
    if (ref.digest) return this.layout.resolve(ref.digest, opts);
    const full = formatReference(withDefaultTag(ref));
    try {
      return await this.layout.resolve(full, opts);
    } catch (e) {
      if (e instanceof ArchwayError && e.code === 'NOT_FOUND') {
        throw new ArchwayError('NOT_FOUND', `image "${reference}" is not in the local store`, { hint: "see 'archway images'", details: { reference: full } });
      }
      throw e;
    }
  }

  async tag(desc: Descriptor, reference: string, opts: CallOptions = {}): Promise<void> {
    const ref = parseReference(reference);
    // `name@digest` (a pull by digest) is a name of its own, as Docker lists such an image.
    if (ref.digest && ref.tag === undefined) return this.layout.tag(desc, formatReference(ref), opts);
    const { digest: _pinned, ...named } = ref;
    await this.layout.tag(desc, formatReference(withDefaultTag(named)), opts);
  }

  /** Removes a name; the blobs stay until `prune`. NOT_FOUND when there is no such name. */
  async remove(reference: string, opts: SignalOptions = {}): Promise<string> {
    const full = normalizeImageName(reference);
    if (!(await this.layout.untag(full, opts))) throw new ArchwayError('NOT_FOUND', `image "${reference}" is not in the local store`, { hint: "see 'archway images'", details: { reference: full } });
    return full;
  }

  async list(opts: SignalOptions = {}): Promise<TaggedEntry[]> {
    return this.layout.list(opts);
  }

  async images(opts: SignalOptions = {}): Promise<ImageSummary[]> {
    const out: ImageSummary[] = [];
    for (const { name, descriptor } of await this.layout.list(opts)) {
      const reach = await this.layout.reachable([descriptor], opts);
      let size = 0;
      for (const s of reach.blobs.values()) size += s;
      let platforms: string[] = [];
      try {
        const parsed = await readManifestOrIndex(this.layout, descriptor, opts);
        if (isIndex(parsed)) platforms = platformManifests(parsed.value).map((d) => formatPlatform(d.platform as Platform));
        else platforms = [formatPlatform((await loadImage(this.layout, descriptor, opts)).platform)];
      } catch (e) {
        if (e instanceof ArchwayError && e.code === 'INTERRUPTED') throw e;
        platforms = [];
      }
      out.push({ name, digest: descriptor.digest, mediaType: descriptor.mediaType, platforms, size });
    }
    out.sort((a, b) => a.name.localeCompare(b.name));
    return out;
  }

  // ------------------------------------------------------------ snapshots

  /** Where the unpacked layer with this diffID lives (it may not exist yet). */
  snapshotPath(diffID: string): string {
    const d = parseDigest(diffID, 'snapshot diffID');
    return join(this.snapshotsDir, digestAlgorithm(d), digestHex(d));
  }

  /**
   * The snapshot directory for a diffID, creating it with `create(tmpDir)` when absent. `create`
   * fills a fresh temp directory that is then renamed into place: one call per diffID at a time in
   * this process; across processes the rename loser discards its copy.
   */
  async ensureSnapshot(diffID: string, create: (tmpDir: string) => Promise<void>, opts: SignalOptions = {}): Promise<string> {
    const final = this.snapshotPath(diffID);
    return snapshotFlights.do(final, async () => {
      if (await pathExists(final)) {
        const now = new Date();
        await utimes(final, now, now).catch(() => undefined);
        return final;
      }
      throwIfAborted(opts.signal);
      await mkdir(this.tmpDir, { recursive: true });
      const tmp = await mkdtemp(join(this.tmpDir, tempName('snap-')));
      activeTemps.add(tmp);
      try {
        await create(tmp);
        throwIfAborted(opts.signal);
        await mkdir(join(this.snapshotsDir, digestAlgorithm(diffID as Digest)), { recursive: true });
        try {
          await rename(tmp, final);
        } catch (e) {
          if (isErrnoException(e, 'ENOTEMPTY') || isErrnoException(e, 'EEXIST')) {
            await rm(tmp, { recursive: true, force: true });
            return final;
          }
          throw e;
        }
        return final;
      } catch (e) {
        await rm(tmp, { recursive: true, force: true }).catch(() => undefined);
        if (e instanceof ArchwayError) throw e;
        throw storageError(`cannot create snapshot ${diffID}`, e);
      } finally {
        activeTemps.delete(tmp);
      }
    });
  }

  async listSnapshots(): Promise<Digest[]> {
    const out: Digest[] = [];
    for (const alg of ['sha256', 'sha512']) {
      let names: string[];
      try {
        names = await readdir(join(this.snapshotsDir, alg));
      } catch {
        continue;
      }
      for (const n of names) {
        const d = `${alg}:${n}`;
        if (isDigest(d)) out.push(d);
      }
    }
    return out;
  }

  // ------------------------------------------------------------ leases

  /**
   * Keeps snapshots (by diffID) and blobs from `prune` while this process uses them, whether or not
   * an image still names them: until the lease is released, or this process ends (a crashed
   * process's lease is ignored). Take it before looking the content up or unpacking it:
   *
   *   const lease = await store.lease({ snapshots: diffIDs, blobs: layerDigests });
   *   try { ... ensureSnapshot ..., run ... } finally { await lease.release(); }
   */
  lease(content: LeaseContent, opts: SignalOptions = {}): Promise<Lease> {
    return this.leases.acquire(content, opts);
  }

  // ------------------------------------------------------------ cache records

  private cacheRecordPath(key: string): string {
    return join(this.cacheDir, `${createHash('sha256').update(key).digest('hex')}.json`);
  }

  /**
   * A cache record by key, or undefined. Records are small JSON values; every digest string inside
   * one keeps that blob (and a snapshot of that diffID) alive through `prune`.
   */
  async getCacheRecord(key: string, opts: SignalOptions = {}): Promise<unknown> {
    throwIfAborted(opts.signal);
    let raw: string;
    try {
      // Synchronous: a record is a few hundred bytes, and a cached build looks up one per step.
      raw = readFileSync(this.cacheRecordPath(key), 'utf8');
    } catch (e) {
      if (isErrnoException(e, 'ENOENT')) return undefined;
      throw storageError('cannot read a cache record', e);
    }
    try {
      const rec = JSON.parse(raw) as { key?: unknown; value?: unknown };
      return rec.key === key ? rec.value : undefined;
    } catch {
      return undefined; // a corrupt record is a miss, not a failure
    }
  }

  async putCacheRecord(key: string, value: unknown, opts: SignalOptions = {}): Promise<void> {
    throwIfAborted(opts.signal);
    const data = JSON.stringify({ key, value });
    if (data.length > LIMITS.config) throw new ArchwayError('STORAGE', `cache record for ${key.slice(0, 40)}… is too large (${data.length} bytes)`);
    try {
      await writeFileAtomic(this.cacheRecordPath(key), data, this.tmpDir);
    } catch (e) {
      throw storageError('cannot write a cache record', e);
    }
  }

  async deleteCacheRecord(key: string): Promise<boolean> {
    try {
      await rm(this.cacheRecordPath(key));
      return true;
    } catch (e) {
      if (isErrnoException(e, 'ENOENT')) return false;
      throw storageError('cannot remove a cache record', e);
    }
  }

  /** Every digest string named by a cache record (the records keep them alive); `only`: just these record files (a dry run's survivors). */
  private async cacheRoots(opts: SignalOptions, only?: Set<string>): Promise<Set<Digest>> {
    const out = new Set<Digest>();
    let names: string[];
    try {
      names = (await readdir(this.cacheDir)).filter((n) => only === undefined || only.has(n));
    } catch {
      return out;
    }
    const collect = (v: unknown, depth: number): void => {
      if (depth > 64) return;
      if (typeof v === 'string') {
        if (isDigest(v)) out.add(v);
      } else if (Array.isArray(v)) for (const x of v) collect(x, depth + 1);
      else if (typeof v === 'object' && v !== null) for (const x of Object.values(v)) collect(x, depth + 1);
    };
    for (const n of names) {
      throwIfAborted(opts.signal);
      if (!n.endsWith('.json')) continue;
      try {
        collect(JSON.parse(await readFile(join(this.cacheDir, n), 'utf8')), 0);
      } catch {
        // unreadable record: it protects nothing
      }
    }
    return out;
  }

  // ------------------------------------------------------------ GC

  /**
   * Removes blobs not reachable from a tagged image or a cache record, snapshots whose diffID no
   * reachable config or cache record names, and temp files of writers that are gone. What a live
   * process holds a lease on (see `lease`) stays. Holds the index lock so no tag changes and no
   * lease is taken meanwhile.
   */
  async prune(opts: PruneOptions = {}): Promise<PruneResult> {
    const grace = opts.gracePeriodMs ?? 10 * 60 * 1000;
    const dryRun = opts.dryRun ?? false;
    return this.layout.withIndexLock(async () => {
      const now = Date.now();
      const buildCache = opts.buildCache ? await this.dropBuildCache(now - grace, dryRun) : { count: 0, bytes: 0, kept: new Set<string>() };
      const tagged = (await this.layout.readIndex(opts)).manifests;
      const cacheDigests = await this.cacheRoots(opts, dryRun && opts.buildCache ? buildCache.kept : undefined);
      const blobs = await this.layout.listBlobs(opts);
      const present = new Map(blobs.map((b) => [b.digest, b.size] as const));
      const roots: Descriptor[] = [...tagged];
      for (const d of cacheDigests) {
        const size = present.get(d);
        if (size !== undefined) roots.push({ mediaType: 'application/octet-stream', digest: d, size });
      }
      const reach = await this.layout.reachable(roots, opts);
      // What running containers and builds use stays, named or not (their leases are on disk
      // before they look for it, and cannot be written while this holds the index lock).
      const leased = await this.leases.active({ ...opts, keepDead: dryRun });
      const result: PruneResult = { blobs: { count: 0, bytes: 0 }, buildCache: { count: buildCache.count, bytes: buildCache.bytes }, snapshots: { count: 0, bytes: 0 }, temp: { count: 0, bytes: 0 }, totalBytes: 0, dryRun };
      for (const b of blobs) {
        throwIfAborted(opts.signal);
        if (reach.blobs.has(b.digest) || leased.blobs.has(b.digest) || now - b.mtimeMs < grace) continue;
        if (dryRun || (await this.layout.deleteBlob(b.digest))) {
          result.blobs.count++;
          result.blobs.bytes += b.size;
        }
      }
      for (const id of await this.listSnapshots()) {
        throwIfAborted(opts.signal);
        if (reach.diffIDs.has(id) || cacheDigests.has(id) || leased.snapshots.has(id)) continue;
        const p = this.snapshotPath(id);
        let mtime = 0;
        try {
          mtime = (await stat(p)).mtimeMs;
        } catch {
          continue;
        }
        if (now - mtime < grace) continue;
        const size = await treeSize(p, { freed: true });
        if (!dryRun) await rm(p, { recursive: true, force: true });
        result.snapshots.count++;
        result.snapshots.bytes += size.bytes;
      }
      for (const dir of [this.tmpDir, this.layout.tmpDir]) {
        const t = await cleanTemps(dir, { dryRun });
        result.temp.count += t.removed;
        result.temp.bytes += t.bytes;
      }
      result.temp.count += leased.dead;
      result.totalBytes = result.blobs.bytes + result.buildCache.bytes + result.snapshots.bytes + result.temp.bytes;
      return result;
    }, opts);
  }

  /**
   * Removes (or, dry, counts) cache records and cache mounts last changed before `before`. Returns
   * the record files that stay, for a dry run to compute what the rest of the prune would free.
   */
  private async dropBuildCache(before: number, dryRun: boolean): Promise<CountBytes & { kept: Set<string> }> {
    const r = { count: 0, bytes: 0, kept: new Set<string>() };
    for (const dir of [this.cacheDir, this.cacheMountsDir]) {
      let names: string[];
      try {
        names = await readdir(dir);
      } catch {
        continue;
      }
      for (const n of names) {
        const p = join(dir, n);
        let mtime: number;
        try {
          mtime = (await stat(p)).mtimeMs;
        } catch {
          continue;
        }
        if (mtime >= before) {
          if (dir === this.cacheDir) r.kept.add(n);
          continue;
        }
        const size = await treeSize(p);
        if (!dryRun) await rm(p, { recursive: true, force: true });
        r.count++;
        r.bytes += size.bytes;
      }
    }
    return r;
  }

  async diskUsage(opts: SignalOptions = {}): Promise<DiskUsage> {
    const blobs = await this.layout.listBlobs(opts);
    const snaps = await treeSize(this.snapshotsDir);
    const cache = await treeSize(this.cacheDir);
    const t1 = await tempUsage(this.tmpDir);
    const t2 = await tempUsage(this.layout.tmpDir);
    const images = (await this.layout.list(opts)).length;
    const dry = await this.prune({ ...opts, dryRun: true, gracePeriodMs: 0 });
    return {
      images,
      blobs: { count: blobs.length, bytes: blobs.reduce((s, b) => s + b.size, 0) },
      snapshots: { count: (await this.listSnapshots()).length, bytes: snaps.bytes },
      cacheRecords: { count: cache.files, bytes: cache.bytes },
      temp: { count: t1.count + t2.count, bytes: t1.bytes + t2.bytes },
      reclaimable: dry.totalBytes,
      home: this.home,
    };
  }

  /** Descriptor media type check used by callers that list: is this root an index? */
  static isIndexDescriptor(d: Descriptor): boolean {
    return isIndexMediaType(d.mediaType);
  }
}
