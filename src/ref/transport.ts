import { ArchwayError } from '../util/index.js';
import { parseReference, withDefaultTag, type Reference } from './reference.js';

/**
 * Where an image lives, in skopeo's spelling: `docker://REF` or a bare REF (a registry),
 * `oci:DIR[:TAG]`, `oci-archive:FILE[:TAG]`, `docker-archive:FILE[:NAME:TAG]`, and
 * `store:REF` for archway's own local store.
 */
export type ImageLocation =
  | { transport: 'registry'; ref: Reference; input: string }
  | { transport: 'store'; ref: Reference; input: string }
  | { transport: 'oci'; path: string; tag?: string; input: string }
  | { transport: 'oci-archive'; path: string; tag?: string; input: string }
  | { transport: 'docker-archive'; path: string; ref?: Reference; input: string };

/** The OCI image layout's grammar for org.opencontainers.image.ref.name (a '/'-free form of it here). */
const OCI_REF_NAME = /^[A-Za-z0-9]+(?:(?:[-._@+]|--)[A-Za-z0-9]+)*$/;

function splitPathAndTag(input: string, rest: string): { path: string; tag?: string } {
  // A tag never contains '/', so the last ':' after the last '/' separates it.
  const i = rest.lastIndexOf(':');
  if (i > rest.lastIndexOf('/') && i > 0) {
    const tag = rest.slice(i + 1);
    if (!OCI_REF_NAME.test(tag)) {
      throw new ArchwayError('REFERENCE', `invalid reference "${input}": "${tag}" is not a valid name in an OCI layout (letters and digits, joined by . _ - + @)`, { details: { reference: input } });
    }
    return { path: rest.slice(0, i), tag };
  }
  return { path: rest };
}

/**
 * Parses an image location. `defaultTransport` decides what a bare reference means: a registry for
 * copy/inspect/push, the store for run and images.
 */
export function parseLocation(input: string, defaultTransport: 'registry' | 'store' = 'registry'): ImageLocation {
  if (input.startsWith('docker://')) return { transport: 'registry', ref: withDefaultTag(parseReference(input.slice('docker://'.length))), input };
  if (input.startsWith('store:')) return { transport: 'store', ref: withDefaultTag(parseReference(input.slice('store:'.length))), input };
  if (input.startsWith('oci-archive:')) {
    const { path, tag } = splitPathAndTag(input, input.slice('oci-archive:'.length));
    if (!path) throw new ArchwayError('REFERENCE', `invalid reference "${input}": no archive path`);
    return tag === undefined ? { transport: 'oci-archive', path, input } : { transport: 'oci-archive', path, tag, input };
  }
  if (input.startsWith('oci:')) {
    const { path, tag } = splitPathAndTag(input, input.slice('oci:'.length));
    if (!path) throw new ArchwayError('REFERENCE', `invalid reference "${input}": no layout directory`);
    return tag === undefined ? { transport: 'oci', path, input } : { transport: 'oci', path, tag, input };
  }
  if (input.startsWith('docker-archive:')) {
    const rest = input.slice('docker-archive:'.length);
    // FILE[:NAME:TAG]: the name may hold a registry port, so split at the first ':' that is followed by a name.
    const i = rest.indexOf(':');
    if (i < 0) return { transport: 'docker-archive', path: rest, input };
    const path = rest.slice(0, i);
    const name = rest.slice(i + 1);
    return { transport: 'docker-archive', path, ref: withDefaultTag(parseReference(name)), input };
  }
  const ref = withDefaultTag(parseReference(input));
  return defaultTransport === 'store' ? { transport: 'store', ref, input } : { transport: 'registry', ref, input };
}

export function formatLocation(loc: ImageLocation): string {
  return loc.input;
}
