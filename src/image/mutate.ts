import {
  Annotation,
  descriptorFor,
  encodeJson,
  formatPlatform,
  isDockerMediaType,
  layerCompression,
  layerMediaType,
  MediaType,
  normalizePlatform,
  type Descriptor,
  type Digest,
  type ImageConfig,
  type ImageIndex,
  type ImageManifest,
  type Platform,
} from '../oci/index.js';
import { ArchwayError } from '../util/index.js';

export type ManifestFormat = 'oci' | 'docker';

/** A layer as the manifest and config need it: the compressed blob's descriptor and its diffID. */
export interface LayerRef {
  descriptor: Descriptor;
  diffID: Digest;
}

/** The bytes and descriptors of a new single-platform image; digests computed from the bytes. */
export interface BuiltImage {
  manifest: Buffer;
  manifestDescriptor: Descriptor;
  config: Buffer;
  configDescriptor: Descriptor;
}

/**
 * Writes a config and manifest for the given layers. The config's rootfs is replaced by the layers'
 * diffIDs so the two can never disagree; media types follow `format`.
 */
export function buildImage(config: ImageConfig, layers: readonly LayerRef[], opts: { format?: ManifestFormat; annotations?: Record<string, string> } = {}): BuiltImage {
  const format = opts.format ?? 'oci';
  const cfg: ImageConfig = { ...config, rootfs: { type: 'layers', diff_ids: layers.map((l) => l.diffID) } };
  const configRaw = encodeJson(cfg);
  const configDescriptor = descriptorFor(configRaw, format === 'docker' ? MediaType.DockerConfig : MediaType.OciConfig);
  const manifest: ImageManifest = {
    schemaVersion: 2,
    mediaType: format === 'docker' ? MediaType.DockerManifest : MediaType.OciManifest,
    config: configDescriptor,
    layers: layers.map((l) => convertLayerDescriptor(l.descriptor, format)),
  };
  if (opts.annotations && Object.keys(opts.annotations).length > 0) manifest.annotations = opts.annotations;
  const manifestRaw = encodeJson(manifest);
  const platform = normalizePlatform({ os: cfg.os, architecture: cfg.architecture, ...(cfg.variant ? { variant: cfg.variant } : {}) });
  return {
    manifest: manifestRaw,
    manifestDescriptor: descriptorFor(manifestRaw, manifest.mediaType as string, { platform }),
    config: configRaw,
    configDescriptor,
  };
}

/** A layer descriptor in the other format's media type (same bytes, so the digest is kept). */
export function convertLayerDescriptor(d: Descriptor, format: ManifestFormat): Descriptor {
  const compression = layerCompression(d.mediaType);
  if (compression === undefined) return d;
  if (d.mediaType === MediaType.DockerForeignLayerGzip || d.mediaType.includes('nondistributable')) return d;
  const mediaType = layerMediaType(compression, format);
  return mediaType === d.mediaType ? d : { ...d, mediaType };
}

/** Writes an index over the given manifests (platform entries and attestations), in the chosen format. */
export function buildIndex(manifests: readonly Descriptor[], opts: { format?: ManifestFormat; annotations?: Record<string, string> } = {}): { raw: Buffer; descriptor: Descriptor } {
  const format = opts.format ?? 'oci';
  if (format === 'docker') {
    const oci = manifests.find((m) => !isDockerMediaType(m.mediaType) && m.mediaType !== MediaType.DockerManifest);
    if (oci) {
      throw new ArchwayError('FORMAT', `a Docker manifest list cannot hold the OCI manifest ${oci.digest} (${oci.mediaType})`, {
        hint: 'use --format oci, or convert the images to Docker media types first (archway copy --format docker)',
      });
    }
  }
  const index: ImageIndex = {
    schemaVersion: 2,
    mediaType: format === 'docker' ? MediaType.DockerManifestList : MediaType.OciIndex,
    manifests: manifests.map((m) => stripUndefined(m)),
  };
  if (opts.annotations && Object.keys(opts.annotations).length > 0) index.annotations = opts.annotations;
  const raw = encodeJson(index);
  return { raw, descriptor: descriptorFor(raw, index.mediaType as string) };
}

function stripUndefined(d: Descriptor): Descriptor {
  const out: Descriptor = { mediaType: d.mediaType, digest: d.digest, size: d.size };
  if (d.platform) out.platform = normalizePlatform(d.platform as Platform);
  if (d.annotations && Object.keys(d.annotations).length > 0) out.annotations = d.annotations;
  if (d.urls) out.urls = d.urls;
  if (d.artifactType) out.artifactType = d.artifactType;
  return out;
}

/** An empty config for a platform, as `FROM scratch` starts from. */
export function emptyConfig(platform: Platform): ImageConfig {
  const p = normalizePlatform(platform);
  const cfg: ImageConfig = {
    architecture: p.architecture,
    os: p.os,
    config: { Env: ['PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'] },
    rootfs: { type: 'layers', diff_ids: [] },
    history: [],
  };
  if (p.variant) cfg.variant = p.variant;
  return cfg;
}

export function describePlatform(d: Descriptor): string {
  return d.platform ? formatPlatform(d.platform) : 'unknown';
}

export { Annotation };
