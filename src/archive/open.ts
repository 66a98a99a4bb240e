import type { ImageLocation } from '../ref/index.js';
import { familiarName } from '../ref/index.js';
import { ArchwayError } from '../util/index.js';
import type { ContentSource, ContentTarget } from '../image/index.js';
import { OciLayout } from '../store/index.js';
import { DockerArchiveSource, DockerArchiveTarget } from './docker-archive.js';
import { OciArchiveSource, OciArchiveTarget } from './oci-archive.js';

type FileLocation = Extract<ImageLocation, { transport: 'oci' | 'oci-archive' | 'docker-archive' }>;

/** A source for `oci:`, `oci-archive:` or `docker-archive:`, and the reference to resolve in it ('' = the only image). */
export async function openFileSource(loc: FileLocation, opts: { signal?: AbortSignal } = {}): Promise<{ source: ContentSource; reference: string }> {
  switch (loc.transport) {
    case 'oci':
      return { source: await OciLayout.open(loc.path, { ...opts, name: `oci:${loc.path}` }), reference: loc.tag ?? '' };
    case 'oci-archive':
      return { source: await OciArchiveSource.open(loc.path, opts), reference: loc.tag ?? '' };
    case 'docker-archive':
      return { source: await DockerArchiveSource.open(loc.path, opts), reference: loc.ref ? familiarName(loc.ref) : '' };
    default:
      throw new ArchwayError('USAGE', `not a file transport: ${(loc as ImageLocation).input}`);
  }
}

/**
 * A target for `oci:` (written in place), `oci-archive:` or `docker-archive:` (written on close()),
 * and the name to tag with. Call `close()` after the last `tag`.
 */
export async function openFileTarget(loc: FileLocation, opts: { signal?: AbortSignal } = {}): Promise<{ target: ContentTarget; reference: string }> {
  switch (loc.transport) {
    case 'oci':
      return { target: await OciLayout.open(loc.path, { ...opts, create: true, name: `oci:${loc.path}` }), reference: loc.tag ?? '' };
    case 'oci-archive':
      return { target: await OciArchiveTarget.create(loc.path, opts), reference: loc.tag ?? '' };
    case 'docker-archive': {
      const reference = loc.ref ? familiarName(loc.ref) : '';
      return { target: await DockerArchiveTarget.create(loc.path, { ...opts, ...(reference ? { reference } : {}) }), reference };
    }
    default:
      throw new ArchwayError('USAGE', `not a file transport: ${(loc as ImageLocation).input}`);
  }
}
