/** Media types of the OCI image spec and Docker's image manifest v2 schema 2. */
export const MediaType = {
  OciManifest: 'application/vnd.oci.image.manifest.v1+json',
  OciIndex: 'application/vnd.oci.image.index.v1+json',
  OciConfig: 'application/vnd.oci.image.config.v1+json',
  OciLayer: 'application/vnd.oci.image.layer.v1.tar',
  OciLayerGzip: 'application/vnd.oci.image.layer.v1.tar+gzip',
  OciLayerZstd: 'application/vnd.oci.image.layer.v1.tar+zstd',
  OciLayerNondistributable: 'application/vnd.oci.image.layer.nondistributable.v1.tar',
  OciLayerNondistributableGzip: 'application/vnd.oci.image.layer.nondistributable.v1.tar+gzip',
  OciLayerNondistributableZstd: 'application/vnd.oci.image.layer.nondistributable.v1.tar+zstd',
  OciEmpty: 'application/vnd.oci.empty.v1+json',
  DockerManifest: 'application/vnd.docker.distribution.manifest.v2+json',
  DockerManifestList: 'application/vnd.docker.distribution.manifest.list.v2+json',
  DockerConfig: 'application/vnd.docker.container.image.v1+json',
  DockerLayerGzip: 'application/vnd.docker.image.rootfs.diff.tar.gzip',
  DockerLayer: 'application/vnd.docker.image.rootfs.diff.tar',
  DockerForeignLayerGzip: 'application/vnd.docker.image.rootfs.foreign.diff.tar.gzip',
  DockerSchema1Manifest: 'application/vnd.docker.distribution.manifest.v1+json',
  DockerSchema1SignedManifest: 'application/vnd.docker.distribution.manifest.v1+prettyjws',
  InTotoJson: 'application/vnd.in-toto+json',
} as const;
export type KnownMediaType = (typeof MediaType)[keyof typeof MediaType];

export function isIndexMediaType(mt: string | undefined): boolean {
  return mt === MediaType.OciIndex || mt === MediaType.DockerManifestList;
}

export function isManifestMediaType(mt: string | undefined): boolean {
  return mt === MediaType.OciManifest || mt === MediaType.DockerManifest;
}

export function isSchema1MediaType(mt: string | undefined): boolean {
  return mt === MediaType.DockerSchema1Manifest || mt === MediaType.DockerSchema1SignedManifest || mt === 'application/json';
}

export function isDockerMediaType(mt: string | undefined): boolean {
  return mt !== undefined && mt.startsWith('application/vnd.docker.');
}

export type LayerCompression = 'gzip' | 'zstd' | 'none';

/** The compression a layer media type declares, or undefined when it is not a layer type. */
export function layerCompression(mt: string): LayerCompression | undefined {
  switch (mt) {
    case MediaType.OciLayer:
    case MediaType.OciLayerNondistributable:
    case MediaType.DockerLayer:
      return 'none';
    case MediaType.OciLayerGzip:
    case MediaType.OciLayerNondistributableGzip:
    case MediaType.DockerLayerGzip:
    case MediaType.DockerForeignLayerGzip:
      return 'gzip';
    case MediaType.OciLayerZstd:
    case MediaType.OciLayerNondistributableZstd:
      return 'zstd';
    default:
      return undefined;
  }
}

export function isForeignLayer(mt: string): boolean {
  return mt === MediaType.DockerForeignLayerGzip || mt.startsWith('application/vnd.oci.image.layer.nondistributable.');
}

/** The OCI or Docker layer media type for a compression. */
export function layerMediaType(compression: LayerCompression, format: 'oci' | 'docker' = 'oci'): string {
  if (format === 'docker') {
    if (compression === 'zstd') return MediaType.OciLayerZstd; // Docker has no zstd layer type; Docker itself uses the OCI one.
    return compression === 'gzip' ? MediaType.DockerLayerGzip : MediaType.DockerLayer;
  }
  if (compression === 'gzip') return MediaType.OciLayerGzip;
  if (compression === 'zstd') return MediaType.OciLayerZstd;
  return MediaType.OciLayer;
}

/** Annotations and conventions that matter to multi-arch tools. */
export const Annotation = {
  RefName: 'org.opencontainers.image.ref.name',
  Created: 'org.opencontainers.image.created',
  Source: 'org.opencontainers.image.source',
  Revision: 'org.opencontainers.image.revision',
  DockerRefType: 'vnd.docker.reference.type',
  DockerRefDigest: 'vnd.docker.reference.digest',
  ContainerdImageName: 'io.containerd.image.name',
} as const;
export const ATTESTATION_MANIFEST = 'attestation-manifest';
