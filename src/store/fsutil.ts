import { randomBytes } from 'node:crypto';
import { closeSync, constants as fsConstants, fstatSync, openSync, readFileSync } from 'node:fs';
import { link, lstat, mkdir, open, readdir, readFile, realpath, rename, rm, stat, unlink } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { ArchwayError, errorMessage, isErrnoException, sleep, throwIfAborted } from '../util/index.js';

export interface SignalOptions {
  signal?: AbortSignal;
}

/**
 * When a process started, in clock ticks since boot (field 22 of /proc/PID/stat), or undefined
 * where that cannot be read (not Linux, no /proc, the process is gone). Two processes that ever
 * had the same pid have different start times, so (pid, start) names one process for good.
 */
export function processStartTicks(pid: number): string | undefined {
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/stat`, 'latin1');
  } catch {
    return undefined;
  }
  // The command name (field 2) is in parentheses and may hold spaces or ')': split after the last ')'.
  const fields = text.slice(text.lastIndexOf(')') + 2).split(' ');
  const start = fields[19];
  return start !== undefined && /^\d+$/.test(start) ? start : undefined;
}

let ownStart: string | null | undefined;
function ownStartTicks(): string | undefined {
  if (ownStart === undefined) ownStart = processStartTicks(process.pid) ?? null;
  return ownStart ?? undefined;
}

/**
 * A temp file name that says who wrote it: `<pid>.<random>.s<start>.<suffix>`, where `<start>` is
 * when the writer started (see processStartTicks; left out where it is not known). Prune removes the
 * temp files of writers that are gone (see `tempOwnerAlive`); the start time tells a writer apart
 * from a later process that was given the same pid. Every file and directory archway makes in the
 * store's tmp directories is named with this.
 */
export function tempName(suffix: string): string {
  const start = ownStartTicks();
  return `${process.pid}.${randomBytes(8).toString('hex')}.${start !== undefined ? `s${start}.` : ''}${suffix}`;
}

const TEMP_OWNER = /^(\d+)\.[0-9a-f]{16}\.(?:s(\d+)\.)?/;

/** Who wrote a temp name: its pid, and its start time when the name has one; undefined when it is not one of ours. */
export function tempOwnerOf(name: string): { pid: number; start?: string } | undefined {
  const m = TEMP_OWNER.exec(name);
  if (!m) return undefined;
  const pid = Number(m[1]);
  if (!Number.isSafeInteger(pid) || pid <= 0) return undefined;
  return m[2] !== undefined ? { pid, start: m[2] } : { pid };
}

/** The pid a temp name was written by, or undefined when it is not one of ours. */
export function tempOwner(name: string): number | undefined {
  return tempOwnerOf(name)?.pid;
}

/**
 * Whether a process with this pid exists (EPERM means it does, owned by someone else). With `start`
 * (processStartTicks of the process meant), a process that has the pid but started at another time
 * is a later one that was given a dead writer's pid: not alive.
 */
export function pidAlive(pid: number, start?: string): boolean {
  if (pid === process.pid) return start === undefined || ownStartTicks() === undefined || start === ownStartTicks();
  try {
    process.kill(pid, 0);
  } catch (e) {
    if (!isErrnoException(e, 'EPERM')) return false;
  }
  if (start === undefined) return true;
  const now = processStartTicks(pid);
  // Unreadable (another pid namespace's /proc, hidepid): the pid is alive, assume it is the writer.
  return now === undefined || now === start;
}

/**
 * Whether the writer of the temp `name` may still be using it: its pid is alive and (when the name
 * records one) has the same start time. Names that record no start time (older writers, the
 * sandbox's) count as dead after `staleMs` without a change too, for their pid may have been reused.
 */
export function tempOwnerAlive(name: string, mtimeMs: number, staleMs = 24 * 3600 * 1000): boolean {
  const owner = tempOwnerOf(name);
  if (!owner) return false;
  if (!pidAlive(owner.pid, owner.start)) return false;
  return owner.start !== undefined || Date.now() - mtimeMs <= staleMs;
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

/**
 * Total bytes and file count under a path, without following links. Directories count their own
 * size too (a tree of empty directories is not 0 bytes on disk), and a file with several hard
 * links once. With `freed`, a hard-linked file counts only when all its links are in the tree:
 * the bytes that removing the tree gives back (a tree of links into snapshots frees nothing).
 */
export async function treeSize(path: string, opts: { freed?: boolean; skip?: ReadonlySet<string> } = {}): Promise<{ bytes: number; files: number }> {
  let bytes = 0;
  let files = 0;
  const linked = new Map<string, { size: number; nlink: number; seen: number }>();
  const walk = async (p: string): Promise<void> => {
    if (opts.skip?.has(p)) return;
    let st;
    try {
      st = await lstat(p);
    } catch {
      return;
    }
    if (st.isDirectory()) {
      bytes += st.size;
      let names: string[] = [];
      try {
        names = await readdir(p);
      } catch {
        return;
      }
      for (const n of names) await walk(join(p, n));
      return;
    }
    files++;
    if (st.nlink > 1) {
      const key = `${st.dev}:${st.ino}`;
      const l = linked.get(key);
      if (l) l.seen++;
      else linked.set(key, { size: st.size, nlink: st.nlink, seen: 1 });
    } else bytes += st.size;
  };
  await walk(path);
  for (const l of linked.values()) if (!opts.freed || l.seen >= l.nlink) bytes += l.size;
  return { bytes, files };
}

/** Directories in a tmp dir that many writers share (their entries are temps, named by owner). */
const SHARED_TEMP_DIRS = new Set(['mounts']);

/**
 * How many temp entries `dir` holds (those of shared directories one by one, as cleanTemps counts
 * them) and their bytes; what is mounted in them (a build's read-only view of snapshots) is not theirs.
 */
export async function tempUsage(dir: string): Promise<{ count: number; bytes: number }> {
  let real: string;
  try {
    real = await realpath(dir);
  } catch {
    return { count: 0, bytes: 0 };
  }
  const skip = new Set((await mountPoints()).filter((m) => m.startsWith(`${real}/`)).map((m) => join(dir, m.slice(real.length + 1))));
  const usage = async (d: string): Promise<{ count: number; bytes: number }> => {
    let names: string[];
    try {
      names = await readdir(d);
    } catch {
      return { count: 0, bytes: 0 };
    }
    let count = 0;
    let bytes = 0;
    for (const name of names) {
      const p = join(d, name);
      if (d === dir && SHARED_TEMP_DIRS.has(name)) {
        const inner = await usage(p);
        count += inner.count;
        bytes += inner.bytes;
        continue;
      }
      count++;
      bytes += (await treeSize(p, { skip })).bytes;
    }
    return { count, bytes };
  };
  return usage(dir);
}

/** Mount points of this mount namespace (decoded), for not removing through a mount. */
async function mountPoints(): Promise<string[]> {
  let text: string;
  try {
    text = await readFile('/proc/self/mountinfo', 'utf8');
  } catch {
    return [];
  }
  const out: string[] = [];
  for (const line of text.split('\n')) {
    const m = line.split(' ')[4];
    if (m) out.push(m.replace(/\\([0-7]{3})/g, (_x, o: string) => String.fromCharCode(parseInt(o, 8))));
  }
  return out;
}

/**
 * Removes temp files and directories in `dir` whose writer is gone (see tempOwnerAlive): the
 * writer's pid is dead or now belongs to a later process; a name that says nothing of its writer
 * is not one archway makes and goes too. Entries this process is writing are kept, and so is
 * anything something is mounted on (a crashed build's mount is unmounted by the next build). In a
 * shared directory (`mounts`) the same applies to each entry. Bytes are those the removal frees.
 */
export async function cleanTemps(dir: string, opts: { staleMs?: number; dryRun?: boolean } = {}): Promise<{ removed: number; bytes: number }> {
  let mounts: string[] | undefined;
  const mounted = async (p: string): Promise<boolean> => {
    mounts ??= await mountPoints();
    return mounts.some((m) => m === p || m.startsWith(`${p}/`));
  };
  const clean = async (d: string, shared: boolean): Promise<{ removed: number; bytes: number }> => {
    let names: string[];
    let real: string;
    try {
      names = await readdir(d);
      real = await realpath(d); // as mountinfo spells it
    } catch (e) {
      if (isErrnoException(e, 'ENOENT') || isErrnoException(e, 'ENOTDIR')) return { removed: 0, bytes: 0 };
      throw e;
    }
    let removed = 0;
    let bytes = 0;
    for (const name of names) {
      const p = join(d, name);
      if (activeTemps.has(p)) continue;
      let st;
      try {
        st = await lstat(p);
      } catch {
        continue;
      }
      if (!shared && SHARED_TEMP_DIRS.has(name) && st.isDirectory()) {
        const r = await clean(p, true);
        removed += r.removed;
        bytes += r.bytes;
        continue;
      }
      if (tempOwnerAlive(name, st.mtimeMs, opts.staleMs)) continue;
      if (await mounted(join(real, name))) continue;
      const size = st.isDirectory() ? (await treeSize(p, { freed: true })).bytes : st.nlink > 1 ? 0 : st.size;
      if (!opts.dryRun) {
        try {
          await rm(p, { recursive: true, force: true });
        } catch {
          continue; // not ours to remove (another user's), or busy: left for a later prune
        }
      }
      removed++;
      bytes += size;
    }
    return { removed, bytes };
  };
  return clean(dir, false);
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
