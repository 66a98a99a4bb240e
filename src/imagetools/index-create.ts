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
  /** `key=value` / `index:key=value`, `manifest-descriptor:key=value`, `manifest-descriptor[linux/arm64]:key=value`. */
  annotations?: string[];
  /** The index's media type; default: a Docker list when every image is a Docker manifest and nothing else is kept, else OCI. */
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

interface Entry {
  desc: Descriptor;
  platform: Platform;
  from: string;
  source: ContentSource;
  attachments: Descriptor[];
}

interface Attachment {
  desc: Descriptor;
  subject: string;
  from: string;
  source: ContentSource;
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
async function readSource(src: IndexSource, opts: IndexCreateOptions, note: (t: string) => void): Promise<{ entries: Entry[]; attachments: Attachment[] }> {
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
    return { entries: hit, attachments: attachments.filter((a) => keep.has(a.subject)) };
  }
  return { entries, attachments };
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
 * repository lacks (blobs, then child manifests), pushes the index and tags it last.
 */
export async function createIndex(sources: readonly IndexSource[], targets: readonly IndexTarget[], opts: IndexCreateOptions = {}): Promise<IndexCreateResult> {
  const c = call(opts);
  const notes: string[] = [];
  const note = (text: string): void => {
    notes.push(text);
    opts.progress?.emit({ kind: 'message', level: 'info', text });
  };
  if (targets.length === 0 && !opts.dryRun) throw new ArchwayError('USAGE', 'no target given (-t TARGET)');
  if (sources.length === 0 && !opts.append && !(opts.remove && opts.remove.length > 0)) throw new ArchwayError('USAGE', 'no source image given');
  const annotations = (opts.annotations ?? []).map(parseAnnotation);
  const keepAttestations = opts.attestations !== false;

  // 1. What each source brings.
  const fresh: Entry[] = [];
  const freshAttachments: Attachment[] = [];
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
  }

  // 2. Two sources for one platform.
  const chosen: Entry[] = [];
  for (const e of fresh) {
    const i = chosen.findIndex((x) => platformEquals(x.platform, e.platform));
    const prior = chosen[i];
    if (!prior) {
      chosen.push(e);
      continue;
    }
    if (prior.desc.digest === e.desc.digest) continue;
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
  let existingMediaType: string | undefined;
  let existingAnnotations: Record<string, string> | undefined;
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
      const root = await readManifestOrIndex(first.target, rootDesc, c);
      if (isIndex(root)) {
        existingMediaType = root.mediaType;
        existingAnnotations = root.value.annotations;
      }
      existingAttachments = got.attachments;
      merged = [];
      for (const old of got.entries) {
        const replacement = chosen.find((n) => platformEquals(n.platform, old.platform));
        if (replacement) {
          if (replacement.desc.digest !== old.desc.digest) note(`${formatPlatform(old.platform)}: ${replacement.from} replaces ${shortDigest(old.desc.digest)} of ${first.input}`);
          merged.push(replacement);
        } else merged.push(old);
      }
      for (const n of chosen) if (!merged.includes(n)) merged.push(n);
    }
  }

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

  // 5. Attestations follow their subjects.
  const attachments = [...existingAttachments, ...freshAttachments];
  let dropped = 0;
  for (const a of attachments) {
    const subject = merged.find((e) => e.desc.digest === a.subject);
    if (!subject || !keepAttestations) {
      dropped++;
      continue;
    }
    if (!subject.attachments.some((d) => d.digest === a.desc.digest)) subject.attachments.push(a.desc);
  }
  if (!keepAttestations && attachments.length > 0) note(`dropped ${attachments.length} attestation manifest(s) (--no-attestations)`);
  else if (dropped > 0) note(`dropped ${dropped} attestation manifest(s) whose image is not in the index`);

  // 6. Media type.
  const hasAttachments = merged.some((e) => e.attachments.length > 0);
  const allDocker = merged.every((e) => isDockerMediaType(e.desc.mediaType));
  let format: ManifestFormat;
  if (opts.format) format = opts.format;
  else if (existingMediaType) format = existingMediaType === MediaType.DockerManifestList && allDocker ? 'docker' : 'oci';
  else format = allDocker && !hasAttachments ? 'docker' : 'oci';
  if (format === 'docker' && hasAttachments) {
    note('dropped attestations: a Docker manifest list cannot hold them (use --format oci to keep them)');
    for (const e of merged) e.attachments = [];
  }

  // 7. Plan the content per source (conversion only where a Docker list cannot hold an OCI image).
  const plans = new Map<ContentSource, CopyPlan>();
  const planFor = (s: ContentSource): CopyPlan => {
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
  for (const e of merged) {
    const plan = planFor(e.source);
    const needConvert = format === 'docker' && !isDockerMediaType(e.desc.mediaType);
    if (needConvert && isIndexMediaType(e.desc.mediaType)) throw new ArchwayError('FORMAT', `${e.from}: a nested OCI index cannot go into a Docker manifest list`);
    const r = await planNode(e.source, e.desc, plan, { ...c, format: needConvert ? 'docker' : undefined, note });
    const d: Descriptor = { mediaType: r.descriptor.mediaType, digest: r.descriptor.digest, size: r.descriptor.size, platform: e.platform };
    const ann: Record<string, string> = { ...(e.desc.annotations ?? {}) };
    for (const a of annotations) if (a.scope === 'manifest-descriptor' && (!a.platform || platformEquals(a.platform, e.platform))) ann[a.key] = a.value;
    if (Object.keys(ann).length > 0) d.annotations = ann;
    manifests.push(d);
    const atts: string[] = [];
    for (const a of e.attachments) {
      await planNode(e.source, a, plan, { ...c, note });
      const ad: Descriptor = { mediaType: a.mediaType, digest: a.digest, size: a.size };
      if (a.platform) ad.platform = a.platform;
      if (a.artifactType) ad.artifactType = a.artifactType;
      if (a.annotations) {
        ad.annotations = { ...a.annotations };
        if (r.rewritten && a.annotations['vnd.docker.reference.digest']) ad.annotations['vnd.docker.reference.digest'] = d.digest;
      }
      tail.push(ad);
      atts.push(a.digest);
    }
    summaries.push({ platform: formatPlatform(e.platform), digest: d.digest, from: e.from, attestations: atts });
  }
  for (const a of annotations) {
    if (a.scope === 'manifest-descriptor' && a.platform && !merged.some((e) => platformEquals(e.platform, a.platform as Platform))) {
      throw new ArchwayError('PLATFORM', `annotation for ${formatPlatform(a.platform)}, but the index has ${merged.map((e) => formatPlatform(e.platform)).join(', ')}`);
    }
  }
  const indexAnnotations: Record<string, string> = { ...(existingAnnotations ?? {}) };
  for (const a of annotations) if (a.scope === 'index') indexAnnotations[a.key] = a.value;
  const mediaType = format === 'docker' ? MediaType.DockerManifestList : MediaType.OciIndex;
  const built = rewriteIndex(undefined, mediaType, [...manifests, ...tail], indexAnnotations);
  const result: IndexCreateResult = { raw: built.raw, descriptor: built.descriptor, entries: summaries, pushed: [], notes };
  if (opts.dryRun) return result;

  // 8. Content into every target, then the index, then the tags (last, and only when all is there).
  // A failure drops what archive targets staged: nothing half-written is left beside them.
  try {
    await writeTargets(targets, plans, built, opts, c, result);
  } catch (e) {
    for (const t of targets) await t.target.abort?.().catch(() => undefined);
    throw e;
  }
  return result;
}

async function writeTargets(
  targets: ReadonlyArray<{ target: ContentTarget; reference: string; input: string }>,
  plans: ReadonlyMap<ContentSource, CopyPlan>,
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
