import { ArchwayError } from '../util/index.js';
import { isDigest, type Digest } from '../oci/index.js';

/** A registry image reference with Docker's normalization applied. */
export interface Reference {
  /** Registry host as used for the connection: `docker.io`, `localhost:5000`, `[::1]:5000`. */
  registry: string;
  /** Repository path: `library/ubuntu`, `team/app`. */
  repository: string;
  tag?: string;
  digest?: Digest;
}

export const DEFAULT_REGISTRY = 'docker.io';
/** Docker Hub's API host; `docker.io` is only its name. */
export const DOCKER_HUB_API_HOST = 'registry-1.docker.io';
export const DEFAULT_TAG = 'latest';

const COMPONENT = /^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$/;
const DOMAIN_COMPONENT = /^(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])$/;
const TAG = /^[\w][\w.-]{0,127}$/;
const PORT = /^[0-9]+$/;

function refError(input: string, why: string, hint?: string): ArchwayError {
  return new ArchwayError('REFERENCE', `invalid reference "${input}": ${why}`, { details: { reference: input }, ...(hint ? { hint } : {}) });
}

/** A tag given on its own (`copy -t TAG`), checked with the rule a reference's tag follows. */
export function checkTag(tag: string): string {
  if (!TAG.test(tag)) throw new ArchwayError('REFERENCE', `"${tag}" is not a valid tag (letters, digits, _ . -, at most 128, not starting with . or -)`, { details: { tag } });
  return tag;
}

function isDomain(text: string): boolean {
  if (text.startsWith('[')) {
    const close = text.indexOf(']');
    if (close < 0) return false;
    const rest = text.slice(close + 1);
    return rest === '' || (rest.startsWith(':') && PORT.test(rest.slice(1)));
  }
  const colon = text.lastIndexOf(':');
  const host = colon >= 0 ? text.slice(0, colon) : text;
  if (colon >= 0 && !PORT.test(text.slice(colon + 1))) return false;
  return host.split('.').every((c) => DOMAIN_COMPONENT.test(c));
}

/**
 * Parses `[registry/]repo[:tag][@digest]` with Docker's rules: a first component with a `.` or
 * `:`, or `localhost`, is a registry; otherwise the image is on Docker Hub, and a single
 * component there lives under `library/`. No tag and no digest means `:latest` (see withDefaultTag).
 */
export function parseReference(input: string): Reference {
  const text = input.trim();
  if (text === '') throw refError(input, 'empty');
  if (text.includes('://')) throw refError(input, 'a reference has no scheme', 'write host/repository:tag without http:// or docker://');
  let rest = text;
  let digest: Digest | undefined;
  const at = rest.indexOf('@');
  if (at >= 0) {
    const d = rest.slice(at + 1);
    if (!isDigest(d)) throw refError(input, `"${d}" is not a valid digest`);
    digest = d;
    rest = rest.slice(0, at);
  }
  let tag: string | undefined;
  const lastSlash = rest.lastIndexOf('/');
  const lastColon = rest.lastIndexOf(':');
  if (lastColon > lastSlash) {
    tag = rest.slice(lastColon + 1);
    rest = rest.slice(0, lastColon);
    if (!TAG.test(tag)) throw refError(input, `"${tag}" is not a valid tag (letters, digits, _ . -, at most 128, not starting with . or -)`);
  }
  if (rest === '') throw refError(input, 'no repository name');
  let registry = DEFAULT_REGISTRY;
  let path = rest;
  const slash = rest.indexOf('/');
  if (slash >= 0) {
    const first = rest.slice(0, slash);
    if (first.includes('.') || first.includes(':') || first === 'localhost' || first.startsWith('[')) {
      if (!isDomain(first)) throw refError(input, `"${first}" is not a valid registry host`);
      registry = first;
      path = rest.slice(slash + 1);
    } else if (first !== first.toLowerCase() && !first.includes('.')) {
      // Docker treats an uppercase first component as a host too; refusing gives a clearer message.
      throw refError(input, 'repository name must be lowercase');
    }
  }
  if (registry === 'index.docker.io' || registry === DOCKER_HUB_API_HOST) registry = DEFAULT_REGISTRY;
  const components = path.split('/');
  for (const c of components) {
    if (c !== c.toLowerCase()) throw refError(input, 'repository name must be lowercase');
    if (!COMPONENT.test(c)) throw refError(input, `"${c}" is not a valid repository path component`);
  }
  if (registry === DEFAULT_REGISTRY && components.length === 1) path = `library/${path}`;
  if (registry.length + 1 + path.length > 255) throw refError(input, 'repository name longer than 255 characters');
  const ref: Reference = { registry, repository: path };
  if (tag !== undefined) ref.tag = tag;
  if (digest !== undefined) ref.digest = digest;
  return ref;
}

/** `:latest` when neither tag nor digest is given, as Docker does. */
export function withDefaultTag(ref: Reference): Reference {
  return ref.tag === undefined && ref.digest === undefined ? { ...ref, tag: DEFAULT_TAG } : ref;
}

/** The repository's full name: `docker.io/library/ubuntu`. */
export function repositoryName(ref: Reference): string {
  return `${ref.registry}/${ref.repository}`;
}

/** Full normalized form: `docker.io/library/ubuntu:latest`, `host/repo@sha256:…`. */
export function formatReference(ref: Reference): string {
  let s = repositoryName(ref);
  if (ref.tag !== undefined) s += `:${ref.tag}`;
  if (ref.digest !== undefined) s += `@${ref.digest}`;
  return s;
}

/** Docker's short display form: `ubuntu:latest`, `team/app:v1`, `localhost:5000/app:v1`. */
export function familiarName(ref: Reference): string {
  let name = ref.registry === DEFAULT_REGISTRY ? ref.repository.replace(/^library\//, '') : repositoryName(ref);
  if (ref.tag !== undefined) name += `:${ref.tag}`;
  if (ref.digest !== undefined) name += `@${ref.digest}`;
  return name;
}

/** The host to talk to for a registry name (Docker Hub's API lives on another host). */
export function registryApiHost(registry: string): string {
  return registry === DEFAULT_REGISTRY ? DOCKER_HUB_API_HOST : registry;
}

/** Loopback registries speak plain HTTP by default, as Docker's do. */
export function isLoopbackRegistry(registry: string): boolean {
  const host = registry.startsWith('[') ? registry.slice(1, registry.indexOf(']')) : registry.replace(/:\d+$/, '');
  return host === 'localhost' || host === '::1' || /^127\.\d+\.\d+\.\d+$/.test(host);
}

/** What the reference names in the registry: the digest if pinned, else the tag. */
export function referenceTagOrDigest(ref: Reference): string {
  return ref.digest ?? ref.tag ?? DEFAULT_TAG;
}
