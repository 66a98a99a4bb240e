import { test } from 'node:test';
import assert from 'node:assert/strict';
import { bestMatch, formatPlatform, nativelyRunnable, parsePlatform, parsePlatformList, platformEquals, platformMatches, normalizePlatform, type Platform } from './platform.js';
import { isArchwayError } from '../util/index.js';

const amd64Host: Platform = { os: 'linux', architecture: 'amd64' };

// [input, normalized] — containerd's platforms tests and the names people use.
const CASES: Array<[string, string]> = [
  ['linux/amd64', 'linux/amd64'],
  ['amd64', 'linux/amd64'],
  ['x86_64', 'linux/amd64'],
  ['x86-64', 'linux/amd64'],
  ['linux/x86_64', 'linux/amd64'],
  ['linux/amd64/v1', 'linux/amd64'],
  ['linux/amd64/v2', 'linux/amd64/v2'],
  ['linux/amd64/v3', 'linux/amd64/v3'],
  ['i386', 'linux/386'],
  ['i686', 'linux/386'],
  ['386', 'linux/386'],
  ['linux/386', 'linux/386'],
  ['x86', 'linux/386'],
  ['arm64', 'linux/arm64'],
  ['aarch64', 'linux/arm64'],
  ['linux/aarch64', 'linux/arm64'],
  ['linux/arm64/v8', 'linux/arm64'],
  ['linux/arm64/8', 'linux/arm64'],
  ['linux/aarch64/v8', 'linux/arm64'],
  ['armhf', 'linux/arm/v7'],
  ['armel', 'linux/arm/v6'],
  ['arm', 'linux/arm/v7'],
  ['linux/arm', 'linux/arm/v7'],
  ['linux/arm/v7', 'linux/arm/v7'],
  ['linux/arm/7', 'linux/arm/v7'],
  ['linux/arm/v6', 'linux/arm/v6'],
  ['linux/arm/6', 'linux/arm/v6'],
  ['linux/arm/v5', 'linux/arm/v5'],
  ['armv7l', 'linux/arm/v7'],
  ['armv6l', 'linux/arm/v6'],
  ['linux/armhf', 'linux/arm/v7'],
  ['linux/armel', 'linux/arm/v6'],
  ['ppc64le', 'linux/ppc64le'],
  ['ppc64el', 'linux/ppc64le'],
  ['linux/ppc64el', 'linux/ppc64le'],
  ['s390x', 'linux/s390x'],
  ['linux/s390x', 'linux/s390x'],
  ['riscv64', 'linux/riscv64'],
  ['linux/riscv64', 'linux/riscv64'],
  ['mips64el', 'linux/mips64le'],
  ['loongarch64', 'linux/loong64'],
  ['LINUX/AMD64', 'linux/amd64'],
  [' linux/arm64 ', 'linux/arm64'],
  ['windows/amd64', 'windows/amd64'],
  ['darwin/arm64', 'darwin/arm64'],
  ['macos/arm64', 'darwin/arm64'],
  ['linux', 'linux/amd64'],
];

for (const [input, want] of CASES) {
  test(`parsePlatform(${JSON.stringify(input)}) is ${want}`, () => {
    assert.equal(formatPlatform(parsePlatform(input, amd64Host)), want);
  });
}

const BAD = ['', 'linux/', '/amd64', 'linux/foo', 'plan9x/amd64', 'linux/amd64/v9', 'linux/arm/v9', 'linux/arm64/v8/x', 'sparc'];
for (const input of BAD) {
  test(`parsePlatform(${JSON.stringify(input)}) is a clear PLATFORM error listing known platforms`, () => {
    assert.throws(
      () => parsePlatform(input, amd64Host),
      (e: unknown) => isArchwayError(e, 'PLATFORM') && e.message.includes(`"${input}"`) && (e.hint ?? '').includes('linux/arm64'),
    );
  });
}

test('lists split on commas and drop duplicates after normalization', () => {
  assert.deepEqual(parsePlatformList('linux/amd64,aarch64,linux/arm64/v8,armhf').map(formatPlatform), ['linux/amd64', 'linux/arm64', 'linux/arm/v7']);
});

test('equality is after normalization; os.version and os.features are carried', () => {
  assert.ok(platformEquals({ os: 'linux', architecture: 'arm64', variant: 'v8' }, { os: 'linux', architecture: 'aarch64' }));
  assert.ok(!platformEquals({ os: 'linux', architecture: 'arm', variant: 'v6' }, { os: 'linux', architecture: 'arm' }));
  const w = normalizePlatform({ os: 'windows', architecture: 'amd64', 'os.version': '10.0.17763.1', 'os.features': ['win32k'] });
  assert.equal(w['os.version'], '10.0.17763.1');
  assert.deepEqual(w['os.features'], ['win32k']);
});

test('what a host runs natively (containerd): arm64 runs arm v8..v5, amd64 runs 386, arm/v7 runs v6', () => {
  assert.deepEqual(nativelyRunnable({ os: 'linux', architecture: 'arm64' }).map(formatPlatform), ['linux/arm64', 'linux/arm/v8', 'linux/arm/v7', 'linux/arm/v6', 'linux/arm/v5']);
  assert.deepEqual(nativelyRunnable(amd64Host).map(formatPlatform), ['linux/amd64', 'linux/386']);
  assert.deepEqual(nativelyRunnable({ os: 'linux', architecture: 'arm', variant: 'v7' }).map(formatPlatform), ['linux/arm/v7', 'linux/arm/v6', 'linux/arm/v5']);
  assert.ok(platformMatches(nativelyRunnable(amd64Host), { os: 'linux', architecture: '386' }));
  assert.ok(!platformMatches(nativelyRunnable(amd64Host), { os: 'linux', architecture: 'arm64' }));
});

test('bestMatch prefers the exact platform, then the best compatible variant, never an attestation', () => {
  const entries = [
    { platform: { os: 'unknown', architecture: 'unknown' }, id: 'att' },
    { platform: { os: 'linux', architecture: 'arm', variant: 'v6' }, id: 'v6' },
    { platform: { os: 'linux', architecture: 'arm', variant: 'v5' }, id: 'v5' },
    { platform: { os: 'linux', architecture: 'amd64' }, id: 'amd64' },
  ];
  assert.equal(bestMatch(entries, { os: 'linux', architecture: 'arm', variant: 'v7' })?.id, 'v6');
  assert.equal(bestMatch(entries, { os: 'linux', architecture: 'amd64' })?.id, 'amd64');
  assert.equal(bestMatch(entries, { os: 'linux', architecture: 's390x' }), undefined);
});
