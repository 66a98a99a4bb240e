import { ArchwayError, mapLimit, throwIfAborted } from '../util/index.js';
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

/** What a copy will write, in order: blobs (any order), then manifests children first, the root last. */
export class CopyPlan {
  readonly blobs = new Map<string, Descriptor>();
  readonly manifests: Array<{ descriptor: Descriptor; raw: Buffer }> = [];
  private readonly manifestDigests = new Set<string>();

  addBlob(d: Descriptor): void {
    if (d.urls && d.urls.length > 0 && isForeignLayer(d.mediaType)) return; // foreign layers stay where their urls say
    if (!this.blobs.has(d.digest)) this.blobs.set(d.digest, { mediaType: d.mediaType, digest: d.digest, size: d.size });
  }

  addManifest(descriptor: Descriptor, raw: Buffer): void {
    if (this.manifestDigests.has(descriptor.digest)) return;
    this.manifestDigests.add(descriptor.digest);
    this.manifests.push({ descriptor: { mediaType: descriptor.mediaType, digest: descriptor.digest, size: descriptor.size }, raw });
  }

  hasManifest(digest: string): boolean {
    return this.manifestDigests.has(digest);
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
export async function planNode(src: ContentSource, desc: Descriptor, plan: CopyPlan, ctx: PlanContext, depth = 0): Promise<PlannedNode> {
  throwIfAborted(ctx.signal);
  if (depth > MAX_DEPTH) throw new ArchwayError('FORMAT', `${src.name}: indexes nested deeper than ${MAX_DEPTH} levels`);
  const parsed = await readManifestOrIndex(src, desc, ctx);
  const actual = { mediaType: parsed.mediaType, digest: parsed.digest, size: parsed.raw.length };
  if (isIndex(parsed)) {
    const children: Descriptor[] = [];
    let changed = false;
    for (const child of parsed.value.manifests) {
      if (ctx.format === 'docker' && isAttestation(child)) {
        ctx.note?.(`dropped attestation ${child.digest}: a Docker manifest list cannot hold attestations (use --format oci to keep them)`);
        changed = true;
        continue;
      }
      const r = await planNode(src, child, plan, ctx, depth + 1);
      if (r.dropped) {
        changed = true;
        continue;
      }
      if (r.rewritten) changed = true;
      children.push(r.descriptor);
    }
    const wantType = ctx.format ? indexTypeFor(ctx.format) : parsed.mediaType;
    if (!changed && wantType === parsed.mediaType) {
      plan.addManifest(actual, parsed.raw);
      return { descriptor: withEntryFields(desc, actual), rewritten: false };
    }
    const next = rewriteIndex(parsed.value, wantType, children);
    plan.addManifest(next.descriptor, next.raw);
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
  const wantType = ctx.format ? manifestTypeFor(ctx.format) : parsed.mediaType;
  if (wantType === parsed.mediaType || (ctx.format === 'oci' && !isDockerMediaType(parsed.mediaType))) {
    plan.addManifest(actual, parsed.raw);
    return { descriptor: withEntryFields(desc, actual), rewritten: false };
  }
  const raw = encodeJson(convertManifest(m, ctx.format as ManifestFormat));
  const nd = descriptorFor(raw, wantType);
  plan.addManifest(nd, raw);
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
  concurrency?: number;
  /** Try a registry's cross-repository mount before sending bytes (the target decides whether it can). */
  mount?: boolean;
}

export interface ExecuteStats {
  blobsCopied: number;
  blobsSkipped: number;
  blobsMounted: number;
  bytesCopied: number;
  manifestsPushed: number;
}

/**
 * Copies one blob: skipped when present, mounted when the target can, else streamed (never buffered).
 * Backends report their own transfers, mounts and tags to `progress`; only skips are reported here.
 */
export async function copyBlob(src: ContentSource, dst: ContentTarget, d: Descriptor, opts: ExecuteOptions, stats?: ExecuteStats): Promise<void> {
  throwIfAborted(opts.signal);
  const progress = opts.progress;
  const call = { ...(opts.signal ? { signal: opts.signal } : {}), ...(progress ? { progress } : {}) };
  if (await dst.exists(d, call)) {
    progress?.emit({ kind: 'blob', phase: 'skip', digest: d.digest, size: d.size });
    if (stats) stats.blobsSkipped++;
    return;
  }
  if (opts.mount !== false && dst.mount && src !== dst) {
    if (await dst.mount(d, src, call)) {
      if (stats) stats.blobsMounted++;
      return;
    }
  }
  throwIfAborted(opts.signal);
  const stream = await src.fetch(d, call);
  try {
    await dst.push(d, stream, call);
  } catch (e) {
    stream.destroy();
    throw e;
  }
  if (stats) {
    stats.blobsCopied++;
    stats.bytesCopied += d.size;
  }
}

/** Writes a plan: every blob (several at once), then manifests in order. Tags are the caller's, after this. */
export async function executePlan(src: ContentSource, dst: ContentTarget, plan: CopyPlan, opts: ExecuteOptions = {}): Promise<ExecuteStats> {
  const stats: ExecuteStats = { blobsCopied: 0, blobsSkipped: 0, blobsMounted: 0, bytesCopied: 0, manifestsPushed: 0 };
  const blobs = [...plan.blobs.values()];
  // An internal controller so that the first failure stops the other transfers at once.
  const controller = new AbortController();
  const onAbort = (): void => controller.abort(opts.signal?.reason);
  opts.signal?.addEventListener('abort', onAbort, { once: true });
  if (opts.signal?.aborted) onAbort();
  try {
    await mapLimit(blobs, Math.max(1, opts.concurrency ?? 4), async (d) => {
      try {
        await copyBlob(src, dst, d, { ...opts, signal: controller.signal }, stats);
      } catch (e) {
        if (!controller.signal.aborted) controller.abort(e);
        throw e;
      }
    });
  } catch (e) {
    if (opts.signal?.aborted) throwIfAborted(opts.signal);
    throw e;
  } finally {
    opts.signal?.removeEventListener('abort', onAbort);
  }
  const call = { ...(opts.signal ? { signal: opts.signal } : {}), ...(opts.progress ? { progress: opts.progress } : {}) };
  for (const m of plan.manifests) {
    throwIfAborted(opts.signal);
    if (!(await dst.exists(m.descriptor, call))) {
      await dst.push(m.descriptor, m.raw, call);
      stats.manifestsPushed++;
    }
  }
  return stats;
}
