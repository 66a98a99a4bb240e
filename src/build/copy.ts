import { promises as fs, constants as fsc } from 'node:fs';
import * as path from 'node:path';
import { ArchwayError } from '../util/index.js';
import { walkTree, type SourceMatch, type SourceTree } from './context.js';

export interface Ownership {
  uid: number;
  gid: number;
}

export interface CopyPlan {
  tree: SourceTree;
  matches: SourceMatch[];
  /** Absolute destination inside the image, as written (a trailing '/' means a directory). */
  dest: string;
  /** Whether the destination already is a directory in the base image. */
  destIsDir: boolean;
  chown?: Ownership;
  /** Octal mode from --chmod, applied to files and directories copied. */
  chmod?: number;
  /** Extra per-entry exclusion (COPY --exclude). */
  excluded?: (rel: string) => boolean;
}

/**
 * Lays the result of a COPY out under `staging` as it will appear in the image (`staging/app/x`
 * for `COPY x /app/`), independent of the base image's contents, so the layer made from it is the
 * same on every platform. Docker's rules: a directory source copies its contents; several
 * sources, or a destination ending in '/' or being a directory, put each source inside it.
 */
export async function stageCopy(plan: CopyPlan, staging: string): Promise<void> {
  const owner = plan.chown ?? { uid: 0, gid: 0 };
  const intoDir = plan.dest.endsWith('/') || plan.destIsDir || plan.matches.length > 1;
  if (plan.matches.length > 1 && !plan.dest.endsWith('/') && !plan.destIsDir) {
    throw new ArchwayError('USAGE', `when copying several sources the destination must be a directory and end with a /: "${plan.dest}"`);
  }
  const destAbs = safeJoin(staging, plan.dest);
  const made = new Set<string>();
  const mkdirs = async (dir: string): Promise<void> => {
    const rel = path.relative(staging, dir);
    if (rel === '' || made.has(dir)) return;
    await mkdirs(path.dirname(dir));
    try {
      await fs.mkdir(dir, { mode: 0o755 });
      await fs.lchown(dir, owner.uid, owner.gid);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
    }
    made.add(dir);
  };
  for (const m of plan.matches) {
    const srcAbs = path.join(plan.tree.root, m.rel);
    if (m.stat.isDirectory()) {
      await mkdirs(destAbs);
      await applyMeta(destAbs, m.stat.mode, owner, plan.chmod, m.stat.mtime, true);
      for await (const sub of walkTree(plan.tree, m.rel)) {
        const inner = m.rel === '' ? sub.rel : sub.rel.slice(m.rel.length + 1);
        if (plan.excluded?.(sub.rel)) continue;
        const to = path.join(destAbs, inner);
        await mkdirs(path.dirname(to));
        await copyEntry(path.join(plan.tree.root, sub.rel), sub, to, owner, plan.chmod);
      }
      await fixDirTimes(destAbs, plan.tree, m.rel);
    } else {
      if (plan.excluded?.(m.rel)) continue;
      const to = intoDir ? path.join(destAbs, path.basename(m.rel)) : destAbs;
      await mkdirs(path.dirname(to));
      await copyEntry(srcAbs, m, to, owner, plan.chmod);
    }
  }
}

function safeJoin(root: string, inImage: string): string {
  const parts = inImage.split('/').filter((c) => c !== '' && c !== '.');
  const out: string[] = [];
  for (const c of parts) {
    if (c === '..') out.pop();
    else out.push(c);
  }
  return path.join(root, ...out);
}

async function copyEntry(src: string, m: SourceMatch, to: string, owner: Ownership, chmod: number | undefined): Promise<void> {
  const st = m.stat;
  if (st.isDirectory()) {
    try {
      await fs.mkdir(to);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
    }
    await applyMeta(to, st.mode, owner, chmod, st.mtime, true);
    return;
  }
  await fs.rm(to, { force: true, recursive: true });
  if (st.isSymbolicLink()) {
    await fs.symlink(await fs.readlink(src), to);
    await fs.lchown(to, owner.uid, owner.gid);
    await fs.lutimes(to, st.mtime, st.mtime);
    return;
  }
  if (!st.isFile()) return; // sockets, fifos and devices in a context are not copied, as BuildKit does not
  // A clone where the filesystem can, a copy otherwise; never a hard link (chmod would reach the source).
  await fs.copyFile(src, to, fsc.COPYFILE_FICLONE);
  await applyMeta(to, st.mode, owner, chmod, st.mtime, false);
}

async function applyMeta(p: string, mode: number, owner: Ownership, chmod: number | undefined, mtime: Date, isDir: boolean): Promise<void> {
  await fs.lchown(p, owner.uid, owner.gid);
  await fs.chmod(p, chmod ?? mode & 0o7777);
  if (!isDir) await fs.utimes(p, mtime, mtime);
}

/** Directory mtimes are set after their contents, or writing the contents would change them. */
async function fixDirTimes(destAbs: string, tree: SourceTree, rel: string): Promise<void> {
  const dirs: Array<[string, Date]> = [];
  for await (const sub of walkTree(tree, rel)) {
    if (sub.stat.isDirectory()) dirs.push([path.join(destAbs, rel === '' ? sub.rel : sub.rel.slice(rel.length + 1)), sub.stat.mtime]);
  }
  for (const [d, t] of dirs.reverse()) await fs.utimes(d, t, t).catch(() => undefined);
  const top = await fs.stat(path.join(tree.root, rel));
  await fs.utimes(destAbs, top.mtime, top.mtime);
}

/** Parses --chmod: octal only, as BuildKit accepts without the labs frontend. */
export function parseChmod(text: string): number {
  if (!/^[0-7]{3,4}$/.test(text)) throw new ArchwayError('USAGE', `invalid --chmod "${text}": expected an octal mode such as 755 or 0644`);
  return parseInt(text, 8);
}

/** Resolves `user[:group]` to numbers, names looked up in the image's /etc/passwd and /etc/group. */
export function parseChown(text: string, passwd: string | undefined, group: string | undefined): Ownership {
  const [u, g] = text.split(':', 2) as [string, string | undefined];
  const lookup = (table: string | undefined, name: string, field: 2 | 3): number | undefined => {
    for (const line of (table ?? '').split('\n')) {
      const cols = line.split(':');
      if (cols[0] === name && cols[field] !== undefined && /^\d+$/.test(cols[field] as string)) return Number(cols[field]);
    }
    return undefined;
  };
  let uid: number;
  let gidFromUser: number | undefined;
  if (/^\d+$/.test(u)) uid = Number(u);
  else {
    const found = lookup(passwd, u, 2);
    if (found === undefined) throw new ArchwayError('USAGE', `--chown: user "${u}" is not in the image's /etc/passwd`);
    uid = found;
    gidFromUser = lookup(passwd, u, 3);
  }
  let gid: number;
  if (g === undefined || g === '') gid = gidFromUser ?? uid;
  else if (/^\d+$/.test(g)) gid = Number(g);
  else {
    const found = lookup(group, g, 2);
    if (found === undefined) throw new ArchwayError('USAGE', `--chown: group "${g}" is not in the image's /etc/group`);
    gid = found;
  }
  return { uid, gid };
}
