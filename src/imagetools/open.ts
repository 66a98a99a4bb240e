import { ArchwayError } from '../util/index.js';
import { formatReference, parseLocation, referenceTagOrDigest, repositoryName, type ImageLocation, type Reference } from '../ref/index.js';
import type { CallOptions, ContentSource, ContentTarget } from '../image/index.js';
import { OciLayout, Store } from '../store/index.js';

/** Whatever hands out a registry repository as a ContentTarget (archway's RegistryClient does). */
export interface RepositoryOpener {
  repository(ref: Reference): ContentTarget;
}

/** Opens archive locations (oci-archive, docker-archive) as sources or targets. */
export interface ArchiveOpener {
  openSource(loc: Extract<ImageLocation, { transport: 'oci-archive' | 'docker-archive' }>, opts: CallOptions): Promise<ContentSource>;
  openTarget(loc: Extract<ImageLocation, { transport: 'oci-archive' | 'docker-archive' }>, opts: CallOptions): Promise<ContentTarget>;
}

export interface OpenContext extends CallOptions {
  env?: NodeJS.ProcessEnv;
  /** The registry client; required for registry locations. */
  registry?: RepositoryOpener;
  /** The local store; opened from $ARCHWAY_HOME on first use when absent. */
  store?: Store;
  archives?: ArchiveOpener;
}

export interface Opened<T extends ContentSource> {
  location: ImageLocation;
  /** The source or target itself. */
  content: T;
  /** The tag or digest within it ('' for a layout with a single image). */
  reference: string;
  /** For registry locations: `host/repository`, to decide whether a mount can work. */
  repository?: string;
  registry?: string;
  /** The user's words. */
  input: string;
}

const storeCache = new WeakMap<OpenContext, Promise<Store>>();

async function storeOf(ctx: OpenContext): Promise<Store> {
  if (ctx.store) return ctx.store;
  let p = storeCache.get(ctx);
  if (!p) {
    p = Store.open({ ...(ctx.env ? { env: ctx.env } : {}), ...(ctx.signal ? { signal: ctx.signal } : {}) });
    storeCache.set(ctx, p);
  }
  return p;
}

function registryOf(ctx: OpenContext, loc: ImageLocation): RepositoryOpener {
  if (!ctx.registry) throw new ArchwayError('USAGE', `${loc.input}: no registry client configured`);
  return ctx.registry;
}

function asLocation(loc: ImageLocation | string): ImageLocation {
  return typeof loc === 'string' ? parseLocation(loc) : loc;
}

async function open(locIn: ImageLocation | string, ctx: OpenContext, write: boolean): Promise<Opened<ContentTarget>> {
  const loc = asLocation(locIn);
  const opts: CallOptions = { ...(ctx.signal ? { signal: ctx.signal } : {}), ...(ctx.progress ? { progress: ctx.progress } : {}) };
  switch (loc.transport) {
    case 'registry': {
      const content = registryOf(ctx, loc).repository(loc.ref);
      return { location: loc, content, reference: referenceTagOrDigest(loc.ref), repository: repositoryName(loc.ref), registry: loc.ref.registry, input: loc.input };
    }
    case 'store': {
      const store = await storeOf(ctx);
      // The store names images by their full reference; a digest pins one.
      const { digest, ...named } = loc.ref;
      const reference = write || !digest ? formatReference(named) : digest;
      return { location: loc, content: store, reference, input: loc.input };
    }
    case 'oci': {
      const content = await OciLayout.open(loc.path, { create: write, ...(ctx.signal ? { signal: ctx.signal } : {}) });
      return { location: loc, content, reference: loc.tag ?? (write ? 'latest' : ''), input: loc.input };
    }
    case 'oci-archive':
    case 'docker-archive': {
      if (!ctx.archives) throw new ArchwayError('USAGE', `${loc.input}: archives are not available in this build`);
      const content = write ? await ctx.archives.openTarget(loc, opts) : await ctx.archives.openSource(loc, opts);
      const reference = loc.transport === 'oci-archive' ? (loc.tag ?? '') : loc.ref ? formatReference(loc.ref) : '';
      return { location: loc, content: content as ContentTarget, reference, input: loc.input };
    }
  }
}

/** Maps a location (`docker://…`, a bare reference, `oci:DIR[:TAG]`, `store:REF`, archives) to a source and the reference in it. */
export async function openSource(loc: ImageLocation | string, ctx: OpenContext = {}): Promise<Opened<ContentSource>> {
  return open(loc, ctx, false);
}

/** Maps a location to a target (created when it is a new OCI layout) and the tag to write. */
export async function openTarget(loc: ImageLocation | string, ctx: OpenContext = {}): Promise<Opened<ContentTarget>> {
  return open(loc, ctx, true);
}

/** Whether a cross-repository mount can work: both in one registry, different repositories. */
export function canMount(src: Opened<ContentSource>, dst: Opened<ContentTarget>): boolean {
  return src.registry !== undefined && src.registry === dst.registry && src.repository !== dst.repository;
}
