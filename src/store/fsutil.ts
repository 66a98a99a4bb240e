import { randomBytes } from 'node:crypto';
import { closeSync, constants as fsConstants, fstatSync, openSync, readFileSync } from 'node:fs';
import { link, lstat, mkdir, open, readdir, readFile, rename, rm, stat, unlink } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { ArchwayError, errorMessage, isErrnoException, sleep, throwIfAborted } from '../util/index.js';

export interface SignalOptions {
  signal?: AbortSignal;
}

/**
 * A temp file name that says who wrote it: `<pid>.<random>.<suffix>`. Prune removes the temp files
 * of writers that are gone (see `tempOwnerAlive`).
 */
export function tempName(suffix: string): string {
  return `${process.pid}.${randomBytes(8).toString('hex')}.${suffix}`;
}

/** The pid a temp name was written by, or undefined when it is not one of ours. */
export function tempOwner(name: string): number | undefined {
  const m = /^(\d+)\.[0-9a-f]{16}\./.exec(name);
  if (!m) return undefined;
  const pid = Number(m[1]);
  return Number.isSafeInteger(pid) && pid > 0 ? pid : undefined;
}

/** Whether a process with this pid exists (EPERM means it does, owned by someone else). */
export function pidAlive(pid: number): boolean {
  if (pid === process.pid) return true;
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return isErrnoException(e, 'EPERM');
  }
}

/** Temp paths this process is writing right now; prune in the same process leaves them alone. */
export const activeTemps = new Set<string>();

export function storageError(what: string, e: unknown): ArchwayError {
  if (e instanceof ArchwayError) return e;
  const code = isErrnoException(e) ? e.code : undefined;
  const hint = code === 'ENOSPC' ? 'the disk is full; free space or run `archway prune`' : code === 'EACCES' || code === 'EPERM' ? 'check the permissions of the directory' : undefined;
  return new ArchwayError('STORAGE', `${what}: ${errorMessage(e)}`, { cause: e, ...(hint ? { hint } : {}) });
}

export async function fsyncDir(dir: string): Promise<void> {
  let h;
  try {
    h = await open(dir, fsConstants.O_RDONLY | fsConstants.O_DIRECTORY);
    await h.sync();
  } catch {
    // Some filesystems refuse fsync on a directory; the rename is still atomic.
  } finally {
    await h?.close().catch(() => undefined);
  }
}

/** Writes `data` to a temp file in `tmpDir` (same filesystem), fsyncs it, and returns its path. */
export async function writeTemp(tmpDir: string, data: Buffer | string, suffix = 'tmp'): Promise<string> {
  await mkdir(tmpDir, { recursive: true });
  const tmp = join(tmpDir, tempName(suffix));
  activeTemps.add(tmp);
  const h = await open(tmp, 'wx', 0o644);
  try {
    await h.writeFile(data);
    await h.sync();
  } catch (e) {
    await h.close().catch(() => undefined);
    await unlink(tmp).catch(() => undefined);
    activeTemps.delete(tmp);
    throw e;
  }
  await h.close();
  return tmp;
}

/** Replaces `path` atomically: temp file, fsync, rename, fsync of the directory. */
export async function writeFileAtomic(path: string, data: Buffer | string, tmpDir: string = dirname(path)): Promise<void> {
  const tmp = await writeTemp(tmpDir, data, `${basename(path)}.tmp`);
  try {
    await rename(tmp, path);
  } catch (e) {
    await unlink(tmp).catch(() => undefined);
    throw e;
  } finally {
    activeTemps.delete(tmp);
  }
  await fsyncDir(dirname(path));
}

/** Creates `path` with `data` unless it exists (link() never replaces); returns whether it created it. */
export async function createFileExclusive(path: string, data: Buffer | string, tmpDir: string = dirname(path)): Promise<boolean> {
  const tmp = await writeTemp(tmpDir, data, `${basename(path)}.tmp`);
  try {
    await link(tmp, path);
    await fsyncDir(dirname(path));
    return true;
  } catch (e) {
    if (isErrnoException(e, 'EEXIST')) return false;
    throw e;
  } finally {
    await unlink(tmp).catch(() => undefined);
    activeTemps.delete(tmp);
  }
}

export async function pathExists(path: string): Promise<boolean> {
  try {
    await lstat(path);
    return true;
  } catch (e) {
    if (isErrnoException(e, 'ENOENT')) return false;
    throw e;
  }
}

/** Total bytes and file count under a path, without following links. */
export async function treeSize(path: string): Promise<{ bytes: number; files: number }> {
  let bytes = 0;
  let files = 0;
  const walk = async (p: string): Promise<void> => {
    let st;
    try {
      st = await lstat(p);
    } catch {
      return;
    }
    if (st.isDirectory()) {
      let names: string[] = [];
      try {
        names = await readdir(p);
      } catch {
        return;
      }
      for (const n of names) await walk(join(p, n));
    } else {
      bytes += st.size;
      files++;
    }
  };
  await walk(path);
  return { bytes, files };
}

/**
 * Removes temp files and directories in `dir` whose writer is gone: the pid in the name is dead,
 * or the entry has not changed for `staleMs`. Entries this process is writing are kept.
 */
export async function cleanTemps(dir: string, opts: { staleMs?: number; dryRun?: boolean } = {}): Promise<{ removed: number; bytes: number }> {
  const staleMs = opts.staleMs ?? 24 * 3600 * 1000;
  let names: string[];
  try {
    names = await readdir(dir);
  } catch (e) {
    if (isErrnoException(e, 'ENOENT')) return { removed: 0, bytes: 0 };
    throw e;
  }
  let removed = 0;
  let bytes = 0;
  for (const name of names) {
    const p = join(dir, name);
    if (activeTemps.has(p)) continue;
    const pid = tempOwner(name);
    let st;
    try {
      st = await lstat(p);
    } catch {
      continue;
    }
    const dead = pid === undefined || !pidAlive(pid) || Date.now() - st.mtimeMs > staleMs;
    if (!dead) continue;
    const size = st.isDirectory() ? (await treeSize(p)).bytes : st.size;
    if (!opts.dryRun) await rm(p, { recursive: true, force: true });
    removed++;
    bytes += size;
  }
  return { removed, bytes };
}

// ---------------------------------------------------------------- locks

const inProcess = new Map<string, Promise<void>>();

export interface LockOptions extends SignalOptions {
  /** How long to wait for another holder before failing with LOCKED. */
  timeoutMs?: number;
}

/**
 * An exclusive lock across processes: a file created with O_EXCL that holds the holder's pid. A lock
 * whose pid is dead is broken; a live holder is waited for with backoff up to `timeoutMs`.
 * Within one process, callers queue on a promise chain so they never poll each other.
 */
export async function withLock<T>(lockPath: string, fn: () => Promise<T>, opts: LockOptions = {}): Promise<T> {
  const prev = inProcess.get(lockPath) ?? Promise.resolve();
  let release!: () => void;
  const mine = new Promise<void>((r) => (release = r));
  const chain = prev.then(() => mine);
  inProcess.set(lockPath, chain);
  try {
    await prev;
    await acquireFileLock(lockPath, opts);
    try {
      return await fn();
    } finally {
      await unlink(lockPath).catch(() => undefined);
    }
  } finally {
    release();
    if (inProcess.get(lockPath) === chain) inProcess.delete(lockPath);
  }
}

async function readPid(path: string): Promise<number | undefined> {
  try {
    const text = (await readFile(path, 'utf8')).trim();
    const pid = Number(text);
    return Number.isSafeInteger(pid) && pid > 0 ? pid : undefined;
  } catch {
    return undefined;
  }
}

async function acquireFileLock(lockPath: string, opts: LockOptions): Promise<void> {
  const timeoutMs = opts.timeoutMs ?? 30_000;
  const start = Date.now();
  let delay = 5;
  await mkdir(dirname(lockPath), { recursive: true });
  for (;;) {
    throwIfAborted(opts.signal, `waiting for lock ${lockPath}`);
    try {
      const h = await open(lockPath, 'wx', 0o644);
      try {
        await h.writeFile(`${process.pid}\n`);
      } finally {
        await h.close();
      }
      return;
    } catch (e) {
      if (!isErrnoException(e, 'EEXIST')) throw storageError(`cannot create lock ${lockPath}`, e);
    }
    const holder = await readPid(lockPath);
    let stale = false;
    if (holder !== undefined) stale = holder !== process.pid && !pidAlive(holder);
    else {
      // Empty or unreadable: a holder between create and write, or one that died there.
      try {
        stale = Date.now() - (await stat(lockPath)).mtimeMs > 5_000;
      } catch {
        continue; // gone meanwhile: try again at once
      }
    }
    if (stale) {
      // Move the stale lock aside (only one breaker wins the rename), then check that what we moved is
      // still the dead holder's; if a live holder slipped in, put it back.
      const aside = `${lockPath}.${tempName('stale')}`;
      try {
        await rename(lockPath, aside);
      } catch {
        continue;
      }
      const moved = await readPid(aside);
      if (moved !== undefined && moved !== holder && pidAlive(moved)) {
        await link(aside, lockPath).catch(() => undefined);
      }
      await unlink(aside).catch(() => undefined);
      continue;
    }
    if (Date.now() - start > timeoutMs) {
      throw new ArchwayError('LOCKED', `${lockPath} is locked by process ${holder ?? '?'} (waited ${Math.round(timeoutMs / 1000)}s)`, {
        hint: 'another archway process is writing; wait for it, or remove the lock file if that process is gone',
        details: { lock: lockPath, pid: holder },
      });
    }
    await sleep(delay + Math.floor(Math.random() * delay), opts.signal);
    delay = Math.min(delay * 2, 200);
  }
}

/**
 * A whole file of at most `limit` bytes (a manifest, a config, index.json), read synchronously:
 * one blocking read costs a tenth of an async open, stat, read and close. Undefined when it does
 * not exist, an INTEGRITY error when it is larger.
 */
export function readSmallFile(file: string, limit: number, what: string): Buffer | undefined {
  let fd: number;
  try {
    fd = openSync(file, 'r');
  } catch (e) {
    if (isErrnoException(e, 'ENOENT')) return undefined;
    throw storageError(`${what}: cannot read ${file}`, e);
  }
  try {
    const size = fstatSync(fd).size;
    if (size > limit) throw new ArchwayError('INTEGRITY', `${what}: ${size} bytes is over the ${limit}-byte limit`);
    return readFileSync(fd);
  } catch (e) {
    if (e instanceof ArchwayError) throw e;
    throw storageError(`${what}: cannot read ${file}`, e);
  } finally {
    closeSync(fd);
  }
}
