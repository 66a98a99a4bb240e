import { spawn } from 'node:child_process';
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import { ArchwayError } from '../util/index.js';
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

function run(cmd: string, args: string[]): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ['ignore', 'ignore', 'pipe'] });
    let err = '';
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    child.on('error', reject);
    child.on('close', (code) => (code === 0 ? resolve() : reject(new ArchwayError('SANDBOX', `${cmd} ${args.join(' ')} failed: ${err.trim()}`))));
  });
}

/**
 * Gives `fn` a read-only view of the stacked snapshots: the snapshot itself for one layer, an
 * empty directory for none, and a read-only overlay mount (only lower dirs) for several. The mount
 * lives under `scratch`, which cleanStaleMounts() sweeps after a crash.
 */
export async function withMergedRoot<T>(snapshots: readonly string[], scratch: string, fn: (root: string) => Promise<T>): Promise<T> {
  if (snapshots.length === 1) return fn(snapshots[0] as string);
  await fs.mkdir(scratch, { recursive: true });
  const dir = await fs.mkdtemp(path.join(scratch, 'merged-'));
  try {
    if (snapshots.length === 0) return await fn(dir);
    const lower = [...snapshots].reverse().map((s) => s.replace(/[:,\\]/g, '\\$&')).join(':');
    await run('mount', ['-t', 'overlay', 'overlay', '-o', `ro,lowerdir=${lower}`, dir]);
    try {
      return await fn(dir);
    } finally {
      await run('umount', [dir]).catch(() => run('umount', ['-l', dir]));
    }
  } finally {
    await fs.rm(dir, { recursive: true, force: true }).catch(() => undefined);
  }
}

/** Unmounts what a crashed archway left mounted under `scratch`. */
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
    .sort((a, b) => b.length - a.length);
  for (const m of mounts) await run('umount', ['-l', m]).catch(() => undefined);
}
