import { ArchwayError, Limiter, errorMessage, mapLimit } from '../util/index.js';
import { parseLocation, parseReference, type ImageLocation } from '../ref/index.js';
import { canMount, openSource, openTarget, type OpenContext } from './open.js';
import { copyImage, type CopyOptions } from './copy.js';

export interface MirrorOptions extends Omit<CopyOptions, 'concurrency'> {
  /** Images copied at once (default 3). */
  concurrency?: number;
  /**
   * Blobs in flight at once, over all the images being copied (default 4): one bound, so that
   * several images at once neither hold more memory and connections nor leave fetched bodies
   * waiting for an upload slot.
   */
  blobConcurrency?: number;
  /** Keep going after a failure and report it (default false: stop at the first). */
  keepGoing?: boolean;
}

export interface MirrorItem {
  source: string;
  target: string;
  digest?: string;
  mediaType?: string;
  platforms?: string[];
  rewritten?: boolean;
  error?: string;
  /** Not started: an earlier image failed and --keep-going was not given. */
  skipped?: boolean;
}

export interface MirrorResult {
  items: MirrorItem[];
  /** The first failure, whose kind (exit status) the whole run reports. */
  firstError?: unknown;
}

/**
 * Where an image goes under a prefix: `docker.io/library/golang:1.17` under `localhost:5000/mirror`
 * becomes `localhost:5000/mirror/library/golang:1.17` (the source registry's name is dropped, its
 * repository path kept). A digest-only source keeps its digest.
 */
export function mirrorTargetName(image: string, prefix: string): string {
  const loc = parseLocation(image);
  // A registry image or a store image has a repository to keep; a layout or archive has none.
  const ref = loc.transport === 'registry' || loc.transport === 'store' ? loc.ref : loc.transport === 'docker-archive' ? loc.ref : undefined;
  if (!ref) throw new ArchwayError('USAGE', `cannot mirror ${image}: a ${loc.transport} location has no repository name to put under the prefix`, { hint: 'copy it with archway copy SRC DST, naming the destination' });
  const p = prefix.replace(/^docker:\/\//, '').replace(/\/+$/, '');
  if (p === '') throw new ArchwayError('USAGE', 'the mirror prefix is empty');
  let out = `${p}/${ref.repository}`;
  if (ref.tag !== undefined) out += `:${ref.tag}`;
  else if (ref.digest !== undefined) out += `@${ref.digest}`;
  else out += ':latest';
  // Validate the result as a reference.
  parseReference(out);
  return out;
}

/** Reads a list file: one image per line, `#` comments and blank lines ignored. */
export function parseImageList(text: string): string[] {
  return text
    .split('\n')
    .map((l) => l.replace(/#.*$/, '').trim())
    .filter((l) => l !== '');
}

/**
 * Copies each image under `targetPrefix`, several at once, and says what each became. A failure
 * stops images not yet started (unless keepGoing); those already copying finish. Every image is
 * reported either way: what was copied stays copied, and the report says so.
 */
export async function mirror(images: readonly string[], targetPrefix: string, ctx: OpenContext, opts: MirrorOptions = {}): Promise<MirrorResult> {
  if (images.length === 0) throw new ArchwayError('USAGE', 'no image to mirror');
  const plan = images.map((image) => ({ source: image, target: mirrorTargetName(image, targetPrefix) }));
  const results: MirrorItem[] = plan.map((p) => ({ ...p }));
  const limiter = new Limiter(Math.max(1, opts.blobConcurrency ?? 4));
  let firstError: unknown;
  await mapLimit(plan, Math.max(1, opts.concurrency ?? 3), async (p, i) => {
    const item = results[i] as MirrorItem;
    if (firstError !== undefined && !opts.keepGoing) {
      item.skipped = true;
      return;
    }
    try {
      const srcLoc: ImageLocation = parseLocation(p.source);
      const dstLoc: ImageLocation = parseLocation(p.target);
      const src = await openSource(srcLoc, ctx);
      const dst = await openTarget(dstLoc, ctx);
      const { concurrency: _c, blobConcurrency, keepGoing: _k, ...copyOpts } = opts;
      const r = await copyImage(src.content, src.reference, dst.content, [dst.reference], {
        ...copyOpts,
        ...(ctx.signal ? { signal: ctx.signal } : {}),
        ...(ctx.progress ? { progress: ctx.progress } : {}),
        ...(blobConcurrency ? { concurrency: blobConcurrency } : {}),
        limiter,
        mount: canMount(src, dst),
      });
      item.digest = r.descriptor.digest;
      item.mediaType = r.descriptor.mediaType;
      item.platforms = r.platforms;
      item.rewritten = r.rewritten;
    } catch (e) {
      // An interruption ends the run; it is not one image's failure.
      if (ctx.signal?.aborted) throw e;
      item.error = errorMessage(e);
      firstError ??= e;
    }
  });
  return firstError === undefined ? { items: results } : { items: results, firstError };
}
