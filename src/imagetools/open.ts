import { ArchwayError } from '../util/index.js';
import { formatReference, parseLocation, referenceTagOrDigest, repositoryName, type ImageLocation, type Reference } from '../ref/index.js';
import type { ContentSource, ContentTarget } from '../image/index.js';
import { Store } from '../store/index.js';
import { DockerConfigCredentials, RegistryClient, loadRegistrySettings } from '../registry/index.js';
import { openFileSource, openFileTarget } from '../archive/index.js';
import type { ProgressSink } from '../progress/index.js';

/** Whatever hands out a registry repository as a ContentTarget (archway's RegistryClient does). */
export interface RepositoryOpener {
  repository(ref: Reference): ContentTarget;
}

export interface OpenContext {
  signal?: AbortSignal;
  progress?: ProgressSink;
  env?: NodeJS.ProcessEnv;
  /** The registry client; made on first use from the settings file and `insecureRegistries` when absent. */
  registry?: RepositoryOpener;
  /** Hosts allowed plain HTTP or unverified TLS (`--insecure-registry`). */
  insecureRegistries?: string[];
  /** The registry settings file (default: the registry folder's default path). */
  registryConfig?: string;
  /** The local store; opened from $ARCHWAY_HOME on first use when absent. */
  store?: Store;
}

export interface Opened<T extends ContentSource> {
  location: ImageLocation;
  /** The source or target itself. */
  content: T;
  /** The tag or digest within it ('' for a layout or archive with a single image). */
  reference: string;
  /** For registry locations: `host/repository`, to decide whether a mount can work. */
  repository?: string;
  registry?: string;
  /** The user's words. */
  input: string;
}

const storeCache = new WeakMap<OpenContext, Promise<Store>>();
const registryCache = new WeakMap<OpenContext, Promise<RepositoryOpener>>();

async function storeOf(ctx: OpenContext): Promise<Store> {
  if (ctx.store) return ctx.store;
  let p = storeCache.get(ctx);
  if (!p) {
    p = Store.open({ ...(ctx.env ? { env: ctx.env } : {}), ...(ctx.signal ? { signal: ctx.signal } : {}) });
    storeCache.set(ctx, p);
  }
  return p;
}

async function registryOf(ctx: OpenContext): Promise<RepositoryOpener> {
  if (ctx.registry) return ctx.registry;
  let p = registryCache.get(ctx);
  if (!p) {
    p = (async () => {
      const settings = await loadRegistrySettings({ ...(ctx.registryConfig ? { file: ctx.registryConfig } : {}), ...(ctx.env ? { env: ctx.env } : {}), ...(ctx.signal ? { signal: ctx.signal } : {}) });
      // Credentials from the command's environment (DOCKER_CONFIG), which a caller may set apart from the process's.
      const credentials = new DockerConfigCredentials(ctx.env ? { env: ctx.env } : {});
      return new RegistryClient({ settings, credentials, insecureRegistries: ctx.insecureRegistries ?? [], ...(ctx.progress ? { progress: ctx.progress } : {}) });
    })();
    registryCache.set(ctx, p);
  }
  return p;
}

function asLocation(loc: ImageLocation | string): ImageLocation {
  return typeof loc === 'string' ? parseLocation(loc) : loc;
}

async function open(locIn: ImageLocation | string, ctx: OpenContext, write: boolean): Promise<Opened<ContentTarget>> {
  const loc = asLocation(locIn);
  const so = ctx.signal ? { signal: ctx.signal } : {};
  switch (loc.transport) {
    case 'registry': {
      const content = (await registryOf(ctx)).repository(loc.ref);
      return { location: loc, content, reference: referenceTagOrDigest(loc.ref), repository: repositoryName(loc.ref), registry: loc.ref.registry, input: loc.input };
    }
    case 'store': {
      const store = await storeOf(ctx);
      // The store names images by their full reference; a digest pins one when reading, and a
      // name with only a digest (a pull by digest) is written under that name.
      const { digest, ...named } = loc.ref;
      const reference = write ? formatReference(digest && named.tag === undefined ? loc.ref : named) : digest ? (named.tag === undefined ? formatReference(loc.ref) : digest) : formatReference(named);
      return { location: loc, content: store, reference, input: loc.input };
    }
    case 'oci':
    case 'oci-archive':
    case 'docker-archive': {
      if (write) {
        const t = await openFileTarget(loc, so);
        // A layout written without a tag still needs a name for its root: skopeo writes `latest`.
        const reference = t.reference === '' && loc.transport === 'oci' ? 'latest' : t.reference;
        return { location: loc, content: t.target, reference, input: loc.input };
      }
      const s = await openFileSource(loc, so);
      return { location: loc, content: s.source as ContentTarget, reference: s.reference, input: loc.input };
    }
    default:
      throw new ArchwayError('REFERENCE', `unknown location ${(loc as ImageLocation).input}`);
  }
}

/** Maps a location (`docker://…`, a bare reference, `oci:DIR[:TAG]`, `store:REF`, archives) to a source and the reference in it. */
export async function openSource(loc: ImageLocation | string, ctx: OpenContext = {}): Promise<Opened<ContentSource>> {
  return open(loc, ctx, false);
}

/** Maps a location to a target (created when it is a new OCI layout or archive) and the tag to write. */
export async function openTarget(loc: ImageLocation | string, ctx: OpenContext = {}): Promise<Opened<ContentTarget>> {
  return open(loc, ctx, true);
}

/** Whether a cross-repository mount can work: both in one registry, different repositories. */
export function canMount(src: Opened<ContentSource>, dst: Opened<ContentTarget>): boolean {
  return src.registry !== undefined && src.registry === dst.registry && src.repository !== dst.repository;
}
