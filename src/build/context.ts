import { createHash } from 'node:crypto';
import { createReadStream, promises as fs, type Stats } from 'node:fs';
import * as path from 'node:path';
import { ArchwayError, isErrnoException } from '../util/index.js';
import { hasWildcard, matchComponent } from './pathmatch.js';

/** A file tree COPY reads from: the build context, or a stage's root filesystem. */
export interface SourceTree {
  /** For messages: "build context", "stage builder". */
  readonly label: string;
  readonly root: string;
  /** Whether a context-relative path is excluded (.dockerignore); never for stage trees. */
  ignored(rel: string, isDir: boolean): boolean;
  /** Whether `ignored` can exclude anything (the context has ignore rules). */
  readonly filtered?: boolean;
}

export interface SourceMatch {
  /** Path relative to the tree's root, with '/' separators, no leading slash; '' is the root. */
  rel: string;
  stat: Stats;
}

/** Cleans a source path the way BuildKit does: rooted at the tree, `..` cannot climb out. */
export function cleanSourcePath(p: string): string {
  const parts: string[] = [];
  for (const c of p.split('/')) {
    if (c === '' || c === '.') continue;
    if (c === '..') parts.pop();
    else parts.push(c);
  }
  return parts.join('/');
}

/**
 * Looks a path up inside `root` without ever leaving it: each component is checked with lstat,
 * and symlinks are resolved against `root` (an absolute target means root-relative), at most 40
 * hops, as a chroot would. Returns the host path, or undefined when it does not exist.
 */
export async function resolveInRoot(root: string, rel: string, opts: { followLast?: boolean } = {}): Promise<string | undefined> {
  const pending = cleanSourcePath(rel).split('/').filter(Boolean);
  const done: string[] = [];
  let hops = 0;
  while (pending.length > 0) {
    const c = pending.shift() as string;
    if (c === '..') {
      done.pop();
      continue;
    }
    const host = path.join(root, ...done, c);
    let st: Stats;
    try {
      st = await fs.lstat(host);
    } catch (e) {
      if (isErrnoException(e, 'ENOENT') || isErrnoException(e, 'ENOTDIR')) return undefined;
      throw e;
    }
    if (st.isSymbolicLink() && (pending.length > 0 || opts.followLast)) {
      if (++hops > 40) throw new ArchwayError('UNSAFE', `too many levels of symbolic links resolving /${rel}`);
      const target = await fs.readlink(host);
      const parts = target.split('/').filter((x) => x !== '' && x !== '.');
      if (target.startsWith('/')) done.length = 0;
      pending.unshift(...parts);
      continue;
    }
    done.push(c);
  }
  return path.join(root, ...done);
}

/**
 * Expands one COPY/ADD source (with Go-style wildcards per component) to the paths it names.
 * A literal path that does not exist, or a pattern that matches nothing, is an error that names
 * the source and where it was looked for.
 */
export async function expandSource(tree: SourceTree, source: string): Promise<SourceMatch[]> {
  const clean = cleanSourcePath(source);
  const parts = clean === '' ? [] : clean.split('/');
  let current: string[] = [''];
  for (const part of parts) {
    const next: string[] = [];
    for (const base of current) {
      if (!hasWildcard(part)) {
        next.push(base ? `${base}/${part}` : part);
        continue;
      }
      let names: string[];
      try {
        names = await fs.readdir(path.join(tree.root, base));
      } catch {
        continue;
      }
      for (const n of names.sort()) if (matchComponent(part, n)) next.push(base ? `${base}/${n}` : n);
    }
    current = next;
  }
  const out: SourceMatch[] = [];
  for (const rel of current) {
    let stat: Stats;
    try {
      stat = await fs.lstat(path.join(tree.root, rel));
    } catch {
      continue;
    }
    if (rel !== '' && tree.ignored(rel, stat.isDirectory())) continue;
    out.push({ rel, stat });
  }
  if (out.length === 0) {
    throw new ArchwayError('NOT_FOUND', `${hasWildcard(clean) ? 'no files match' : 'file not found:'} "${source}" in the ${tree.label}${hasWildcard(clean) ? '' : ' (or it is excluded by .dockerignore)'}`, {
      details: { source, tree: tree.label },
    });
  }
  return out;
}

/** Every path under a matched directory, depth first and sorted, with ignored paths left out. */
export async function* walkTree(tree: SourceTree, relDir: string): AsyncGenerator<SourceMatch> {
  const names = (await fs.readdir(path.join(tree.root, relDir))).sort();
  for (const n of names) {
    const rel = relDir ? `${relDir}/${n}` : n;
    const stat = await fs.lstat(path.join(tree.root, rel));
    if (tree.ignored(rel, stat.isDirectory())) {
      // An excluded directory may still hold re-included files (`!dir/keep`); look inside.
      if (!stat.isDirectory()) continue;
    }
    if (!tree.ignored(rel, stat.isDirectory())) yield { rel, stat };
    if (stat.isDirectory()) yield* walkTree(tree, rel);
  }
}

/**
 * A content digest of what a COPY reads: paths, types, modes, link targets and file contents.
 * Timestamps are left out so a touched but unchanged file does not invalidate the cache.
 */
export async function digestSources(tree: SourceTree, matches: readonly SourceMatch[]): Promise<string> {
  const h = createHash('sha256');
  const add = async (m: SourceMatch): Promise<void> => {
    const abs = path.join(tree.root, m.rel);
    h.update(`${m.rel}\0${m.stat.mode}\0`);
    if (m.stat.isSymbolicLink()) h.update(`L${await fs.readlink(abs)}\0`);
    else if (m.stat.isFile()) {
      h.update(`F${m.stat.size}\0`);
      for await (const chunk of createReadStream(abs)) h.update(chunk as Buffer);
    }
  };
  for (const m of matches) {
    await add(m);
    if (m.stat.isDirectory()) for await (const sub of walkTree(tree, m.rel)) await add(sub);
  }
  return h.digest('hex');
}
