import { ArchwayError, throwIfAborted } from '../util/index.js';
import {
  attestationSubject,
  formatPlatform,
  isAttestation,
  isDockerMediaType,
  isIndexMediaType,
  isUnknownPlatform,
  MediaType,
  normalizePlatform,
  parsePlatform,
  platformEquals,
  shortDigest,
  type Descriptor,
  type Platform,
} from '../oci/index.js';
import { isIndex, loadImage, readManifestOrIndex, type CallOptions, type ContentSource, type ContentTarget, type ManifestFormat } from '../image/index.js';
import { CopyPlan, executePlan, planNode, rewriteIndex } from './graph.js';

/** One source of `index create`: a tag, a digest or a whole index, with the platform the user gave. */
export interface IndexSource {
  /** As the user wrote it, for messages. */
  input: string;
  source: ContentSource;
  /** The tag or digest within `source`. */
  reference: string;
  /** A platform the user gave: checked against the image config unless forcePlatform. */
  platform?: Platform;
}

export interface IndexTarget {
  input: string;
  target: ContentTarget;
  /** The tag within `target`. */
  reference: string;
}

export interface IndexCreateOptions extends CallOptions {
  /** Add to (and replace platforms of) the index already at the first target. */
  append?: boolean;
  /** Platforms to take out of the result (with their attestations). */
  remove?: Platform[];
  /**
   * `key=value` / `index:key=value`, `manifest-descriptor:key=value`, `manifest-descriptor[linux/arm64]:key=value`.
   * Added to the index annotations kept from the sources: those of the index at the first target
   * (--append), else those every source index agrees on (all of them when there is one).
   */
  annotations?: string[];
  /**
   * The index's media type; default: that of the index appended to or of a single source index,
   * else a Docker list when every image is a Docker manifest and nothing else is kept (attestations,
   * annotations), else OCI. A Docker list holds no annotations: `docker` with `annotations` is refused,
   * and annotations kept from the sources are dropped (with a note).
   */
  format?: ManifestFormat;
  /** Compute and return the index, push nothing. */
  dryRun?: boolean;
  /** Accept a user-given platform that disagrees with the image config. */
  forcePlatform?: boolean;
  /** Keep attestations of source indexes attached to their subjects (default true). */
  attestations?: boolean;
  /** Two sources for one platform: an error (default), or keep the first / the last. */
  duplicates?: 'error' | 'first' | 'last';
  concurrency?: number;
  mount?: boolean;
}

export interface IndexEntrySummary {
  platform: string;
  digest: string;
  from: string;
  attestations: string[];
}

export interface IndexCreateResult {
  raw: Buffer;
  descriptor: Descriptor;
  entries: IndexEntrySummary[];
  /** Targets (input form) that were tagged; empty on a dry run. */
  pushed: string[];
  notes: string[];
}

/** An image of the index, with the source it is read from. */
interface Entry {
  desc: Descriptor;
  platform: Platform;
  from: string;
  source: ContentSource;
  /** Each with its own source: an attestation can come from another repository than its image. */
  attachments: Attachment[];
}

/** An attestation or referrer, with the source it is read from (the one that named it). */
interface Attachment {
  desc: Descriptor;
  subject: string;
  from: string;
  source: ContentSource;
}

/** The index a source (or the appended target) named, as read. */
interface RootIndex {
  descriptor: Descriptor;
  raw: Buffer;
  annotations: Record<string, string> | undefined;
  /** Digests of every manifest it lists. */
  digests: string[];
}

interface SourceContent {
  entries: Entry[];
  attachments: Attachment[];
  /** Set when the source is an index. */
  index?: RootIndex;
}

function call(opts: CallOptions): CallOptions {
  return { ...(opts.signal ? { signal: opts.signal } : {}), ...(opts.progress ? { progress: opts.progress } : {}) };
}

function prefixed(e: unknown, input: string): unknown {
  if (e instanceof ArchwayError && !e.message.includes(input)) {
    return new ArchwayError(e.code, `${input}: ${e.message}`, { cause: e, details: { ...e.details, source: input }, ...(e.hint ? { hint: e.hint } : {}) });
  }
  return e;
}

function plain(d: Descriptor): Descriptor {
  return { mediaType: d.mediaType, digest: d.digest, size: d.size };
}

/** Reads what one source contributes: platform entries, and attestations/referrers of them. */
async function readSource(src: IndexSource, opts: IndexCreateOptions, note: (t: string) => void): Promise<SourceContent> {
  const c = call(opts);
  const root = await src.source.resolve(src.reference, c);
  const parsed = await readManifestOrIndex(src.source, root, c);
  const rootDesc: Descriptor = { mediaType: parsed.mediaType, digest: parsed.digest, size: parsed.raw.length };
  const entries: Entry[] = [];
  const attachments: Attachment[] = [];
  if (!isIndex(parsed)) {
    if (parsed.value.subject) {
      attachments.push({ desc: { ...rootDesc, ...(parsed.value.artifactType ? { artifactType: parsed.value.artifactType } : {}) }, subject: parsed.value.subject.digest, from: src.input, source: src.source });
      return { entries, attachments };
    }
    const img = await loadImage(src.source, rootDesc, c);
    let platform = img.platform;
    if (src.platform && !platformEquals(src.platform, img.platform)) {
      if (!opts.forcePlatform) {
        throw new ArchwayError('PLATFORM', `${src.input} says ${formatPlatform(img.platform)} but was given ${formatPlatform(src.platform)}`, {
          hint: 'fix the platform, or pass --force-platform to write the given platform anyway',
          details: { source: src.input, config: formatPlatform(img.platform), given: formatPlatform(src.platform) },
        });
      }
      note(`${src.input}: its config says ${formatPlatform(img.platform)}; writing ${formatPlatform(src.platform)} as asked (--force-platform)`);
      platform = src.platform;
    }
    entries.push({ desc: rootDesc, platform: normalizePlatform(platform), from: src.input, source: src.source, attachments: [] });
    return { entries, attachments };
  }
  const index: RootIndex = { descriptor: rootDesc, raw: parsed.raw, annotations: parsed.value.annotations, digests: parsed.value.manifests.map((d) => d.digest) };
  for (const d of parsed.value.manifests) {
    if (isAttestation(d)) {
      attachments.push({ desc: d, subject: attestationSubject(d) ?? '', from: src.input, source: src.source });
      continue;
    }
    if (isUnknownPlatform(d.platform) || d.artifactType) {
      const child = await readManifestOrIndex(src.source, d, c);
      if (child.value.subject) {
        attachments.push({ desc: d, subject: child.value.subject.digest, from: src.input, source: src.source });
        continue;
      }
      if (isUnknownPlatform(d.platform)) {
        if (isIndex(child)) {
          note(`${src.input}: skipped nested index ${shortDigest(d.digest)} without a platform`);
          continue;
        }
        const img = await loadImage(src.source, d, c);
        if (isUnknownPlatform(img.platform)) {
          note(`${src.input}: skipped ${shortDigest(d.digest)}: platform unknown/unknown and no subject`);
          continue;
        }
        entries.push({ desc: plain(d), platform: img.platform, from: src.input, source: src.source, attachments: [] });
        continue;
      }
    }
    const e: Entry = { desc: { ...plain(d), ...(d.annotations ? { annotations: d.annotations } : {}) }, platform: normalizePlatform(d.platform as Platform), from: src.input, source: src.source, attachments: [] };
    entries.push(e);
  }
  if (src.platform) {
    const wanted = src.platform;
    const hit = entries.filter((e) => platformEquals(e.platform, wanted));
    if (hit.length === 0) {
      throw new ArchwayError('PLATFORM', `${src.input} is an index without ${formatPlatform(wanted)}; it has: ${entries.map((e) => formatPlatform(e.platform)).join(', ') || 'none'}`);
    }
    const keep = new Set<string>(hit.map((e) => e.desc.digest));
    return { entries: hit, attachments: attachments.filter((a) => keep.has(a.subject)), index };
  }
  return { entries, attachments, index };
}

/** The annotations every one of `maps` has, with the same value. */
function agreed(maps: ReadonlyArray<Record<string, string> | undefined>): Record<string, string> {
  const [first, ...rest] = maps;
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(first ?? {})) if (rest.every((m) => m !== undefined && Object.hasOwn(m, k) && m[k] === v)) out[k] = v;
  return out;
}

function sameAnnotations(a: Record<string, string> | undefined, b: Record<string, string> | undefined): boolean {
  const ka = Object.keys(a ?? {});
  return ka.length === Object.keys(b ?? {}).length && ka.every((k) => Object.hasOwn(b ?? {}, k) && (b ?? {})[k] === (a ?? {})[k]);
}

function sameDigests(a: readonly string[], b: readonly string[]): boolean {
  if (a.length !== b.length) return false;
  const x = [...a].sort();
  const y = [...b].sort();
  return x.every((d, i) => d === y[i]);
}

export interface ParsedAnnotation {
  scope: 'index' | 'manifest-descriptor';
  platform?: Platform;
  key: string;
  value: string;
}

/** Parses buildx-style annotations: `key=value`, `index:key=value`, `manifest-descriptor[linux/arm64]:key=value`. */
export function parseAnnotation(text: string): ParsedAnnotation {
  const m = /^(?:([a-z-]+)(?:\[([^\]]+)\])?:)?([^=:][^=]*)=(.*)$/s.exec(text);
  const bad = (why: string): ArchwayError =>
    new ArchwayError('USAGE', `invalid annotation "${text}": ${why}`, { hint: 'write key=value, index:key=value or manifest-descriptor[linux/arm64]:key=value' });
  if (!m) throw bad('expected [TYPE[PLATFORM]:]KEY=VALUE');
  const [, type, platform, key, value] = m;
  if (type !== undefined && type !== 'index' && type !== 'manifest-descriptor') {
    throw bad(type === 'manifest' || type === 'index-descriptor' ? `"${type}" annotations would change the images themselves; only index and manifest-descriptor are supported here` : `unknown type "${type}"`);
  }
  if (platform !== undefined && type !== 'manifest-descriptor') throw bad('a [platform] applies to manifest-descriptor only');
  const out: ParsedAnnotation = { scope: type === 'manifest-descriptor' ? 'manifest-descriptor' : 'index', key: (key as string).trim(), value: value as string };
  if (platform !== undefined) out.platform = parsePlatform(platform);
  return out;
}

/**
 * Creates (or extends) an index from images and indexes anywhere, copies what each target's
 * repository lacks (blobs, then child manifests), pushes the index and tags it last. Every
 * manifest and blob is read from the source that named it: one image can come from one
 * repository and its attestation from another. A single source index that nothing changes is
 * written as it is (same bytes, same digest), as `docker buildx imagetools create` does.
 */
export async function createIndex(sources: readonly IndexSource[], targets: readonly IndexTarget[], opts: IndexCreateOptions = {}): Promise<IndexCreateResult> {
  const c = call(opts);
  const notes: string[] = [];
  // Notes go to the result and, as they happen, to progress (the CLI renders them from there).
  const note = (text: string): void => {
    notes.push(text);
    opts.progress?.emit({ kind: 'message', level: 'info', text });
  };
  if (targets.length === 0 && !opts.dryRun) throw new ArchwayError('USAGE', 'no target given (-t TARGET)');
  if (sources.length === 0 && !opts.append && !(opts.remove && opts.remove.length > 0)) throw new ArchwayError('USAGE', 'no source image given');
  const annotationTexts = opts.annotations ?? [];
  const annotations = annotationTexts.map(parseAnnotation);
  if (opts.format === 'docker' && annotationTexts.length > 0) {
    throw new ArchwayError('USAGE', `a Docker manifest list (--format docker) has no annotations: cannot write ${annotationTexts.map((t) => `--annotation "${t}"`).join(', ')}`, {
      hint: 'use --format oci (an OCI index holds annotations), or leave out --annotation',
      details: { annotations: annotationTexts },
    });
  }
  const keepAttestations = opts.attestations !== false;

  // 1. What each source brings.
  const fresh: Entry[] = [];
  const freshAttachments: Attachment[] = [];
  const sourceIndexes: RootIndex[] = [];
  for (const s of sources) {
    throwIfAborted(opts.signal);
    let got;
    try {
      got = await readSource(s, opts, note);
    } catch (e) {
      throw prefixed(e, s.input);
    }
    fresh.push(...got.entries);
    freshAttachments.push(...got.attachments);
    if (got.index) sourceIndexes.push(got.index);
  }

  // 2. Two sources for one platform. The same image twice is one entry (read from the first
  // source), with the descriptor annotations of both, the later winning (as buildx merges).
  const chosen: Entry[] = [];
  for (const e of fresh) {
    const i = chosen.findIndex((x) => platformEquals(x.platform, e.platform));
    const prior = chosen[i];
    if (!prior) {
      chosen.push(e);
      continue;
    }
    if (prior.desc.digest === e.desc.digest) {
      if (e.desc.annotations) prior.desc = { ...prior.desc, annotations: { ...(prior.desc.annotations ?? {}), ...e.desc.annotations } };
      continue;
    }
    const policy = opts.duplicates ?? 'error';
    if (policy === 'error') {
      throw new ArchwayError('PLATFORM', `two sources for ${formatPlatform(e.platform)}: ${prior.from} (${shortDigest(prior.desc.digest)}) and ${e.from} (${shortDigest(e.desc.digest)})`, {
        hint: 'give each platform once, or choose with --duplicates first|last',
        details: { platform: formatPlatform(e.platform), sources: [prior.from, e.from] },
      });
    }
    if (policy === 'last') {
      chosen[i] = e;
      note(`${formatPlatform(e.platform)}: ${e.from} replaces ${prior.from}`);
    } else note(`${formatPlatform(e.platform)}: kept ${prior.from}, ignored ${e.from}`);
  }

  // 3. The existing index at the first target.
  let merged: Entry[] = chosen;
  let existingAttachments: Attachment[] = [];
  let existing: RootIndex | undefined;
  let existingIsImage = false;
  const first = targets[0];
  if (opts.append && first) {
    let rootDesc: Descriptor | undefined;
    try {
      rootDesc = await first.target.resolve(first.reference, c);
    } catch (e) {
      if (!(e instanceof ArchwayError && e.code === 'NOT_FOUND')) throw prefixed(e, first.input);
      note(`${first.input} does not exist yet; --append starts a new index`);
    }
    if (rootDesc) {
      const got = await readSource({ input: `${first.input} (existing)`, source: first.target, reference: first.reference }, opts, note);
      existing = got.index;
      existingIsImage = !got.index;
      existingAttachments = got.attachments;
      merged = [];
      for (const old of got.entries) {
        const replacement = chosen.find((n) => platformEquals(n.platform, old.platform));
        if (replacement) {
          if (replacement.desc.digest !== old.desc.digest) note(`${formatPlatform(old.platform)}: ${replacement.from} replaces ${shortDigest(old.desc.digest)} of ${first.input}`);
          else if (old.desc.annotations) replacement.desc = { ...replacement.desc, annotations: { ...old.desc.annotations, ...(replacement.desc.annotations ?? {}) } };
          merged.push(replacement);
        } else merged.push(old);
      }
      for (const n of chosen) if (!merged.includes(n)) merged.push(n);
    }
  }
  // One source index, nothing appended to: the index being copied (its media type and bytes are kept when nothing changes).
  const sole = !existing && !existingIsImage && sources.length === 1 && sourceIndexes.length === 1 ? sourceIndexes[0] : undefined;

  // 4. Removals.
  for (const p of opts.remove ?? []) {
    const before = merged.length;
    merged = merged.filter((e) => !platformEquals(e.platform, p));
    if (merged.length === before) {
      throw new ArchwayError('PLATFORM', `cannot remove ${formatPlatform(p)}: the index has ${merged.map((e) => formatPlatform(e.platform)).join(', ') || 'no platforms'}`);
    }
    note(`removed ${formatPlatform(p)}`);
  }
  if (merged.length === 0) throw new ArchwayError('USAGE', 'the index would have no platform');

  // 5. Attestations follow their subjects (each read from the source that named it).
  const attachments = [...existingAttachments, ...freshAttachments];
  let dropped = 0;
  for (const a of attachments) {
    const subject = merged.find((e) => e.desc.digest === a.subject);
    if (!subject || !keepAttestations) {
      dropped++;
      continue;
    }
    if (!subject.attachments.some((x) => x.desc.digest === a.desc.digest)) subject.attachments.push(a);
  }
  if (!keepAttestations && attachments.length > 0) note(`dropped ${attachments.length} attestation manifest(s) (--no-attestations)`);
  else if (dropped > 0) note(`dropped ${dropped} attestation manifest(s) whose image is not in the index`);

  // 6. Annotations: those of the index appended to, else those every source index agrees on; then the given ones.
  for (const a of annotations) {
    if (a.scope === 'manifest-descriptor' && a.platform && !merged.some((e) => platformEquals(e.platform, a.platform as Platform))) {
      throw new ArchwayError('PLATFORM', `annotation for ${formatPlatform(a.platform)}, but the index has ${merged.map((e) => formatPlatform(e.platform)).join(', ')}`);
    }
  }
  const inheritedIndex: Record<string, string> = existing ? { ...(existing.annotations ?? {}) } : existingIsImage ? {} : agreed(sourceIndexes.map((i) => i.annotations));
  let indexAnnotations: Record<string, string> = { ...inheritedIndex };
  for (const a of annotations) if (a.scope === 'index') indexAnnotations[a.key] = a.value;
  const entryAnnotations = new Map<Entry, Record<string, string>>();
  for (const e of merged) {
    const ann: Record<string, string> = { ...(e.desc.annotations ?? {}) };
    for (const a of annotations) if (a.scope === 'manifest-descriptor' && (!a.platform || platformEquals(a.platform, e.platform))) ann[a.key] = a.value;
    entryAnnotations.set(e, ann);
  }
  const annotated = (): string[] => {
    const out: string[] = [];
    if (Object.keys(indexAnnotations).length > 0) out.push(`index: ${Object.keys(indexAnnotations).join(', ')}`);
    for (const e of merged) {
      const keys = Object.keys(entryAnnotations.get(e) ?? {});
      if (keys.length > 0) out.push(`${formatPlatform(e.platform)}: ${keys.join(', ')}`);
    }
    return out;
  };

  // 7. Media type. A Docker manifest list holds neither attestations nor annotations.
  const hasAttachments = merged.some((e) => e.attachments.length > 0);
  const allDocker = merged.every((e) => isDockerMediaType(e.desc.mediaType));
  const keptType = existing?.descriptor.mediaType ?? sole?.descriptor.mediaType;
  let format: ManifestFormat;
  if (opts.format) format = opts.format;
  else if (keptType) format = keptType === MediaType.DockerManifestList && allDocker ? 'docker' : 'oci';
  else format = allDocker && !hasAttachments ? 'docker' : 'oci';
  let droppedAnnotations = false;
  if (format === 'docker') {
    const named = annotated();
    if (named.length > 0 && !opts.format) {
      format = 'oci';
      note(`wrote an OCI index, not a Docker manifest list: the images are Docker manifests, but a Docker manifest list cannot hold annotations (${named.join('; ')})`);
    } else if (named.length > 0) {
      // Only inherited ones reach here: given ones with --format docker were refused above.
      note(`dropped annotations: a Docker manifest list cannot hold them (${named.join('; ')}) (use --format oci to keep them)`);
      indexAnnotations = {};
      for (const e of merged) entryAnnotations.set(e, {});
      droppedAnnotations = true;
    }
  }
  if (format === 'docker' && hasAttachments) {
    note('dropped attestations: a Docker manifest list cannot hold them (use --format oci to keep them)');
    for (const e of merged) e.attachments = [];
  }

  // 8. Plan the content per source (conversion only where a Docker list cannot hold an OCI image):
  // images first, then attestations, each from the source that named it.
  const imagePlans = new Map<ContentSource, CopyPlan>();
  const attachmentPlans = new Map<ContentSource, CopyPlan>();
  const planFor = (plans: Map<ContentSource, CopyPlan>, s: ContentSource): CopyPlan => {
    let p = plans.get(s);
    if (!p) {
      p = new CopyPlan();
      plans.set(s, p);
    }
    return p;
  };
  const manifests: Descriptor[] = [];
  const tail: Descriptor[] = [];
  const summaries: IndexEntrySummary[] = [];
  let rewritten = false;
  for (const e of merged) {
    const needConvert = format === 'docker' && !isDockerMediaType(e.desc.mediaType);
    if (needConvert && isIndexMediaType(e.desc.mediaType)) throw new ArchwayError('FORMAT', `${e.from}: a nested OCI index cannot go into a Docker manifest list`);
    let r;
    try {
      r = await planNode(e.source, e.desc, planFor(imagePlans, e.source), { ...c, format: needConvert ? 'docker' : undefined, note });
    } catch (err) {
      throw opts.signal?.aborted ? err : prefixed(err, e.from);
    }
    if (r.rewritten) rewritten = true;
    const d: Descriptor = { mediaType: r.descriptor.mediaType, digest: r.descriptor.digest, size: r.descriptor.size, platform: e.platform };
    const ann = entryAnnotations.get(e) ?? {};
    if (Object.keys(ann).length > 0) d.annotations = ann;
    manifests.push(d);
    const atts: string[] = [];
    for (const a of e.attachments) {
      try {
        await planNode(a.source, a.desc, planFor(attachmentPlans, a.source), { ...c, note });
      } catch (err) {
        throw opts.signal?.aborted ? err : prefixed(err, a.from);
      }
      const ad: Descriptor = { mediaType: a.desc.mediaType, digest: a.desc.digest, size: a.desc.size };
      if (a.desc.platform) ad.platform = a.desc.platform;
      if (a.desc.artifactType) ad.artifactType = a.desc.artifactType;
      if (a.desc.annotations) {
        ad.annotations = { ...a.desc.annotations };
        if (r.rewritten && a.desc.annotations['vnd.docker.reference.digest']) ad.annotations['vnd.docker.reference.digest'] = d.digest;
      }
      tail.push(ad);
      atts.push(a.desc.digest);
    }
    summaries.push({ platform: formatPlatform(e.platform), digest: d.digest, from: e.from, attestations: atts });
  }
  const mediaType = format === 'docker' ? MediaType.DockerManifestList : MediaType.OciIndex;
  const all = [...manifests, ...tail];
  // A single source index that nothing changes (no annotation given, nothing added, removed,
  // dropped or converted) is written as it is: its own bytes, its own digest.
  const unchanged =
    sole !== undefined &&
    annotations.length === 0 &&
    !droppedAnnotations &&
    !rewritten &&
    sole.descriptor.mediaType === mediaType &&
    sameAnnotations(sole.annotations, indexAnnotations) &&
    sameDigests(sole.digests, all.map((d) => d.digest));
  const built = unchanged && sole ? { raw: sole.raw, descriptor: plain(sole.descriptor) } : rewriteIndex(undefined, mediaType, all, indexAnnotations);
  const result: IndexCreateResult = { raw: built.raw, descriptor: built.descriptor, entries: summaries, pushed: [], notes };
  if (opts.dryRun) return result;

  // 9. Content into every target, then the index, then the tags (last, and only when all is there).
  // A failure drops what archive targets staged: nothing half-written is left beside them.
  try {
    await writeTargets(targets, [...imagePlans, ...attachmentPlans], built, opts, c, result);
  } catch (e) {
    for (const t of targets) await t.target.abort?.().catch(() => undefined);
    throw e;
  }
  return result;
}

async function writeTargets(
  targets: ReadonlyArray<{ target: ContentTarget; reference: string; input: string }>,
  plans: ReadonlyArray<readonly [ContentSource, CopyPlan]>,
  built: { raw: Buffer; descriptor: Descriptor },
  opts: IndexCreateOptions,
  c: CallOptions,
  result: IndexCreateResult,
): Promise<void> {
  for (const t of targets) {
    for (const [source, plan] of plans) {
      throwIfAborted(opts.signal);
      try {
        await executePlan(source, t.target, plan, { ...c, ...(opts.concurrency ? { concurrency: opts.concurrency } : {}), ...(opts.mount === false ? { mount: false } : {}) });
      } catch (e) {
        throw prefixed(e, t.input);
      }
    }
    throwIfAborted(opts.signal);
    if (!(await t.target.exists(built.descriptor, c))) await t.target.push(built.descriptor, built.raw, c);
  }
  for (const t of targets) {
    throwIfAborted(opts.signal);
    await t.target.tag(built.descriptor, t.reference, c);
    await t.target.close?.(c);
    result.pushed.push(t.input);
  }
}
