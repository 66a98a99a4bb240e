import { constants as fsConstants, promises as fs } from 'node:fs';
import * as path from 'node:path';
import { ArchwayError, errorMessage, isArchwayError, isErrnoException } from '../util/index.js';
import { formatPlatform, hostPlatform, type Descriptor, type Platform } from '../oci/index.js';
import { formatReference, parseLocation, parseReference, withDefaultTag, type ImageLocation } from '../ref/index.js';
import { nullProgress } from '../progress/index.js';
import { applyLayer } from '../layer/index.js';
import { isIndex, readManifestOrIndex, resolveImageForPlatform, type ManifestFormat } from '../image/index.js';
import { tempName, writeFileAtomic, type Store } from '../store/index.js';
import { copyImage, openTarget, type OpenContext } from '../imagetools/index.js';
import type { BuildOptions, OutputSpec } from './types.js';

/** One output with its names normalized and checked. */
export type PlannedOutput =
  | { type: 'registry'; names: string[]; pushByDigest: boolean; what: string }
  | { type: 'oci'; dest: string; tar: boolean; name?: string; what: string }
  | { type: 'docker'; dest: string; names: string[]; what: string }
  | { type: 'local'; dest: string; what: string };

export interface OutputPlan {
  /** Names the local store gets, written after every other output succeeded. */
  storeTags: string[];
  outputs: PlannedOutput[];
  /** The media types of the build's manifests: OCI, or Docker schema 2 with oci-mediatypes=false. */
  format: ManifestFormat;
}

/** The user's words for an output, for messages: `--output type=oci,dest=out.tar`. */
function describe(out: OutputSpec): string {
  const fields = Object.entries(out)
    .filter(([k]) => k !== 'type')
    .map(([k, v]) => `${k === 'pushByDigest' ? 'push-by-digest' : k === 'ociMediatypes' ? 'oci-mediatypes' : k}=${String(v)}`);
  return `--output type=${out.type === 'store' ? 'image' : out.type}${fields.length ? `,${fields.join(',')}` : ''}`;
}

/** A name for the result: a valid reference with a tag (`:latest` when none), never a digest. */
function checkName(name: string, option: string): string {
  let ref;
  try {
    ref = parseReference(name);
  } catch (e) {
    if (isArchwayError(e)) throw new ArchwayError(e.code, `${option}: ${e.message}`, { details: e.details, ...(e.hint ? { hint: e.hint } : {}) });
    throw e;
  }
  if (ref.digest) throw new ArchwayError('REFERENCE', `${option}: "${name}" holds a digest; a name for the result needs a tag`, { hint: 'e.g. app:1', details: { reference: name } });
  return formatReference(withDefaultTag(ref));
}

function splitNames(list: string | undefined): string[] {
  return (list ?? '')
    .split(',')
    .map((n) => n.trim())
    .filter((n) => n !== '');
}

/** A destination path that already exists as the wrong kind of thing is refused before the build. */
async function checkDest(dest: string, want: 'file' | 'dir', what: string): Promise<void> {
  let st;
  try {
    st = await fs.stat(dest);
  } catch (e) {
    if (isErrnoException(e, 'ENOENT')) return;
    throw new ArchwayError('USAGE', `${what}: cannot use dest "${dest}": ${errorMessage(e)}`);
  }
  if (want === 'file' && st.isDirectory()) throw new ArchwayError('USAGE', `${what}: dest "${dest}" is a directory; an archive is written to a file`, { hint: 'give a file name, or tar=false for an OCI layout directory (type=oci)' });
  if (want === 'dir' && !st.isDirectory()) throw new ArchwayError('USAGE', `${what}: dest "${dest}" exists and is not a directory`);
}

/**
 * --metadata-file: its directory must exist and take a new file (as buildx requires), and the path
 * must not be a directory. Checked by creating and removing a probe file there, so a read-only
 * filesystem or a directory the user cannot write is refused too.
 */
async function checkMetadataFile(file: string): Promise<void> {
  const what = `--metadata-file "${file}"`;
  const dir = path.dirname(path.resolve(file));
  let st;
  try {
    st = await fs.stat(dir);
  } catch (e) {
    if (isErrnoException(e, 'ENOENT')) throw new ArchwayError('USAGE', `${what}: its directory "${dir}" does not exist`, { hint: 'create the directory first (mkdir -p), or give a path in an existing one' });
    throw new ArchwayError('USAGE', `${what}: cannot use its directory "${dir}": ${errorMessage(e)}`);
  }
  if (!st.isDirectory()) throw new ArchwayError('USAGE', `${what}: "${dir}" is not a directory`);
  try {
    if ((await fs.stat(file)).isDirectory()) throw new ArchwayError('USAGE', `${what} is a directory; the metadata is written to a file`);
  } catch (e) {
    if (isArchwayError(e)) throw e;
    if (!isErrnoException(e, 'ENOENT')) throw new ArchwayError('USAGE', `${what}: ${errorMessage(e)}`);
  }
  const probe = path.join(dir, tempName('archway-metadata-probe'));
  try {
    const h = await fs.open(probe, fsConstants.O_CREAT | fsConstants.O_EXCL | fsConstants.O_WRONLY, 0o600);
    await h.close();
  } catch (e) {
    throw new ArchwayError('USAGE', `${what}: cannot write in "${dir}": ${errorMessage(e)}`, { hint: 'give a path in a directory you can write' });
  } finally {
    await fs.unlink(probe).catch(() => undefined);
  }
}

/**
 * Checks every output and every tag before any step runs, so a bad option costs no build and
 * leaves nothing behind. `platforms` are the platforms the build makes.
 */
export async function planOutputs(opts: BuildOptions, platforms: readonly Platform[]): Promise<OutputPlan> {
  const tags = (opts.tags ?? []).map((t) => checkName(t, `--tag "${t}"`));
  const storeTags = [...tags];
  const outputs: PlannedOutput[] = [];
  // oci-mediatypes is one choice for the whole build: outputs that say different things are refused.
  let format: { format: ManifestFormat; what: string } | undefined;
  for (const out of opts.outputs ?? []) {
    const what = describe(out);
    if ((out.type === 'store' || out.type === 'registry') && out.ociMediatypes !== undefined) {
      const f: ManifestFormat = out.ociMediatypes ? 'oci' : 'docker';
      if (format && format.format !== f) {
        throw new ArchwayError('USAGE', `${what} asks for ${f === 'oci' ? 'OCI' : 'Docker'} media types, and ${format.what} for ${format.format === 'oci' ? 'OCI' : 'Docker'} ones; a build makes one kind`, {
          hint: 'give the same oci-mediatypes to every output',
        });
      }
      format = { format: f, what };
    }
    switch (out.type) {
      case 'store':
        for (const n of splitNames(out.name)) storeTags.push(checkName(n, `${what}: name "${n}"`));
        break;
      case 'registry': {
        const names = out.name !== undefined ? splitNames(out.name).map((n) => checkName(n, `${what}: name "${n}"`)) : tags;
        if (names.length === 0) throw new ArchwayError('USAGE', 'pushing needs a name: give -t NAME or --output type=registry,name=NAME');
        for (const n of names) parseLocation(n, 'registry');
        outputs.push({ type: 'registry', names, pushByDigest: out.pushByDigest ?? false, what });
        break;
      }
      case 'oci': {
        const tar = out.tar ?? true;
        await checkDest(out.dest, tar ? 'file' : 'dir', what);
        const names = out.name !== undefined ? splitNames(out.name).map((n) => checkName(n, `${what}: name "${n}"`)) : tags;
        outputs.push({ type: 'oci', dest: out.dest, tar, ...(names[0] ? { name: names[0] } : {}), what });
        break;
      }
      case 'docker': {
        if (platforms.length > 1) {
          throw new ArchwayError('USAGE', `${what}: a docker archive holds one platform, and this build makes ${platforms.length} (${platforms.map(formatPlatform).join(', ')})`, {
            hint: 'build one --platform for type=docker, or write type=oci, which holds them all',
          });
        }
        await checkDest(out.dest, 'file', what);
        const names = out.name !== undefined ? splitNames(out.name).map((n) => checkName(n, `${what}: name "${n}"`)) : tags;
        outputs.push({ type: 'docker', dest: out.dest, names, what });
        break;
      }
      case 'local':
        await checkDest(out.dest, 'dir', what);
        outputs.push({ type: 'local', dest: out.dest, what });
        break;
    }
  }
  if (opts.metadataFile !== undefined) await checkMetadataFile(opts.metadataFile);
  return { storeTags: [...new Set(storeTags)], outputs, format: format?.format ?? 'oci' };
}

/** A repository without its tag: what push-by-digest pushes to (`reg/app:1` → `reg/app`). */
function repositoryOf(name: string): string {
  return formatReference(parseReference(name.replace(/:[^/:]+$/, '')));
}

/**
 * What --metadata-file holds, in buildx's keys: `containerimage.digest` (the root: the index, or
 * the single image, exactly what was pushed), `containerimage.descriptor`, `containerimage.config.digest`
 * (a single image), `image.name` (comma-separated; the repositories for push-by-digest, the pushed
 * names otherwise, else the store's names). archway adds `platforms` (platform → digest, and the
 * repository for push-by-digest) and `images` (the per-platform manifests in order).
 */
export function buildMetadata(root: Descriptor, images: readonly Descriptor[], names: readonly string[], opts: { configDigest?: string; repository?: string }): Record<string, unknown> {
  const meta: Record<string, unknown> = {
    'containerimage.digest': root.digest,
    'containerimage.descriptor': { mediaType: root.mediaType, digest: root.digest, size: root.size },
  };
  if (opts.configDigest) meta['containerimage.config.digest'] = opts.configDigest;
  if (names.length > 0) meta['image.name'] = names.join(',');
  const platforms: Record<string, { digest: string; name?: string }> = {};
  for (const img of images) platforms[formatPlatform(img.platform ?? hostPlatform())] = { digest: img.digest, ...(opts.repository ? { name: opts.repository } : {}) };
  meta.platforms = platforms;
  meta.images = images.map((i) => ({ digest: i.digest, ...(i.platform ? { platform: formatPlatform(i.platform) } : {}) }));
  return meta;
}

/** The `org.opencontainers.image.ref.name` an OCI output gets for a name: its repository's last component. */
function ociRefName(name: string): string {
  return name.replace(/^.*\//, '').replace(/:.*/, '');
}

/**
 * Writes the outputs, then the store's tags, then the metadata file. Files go first and registries
 * after them (a published tag is the hardest thing to take back); the store is tagged last, so a
 * failed output leaves no new name claiming the build succeeded.
 */
export async function exportOutputs(store: Store, root: Descriptor, images: Descriptor[], plan: OutputPlan, opts: BuildOptions, ctx: OpenContext): Promise<void> {
  const signalOpt = opts.signal ? { signal: opts.signal } : {};
  const progress = opts.progress ?? nullProgress;
  const order = (o: PlannedOutput): number => (o.type === 'registry' ? 1 : 0);
  const pushedNames: string[] = [];
  let digestRepository: string | undefined;
  for (const out of [...plan.outputs].sort((a, b) => order(a) - order(b))) {
    switch (out.type) {
      case 'registry': {
        if (out.pushByDigest) {
          // The root (an index, its images, their blobs; or the one image), by digest and without
          // a tag: the digest the metadata names is one a later `index create` can read.
          for (const name of out.names) {
            const repo = repositoryOf(name);
            const dst = await openTarget(parseLocation(repo, 'registry'), ctx);
            await copyImage(store, root.digest, dst.content, [], { ...signalOpt, progress });
            progress.emit({ kind: 'message', level: 'info', text: `pushed ${repo}@${root.digest} (by digest, no tag)` });
            pushedNames.push(repo);
            digestRepository ??= repo;
          }
          break;
        }
        for (const name of out.names) {
          const dst = await openTarget(parseLocation(name, 'registry'), ctx);
          await copyImage(store, root.digest, dst.content, [dst.reference], { ...signalOpt, progress });
          pushedNames.push(name);
        }
        break;
      }
      case 'oci': {
        // A location value, not a string: a ':' in dest must not read as a tag.
        const loc: ImageLocation = out.tar
          ? { transport: 'oci-archive', path: out.dest, ...(out.name ? { tag: ociRefName(out.name) } : {}), input: `oci-archive:${out.dest}` }
          : { transport: 'oci', path: out.dest, ...(out.name ? { tag: ociRefName(out.name) } : {}), input: `oci:${out.dest}` };
        const dst = await openTarget(loc, ctx);
        await copyImage(store, root.digest, dst.content, [dst.reference], { ...signalOpt, progress });
        break;
      }
      case 'docker': {
        const dst = await openTarget({ transport: 'docker-archive', path: out.dest, input: `docker-archive:${out.dest}` }, ctx);
        // Every name becomes one of the archive's RepoTags; '' writes it unnamed.
        await copyImage(store, root.digest, dst.content, out.names.length > 0 ? out.names : [''], { ...signalOpt, progress });
        break;
      }
      case 'local':
        for (const img of images) {
          const p = img.platform ?? hostPlatform();
          const dir = images.length === 1 ? out.dest : path.join(out.dest, formatPlatform(p).replace(/\//g, '_'));
          await fs.mkdir(dir, { recursive: true });
          const loaded = await resolveImageForPlatform(store, img, p, signalOpt);
          for (const layer of loaded.manifest.value.layers) {
            await applyLayer(await store.fetch(layer, signalOpt), dir, { mediaType: layer.mediaType, ...signalOpt });
          }
          progress.emit({ kind: 'message', level: 'info', text: `wrote ${formatPlatform(p)} root filesystem to ${dir}` });
        }
        break;
    }
  }
  for (const t of plan.storeTags) await store.tag(root, t, signalOpt);
  if (opts.metadataFile !== undefined) {
    const parsed = await readManifestOrIndex(store, root, signalOpt);
    const names = pushedNames.length > 0 ? pushedNames : plan.storeTags;
    const meta = buildMetadata(root, images, [...new Set(names)], {
      ...(!isIndex(parsed) ? { configDigest: parsed.value.config.digest } : {}),
      ...(digestRepository ? { repository: digestRepository } : {}),
    });
    try {
      await writeFileAtomic(path.resolve(opts.metadataFile), `${JSON.stringify(meta, null, 2)}\n`);
    } catch (e) {
      throw new ArchwayError('STORAGE', `--metadata-file "${opts.metadataFile}": cannot write it: ${errorMessage(e)}`, { cause: e });
    }
  }
}
