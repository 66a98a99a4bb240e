import { ArchwayError } from '../util/index.js';
import { computeDigest, isDigest, type Digest } from './digest.js';
import { isIndexMediaType, isManifestMediaType, isSchema1MediaType, MediaType, Annotation, ATTESTATION_MANIFEST } from './mediatypes.js';
import type { Platform } from './platform.js';

export interface Descriptor {
  mediaType: string;
  digest: Digest;
  size: number;
  urls?: string[];
  annotations?: Record<string, string>;
  platform?: Platform;
  artifactType?: string;
  data?: string;
}

export interface ImageManifest {
  schemaVersion: 2;
  mediaType?: string;
  artifactType?: string;
  config: Descriptor;
  layers: Descriptor[];
  subject?: Descriptor;
  annotations?: Record<string, string>;
}

export interface ImageIndex {
  schemaVersion: 2;
  mediaType?: string;
  artifactType?: string;
  manifests: Descriptor[];
  subject?: Descriptor;
  annotations?: Record<string, string>;
}

export interface HealthConfig {
  Test?: string[];
  Interval?: number;
  Timeout?: number;
  StartPeriod?: number;
  StartInterval?: number;
  Retries?: number;
}

/** The runtime part of an image config (OCI `config`, Docker's `container_config` shape). */
export interface ContainerConfig {
  User?: string;
  ExposedPorts?: Record<string, Record<string, never>>;
  Env?: string[];
  Entrypoint?: string[] | null;
  Cmd?: string[] | null;
  Volumes?: Record<string, Record<string, never>>;
  WorkingDir?: string;
  Labels?: Record<string, string>;
  StopSignal?: string;
  ArgsEscaped?: boolean;
  Healthcheck?: HealthConfig;
  OnBuild?: string[] | null;
  Shell?: string[];
}

export interface HistoryEntry {
  created?: string;
  created_by?: string;
  author?: string;
  comment?: string;
  empty_layer?: boolean;
}

export interface ImageConfig {
  created?: string;
  author?: string;
  architecture: string;
  os: string;
  variant?: string;
  'os.version'?: string;
  'os.features'?: string[];
  config?: ContainerConfig;
  rootfs: { type: 'layers'; diff_ids: Digest[] };
  history?: HistoryEntry[];
  [extra: string]: unknown;
}

/** A parsed manifest or index with the exact bytes it came from: digests are of these bytes. */
export interface Parsed<T> {
  value: T;
  raw: Buffer;
  digest: Digest;
  mediaType: string;
}

// ---------------------------------------------------------------- validation

type Json = unknown;

function fail(path: string, message: string, what: string): never {
  throw new ArchwayError('FORMAT', `${what}: ${path}: ${message}`, { details: { path } });
}

function isObject(v: Json): v is Record<string, Json> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function expectObject(v: Json, path: string, what: string): Record<string, Json> {
  if (!isObject(v)) fail(path, `expected an object, got ${describe(v)}`, what);
  return v;
}

function describe(v: Json): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'an array';
  return `a ${typeof v}`;
}

function expectString(v: Json, path: string, what: string): string {
  if (typeof v !== 'string') fail(path, `expected a string, got ${describe(v)}`, what);
  return v;
}

function optionalString(o: Record<string, Json>, key: string, path: string, what: string): string | undefined {
  const v = o[key];
  if (v === undefined) return undefined;
  return expectString(v, `${path}.${key}`, what);
}

function stringMap(v: Json, path: string, what: string): Record<string, string> | undefined {
  if (v === undefined || v === null) return undefined;
  const o = expectObject(v, path, what);
  for (const [k, val] of Object.entries(o)) expectString(val, `${path}[${JSON.stringify(k)}]`, what);
  return o as Record<string, string>;
}

function stringArray(v: Json, path: string, what: string): string[] | undefined {
  if (v === undefined || v === null) return undefined;
  if (!Array.isArray(v)) fail(path, `expected an array of strings, got ${describe(v)}`, what);
  v.forEach((s, i) => expectString(s, `${path}[${i}]`, what));
  return v as string[];
}

export function validatePlatform(v: Json, path: string, what: string): Platform {
  const o = expectObject(v, path, what);
  const os = expectString(o.os, `${path}.os`, what);
  const architecture = expectString(o.architecture, `${path}.architecture`, what);
  const p: Platform = { os, architecture };
  const variant = optionalString(o, 'variant', path, what);
  if (variant !== undefined) p.variant = variant;
  const osVersion = optionalString(o, 'os.version', path, what);
  if (osVersion !== undefined) p['os.version'] = osVersion;
  const features = stringArray(o['os.features'], `${path}["os.features"]`, what);
  if (features !== undefined) p['os.features'] = features;
  return p;
}

export function validateDescriptor(v: Json, path: string, what: string): Descriptor {
  const o = expectObject(v, path, what);
  const mediaType = expectString(o.mediaType, `${path}.mediaType`, what);
  const digest = expectString(o.digest, `${path}.digest`, what);
  if (!isDigest(digest)) fail(`${path}.digest`, `"${digest}" is not a valid digest`, what);
  const size = o.size;
  if (typeof size !== 'number' || !Number.isSafeInteger(size) || size < 0) {
    fail(`${path}.size`, `expected a non-negative integer, got ${JSON.stringify(size)}`, what);
  }
  const d: Descriptor = { mediaType, digest, size };
  const urls = stringArray(o.urls, `${path}.urls`, what);
  if (urls) d.urls = urls;
  const annotations = stringMap(o.annotations, `${path}.annotations`, what);
  if (annotations) d.annotations = annotations;
  if (o.platform !== undefined) d.platform = validatePlatform(o.platform, `${path}.platform`, what);
  const artifactType = optionalString(o, 'artifactType', path, what);
  if (artifactType !== undefined) d.artifactType = artifactType;
  const data = optionalString(o, 'data', path, what);
  if (data !== undefined) d.data = data;
  return d;
}

function parseJson(raw: Buffer, what: string): Json {
  try {
    return JSON.parse(raw.toString('utf8')) as Json;
  } catch (e) {
    throw new ArchwayError('FORMAT', `${what}: not valid JSON: ${(e as Error).message}`);
  }
}

function refuseSchema1(o: Record<string, Json>, what: string): void {
  if (o.schemaVersion === 1 || (typeof o.mediaType === 'string' && isSchema1MediaType(o.mediaType) && o.mediaType !== 'application/json')) {
    throw new ArchwayError('FORMAT', `${what}: Docker image manifest schema 1 is not supported (deprecated since 2017 and removed from Docker)`, {
      hint: 'push the image again with a current tool, which writes schema 2 or OCI manifests',
    });
  }
}

/**
 * Parses a manifest or an index from its bytes. The declared media type (a registry's
 * Content-Type or a descriptor's) is checked against the document's own `mediaType`.
 */
export function parseManifestOrIndex(raw: Buffer, declaredMediaType: string | undefined, what: string): Parsed<ImageManifest> | Parsed<ImageIndex> {
  const json = parseJson(raw, what);
  const o = expectObject(json, '$', what);
  refuseSchema1(o, what);
  if (declaredMediaType && isSchema1MediaType(declaredMediaType) && declaredMediaType !== 'application/json') refuseSchema1({ schemaVersion: 1 }, what);
  const own = typeof o.mediaType === 'string' ? o.mediaType : undefined;
  let mediaType = own ?? (declaredMediaType && declaredMediaType !== 'application/json' ? declaredMediaType : undefined);
  if (mediaType === undefined) mediaType = Array.isArray(o.manifests) ? MediaType.OciIndex : MediaType.OciManifest;
  if (own && declaredMediaType && declaredMediaType !== 'application/json' && own !== declaredMediaType && !(isIndexMediaType(own) && isIndexMediaType(declaredMediaType)) && !(isManifestMediaType(own) && isManifestMediaType(declaredMediaType))) {
    fail('$.mediaType', `document says "${own}" but was served as "${declaredMediaType}"`, what);
  }
  const digest = computeDigest(raw);
  if (isIndexMediaType(mediaType)) return { value: validateIndex(o, what), raw, digest, mediaType };
  if (isManifestMediaType(mediaType)) return { value: validateManifest(o, what), raw, digest, mediaType };
  fail('$.mediaType', `"${mediaType}" is neither an image manifest nor an index`, what);
}

export function parseManifest(raw: Buffer, declaredMediaType: string | undefined, what: string): Parsed<ImageManifest> {
  const p = parseManifestOrIndex(raw, declaredMediaType, what);
  if (!isManifestMediaType(p.mediaType)) throw new ArchwayError('FORMAT', `${what}: expected an image manifest, got ${p.mediaType}`);
  return p as Parsed<ImageManifest>;
}

export function parseIndex(raw: Buffer, declaredMediaType: string | undefined, what: string): Parsed<ImageIndex> {
  const p = parseManifestOrIndex(raw, declaredMediaType, what);
  if (!isIndexMediaType(p.mediaType)) throw new ArchwayError('FORMAT', `${what}: expected an image index, got ${p.mediaType}`);
  return p as Parsed<ImageIndex>;
}

function schemaVersion2(o: Record<string, Json>, what: string): void {
  if (o.schemaVersion !== 2) fail('$.schemaVersion', `expected 2, got ${JSON.stringify(o.schemaVersion)}`, what);
}

export function validateManifest(o: Record<string, Json>, what: string): ImageManifest {
  schemaVersion2(o, what);
  const config = validateDescriptor(o.config, '$.config', what);
  if (!Array.isArray(o.layers)) fail('$.layers', `expected an array, got ${describe(o.layers)}`, what);
  const layers = o.layers.map((l, i) => validateDescriptor(l, `$.layers[${i}]`, what));
  const m: ImageManifest = { schemaVersion: 2, config, layers };
  const mt = optionalString(o, 'mediaType', '$', what);
  if (mt !== undefined) m.mediaType = mt;
  const at = optionalString(o, 'artifactType', '$', what);
  if (at !== undefined) m.artifactType = at;
  if (o.subject !== undefined) m.subject = validateDescriptor(o.subject, '$.subject', what);
  const ann = stringMap(o.annotations, '$.annotations', what);
  if (ann) m.annotations = ann;
  return m;
}

export function validateIndex(o: Record<string, Json>, what: string): ImageIndex {
  schemaVersion2(o, what);
  if (!Array.isArray(o.manifests)) fail('$.manifests', `expected an array, got ${describe(o.manifests)}`, what);
  const manifests = o.manifests.map((m, i) => validateDescriptor(m, `$.manifests[${i}]`, what));
  const idx: ImageIndex = { schemaVersion: 2, manifests };
  const mt = optionalString(o, 'mediaType', '$', what);
  if (mt !== undefined) idx.mediaType = mt;
  const at = optionalString(o, 'artifactType', '$', what);
  if (at !== undefined) idx.artifactType = at;
  if (o.subject !== undefined) idx.subject = validateDescriptor(o.subject, '$.subject', what);
  const ann = stringMap(o.annotations, '$.annotations', what);
  if (ann) idx.annotations = ann;
  return idx;
}

export function parseConfig(raw: Buffer, what: string): ImageConfig {
  const o = expectObject(parseJson(raw, what), '$', what);
  expectString(o.architecture, '$.architecture', what);
  expectString(o.os, '$.os', what);
  const rootfs = expectObject(o.rootfs, '$.rootfs', what);
  if (rootfs.type !== 'layers') fail('$.rootfs.type', `expected "layers", got ${JSON.stringify(rootfs.type)}`, what);
  if (!Array.isArray(rootfs.diff_ids)) fail('$.rootfs.diff_ids', `expected an array, got ${describe(rootfs.diff_ids)}`, what);
  rootfs.diff_ids.forEach((d, i) => {
    if (typeof d !== 'string' || !isDigest(d)) fail(`$.rootfs.diff_ids[${i}]`, `"${String(d)}" is not a valid digest`, what);
  });
  if (o.config !== undefined && o.config !== null) {
    const c = expectObject(o.config, '$.config', what);
    stringArray(c.Env, '$.config.Env', what);
    stringArray(c.Entrypoint, '$.config.Entrypoint', what);
    stringArray(c.Cmd, '$.config.Cmd', what);
    stringMap(c.Labels, '$.config.Labels', what);
    if (c.User !== undefined) expectString(c.User, '$.config.User', what);
    if (c.WorkingDir !== undefined) expectString(c.WorkingDir, '$.config.WorkingDir', what);
  }
  if (o.history !== undefined && !Array.isArray(o.history)) fail('$.history', `expected an array, got ${describe(o.history)}`, what);
  return o as unknown as ImageConfig;
}

/** Attestation manifests (BuildKit's provenance/SBOM) describe another manifest; they are never a platform. */
export function isAttestation(d: Descriptor): boolean {
  return d.annotations?.[Annotation.DockerRefType] === ATTESTATION_MANIFEST;
}

export function attestationSubject(d: Descriptor): string | undefined {
  return isAttestation(d) ? d.annotations?.[Annotation.DockerRefDigest] : undefined;
}

/** Canonical JSON bytes for a document archway writes (stable key order as given, no spacing). */
export function encodeJson(value: unknown): Buffer {
  return Buffer.from(JSON.stringify(value), 'utf8');
}

/** A descriptor for bytes archway wrote itself. */
export function descriptorFor(raw: Buffer, mediaType: string, extra: Partial<Descriptor> = {}): Descriptor {
  return { mediaType, digest: computeDigest(raw), size: raw.length, ...extra };
}
