import { parse as parseYaml } from 'yaml';
import { ArchwayError } from '../util/index.js';
import { normalizePlatform, parsePlatform, type Platform } from '../oci/index.js';
import { parseReference, repositoryName } from '../ref/index.js';

/** What `index create` needs, in the user's strings: where to write, and each source with its platform. */
export interface IndexRequest {
  targets: string[];
  sources: Array<{ image: string; platform?: Platform }>;
}

function specError(file: string, message: string): ArchwayError {
  return new ArchwayError('PARSE', `${file}: ${message}`, { hint: 'see manifest-tool\'s spec format: image, tags, manifests[].image, manifests[].platform {os, architecture, variant}' });
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/**
 * Parses manifest-tool's YAML spec:
 * ```yaml
 * image: registry/app:1.0
 * tags: ['1', 'latest']          # more tags in the same repository
 * manifests:
 *   - image: registry/app:1.0-amd64
 *     platform: { architecture: amd64, os: linux }
 *   - image: registry/app:1.0-armv7
 *     platform: { architecture: arm, os: linux, variant: v7 }
 * ```
 */
export function parseSpec(text: string, file = 'spec'): IndexRequest {
  let doc: unknown;
  try {
    doc = parseYaml(text);
  } catch (e) {
    throw specError(file, `not valid YAML: ${(e as Error).message}`);
  }
  if (!isRecord(doc)) throw specError(file, 'expected a mapping at the top');
  const image = doc.image;
  if (typeof image !== 'string' || image === '') throw specError(file, '"image" (the target) is missing');
  const targets = [image];
  if (doc.tags !== undefined) {
    if (!Array.isArray(doc.tags)) throw specError(file, '"tags" must be a list');
    const ref = parseReference(image.replace(/^docker:\/\//, ''));
    for (const [i, t] of doc.tags.entries()) {
      if (typeof t !== 'string' && typeof t !== 'number') throw specError(file, `tags[${i}] must be a string`);
      targets.push(`${repositoryName(ref)}:${String(t)}`);
    }
  }
  if (!Array.isArray(doc.manifests) || doc.manifests.length === 0) throw specError(file, '"manifests" must be a non-empty list');
  const sources: IndexRequest['sources'] = [];
  for (const [i, m] of doc.manifests.entries()) {
    if (!isRecord(m) || typeof m.image !== 'string' || m.image === '') throw specError(file, `manifests[${i}].image is missing`);
    const entry: IndexRequest['sources'][number] = { image: m.image };
    if (m.platform !== undefined) {
      const p = m.platform;
      if (!isRecord(p) || typeof p.architecture !== 'string' || typeof p.os !== 'string') {
        throw specError(file, `manifests[${i}].platform needs "os" and "architecture"`);
      }
      const text = [p.os, p.architecture, ...(typeof p.variant === 'string' && p.variant !== '' ? [p.variant] : [])].join('/');
      try {
        entry.platform = parsePlatform(text);
      } catch (e) {
        throw specError(file, `manifests[${i}].platform: ${(e as Error).message}`);
      }
    }
    sources.push(entry);
  }
  return { targets, sources };
}

/**
 * manifest-tool's from-args template: OS, ARCH and VARIANT are replaced by the platform's parts;
 * a bracketed group holding VARIANT (`[-VARIANT]`) disappears when the platform has no variant.
 */
export function expandTemplate(template: string, platform: Platform): string {
  const p = normalizePlatform(platform);
  const variant = p.variant ?? '';
  let out = template.replace(/\[([^\][]*VARIANT[^\][]*)\]/g, (_m, inner: string) => (variant ? inner : ''));
  out = out.replace(/OS/g, p.os).replace(/ARCH/g, p.architecture).replace(/VARIANT/g, variant);
  return out;
}

export function fromArgs(platforms: readonly Platform[], template: string, target: string): IndexRequest {
  if (!/OS|ARCH/.test(template)) {
    throw new ArchwayError('USAGE', `--template "${template}" has neither OS nor ARCH, so every platform would name the same image`, { hint: "e.g. --template 'app:v1-OS-ARCH[-VARIANT]'" });
  }
  return { targets: [target], sources: platforms.map((p) => ({ image: expandTemplate(template, p), platform: normalizePlatform(p) })) };
}
