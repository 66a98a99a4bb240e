import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import { runTool, errorMessage } from '../util/index.js';
import { writeLayerFromDiff, writeLayerFromOverlayUpper, type LayerInfo, type WriteLayerOptions } from '../layer/index.js';
import {
  isOverlayFailure,
  mergeLayers,
  noteOverlayUnavailable,
  overlayUnavailable,
  rootfsDriverSetting,
  runInSandbox,
  sameFilesystem,
  type RootfsDriver,
  type SandboxOptions,
  type SandboxResult,
} from '../sandbox/index.js';
import { tempName, tempOwnerAlive } from '../store/index.js';
import { cleanSourcePath } from './context.js';

/**
 * Reads through a stack of unpacked layer snapshots (top last) the way overlayfs would, without
 * mounting: the topmost snapshot holding a path wins, an overlay whiteout (a 0/0 character device)
 * hides it. Enough for the few lookups the solver makes (passwd, is-a-directory); whole trees are
 * read through a real overlay mount (withMergedRoot).
 */
export async function lookupInLayers(snapshots: readonly string[], rel: string): Promise<{ host: string; isDir: boolean; isLink: boolean } | undefined> {
  const clean = cleanSourcePath(rel);
  for (let i = snapshots.length - 1; i >= 0; i--) {
    const host = path.join(snapshots[i] as string, clean);
    try {
      const st = await fs.lstat(host);
      if (st.isCharacterDevice() && st.rdev === 0) return undefined;
      return { host, isDir: st.isDirectory(), isLink: st.isSymbolicLink() };
    } catch {
      /* not in this layer */
    }
  }
  return undefined;
}

export async function readFileFromLayers(snapshots: readonly string[], rel: string): Promise<string | undefined> {
  const hit = await lookupInLayers(snapshots, rel);
  if (!hit || hit.isDir || hit.isLink) return undefined;
  const st = await fs.stat(hit.host);
  if (st.size > 4 * 1024 * 1024) return undefined;
  return fs.readFile(hit.host, 'utf8');
}

/** Whether this process should make roots by copying (the setting, or overlayfs known not to work). */
async function useCopy(driver: RootfsDriver | undefined): Promise<{ copy: boolean; driver: RootfsDriver }> {
  const d = driver ?? (await rootfsDriverSetting());
  return { copy: d === 'copy' || (d === 'auto' && overlayUnavailable() !== undefined), driver: d };
}

const isRoot = typeof process.getuid === 'function' && process.getuid() === 0;

/**
 * Gives `fn` a read-only view of the stacked snapshots: the snapshot itself for one layer, an
 * empty directory for none, and for several a read-only overlay mount (only lower dirs) or, with
 * the copy rootfs driver or where overlayfs cannot be mounted, a merged tree made of hard links
 * (copies across filesystems). `fn` must only read. The mount or tree lives under `scratch`,
 * which cleanStaleMounts() sweeps after a crash; the tree is removed afterwards.
 */
export async function withMergedRoot<T>(snapshots: readonly string[], scratch: string, fn: (root: string) => Promise<T>, driver?: RootfsDriver): Promise<T> {
  if (snapshots.length === 1) return fn(snapshots[0] as string);
  await fs.mkdir(scratch, { recursive: true });
  const dir = await fs.mkdtemp(path.join(scratch, tempName('merged-')));
  try {
    if (snapshots.length === 0) return await fn(dir);
    const how = await useCopy(driver);
    if (!how.copy) {
      const lower = [...snapshots].reverse().map((s) => s.replace(/[:,\\]/g, '\\$&')).join(':');
      let mounted = false;
      try {
        await runTool('mount', ['-t', 'overlay', 'overlay', '-o', `ro,lowerdir=${lower}`, dir], { code: 'SANDBOX' });
        mounted = true;
      } catch (e) {
        if (how.driver === 'overlay') throw e;
        // Only root can tell: for anyone else mount(8) fails for want of privilege, not of overlayfs.
        if (isRoot) noteOverlayUnavailable(errorMessage(e));
      }
      if (mounted) {
        try {
          return await fn(dir);
        } finally {
          await runTool('umount', [dir], { code: 'SANDBOX' }).catch(() => runTool('umount', ['-l', dir], { code: 'SANDBOX' }));
        }
      }
    }
    await mergeLayers(snapshots, dir, { mode: (await sameFilesystem(dir, snapshots)) ? 'link' : 'copy' });
    return await fn(dir);
  } finally {
    await fs.rm(dir, { recursive: true, force: true }).catch(() => undefined);
  }
}

export interface StepRun {
  result: SandboxResult;
  /** 'overlay': the change is the upper dir; 'copy': it is the difference of two trees. */
  driver: 'overlay' | 'copy';
  /** Writes what the command changed as a layer (whiteouts for deletions either way). */
  writeLayer(file: string, opts: WriteLayerOptions): Promise<LayerInfo>;
  /**
   * With overlay: the upper dir, which already is the new layer unpacked with overlay-form
   * whiteouts (a snapshot can be made by renaming it). Undefined with copy.
   */
  upper?: string;
}

/**
 * Runs a build step's command over the snapshot stack `opts.layers` and captures its change.
 *
 * With overlayfs the change is `opts.upperDir` (which the caller may fill beforehand, e.g. with a
 * missing working directory). With the copy driver — ARCHWAY_ROOTFS_DRIVER=copy, or 'auto' where
 * the overlay cannot be mounted — the stack is merged into `work/before` (hard links when on the
 * snapshots' filesystem: that tree is only read), copied into `work/root` with `upperDir`'s content
 * on top, the command runs in `work/root`, and the layer is the difference of the two trees
 * (writeLayerFromDiff: added and changed entries, whiteouts for deleted ones). Both ways give
 * layers that apply to the same tree. The caller removes `work` (the trees are in it).
 */
export async function runStep(opts: SandboxOptions & { layers: string[]; upperDir: string }, work: string, driver?: RootfsDriver): Promise<StepRun> {
  const how = await useCopy(driver ?? opts.rootfsDriver);
  if (!how.copy) {
    try {
      const result = await runInSandbox({ ...opts, rootfsDriver: 'overlay' });
      const upper = opts.upperDir;
      return { result, driver: 'overlay', upper, writeLayer: (file, o) => writeLayerFromOverlayUpper(upper, file, o) };
    } catch (e) {
      if (!isOverlayFailure(e)) throw e;
      noteOverlayUnavailable(e.message);
      if (how.driver !== 'auto') throw e;
      // The mount failed before the command started: run it in a copied tree instead.
    }
  }
  const s = opts.signal ? { signal: opts.signal } : {};
  const before = path.join(work, 'before');
  const root = path.join(work, 'root');
  await fs.mkdir(before, { recursive: true });
  await mergeLayers(opts.layers, before, { mode: (await sameFilesystem(before, opts.layers)) ? 'link' : 'copy', ...s });
  await mergeLayers([before, opts.upperDir], root, { mode: 'copy', ...s });
  const { layers: _layers, upperDir: _upper, rootfsDriver: _driver, ...rest } = opts;
  const result = await runInSandbox({ ...rest, rootfs: root });
  return { result, driver: 'copy', writeLayer: (file, o) => writeLayerFromDiff(before, root, file, o) };
}

/**
 * Unmounts what a crashed archway left mounted under `scratch`; the mounts of live processes (a
 * concurrent build's, named for their owner by tempName) stay.
 */
export async function cleanStaleMounts(scratch: string): Promise<void> {
  let text: string;
  try {
    text = await fs.readFile('/proc/self/mountinfo', 'utf8');
  } catch {
    return;
  }
  const prefix = path.resolve(scratch) + path.sep;
  const mounts = text
    .split('\n')
    .map((l) => l.split(' ')[4])
    .filter((m): m is string => m !== undefined && (m + path.sep).startsWith(prefix))
    .filter((m) => !tempOwnerAlive(m.slice(prefix.length).split(path.sep)[0] ?? '', Date.now()))
    .sort((a, b) => b.length - a.length);
  for (const m of mounts) await runTool('umount', ['-l', m], { code: 'SANDBOX' }).catch(() => undefined);
}
