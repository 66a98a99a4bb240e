/**
 * Rootless runs: a user namespace in which the caller is root.
 *
 * As root nothing is needed. As another user the sandbox adds `--user --map-root-user` to its
 * unshare call: the caller's uid and gid become 0 inside, which is enough for the mount, pid, uts,
 * ipc and network namespaces, overlayfs (Linux 5.11 and newer), proc, tmpfs and devpts. When
 * /etc/subuid and /etc/subgid give the caller a range of subordinate ids and newuidmap and
 * newgidmap (Debian package `uidmap`) are installed, that range is mapped to ids 1..N as well
 * (`--map-users`/`--map-groups`), so a command can run as another user (`-u nobody`). Without a
 * range only root exists inside, and asking for another user is a clear error.
 *
 * When the kernel refuses unprivileged user namespaces the error names the setting that refuses.
 */
import { spawn } from 'node:child_process';
import { promises as fs, constants as fsConstants } from 'node:fs';
import * as os from 'node:os';
import { ArchwayError } from '../util/index.js';

export interface IdRange {
  start: number;
  count: number;
}

export interface UserNamespacePlan {
  /** False when archway runs as root: no user namespace. */
  rootless: boolean;
  /** Arguments for unshare that create and map the user namespace (empty as root). */
  unshareArgs: string[];
  /** Highest uid and gid usable inside (0 with only root mapped). Infinity as root. */
  maxUid: number;
  maxGid: number;
  /** The subordinate ranges in use, when mapped. */
  subuid?: IdRange;
  subgid?: IdRange;
  /** Why no subordinate range is mapped (shown in errors), when rootless without one. */
  noRangeReason?: string;
}

function probe(args: string[]): Promise<{ ok: boolean; err: string }> {
  return new Promise((resolve) => {
    const child = spawn('unshare', [...args, '--', 'true'], { stdio: ['ignore', 'ignore', 'pipe'] });
    let err = '';
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    child.on('error', (e) => resolve({ ok: false, err: e.message }));
    child.on('close', (code) => resolve({ ok: code === 0, err: err.trim() }));
  });
}

async function readSysctl(p: string): Promise<string | undefined> {
  try {
    return (await fs.readFile(p, 'utf8')).trim();
  } catch {
    return undefined;
  }
}

/** Names the kernel setting that refuses unprivileged user namespaces, when one does. */
export async function userNamespaceBlocker(): Promise<string | undefined> {
  if ((await readSysctl('/proc/sys/kernel/unprivileged_userns_clone')) === '0') return 'kernel.unprivileged_userns_clone = 0';
  if ((await readSysctl('/proc/sys/user/max_user_namespaces')) === '0') return 'user.max_user_namespaces = 0';
  if ((await readSysctl('/proc/sys/kernel/apparmor_restrict_unprivileged_userns')) === '1') return 'kernel.apparmor_restrict_unprivileged_userns = 1 (AppArmor)';
  return undefined;
}

/** The caller's first range in an /etc/subuid-style file (by name or by number), or undefined. */
export function parseSubIds(text: string, name: string | undefined, id: number): IdRange | undefined {
  for (const line of text.split('\n')) {
    const [who, start, count] = line.trim().split(':');
    if (who === undefined || start === undefined || count === undefined) continue;
    if (who !== String(id) && (name === undefined || who !== name)) continue;
    const s = Number(start);
    const c = Number(count);
    if (Number.isSafeInteger(s) && Number.isSafeInteger(c) && s > 0 && c > 0) return { start: s, count: c };
  }
  return undefined;
}

async function executable(p: string): Promise<boolean> {
  try {
    await fs.access(p, fsConstants.X_OK);
    return true;
  } catch {
    return false;
  }
}

async function findTool(name: string): Promise<string | undefined> {
  for (const d of (process.env['PATH'] || '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin').split(':').concat(['/usr/bin', '/usr/sbin'])) {
    if (d && (await executable(`${d}/${name}`))) return `${d}/${name}`;
  }
  return undefined;
}

let cached: Promise<UserNamespacePlan> | undefined;

/**
 * How this process gets root inside the sandbox: as root, directly; otherwise through a user
 * namespace (probed once per process). Throws SANDBOX (exit 7) naming what is missing.
 */
export function userNamespacePlan(): Promise<UserNamespacePlan> {
  cached ??= makePlan();
  cached.catch(() => (cached = undefined));
  return cached;
}

async function makePlan(): Promise<UserNamespacePlan> {
  const uid = typeof process.getuid === 'function' ? process.getuid() : 0;
  const gid = typeof process.getgid === 'function' ? process.getgid() : 0;
  if (uid === 0) return { rootless: false, unshareArgs: [], maxUid: Infinity, maxGid: Infinity };
  const base = ['--user', '--map-root-user'];
  const first = await probe(base);
  if (!first.ok) {
    const blocker = await userNamespacePlanBlocker(first.err);
    throw new ArchwayError('SANDBOX', `running as a non-root user (uid ${uid}) needs a user namespace, and ${blocker}`, {
      hint: 'run archway as root, or allow unprivileged user namespaces (see docs/rootless.md)',
      details: { reason: 'userns' },
    });
  }
  let name: string | undefined;
  try {
    name = os.userInfo().username;
  } catch {
    name = undefined;
  }
  const subuid = parseSubIds(await fs.readFile('/etc/subuid', 'utf8').catch(() => ''), name, uid);
  let groupName: string | undefined;
  const groupLine = (await fs.readFile('/etc/group', 'utf8').catch(() => '')).split('\n').find((l) => l.split(':')[2] === String(gid));
  if (groupLine) groupName = groupLine.split(':')[0];
  const subgid = parseSubIds(await fs.readFile('/etc/subgid', 'utf8').catch(() => ''), name, uid) ?? parseSubIds(await fs.readFile('/etc/subgid', 'utf8').catch(() => ''), groupName, gid);
  const who = name ?? String(uid);
  const only = { rootless: true, unshareArgs: base, maxUid: 0, maxGid: 0 };
  if (!subuid || !subgid) {
    return { ...only, noRangeReason: `/etc/subuid and /etc/subgid give ${who} no range of subordinate ids` };
  }
  if (!(await findTool('newuidmap')) || !(await findTool('newgidmap'))) {
    return { ...only, noRangeReason: 'newuidmap and newgidmap are not installed (Debian package "uidmap")' };
  }
  const mapped = [...base, `--map-users=${subuid.start},1,${subuid.count}`, `--map-groups=${subgid.start},1,${subgid.count}`];
  const second = await probe(mapped);
  if (!second.ok) {
    return { ...only, noRangeReason: `mapping the subordinate ids of ${who} failed (${second.err.split('\n')[0] ?? ''})` };
  }
  return { rootless: true, unshareArgs: mapped, maxUid: subuid.count, maxGid: subgid.count, subuid, subgid };
}

async function userNamespacePlanBlocker(unshareError: string): Promise<string> {
  if (/ENOENT|not found/i.test(unshareError) && !(await findTool('unshare'))) return 'unshare (Debian package "util-linux") is not installed';
  const b = await userNamespaceBlocker();
  if (b) return `the kernel refuses unprivileged user namespaces (${b})`;
  return `creating one failed: ${unshareError.split('\n')[0] || 'unknown error'}`;
}
