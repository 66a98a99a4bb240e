import type { Readable } from 'node:stream';
import type { Descriptor } from '../oci/index.js';
import type { ProgressSink } from '../progress/index.js';

export interface CallOptions {
  signal?: AbortSignal;
  progress?: ProgressSink;
}

/**
 * Where content can be read from: a registry repository, the local store, an OCI layout, an archive.
 * `fetch` opens the bytes of a blob or manifest; the stream errors (INTEGRITY) unless exactly
 * `desc.size` bytes with digest `desc.digest` came through, so a consumer never keeps bad bytes.
 */
export interface ContentSource {
  /** For messages: `localhost:5000/app`, `oci:/tmp/layout`, `store`. */
  readonly name: string;
  fetch(desc: Descriptor, opts?: CallOptions): Promise<Readable>;
  /** What a tag or digest in this source points at (the root of an image or index). */
  resolve(reference: string, opts?: CallOptions): Promise<Descriptor>;
  /**
   * The whole bytes of a small blob (a manifest, index or config, at most `limit` bytes),
   * verified like `fetch`'s; for sources that have a cheaper way than a stream (local files).
   */
  readSmall?(desc: Descriptor, limit: number, opts?: CallOptions): Promise<Buffer>;
}

/**
 * Where content can be written. `push` verifies the bytes against `desc` before they become
 * visible; `tag` points a name at a manifest or index already pushed.
 */
export interface ContentTarget extends ContentSource {
  exists(desc: Descriptor, opts?: CallOptions): Promise<boolean>;
  push(desc: Descriptor, content: Readable | Buffer, opts?: CallOptions): Promise<void>;
  tag(desc: Descriptor, reference: string, opts?: CallOptions): Promise<void>;
  /**
   * Makes a blob present without sending its bytes, when the backend can (a registry's
   * cross-repository mount from `source`). Resolves false when it could not; the caller then pushes.
   */
  mount?(desc: Descriptor, source: ContentSource, opts?: CallOptions): Promise<boolean>;
  /**
   * The digest `tag` points at here, or undefined when it points at nothing (or the backend cannot
   * say cheaply): a copy whose tag already points at its root has nothing to write.
   */
  tagged?(tag: string, opts?: CallOptions): Promise<string | undefined>;
  /** Called once after a whole push finished (archives write their index here). */
  close?(opts?: CallOptions): Promise<void>;
  /** Called instead of close when the push failed: drops whatever was staged (archives). */
  abort?(): Promise<void>;
  /**
   * Refuses, before any blob moves, platforms this target cannot hold (a docker-archive holds
   * one); `what` names the source in the message.
   */
  acceptPlatforms?(platforms: readonly string[], what: string): void;
}
