import { ArchwayError } from '../util/index.js';
import { familiarName, parseLocation, type ImageLocation } from '../ref/index.js';
import {
  attestationSubject,
  formatPlatform,
  isAttestation,
  isUnknownPlatform,
  type Descriptor,
  type Digest,
  type HealthConfig,
  type ImageIndex,
  type Platform,
} from '../oci/index.js';
import { isIndex, loadImage, readManifestOrIndex, resolveImageForPlatform, type CallOptions, type ContentSource, type LoadedImage } from '../image/index.js';

export interface AttestationInfo {
  digest: Digest;
  mediaType: string;
  size: number;
  /** `attestation-manifest` (BuildKit) or the artifactType of an OCI 1.1 referrer. */
  type: string;
  annotations?: Record<string, string>;
}

export interface IndexEntryInfo {
  digest: Digest;
  mediaType: string;
  size: number;
  platform: string;
  annotations?: Record<string, string>;
  attestations: AttestationInfo[];
}

export interface LayerInfo {
  digest: Digest;
  mediaType: string;
  size: number;
}

export interface ImageDetails {
  digest: Digest;
  mediaType: string;
  platform: string;
  os: string;
  architecture: string;
  variant?: string;
  created?: string;
  user?: string;
  workingDir?: string;
  entrypoint?: string[] | null;
  cmd?: string[] | null;
  env: string[];
  labels: Record<string, string>;
  /** The rest of the run configuration, when the image sets it (`8080/tcp`, volume paths, ...). */
  exposedPorts?: string[];
  volumes?: string[];
  stopSignal?: string;
  shell?: string[];
  healthcheck?: HealthConfig;
  onBuild?: string[];
  config: { digest: Digest; mediaType: string; size: number };
  layers: LayerInfo[];
  /** Compressed size: config and layers. */
  size: number;
}

export interface InspectResult {
  name: string;
  mediaType: string;
  digest: Digest;
  size: number;
  /** The exact bytes of the root manifest or index. */
  raw: Buffer;
  annotations?: Record<string, string>;
  /** For an index: its platform entries, each with its attestations. */
  manifests?: IndexEntryInfo[];
  /** Index entries that are neither a platform nor attached to one (dangling attestations, artifacts). */
  others?: Array<{ digest: Digest; mediaType: string; size: number; platform?: string; annotations?: Record<string, string>; subject?: string }>;
  /** The image (a single manifest, or the entry for --platform). */
  image?: ImageDetails;
}

export interface InspectOptions extends CallOptions {
  /** Show the image for this platform (config, layers) instead of the index. */
  platform?: Platform;
}

function details(img: LoadedImage): ImageDetails {
  const cfg = img.config.config ?? {};
  const m = img.manifest.value;
  const out: ImageDetails = {
    digest: img.descriptor.digest,
    mediaType: img.descriptor.mediaType,
    platform: formatPlatform(img.platform),
    os: img.platform.os,
    architecture: img.platform.architecture,
    env: cfg.Env ?? [],
    labels: cfg.Labels ?? {},
    config: { digest: m.config.digest, mediaType: m.config.mediaType, size: m.config.size },
    layers: m.layers.map((l) => ({ digest: l.digest, mediaType: l.mediaType, size: l.size })),
    size: m.config.size + m.layers.reduce((a, l) => a + l.size, 0),
  };
  if (img.platform.variant) out.variant = img.platform.variant;
  if (img.config.created) out.created = img.config.created;
  if (cfg.User) out.user = cfg.User;
  if (cfg.WorkingDir) out.workingDir = cfg.WorkingDir;
  if (cfg.Entrypoint !== undefined) out.entrypoint = cfg.Entrypoint;
  if (cfg.Cmd !== undefined) out.cmd = cfg.Cmd;
  if (cfg.ExposedPorts && Object.keys(cfg.ExposedPorts).length > 0) out.exposedPorts = Object.keys(cfg.ExposedPorts);
  if (cfg.Volumes && Object.keys(cfg.Volumes).length > 0) out.volumes = Object.keys(cfg.Volumes);
  if (cfg.StopSignal) out.stopSignal = cfg.StopSignal;
  if (cfg.Shell && cfg.Shell.length > 0) out.shell = cfg.Shell;
  if (cfg.Healthcheck) out.healthcheck = cfg.Healthcheck;
  if (cfg.OnBuild && cfg.OnBuild.length > 0) out.onBuild = cfg.OnBuild;
  return out;
}

/**
 * Classifies the entries of an index: platform images, and the attestations or OCI 1.1 referrers
 * (manifests with a `subject`) that describe them. Manifests without a platform in the descriptor
 * are read to find a subject.
 */
export async function classifyIndex(source: ContentSource, index: ImageIndex, opts: CallOptions = {}): Promise<{ entries: IndexEntryInfo[]; others: NonNullable<InspectResult['others']> }> {
  const entries: IndexEntryInfo[] = [];
  const pending: Array<{ subject: string; info: AttestationInfo; d: Descriptor }> = [];
  const others: NonNullable<InspectResult['others']> = [];
  for (const d of index.manifests) {
    if (isAttestation(d)) {
      const info: AttestationInfo = { digest: d.digest, mediaType: d.mediaType, size: d.size, type: 'attestation-manifest' };
      if (d.annotations) info.annotations = d.annotations;
      pending.push({ subject: attestationSubject(d) ?? '', info, d });
      continue;
    }
    let subject: string | undefined;
    let artifactType = d.artifactType;
    if (isUnknownPlatform(d.platform) || d.artifactType) {
      try {
        const p = await readManifestOrIndex(source, d, opts);
        subject = p.value.subject?.digest;
        artifactType ??= p.value.artifactType ?? (isIndex(p) ? undefined : p.value.config.mediaType);
      } catch {
        subject = undefined;
      }
    }
    if (subject) {
      const info: AttestationInfo = { digest: d.digest, mediaType: d.mediaType, size: d.size, type: artifactType ?? 'referrer' };
      if (d.annotations) info.annotations = d.annotations;
      pending.push({ subject, info, d });
      continue;
    }
    if (isUnknownPlatform(d.platform)) {
      const o: NonNullable<InspectResult['others']>[number] = { digest: d.digest, mediaType: d.mediaType, size: d.size };
      if (d.platform) o.platform = formatPlatform(d.platform);
      if (d.annotations) o.annotations = d.annotations;
      others.push(o);
      continue;
    }
    const e: IndexEntryInfo = { digest: d.digest, mediaType: d.mediaType, size: d.size, platform: formatPlatform(d.platform as Platform), attestations: [] };
    if (d.annotations) e.annotations = d.annotations;
    entries.push(e);
  }
  for (const p of pending) {
    const e = entries.find((x) => x.digest === p.subject);
    if (e) e.attestations.push(p.info);
    else {
      const o: NonNullable<InspectResult['others']>[number] = { digest: p.d.digest, mediaType: p.d.mediaType, size: p.d.size, subject: p.subject || 'none' };
      if (p.d.platform) o.platform = formatPlatform(p.d.platform);
      if (p.d.annotations) o.annotations = p.d.annotations;
      others.push(o);
    }
  }
  return { entries, others };
}

/** What `archway inspect` shows, as data: the root, the platforms of an index, or one image. */
export async function inspect(source: ContentSource, reference: string, opts: InspectOptions = {}): Promise<InspectResult> {
  const c: CallOptions = { ...(opts.signal ? { signal: opts.signal } : {}), ...(opts.progress ? { progress: opts.progress } : {}) };
  const root = await source.resolve(reference, c);
  const parsed = await readManifestOrIndex(source, root, c);
  const name = `${source.name}${reference.startsWith('sha256:') || reference.startsWith('sha512:') ? '@' : ':'}${reference}`;
  const result: InspectResult = { name, mediaType: parsed.mediaType, digest: parsed.digest, size: parsed.raw.length, raw: parsed.raw };
  if (parsed.value.annotations) result.annotations = parsed.value.annotations;
  const rootDesc: Descriptor = { mediaType: parsed.mediaType, digest: parsed.digest, size: parsed.raw.length };
  if (isIndex(parsed)) {
    const { entries, others } = await classifyIndex(source, parsed.value, c);
    result.manifests = entries;
    if (others.length > 0) result.others = others;
    if (opts.platform) result.image = details(await resolveImageForPlatform(source, rootDesc, opts.platform, { ...c, what: name }));
  } else {
    if (opts.platform) result.image = details(await resolveImageForPlatform(source, rootDesc, opts.platform, { ...c, what: name, strict: true }));
    else result.image = details(await loadImage(source, rootDesc, c));
  }
  return result;
}

function fmtSize(n: number): string {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
  if (n < 1024 * 1024 * 1024) return `${(n / 1024 / 1024).toFixed(1)} MiB`;
  return `${(n / 1024 / 1024 / 1024).toFixed(2)} GiB`;
}

function json(v: unknown): string {
  return JSON.stringify(v);
}

/** What a child manifest's name starts with: the name inspected without its tag or digest (`store:app`, `oci:DIR`). */
function manifestNameBase(name: string): string {
  let loc: ImageLocation;
  try {
    loc = parseLocation(name);
  } catch {
    return name;
  }
  switch (loc.transport) {
    case 'registry':
      return name.replace(/@sha(256|512):[0-9a-f]+$/, '').replace(/:[^:/@]+$/, '');
    case 'store':
      return `store:${familiarName({ registry: loc.ref.registry, repository: loc.ref.repository })}`;
    default:
      return `${loc.transport}:${loc.path}`;
  }
}

/** Text in the manner of `docker buildx imagetools inspect`. */
export function formatInspectText(r: InspectResult, opts: { platformOnly?: boolean } = {}): string {
  const lines: string[] = [];
  const base = manifestNameBase(r.name);
  if (!opts.platformOnly) {
    lines.push(`Name:      ${r.name}`, `MediaType: ${r.mediaType}`, `Digest:    ${r.digest}`);
    if (r.annotations) {
      lines.push('Annotations:');
      for (const [k, v] of Object.entries(r.annotations)) lines.push(`  ${k}: ${v}`);
    }
    if (r.manifests) {
      lines.push('', 'Manifests:');
      for (const e of r.manifests) {
        lines.push(`  Name:        ${base}@${e.digest}`, `  MediaType:   ${e.mediaType}`, `  Platform:    ${e.platform}`);
        if (e.annotations) {
          lines.push('  Annotations:');
          for (const [k, v] of Object.entries(e.annotations)) lines.push(`    ${k}: ${v}`);
        }
        for (const a of e.attestations) lines.push(`  Attestation: ${a.digest} (${a.type})`);
        lines.push('');
      }
      if (r.others && r.others.length > 0) {
        lines.push('Other entries (not a platform):');
        for (const o of r.others) {
          const why = o.subject !== undefined ? `attached to ${o.subject}, which this index does not hold` : `platform ${o.platform ?? 'none'}`;
          lines.push(`  ${o.digest} ${o.mediaType} (${why})`);
        }
        lines.push('');
      }
    }
  }
  if (r.image) {
    const i = r.image;
    if (!opts.platformOnly && !r.manifests) lines.push('');
    if (r.manifests) lines.push(`Image for ${i.platform}:`, `  Digest:       ${i.digest}`);
    lines.push(`  Platform:     ${i.platform}`, `  OS:           ${i.os}`, `  Architecture: ${i.architecture}`);
    if (i.variant) lines.push(`  Variant:      ${i.variant}`);
    if (i.created) lines.push(`  Created:      ${i.created}`);
    if (i.user) lines.push(`  User:         ${i.user}`);
    if (i.workingDir) lines.push(`  WorkingDir:   ${i.workingDir}`);
    lines.push(`  Entrypoint:   ${i.entrypoint ? json(i.entrypoint) : '-'}`, `  Cmd:          ${i.cmd ? json(i.cmd) : '-'}`);
    if (i.shell) lines.push(`  Shell:        ${json(i.shell)}`);
    if (i.exposedPorts) lines.push(`  Ports:        ${i.exposedPorts.join(', ')}`);
    if (i.volumes) lines.push(`  Volumes:      ${i.volumes.join(', ')}`);
    if (i.stopSignal) lines.push(`  StopSignal:   ${i.stopSignal}`);
    if (i.healthcheck) lines.push(`  Healthcheck:  ${i.healthcheck.Test ? json(i.healthcheck.Test) : '-'}${healthTimes(i.healthcheck)}`);
    if (i.onBuild) {
      lines.push('  OnBuild:');
      for (const t of i.onBuild) lines.push(`    ${t}`);
    }
    lines.push('  Env:');
    for (const e of i.env) lines.push(`    ${e}`);
    if (Object.keys(i.labels).length > 0) {
      lines.push('  Labels:');
      for (const [k, v] of Object.entries(i.labels)) lines.push(`    ${k}=${v}`);
    }
    lines.push(`  Layers (${i.layers.length}, ${fmtSize(i.size)} with config):`);
    for (const l of i.layers) lines.push(`    ${l.digest}  ${fmtSize(l.size).padStart(10)}  ${l.mediaType}`);
  }
  return `${lines.join('\n').replace(/\n+$/, '')}\n`;
}

/** ` (interval 30s, timeout 3s, retries 3)`: the durations a HEALTHCHECK set (nanoseconds in the config). */
function healthTimes(h: HealthConfig): string {
  const parts: string[] = [];
  const secs = (ns: number): string => `${ns / 1e9}s`;
  if (h.Interval) parts.push(`interval ${secs(h.Interval)}`);
  if (h.Timeout) parts.push(`timeout ${secs(h.Timeout)}`);
  if (h.StartPeriod) parts.push(`start period ${secs(h.StartPeriod)}`);
  if (h.StartInterval) parts.push(`start interval ${secs(h.StartInterval)}`);
  if (h.Retries) parts.push(`retries ${h.Retries}`);
  return parts.length > 0 ? ` (${parts.join(', ')})` : '';
}

/** JSON for `--format json`: everything but the raw bytes. */
export function inspectJson(r: InspectResult): Record<string, unknown> {
  const { raw: _raw, ...rest } = r;
  return rest;
}

/** One platform per line (`archway index inspect --platforms`), attestations excluded. */
export function platformLines(r: InspectResult): string {
  if (r.manifests) return r.manifests.map((m) => `${m.platform}\n`).join('');
  if (r.image) return `${r.image.platform}\n`;
  throw new ArchwayError('FORMAT', `${r.name} has no platform`);
}

