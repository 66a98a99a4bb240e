import type { Platform } from '../oci/index.js';
import type { Descriptor } from '../oci/index.js';
import type { ProgressSink } from '../progress/index.js';
import type { SecretSpec } from './secrets.js';

/**
 * An output, as buildx's `--output`; `name` may list several names, comma-separated.
 * `ociMediatypes` (buildx's oci-mediatypes): false makes the build's manifests and index Docker
 * schema 2 instead of OCI; it is one choice for the whole build (every output gets the same bytes).
 */
export type OutputSpec =
  | { type: 'store'; name?: string; ociMediatypes?: boolean }
  /** `pushByDigest`: every image and the index are pushed by digest, no tag (buildx's push-by-digest). */
  | { type: 'registry'; name?: string; pushByDigest?: boolean; ociMediatypes?: boolean }
  /** `tar: false` writes an OCI layout directory at dest instead of an archive. */
  | { type: 'oci'; dest: string; tar?: boolean; name?: string }
  | { type: 'docker'; dest: string; name?: string }
  | { type: 'local'; dest: string };

export interface BuildOptions {
  /** The build context directory. */
  context: string;
  /** The Dockerfile path (default CONTEXT/Dockerfile). */
  dockerfile?: string;
  /** The Dockerfile's text itself (`-f -`), instead of a file; messages call it Dockerfile. */
  dockerfileText?: string;
  platforms?: Platform[];
  tags?: string[];
  buildArgs?: Record<string, string>;
  target?: string;
  labels?: Record<string, string>;
  noCache?: boolean;
  /** How many platforms build at once (default: the number of cores). */
  jobs?: number;
  network?: 'default' | 'none' | 'host';
  outputs?: OutputSpec[];
  /** Platforms that may fail without failing the build (their image is then left out). */
  optionalPlatforms?: Platform[];
  /** Always publish an index, even for one platform. */
  forceIndex?: boolean;
  /**
   * Write the result here as JSON after every build, as buildx's --metadata-file:
   * containerimage.digest, containerimage.descriptor, containerimage.config.digest (one image),
   * image.name (when named), and archway's per-platform digests. Its directory must exist and be
   * writable (checked before the build); the file is replaced atomically.
   */
  metadataFile?: string;
  insecureRegistries?: string[];
  /** Secrets for RUN --mount=type=secret (`--secret id=ID,src=FILE`, `id=ID,env=VAR`). */
  secrets?: SecretSpec[];
  env?: NodeJS.ProcessEnv;
  signal?: AbortSignal;
  progress?: ProgressSink;
}

export interface PlatformOutcome {
  platform: string;
  ok: boolean;
  /** An optional platform left out before the build (its base lacks it, or it cannot run here); `error` says why. */
  skipped?: boolean;
  descriptor?: Descriptor;
  error?: string;
  /** Emulated RUN time, for the cross-compilation advice. */
  emulatedMs: number;
  stepsRun: number;
  stepsCached: number;
}

export interface BuildResult {
  outcomes: PlatformOutcome[];
  /** What the tags point at: an index, or the single image's manifest. */
  root?: Descriptor;
  tags: string[];
  warnings: string[];
  advice: string[];
}
