import { ArchwayError, LIMITS, readAllLimited } from '../util/index.js';
import {
  bestMatch,
  formatPlatform,
  isAttestation,
  isIndexMediaType,
  isUnknownPlatform,
  normalizePlatform,
  parseConfig,
  parseManifestOrIndex,
  type Descriptor,
  type ImageConfig,
  type ImageIndex,
  type ImageManifest,
  type Parsed,
  type Platform,
} from '../oci/index.js';
import type { CallOptions, ContentSource } from './target.js';

/** Reads a manifest or index (at most 4 MiB), verified against its descriptor, with its raw bytes. */
export async function readManifestOrIndex(source: ContentSource, desc: Descriptor, opts: CallOptions = {}): Promise<Parsed<ImageManifest> | Parsed<ImageIndex>> {
  const what = `${source.name}@${desc.digest}`;
  if (desc.size > LIMITS.manifest) throw new ArchwayError('INTEGRITY', `${what}: manifest of ${desc.size} bytes is over the 4 MiB limit`);
  const raw = await readSmallBlob(source, desc, LIMITS.manifest, what, opts);
  return parseManifestOrIndex(raw, desc.mediaType, what);
}

export async function readConfig(source: ContentSource, desc: Descriptor, opts: CallOptions = {}): Promise<{ config: ImageConfig; raw: Buffer }> {
  const what = `${source.name} config ${desc.digest}`;
  if (desc.size > LIMITS.config) throw new ArchwayError('INTEGRITY', `${what}: config of ${desc.size} bytes is over the 4 MiB limit`);
  const raw = await readSmallBlob(source, desc, LIMITS.config, what, opts);
  return { config: parseConfig(raw, what), raw };
}

/** A manifest or config in memory, verified: through the source's direct read when it has one. */
async function readSmallBlob(source: ContentSource, desc: Descriptor, limit: number, what: string, opts: CallOptions): Promise<Buffer> {
  if (source.readSmall) return source.readSmall(desc, limit, opts);
  return readAllLimited(await source.fetch(desc, opts), limit, what);
}

export function isIndex(p: Parsed<ImageManifest> | Parsed<ImageIndex>): p is Parsed<ImageIndex> {
  return isIndexMediaType(p.mediaType);
}

/** A single-platform image: manifest and config read, layers opened on demand. */
export interface LoadedImage {
  descriptor: Descriptor;
  manifest: Parsed<ImageManifest>;
  config: ImageConfig;
  rawConfig: Buffer;
  platform: Platform;
}

export async function loadImage(source: ContentSource, desc: Descriptor, opts: CallOptions = {}): Promise<LoadedImage> {
  const parsed = await readManifestOrIndex(source, desc, opts);
  if (isIndex(parsed)) throw new ArchwayError('FORMAT', `${source.name}@${desc.digest} is an index, expected an image manifest`);
  const { config, raw } = await readConfig(source, parsed.value.config, opts);
  if (config.rootfs.diff_ids.length !== parsed.value.layers.length) {
    throw new ArchwayError('FORMAT', `${source.name}@${desc.digest}: config lists ${config.rootfs.diff_ids.length} diff_ids but the manifest has ${parsed.value.layers.length} layers`);
  }
  const platform = normalizePlatform({ os: config.os, architecture: config.architecture, ...(config.variant ? { variant: config.variant } : {}) });
  return { descriptor: { ...desc, mediaType: parsed.mediaType, digest: parsed.digest, size: parsed.raw.length }, manifest: parsed, config, rawConfig: raw, platform };
}

/** The runnable platform entries of an index: attestations and unknown/unknown excluded. */
export function platformManifests(index: ImageIndex): Descriptor[] {
  return index.manifests.filter((d) => !isAttestation(d) && !isUnknownPlatform(d.platform));
}

/** Attestation manifests of an index, keyed by the digest of the manifest they describe. */
export function attestationsBySubject(index: ImageIndex): Map<string, Descriptor[]> {
  const out = new Map<string, Descriptor[]>();
  for (const d of index.manifests) {
    const subject = d.annotations?.['vnd.docker.reference.digest'];
    if (isAttestation(d) && subject) out.set(subject, [...(out.get(subject) ?? []), d]);
  }
  return out;
}

/**
 * Resolves a root descriptor to the image for a platform: an image is returned as it is (and must
 * match the platform when `strict`), an index is searched with containerd's matching rules. A
 * missing platform is an error listing the platforms the index does have.
 */
export async function resolveImageForPlatform(source: ContentSource, root: Descriptor, platform: Platform, opts: CallOptions & { what?: string; strict?: boolean } = {}): Promise<LoadedImage> {
  const what = opts.what ?? source.name;
  let desc = root;
  for (let depth = 0; depth < 4; depth++) {
    const parsed = await readManifestOrIndex(source, desc, opts);
    if (!isIndex(parsed)) {
      const img = await loadImage(source, { ...desc, mediaType: parsed.mediaType }, opts);
      if (opts.strict && !bestMatch([{ platform: img.platform }], platform)) {
        throw new ArchwayError('PLATFORM', `${what} is a single-platform image for ${formatPlatform(img.platform)}, not ${formatPlatform(platform)}`, {
          details: { reference: what, platform: formatPlatform(platform), available: [formatPlatform(img.platform)] },
        });
      }
      return img;
    }
    const candidates = platformManifests(parsed.value);
    const hit = bestMatch(candidates, platform);
    if (!hit) {
      const have = candidates.map((d) => formatPlatform(d.platform as Platform));
      throw new ArchwayError('PLATFORM', `${what} has no image for ${formatPlatform(platform)}; it has: ${have.join(', ') || 'none'}`, {
        details: { reference: what, platform: formatPlatform(platform), available: have },
      });
    }
    desc = hit;
  }
  throw new ArchwayError('FORMAT', `${what}: indexes nested deeper than 4 levels`);
}
