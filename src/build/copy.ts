import { createHash } from 'node:crypto';
import { promises as fs, constants as fsc, type Stats } from 'node:fs';
import * as path from 'node:path';
import { ArchwayError, isArchwayError, isErrnoException } from '../util/index.js';
import { cleanSourcePath, digestSources, walkTree, type SourceMatch, type SourceTree } from './context.js';
import { hasWildcard, matchComponent } from './pathmatch.js';

export interface Ownership {
  uid: number;
  gid: number;
}

/**
 * One thing a COPY reads. `rel` is where it is read in the tree, after following a top-level
 * symlink; `named` (default `rel`) is the path the source matched, whose base name it is copied under.
 */
export interface CopySourceEntry extends SourceMatch {
  named?: string;
  /**
   * COPY --parents: the path kept under the destination (from where `/./` was, else from the
   * root), and where each of its directories really is in the tree, to copy their metadata.
   */
  kept?: { path: string; dirs: string[] };
}

export interface CopyPlan {
  tree: SourceTree;
  matches: CopySourceEntry[];
  /** Absolute destination inside the image, as written (a trailing '/' means a directory). */
  dest: string;
  /** Whether the destination already is a directory in the base image. */
  destIsDir: boolean;
  chown?: Ownership;
  /** From --chmod, applied to the files and directories copied. */
  chmod?: ChmodRule;
  /** Extra per-entry exclusion (COPY --exclude). */
  excluded?: (rel: string) => boolean;
}

/**
 * Lays the result of a COPY out under `staging` as it will appear in the image (`staging/app/x`
 * for `COPY x /app/`), independent of the base image's contents, so the layer made from it is the
 * same on every platform. Docker's rules: a directory source copies its contents; several
 * sources, or a destination ending in '/' or being a directory, put each source inside it; with
 * --parents each source goes to its kept path inside the destination.
 */
export async function stageCopy(plan: CopyPlan, staging: string): Promise<void> {
  const owner = plan.chown ?? { uid: 0, gid: 0 };
  const parents = plan.matches.some((m) => m.kept);
  const intoDir = plan.dest.endsWith('/') || plan.destIsDir || plan.matches.length > 1 || parents;
  if (plan.matches.length > 1 && !intoDir) {
    throw new ArchwayError('USAGE', `when copying several sources the destination must be a directory and end with a /: "${plan.dest}"`);
  }
  const destAbs = safeJoin(staging, plan.dest);
  const made = new Set<string>();
  const mkdirs = async (dir: string): Promise<void> => {
    const rel = path.relative(staging, dir);
    if (rel === '' || made.has(dir)) return;
    await mkdirs(path.dirname(dir));
    if (await ensureDir(dir, 0o755)) await fs.lchown(dir, owner.uid, owner.gid);
    made.add(dir);
  };
  // A non-directory written where a directory was: what `made` knew below it is gone.
  const replaced = (to: string): void => {
    if (!made.has(to)) return;
    for (const d of made) if (d === to || d.startsWith(to + path.sep)) made.delete(d);
  };
  // Directories made for --parents take the mode and time of the source directory they stand
  // for, as BuildKit's copy does; times are set last, or writing inside them would change them.
  const keptDirTimes = new Map<string, Date>();
  const mkKeptDirs = async (kept: { path: string; dirs: string[] }): Promise<void> => {
    await mkdirs(destAbs);
    const parts = kept.path.split('/').filter(Boolean).slice(0, -1);
    for (let i = 1; i <= parts.length; i++) {
      const to = path.join(destAbs, ...parts.slice(0, i));
      if (keptDirTimes.has(to)) continue;
      const from = await fs.lstat(path.join(plan.tree.root, kept.dirs[i - 1] ?? ''));
      await ensureDir(to, 0o755);
      await applyMeta(to, from.isDirectory() ? from.mode : 0o755, owner, plan.chmod, from.mtime, true);
      keptDirTimes.set(to, from.mtime);
      made.add(to);
    }
  };
  for (const m of plan.matches) {
    const srcAbs = path.join(plan.tree.root, m.rel);
    const named = m.named ?? m.rel;
    const shownAs = m.kept ? m.kept.path : named;
    if (m.kept) await mkKeptDirs(m.kept);
    if (m.stat.isDirectory()) {
      const into = m.kept ? path.join(destAbs, m.kept.path) : destAbs;
      await mkdirs(into);
      await applyMeta(into, m.stat.mode, owner, plan.chmod, m.stat.mtime, true);
      for await (const sub of walkTree(plan.tree, m.rel)) {
        const inner = m.rel === '' ? sub.rel : sub.rel.slice(m.rel.length + 1);
        if (plan.excluded?.(shownAs === '' ? inner : `${shownAs}/${inner}`)) continue;
        const to = path.join(into, inner);
        await mkdirs(path.dirname(to));
        if (!sub.stat.isDirectory()) replaced(to);
        await copyEntry(path.join(plan.tree.root, sub.rel), sub, to, owner, plan.chmod);
      }
      await fixDirTimes(into, plan.tree, m.rel);
    } else {
      if (plan.excluded?.(shownAs)) continue;
      const to = m.kept ? path.join(destAbs, m.kept.path) : intoDir ? path.join(destAbs, path.posix.basename(named)) : destAbs;
      await mkdirs(path.dirname(to));
      replaced(to);
      await copyEntry(srcAbs, m, to, owner, plan.chmod);
    }
  }
  for (const [dir, t] of [...keptDirTimes].reverse()) await fs.utimes(dir, t, t);
}

/** Where symlinks are resolved: the build context refuses links out of it; a root filesystem resolves them as a chroot would. */
export type LinkScope = 'context' | 'rootfs';

export interface ExpandCopyOptions {
  /** COPY --parents: keep each source's path (from the root, or from a `/./` in it) under the destination. */
  parents: boolean;
  scope: LinkScope;
}

/**
 * Expands one COPY/ADD source to what it copies, with BuildKit's rules: wildcards per component;
 * a top-level match that is a symlink is followed (inside the tree) and copied under its own name,
 * while links inside a copied directory stay links. With --parents the matches are copied as
 * they are (links too) and each keeps its path below the pivot: the tree's root, or the directory
 * before a `/./` in the source (`x/./y/a.txt` keeps `y/a.txt`); `**` there matches any depth.
 */
export async function expandCopySource(tree: SourceTree, source: string, opts: ExpandCopyOptions): Promise<CopySourceEntry[]> {
  const notFound = (pattern: string): ArchwayError =>
    new ArchwayError('NOT_FOUND', `${hasWildcard(pattern) ? 'no files match' : 'file not found:'} "${source}" in the ${tree.label}${hasWildcard(pattern) ? '' : ' (or it is excluded by .dockerignore)'}`, {
      details: { source, tree: tree.label },
    });
  const root: Cursor = { named: '', real: '', dirs: [] };
  if (!opts.parents) {
    const clean = cleanSourcePath(source);
    const found = await matchInTree(tree, root, clean.split('/').filter(Boolean), opts.scope, false, clean);
    if (found.length === 0) throw notFound(clean);
    const out: CopySourceEntry[] = [];
    for (const m of found) {
      const r = await resolveInTree(tree, m.rel, { scope: opts.scope, followLast: true, named: m.named });
      out.push({ rel: r.rel, stat: r.stat, named: m.named });
    }
    return out;
  }
  const cut = source.indexOf('/./');
  const pivotPart = cleanSourcePath(cut < 0 ? '' : source.slice(0, cut));
  const pattern = cleanSourcePath(cut < 0 ? source : source.slice(cut + 3));
  let pivots = [root];
  if (pivotPart !== '') {
    const found = await matchInTree(tree, root, pivotPart.split('/'), opts.scope, false, source);
    if (found.length === 0) throw notFound(pivotPart);
    pivots = [];
    for (const m of found) {
      const r = await resolveInTree(tree, m.rel, { scope: opts.scope, followLast: true, named: m.named });
      if (!r.stat.isDirectory()) {
        throw new ArchwayError('USAGE', `"${source}": "${m.named}", before "/./", is not a directory in the ${tree.label}`, { details: { source, tree: tree.label } });
      }
      pivots.push({ named: '', real: r.rel, dirs: [] });
    }
  }
  const out: CopySourceEntry[] = [];
  for (const pivot of pivots) {
    for (const m of await matchInTree(tree, pivot, pattern.split('/').filter(Boolean), opts.scope, true, source)) {
      out.push({ rel: m.rel, stat: m.stat, named: m.named, kept: { path: m.named, dirs: m.dirs } });
    }
  }
  if (out.length === 0) throw notFound(pattern);
  return out;
}

/** A directory reached while matching: the path as matched, where it really is, and where each directory on the way really is. */
interface Cursor {
  named: string;
  real: string;
  dirs: string[];
}

/**
 * Matches a source's components below `from`, reading only inside the tree: directory links on
 * the way are resolved with resolveInTree (a literal one that leaves the context is an error, one
 * a wildcard reached is skipped). With `deep`, a `**` component matches any number of directories.
 * The matches themselves are not followed: `rel` is the real path of the link or file matched.
 */
async function matchInTree(tree: SourceTree, from: Cursor, parts: string[], scope: LinkScope, deep: boolean, source: string): Promise<Array<SourceMatch & { named: string; dirs: string[] }>> {
  const join = (a: string, b: string): string => (a === '' ? b : `${a}/${b}`);
  let cursors = [from];
  const out: Array<SourceMatch & { named: string; dirs: string[] }> = [];
  const seen = new Set<string>();
  const emit = async (c: Cursor, name: string | undefined): Promise<void> => {
    const rel = name === undefined ? c.real : join(c.real, name);
    const named = name === undefined ? c.named : join(c.named, name);
    if (seen.has(named)) return;
    let stat: Stats;
    try {
      stat = await fs.lstat(path.join(tree.root, rel));
    } catch (e) {
      if (isErrnoException(e, 'ENOENT') || isErrnoException(e, 'ENOTDIR')) return;
      throw e;
    }
    if (rel !== '' && tree.ignored(rel, stat.isDirectory())) return;
    seen.add(named);
    out.push({ rel, stat, named, dirs: name === undefined ? c.dirs.slice(0, -1) : c.dirs });
  };
  for (let i = 0; i < parts.length; i++) {
    const part = parts[i] as string;
    const last = i === parts.length - 1;
    if (deep && part === '**') {
      const next: Cursor[] = [];
      for (const c of cursors) {
        next.push(c);
        for await (const sub of walkTree(tree, c.real)) {
          if (!sub.stat.isDirectory()) continue;
          const inner = (c.real === '' ? sub.rel : sub.rel.slice(c.real.length + 1)).split('/');
          next.push({ named: join(c.named, inner.join('/')), real: sub.rel, dirs: [...c.dirs, ...inner.map((_, k) => join(c.real, inner.slice(0, k + 1).join('/')))] });
        }
      }
      cursors = next;
      if (last) {
        // A final `**` matches directories, each copying its whole tree: a descendant is not listed again.
        const names = cursors.map((c) => c.named);
        for (const c of cursors) if (!names.some((o) => o !== c.named && (o === '' || c.named.startsWith(`${o}/`)))) await emit(c, undefined);
      }
      continue;
    }
    const next: Cursor[] = [];
    for (const c of cursors) {
      let names: string[];
      if (!hasWildcard(part)) names = [part];
      else {
        try {
          names = (await fs.readdir(path.join(tree.root, c.real))).sort().filter((n) => matchComponent(part, n));
        } catch {
          continue;
        }
      }
      for (const name of names) {
        if (last) {
          await emit(c, name);
          continue;
        }
        let dir: { rel: string; stat: Stats };
        try {
          dir = await resolveInTree(tree, join(c.real, name), { scope, followLast: true, named: source });
        } catch (e) {
          // Not there, or a link a wildcard ran into that leads nowhere allowed: no match.
          if (hasWildcard(part) || isArchwayError(e, 'NOT_FOUND')) continue;
          throw e;
        }
        if (dir.stat.isDirectory()) next.push({ named: join(c.named, name), real: dir.rel, dirs: [...c.dirs, dir.rel] });
      }
    }
    cursors = next;
  }
  if (parts.length === 0) for (const c of cursors) await emit(c, undefined);
  return out;
}

/**
 * What a COPY reads, as a digest for its cache key: the files' contents and modes, what a followed
 * link led to, and where each entry goes (its name, or with --parents its kept path).
 */
export async function digestCopySources(tree: SourceTree, entries: readonly CopySourceEntry[]): Promise<string> {
  const h = createHash('sha256');
  for (const e of entries) h.update(`${e.named ?? e.rel}\0${e.rel}\0${e.kept ? `parents:${e.kept.path}` : ''}\0`);
  h.update(await digestSources(tree, entries));
  return h.digest('hex');
}

/**
 * Resolves `rel` inside the tree one component at a time with lstat, never letting the kernel
 * follow a link. In a root filesystem an absolute target means the root and `..` stops at it, as
 * in a chroot. In the build context a link that leads out of it (absolute, or `..` above the
 * root) is refused: following it would read the host's files.
 */
export async function resolveInTree(tree: SourceTree, rel: string, opts: { scope: LinkScope; followLast: boolean; named: string }): Promise<{ rel: string; stat: Stats }> {
  const pending = rel.split('/').filter((c) => c !== '' && c !== '.');
  const done: string[] = [];
  let lastLink: { at: string; target: string } | undefined;
  let hops = 0;
  while (pending.length > 0) {
    const c = pending.shift() as string;
    if (c === '..') {
      if (done.length === 0 && opts.scope === 'context') throw escapes(tree, opts.named, lastLink);
      done.pop();
      continue;
    }
    let st: Stats;
    try {
      st = await fs.lstat(path.join(tree.root, ...done, c));
    } catch (e) {
      if (isErrnoException(e, 'ENOENT') || isErrnoException(e, 'ENOTDIR')) throw missing(tree, opts.named, lastLink);
      throw e;
    }
    if (st.isSymbolicLink() && (pending.length > 0 || opts.followLast)) {
      const at = [...done, c].join('/');
      if (++hops > 40) {
        throw new ArchwayError('UNSAFE', `"${opts.named}": too many levels of symbolic links (a loop?) at "${at}" in the ${tree.label}`, { details: { source: opts.named, tree: tree.label } });
      }
      const target = await fs.readlink(path.join(tree.root, at));
      lastLink = { at, target };
      if (target.startsWith('/')) {
        if (opts.scope === 'context') throw escapes(tree, opts.named, lastLink);
        done.length = 0;
      }
      pending.unshift(...target.split('/').filter((x) => x !== '' && x !== '.'));
      continue;
    }
    if (pending.length > 0 && !st.isDirectory()) throw missing(tree, opts.named, lastLink);
    done.push(c);
  }
  const out = done.join('/');
  const stat = await fs.lstat(path.join(tree.root, out));
  if (lastLink && out !== '' && tree.ignored(out, stat.isDirectory())) {
    throw new ArchwayError('NOT_FOUND', `"${opts.named}" is a symbolic link to "${out}", which is excluded by .dockerignore`, { details: { source: opts.named, tree: tree.label } });
  }
  return { rel: out, stat };
}

/** `"a.txt"`, or `"dir/a.txt": "dir"` when the link is on the way. */
function linkShown(named: string, link: { at: string } | undefined): string {
  return link && link.at !== named ? `"${named}": "${link.at}"` : `"${named}"`;
}

function escapes(tree: SourceTree, named: string, link: { at: string; target: string } | undefined): ArchwayError {
  return new ArchwayError('UNSAFE', `${linkShown(named, link)} is a symbolic link to "${link?.target ?? ''}", which points outside the ${tree.label}; archway does not follow it`, {
    details: { source: named, link: link?.at, target: link?.target, tree: tree.label },
    hint: 'archway follows links only inside the build context: put the file itself in the context, or make the link relative and pointing inside it',
  });
}

function missing(tree: SourceTree, named: string, link: { at: string; target: string } | undefined): ArchwayError {
  if (!link) return new ArchwayError('NOT_FOUND', `file not found: "${named}" in the ${tree.label}`, { details: { source: named, tree: tree.label } });
  return new ArchwayError('NOT_FOUND', `${linkShown(named, link)} is a symbolic link to "${link.target}", which does not exist in the ${tree.label}`, {
    details: { source: named, link: link.at, target: link.target, tree: tree.label },
  });
}

/**
 * Makes `dir` a real directory of the staging tree and says whether it made it. Whatever else is
 * there (a file or a link an earlier source put there) is replaced, never followed: a link
 * followed here would write on the host.
 */
async function ensureDir(dir: string, mode: number): Promise<boolean> {
  try {
    await fs.mkdir(dir, { mode });
    return true;
  } catch (e) {
    if (!isErrnoException(e, 'EEXIST')) throw e;
  }
  if ((await fs.lstat(dir)).isDirectory()) return false;
  await fs.rm(dir, { force: true });
  await fs.mkdir(dir, { mode });
  return true;
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

async function copyEntry(src: string, m: SourceMatch, to: string, owner: Ownership, chmod: ChmodRule | undefined): Promise<void> {
  const st = m.stat;
  if (st.isDirectory()) {
    await ensureDir(to, 0o755);
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

async function applyMeta(p: string, mode: number, owner: Ownership, chmod: ChmodRule | undefined, mtime: Date, isDir: boolean): Promise<void> {
  await fs.lchown(p, owner.uid, owner.gid);
  await fs.chmod(p, chmod ? chmod(mode, isDir) : mode & 0o7777);
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

/** A --chmod: the mode a copied file or directory gets, from the mode it has (a symbolic --chmod depends on it). */
export type ChmodRule = (mode: number, isDir: boolean) => number;

/** The bits each class of a symbolic mode stands for, special bits included (s for u and g, t for o). */
const CLASS_BITS: Record<string, number> = { u: 0o4700, g: 0o2070, o: 0o1007, a: 0o7777 };

/**
 * Parses --chmod: octal (755, 0644) or symbolic as chmod(1) writes it (u+x, go-w, a=rX, g=u),
 * which Dockerfile 1.14 made part of the stable syntax. A missing class means all of them; the
 * umask plays no part, so a build does not depend on who runs it.
 */
export function parseChmod(text: string): ChmodRule {
  if (/^[0-7]{3,4}$/.test(text)) {
    const mode = parseInt(text, 8);
    return () => mode;
  }
  const invalid = (): ArchwayError => new ArchwayError('USAGE', `invalid --chmod "${text}": expected an octal mode such as 755 or 0644, or a symbolic one such as u+x or a=rX,u+w`);
  const steps: Array<(mode: number, isDir: boolean) => number> = [];
  for (const clause of text.split(',')) {
    const m = /^([ugoa]*)((?:[-+=](?:[rwxXst]*|[ugo]))+)$/.exec(clause);
    if (!m) throw invalid();
    const who = [...(m[1] || 'a')].reduce((bits, c) => bits | (CLASS_BITS[c] ?? 0), 0);
    for (const action of (m[2] ?? '').match(/[-+=][^-+=]*/g) ?? []) {
      const op = action[0];
      const perms = action.slice(1);
      const bitsFor = (mode: number, isDir: boolean): number => {
        if (/^[ugo]$/.test(perms)) {
          // g=u: the rwx of one class given to the classes named.
          const rwx = (mode >> ({ u: 6, g: 3, o: 0 }[perms] ?? 0)) & 7;
          return ((rwx << 6) | (rwx << 3) | rwx) & who & 0o777;
        }
        let bits = 0;
        for (const c of perms) {
          if (c === 'r') bits |= 0o444;
          else if (c === 'w') bits |= 0o222;
          else if (c === 'x' || (c === 'X' && (isDir || (mode & 0o111) !== 0))) bits |= 0o111;
          else if (c === 's') bits |= 0o6000;
          else if (c === 't') bits |= 0o1000;
        }
        return bits & who;
      };
      steps.push((mode, isDir) => {
        const bits = bitsFor(mode, isDir);
        return op === '+' ? mode | bits : op === '-' ? mode & ~bits : (mode & ~who) | bits;
      });
    }
  }
  return (mode, isDir) => steps.reduce((m, step) => step(m, isDir), mode & 0o7777);
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
