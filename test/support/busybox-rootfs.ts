/**
 * Test fixture: a minimal root filesystem made of Debian's `busybox-static` for any platform
 * Debian builds it for, fetched WITHOUT changing the machine (apt-get with private lists and
 * cache dirs and a forced architecture), cached across runs and shared safely between
 * concurrent test processes.
 *
 * Cache: $ARCHWAY_TEST_CACHE or /var/tmp/archway-test-cache.
 *   apt/ARCH/{lists,cache}   apt's private state for that architecture
 *   debs/ARCH/*.deb          the downloaded package
 *   rootfs/ARCH              the finished rootfs (renamed into place when complete)
 *   locks/ARCH               a lock directory (mkdir is atomic) held while building
 */
import { spawn } from 'node:child_process';
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import { debianArchitecture, formatPlatform, type Platform } from '../../src/oci/index.js';

export const BUSYBOX_APPLETS = [
  'sh', 'uname', 'echo', 'cat', 'ls', 'mkdir', 'rm', 'cp', 'mv', 'true', 'false', 'env', 'id', 'sleep',
  'touch', 'test', 'printf', 'grep', 'sed', 'wc', 'head', 'tail', 'tr', 'date', 'hostname', 'whoami',
  'ln', 'chmod', 'tar', 'gzip', 'find', 'xargs', 'pwd', 'mount', 'ip', 'ifconfig', 'readlink', 'stat',
];

export function testCacheDir(): string {
  return process.env['ARCHWAY_TEST_CACHE'] || '/var/tmp/archway-test-cache';
}

function run(cmd: string, args: string[], cwd?: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { cwd, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    child.on('error', reject);
    child.on('close', (code) => {
      if (code === 0) resolve(out);
      else reject(new Error(`${cmd} ${args.join(' ')} failed (${code}): ${err.trim() || out.trim()}`));
    });
  });
}

async function exists(p: string): Promise<boolean> {
  try {
    await fs.lstat(p);
    return true;
  } catch {
    return false;
  }
}

/** A lock directory; a lock whose owner pid is gone is taken over. */
async function withLock<T>(lockDir: string, fn: () => Promise<T>): Promise<T> {
  await fs.mkdir(path.dirname(lockDir), { recursive: true });
  const deadline = Date.now() + 10 * 60_000;
  for (;;) {
    try {
      await fs.mkdir(lockDir);
      await fs.writeFile(path.join(lockDir, 'pid'), String(process.pid));
      break;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
      let stale = false;
      try {
        const pid = Number((await fs.readFile(path.join(lockDir, 'pid'), 'utf8')).trim());
        if (pid > 0) {
          try {
            process.kill(pid, 0);
          } catch {
            stale = true;
          }
        }
      } catch {
        // pid file not written yet, or lock just released: wait and retry
        const st = await fs.stat(lockDir).catch(() => undefined);
        if (st && Date.now() - st.mtimeMs > 60_000) stale = true;
      }
      if (stale) {
        await fs.rm(lockDir, { recursive: true, force: true });
        continue;
      }
      if (Date.now() > deadline) throw new Error(`timed out waiting for lock ${lockDir}`);
      await new Promise((r) => setTimeout(r, 200));
    }
  }
  try {
    return await fn();
  } finally {
    await fs.rm(lockDir, { recursive: true, force: true });
  }
}

const inProcess = new Map<string, Promise<string>>();

/** Returns the path of a finished busybox rootfs for `platform` (do not modify it). */
export function busyboxRootfs(platform: Platform): Promise<string> {
  const arch = debianArchitecture(platform);
  if (!arch) return Promise.reject(new Error(`no Debian architecture for ${formatPlatform(platform)}`));
  let p = inProcess.get(arch);
  if (!p) {
    p = build(arch);
    inProcess.set(arch, p);
    p.catch(() => inProcess.delete(arch));
  }
  return p;
}

async function build(arch: string): Promise<string> {
  const cache = testCacheDir();
  const final = path.join(cache, 'rootfs', arch);
  if (await exists(path.join(final, 'bin', 'busybox'))) return final;
  return withLock(path.join(cache, 'locks', arch), async () => {
    if (await exists(path.join(final, 'bin', 'busybox'))) return final;
    const deb = await downloadDeb(cache, arch);
    await fs.mkdir(path.join(cache, 'rootfs'), { recursive: true });
    const tmp = await fs.mkdtemp(path.join(cache, 'rootfs', `.tmp-${arch}-`));
    try {
      const x = path.join(tmp, 'x');
      await run('dpkg-deb', ['-x', deb, x]);
      const root = path.join(tmp, 'root');
      for (const d of ['bin', 'sbin', 'etc', 'tmp', 'root', 'proc', 'dev', 'sys', 'usr/bin', 'usr/sbin', 'var', 'home']) {
        await fs.mkdir(path.join(root, d), { recursive: true });
      }
      await fs.chmod(path.join(root, 'tmp'), 0o1777);
      await fs.chmod(path.join(root, 'root'), 0o700);
      const candidates = [path.join(x, 'bin', 'busybox'), path.join(x, 'usr', 'bin', 'busybox')];
      let src: string | undefined;
      for (const c of candidates) if (await exists(c)) src = c;
      if (!src) throw new Error(`busybox binary not found in ${deb}`);
      await fs.copyFile(src, path.join(root, 'bin', 'busybox'));
      await fs.chmod(path.join(root, 'bin', 'busybox'), 0o755);
      for (const a of BUSYBOX_APPLETS) await fs.symlink('busybox', path.join(root, 'bin', a));
      await fs.writeFile(
        path.join(root, 'etc', 'passwd'),
        'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n',
      );
      await fs.writeFile(path.join(root, 'etc', 'group'), 'root:x:0:\nnogroup:x:65534:\n');
      await fs.rm(x, { recursive: true, force: true });
      await fs.rm(final, { recursive: true, force: true });
      await fs.rename(root, final);
    } finally {
      await fs.rm(tmp, { recursive: true, force: true });
    }
    return final;
  });
}

async function downloadDeb(cache: string, arch: string): Promise<string> {
  const debDir = path.join(cache, 'debs', arch);
  await fs.mkdir(debDir, { recursive: true });
  const have = (await fs.readdir(debDir)).find((f) => f.startsWith('busybox-static_') && f.endsWith('.deb'));
  if (have) return path.join(debDir, have);
  const aptDir = path.join(cache, 'apt', arch);
  const lists = path.join(aptDir, 'lists');
  const apt = path.join(aptDir, 'cache');
  await fs.mkdir(path.join(lists, 'partial'), { recursive: true });
  await fs.mkdir(path.join(apt, 'archives', 'partial'), { recursive: true });
  const opts = [
    '-q',
    '-o', `APT::Architecture=${arch}`,
    '-o', `APT::Architectures=${arch}`,
    '-o', `Dir::State::Lists=${lists}`,
    '-o', `Dir::Cache=${apt}`,
    '-o', 'Dir::State::status=/dev/null',
    '-o', 'Acquire::Languages=none',
    '-o', 'APT::Sandbox::User=root',
  ];
  // A mirror mid-sync can fail one index (often -security) while the main suite, which has
  // busybox-static, is fine: retry once, then try the download with what was fetched.
  let updateError: unknown;
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      await run('apt-get', [...opts, 'update']);
      updateError = undefined;
      break;
    } catch (e) {
      updateError = e;
    }
  }
  const tmp = await fs.mkdtemp(path.join(debDir, '.dl-'));
  try {
    try {
      await run('apt-get', [...opts, 'download', `busybox-static:${arch}`], tmp);
    } catch (e) {
      throw updateError ? new Error(`${(e as Error).message}\n(after apt-get update failed: ${(updateError as Error).message})`) : e;
    }
    const f = (await fs.readdir(tmp)).find((n) => n.endsWith('.deb'));
    if (!f) throw new Error(`apt-get download busybox-static:${arch} produced no .deb`);
    await fs.rename(path.join(tmp, f), path.join(debDir, f));
    return path.join(debDir, f);
  } finally {
    await fs.rm(tmp, { recursive: true, force: true });
  }
}
