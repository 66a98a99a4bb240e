import { createHash } from 'node:crypto';
import { resolve as resolvePath } from 'node:path';
import { Readable } from 'node:stream';
import {
  computeDigest,
  digestAlgorithm,
  digestHex,
  encodeJson,
  isDigest,
  layerCompression,
  formatPlatform,
  MediaType,
  normalizePlatform,
  parseConfig,
  parseDigest,
  verifier,
  type Descriptor,
  type Digest,
  type ImageManifest,
} from '../oci/index.js';
import { familiarName, formatReference, parseReference, withDefaultTag } from '../ref/index.js';
import { ArchwayError, LIMITS, throwIfAborted, verifiedStream } from '../util/index.js';
import { isIndex, platformManifests, readConfig, readManifestOrIndex, type CallOptions, type ContentSource, type ContentTarget } from '../image/index.js';
import { Staging } from './staging.js';
import { TarFile, writeTarFile, type ArchiveEntry, type TarSourceEntry } from './tarfile.js';

/** One entry of a docker-archive's manifest.json. */
export interface DockerArchiveManifestEntry {
  Config: string;
  RepoTags: string[] | null;
  Layers: string[];
}

function parseArchiveManifest(raw: Buffer, what: string): DockerArchiveManifestEntry[] {
  let v: unknown;
  try {
    v = JSON.parse(raw.toString('utf8'));
  } catch (e) {
    throw new ArchwayError('FORMAT', `${what}: manifest.json is not valid JSON: ${(e as Error).message}`);
  }
  if (!Array.isArray(v)) throw new ArchwayError('FORMAT', `${what}: manifest.json is not an array`);
  return v.map((item: unknown, i) => {
    const o = item as Record<string, unknown>;
    if (typeof o !== 'object' || o === null || typeof o.Config !== 'string' || !Array.isArray(o.Layers) || !o.Layers.every((l) => typeof l === 'string')) {
      throw new ArchwayError('FORMAT', `${what}: manifest.json[${i}] needs Config (string) and Layers (strings)`);
    }
    const tags = o.RepoTags;
    if (tags !== undefined && tags !== null && (!Array.isArray(tags) || !tags.every((t) => typeof t === 'string'))) {
      throw new ArchwayError('FORMAT', `${what}: manifest.json[${i}].RepoTags must be strings`);
    }
    return { Config: o.Config, RepoTags: (tags as string[] | null | undefined) ?? null, Layers: o.Layers as string[] };
  });
}

const BLOB_PATH = /^blobs\/(sha256|sha512)\/([a-f0-9]+)$/;

/**
 * A `docker-archive:FILE` (what `docker save` writes, legacy `<id>/layer.tar` or Docker 25's
 * `blobs/sha256/<hex>`), read lazily. `resolve()` returns a Docker schema 2 manifest synthesized
 * for the chosen image; its bytes are deterministic and served from memory.
 */
export class DockerArchiveSource implements ContentSource {
  readonly name: string;
  private readonly docs = new Map<string, Buffer>();
  private readonly blobs = new Map<string, ArchiveEntry>();
  private readonly hashed = new Map<string, Digest>();

  private constructor(
    private readonly tar: TarFile,
    readonly images: DockerArchiveManifestEntry[],
    name: string,
  ) {
    this.name = name;
  }

  static async open(file: string, opts: { signal?: AbortSignal } = {}): Promise<DockerArchiveSource> {
    const name = `docker-archive:${file}`;
    const tar = await TarFile.open(file, name, opts);
    const raw = await tar.readFile('manifest.json', LIMITS.manifest);
    if (!raw) throw new ArchwayError('FORMAT', `${name}: not a docker archive (no manifest.json)`, { hint: 'an OCI archive is read with oci-archive:FILE' });
    const images = parseArchiveManifest(raw, name);
    if (images.length === 0) throw new ArchwayError('FORMAT', `${name}: manifest.json lists no images`);
    return new DockerArchiveSource(tar, images, name);
  }

  private entry(path: string): ArchiveEntry {
    const e = this.tar.file(path);
    if (!e) throw new ArchwayError('FORMAT', `${this.name}: manifest.json names ${path}, which is not in the archive`);
    return e;
  }

  private async digestOf(path: string, e: ArchiveEntry, opts: CallOptions): Promise<Digest> {
    const m = BLOB_PATH.exec(path.replace(/^\.\//, ''));
    if (m && isDigest(`${m[1]}:${m[2]}`)) return `${m[1]}:${m[2]}` as Digest; // fetch verifies it
    const known = this.hashed.get(path);
    if (known) return known;
    const h = createHash('sha256');
    for await (const chunk of this.tar.stream(e)) {
      throwIfAborted(opts.signal);
      h.update(chunk as Buffer);
    }
    const d = `sha256:${h.digest('hex')}` as Digest;
    this.hashed.set(path, d);
    return d;
  }

  private pick(reference: string): DockerArchiveManifestEntry {
    if (reference === '') {
      if (this.images.length === 1) return this.images[0] as DockerArchiveManifestEntry;
      throw new ArchwayError('NOT_FOUND', `${this.name} holds ${this.images.length} images; name one`, { hint: `docker-archive:FILE:NAME:TAG, one of: ${this.images.flatMap((i) => i.RepoTags ?? []).join(', ')}` });
    }
    const want = formatReference(withDefaultTag(parseReference(reference)));
    for (const img of this.images) {
      for (const t of img.RepoTags ?? []) {
        try {
          if (formatReference(withDefaultTag(parseReference(t))) === want) return img;
        } catch {
          // an unparsable RepoTag never matches
        }
      }
    }
    throw new ArchwayError('NOT_FOUND', `${this.name}: no image named "${reference}"`, { details: { reference } });
  }

  async resolve(reference: string, opts: CallOptions = {}): Promise<Descriptor> {
    if (isDigest(reference) && this.docs.has(reference)) {
      const raw = this.docs.get(reference) as Buffer;
      return { mediaType: MediaType.DockerManifest, digest: reference, size: raw.length };
    }
    const img = this.pick(reference);
    const configRaw = await this.tar.readFile(img.Config, LIMITS.config);
    if (!configRaw) throw new ArchwayError('FORMAT', `${this.name}: config ${img.Config} is not in the archive`);
    const config = parseConfig(configRaw, `${this.name} config`);
    if (config.rootfs.diff_ids.length !== img.Layers.length) {
      throw new ArchwayError('FORMAT', `${this.name}: config lists ${config.rootfs.diff_ids.length} diff_ids but manifest.json has ${img.Layers.length} layers`);
    }
    const configDesc: Descriptor = { mediaType: MediaType.DockerConfig, digest: computeDigest(configRaw), size: configRaw.length };
    this.docs.set(configDesc.digest, configRaw);
    const layers: Descriptor[] = [];
    for (const path of img.Layers) {
      const e = this.entry(path);
      const digest = await this.digestOf(path, e, opts);
      const head = await this.tar.head(e, 4);
      const mediaType =
        head[0] === 0x1f && head[1] === 0x8b ? MediaType.DockerLayerGzip : head[0] === 0x28 && head[1] === 0xb5 && head[2] === 0x2f && head[3] === 0xfd ? MediaType.OciLayerZstd : MediaType.DockerLayer;
      layers.push({ mediaType, digest, size: e.size });
      this.blobs.set(digest, e);
    }
    const manifest: ImageManifest = { schemaVersion: 2, mediaType: MediaType.DockerManifest, config: configDesc, layers };
    const raw = encodeJson(manifest);
    const digest = computeDigest(raw);
    this.docs.set(digest, raw);
    const platform = normalizePlatform({ os: config.os, architecture: config.architecture, ...(config.variant ? { variant: config.variant } : {}) });
    return { mediaType: MediaType.DockerManifest, digest, size: raw.length, platform };
  }

  async fetch(desc: Descriptor, opts: CallOptions = {}): Promise<Readable> {
    throwIfAborted(opts.signal);
    const d = parseDigest(desc.digest, `${this.name}: blob digest`);
    const what = `${this.name}@${d}`;
    const doc = this.docs.get(d);
    if (doc) return verifiedStream(Readable.from([doc]), verifier(d, desc.size, what), { signal: opts.signal, what });
    const e = this.blobs.get(d) ?? this.tar.file(`blobs/${digestAlgorithm(d)}/${digestHex(d)}`);
    if (!e) throw new ArchwayError('NOT_FOUND', `${this.name}: blob ${d} not found (resolve the image first)`, { details: { digest: d } });
    return verifiedStream(this.tar.stream(e), verifier(d, desc.size, what), { signal: opts.signal, what });
  }
}

export const ONE_PLATFORM_MESSAGE = 'docker-archive holds one platform; pick one with --platform';

/**
 * A `docker-archive:FILE` being written, in the format `docker load` reads: manifest.json (Config,
 * RepoTags, Layers) and blobs at `blobs/sha256/<hex>` as Docker 25 writes them. It holds ONE
 * single-platform image; layers must be uncompressed or gzip. Blobs are staged in a temp OCI layout
 * beside FILE; `close()` writes FILE atomically.
 */
export class DockerArchiveTarget implements ContentTarget {
  readonly name: string;
  readonly file: string;
  private image: Descriptor | undefined;
  private readonly repoTags: string[] = [];
  private closed = false;

  private constructor(
    file: string,
    private readonly staging: Staging,
    private readonly defaultReference: string | undefined,
  ) {
    this.file = file;
    this.name = `docker-archive:${file}`;
  }

  /** `reference`: the NAME:TAG of `docker-archive:FILE:NAME:TAG`, used when `tag` gets an empty name. */
  static async create(file: string, opts: { signal?: AbortSignal; reference?: string } = {}): Promise<DockerArchiveTarget> {
    throwIfAborted(opts.signal);
    const abs = resolvePath(file);
    return new DockerArchiveTarget(abs, new Staging(abs, 'docker.d', `docker-archive:${file}`), opts.reference);
  }

  /** The temp layout's directory (it exists once something was written). */
  get stagingDir(): string {
    return this.staging.dir;
  }

  private live(): void {
    if (this.closed) throw new ArchwayError('FAILED', `${this.name}: already closed`);
  }

  async fetch(desc: Descriptor, opts?: CallOptions): Promise<Readable> {
    parseDigest(desc.digest, `${this.name}: blob digest`);
    const layout = await this.staging.written();
    if (!layout) throw new ArchwayError('NOT_FOUND', `${this.name}: blob ${desc.digest} not found`);
    return layout.fetch(desc, opts);
  }
  async exists(desc: Descriptor, opts?: CallOptions): Promise<boolean> {
    const layout = await this.staging.written();
    return layout ? layout.exists(desc, opts) : false;
  }
  async resolve(reference: string, opts: CallOptions = {}): Promise<Descriptor> {
    throwIfAborted(opts.signal);
    if (this.image && (reference === '' || reference === this.image.digest || this.repoTags.includes(familiarName(withDefaultTag(parseReference(reference)))))) return this.image;
    throw new ArchwayError('NOT_FOUND', `${this.name}: no image named "${reference}"`);
  }
  async push(desc: Descriptor, content: Readable | Buffer, opts?: CallOptions): Promise<void> {
    this.live();
    parseDigest(desc.digest, `${this.name}: blob digest`);
    return (await this.staging.layout(opts)).push(desc, content, opts);
  }

  /**
   * Names the image. An index is accepted only when it has exactly one platform image (the
   * archive format holds one); that image is what gets written.
   */
  async tag(desc: Descriptor, reference: string, opts: CallOptions = {}): Promise<void> {
    this.live();
    let image = desc;
    const parsed = await readManifestOrIndex(await this.staging.layout(opts), desc, opts);
    if (isIndex(parsed)) {
      const platforms = platformManifests(parsed.value);
      this.acceptPlatforms(
        platforms.map((d) => (d.platform ? formatPlatform(d.platform) : 'unknown')),
        desc.digest,
      );
      image = platforms[0] as Descriptor;
    }
    if (this.image && this.image.digest !== image.digest) {
      throw new ArchwayError('USAGE', `${this.name}: archway writes one image per docker-archive (already holds ${this.image.digest})`);
    }
    this.image = image;
    const name = reference !== '' ? reference : this.defaultReference;
    if (name !== undefined && name !== '') {
      const familiar = familiarName(withDefaultTag(parseReference(name)));
      if (!this.repoTags.includes(familiar)) this.repoTags.push(familiar);
    }
  }

  /**
   * Refuses an index of other than one platform image (the format holds one). A copy asks this
   * as soon as it has read the source's index, before it reads or writes any blob; `tag` asks
   * again. `what` names the index (a reference or a digest).
   */
  acceptPlatforms(platforms: readonly string[], what: string): void {
    if (platforms.length === 1) return;
    throw new ArchwayError('USAGE', `${ONE_PLATFORM_MESSAGE} (${what} is an index of ${platforms.length} platforms${platforms.length > 0 ? `: ${platforms.join(', ')}` : ''})`, {
      hint: 'e.g. --platform linux/amd64, or write an oci-archive, which holds them all',
    });
  }

  async close(opts: CallOptions = {}): Promise<void> {
    this.live();
    try {
      if (!this.image) throw new ArchwayError('FAILED', `${this.name}: no image was written (nothing tagged)`);
      const img = this.image;
      if (this.repoTags.length === 0 && this.defaultReference) this.repoTags.push(familiarName(withDefaultTag(parseReference(this.defaultReference))));
      const staging = await this.staging.layout(opts);
      const parsed = await readManifestOrIndex(staging, img, opts);
      if (isIndex(parsed)) throw new ArchwayError('FORMAT', `${this.name}: ${img.digest} is an index, expected an image manifest`);
      const m = parsed.value;
      const { config } = await readConfig(staging, m.config, opts);
      if (config.rootfs.diff_ids.length !== m.layers.length) throw new ArchwayError('FORMAT', `${this.name}: config and manifest disagree on the number of layers`);
      const path = (d: Digest): string => `blobs/${digestAlgorithm(d)}/${digestHex(d)}`;
      for (const l of m.layers) {
        const c = layerCompression(l.mediaType);
        if (c === 'zstd') throw new ArchwayError('FORMAT', `${this.name}: layer ${l.digest} is zstd-compressed; docker load reads only uncompressed or gzip layers`, { hint: 'archway copy keeps layers as they are (it has no option to recompress them): write an oci-archive:FILE instead (podman load and skopeo read it), or copy a variant of the image published with gzip layers' });
        if (l.urls && l.urls.length > 0 && !(await staging.exists(l, opts))) throw new ArchwayError('FORMAT', `${this.name}: foreign layer ${l.digest} is not present`);
      }
      const manifestJson = [{ Config: path(m.config.digest), RepoTags: this.repoTags, Layers: m.layers.map((l) => path(l.digest)) }];
      const blobs = new Map<Digest, number>();
      blobs.set(m.config.digest, m.config.size);
      for (const l of m.layers) blobs.set(l.digest, l.size);
      const entries: TarSourceEntry[] = [{ name: 'blobs', dir: true }, { name: 'blobs/sha256', dir: true }];
      for (const [digest, size] of [...blobs].sort((a, b) => (a[0] < b[0] ? -1 : 1))) {
        entries.push({ name: path(digest), size, content: () => staging.fetch({ mediaType: 'application/octet-stream', digest, size }, opts) });
      }
      entries.push({ name: 'manifest.json', content: Buffer.from(`${JSON.stringify(manifestJson)}\n`) });
      await writeTarFile(this.file, entries, opts);
    } finally {
      this.closed = true;
      await this.staging.drop();
    }
  }

  /** Drops everything written so far; FILE is left as it was. */
  async abort(): Promise<void> {
    this.closed = true;
    await this.staging.drop();
  }
}
