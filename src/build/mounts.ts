/**
 * RUN --mount, made into the sandbox's bind mounts (BuildKit's semantics):
 *
 *   bind    files from the context, a stage or an image; read-only by default, and with rw the
 *           command writes to a throwaway copy (its changes are discarded)
 *   cache   a directory kept in the store per cache id, shared by builds and platforms
 *           (sharing=shared, the default), one writer at a time (locked), or a fresh instance
 *           when the directory is busy (private); its content is never in a layer
 *   tmpfs   a tmpfs (size=...) for the duration of the command
 *   secret  a --secret value as a file (default /run/secrets/ID, mode 0400) on a tmpfs, or as an
 *           environment variable (env=...); never in a layer, the cache key or on disk
 *   ssh     not supported: an error when required, skipped otherwise
 *
 * Host-side mounts (tmpfs, merged stage roots) live under the store's `tmp/mounts`, which
 * cleanStaleMounts() sweeps after a crash. Mount targets sit in the overlay as stubs that the
 * sandbox removes after the run, so only what the command wrote elsewhere reaches the layer.
 */
import { createHash, randomBytes } from 'node:crypto';
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import { ArchwayError, isErrnoException, runTool } from '../util/index.js';
import type { CopySource, Mount } from '../graph/index.js';
import type { SandboxBind } from '../sandbox/index.js';
import { tempName, withLock, type Store } from '../store/index.js';
import { expandSource, resolveInRoot, type SourceTree } from './context.js';
import { stageCopy } from './copy.js';
import { withMergedRoot } from './rootfs.js';

export interface MountEnv {
  store: Store;
  contextTree: SourceTree;
  secrets: ReadonlyMap<string, Buffer>;
  /** The snapshots (bottom first) of the stage or image a mount reads from, and a label for messages. */
  sourceSnapshots: (from: Exclude<CopySource, { kind: 'context' }>) => Promise<{ label: string; snapshots: string[] }>;
  /** `Dockerfile:12`, for messages. */
  where: string;
  warn: (text: string) => void;
  signal?: AbortSignal;
}

export interface PreparedMounts {
  binds: SandboxBind[];
  /** KEY=VALUE entries for secrets with env=... */
  env: string[];
}

/** Cache mounts in use by this process, for sharing=private. */
const cacheInUse = new Map<string, number>();

function mountTarget(target: string, cwd: string): string {
  return path.posix.resolve(cwd || '/', target);
}

/** The directory of the cache mounts of a store. */
export function cacheMountsDir(store: Store): string {
  return store.cacheMountsDir;
}

/**
 * Prepares every mount of a RUN step, calls `fn` with the binds and extra environment, and
 * releases everything afterwards (unmounts, throwaway copies, locks), whatever `fn` does.
 */
export async function withRunMounts<T>(env: MountEnv, mounts: readonly Mount[], cwd: string, fn: (p: PreparedMounts) => Promise<T>): Promise<T> {
  const binds: SandboxBind[] = [];
  const extraEnv: string[] = [];
  const step = async (i: number): Promise<T> => {
    const m = mounts[i];
    if (m === undefined) {
      // Parents before children: a mount inside another mount's target is made after it.
      const sorted = [...binds].sort((a, b) => a.target.split('/').length - b.target.split('/').length);
      return fn({ binds: sorted, env: extraEnv });
    }
    const next = (b?: SandboxBind): Promise<T> => {
      if (b) binds.push(b);
      return step(i + 1);
    };
    const target = m.target ? mountTarget(m.target, cwd) : '';
    switch (m.type) {
      case 'bind':
        return bindMount(env, m, target, next);
      case 'cache':
        return cacheMount(env, m, target, next);
      case 'tmpfs':
        return withTmpfs(env, m.size, async (dir) => next({ source: dir, target, readonly: m.readonly }));
      case 'secret':
        return secretMount(env, m, target, extraEnv, next);
      case 'ssh':
        if (m.required) {
          throw new ArchwayError('USAGE', `${env.where}: RUN --mount=type=ssh is not supported (no SSH agent forwarding yet)`, { hint: 'use a secret mount for a key, or drop required=true' });
        }
        env.warn(`${env.where}: RUN --mount=type=ssh is not supported; the mount is skipped`);
        return next();
    }
  };
  return step(0);
}

async function exists(p: string): Promise<boolean> {
  try {
    await fs.lstat(p);
    return true;
  } catch {
    return false;
  }
}

/** A working directory in the store's tmp, named for this process: prune leaves it alone while we live. */
async function tempDir(store: Store, prefix: string): Promise<string> {
  await fs.mkdir(store.tmpDir, { recursive: true });
  return fs.mkdtemp(path.join(store.tmpDir, tempName(prefix)));
}

async function bindMount<T>(env: MountEnv, m: Mount, target: string, next: (b: SandboxBind) => Promise<T>): Promise<T> {
  const source = m.source ?? '/';
  const from = m.from ?? { kind: 'context' as const };
  if (from.kind === 'context') {
    const tree = env.contextTree;
    if (m.readonly && !tree.filtered) {
      const host = await resolveInRoot(tree.root, source, { followLast: true });
      if (host === undefined || !(await exists(host))) throw notFound(env, source, tree.label);
      return next({ source: host, target, readonly: true });
    }
    // A filtered view (.dockerignore) or a writable one: a throwaway copy of what the context gives.
    const dir = await tempDir(env.store, 'bind-');
    try {
      const matches = await expandSource(tree, source).catch(() => {
        throw notFound(env, source, tree.label);
      });
      const only = matches[0];
      if (only === undefined || matches.length !== 1) throw new ArchwayError('USAGE', `${env.where}: mount source "${source}" must name one file or directory`);
      let host: string;
      if (only.stat.isDirectory()) {
        host = path.join(dir, 'root');
        await fs.mkdir(host);
        await stageCopy({ tree, matches, dest: '/', destIsDir: true }, host);
      } else {
        await stageCopy({ tree, matches, dest: '/', destIsDir: true }, dir);
        host = path.join(dir, path.posix.basename(only.rel));
      }
      return await next({ source: host, target, readonly: m.readonly });
    } finally {
      await fs.rm(dir, { recursive: true, force: true }).catch(() => undefined);
    }
  }
  const { label, snapshots } = await env.sourceSnapshots(from);
  return withMergedRoot(snapshots, path.join(env.store.tmpDir, 'mounts'), async (root) => {
    const host = await resolveInRoot(root, source, { followLast: true });
    if (host === undefined || !(await exists(host))) throw notFound(env, source, label);
    if (m.readonly) return next({ source: host, target, readonly: true });
    const dir = await tempDir(env.store, 'bind-');
    try {
      const copy = path.join(dir, 'root');
      await runTool('cp', ['-a', '--reflink=auto', '--', host, copy], { code: 'SANDBOX' });
      return await next({ source: copy, target, readonly: false });
    } finally {
      await fs.rm(dir, { recursive: true, force: true }).catch(() => undefined);
    }
  });
}

function notFound(env: MountEnv, source: string, label: string): ArchwayError {
  return new ArchwayError('NOT_FOUND', `${env.where}: mount source "${source}" not found in the ${label}`);
}

async function cacheMount<T>(env: MountEnv, m: Mount, target: string, next: (b: SandboxBind) => Promise<T>): Promise<T> {
  const id = m.id || target;
  const base = path.join(cacheMountsDir(env.store), createHash('sha256').update(id).digest('hex').slice(0, 32));
  await fs.mkdir(base, { recursive: true });
  await fs.writeFile(path.join(base, 'id'), `${id}\n`);
  // The directory's mtime is its last use: `archway prune` keeps recently used caches.
  const now = new Date();
  await fs.utimes(base, now, now);
  // In use from the moment it is chosen (synchronously), so two private users never pick the same.
  const use = async (dir: string): Promise<T> => {
    cacheInUse.set(dir, (cacheInUse.get(dir) ?? 0) + 1);
    try {
      await ensureCacheDir(env, m, dir);
      return await next({ source: dir, target, readonly: m.readonly });
    } finally {
      const n = (cacheInUse.get(dir) ?? 1) - 1;
      if (n > 0) cacheInUse.set(dir, n);
      else cacheInUse.delete(dir);
    }
  };
  const shared = path.join(base, 'data');
  switch (m.sharing ?? 'shared') {
    case 'locked':
      return withLock(path.join(base, 'lock'), () => use(shared), { timeoutMs: 24 * 3600 * 1000, ...(env.signal ? { signal: env.signal } : {}) });
    case 'private': {
      let dir = shared;
      for (let n = 1; cacheInUse.has(dir); n++) dir = path.join(base, `private-${n}`);
      return use(dir);
    }
    default:
      return use(shared);
  }
}

const creating = new Map<string, Promise<void>>();

/**
 * Creates a cache directory once: owner and mode from the mount, content seeded from `from` when
 * given. Concurrent steps of this process wait for one creation; other processes race on a rename.
 */
function ensureCacheDir(env: MountEnv, m: Mount, dir: string): Promise<void> {
  let p = creating.get(dir);
  if (!p) {
    p = createCacheDir(env, m, dir).finally(() => creating.delete(dir));
    creating.set(dir, p);
  }
  return p;
}

async function createCacheDir(env: MountEnv, m: Mount, dir: string): Promise<void> {
  if (await exists(dir)) return;
  const tmp = `${dir}.new-${process.pid}-${randomBytes(6).toString('hex')}`;
  if (m.from && m.from.kind !== 'context') {
    const { label, snapshots } = await env.sourceSnapshots(m.from);
    await withMergedRoot(snapshots, path.join(env.store.tmpDir, 'mounts'), async (root) => {
      const host = await resolveInRoot(root, m.source ?? '/', { followLast: true });
      if (host === undefined || !(await exists(host))) throw notFound(env, m.source ?? '/', label);
      await runTool('cp', ['-a', '--reflink=auto', '--', host, tmp], { code: 'SANDBOX' });
    });
  } else {
    await fs.mkdir(tmp);
  }
  await fs.chown(tmp, m.uid ?? 0, m.gid ?? 0);
  await fs.chmod(tmp, m.mode ?? 0o755);
  try {
    await fs.rename(tmp, dir);
  } catch (e) {
    // Made meanwhile by another build: use theirs.
    await fs.rm(tmp, { recursive: true, force: true });
    if (!isErrnoException(e, 'ENOTEMPTY') && !isErrnoException(e, 'EEXIST')) throw e;
  }
}

/** A tmpfs mounted on the host under the store's tmp/mounts for the duration of `fn`. */
async function withTmpfs<T>(env: MountEnv, size: number | undefined, fn: (dir: string) => Promise<T>, mode = '1777'): Promise<T> {
  const scratch = path.join(env.store.tmpDir, 'mounts');
  await fs.mkdir(scratch, { recursive: true });
  const dir = await fs.mkdtemp(path.join(scratch, tempName('tmpfs-')));
  try {
    await runTool('mount', ['-t', 'tmpfs', '-o', `nosuid,nodev,mode=${mode}${size ? `,size=${size}` : ''}`, 'tmpfs', dir], { code: 'SANDBOX' });
    try {
      return await fn(dir);
    } finally {
      await runTool('umount', [dir], { code: 'SANDBOX' }).catch(() => runTool('umount', ['-l', dir], { code: 'SANDBOX' }));
    }
  } finally {
    await fs.rmdir(dir).catch(() => undefined);
  }
}

async function secretMount<T>(env: MountEnv, m: Mount, target: string, extraEnv: string[], next: (b?: SandboxBind) => Promise<T>): Promise<T> {
  const id = m.id ?? '';
  const value = env.secrets.get(id);
  if (value === undefined) {
    if (m.required) {
      throw new ArchwayError('USAGE', `${env.where}: secret "${id}" is required but was not given`, { hint: `pass it with --secret id=${id},src=FILE (or env=VARIABLE)` });
    }
    return next();
  }
  if (m.env) extraEnv.push(`${m.env}=${value.toString('utf8')}`);
  if (!target) return next();
  // The value sits on a tmpfs of its own, never on disk, and is bound read-only into the sandbox.
  return withTmpfs(env, Math.max(64 * 1024, value.length + 4096), async (dir) => {
    const file = path.join(dir, 'secret');
    await fs.writeFile(file, value, { mode: 0o600 });
    await fs.chown(file, m.uid ?? 0, m.gid ?? 0);
    await fs.chmod(file, m.mode ?? 0o400);
    return next({ source: file, target, readonly: true });
  }, '0700');
}
