import { pipeline } from 'node:stream/promises';
import { Writable } from 'node:stream';
import { ArchwayError } from '../util/index.js';
import { formatPlatform, isAttestation, normalizePlatform, platformEquals, type Descriptor } from '../oci/index.js';
import { isIndex, loadImage, readManifestOrIndex } from './read.js';
import type { CallOptions, ContentSource } from './target.js';

export interface ValidationReport {
  manifests: number;
  blobs: number;
  platforms: string[];
}

/**
 * Walks everything reachable from `root` and checks what a consumer would trip over: every blob's
 * bytes against its digest and size, each config's diff_ids against its layers, and each index
 * entry's platform against the platform its config declares. Every test runs this on what archway
 * produces.
 */
export async function validateImageTree(source: ContentSource, root: Descriptor, opts: CallOptions & { checkBlobs?: boolean } = {}): Promise<ValidationReport> {
  const report: ValidationReport = { manifests: 0, blobs: 0, platforms: [] };
  const seen = new Set<string>();
  const drain = async (d: Descriptor): Promise<void> => {
    if (seen.has(d.digest)) return;
    seen.add(d.digest);
    await pipeline(await source.fetch(d, opts), new Writable({ write: (_c, _e, cb) => cb() }));
    report.blobs++;
  };
  const visit = async (d: Descriptor, depth: number): Promise<void> => {
    if (depth > 4) throw new ArchwayError('FORMAT', `${source.name}: indexes nested too deep`);
    const parsed = await readManifestOrIndex(source, d, opts);
    report.manifests++;
    if (isIndex(parsed)) {
      for (const child of parsed.value.manifests) {
        await visit(child, depth + 1);
        if (child.platform && !isAttestation(child)) {
          const childParsed = await readManifestOrIndex(source, child, opts);
          if (!isIndex(childParsed)) {
            const img = await loadImage(source, child, opts);
            if (!platformEquals(normalizePlatform(child.platform), img.platform)) {
              throw new ArchwayError('FORMAT', `${source.name}@${child.digest}: index says ${formatPlatform(child.platform)} but the image config says ${formatPlatform(img.platform)}`);
            }
            report.platforms.push(formatPlatform(img.platform));
          }
        }
      }
      return;
    }
    const img = await loadImage(source, d, opts);
    if (opts.checkBlobs !== false) {
      await drain(parsed.value.config);
      for (const layer of parsed.value.layers) if (!layer.urls) await drain(layer);
    }
    if (depth === 0) report.platforms.push(formatPlatform(img.platform));
  };
  await visit(root, 0);
  return report;
}
