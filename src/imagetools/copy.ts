import { ArchwayError, linkedSignal, throwIfAborted, type Limiter } from '../util/index.js';
import { RegistryRepository } from '../registry/index.js';
import {
  attestationSubject,
  bestMatch,
  formatPlatform,
  hostPlatform,
  isAttestation,
  platformEquals,
  shortDigest,
  type Descriptor,
  type Platform,
} from '../oci/index.js';
import { isIndex, loadImage, platformManifests, readManifestOrIndex, type CallOptions, type ContentSource, type ContentTarget, type ManifestFormat } from '../image/index.js';
import { CopyPlan, executePlan, planNode, readAhead, rewriteIndex, type ExecuteStats } from './graph.js';

export type MultiArch = 'all' | 'system' | 'index-only';

export interface CopyOptions extends CallOptions {
  /** all (default): the index and every image; system: only the host's image; index-only: the index alone. */
  multiArch?: MultiArch;
  /** Copy only these platforms; a new index is written over them (and their attestations). */
  platforms?: Platform[];
  /** Convert media types; manifests of the other format are rewritten and get new digests. */
  format?: ManifestFormat;
  /** Blobs copied at once (default 4). */
  concurrency?: number;
  /** A bound on blob transfers shared with other copies (a mirror's), instead of `concurrency`. */
  limiter?: Limiter;
  /** Try cross-repository mounts (default true; the target decides whether it can). */
  mount?: boolean;
  /** Host platform for `system` (tests). */
  host?: Platform;
}

export interface CopyResult {
  /** What the tags now point at. */
  descriptor: Descriptor;
  /** The root as it was in the source. */
  source: Descriptor;
  /** Platforms of the copied image(s), attestations excluded. */
  platforms: string[];
  /** The root differs from the source's (a platform subset, a format conversion, or `system`). */
  rewritten: boolean;
  /** Human notes: what was dropped, rewritten or selected. */
  notes: string[];
  tags: string[];
  stats: ExecuteStats;
}

function isDigestReference(ref: string): boolean {
  return /^sha(256|512):/.test(ref);
}

function call(opts: CallOptions): CallOptions {
  return { ...(opts.signal ? { signal: opts.signal } : {}), ...(opts.progress ? { progress: opts.progress } : {}) };
}

/**
 * Copies the image or index `srcRef` names in `src` to `dst`, tagging it with each of `dstRefs`
 * (tags, or a digest to check) only when everything it references is present: blobs first,
 * then child manifests by digest, then the root, then the tags.
 */
export async function copyImage(src: ContentSource, srcRef: string, dst: ContentTarget, dstRefs: readonly string[], opts: CopyOptions = {}): Promise<CopyResult> {
  // Reads, checks and transfers run side by side, each listening for the abort.
  const linked = linkedSignal(opts.signal);
  try {
    return await copyWithin(src, srcRef, dst, dstRefs, { ...opts, signal: linked.signal });
  } catch (e) {
    // A target written on close() (an archive) drops what it staged: a failed or interrupted
    // copy leaves nothing behind. Every transfer has settled by now (executePlan waits for them).
    await abortTarget(dst);
    throw e;
  } finally {
    linked.release();
  }
}

async function abortTarget(dst: ContentTarget): Promise<void> {
  try {
    await dst.abort?.();
  } catch {
    // the copy's own failure is what the user needs to see
  }
}

async function copyWithin(src: ContentSource, srcRef: string, dst: ContentTarget, dstRefs: readonly string[], opts: CopyOptions): Promise<CopyResult> {
  const c = call(opts);
  const multiArch = opts.multiArch ?? 'all';
  const notes: string[] = [];
  const note = (text: string): void => {
    notes.push(text);
    opts.progress?.emit({ kind: 'message', level: 'info', text });
  };
  // What each tag points at already, asked while the source is read: a tag that points at the
  // root needs no write, and tells that the destination holds the root and all under it.
  const tagChecks = new Map<string, Promise<string | undefined>>();
  if (!opts.format && !opts.platforms && multiArch !== 'system' && dst.tagged) {
    for (const ref of dstRefs) {
      if (isDigestReference(ref)) continue;
      tagChecks.set(ref, dst.tagged(ref, c).catch(() => undefined));
    }
  }
  const firstTag = tagChecks.values().next().value;
  // A registry destination gets its connection, auth scheme and push token while the source is
  // read; after the first tag check, whose answer tells the auth scheme as a ping of /v2/ would.
  if (dst instanceof RegistryRepository) {
    const prepare = (): Promise<void> => dst.prepare({ push: true, ...(opts.signal ? { signal: opts.signal } : {}) });
    void (firstTag ? firstTag.then(prepare) : prepare());
  }
  const root = await src.resolve(srcRef, c);
  const parsed = await readManifestOrIndex(src, root, c);
  const rootActual: Descriptor = { mediaType: parsed.mediaType, digest: parsed.digest, size: parsed.raw.length };
  const plan = new CopyPlan();
  // When the root is copied byte for byte, ask now whether the destination has it (then nothing
  // under it needs asking or sending), while the rest of the source is read.
  const keepsRoot = !opts.format && (!isIndex(parsed) || (!opts.platforms && multiArch !== 'system'));
  if (keepsRoot && firstTag && (await firstTag) === rootActual.digest) plan.assumePresent(dst, rootActual.digest);
  else if (keepsRoot) void plan.exists(dst, rootActual, c);
  const ctx = { ...c, format: opts.format, note };
  let result: Descriptor;
  let platforms: string[];
  let rewritten = false;
  let present = false;
  const what = `${src.name}:${srcRef}`;

  if (!isIndex(parsed)) {
    const img = await loadImage(src, rootActual, c);
    if (opts.platforms && !opts.platforms.some((p) => platformEquals(p, img.platform))) {
      throw new ArchwayError('PLATFORM', `${what} is a single-platform image for ${formatPlatform(img.platform)}, not ${opts.platforms.map(formatPlatform).join(', ')}`, {
        details: { reference: what, available: [formatPlatform(img.platform)] },
      });
    }
    const r = await planNode(src, rootActual, plan, ctx);
    // The config was read to learn the platform: it is sent from memory, not fetched again.
    plan.bytes.set(img.manifest.value.config.digest, img.rawConfig);
    if (r.dropped) throw new ArchwayError('FORMAT', `${what} is an artifact, which has no ${opts.format} form`);
    result = r.descriptor;
    rewritten = r.rewritten;
    platforms = [formatPlatform(img.platform)];
  } else if (multiArch === 'index-only' && !opts.platforms) {
    if (opts.format) throw new ArchwayError('USAGE', '--multi-arch index-only cannot be combined with --format (converting an index means rewriting its images)');
    plan.addManifest(rootActual, parsed.raw);
    result = rootActual;
    platforms = platformManifests(parsed.value).map((d) => formatPlatform(d.platform as Platform));
    note(`copying the index ${shortDigest(rootActual.digest)} alone: its images must already be at the destination`);
  } else if (multiArch === 'system' && !opts.platforms) {
    const host = opts.host ?? hostPlatform();
    const hostWords = opts.host ? formatPlatform(host) : `this host's platform ${formatPlatform(host)}`;
    const candidates = platformManifests(parsed.value);
    const hit = bestMatch(candidates, host);
    if (!hit) {
      throw new ArchwayError('PLATFORM', `${what} has no image for ${hostWords}; it has: ${candidates.map((d) => formatPlatform(d.platform as Platform)).join(', ') || 'none'}`, {
        hint: 'use --multi-arch all to copy every platform',
      });
    }
    const r = await planNode(src, hit, plan, ctx);
    result = { mediaType: r.descriptor.mediaType, digest: r.descriptor.digest, size: r.descriptor.size };
    rewritten = true;
    platforms = [formatPlatform(hit.platform as Platform)];
    note(`copying only ${formatPlatform(hit.platform as Platform)} (${shortDigest(hit.digest)}), the image for ${opts.host ? 'that platform' : 'this host'}, not the index`);
  } else {
    const all = parsed.value.manifests;
    let selected: Descriptor[] = all;
    if (opts.platforms) {
      const candidates = platformManifests(parsed.value);
      const kept = new Set<string>();
      for (const p of opts.platforms) {
        const hit = candidates.find((d) => d.platform && platformEquals(d.platform, p)) ?? bestMatch(candidates, p);
        if (!hit) {
          throw new ArchwayError('PLATFORM', `${what} has no image for ${formatPlatform(p)}; it has: ${candidates.map((d) => formatPlatform(d.platform as Platform)).join(', ') || 'none'}`, {
            details: { reference: what, platform: formatPlatform(p) },
          });
        }
        kept.add(hit.digest);
      }
      selected = all.filter((d) => kept.has(d.digest) || (isAttestation(d) && kept.has(attestationSubject(d) ?? '')));
    }
    // A target that cannot hold them all (a docker-archive) refuses now, before any blob is read.
    dst.acceptPlatforms?.(platformManifests({ ...parsed.value, manifests: selected }).map((d) => formatPlatform(d.platform as Platform)), what);
    const children: Descriptor[] = [];
    let changed = selected.length !== all.length;
    const kept = selected.filter((child) => {
      if (opts.format === 'docker' && isAttestation(child)) {
        note(`dropped attestation ${shortDigest(child.digest)}: a Docker manifest list cannot hold attestations (use --format oci to keep them)`);
        changed = true;
        return false;
      }
      return true;
    });
    // When the index is copied byte for byte, the destination is asked first whether it holds
    // it: then it holds everything under it, and the images' manifests are not read at all
    // (reading them meanwhile and stopping them cost more than the round trip). Otherwise they
    // are read all at once, then walked in order.
    if (keepsRoot && (await plan.exists(dst, rootActual, c))) {
      present = true;
      children.push(...kept);
      opts.progress?.emit({ kind: 'message', level: 'info', text: `${dst.name} holds ${shortDigest(rootActual.digest)} and everything under it already` });
    } else {
      // It lacks the index: ask about the images' manifests while they are read.
      if (keepsRoot) for (const d of kept) void plan.exists(dst, d, c);
      const reads = readAhead(src, kept, c);
      for (const [i, child] of kept.entries()) {
        const r = await planNode(src, child, plan, ctx, 1, reads[i]);
        if (r.dropped) {
          changed = true;
          continue;
        }
        if (r.rewritten) changed = true;
        children.push(r.descriptor);
      }
    }
    const wantType = opts.format === 'docker' ? 'application/vnd.docker.distribution.manifest.list.v2+json' : opts.format === 'oci' ? 'application/vnd.oci.image.index.v1+json' : parsed.mediaType;
    platforms = children.filter((d) => !isAttestation(d) && d.platform).map((d) => formatPlatform(d.platform as Platform));
    const refs = { manifests: children.map((d) => d.digest) };
    if (!changed && wantType === parsed.mediaType) {
      plan.addManifest(rootActual, parsed.raw, refs);
      result = rootActual;
    } else {
      const next = rewriteIndex(parsed.value, wantType, children);
      plan.addManifest(next.descriptor, next.raw, refs);
      result = next.descriptor;
      rewritten = true;
      note(
        opts.platforms
          ? `wrote a new index ${shortDigest(next.descriptor.digest)} with ${platforms.join(', ')} (the source index ${shortDigest(rootActual.digest)} has ${platformManifests(parsed.value).length} platforms)`
          : `wrote a new index ${shortDigest(next.descriptor.digest)} (${wantType}); the source's was ${shortDigest(rootActual.digest)}`,
      );
    }
  }

  const stats: ExecuteStats = present
    ? { blobsCopied: 0, blobsSkipped: 0, blobsMounted: 0, bytesCopied: 0, manifestsPushed: 0, present: true }
    : await executePlan(src, dst, plan, { ...c, ...(opts.concurrency ? { concurrency: opts.concurrency } : {}), ...(opts.limiter ? { limiter: opts.limiter } : {}), ...(opts.mount === false ? { mount: false } : {}) });
  const tags: string[] = [];
  for (const ref of dstRefs) {
    throwIfAborted(opts.signal);
    if (isDigestReference(ref)) {
      if (ref !== result.digest) {
        throw new ArchwayError('INTEGRITY', `the destination asks for ${ref} but the copy is ${result.digest}${rewritten ? ' (the image was rewritten)' : ''}`);
      }
      continue;
    }
    if (keepsRoot && (await tagChecks.get(ref)) === result.digest) {
      opts.progress?.emit({ kind: 'message', level: 'info', text: `${dst.name}:${ref} points at ${shortDigest(result.digest)} already` });
    } else await dst.tag(result, ref, c);
    tags.push(ref);
  }
  await dst.close?.(c);
  return { descriptor: result, source: rootActual, platforms, rewritten, notes, tags, stats };
}
