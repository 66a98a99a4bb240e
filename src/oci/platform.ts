import { ArchwayError } from '../util/index.js';

/** An image's platform, as in the OCI image index and image config. */
export interface Platform {
  os: string;
  architecture: string;
  variant?: string;
  'os.version'?: string;
  'os.features'?: string[];
}

/** Architectures archway knows, with the variants each may carry (the first is the default). */
const KNOWN_ARCHITECTURES: Record<string, readonly string[]> = {
  amd64: ['', 'v2', 'v3', 'v4'],
  '386': [''],
  arm64: ['', 'v9'],
  arm: ['v7', 'v6', 'v5', 'v8'],
  ppc64le: [''],
  ppc64: [''],
  s390x: [''],
  riscv64: [''],
  mips64le: [''],
  mips64: [''],
  mipsle: [''],
  mips: [''],
  loong64: [''],
  wasm: [''],
};

const KNOWN_OSES = ['linux', 'windows', 'darwin', 'freebsd', 'netbsd', 'openbsd', 'illumos', 'solaris', 'wasip1', 'js'];

/** Names people use for an architecture, mapped to the OCI name and the variant they imply. */
const ARCH_ALIASES: Record<string, { architecture: string; variant?: string }> = {
  x86_64: { architecture: 'amd64' },
  'x86-64': { architecture: 'amd64' },
  amd64: { architecture: 'amd64' },
  x64: { architecture: 'amd64' },
  i386: { architecture: '386' },
  i486: { architecture: '386' },
  i586: { architecture: '386' },
  i686: { architecture: '386' },
  x86: { architecture: '386' },
  ia32: { architecture: '386' },
  '386': { architecture: '386' },
  aarch64: { architecture: 'arm64' },
  arm64: { architecture: 'arm64' },
  armhf: { architecture: 'arm', variant: 'v7' },
  armel: { architecture: 'arm', variant: 'v6' },
  armv7: { architecture: 'arm', variant: 'v7' },
  armv7l: { architecture: 'arm', variant: 'v7' },
  armv6: { architecture: 'arm', variant: 'v6' },
  armv6l: { architecture: 'arm', variant: 'v6' },
  armv5: { architecture: 'arm', variant: 'v5' },
  armv5l: { architecture: 'arm', variant: 'v5' },
  armv8l: { architecture: 'arm', variant: 'v8' },
  arm: { architecture: 'arm' },
  ppc64el: { architecture: 'ppc64le' },
  ppc64le: { architecture: 'ppc64le' },
  powerpc64le: { architecture: 'ppc64le' },
  ppc64: { architecture: 'ppc64' },
  s390x: { architecture: 's390x' },
  riscv64: { architecture: 'riscv64' },
  mips64el: { architecture: 'mips64le' },
  mips64le: { architecture: 'mips64le' },
  mips64: { architecture: 'mips64' },
  mipsel: { architecture: 'mipsle' },
  mipsle: { architecture: 'mipsle' },
  mips: { architecture: 'mips' },
  loong64: { architecture: 'loong64' },
  loongarch64: { architecture: 'loong64' },
  wasm: { architecture: 'wasm' },
};

const OS_ALIASES: Record<string, string> = { macos: 'darwin', osx: 'darwin' };

function normalizeVariant(architecture: string, variant: string | undefined): string | undefined {
  if (variant === undefined || variant === '') {
    if (architecture === 'arm') return 'v7';
    return undefined;
  }
  let v = variant.toLowerCase();
  if (/^\d+$/.test(v)) v = `v${v}`;
  if (architecture === 'arm64' && v === 'v8') return undefined;
  if (architecture === 'amd64' && v === 'v1') return undefined;
  return v;
}

/** Every platform string archway knows, for error messages and completion. */
export function knownPlatforms(): string[] {
  const out: string[] = [];
  for (const [arch, variants] of Object.entries(KNOWN_ARCHITECTURES)) {
    for (const v of variants) out.push(v ? `linux/${arch}/${v}` : `linux/${arch}`);
  }
  return out;
}

function unknownPlatform(input: string, what: string): ArchwayError {
  const common = ['linux/amd64', 'linux/arm64', 'linux/arm/v7', 'linux/arm/v6', 'linux/ppc64le', 'linux/s390x', 'linux/386', 'linux/riscv64'];
  return new ArchwayError('PLATFORM', `unknown platform "${input}": ${what}`, {
    hint: `known platforms include ${common.join(', ')} (all: ${knownPlatforms().join(', ')})`,
    details: { platform: input },
  });
}

/**
 * Parses a platform as users write it: `linux/arm64`, `linux/arm/v7`, `arm64`, `aarch64`, `armhf`,
 * `x86_64`, `linux`. Returns the normalized platform; unknown names are an error listing known ones.
 */
export function parsePlatform(input: string, host: Platform = hostPlatform()): Platform {
  const text = input.trim();
  if (text === '') throw unknownPlatform(input, 'empty');
  const parts = text.toLowerCase().split('/');
  if (parts.length > 3 || parts.some((p) => p === '')) throw unknownPlatform(input, 'expected os/arch[/variant]');
  let os: string;
  let archName: string | undefined;
  let variant: string | undefined;
  if (parts.length === 1) {
    const only = parts[0] as string;
    const osName = OS_ALIASES[only] ?? only;
    if (ARCH_ALIASES[only]) {
      os = 'linux';
      archName = only;
    } else if (KNOWN_OSES.includes(osName)) {
      return { ...host, os: osName };
    } else {
      throw unknownPlatform(input, `"${only}" is neither an OS nor an architecture`);
    }
  } else {
    os = parts[0] as string;
    archName = parts[1];
    variant = parts[2];
  }
  os = OS_ALIASES[os] ?? os;
  if (!KNOWN_OSES.includes(os)) throw unknownPlatform(input, `unknown OS "${os}"`);
  const alias = ARCH_ALIASES[archName as string];
  if (!alias) throw unknownPlatform(input, `unknown architecture "${archName}"`);
  const architecture = alias.architecture;
  const v = normalizeVariant(architecture, variant ?? alias.variant);
  const allowed = KNOWN_ARCHITECTURES[architecture] ?? [''];
  if (v !== undefined && !allowed.includes(v)) {
    throw unknownPlatform(input, `unknown variant "${variant}" for ${architecture} (known: ${allowed.filter(Boolean).join(', ') || 'none'})`);
  }
  return v === undefined ? { os, architecture } : { os, architecture, variant: v };
}

/** Parses a comma-separated list (`--platform linux/amd64,linux/arm64`), dropping duplicates. */
export function parsePlatformList(input: string, host?: Platform): Platform[] {
  const out: Platform[] = [];
  for (const item of input.split(',')) {
    if (item.trim() === '') continue;
    const p = parsePlatform(item, host);
    if (!out.some((q) => platformEquals(p, q))) out.push(p);
  }
  if (out.length === 0) throw unknownPlatform(input, 'no platform given');
  return out;
}

/**
 * Normalizes a platform read from an image or index (lenient: unknown architectures are kept as
 * they are, since a registry may hold platforms archway has no table entry for).
 */
export function normalizePlatform(p: Platform): Platform {
  const os = OS_ALIASES[p.os.toLowerCase()] ?? p.os.toLowerCase();
  const alias = ARCH_ALIASES[p.architecture.toLowerCase()];
  const architecture = alias?.architecture ?? p.architecture.toLowerCase();
  const variant = normalizeVariant(architecture, p.variant || alias?.variant);
  const out: Platform = { os, architecture };
  if (variant !== undefined) out.variant = variant;
  if (p['os.version'] !== undefined) out['os.version'] = p['os.version'];
  if (p['os.features'] !== undefined) out['os.features'] = [...p['os.features']];
  return out;
}

export function formatPlatform(p: Platform): string {
  const n = normalizePlatform(p);
  return n.variant ? `${n.os}/${n.architecture}/${n.variant}` : `${n.os}/${n.architecture}`;
}

/** Same os, architecture and variant after normalization (`linux/arm64/v8` equals `linux/arm64`). */
export function platformEquals(a: Platform, b: Platform): boolean {
  return formatPlatform(a) === formatPlatform(b);
}

/** Attestation manifests carry `unknown/unknown`; they are never a runnable platform. */
export function isUnknownPlatform(p: Platform | undefined): boolean {
  return p === undefined || (p.os === 'unknown' && p.architecture === 'unknown');
}

const ARM_VARIANT_ORDER = ['v5', 'v6', 'v7', 'v8'];
const AMD64_VARIANT_ORDER = ['', 'v2', 'v3', 'v4'];

/**
 * The platforms a host runs natively, best first (containerd's rules): arm64 runs arm/v8..v5,
 * arm/v7 runs v6 and v5, amd64 runs 386 and lower amd64 micro-architecture levels.
 */
export function nativelyRunnable(host: Platform): Platform[] {
  const h = normalizePlatform(host);
  const out: Platform[] = [h];
  const add = (architecture: string, variant?: string): void => {
    const p: Platform = variant ? { os: h.os, architecture, variant } : { os: h.os, architecture };
    if (!out.some((q) => platformEquals(p, q))) out.push(p);
  };
  if (h.architecture === 'amd64') {
    const i = AMD64_VARIANT_ORDER.indexOf(h.variant ?? '');
    for (let j = i - 1; j >= 0; j--) add('amd64', AMD64_VARIANT_ORDER[j] || undefined);
    add('386');
  } else if (h.architecture === 'arm64') {
    for (const v of ['v8', 'v7', 'v6', 'v5']) add('arm', v);
  } else if (h.architecture === 'arm') {
    const i = ARM_VARIANT_ORDER.indexOf(h.variant ?? 'v7');
    for (let j = i - 1; j >= 0; j--) add('arm', ARM_VARIANT_ORDER[j]);
  }
  return out;
}

/** Whether `candidate` can run on a host that runs `runnable` (os and arch/variant, os.version ignored unless both set). */
export function platformMatches(runnable: readonly Platform[], candidate: Platform): boolean {
  return runnable.some((r) => platformEquals(r, candidate) && (!r['os.version'] || !candidate['os.version'] || r['os.version'] === candidate['os.version']));
}

/**
 * Picks, among the platforms an index offers, the best for a wanted platform: an exact match
 * first, then (for arm) the highest compatible lower variant, as containerd's Only() matcher does.
 */
export function bestMatch<T extends { platform?: Platform }>(entries: readonly T[], wanted: Platform): T | undefined {
  const order = nativelyRunnable(wanted);
  for (const p of order) {
    const hit = entries.find((e) => e.platform !== undefined && !isUnknownPlatform(e.platform) && platformEquals(e.platform, p));
    if (hit) return hit;
  }
  return undefined;
}

let cachedHost: Platform | undefined;

/** The platform of the machine archway runs on. */
export function hostPlatform(): Platform {
  if (cachedHost) return cachedHost;
  const archMap: Record<string, Platform> = {
    x64: { os: 'linux', architecture: 'amd64' },
    arm64: { os: 'linux', architecture: 'arm64' },
    arm: { os: 'linux', architecture: 'arm', variant: 'v7' },
    ia32: { os: 'linux', architecture: '386' },
    ppc64: { os: 'linux', architecture: 'ppc64le' },
    s390x: { os: 'linux', architecture: 's390x' },
    riscv64: { os: 'linux', architecture: 'riscv64' },
    loong64: { os: 'linux', architecture: 'loong64' },
  };
  const base = archMap[process.arch] ?? { os: 'linux', architecture: process.arch };
  const os = process.platform === 'linux' ? 'linux' : (OS_ALIASES[process.platform] ?? process.platform);
  cachedHost = { ...base, os };
  return cachedHost;
}

/** Splits a platform into the values of BuildKit's automatic args (TARGETOS, TARGETARCH, TARGETVARIANT). */
export function platformArgs(prefix: 'TARGET' | 'BUILD', p: Platform): Record<string, string> {
  const n = normalizePlatform(p);
  return {
    [`${prefix}PLATFORM`]: formatPlatform(n),
    [`${prefix}OS`]: n.os,
    [`${prefix}ARCH`]: n.architecture,
    [`${prefix}VARIANT`]: n.variant ?? '',
  };
}

/** Debian's architecture name for a platform (for fixtures built from Debian packages). */
export function debianArchitecture(p: Platform): string | undefined {
  const key = formatPlatform(p);
  const map: Record<string, string> = {
    'linux/amd64': 'amd64',
    'linux/arm64': 'arm64',
    'linux/arm/v7': 'armhf',
    'linux/arm/v6': 'armel',
    'linux/arm/v5': 'armel',
    'linux/ppc64le': 'ppc64el',
    'linux/s390x': 's390x',
    'linux/386': 'i386',
    'linux/riscv64': 'riscv64',
    'linux/mips64le': 'mips64el',
  };
  return map[key];
}
