import { Readable } from 'node:stream';
import { ArchwayError, readAllLimited } from '../util/index.js';
import { verifyBytes, type Descriptor } from '../oci/index.js';
import type { CallOptions, ContentSource, ContentTarget } from '../image/index.js';

/**
 * A ContentTarget held in memory: for dry runs (what would be pushed) and for tests. Bytes are
 * verified against their descriptor before they become visible, as every target must.
 */
export class MemoryTarget implements ContentTarget {
  readonly blobs = new Map<string, Buffer>();
  readonly mediaTypes = new Map<string, string>();
  readonly tags = new Map<string, Descriptor>();
  readonly pushes: string[] = [];
  constructor(readonly name: string = 'memory') {}

  async fetch(desc: Descriptor, _opts?: CallOptions): Promise<Readable> {
    const b = this.blobs.get(desc.digest);
    if (!b) throw new ArchwayError('NOT_FOUND', `${this.name}: ${desc.digest} not found`);
    verifyBytes(b, desc.digest, desc.size, `${this.name}@${desc.digest}`);
    return Readable.from([b]);
  }

  async resolve(reference: string, _opts?: CallOptions): Promise<Descriptor> {
    const t = this.tags.get(reference);
    if (t) return t;
    const b = this.blobs.get(reference);
    const mt = this.mediaTypes.get(reference);
    if (b && mt) return { mediaType: mt, digest: reference as Descriptor['digest'], size: b.length };
    throw new ArchwayError('NOT_FOUND', `${this.name}: no image "${reference}"`);
  }

  async exists(desc: Descriptor, _opts?: CallOptions): Promise<boolean> {
    return this.blobs.has(desc.digest);
  }

  async push(desc: Descriptor, content: Readable | Buffer, _opts?: CallOptions): Promise<void> {
    const raw = Buffer.isBuffer(content) ? content : await readAllLimited(content, Math.max(desc.size, 1) + 1, `${this.name}@${desc.digest}`);
    verifyBytes(raw, desc.digest, desc.size, `${this.name}@${desc.digest}`);
    this.blobs.set(desc.digest, raw);
    this.mediaTypes.set(desc.digest, desc.mediaType);
    this.pushes.push(desc.digest);
  }

  async tag(desc: Descriptor, reference: string, _opts?: CallOptions): Promise<void> {
    if (!this.blobs.has(desc.digest)) throw new ArchwayError('NOT_FOUND', `${this.name}: cannot tag ${reference}: ${desc.digest} was not pushed`);
    this.tags.set(reference, { mediaType: desc.mediaType, digest: desc.digest, size: desc.size });
  }

  /** Copies a blob from another MemoryTarget without reading it through a stream (for mount tests). */
  async mount(desc: Descriptor, source: ContentSource, _opts?: CallOptions): Promise<boolean> {
    if (!(source instanceof MemoryTarget)) return false;
    const b = source.blobs.get(desc.digest);
    if (!b) return false;
    this.blobs.set(desc.digest, b);
    this.mediaTypes.set(desc.digest, desc.mediaType);
    return true;
  }
}
