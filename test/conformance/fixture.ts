import { gzipSync } from 'node:zlib';
import { buildTar } from '../../src/layer/index.js';
import { buildImage, buildIndex, emptyConfig, type BuiltImage } from '../../src/image/index.js';
import { computeDigest, descriptorFor, MediaType, parsePlatform, type Descriptor } from '../../src/oci/index.js';

export interface Blob {
  descriptor: Descriptor;
  data: Buffer;
}

export interface TinyImage {
  built: BuiltImage;
  layer: Blob;
  /** Every blob in push order: layer, config, manifest. */
  blobs: Blob[];
}

/** A one-layer image for a platform, with a hand-made layer tar (optionally gzip). */
export function tinyImage(platform = 'linux/amd64', opts: { gzip?: boolean; text?: string; format?: 'oci' | 'docker' } = {}): TinyImage {
  const tar = buildTar([
    { header: { name: 'etc', type: 'dir' } },
    { header: { name: 'etc/hello.txt' }, data: opts.text ?? `hello from ${platform}\n` },
  ]);
  const data = opts.gzip ? gzipSync(tar) : tar;
  const mediaType = opts.gzip ? MediaType.OciLayerGzip : MediaType.OciLayer;
  const layer: Blob = { descriptor: descriptorFor(data, mediaType), data };
  const built = buildImage(emptyConfig(parsePlatform(platform)), [{ descriptor: layer.descriptor, diffID: computeDigest(tar) }], { format: opts.format ?? 'oci' });
  return {
    built,
    layer,
    blobs: [layer, { descriptor: built.configDescriptor, data: built.config }, { descriptor: built.manifestDescriptor, data: built.manifest }],
  };
}

/** Two platform images and an index over them. */
export function tinyIndex(platforms = ['linux/amd64', 'linux/arm64']): { images: TinyImage[]; index: Blob; blobs: Blob[] } {
  const images = platforms.map((p) => tinyImage(p));
  const { raw, descriptor } = buildIndex(images.map((i) => i.built.manifestDescriptor));
  const index = { descriptor, data: raw };
  return { images, index, blobs: [...images.flatMap((i) => i.blobs), index] };
}
