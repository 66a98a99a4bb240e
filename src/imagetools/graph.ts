import { setMaxListeners } from 'node:events';
import { ArchwayError, Limiter, SMALL_BLOB, throwIfAborted } from '../util/index.js';
import {
  encodeJson,
  descriptorFor,
  isAttestation,
  isDockerMediaType,
  isForeignLayer,
  isIndexMediaType,
  MediaType,
  type Descriptor,
  type ImageIndex,
  type ImageManifest,
} from '../oci/index.js';
import { convertLayerDescriptor, isIndex, readManifestOrIndex, type CallOptions, type ContentSource, type ContentTarget, type ManifestFormat } from '../image/index.js';

/** A manifest or index to write, and what it references (so that a present one's tree can be skipped). */
export interface PlannedManifest {
  descriptor: Descriptor;
  raw: Buffer;
  /** Digests of the manifests an index references (as written). */
  manifests: string[];
  /** Digests of the blobs an image manifest references (config and layers). */
  blobs: string[];
}

/** What a copy will write, in order: blobs (any order), then manifests children first, the root last. */
export class CopyPlan {
  readonly blobs = new Map<string, Descriptor>();
  readonly manifests: PlannedManifest[] = [];
  private readonly byDigest = new Map<string, PlannedManifest>();
  /** Bytes of small blobs already read while planning (an image's config), sent from memory. */
  readonly bytes = new Map<string, Buffer>();
  /** Existence checks per target (a plan may be written to several) and digest. */
  private readonly checks = new WeakMap<ContentTarget, Map<string, Promise<boolean>>>();

  addBlob(d: Descriptor): void {
    if (d.urls && d.urls.length > 0 && isForeignLayer(d.mediaType)) return; // foreign layers stay where their urls say
    if (!this.blobs.has(d.digest)) this.blobs.set(d.digest, { mediaType: d.mediaType, digest: d.digest, size: d.size });
  }

  /**
   * Adds a manifest with what it references. Without `refs` nothing is known of its children:
   * they are taken to be at the destination already (an index copied alone).
   */
  addManifest(descriptor: Descriptor, raw: Buffer, refs: { manifests?: string[]; blobs?: string[] } = {}): void {
    if (this.byDigest.has(descriptor.digest)) return;
    const m: PlannedManifest = { descriptor: { mediaType: descriptor.mediaType, digest: descriptor.digest, size: descriptor.size }, raw, manifests: refs.manifests ?? [], blobs: refs.blobs ?? [] };
    this.byDigest.set(descriptor.digest, m);
    this.manifests.push(m);
  }

  hasManifest(digest: string): boolean {
    return this.byDigest.has(digest);
  }

  manifest(digest: string): PlannedManifest | undefined {
    return this.byDigest.get(digest);
  }

  private checksFor(dst: ContentTarget): Map<string, Promise<boolean>> {
    let checks = this.checks.get(dst);
    if (!checks) {
      checks = new Map();
      this.checks.set(dst, checks);
    }
    return checks;
  }

  /** Records that `dst` holds `digest` (a tag there points at it), so it is not asked. */
  assumePresent(dst: ContentTarget, digest: string): void {
    this.checksFor(dst).set(digest, Promise.resolve(true));
  }

  /**
   * Whether `dst` holds `d`, asked once per digest; a check can start early (while the rest of
   * the plan is still being read) and be awaited later.
   */
  exists(dst: ContentTarget, d: Descriptor, opts: CallOptions): Promise<boolean> {
    const checks = this.checksFor(dst);
    let p = checks.get(d.digest);
    if (!p) {
      p = dst.exists(d, opts);
      // Awaited later, or never when the copy fails first: no unhandled rejection either way.
      p.catch(() => undefined);
      checks.set(d.digest, p);
    }
    return p;
  }
}

export interface PlanContext extends CallOptions {
  /** Convert media types to this format (manifests are rewritten and get new digests). */
  format?: ManifestFormat | undefined;
  /** Called when something is dropped or rewritten, for the user to see. */
  note?: (text: string) => void;
}

export interface PlannedNode {
  /** The descriptor of the node as written (new digest when rewritten), with the platform/annotations of `desc`. */
  descriptor: Descriptor;
  rewritten: boolean;
  /** Undefined when the node was dropped (an attestation cannot be a Docker manifest). */
  dropped?: boolean;
}

const MAX_DEPTH = 4;
const SMALL_BLOBS_AT_ONCE = 16;

export type ParsedNode = Awaited<ReturnType<typeof readManifestOrIndex>>;

/**
 * Starts reading manifests (an index's children) at once rather than one after the other; each
 * promise is awaited by the walk in order, or dropped when the walk fails first.
 */
export function readAhead(src: ContentSource, descs: readonly Descriptor[], ctx: CallOptions): Array<Promise<ParsedNode>> {
  return descs.map((d) => {
    const p = readManifestOrIndex(src, d, ctx);
    p.catch(() => undefined);
    return p;
  });
}

function withEntryFields(from: Descriptor, to: { mediaType: string; digest: Descriptor['digest']; size: number }): Descriptor {
  const out: Descriptor = { mediaType: to.mediaType, digest: to.digest, size: to.size };
  if (from.platform) out.platform = from.platform;
  if (from.annotations) out.annotations = from.annotations;
  if (from.artifactType) out.artifactType = from.artifactType;
  if (from.urls) out.urls = from.urls;
  return out;
}

function manifestTypeFor(format: ManifestFormat): string {
  return format === 'docker' ? MediaType.DockerManifest : MediaType.OciManifest;
}
function indexTypeFor(format: ManifestFormat): string {
  return format === 'docker' ? MediaType.DockerManifestList : MediaType.OciIndex;
}

function isImageConfigType(mt: string): boolean {
  return mt === MediaType.OciConfig || mt === MediaType.DockerConfig;
}

/** Re-encodes a manifest in the other format, keeping field order readable. */
export function convertManifest(m: ImageManifest, format: ManifestFormat): ImageManifest {
  const configType = isImageConfigType(m.config.mediaType) ? (format === 'docker' ? MediaType.DockerConfig : MediaType.OciConfig) : m.config.mediaType;
  const out: ImageManifest = {
    schemaVersion: 2,
    mediaType: manifestTypeFor(format),
    config: { ...m.config, mediaType: configType },
    layers: m.layers.map((l) => convertLayerDescriptor(l, format)),
  };
  if (format === 'oci') {
    if (m.artifactType) out.artifactType = m.artifactType;
    if (m.subject) out.subject = m.subject;
  }
  if (m.annotations) out.annotations = m.annotations;
  return out;
}

/**
 * Adds everything reachable from `desc` to the plan, byte for byte unless `format` asks for
 * conversion, in which case manifests and indexes of the other format are rewritten.
 */
export async function planNode(src: ContentSource, desc: Descriptor, plan: CopyPlan, ctx: PlanContext, depth = 0, read?: Promise<ParsedNode>): Promise<PlannedNode> {
  throwIfAborted(ctx.signal);
  if (depth > MAX_DEPTH) throw new ArchwayError('FORMAT', `${src.name}: indexes nested deeper than ${MAX_DEPTH} levels`);
  const parsed = await (read ?? readManifestOrIndex(src, desc, ctx));
  const actual = { mediaType: parsed.mediaType, digest: parsed.digest, size: parsed.raw.length };
  if (isIndex(parsed)) {
    const children: Descriptor[] = [];
    let changed = false;
    const kept = parsed.value.manifests.filter((child) => {
      if (ctx.format === 'docker' && isAttestation(child)) {
        ctx.note?.(`dropped attestation ${child.digest}: a Docker manifest list cannot hold attestations (use --format oci to keep them)`);
        changed = true;
        return false;
      }
      return true;
    });
    const reads = readAhead(src, kept, ctx);
    for (const [i, child] of kept.entries()) {
      const r = await planNode(src, child, plan, ctx, depth + 1, reads[i]);
      if (r.dropped) {
        changed = true;
        continue;
      }
      if (r.rewritten) changed = true;
      children.push(r.descriptor);
    }
    const wantType = ctx.format ? indexTypeFor(ctx.format) : parsed.mediaType;
    const refs = { manifests: children.map((d) => d.digest) };
    if (!changed && wantType === parsed.mediaType) {
      plan.addManifest(actual, parsed.raw, refs);
      return { descriptor: withEntryFields(desc, actual), rewritten: false };
    }
    const next = rewriteIndex(parsed.value, wantType, children);
    plan.addManifest(next.descriptor, next.raw, refs);
    ctx.note?.(`rewrote index ${parsed.digest} as ${wantType} ${next.descriptor.digest}`);
    return { descriptor: withEntryFields(desc, next.descriptor), rewritten: true };
  }
  const m = parsed.value;
  if (ctx.format === 'docker' && (m.artifactType || !isImageConfigType(m.config.mediaType) || m.subject)) {
    ctx.note?.(`dropped ${parsed.digest}: an artifact manifest (${m.artifactType ?? m.config.mediaType}) has no Docker form`);
    return { descriptor: withEntryFields(desc, actual), rewritten: false, dropped: true };
  }
  plan.addBlob(m.config);
  for (const l of m.layers) plan.addBlob(l);
  const refs = { blobs: [m.config, ...m.layers].map((d) => d.digest).filter((d) => plan.blobs.has(d)) };
  const wantType = ctx.format ? manifestTypeFor(ctx.format) : parsed.mediaType;
  if (wantType === parsed.mediaType || (ctx.format === 'oci' && !isDockerMediaType(parsed.mediaType))) {
    plan.addManifest(actual, parsed.raw, refs);
    return { descriptor: withEntryFields(desc, actual), rewritten: false };
  }
  const raw = encodeJson(convertManifest(m, ctx.format as ManifestFormat));
  const nd = descriptorFor(raw, wantType);
  plan.addManifest(nd, raw, refs);
  ctx.note?.(`rewrote manifest ${parsed.digest} as ${wantType} ${nd.digest}`);
  return { descriptor: withEntryFields(desc, nd), rewritten: true };
}

/** A new index document over `manifests`, keeping the original's annotations and extra fields. */
export function rewriteIndex(original: ImageIndex | undefined, mediaType: string, manifests: Descriptor[], annotations?: Record<string, string>): { raw: Buffer; descriptor: Descriptor; value: ImageIndex } {
  if (!isIndexMediaType(mediaType)) throw new ArchwayError('FORMAT', `"${mediaType}" is not an index media type`);
  const value: ImageIndex = { schemaVersion: 2, mediaType, manifests };
  if (mediaType === MediaType.OciIndex) {
    if (original?.artifactType) value.artifactType = original.artifactType;
    if (original?.subject) value.subject = original.subject;
  }
  const ann = annotations ?? original?.annotations;
  if (ann && Object.keys(ann).length > 0) value.annotations = ann;
  const raw = encodeJson(value);
  return { raw, descriptor: descriptorFor(raw, mediaType), value };
}

export interface ExecuteOptions extends CallOptions {
  /** Blobs transferred at once (default 4); ignored when `limiter` is given. */
  concurrency?: number;
  /** A bound shared with other copies (a mirror's images), instead of one per plan. */
  limiter?: Limiter;
  /** Try a registry's cross-repository mount before sending bytes (the target decides whether it can). */
  mount?: boolean;
}

export interface ExecuteStats {
  blobsCopied: number;
  blobsSkipped: number;
  blobsMounted: number;
  bytesCopied: number;
  manifestsPushed: number;
  /** The destination held the root already: nothing under it was read, asked about or sent. */
  present?: boolean;
}

/** Makes a blob present that the target lacks: mounted when the target can, else streamed (never buffered). */
async function transferBlob(src: ContentSource, dst: ContentTarget, d: Descriptor, opts: ExecuteOptions, stats?: ExecuteStats, known?: Buffer): Promise<void> {
  throwIfAborted(opts.signal);
  const call = { ...(opts.signal ? { signal: opts.signal } : {}), ...(opts.progress ? { progress: opts.progress } : {}) };
  if (opts.mount !== false && dst.mount && src !== dst) {
    if (await dst.mount(d, src, call)) {
      if (stats) stats.blobsMounted++;
      return;
    }
  }
  throwIfAborted(opts.signal);
  if (known) {
    // Read before (and checked by the target again): no second fetch.
    await dst.push(d, known, call);
  } else {
    const stream = await src.fetch(d, call);
    try {
      await dst.push(d, stream, call);
    } catch (e) {
      stream.destroy();
      throw e;
    }
  }
  if (stats) {
    stats.blobsCopied++;
    stats.bytesCopied += d.size;
  }
}

/**
 * Copies one blob: skipped when present, mounted when the target can, else streamed (never buffered).
 * Backends report their own transfers, mounts and tags to `progress`; only skips are reported here.
 */
export async function copyBlob(src: ContentSource, dst: ContentTarget, d: Descriptor, opts: ExecuteOptions, stats?: ExecuteStats): Promise<void> {
  throwIfAborted(opts.signal);
  const call = { ...(opts.signal ? { signal: opts.signal } : {}), ...(opts.progress ? { progress: opts.progress } : {}) };
  if (await dst.exists(d, call)) {
    opts.progress?.emit({ kind: 'blob', phase: 'skip', digest: d.digest, size: d.size });
    if (stats) stats.blobsSkipped++;
    return;
  }
  await transferBlob(src, dst, d, opts, stats);
}

/** Runs every task; the first failure aborts `controller` (stopping the others) and is thrown once all have settled. */
async function allOrFirstError(tasks: Array<Promise<void>>, controller: AbortController): Promise<void> {
  let failure: { error: unknown } | undefined;
  await Promise.all(
    tasks.map((t) =>
      t.catch((error: unknown) => {
        if (failure) return;
        failure = { error };
        if (!controller.signal.aborted) controller.abort(error);
      }),
    ),
  );
  if (failure) throw failure.error;
}

/**
 * Writes a plan: what the target lacks of it, blobs first (several at once), then manifests,
 * each after the manifests it references. Tags are the caller's, after this.
 *
 * A manifest the target already holds is taken with everything it references (a registry refuses
 * a manifest whose blobs or children it lacks), so a copy to a target that has the image asks
 * about its root only. The blobs that are needed are asked about all at once and sent, largest
 * first, under the bound (`concurrency`, or the shared `limiter`).
 */
export async function executePlan(src: ContentSource, dst: ContentTarget, plan: CopyPlan, opts: ExecuteOptions = {}): Promise<ExecuteStats> {
  const stats: ExecuteStats = { blobsCopied: 0, blobsSkipped: 0, blobsMounted: 0, bytesCopied: 0, manifestsPushed: 0 };
  // An internal controller so that the first failure stops the other transfers at once.
  const controller = new AbortController();
  // Every request, wait and stream in flight listens on it.
  setMaxListeners(0, controller.signal);
  const onAbort = (): void => controller.abort(opts.signal?.reason);
  opts.signal?.addEventListener('abort', onAbort, { once: true });
  if (opts.signal?.aborted) onAbort();
  const progress = opts.progress;
  const call: CallOptions = { signal: controller.signal, ...(progress ? { progress } : {}) };
  const limiter = opts.limiter ?? new Limiter(Math.max(1, opts.concurrency ?? 4));
  // Small blobs have a bound of their own, wide, only so that hundreds of them do not open
  // hundreds of files and connections at once.
  const small = new Limiter(SMALL_BLOBS_AT_ONCE);
  try {
    // 1. What the target lacks, from the roots down.
    const childManifests = new Set<string>();
    const referencedBlobs = new Set<string>();
    for (const m of plan.manifests) {
      for (const c of m.manifests) childManifests.add(c);
      for (const b of m.blobs) referencedBlobs.add(b);
    }
    const neededManifests = new Set<string>();
    const neededBlobs = new Set<string>();
    // Blobs no planned manifest references are always handled.
    for (const b of plan.blobs.keys()) if (!referencedBlobs.has(b)) neededBlobs.add(b);
    const visits = new Map<string, Promise<void>>();
    const visit = (m: PlannedManifest): Promise<void> => {
      let p = visits.get(m.descriptor.digest);
      if (!p) {
        p = (async () => {
          if (await plan.exists(dst, m.descriptor, call)) return;
          neededManifests.add(m.descriptor.digest);
          for (const b of m.blobs) {
            neededBlobs.add(b);
            // Asked about now, not after every manifest has been.
            const d = plan.blobs.get(b);
            if (d) void plan.exists(dst, d, call);
          }
          await allOrFirstError(
            m.manifests.flatMap((c) => {
              const child = plan.manifest(c);
              return child ? [visit(child)] : [];
            }),
            controller,
          );
        })();
        visits.set(m.descriptor.digest, p);
      }
      return p;
    };
    await allOrFirstError(plan.manifests.filter((m) => !childManifests.has(m.descriptor.digest)).map(visit), controller);

    // 2. Blobs: those under present manifests are skipped unasked; the rest are asked about together.
    const blobs = [...plan.blobs.values()];
    for (const d of blobs) {
      if (neededBlobs.has(d.digest)) continue;
      stats.blobsSkipped++;
      progress?.emit({ kind: 'blob', phase: 'skip', digest: d.digest, size: d.size });
    }
    const wanted = blobs.filter((d) => neededBlobs.has(d.digest));
    const bopts: ExecuteOptions = { ...call, ...(opts.mount === false ? { mount: false } : {}) };
    // All asked about at once; then the missing ones queue for the bound largest first, so that
    // a small config answered early does not hold a slot a large layer could use. Small blobs go
    // besides the bound: a few round trips each, they need not wait for the large ones (a wide bound of their own).
    const missing: Descriptor[] = [];
    await allOrFirstError(
      wanted.map(async (d) => {
        if (await plan.exists(dst, d, call)) {
          stats.blobsSkipped++;
          progress?.emit({ kind: 'blob', phase: 'skip', digest: d.digest, size: d.size });
        } else missing.push(d);
      }),
      controller,
    );
    missing.sort((a, b) => b.size - a.size);
    await allOrFirstError(
      missing.map((d) => (d.size <= SMALL_BLOB ? small : limiter).run(() => transferBlob(src, dst, d, bopts, stats, plan.bytes.get(d.digest)), controller.signal)),
      controller,
    );

    // 3. Manifests, each after the ones it references (siblings at once), roots last.
    const pushes = new Map<string, Promise<void>>();
    const push = (m: PlannedManifest): Promise<void> => {
      let p = pushes.get(m.descriptor.digest);
      if (!p) {
        p = (async () => {
          await allOrFirstError(
            m.manifests.flatMap((c) => {
              const child = plan.manifest(c);
              return child && neededManifests.has(c) ? [push(child)] : [];
            }),
            controller,
          );
          throwIfAborted(controller.signal);
          await dst.push(m.descriptor, m.raw, call);
          stats.manifestsPushed++;
        })();
        pushes.set(m.descriptor.digest, p);
      }
      return p;
    };
    await allOrFirstError(plan.manifests.filter((m) => neededManifests.has(m.descriptor.digest) && !childManifests.has(m.descriptor.digest)).map(push), controller);
  } catch (e) {
    if (opts.signal?.aborted) throwIfAborted(opts.signal);
    throw e;
  } finally {
    opts.signal?.removeEventListener('abort', onAbort);
  }
  return stats;
}
