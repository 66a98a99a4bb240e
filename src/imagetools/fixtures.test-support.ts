// Test helpers for src/imagetools tests: tiny images and buildx-style indexes in a MemoryTarget.
import { createHash } from 'node:crypto';
import { descriptorFor, encodeJson, MediaType, parsePlatform, type Descriptor, type Digest } from '../oci/index.js';
import { buildImage, buildIndex, emptyConfig, type ManifestFormat } from '../image/index.js';
import { MemoryTarget } from './memory.js';

export function digestOf(b: Buffer): Digest {
  return `sha256:${createHash('sha256').update(b).digest('hex')}` as Digest;
}

/** Pushes a one-layer image for a platform; returns its manifest descriptor (with platform). */
export async function pushImage(t: MemoryTarget, platform: string, opts: { format?: ManifestFormat; tag?: string; salt?: string; configPlatform?: string; config?: Record<string, unknown> } = {}): Promise<Descriptor> {
  const layer = Buffer.from(`layer for ${platform} ${opts.salt ?? ''}`);
  const format = opts.format ?? 'oci';
  const layerDesc = descriptorFor(layer, format === 'docker' ? MediaType.DockerLayerGzip : MediaType.OciLayerGzip);
  const cfg = emptyConfig(parsePlatform(opts.configPlatform ?? platform));
  cfg.config = { ...cfg.config, Entrypoint: ['/bin/sh'], Cmd: ['-c', 'echo hi'], Labels: { 'org.example': platform }, ...opts.config };
  const built = buildImage(cfg, [{ descriptor: layerDesc, diffID: digestOf(layer) }], { format });
  await t.push(layerDesc, layer);
  await t.push(built.configDescriptor, built.config);
  await t.push(built.manifestDescriptor, built.manifest);
  if (opts.tag) await t.tag(built.manifestDescriptor, opts.tag);
  return built.manifestDescriptor;
}

/** A BuildKit-style provenance attestation manifest for `subject`, as an index entry. */
export async function pushAttestation(t: MemoryTarget, subject: Descriptor): Promise<Descriptor> {
  const statement = encodeJson({ _type: 'https://in-toto.io/Statement/v0.1', predicateType: 'https://slsa.dev/provenance/v0.2', subject: [{ name: 'x', digest: { sha256: subject.digest.slice(7) } }] });
  const layer = descriptorFor(statement, MediaType.InTotoJson, { annotations: { 'in-toto.io/predicate-type': 'https://slsa.dev/provenance/v0.2' } });
  const config = encodeJson({ architecture: 'unknown', os: 'unknown', config: {}, rootfs: { type: 'layers', diff_ids: [digestOf(statement)] } });
  const configDesc = descriptorFor(config, MediaType.OciConfig);
  const manifest = encodeJson({ schemaVersion: 2, mediaType: MediaType.OciManifest, config: configDesc, layers: [layer] });
  const md = descriptorFor(manifest, MediaType.OciManifest);
  await t.push(layer, statement);
  await t.push(configDesc, config);
  await t.push(md, manifest);
  return { ...md, platform: { os: 'unknown', architecture: 'unknown' }, annotations: { 'vnd.docker.reference.type': 'attestation-manifest', 'vnd.docker.reference.digest': subject.digest } };
}

/** An index laid out as buildx writes one: platform images, then their provenance attestations. */
export async function pushBuildxIndex(t: MemoryTarget, platforms: string[], tag: string, opts: { attestations?: boolean; salt?: string } = {}): Promise<{ index: Descriptor; images: Descriptor[]; attestations: Descriptor[] }> {
  const images: Descriptor[] = [];
  const attestations: Descriptor[] = [];
  for (const p of platforms) images.push(await pushImage(t, p, opts.salt ? { salt: opts.salt } : {}));
  if (opts.attestations !== false) for (const i of images) attestations.push(await pushAttestation(t, i));
  const { raw, descriptor } = buildIndex([...images, ...attestations], { format: 'oci' });
  await t.push(descriptor, raw);
  await t.tag(descriptor, tag);
  return { index: descriptor, images, attestations };
}
