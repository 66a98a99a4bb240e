/** oci-archive and docker-archive as sources and sinks, and opening the file transports. */
export { OciArchiveSource, OciArchiveTarget, resolveInIndex } from './oci-archive.js';
export { DockerArchiveSource, DockerArchiveTarget, ONE_PLATFORM_MESSAGE, type DockerArchiveManifestEntry } from './docker-archive.js';
export { openFileSource, openFileTarget } from './open.js';
export { TarFile, writeTarFile, normalizeArchivePath, type ArchiveEntry, type ArchiveEntryType, type TarSourceEntry } from './tarfile.js';
