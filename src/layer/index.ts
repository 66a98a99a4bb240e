/** Layers: tar read/write, compression, safe application onto a directory, and making layers. */
export { readTar, buildTar, encodeHeader, tarHeader, parsePax, paxRecord, rawTarBlock, padding, END_OF_ARCHIVE } from './tar.js';
export type { TarHeader, TarEntry, EntryType, ReadTarOptions } from './tar.js';
export {
  detectCompression,
  sniffCompression,
  createDecompressor,
  createCompressor,
  createZstdCompressor,
  createZstdDecompressor,
  ParallelGzip,
  crc32,
} from './compress.js';
export type { Compression, CompressorOptions, GzipOptions } from './compress.js';
export { applyLayer, entryComponents, DEFAULT_LIMITS } from './apply.js';
export type { ApplyOptions, ApplyResult, LayerLimits } from './apply.js';
export { writeLayerFromDirectory, writeLayerFromOverlayUpper, writeLayerFromDiff } from './write.js';
export type { WriteLayerOptions, DiffOptions, LayerInfo } from './write.js';
export { getXattrs, setXattrs, xattrsSupported } from './xattr.js';
export type { XattrItem } from './xattr.js';
