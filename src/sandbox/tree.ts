/**
 * The copied-tree root filesystem: what the sandbox uses where overlayfs cannot be mounted (a
 * kernel without it, an upper directory on an overlay — archway itself running in a container —,
 * a user namespace on an old kernel), or when asked to (ARCHWAY_ROOTFS_DRIVER=copy, or
 * `rootfs-driver = "copy"` in the [sandbox] table of config.toml).
 *
 * mergeLayers() stacks unpacked snapshots (bottom first, whiteouts in overlay form: a 0/0
 * character device, an opaque directory marked with trusted.overlay.opaque or user.overlay.opaque)
 * into one plain directory with overlayfs's semantics: an entry of a higher layer replaces the one
 * below (a directory merges into a directory, anything else replaces), a whiteout deletes, an
 * opaque directory hides everything below it. The process may write into the result, so files are
 * copied (`cp -a --reflink=auto`: a reflink where the filesystem can, a copy otherwise), never
 * hard-linked; 'link' mode (hard links, for trees that are only read: the "before" side of a
 * diff, a COPY --from source) exists for callers that guarantee that.
 *
 * Safety: the snapshots are untrusted. Each layer is walked with lstat only, and before cp writes
 * anything, every entry of the destination that the layer replaces is removed, so every path cp
 * writes to has only real directories above it and nothing to overwrite: a link planted by a lower
 * layer (`/etc -> /host/etc`) is replaced, never followed. cp itself never follows a link of the
 * source (-a implies -P).
 */
import { randomBytes } from 'node:crypto';
import { promises as fs, type Stats } from 'node:fs';
import * as path from 'node:path';
import { parse as parseToml } from 'smol-toml';
import { ArchwayError, errorMessage, isErrnoException, runTool, throwIfAborted } from '../util/index.js';
import { getXattrs } from '../layer/index.js';
import { defaultConfigPath } from '../registry/index.js';

/** How the sandbox makes a root from layer snapshots. 'auto': overlayfs, a copied tree where it fails. */
export type RootfsDriver = 'auto' | 'overlay' | 'copy';

const DRIVERS: readonly RootfsDriver[] = ['auto', 'overlay', 'copy'];

function parseDriver(v: unknown, where: string): RootfsDriver {
  if (typeof v === 'string' && (DRIVERS as readonly string[]).includes(v)) return v as RootfsDriver;
  throw new ArchwayError('USAGE', `${where}: rootfs driver must be auto, overlay or copy, not ${JSON.stringify(v)}`);
}

const settingCache = new Map<string, Promise<RootfsDriver>>();

/**
 * The rootfs driver the user chose: $ARCHWAY_ROOTFS_DRIVER, else `rootfs-driver` in the [sandbox]
 * table of config.toml ($ARCHWAY_CONFIG or ~/.config/archway/config.toml), else 'auto'.
 */
export function rootfsDriverSetting(env: NodeJS.ProcessEnv = process.env): Promise<RootfsDriver> {
  const fromEnv = env['ARCHWAY_ROOTFS_DRIVER'];
  if (fromEnv !== undefined && fromEnv !== '') return Promise.resolve().then(() => parseDriver(fromEnv, 'ARCHWAY_ROOTFS_DRIVER'));
  const file = defaultConfigPath(env);
  let p = settingCache.get(file);
  if (!p) {
    p = (async (): Promise<RootfsDriver> => {
      let text: string;
      try {
        text = await fs.readFile(file, 'utf8');
      } catch (e) {
        if (isErrnoException(e) && (e.code === 'ENOENT' || e.code === 'ENOTDIR')) return 'auto';
        throw new ArchwayError('STORAGE', `cannot read ${file}: ${errorMessage(e)}`, { cause: e });
      }
      let doc: Record<string, unknown>;
      try {
        doc = parseToml(text) as Record<string, unknown>;
      } catch (e) {
        throw new ArchwayError('PARSE', `${file}: ${errorMessage(e)}`);
      }
      const t = doc['sandbox'];
      if (t === undefined) return 'auto';
      if (typeof t !== 'object' || t === null || Array.isArray(t)) throw new ArchwayError('PARSE', `${file}: [sandbox] must be a table`);
      for (const k of Object.keys(t)) {
        if (k !== 'rootfs-driver') throw new ArchwayError('PARSE', `${file}: sandbox: unknown setting "${k}"`, { hint: 'known settings: rootfs-driver' });
      }
      const v = (t as Record<string, unknown>)['rootfs-driver'];
      return v === undefined ? 'auto' : parseDriver(v, `${file}: sandbox.rootfs-driver`);
    })();
    settingCache.set(file, p);
    p.catch(() => settingCache.delete(file));
  }
  return p;
}

let overlayBroken: string | undefined;

/** Remembers, for this process, that overlayfs could not be mounted (auto then copies at once). */
export function noteOverlayUnavailable(why: string): void {
  overlayBroken ??= why;
}

/** Why overlayfs is known not to work in this process, or undefined. */
export function overlayUnavailable(): string | undefined {
  return overlayBroken;
}

/** True for the overlay-mount failure of runInSandbox, which 'auto' answers with a copied tree. */
export function isOverlayFailure(e: unknown): e is ArchwayError {
  return e instanceof ArchwayError && e.code === 'SANDBOX' && e.details['reason'] === 'overlay';
}

const OPAQUE_XATTRS = ['trusted.overlay.opaque', 'user.overlay.opaque'];

function isWhiteout(st: Stats): boolean {
  return st.isCharacterDevice() && st.rdev === 0;
}

async function lstatOrUndefined(p: string): Promise<Stats | undefined> {
  try {
    return await fs.lstat(p);
  } catch {
    return undefined;
  }
}

function joinRel(a: string, b: string): string {
  return a === '' ? b : `${a}/${b}`;
}

async function clearDir(dir: string): Promise<void> {
  for (const name of await fs.readdir(dir)) await fs.rm(path.join(dir, name), { recursive: true, force: true });
}

export interface MergeOptions {
  /** 'copy' (default): reflink or copy, safe to write into. 'link': hard links, for trees only read. */
  mode?: 'copy' | 'link';
  signal?: AbortSignal;
}

/**
 * Stacks snapshots (bottom first, overlay-form whiteouts) into `dest` (created when missing; an
 * existing tree in it is the bottom of the stack). See the file comment for semantics and safety.
 */
export async function mergeLayers(layers: readonly string[], dest: string, opts: MergeOptions = {}): Promise<void> {
  await fs.mkdir(dest, { recursive: true });
  const s = opts.signal;
  for (let i = 0; i < layers.length; i++) {
    const layer = layers[i] as string;
    throwIfAborted(s, 'copying the root filesystem');
    const destIsEmpty = (await fs.readdir(dest)).length === 0;
    // Pass 1: make room. Whiteouts delete, opaque directories empty, replaced entries go.
    const whiteouts: string[] = [];
    const dirs: string[] = [];
    const plan: Array<{ rel: string; st: Stats }> = [];
    const walk = async (rel: string): Promise<void> => {
      for (const name of await fs.readdir(path.join(layer, rel))) {
        const r = joinRel(rel, name);
        const st = await fs.lstat(path.join(layer, r));
        plan.push({ rel: r, st });
        if (st.isDirectory()) {
          dirs.push(r);
          await walk(r);
        }
      }
    };
    await walk('');
    let opaque = new Set<string>();
    if (!destIsEmpty) {
      const x = await getXattrs(layer, ['.', ...dirs], { names: OPAQUE_XATTRS, ...(s ? { signal: s } : {}) });
      if (x === undefined) {
        throw new ArchwayError('STORAGE', 'cannot read overlay opaque markers of a layer snapshot: python3 is needed to read xattrs', { hint: 'install the Debian package "python3-minimal"' });
      }
      opaque = new Set([...x].filter(([, v]) => OPAQUE_XATTRS.some((k) => v[k]?.toString() === 'y')).map(([p]) => (p === '.' ? '' : p)));
    }
    if (opaque.has('')) await clearDir(dest);
    if (!destIsEmpty) {
      // `plan` lists parents before children: by the time a child is looked at in dest, its parent
      // there is a real directory or gone, so lstat never resolves through a planted link.
      for (const { rel, st } of plan) {
        const d = await lstatOrUndefined(path.join(dest, rel));
        if (d === undefined) continue;
        if (st.isDirectory() && d.isDirectory()) {
          if (opaque.has(rel)) await clearDir(path.join(dest, rel));
          continue;
        }
        await fs.rm(path.join(dest, rel), { recursive: true, force: true });
      }
    }
    for (const { rel, st } of plan) if (isWhiteout(st)) whiteouts.push(rel);
    // Pass 2: copy (or link) the layer over what is left.
    const cpArgs = opts.mode === 'link' ? ['-a', '-l'] : ['-a', '--reflink=auto'];
    await runTool('cp', [...cpArgs, '--', `${layer}/.`, `${dest}/`], { code: 'STORAGE', ...s });
    // Pass 3: the whiteouts came along as devices; drop them and give their directories back
    // the layer's times (removing an entry touched them).
    const parents = new Set<string>();
    for (const w of whiteouts) {
      const full = path.join(dest, w);
      const st = await lstatOrUndefined(full);
      if (st && isWhiteout(st)) {
        await fs.unlink(full);
        parents.add(path.posix.dirname(w));
      }
    }
    for (const p of parents) {
      const rel = p === '.' ? '' : p;
      const src = await fs.lstat(path.join(layer, rel));
      await fs.utimes(path.join(dest, rel), src.atime, src.mtime);
    }
  }
}

/** True when `a` and every one of `others` are on the same filesystem (hard links possible). */
export async function sameFilesystem(a: string, others: readonly string[]): Promise<boolean> {
  const da = (await fs.stat(a)).dev;
  for (const o of others) if ((await fs.stat(o)).dev !== da) return false;
  return true;
}

/**
 * Removes a tree the sandbox wrote into. A rootless sandbox with subordinate ids may leave files
 * owned by ids the caller cannot delete as itself; those are removed from inside a user namespace
 * with the same mapping (`userns` is the unshare arguments that create it).
 */
export async function removeTree(dir: string, userns?: readonly string[]): Promise<void> {
  try {
    await fs.rm(dir, { recursive: true, force: true });
    return;
  } catch (e) {
    if (!userns || userns.length === 0) throw e;
  }
  await runTool('unshare', [...userns, '--', 'rm', '-rf', '--', dir], { code: 'STORAGE' });
}

/**
 * Makes a temporary directory for the sandbox in `parent`, named as the store names its temps
 * (`PID.16HEX.archway-KIND`), so `archway prune` and sweepStaleTemps() know whose it is.
 */
export async function makeTempDir(parent: string, kind: 'sandbox' | 'rootfs'): Promise<string> {
  await fs.mkdir(parent, { recursive: true });
  const dir = path.join(parent, `${process.pid}.${randomBytes(8).toString('hex')}.archway-${kind}`);
  await fs.mkdir(dir, { mode: 0o700 });
  return dir;
}

const TEMP_NAME = /^(\d+)\.[0-9a-f]{16}\.archway-(?:sandbox|rootfs)$/;

const swept = new Set<string>();

/**
 * After a crash, removes the temporary directories (state, copied roots) that a dead archway
 * process left in `dir`. Nothing stays mounted after a crash (mounts live in the sandbox's own
 * mount namespace), so only files can be left; a directory is taken only when its owner's pid
 * is gone, and (unless archway runs as root) the directory is the caller's. Runs once per
 * directory per process.
 */
export async function sweepStaleTemps(dir: string, userns?: readonly string[]): Promise<void> {
  const key = path.resolve(dir);
  if (swept.has(key)) return;
  swept.add(key);
  let names: string[];
  try {
    names = await fs.readdir(dir);
  } catch {
    return;
  }
  const uid = typeof process.getuid === 'function' ? process.getuid() : 0;
  for (const n of names) {
    const m = TEMP_NAME.exec(n);
    if (!m) continue;
    const pid = Number(m[1]);
    if (pid === process.pid) continue;
    // Only our own: another user's leftovers are not ours to remove (nor could we).
    const st = await fs.lstat(path.join(dir, n)).catch(() => undefined);
    if (!st || !st.isDirectory() || (uid !== 0 && st.uid !== uid)) continue;
    try {
      process.kill(pid, 0);
      continue; // alive (or someone else's)
    } catch (e) {
      if (!isErrnoException(e) || e.code !== 'ESRCH') continue;
    }
    await removeTree(path.join(dir, n), userns).catch(() => undefined);
  }
}
