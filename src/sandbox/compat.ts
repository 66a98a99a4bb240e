/**
 * Whether the kernel itself runs the host's 32-bit companion architecture: linux/386 on amd64,
 * linux/arm on arm64. containerd (and nativelyRunnable) assume it does, but a kernel built
 * without CONFIG_IA32_EMULATION or CONFIG_COMPAT, booted with ia32_emulation=0, or on an arm64
 * CPU without AArch32 (most recent server cores) refuses such binaries with ENOEXEC: there they
 * need QEMU like any foreign platform. Answered once per process by running a tiny static ELF
 * of that architecture that only exits with a known code.
 */
import { spawn } from 'node:child_process';
import { promises as fs } from 'node:fs';
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

const refusals = new Map<string, Promise<boolean>>();

/**
 * Whether the kernel refuses to run `platform`'s architecture itself, for the host's companion
 * architectures ('386' on amd64, 'arm' on arm64); false for every other platform, and when the
 * probe cannot be tried (it is assumed to run, as before the probe existed). Asked once per
 * architecture and process.
 */
export function kernelRefuses(platform: Platform): Promise<boolean> {
  const host = normalizePlatform(hostPlatform());
  const p = normalizePlatform(platform);
  if (p.architecture === host.architecture) return Promise.resolve(false);
  const binary = probeBinary(p);
  if (!binary || !nativelyRunnable(host).some((q) => q.architecture === p.architecture)) return Promise.resolve(false);
  let answer = refusals.get(p.architecture);
  if (!answer) {
    answer = runsHere(binary).then((r) => r === 'no');
    refusals.set(p.architecture, answer);
  }
  return answer;
}
