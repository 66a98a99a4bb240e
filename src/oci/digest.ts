import { createHash } from 'node:crypto';
import { ArchwayError, VerifyingStream } from '../util/index.js';

declare const digestBrand: unique symbol;
/** A content digest whose grammar has been checked (`sha256:` + 64 hex, or `sha512:` + 128 hex). */
export type Digest = string & { readonly [digestBrand]: true };

const DIGEST_RE: Record<string, RegExp> = {
  sha256: /^sha256:[a-f0-9]{64}$/,
  sha512: /^sha512:[a-f0-9]{128}$/,
};

export function isDigest(text: string): text is Digest {
  const algo = text.slice(0, text.indexOf(':'));
  const re = DIGEST_RE[algo];
  return re !== undefined && re.test(text);
}

/** Checks a digest's grammar before it may go into a URL or a path. */
export function parseDigest(text: string, what = 'digest'): Digest {
  if (!isDigest(text)) {
    throw new ArchwayError('FORMAT', `${what} "${text}" is not a valid digest (expected sha256:<64 hex> or sha512:<128 hex>)`);
  }
  return text;
}

export function digestAlgorithm(d: Digest): 'sha256' | 'sha512' {
  return d.slice(0, d.indexOf(':')) as 'sha256' | 'sha512';
}

export function digestHex(d: Digest): string {
  return d.slice(d.indexOf(':') + 1);
}

export function sha256(data: Buffer | string): Digest {
  return `sha256:${createHash('sha256').update(data).digest('hex')}` as Digest;
}

export function computeDigest(data: Buffer | string, algorithm: 'sha256' | 'sha512' = 'sha256'): Digest {
  return `${algorithm}:${createHash(algorithm).update(data).digest('hex')}` as Digest;
}

/** A transform that fails unless exactly `size` bytes with digest `digest` pass through it. */
export function verifier(digest: Digest, size: number, what: string = digest): VerifyingStream {
  return new VerifyingStream({ algorithm: digestAlgorithm(digest), hex: digestHex(digest), size, what });
}

/** Checks bytes already in memory against a digest and size (manifests, configs). */
export function verifyBytes(data: Buffer, digest: Digest, size: number | undefined, what: string): void {
  if (size !== undefined && data.length !== size) {
    throw new ArchwayError('INTEGRITY', `${what}: got ${data.length} bytes, expected ${size}`);
  }
  const got = computeDigest(data, digestAlgorithm(digest));
  if (got !== digest) throw new ArchwayError('INTEGRITY', `${what}: digest mismatch: content is ${got}, expected ${digest}`);
}

/** Short form for humans: `sha256:0123456789ab`. */
export function shortDigest(d: string): string {
  const i = d.indexOf(':');
  return i < 0 ? d.slice(0, 12) : d.slice(0, i + 13);
}
