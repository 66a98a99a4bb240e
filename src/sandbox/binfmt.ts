/**
 * binfmt_misc: archway's own table of QEMU user-mode emulators (ELF magic and mask per
 * architecture, from QEMU's scripts/qemu-binfmt-conf.sh), reading the kernel's entries,
 * registering and removing emulators, and the preflight question "can this platform run here?".
 *
 * Flags archway registers with: "POCF".
 *   F  fix-binary: the kernel opens the interpreter at registration time, so the emulator works
 *      inside a chroot/mount namespace where /usr/bin/qemu-*-static does not exist. Without F an
 *      entry is useless to a sandbox (reported as not usable, with a warning).
 *   C  credentials: a setuid binary inside the image keeps its meaning under emulation (as
 *      tonistiigi/binfmt, the binfmt docker/buildx installs, registers); C implies O.
 *   O  open-binary: the emulator gets the binary as an fd (implied by C, written for clarity).
 *   P  preserve-argv0: the program sees its real argv[0] (`-sh`, busybox applets invoked by name
 *      through a path). Only added when the emulator understands it: QEMU >= 6.0 reads the
 *      kernel's AT_FLAGS_PRESERVE_ARGV0 (kernel >= 5.12). Debian's own qemu-user-static
 *      registrations use "OPF" for the same reasons. An older QEMU would see an extra argument.
 */
import { spawn } from 'node:child_process';
import { promises as fs, readFileSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { ArchwayError, throwIfAborted } from '../util/index.js';
import { kernelRefuses } from './compat.js';
import {
  formatPlatform,
  hostPlatform,
  nativelyRunnable,
  normalizePlatform,
  parsePlatform,
  platformMatches,
  type Platform,
} from '../oci/index.js';

export const BINFMT_DIR = '/proc/sys/fs/binfmt_misc';

export interface EmulatorSpec {
  /** QEMU's name (qemu-NAME-static). */
  name: string;
  /** The OCI platforms this emulator runs (first is the main one). */
  platforms: string[];
  magic: string;
  mask: string;
}

/** From QEMU's scripts/qemu-binfmt-conf.sh (escaped as binfmt_misc's register format wants). */
export const EMULATORS: readonly EmulatorSpec[] = [
  {
    name: 'x86_64',
    platforms: ['linux/amd64'],
    magic: '\\x7fELF\\x02\\x01\\x01\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x02\\x00\\x3e\\x00',
    mask: '\\xff\\xff\\xff\\xff\\xff\\xfe\\xfe\\x00\\xff\\xff\\xff\\xff\\xff\\xff\\xff\\xff\\xfe\\xff\\xff\\xff',
  },
  {
    name: 'i386',
    platforms: ['linux/386'],
    magic: '\\x7fELF\\x01\\x01\\x01\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x02\\x00\\x03\\x00',
    mask: '\\xff\\xff\\xff\\xff\\xff\\xfe\\xfe\\x00\\xff\\xff\\xff\\xff\\xff\\xff\\xff\\xff\\xfe\\xff\\xff\\xff',
  },
  {
    name: 'aarch64',
    platforms: ['linux/arm64'],
    magic: '\\x7fELF\\x02\\x01\\x01\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x02\\x00\\xb7\\x00',
    mask: '\\xff\\xff\\xff\\xff\\xff\\xff\\xff\\x00\\xff\\xff\\xff\\xff\\xff\\xff\\xff\\xff\\xfe\\xff\\xff\\xff',
  },
  {
    name: 'arm',
    platforms: ['linux/arm/v7', 'linux/arm/v6', 'linux/arm/v5'],
    magic: '\\x7fELF\\x01\\x01\\x01\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x02\\x00\\x28\\x00',
    mask: '\\xff\\xff\\xff\\xff\\xff\\xff\\xff\\x00\\xff\\xff\\xff\\xff\\xff\\xff\\xff\\xff\\xfe\\xff\\xff\\xff',
  },
  {
    name: 'armeb',
    platforms: [],
    magic: '\\x7fELF\\x01\\x02\\x01\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x02\\x00\\x28',
    mask: '\\xff\\xff\\xff\\xff\\xff\\xff\\xff\\x00\\xff\\xff\\xff\\xff\\xff\\xff\\xff\\xff\\xff\\xfe\\xff\\xff',
  },
  {
    name: 'ppc64le',
    platforms: ['linux/ppc64le'],
    magic: '\\x7fELF\\x02\\x01\\x01\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x02\\x00\\x15\\x00',
    mask: '\\xff\\xff\\xff\\xff\\xff\\xff\\xff\\xfc\\xff\\xff\\xff\\xff\\xff\\xff\\xff\\xff\\xfe\\xff\\xff\\x00',
  },
  {
    name: 'ppc64',
    platforms: ['linux/ppc64'],
    magic: '\\x7fELF\\x02\\x02\\x01\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x02\\x00\\x15',
    mask: '\\xff\\xff\\xff\\xff\\xff\\xff\\xff\\xfc\\xff\\xff\\xff\\xff\\xff\\xff\\xff\\xff\\xff\\xfe\\xff\\xff',
  },
  {
    name: 's390x',
    platforms: ['linux/s390x'],
    magic: '\\x7fELF\\x02\\x02\\x01\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x02\\x00\\x16',
    mask: '\\xff\\xff\\xff\\xff\\xff\\xff\\xff\\xfc\\xff\\xff\\xff\\xff\\xff\\xff\\xff\\xff\\xff\\xfe\\xff\\xff',
  },
  {
    name: 'riscv64',
    platforms: ['linux/riscv64'],
    magic: '\\x7fELF\\x02\\x01\\x01\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x02\\x00\\xf3\\x00',
    mask: '\\xff\\xff\\xff\\xff\\xff\\xff\\xff\\x00\\xff\\xff\\xff\\xff\\xff\\xff\\xff\\xff\\xfe\\xff\\xff\\xff',
  },
  {
    name: 'mips64el',
    platforms: ['linux/mips64le'],
    magic: '\\x7fELF\\x02\\x01\\x01\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x02\\x00\\x08\\x00',
    mask: '\\xff\\xff\\xff\\xff\\xff\\xff\\xff\\x00\\xfe\\xff\\xff\\xff\\xff\\xff\\xff\\xff\\xfe\\xff\\xff\\xff',
  },
  {
    name: 'mips64',
    platforms: ['linux/mips64'],
    magic: '\\x7fELF\\x02\\x02\\x01\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x02\\x00\\x08',
    mask: '\\xff\\xff\\xff\\xff\\xff\\xff\\xff\\x00\\xfe\\xff\\xff\\xff\\xff\\xff\\xff\\xff\\xff\\xfe\\xff\\xff',
  },
  {
    name: 'mipsel',
    platforms: ['linux/mipsle'],
    magic:
      '\\x7fELF\\x01\\x01\\x01\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x02\\x00\\x08\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00',
    mask:
      '\\xff\\xff\\xff\\xff\\xff\\xff\\xff\\x00\\xfe\\xff\\xff\\xff\\xff\\xff\\xff\\xff\\xfe\\xff\\xff\\xff\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x20',
  },
  {
    name: 'mips',
    platforms: ['linux/mips'],
    magic:
      '\\x7fELF\\x01\\x02\\x01\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x02\\x00\\x08\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00',
    mask:
      '\\xff\\xff\\xff\\xff\\xff\\xff\\xff\\x00\\xfe\\xff\\xff\\xff\\xff\\xff\\xff\\xff\\xff\\xfe\\xff\\xff\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x20',
  },
  {
    name: 'loongarch64',
    platforms: ['linux/loong64'],
    magic: '\\x7fELF\\x02\\x01\\x01\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x02\\x00\\x02\\x01',
    mask: '\\xff\\xff\\xff\\xff\\xff\\xff\\xff\\xfc\\x00\\xff\\xff\\xff\\xff\\xff\\xff\\xff\\xfe\\xff\\xff\\xff',
  },
];

const ALIASES: Record<string, string> = {
  amd64: 'x86_64',
  'x86-64': 'x86_64',
  '386': 'i386',
  i686: 'i386',
  arm64: 'aarch64',
  armhf: 'arm',
  armel: 'arm',
  ppc64el: 'ppc64le',
  mips64le: 'mips64el',
  mipsle: 'mipsel',
  loong64: 'loongarch64',
};

/** The table entry for a QEMU name, an alias (arm64, amd64, 386 ...) or a platform string. */
export function emulatorSpec(nameOrPlatform: string): EmulatorSpec | undefined {
  const raw = nameOrPlatform.trim().toLowerCase().replace(/^qemu-/, '');
  const name = ALIASES[raw] ?? raw;
  const direct = EMULATORS.find((e) => e.name === name);
  if (direct) return direct;
  if (raw.includes('/')) {
    try {
      return emulatorForPlatform(parsePlatform(raw));
    } catch {
      return undefined;
    }
  }
  return undefined;
}

/** The emulator that runs a platform (arm/v8 is run by qemu-arm as v7 is). */
export function emulatorForPlatform(p: Platform): EmulatorSpec | undefined {
  const n = normalizePlatform(p);
  const key = formatPlatform(n);
  const hit = EMULATORS.find((e) => e.platforms.includes(key));
  if (hit) return hit;
  if (n.architecture === 'arm') return EMULATORS.find((e) => e.name === 'arm');
  return undefined;
}

export interface BinfmtEntry {
  /** The entry's file name under binfmt_misc (archway's are `qemu-NAME`). */
  name: string;
  enabled: boolean;
  interpreter: string;
  flags: string;
  /** F flag: the interpreter is opened at registration, so it works inside a chroot. */
  fixBinary: boolean;
  /** 'magic' or 'extension' entries; magic/mask are lowercase hex without separators. */
  type: 'magic' | 'extension';
  magic: string;
  mask: string;
  offset: number;
  /** The OCI platform this entry emulates, when it matches archway's table. */
  platform?: string;
}

export interface BinfmtState {
  mounted: boolean;
  enabled: boolean;
  emulators: BinfmtEntry[];
}

interface Opts {
  signal?: AbortSignal;
}

/** Lowercase hex of a binfmt magic/mask as written in the register format (\xNN escapes). */
function escapedToHex(s: string): string {
  let out = '';
  for (let i = 0; i < s.length; i++) {
    if (s[i] === '\\' && s[i + 1] === 'x') {
      out += s.slice(i + 2, i + 4).toLowerCase();
      i += 3;
    } else {
      out += (s.charCodeAt(i) & 0xff).toString(16).padStart(2, '0');
    }
  }
  return out;
}

/** Each emulator's magic and mask as bytes, made once: every entry of every build is matched against them. */
let specBytes: Array<{ spec: EmulatorSpec; magic: Buffer; mask: Buffer }> | undefined;

function matchSpec(magicHex: string, maskHex: string, offset: number): EmulatorSpec | undefined {
  if (offset !== 0) return undefined;
  specBytes ??= EMULATORS.map((spec) => ({ spec, magic: Buffer.from(escapedToHex(spec.magic), 'hex'), mask: Buffer.from(escapedToHex(spec.mask), 'hex') }));
  const magic = Buffer.from(magicHex, 'hex');
  const theirMask = maskHex ? Buffer.from(maskHex, 'hex') : undefined;
  return specBytes.find(({ magic: m, mask: k }) => {
    // The ELF header compared under the entry's mask must be what our table says.
    if (magic.length < m.length) return false;
    for (let i = 0; i < m.length; i++) {
      const both = (k[i] ?? 0xff) & (theirMask?.[i] ?? 0xff);
      if (((magic[i] ?? 0) & both) !== ((m[i] ?? 0) & both)) return false;
    }
    return true;
  })?.spec;
}

/** Parses one /proc/sys/fs/binfmt_misc/NAME file. */
export function parseBinfmtEntry(name: string, text: string): BinfmtEntry {
  const lines = text.split('\n');
  const entry: BinfmtEntry = {
    name,
    enabled: false,
    interpreter: '',
    flags: '',
    fixBinary: false,
    type: 'magic',
    magic: '',
    mask: '',
    offset: 0,
  };
  for (const line of lines) {
    if (line === 'enabled') entry.enabled = true;
    else if (line === 'disabled') entry.enabled = false;
    else if (line.startsWith('interpreter ')) entry.interpreter = line.slice('interpreter '.length);
    else if (line.startsWith('flags:')) entry.flags = line.slice('flags:'.length).trim();
    else if (line.startsWith('offset ')) entry.offset = Number(line.slice('offset '.length)) || 0;
    else if (line.startsWith('magic ')) entry.magic = line.slice('magic '.length).trim().toLowerCase();
    else if (line.startsWith('mask ')) entry.mask = line.slice('mask '.length).trim().toLowerCase();
    else if (line.startsWith('extension ')) {
      entry.type = 'extension';
      entry.magic = line.slice('extension '.length).trim();
    }
  }
  entry.fixBinary = entry.flags.includes('F');
  if (entry.type === 'magic') {
    const spec = matchSpec(entry.magic, entry.mask, entry.offset);
    const main = spec?.platforms[0];
    if (main) entry.platform = main;
  }
  return entry;
}

async function binfmtMounted(dir: string): Promise<boolean> {
  try {
    await fs.access(path.join(dir, 'register'));
    return true;
  } catch {
    return false;
  }
}

/** Reads the kernel's binfmt_misc state; never throws for a missing mount (mounted: false). */
export async function readBinfmt(opts: Opts & { dir?: string } = {}): Promise<BinfmtState> {
  throwIfAborted(opts.signal);
  const dir = opts.dir ?? BINFMT_DIR;
  if (!(await binfmtMounted(dir))) return { mounted: false, enabled: false, emulators: [] };
  let enabled = false;
  try {
    enabled = (await fs.readFile(path.join(dir, 'status'), 'utf8')).trim() === 'enabled';
  } catch {
    enabled = false;
  }
  const names = (await fs.readdir(dir)).filter((n) => n !== 'register' && n !== 'status').sort();
  // Read synchronously: each entry is a few lines of procfs, and a build's preflight waits on
  // them (a dozen async reads cost ten times as much in thread-pool round trips).
  const emulators: BinfmtEntry[] = [];
  for (const n of names) {
    let text: string;
    try {
      text = readFileSync(path.join(dir, n), 'utf8');
    } catch {
      continue; // removed while we read
    }
    emulators.push(parseBinfmtEntry(n, text));
  }
  return { mounted: true, enabled, emulators };
}

/**
 * What this host runs without QEMU: nativelyRunnable(host) minus the companion architectures
 * (386 on amd64, arm on arm64) the kernel refuses, and minus those a binfmt_misc entry takes
 * over: the kernel asks binfmt_misc before its own ELF loader, so such binaries go through the
 * emulator, which then needs the F flag inside a sandbox.
 */
export async function runnableNatively(state: BinfmtState): Promise<Platform[]> {
  const host = normalizePlatform(hostPlatform());
  const out: Platform[] = [];
  for (const p of nativelyRunnable(host)) {
    if (p.architecture !== host.architecture) {
      // An entry decides without the probe (a process spawn, which a cached build would notice).
      const main = emulatorForPlatform(p)?.platforms[0];
      if (state.enabled && state.emulators.some((e) => e.enabled && e.platform !== undefined && e.platform === main)) continue;
      if (await kernelRefuses(p)) continue;
    }
    out.push(p);
  }
  return out;
}

export interface SupportedPlatforms {
  /** Platform strings this machine can run in a sandbox, native first. */
  platforms: string[];
  native: string[];
  emulated: Array<{ platform: string; emulator: string; interpreter: string }>;
  /** Entries that exist but cannot serve a sandbox (no F flag, disabled), in words. */
  warnings: string[];
}

/** The platforms the host runs natively plus every platform an enabled F-flagged entry emulates. */
export async function supportedPlatforms(opts: Opts = {}): Promise<SupportedPlatforms> {
  const state = await readBinfmt(opts);
  const native = (await runnableNatively(state)).map((p) => formatPlatform(p));
  const warnings: string[] = [];
  const emulated: SupportedPlatforms['emulated'] = [];
  if (state.mounted && !state.enabled) warnings.push('binfmt_misc is disabled (echo 1 > /proc/sys/fs/binfmt_misc/status)');
  for (const e of state.emulators) {
    if (!e.platform) continue;
    const spec = EMULATORS.find((s) => s.platforms[0] === e.platform);
    const plats = spec?.platforms ?? [e.platform];
    if (!e.enabled) {
      warnings.push(`binfmt entry ${e.name} (${e.platform}) is disabled`);
      continue;
    }
    if (!e.fixBinary) {
      warnings.push(
        `binfmt entry ${e.name} (${e.platform}) lacks the F flag, so its interpreter ${e.interpreter} is not visible inside a sandbox; run \`archway binfmt --install ${spec?.name ?? e.name}\` to replace it`,
      );
      continue;
    }
    if (!state.enabled) continue;
    for (const p of plats) {
      if (native.includes(p) || emulated.some((x) => x.platform === p)) continue;
      emulated.push({ platform: p, emulator: e.name, interpreter: e.interpreter });
    }
  }
  return { platforms: [...native, ...emulated.map((e) => e.platform)], native, emulated, warnings };
}

export interface CanRunResult {
  ok: boolean;
  via: 'native' | 'emulator';
  /** The binfmt entry name used (or that would be needed). */
  emulator?: string;
  reason?: string;
  hint?: string;
}

/** Whether a sandbox can run `platform` here; the builder's preflight. */
/** `state`: binfmt_misc as read already, for callers asking about several platforms at once. */
export async function canRun(platform: Platform, opts: Opts & { state?: BinfmtState } = {}): Promise<CanRunResult> {
  // The host's own architecture needs neither binfmt_misc nor the companion probe.
  const host = normalizePlatform(hostPlatform());
  if (normalizePlatform(platform).architecture === host.architecture && platformMatches(nativelyRunnable(host), platform)) return { ok: true, via: 'native' };
  const state = opts.state ?? (await readBinfmt(opts));
  if (platformMatches(await runnableNatively(state), platform)) return { ok: true, via: 'native' };
  const want = formatPlatform(platform);
  const spec = emulatorForPlatform(platform);
  if (!spec) {
    return {
      ok: false,
      via: 'emulator',
      reason: `no QEMU emulator is known for ${want}`,
    };
  }
  const hint = `run \`archway binfmt --install ${spec.name}\` (as root; needs Debian's qemu-user-static)`;
  if (!state.mounted) {
    return { ok: false, via: 'emulator', emulator: `qemu-${spec.name}`, reason: `binfmt_misc is not mounted at ${BINFMT_DIR}, so ${want} cannot be emulated`, hint };
  }
  if (!state.enabled) {
    return { ok: false, via: 'emulator', emulator: `qemu-${spec.name}`, reason: 'binfmt_misc is disabled', hint };
  }
  const target = spec.platforms[0];
  const entries = state.emulators.filter((e) => e.platform !== undefined && e.platform === target);
  const good = entries.find((e) => e.enabled && e.fixBinary);
  if (good) return { ok: true, via: 'emulator', emulator: good.name };
  const bad = entries[0];
  if (bad) {
    return {
      ok: false,
      via: 'emulator',
      emulator: bad.name,
      reason: !bad.enabled
        ? `the binfmt_misc entry ${bad.name} for ${want} is disabled`
        : `the binfmt_misc entry ${bad.name} for ${want} lacks the F (fix-binary) flag, so its interpreter ${bad.interpreter} cannot be found inside a container`,
      hint,
    };
  }
  return { ok: false, via: 'emulator', emulator: `qemu-${spec.name}`, reason: `no binfmt_misc emulator is registered for ${want}`, hint };
}

/** Throws an 'EMULATION' error (exit 7) unless `platform` can run here. */
export async function assertCanRun(platform: Platform, opts: Opts = {}): Promise<CanRunResult> {
  const r = await canRun(platform, opts);
  if (!r.ok) {
    throw new ArchwayError('EMULATION', `cannot run ${formatPlatform(platform)} on this ${formatPlatform(hostPlatform())} host: ${r.reason ?? 'unknown reason'}`, {
      ...(r.hint !== undefined ? { hint: r.hint } : {}),
      details: { platform: formatPlatform(platform), emulator: r.emulator },
    });
  }
  return r;
}

export interface InstallOptions extends Opts {
  /** Also write /etc/binfmt.d/archway-qemu-NAME.conf so the entry comes back after a reboot. */
  persist?: boolean;
  /** Where qemu-NAME-static binaries are (default /usr/bin). */
  qemuDir?: string;
  /** binfmt_misc mount (tests). */
  binfmtDir?: string;
  /** Directory for persisted entries (default /etc/binfmt.d). */
  persistDir?: string;
}

export interface InstallResult {
  installed: string[];
  /** Already registered with F and enabled: left alone. */
  present: string[];
  /** Replaced because they lacked F or were disabled. */
  replaced: string[];
  /** Not installed, with the reason (host's own arch, no QEMU binary). */
  skipped: Array<{ name: string; reason: string }>;
  persisted: string[];
}

function isRoot(): boolean {
  return typeof process.getuid === 'function' && process.getuid() === 0;
}

const qemuVersionCache = new Map<string, number>();

function qemuMajor(bin: string, signal?: AbortSignal): Promise<number> {
  const cached = qemuVersionCache.get(bin);
  if (cached !== undefined) return Promise.resolve(cached);
  return new Promise((resolve) => {
    const child = spawn(bin, ['--version'], { stdio: ['ignore', 'pipe', 'ignore'], ...(signal ? { signal } : {}) });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.on('error', () => resolve(0));
    child.on('close', () => {
      const m = /version (\d+)\./.exec(out);
      const v = m ? Number(m[1]) : 0;
      qemuVersionCache.set(bin, v);
      resolve(v);
    });
  });
}

function kernelAtLeast(major: number, minor: number): boolean {
  const m = /^(\d+)\.(\d+)/.exec(os.release());
  if (!m) return false;
  const a = Number(m[1]);
  const b = Number(m[2]);
  return a > major || (a === major && b >= minor);
}

/**
 * QEMU names of the architectures that run here without an emulator: the host's, and its
 * companion where the kernel runs it and no entry has taken it over (then the entry is kept, or
 * replaced when it lacks the F flag, like any other).
 */
async function hostEmulatorNames(state: BinfmtState): Promise<Set<string>> {
  const out = new Set<string>();
  for (const p of await runnableNatively(state)) {
    const s = emulatorForPlatform(p);
    if (s) out.add(s.name);
  }
  return out;
}

async function ensureBinfmtMounted(dir: string): Promise<void> {
  if (await binfmtMounted(dir)) return;
  if (dir === BINFMT_DIR) {
    // Try to mount it, as systemd's proc-sys-fs-binfmt_misc.mount would.
    await new Promise<void>((resolve) => {
      const c = spawn('mount', ['-t', 'binfmt_misc', 'binfmt_misc', dir], { stdio: 'ignore' });
      c.on('error', () => resolve());
      c.on('close', () => resolve());
    });
    if (await binfmtMounted(dir)) return;
  }
  throw new ArchwayError('SANDBOX', `binfmt_misc is not available at ${dir}`, {
    hint: 'the kernel needs CONFIG_BINFMT_MISC; mount it with `mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc`',
  });
}

/**
 * Registers QEMU emulators with binfmt_misc ("all": every architecture in the table that the
 * host does not run natively and whose qemu-NAME-static exists).
 */
export async function installEmulators(archs: 'all' | readonly string[], opts: InstallOptions = {}): Promise<InstallResult> {
  throwIfAborted(opts.signal);
  const dir = opts.binfmtDir ?? BINFMT_DIR;
  const qemuDir = opts.qemuDir ?? '/usr/bin';
  if (!isRoot() && opts.binfmtDir === undefined) {
    throw new ArchwayError('SANDBOX', 'registering emulators with binfmt_misc needs root', {
      hint: 'run `sudo archway binfmt --install ...`',
    });
  }
  const hostNames = await hostEmulatorNames(await readBinfmt({ ...opts, dir }));
  let specs: EmulatorSpec[];
  const result: InstallResult = { installed: [], present: [], replaced: [], skipped: [], persisted: [] };
  if (archs === 'all') {
    specs = EMULATORS.filter((e) => {
      if (hostNames.has(e.name)) {
        result.skipped.push({ name: e.name, reason: 'runs natively on this host' });
        return false;
      }
      return true;
    });
  } else {
    specs = [];
    for (const a of archs) {
      if (a.trim().toLowerCase() === 'all') return installEmulators('all', opts);
      const s = emulatorSpec(a);
      if (!s) {
        throw new ArchwayError('USAGE', `unknown emulator architecture "${a}"`, {
          hint: `known: ${EMULATORS.map((e) => e.name).join(', ')}`,
        });
      }
      if (!specs.includes(s)) specs.push(s);
    }
  }
  // Explicitly asked for an architecture the kernel runs itself (the host's, or 386 on an amd64
  // kernel with 32-bit support): nothing to do; an entry would only put QEMU in its way.
  const hostSpec = emulatorForPlatform(hostPlatform());
  specs = specs.filter((s) => {
    if (!hostNames.has(s.name)) return true;
    result.skipped.push({ name: s.name, reason: hostSpec && s.name === hostSpec.name ? 'is the host architecture' : 'runs natively on this host' });
    return false;
  });
  const available: Array<{ spec: EmulatorSpec; bin: string }> = [];
  for (const s of specs) {
    const bin = path.join(qemuDir, `qemu-${s.name}-static`);
    try {
      await fs.access(bin, fs.constants.X_OK);
      available.push({ spec: s, bin });
    } catch {
      result.skipped.push({ name: s.name, reason: `${bin} not found` });
    }
  }
  if (available.length === 0 && specs.length > 0) {
    throw new ArchwayError('EMULATION', `no QEMU user-mode emulator found in ${qemuDir} for ${specs.map((s) => s.name).join(', ')}`, {
      hint: 'install the Debian/Ubuntu package qemu-user-static (apt-get install qemu-user-static)',
    });
  }
  await ensureBinfmtMounted(dir);
  const state = await readBinfmt({ ...opts, dir });
  if (!state.enabled) {
    await fs.writeFile(path.join(dir, 'status'), '1').catch(() => undefined);
  }
  for (const { spec, bin } of available) {
    throwIfAborted(opts.signal);
    const entryName = `qemu-${spec.name}`;
    const existing = state.emulators.find((e) => e.name === entryName);
    const covering = state.emulators.find((e) => e.platform !== undefined && e.platform === spec.platforms[0] && e.enabled && e.fixBinary);
    if (covering) {
      result.present.push(covering.name);
    } else {
      if (existing) {
        await fs.writeFile(path.join(dir, existing.name), '-1');
        result.replaced.push(existing.name);
      }
      const preserve = kernelAtLeast(5, 12) && (await qemuMajor(bin, opts.signal)) >= 6;
      const flags = preserve ? 'POCF' : 'OCF';
      const line = `:${entryName}:M:0:${spec.magic}:${spec.mask}:${bin}:${flags}`;
      try {
        await fs.writeFile(path.join(dir, 'register'), line);
      } catch (e) {
        const code = (e as NodeJS.ErrnoException).code;
        if (code === 'EEXIST') {
          result.present.push(entryName);
          continue;
        }
        throw new ArchwayError('SANDBOX', `registering ${entryName} with binfmt_misc failed: ${(e as Error).message}`, { cause: e });
      }
      if (!existing) result.installed.push(entryName);
    }
    if (opts.persist) {
      const pdir = opts.persistDir ?? '/etc/binfmt.d';
      await fs.mkdir(pdir, { recursive: true });
      const preserve = kernelAtLeast(5, 12) && (await qemuMajor(bin, opts.signal)) >= 6;
      const conf = `# written by archway binfmt --install --persist\n:${entryName}:M:0:${spec.magic}:${spec.mask}:${bin}:${preserve ? 'POCF' : 'OCF'}\n`;
      const file = path.join(pdir, `archway-${entryName}.conf`);
      const tmp = `${file}.tmp-${process.pid}`;
      await fs.writeFile(tmp, conf);
      await fs.rename(tmp, file);
      result.persisted.push(file);
    }
  }
  return result;
}

/** Removes binfmt_misc entries by name (`qemu-aarch64`, `aarch64`, `arm64` all name the same). */
export async function uninstallEmulators(
  names: 'all' | readonly string[],
  opts: Opts & { binfmtDir?: string; persistDir?: string } = {},
): Promise<{ removed: string[]; missing: string[] }> {
  throwIfAborted(opts.signal);
  const dir = opts.binfmtDir ?? BINFMT_DIR;
  if (!isRoot() && opts.binfmtDir === undefined) {
    throw new ArchwayError('SANDBOX', 'removing binfmt_misc entries needs root', { hint: 'run it with sudo' });
  }
  await ensureBinfmtMounted(dir);
  const state = await readBinfmt({ ...opts, dir });
  const wanted: string[] =
    names === 'all'
      ? state.emulators.filter((e) => e.name.startsWith('qemu-') && e.platform !== undefined).map((e) => e.name)
      : names.map((n) => {
          if (state.emulators.some((e) => e.name === n)) return n;
          const s = emulatorSpec(n);
          return s ? `qemu-${s.name}` : n;
        });
  const removed: string[] = [];
  const missing: string[] = [];
  for (const n of wanted) {
    if (n.includes('/') || n === 'register' || n === 'status' || n.startsWith('.')) {
      throw new ArchwayError('USAGE', `not a binfmt_misc entry name: "${n}"`);
    }
    try {
      if (!state.emulators.some((e) => e.name === n)) {
        // binfmt_misc cannot create files: opening a missing entry fails with EACCES
        missing.push(n);
      } else {
        await fs.writeFile(path.join(dir, n), '-1');
        removed.push(n);
      }
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') missing.push(n);
      else throw new ArchwayError('SANDBOX', `removing binfmt_misc entry ${n} failed: ${(e as Error).message}`, { cause: e });
    }
    const pdir = opts.persistDir ?? '/etc/binfmt.d';
    await fs.rm(path.join(pdir, `archway-${n}.conf`), { force: true }).catch(() => undefined);
  }
  return { removed, missing };
}
