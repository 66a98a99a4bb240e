import { resolve as resolvePath } from 'node:path';
import type { Readable } from 'node:stream';
import { Annotation, digestAlgorithm, digestHex, isDigest, MediaType, parseDigest, parseIndex, parseManifestOrIndex, verifier, type Descriptor, type ImageIndex } from '../oci/index.js';
import { ArchwayError, LIMITS, readAllLimited, throwIfAborted, verifiedStream } from '../util/index.js';
import type { CallOptions, ContentSource, ContentTarget } from '../image/index.js';
import { Staging } from './staging.js';
import { TarFile, writeTarFile, type TarSourceEntry } from './tarfile.js';

/** Picks a descriptor in an OCI index by ref.name or digest, as OciLayout.resolve does. */
export function resolveInIndex(index: ImageIndex, reference: string, what: string): Descriptor | undefined {
  if (reference === '') {
    if (index.manifests.length === 1) return index.manifests[0];
    throw new ArchwayError('NOT_FOUND', `${what}: no reference given and index.json holds ${index.manifests.length} images`, { hint: 'add :TAG to the location' });
  }
  const digestPart = reference.includes('@') ? reference.slice(reference.lastIndexOf('@') + 1) : reference;
  if (isDigest(digestPart)) return index.manifests.find((d) => d.digest === digestPart);
  let found: Descriptor | undefined;
  for (const d of index.manifests) if (d.annotations?.[Annotation.RefName] === reference) found = d;
  return found;
}

/** An `oci-archive:FILE` read lazily: blobs stream straight out of the tar, verified. */
export class OciArchiveSource implements ContentSource {
  readonly name: string;
  private constructor(
    private readonly tar: TarFile,
    private readonly index: ImageIndex,
    name: string,
  ) {
    this.name = name;
  }

  static async open(file: string, opts: { signal?: AbortSignal } = {}): Promise<OciArchiveSource> {
    const name = `oci-archive:${file}`;
    const tar = await TarFile.open(file, name, opts);
    const layout = await tar.readFile('oci-layout', 4096);
    if (!layout) throw new ArchwayError('FORMAT', `${name}: not an OCI archive (no oci-layout file)`);
    let version: unknown;
    try {
      version = (JSON.parse(layout.toString('utf8')) as { imageLayoutVersion?: unknown }).imageLayoutVersion;
    } catch {
      version = undefined;
    }
    if (version !== '1.0.0') throw new ArchwayError('FORMAT', `${name}: unsupported oci-layout version ${JSON.stringify(version)}`);
    const raw = await tar.readFile('index.json', 64 * 1024 * 1024);
    if (!raw) throw new ArchwayError('FORMAT', `${name}: not an OCI archive (no index.json)`);
    return new OciArchiveSource(tar, parseIndex(raw, MediaType.OciIndex, `${name}/index.json`).value, name);
  }

  /** The archive's index.json. */
  get indexJson(): ImageIndex {
    return this.index;
  }

  async fetch(desc: Descriptor, opts: CallOptions = {}): Promise<Readable> {
    throwIfAborted(opts.signal);
    const d = parseDigest(desc.digest, `${this.name}: blob digest`);
    const e = this.tar.file(`blobs/${digestAlgorithm(d)}/${digestHex(d)}`);
    if (!e) throw new ArchwayError('NOT_FOUND', `${this.name}: blob ${d} not found`, { details: { digest: d } });
    return verifiedStream(this.tar.stream(e), verifier(d, desc.size, `${this.name}@${d}`), { signal: opts.signal, what: `${this.name}@${d}` });
  }

  async resolve(reference: string, opts: CallOptions = {}): Promise<Descriptor> {
    throwIfAborted(opts.signal);
    const hit = resolveInIndex(this.index, reference, this.name);
    if (hit) return hit;
    const digestPart = reference.slice(reference.lastIndexOf('@') + 1);
    if (isDigest(digestPart) && this.tar.file(`blobs/${digestAlgorithm(digestPart)}/${digestHex(digestPart)}`)) {
      const e = this.tar.file(`blobs/${digestAlgorithm(digestPart)}/${digestHex(digestPart)}`);
      if (e && e.size <= LIMITS.manifest) {
        const raw = await readAllLimited(await this.fetch({ mediaType: 'application/octet-stream', digest: digestPart, size: e.size }, opts), LIMITS.manifest, this.name);
        return { mediaType: parseManifestOrIndex(raw, undefined, `${this.name}@${digestPart}`).mediaType, digest: digestPart, size: e.size };
      }
    }
    throw new ArchwayError('NOT_FOUND', `${this.name}: no image named "${reference}"`, { details: { reference } });
  }
}

/**
 * An `oci-archive:FILE` being written: content goes into a temp OCI layout beside FILE (made on
 * the first write), and `close()` tars it to FILE atomically (temp file + rename). `abort()`
 * leaves nothing behind; a copy calls it when it fails or is interrupted.
 */
export class OciArchiveTarget implements ContentTarget {
  readonly name: string;
  readonly file: string;
  private closed = false;

  private constructor(
    file: string,
    private readonly staging: Staging,
  ) {
    this.file = file;
    this.name = `oci-archive:${file}`;
  }

  static async create(file: string, opts: { signal?: AbortSignal } = {}): Promise<OciArchiveTarget> {
    throwIfAborted(opts.signal);
    const abs = resolvePath(file);
    return new OciArchiveTarget(abs, new Staging(abs, 'oci.d', `oci-archive:${file}`));
  }

  /** The temp layout's directory (it exists once something was written). */
  get stagingDir(): string {
    return this.staging.dir;
  }

  private live(): void {
    if (this.closed) throw new ArchwayError('FAILED', `${this.name}: already closed`);
  }

  private notFound(what: string): ArchwayError {
    return new ArchwayError('NOT_FOUND', `${this.name}: ${what} not found`);
  }

  async fetch(desc: Descriptor, opts?: CallOptions): Promise<Readable> {
    parseDigest(desc.digest, `${this.name}: blob digest`);
    const layout = await this.staging.written();
    if (!layout) throw this.notFound(`blob ${desc.digest}`);
    return layout.fetch(desc, opts);
  }
  async resolve(reference: string, opts?: CallOptions): Promise<Descriptor> {
    const layout = await this.staging.written();
    if (!layout) throw this.notFound(`image "${reference}"`);
    return layout.resolve(reference, opts);
  }
  async exists(desc: Descriptor, opts?: CallOptions): Promise<boolean> {
    const layout = await this.staging.written();
    return layout ? layout.exists(desc, opts) : false;
  }
  async push(desc: Descriptor, content: Readable | Buffer, opts?: CallOptions): Promise<void> {
    this.live();
    parseDigest(desc.digest, `${this.name}: blob digest`);
    return (await this.staging.layout(opts)).push(desc, content, opts);
  }
  /** `reference` is stored as the ref.name annotation as given (skopeo's `oci-archive:FILE:TAG`). */
  async tag(desc: Descriptor, reference: string, opts?: CallOptions): Promise<void> {
    this.live();
    const layout = await this.staging.layout(opts);
    if (reference === '') return layout.addIndexEntry(desc, opts);
    return layout.tag(desc, reference, opts);
  }

  async close(opts: CallOptions = {}): Promise<void> {
    this.live();
    try {
      const staging = await this.staging.layout(opts);
      const index = await staging.readIndex(opts);
      const blobs = (await staging.listBlobs(opts)).sort((a, b) => (a.digest < b.digest ? -1 : 1));
      const entries: TarSourceEntry[] = [
        { name: 'oci-layout', content: Buffer.from(JSON.stringify({ imageLayoutVersion: '1.0.0' })) },
        { name: 'index.json', content: Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: MediaType.OciIndex, manifests: index.manifests })) },
        { name: 'blobs', dir: true },
      ];
      const algs = new Set(blobs.map((b) => digestAlgorithm(b.digest)));
      for (const alg of [...algs].sort()) entries.push({ name: `blobs/${alg}`, dir: true });
      for (const b of blobs) {
        entries.push({
          name: `blobs/${digestAlgorithm(b.digest)}/${digestHex(b.digest)}`,
          size: b.size,
          content: () => staging.fetch({ mediaType: 'application/octet-stream', digest: b.digest, size: b.size }, opts),
        });
      }
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
