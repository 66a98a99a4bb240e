import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseConfig, parseIndex, parseManifest, parseManifestOrIndex } from './types.js';
import { computeDigest, parseDigest, verifyBytes } from './digest.js';
import { isArchwayError } from '../util/index.js';

const D = `sha256:${'a'.repeat(64)}`;
const desc = (extra: Record<string, unknown> = {}) => ({ mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: D, size: 10, ...extra });
const manifest = (extra: Record<string, unknown> = {}) => ({ schemaVersion: 2, mediaType: 'application/vnd.oci.image.manifest.v1+json', config: { ...desc(), mediaType: 'application/vnd.oci.image.config.v1+json' }, layers: [desc()], ...extra });
const buf = (v: unknown) => Buffer.from(JSON.stringify(v));

function rejects(raw: Buffer, path: string, kind: 'manifest' | 'index' | 'config' | 'any' = 'any'): void {
  const call = () => (kind === 'manifest' ? parseManifest(raw, undefined, 'm') : kind === 'index' ? parseIndex(raw, undefined, 'i') : kind === 'config' ? parseConfig(raw, 'c') : parseManifestOrIndex(raw, undefined, 'x'));
  assert.throws(call, (e: unknown) => isArchwayError(e, 'FORMAT') && e.message.includes(path), `expected an error naming ${path}`);
}

test('a valid manifest parses and keeps its raw bytes and their digest', () => {
  const raw = Buffer.from(`${JSON.stringify(manifest(), null, 3)}\n`);
  const p = parseManifest(raw, 'application/vnd.oci.image.manifest.v1+json', 'm');
  assert.equal(p.raw, raw);
  assert.equal(p.digest, computeDigest(raw));
  assert.equal(p.value.layers.length, 1);
});

test('malformed manifests name the field', () => {
  rejects(buf(manifest({ schemaVersion: 3 })), '$.schemaVersion', 'manifest');
  rejects(buf(manifest({ config: 'x' })), '$.config', 'manifest');
  rejects(buf(manifest({ layers: {} })), '$.layers', 'manifest');
  rejects(buf(manifest({ layers: [desc({ digest: 'sha256:xyz' })] })), '$.layers[0].digest', 'manifest');
  rejects(buf(manifest({ layers: [desc(), desc({ size: -1 })] })), '$.layers[1].size', 'manifest');
  rejects(buf(manifest({ layers: [desc({ size: 1.5 })] })), '$.layers[0].size', 'manifest');
  rejects(buf(manifest({ layers: [desc({ mediaType: 7 })] })), '$.layers[0].mediaType', 'manifest');
  rejects(buf(manifest({ annotations: { a: 1 } })), '$.annotations["a"]', 'manifest');
  rejects(buf(manifest({ layers: [desc({ urls: [3] })] })), '$.layers[0].urls[0]', 'manifest');
  rejects(Buffer.from('{not json'), 'not valid JSON');
  rejects(Buffer.from('[]'), '$');
});

test('malformed indexes name the field', () => {
  const idx = (m: unknown) => buf({ schemaVersion: 2, mediaType: 'application/vnd.oci.image.index.v1+json', manifests: m });
  rejects(idx('x'), '$.manifests', 'index');
  rejects(idx([{ ...desc(), platform: { os: 'linux' } }]), '$.manifests[0].platform.architecture', 'index');
  rejects(idx([desc(), { ...desc(), platform: { os: 'linux', architecture: 'arm', variant: 7 } }]), '$.manifests[1].platform.variant', 'index');
  rejects(idx([{ ...desc(), platform: { os: 'linux', architecture: 'amd64', 'os.features': 'x' } }]), 'os.features', 'index');
});

test('a document whose mediaType disagrees with how it was served is refused', () => {
  assert.throws(() => parseManifestOrIndex(buf(manifest()), 'application/vnd.oci.image.index.v1+json', 'x'), (e: unknown) => isArchwayError(e, 'FORMAT') && e.message.includes('$.mediaType'));
});

test('schema 1 manifests are recognised and refused with a clear message', () => {
  for (const raw of [buf({ schemaVersion: 1, name: 'x', tag: 'y', fsLayers: [] }), buf({ schemaVersion: 1, mediaType: 'application/vnd.docker.distribution.manifest.v1+prettyjws' })]) {
    assert.throws(() => parseManifestOrIndex(raw, undefined, 'old'), (e: unknown) => isArchwayError(e, 'FORMAT') && /schema 1/.test(e.message));
  }
  assert.throws(() => parseManifestOrIndex(buf(manifest()), 'application/vnd.docker.distribution.manifest.v1+prettyjws', 'old'), /schema 1/);
});

test('malformed configs name the field', () => {
  const cfg = (extra: Record<string, unknown>) => buf({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: [D] }, ...extra });
  rejects(cfg({ architecture: 5 }), '$.architecture', 'config');
  rejects(cfg({ rootfs: { type: 'foo', diff_ids: [] } }), '$.rootfs.type', 'config');
  rejects(cfg({ rootfs: { type: 'layers', diff_ids: ['nope'] } }), '$.rootfs.diff_ids[0]', 'config');
  rejects(cfg({ config: { Env: 'PATH=/bin' } }), '$.config.Env', 'config');
  rejects(cfg({ config: { Cmd: [1] } }), '$.config.Cmd[0]', 'config');
  rejects(cfg({ config: { Labels: { a: false } } }), '$.config.Labels["a"]', 'config');
  rejects(cfg({ history: {} }), '$.history', 'config');
  assert.equal(parseConfig(cfg({}), 'c').os, 'linux');
});

test('digests: grammar checked, sha512 accepted, bytes verified', () => {
  assert.equal(parseDigest(D), D);
  assert.equal(parseDigest(`sha512:${'b'.repeat(128)}`), `sha512:${'b'.repeat(128)}`);
  for (const bad of ['sha256:../../etc', `sha256:${'A'.repeat(64)}`, 'md5:abc', `sha256:${'a'.repeat(63)}`]) assert.throws(() => parseDigest(bad), /not a valid digest/);
  const data = Buffer.from('hello');
  verifyBytes(data, computeDigest(data), 5, 'x');
  verifyBytes(data, computeDigest(data, 'sha512'), 5, 'x');
  assert.throws(() => verifyBytes(data, computeDigest('other'), 5, 'x'), /digest mismatch/);
  assert.throws(() => verifyBytes(data, computeDigest(data), 6, 'x'), /expected 6/);
});
