/**
 * Whether the kernel itself runs the host's 32-bit companion architecture: linux/386 on amd64,
 * linux/arm on arm64. containerd (and nativelyRunnable) assume it does, but a kernel built
 * without CONFIG_IA32_EMULATION or CONFIG_COMPAT, booted with ia32_emulation=0, or on an arm64
 * CPU without AArch32 (most recent server cores) refuses such binaries with ENOEXEC: there they
 * need QEMU like any foreign platform. Answered by running a tiny static ELF of that
 * architecture that only exits with a known code, once per boot (the answer is kept).
 */
import { spawn } from 'node:child_process';
import { closeSync, constants as fsConstants, fstatSync, openSync, promises as fs, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { hostPlatform, nativelyRunnable, normalizePlatform, type Platform } from '../oci/index.js';

/** The code the probes exit with: a shell that misreads the ELF as a script (execvp's fallback) never does. */
const PROBE_EXIT = 42;

/**
 * A minimal ELF32 little-endian executable: the file header, one PT_LOAD segment mapping the
 * whole file, and `code` right after them as the entry point.
 */
function elf32(machine: number, flags: number, code: Buffer): Buffer {
  const base = 0x10000;
  const headers = 52 + 32;
  const b = Buffer.alloc(headers + code.length);
  b.write('\x7fELF', 0, 'latin1');
  b[4] = 1; // ELFCLASS32
  b[5] = 1; // little-endian
  b[6] = 1; // EV_CURRENT
  b.writeUInt16LE(2, 16); // ET_EXEC
  b.writeUInt16LE(machine, 18);
  b.writeUInt32LE(1, 20);
  b.writeUInt32LE(base + headers, 24); // entry
  b.writeUInt32LE(52, 28); // program headers right after this one
  b.writeUInt32LE(flags, 36);
  b.writeUInt16LE(52, 40);
  b.writeUInt16LE(32, 42);
  b.writeUInt16LE(1, 44);
  // PT_LOAD, offset 0, vaddr = paddr = base, the whole file, R+X, page-aligned.
  const ph = 52;
  b.writeUInt32LE(1, ph);
  b.writeUInt32LE(0, ph + 4);
  b.writeUInt32LE(base, ph + 8);
  b.writeUInt32LE(base, ph + 12);
  b.writeUInt32LE(b.length, ph + 16);
  b.writeUInt32LE(b.length, ph + 20);
  b.writeUInt32LE(5, ph + 24);
  b.writeUInt32LE(0x1000, ph + 28);
  code.copy(b, headers);
  return b;
}

/** exit(PROBE_EXIT) as a static binary, for the companion architectures archway knows. */
export function probeBinary(platform: Platform): Buffer | undefined {
  const p = normalizePlatform(platform);
  if (p.os !== 'linux') return undefined;
  if (p.architecture === '386') {
    // mov ebx, 42; mov eax, 1 (exit); int 0x80
    return elf32(3, 0, Buffer.from([0xbb, PROBE_EXIT, 0, 0, 0, 0xb8, 1, 0, 0, 0, 0xcd, 0x80]));
  }
  if (p.architecture === 'arm') {
    // mov r0, #42; mov r7, #1 (exit); svc #0 — ARMv5 instructions, EABI version 5.
    const words = [(0xe3a00000 | PROBE_EXIT) >>> 0, 0xe3a07001, 0xef000000];
    const code = Buffer.alloc(12);
    words.forEach((w, i) => code.writeUInt32LE(w, i * 4));
    return elf32(40, 0x05000000, code);
  }
  return undefined;
}

/**
 * Runs `binary` from a private temporary directory: 'yes' when it exited with PROBE_EXIT, 'no'
 * when the kernel refused it (ENOEXEC, or a shell's fallback failing on it), 'unknown' when it
 * could not be tried (a read-only or noexec temp dir).
 */
export async function runsHere(binary: Buffer): Promise<'yes' | 'no' | 'unknown'> {
  let dir: string | undefined;
  try {
    dir = await fs.mkdtemp(path.join(os.tmpdir(), 'archway-probe-'));
    const file = path.join(dir, 'probe');
    await fs.writeFile(file, binary, { mode: 0o700 });
    return await new Promise<'yes' | 'no' | 'unknown'>((resolve) => {
      const child = spawn(file, [], { stdio: 'ignore' });
      child.on('error', (e: NodeJS.ErrnoException) => resolve(e.code === 'ENOEXEC' ? 'no' : 'unknown'));
      child.on('close', (code) => resolve(code === PROBE_EXIT ? 'yes' : 'no'));
    });
  } catch {
    return 'unknown';
  } finally {
    if (dir) await fs.rm(dir, { recursive: true, force: true }).catch(() => undefined);
  }
}

/**
 * Where the answer for `architecture` is kept until the next boot, the only time it can change:
 * $XDG_RUNTIME_DIR (else the temp dir), named by user, architecture and boot id. Undefined when
 * the boot id cannot be read.
 */
export function keptAnswerFile(architecture: string, env: NodeJS.ProcessEnv = process.env): string | undefined {
  let bootId: string;
  try {
    bootId = readFileSync('/proc/sys/kernel/random/boot_id', 'latin1').trim();
  } catch {
    return undefined;
  }
  if (!/^[0-9a-f-]{16,64}$/.test(bootId)) return undefined;
  const uid = process.getuid?.() ?? 'user';
  return path.join(env['XDG_RUNTIME_DIR'] || os.tmpdir(), `archway-${uid}-runs-${architecture}-${bootId}`);
}

const KEPT_REFUSES = 'refuses\n';
const KEPT_RUNS = 'runs\n';

/** A kept answer, from a regular file of this user's that nobody else may write; else undefined. */
function recall(file: string): boolean | undefined {
  let fd: number;
  try {
    fd = openSync(file, fsConstants.O_RDONLY | fsConstants.O_NOFOLLOW);
  } catch {
    return undefined;
  }
  try {
    const st = fstatSync(fd);
    if (!st.isFile() || st.uid !== (process.getuid?.() ?? st.uid) || (st.mode & 0o022) !== 0 || st.size > 16) return undefined;
    const text = readFileSync(fd, 'latin1');
    return text === KEPT_REFUSES ? true : text === KEPT_RUNS ? false : undefined;
  } catch {
    return undefined;
  } finally {
    closeSync(fd);
  }
}

/** Keeps an answer (a new file renamed into place); a failure only means probing again next time. */
function keep(file: string, refuses: boolean): void {
  const tmp = `${file}.${process.pid}.tmp`;
  try {
    writeFileSync(tmp, refuses ? KEPT_REFUSES : KEPT_RUNS, { mode: 0o600, flag: 'wx' });
    renameSync(tmp, file);
  } catch {
    rmSync(tmp, { force: true });
  }
}

/**
 * Whether the kernel refuses `binary`: the answer kept in `file` when there is one, else the
 * probe's, then kept there. A probe that could not be tried counts as running and is not kept.
 */
export async function refusesWithMemory(binary: Buffer, file: string | undefined): Promise<boolean> {
  const kept = file === undefined ? undefined : recall(file);
  if (kept !== undefined) return kept;
  const r = await runsHere(binary);
  if (r !== 'unknown' && file !== undefined) keep(file, r === 'no');
  return r === 'no';
}

const refusals = new Map<string, Promise<boolean>>();

/**
 * Whether the kernel refuses to run `platform`'s architecture itself, for the host's companion
 * architectures ('386' on amd64, 'arm' on arm64); false for every other platform, and when the
 * probe cannot be tried (it is assumed to run, as before the probe existed). Asked once per
 * architecture and boot: a build that is all cached spawns nothing.
 */
export function kernelRefuses(platform: Platform): Promise<boolean> {
  const host = normalizePlatform(hostPlatform());
  const p = normalizePlatform(platform);
  if (p.architecture === host.architecture) return Promise.resolve(false);
  const binary = probeBinary(p);
  if (!binary || !nativelyRunnable(host).some((q) => q.architecture === p.architecture)) return Promise.resolve(false);
  let answer = refusals.get(p.architecture);
  if (!answer) {
    answer = refusesWithMemory(binary, keptAnswerFile(p.architecture));
    refusals.set(p.architecture, answer);
  }
  return answer;
}
