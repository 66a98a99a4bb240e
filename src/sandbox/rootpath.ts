/**
 * Reading files of an untrusted root filesystem from the host, safely.
 *
 * A root is a stack of unpacked layer directories (bottom first, overlayfs semantics: a
 * character device 0:0 is a whiteout) or one plain directory. A path is resolved one component
 * at a time over the union with lstat only; symlinks are followed as the kernel would inside a
 * chroot (absolute targets restart at the root, `..` stops at the root), so nothing resolves
 * outside. A component is looked up in a layer only when every prefix of it in that layer is a
 * real directory, so a hostile layer's `/etc -> /host-path` is read as the link it is, never
 * followed on the host. Opaque-directory xattrs are not read (Node has no xattr API): a lookup
 * may see an entry of a lower layer that an opaque directory hides; that changes which file is
 * read, never where it is read from.
 */
import { constants, promises as fs, type Stats } from 'node:fs';
import * as path from 'node:path';
import { ArchwayError } from '../util/index.js';

const MAX_LINKS = 40;

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

/** The layer and stat of a union path given as symlink-free components, or undefined. */
async function lookup(layersTopFirst: readonly string[], comps: readonly string[]): Promise<{ layer: string; st: Stats } | undefined> {
  for (const layer of layersTopFirst) {
    let ok = true;
    for (let i = 1; i <= comps.length; i++) {
      const st = await lstatOrUndefined(path.join(layer, ...comps.slice(0, i)));
      if (st === undefined) {
        ok = false;
        break;
      }
      if (isWhiteout(st)) return undefined;
      if (i === comps.length) return { layer, st };
      if (!st.isDirectory()) return undefined; // a non-directory here hides every lower layer
    }
    if (!ok) continue;
    if (comps.length === 0) {
      const st = await lstatOrUndefined(layer);
      if (st) return { layer, st };
    }
  }
  return undefined;
}

export interface ResolvedPath {
  /** Symlink-free components inside the root. */
  components: string[];
  /** The host path of the entry in the topmost layer that has it, when it exists. */
  hostPath?: string;
  stats?: Stats;
}

/**
 * Resolves `p` (absolute inside the root, or relative to `/`) over a layer stack (bottom first).
 * The last component is followed too when it is a link (`followLast`, default true).
 */
export async function resolveInRoot(layers: readonly string[], p: string, followLast = true): Promise<ResolvedPath> {
  const top = [...layers].reverse();
  const pending = p.split('/').filter((c) => c !== '' && c !== '.');
  const cur: string[] = [];
  let links = 0;
  while (pending.length > 0) {
    const c = pending.shift() as string;
    if (c === '.' || c === '') continue;
    if (c === '..') {
      cur.pop();
      continue;
    }
    const cand = [...cur, c];
    const hit = await lookup(top, cand);
    if (hit && hit.st.isSymbolicLink() && (pending.length > 0 || followLast)) {
      if (++links > MAX_LINKS) throw new ArchwayError('UNSAFE', `too many levels of symbolic links resolving ${p} in the image`);
      const target = await fs.readlink(path.join(hit.layer, ...cand));
      const parts = target.split('/').filter((x) => x !== '' && x !== '.');
      if (target.startsWith('/')) cur.length = 0;
      pending.unshift(...parts);
      continue;
    }
    cur.push(c);
    if (!hit) {
      // missing: the rest cannot exist either, but keep the components (for creation)
      for (const rest of pending) if (rest !== '.' && rest !== '') (rest === '..' ? cur.pop() : cur.push(rest));
      return { components: cur };
    }
    if (pending.length > 0 && !hit.st.isDirectory()) return { components: [...cur, ...pending] };
  }
  const hit = await lookup(top, cur);
  if (!hit) return { components: cur };
  return { components: cur, hostPath: path.join(hit.layer, ...cur), stats: hit.st };
}

/** Reads a regular file of the root (at most maxBytes); undefined when it does not exist. */
export async function readFileInRoot(layers: readonly string[], p: string, maxBytes = 4 << 20): Promise<Buffer | undefined> {
  const r = await resolveInRoot(layers, p);
  if (!r.hostPath || !r.stats || !r.stats.isFile()) return undefined;
  const fh = await fs.open(r.hostPath, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  try {
    const st = await fh.stat();
    if (!st.isFile()) return undefined;
    const size = Math.min(st.size, maxBytes);
    const buf = Buffer.alloc(size);
    let off = 0;
    while (off < size) {
      const { bytesRead } = await fh.read(buf, off, size - off, off);
      if (bytesRead === 0) break;
      off += bytesRead;
    }
    return buf.subarray(0, off);
  } finally {
    await fh.close();
  }
}

export interface ResolvedUser {
  uid: number;
  gid: number;
  home: string;
  /** The user name when known. */
  name?: string;
}

function parseDb(text: string): string[][] {
  return text
    .split('\n')
    .filter((l) => l !== '' && !l.startsWith('#'))
    .map((l) => l.split(':'));
}

const NUMERIC = /^\d+$/;

function toId(s: string, what: string, spec: string): number {
  const n = Number(s);
  if (!Number.isSafeInteger(n) || n < 0 || n > 0xfffffffe) throw new ArchwayError('USAGE', `invalid ${what} "${s}" in user "${spec}"`);
  return n;
}

/**
 * Resolves a USER spec (name, uid, uid:gid, name:group, uid:group ...) against the root's
 * /etc/passwd and /etc/group, read with resolveInRoot (never following links out of the root).
 * Unknown names are a 'USAGE' error; a numeric uid not in passwd runs with gid 0, as Docker does.
 */
export async function resolveUser(layers: readonly string[], spec: string | undefined): Promise<ResolvedUser> {
  const s = (spec ?? '').trim();
  if (s === '' || s === 'root' || s === '0' || s === '0:0') {
    if (s === 'root' || s === '') {
      const pw = await readFileInRoot(layers, '/etc/passwd');
      const rootLine = pw ? parseDb(pw.toString('utf8')).find((f) => f[0] === 'root') : undefined;
      return { uid: 0, gid: 0, home: rootLine?.[5] || '/root', name: 'root' };
    }
    return { uid: 0, gid: 0, home: '/root' };
  }
  const idx = s.indexOf(':');
  const userPart = idx >= 0 ? s.slice(0, idx) : s;
  const groupPart = idx >= 0 ? s.slice(idx + 1) : undefined;
  if (userPart === '' || (groupPart !== undefined && (groupPart === '' || groupPart.includes(':')))) {
    throw new ArchwayError('USAGE', `invalid user "${s}" (expected user, uid, user:group or uid:gid)`);
  }
  const needPasswd = !NUMERIC.test(userPart) || groupPart === undefined;
  const passwd = needPasswd ? await readFileInRoot(layers, '/etc/passwd') : undefined;
  const users = passwd ? parseDb(passwd.toString('utf8')) : [];
  let uid: number;
  let gid: number | undefined;
  let home = '/';
  let name: string | undefined;
  if (NUMERIC.test(userPart)) {
    uid = toId(userPart, 'uid', s);
    const line = users.find((f) => f[2] === userPart || (f[2] !== undefined && NUMERIC.test(f[2]) && Number(f[2]) === uid));
    if (line) {
      name = line[0];
      if (line[3] !== undefined && NUMERIC.test(line[3])) gid = Number(line[3]);
      home = line[5] || '/';
    }
  } else {
    const line = users.find((f) => f[0] === userPart);
    if (!line || line[2] === undefined || !NUMERIC.test(line[2])) {
      throw new ArchwayError('USAGE', `unable to find user ${userPart}: no matching entries in the image's /etc/passwd`, {
        details: { user: s },
      });
    }
    name = userPart;
    uid = Number(line[2]);
    if (line[3] !== undefined && NUMERIC.test(line[3])) gid = Number(line[3]);
    home = line[5] || '/';
  }
  if (groupPart !== undefined) {
    if (NUMERIC.test(groupPart)) gid = toId(groupPart, 'gid', s);
    else {
      const group = await readFileInRoot(layers, '/etc/group');
      const line = group ? parseDb(group.toString('utf8')).find((f) => f[0] === groupPart) : undefined;
      if (!line || line[2] === undefined || !NUMERIC.test(line[2])) {
        throw new ArchwayError('USAGE', `unable to find group ${groupPart}: no matching entries in the image's /etc/group`, {
          details: { user: s },
        });
      }
      gid = Number(line[2]);
    }
  }
  const out: ResolvedUser = { uid, gid: gid ?? 0, home };
  if (name !== undefined) out.name = name;
  return out;
}
