/**
 * runInSandbox: runs one command inside a root filesystem, daemonless and fast.
 *
 * How: `unshare --mount --pid --uts --ipc [--net] --fork --kill-child --propagation private`
 * runs the HOST's bash (or /bin/sh) with a fixed script (SANDBOX_SCRIPT below); every path and value is a
 * positional argument, never interpolated. Inside the new mount namespace the script mounts the
 * overlay (layers read-only, upper kept or temporary), checks the image's /proc, /dev, /sys,
 * /dev/null are not links, mounts proc, a tmpfs /dev with copies of the host's null, zero,
 * full, random, urandom and tty nodes, devpts, /dev/shm, sysfs read-only, bind-mounts generated
 * /etc/hosts, /etc/resolv.conf and /etc/hostname over the image's (only when /etc and the file are
 * not links: a hostile `/etc -> /host` link is never followed), adds the caller's binds, then
 * `exec`s `setpriv --bounding-set (Docker's default capabilities)` → `env -i ENV` →
 * `unshare --root=ROOT --wd=CWD -S UID -G GID -- argv`, so the command is pid 1 of its pid
 * namespace with only fds 0–2 open.
 *
 * Cleanup: the mount namespace is private and owned by the sandbox's processes; when they exit
 * (normally, by abort — archway SIGKILLs unshare, whose --kill-child SIGKILLs the namespace's
 * pid 1, which takes every process of the pid namespace with it — or because archway itself
 * crashed) the kernel drops every mount with the namespace. Nothing mounted is ever visible on
 * the host, so there is nothing to unmount after a crash; only the temporary directories (an empty
 * mountpoint and a thrown-away upper dir in $TMPDIR/PID.HEX.archway-sandbox, a copied root in
 * PID.HEX.archway-rootfs) may remain, and the next run removes those of dead processes.
 *
 * Root filesystem drivers (SandboxOptions.rootfsDriver, default from ARCHWAY_ROOTFS_DRIVER or
 * config.toml, see tree.ts): 'overlay' stacks the snapshots with overlayfs; 'copy' merges them into
 * a fresh directory (reflink or copy) that is removed after the run; 'auto' tries overlayfs and,
 * when the kernel refuses the mount, copies (and keeps copying for the rest of the process).
 *
 * Rootless: as a non-root user the namespaces are created inside a user namespace in which the
 * caller is root (userns.ts); device nodes are then bind-mounted from the host's /dev instead of
 * copied, and the hostname is set with sethostname(2) (the `hostname` tool).
 *
 * Mount stubs: files and directories created only to be mount points (/proc, /dev, /sys, /etc,
 * /etc/hosts ... when the image lacks them, bind targets) are logged and removed from the upper
 * (or writable rootfs) after the run, as BuildKit does, so they do not end up in a layer.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { promises as fs, constants as fsConstants } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { abortError, ArchwayError } from '../util/index.js';
import { hostPlatform, nativelyRunnable, normalizePlatform, platformMatches, type Platform } from '../oci/index.js';
import { assertCanRun } from './binfmt.js';
import { resolveInRoot, resolveUser, type ResolvedUser } from './rootpath.js';
import {
  isOverlayFailure,
  mergeLayers,
  noteOverlayUnavailable,
  overlayUnavailable,
  removeTree,
  rootfsDriverSetting,
  makeTempDir,
  sweepStaleTemps,
  type RootfsDriver,
} from './tree.js';
import { userNamespacePlan, type UserNamespacePlan } from './userns.js';

export interface SandboxBind {
  /** Host path (file or directory). */
  source: string;
  /** Absolute path inside the sandbox; no component of it may be a symlink in the image. */
  target: string;
  readonly: boolean;
}

export interface SandboxOptions {
  /** Lower dirs, bottom first: unpacked snapshots, never modified. */
  layers?: string[];
  /** Alternative to layers: a writable directory used as the root as is (changes stay in it). */
  rootfs?: string;
  /** With layers: keep the overlay's upper here (an existing, empty-or-not directory). Needs overlayfs. */
  upperDir?: string;
  /** With layers: how the root is made (default: rootfsDriverSetting(), 'auto' unless configured). */
  rootfsDriver?: RootfsDriver;
  /** Where a copied root goes (default: the OS's temp dir); best on the snapshots' filesystem. */
  scratchDir?: string;
  argv: string[];
  /** KEY=VALUE entries; PATH and HOME get Docker's defaults when absent. */
  env: string[];
  cwd?: string;
  /** name, uid, uid:gid, name:group (looked up in the root's /etc/passwd and /etc/group). */
  user?: string;
  hostname?: string;
  network: 'none' | 'host';
  binds?: SandboxBind[];
  stdio: 'inherit' | 'pipe';
  /** With stdio 'inherit': the command reads this process's stdin (docker run -i), or /dev/null. */
  stdin?: 'inherit' | 'ignore';
  onOutput?: (chunk: Buffer, stream: 'stdout' | 'stderr') => void;
  platform?: Platform;
  signal?: AbortSignal;
  /** Called once the command's process exists, with a way to send it signals (archway run forwards its own). */
  onStart?: (control: SandboxControl) => void;
}

export interface SandboxControl {
  /** Sends `sig` to the command (pid 1 of its namespace); false when it is gone. */
  kill(sig: NodeJS.Signals): boolean;
}

export interface SandboxResult {
  /** The command's exit status (null when it was killed by a signal). */
  exitCode: number | null;
  signal: NodeJS.Signals | null;
  /** How the root was made: an overlay of the layers, a copy of them, or the given rootfs dir. */
  rootfs: 'overlay' | 'copy' | 'dir';
}

export const DEFAULT_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

/** Docker's default capability set: what a RUN step gets (no SYS_ADMIN, no module loading ...). */
const DEFAULT_CAPS = [
  'chown', 'dac_override', 'fowner', 'fsetid', 'kill', 'setgid', 'setuid', 'setpcap',
  'net_bind_service', 'net_raw', 'sys_chroot', 'mknod', 'audit_write', 'setfcap',
];

/** Where the exec vector takes the command's environment (see the script's end). */
const ENV_MARK = '@archway-env@';

/**
 * The script run by the host's /bin/sh inside the new namespaces. Arguments:
 *   ROOT MODE LOWER UPPER OWORK LCWD STATE HOSTNAME NET  NBINDS {SRC KIND RO N P1..PN}*
 *   NDIRS {D}*  -- then the exec vector.
 * Errors go to fd 3 as "CODE message" and exit 125; fd 3 is closed before the exec.
 */
export const SANDBOX_SCRIPT = String.raw`set -e
ROOT=$1 MODE=$2 LOWER=$3 UPPER=$4 OWORK=$5 LCWD=$6 STATE=$7 HN=$8 NET=$9
shift 9
fail() { echo "$1 $2" >&3; exit 125; }
read -r HOSTPID _ < /proc/self/stat || HOSTPID=
echo "PID $HOSTPID" >&3
if [ "$MODE" = overlay ]; then
  cd "$LCWD"
  mount -t overlay overlay -o "lowerdir=$LOWER,upperdir=$UPPER,workdir=$OWORK" "$ROOT" 2>&3 || fail OVERLAY "mounting the overlay failed"
  cd /
fi
stub() { echo "$1" >> "$STATE/stubs"; }
guard() {
  if [ -L "$ROOT/$1" ]; then fail UNSAFE "the image's /$1 is a symbolic link"; fi
  if [ ! -e "$ROOT/$1" ]; then stub "$1"; mkdir "$ROOT/$1"
  elif [ ! -d "$ROOT/$1" ]; then fail UNSAFE "the image's /$1 is not a directory"; fi
}
guard proc
guard dev
if [ -L "$ROOT/dev/null" ]; then fail UNSAFE "the image's /dev/null is a symbolic link"; fi
guard sys
mount -t proc -o nosuid,nodev,noexec proc "$ROOT/proc" 2>&3 || fail SANDBOX "mounting /proc failed"
mount -o bind,ro "$ROOT/proc/sys" "$ROOT/proc/sys" 2>/dev/null || true
mount -t tmpfs -o nosuid,noexec,mode=755,size=65536k tmpfs "$ROOT/dev" 2>&3 || fail SANDBOX "mounting /dev failed"
if ! cp -a /dev/null /dev/zero /dev/full /dev/random /dev/urandom /dev/tty "$ROOT/dev/" 2>/dev/null; then
  # In a user namespace device nodes cannot be made: bind the host's (as rootless podman does).
  for d in null zero full random urandom tty; do
    rm -f "$ROOT/dev/$d"; : > "$ROOT/dev/$d"
    mount --bind "/dev/$d" "$ROOT/dev/$d" 2>&3 || fail SANDBOX "binding /dev/$d failed"
  done
fi
cp -a "$STATE/devtemplate/." "$ROOT/dev/" 2>&3 || fail SANDBOX "populating /dev failed"
mount -t devpts -o newinstance,ptmxmode=0666,mode=0620,nosuid,noexec devpts "$ROOT/dev/pts" 2>/dev/null || true
mount -t tmpfs -o nosuid,nodev,noexec,mode=1777,size=65536k shm "$ROOT/dev/shm" 2>/dev/null || true
mount -t sysfs -o ro,nosuid,nodev,noexec sysfs "$ROOT/sys" 2>/dev/null || true
if [ ! -L "$ROOT/etc" ]; then
  if [ ! -e "$ROOT/etc" ]; then stub etc; mkdir "$ROOT/etc"; fi
  if [ -d "$ROOT/etc" ]; then
    for f in hosts resolv.conf hostname; do
      t="$ROOT/etc/$f"
      if [ -L "$t" ]; then continue; fi
      if [ ! -e "$t" ]; then stub "etc/$f"; : > "$t"; fi
      if [ -f "$t" ]; then mount --bind "$STATE/$f" "$t" 2>&3 || fail SANDBOX "mounting /etc/$f failed"; fi
    done
  fi
fi
NB=$1; shift
while [ "$NB" -gt 0 ]; do
  src=$1 kind=$2 ro=$3 n=$4; shift 4
  t=$ROOT
  while [ "$n" -gt 0 ]; do
    p=$1; shift; n=$((n-1))
    t="$ROOT/$p"
    if [ -L "$t" ]; then fail UNSAFE "bind target /$p is a symbolic link in the image"; fi
    if [ ! -e "$t" ]; then
      stub "$p"
      if [ "$n" -eq 0 ] && [ "$kind" = file ]; then : > "$t"; else mkdir "$t"; fi
    fi
  done
  if [ "$ro" = ro ]; then o=bind,ro; else o=bind; fi
  mount -o "$o" "$src" "$t" 2>&3 || fail SANDBOX "bind mount of $src failed"
  NB=$((NB-1))
done
ND=$1; shift
while [ "$ND" -gt 0 ]; do
  p=$1; shift; ND=$((ND-1))
  if [ -L "$ROOT/$p" ]; then fail UNSAFE "working directory component /$p is a symbolic link"; fi
  if [ ! -e "$ROOT/$p" ]; then mkdir "$ROOT/$p"; fi
done
if [ "$NET" = none ]; then ip link set lo up 2>/dev/null || true; fi
{ echo "$HN" > /proc/sys/kernel/hostname; } 2>/dev/null || hostname "$HN" 2>/dev/null || true
if [ "$1" != -- ]; then fail SANDBOX "internal: bad arguments"; fi
shift
# The command's environment arrives in ARCHWAY_ENV_1..N, not as arguments (which anyone can read
# in ps for as long as this runs): put the values where the vector says, then forget them.
n=$#
while [ "$n" -gt 0 ]; do
  a=$1; shift; n=$((n-1))
  if [ "$a" = "${ENV_MARK}" ]; then
    i=1
    while [ "$i" -le "${'$'}{ARCHWAY_ENV_N:-0}" ]; do eval "set -- \"\$@\" \"\$ARCHWAY_ENV_$i\""; unset "ARCHWAY_ENV_$i"; i=$((i+1)); done
  else
    set -- "$@" "$a"
  fi
done
unset ARCHWAY_ENV_N
for fd in /proc/self/fd/*; do
  fd=${'$'}{fd##*/}
  case $fd in 0|1|2|'*') ;; *)
    if [ -n "${'$'}{BASH_VERSION:-}" ] || [ "$fd" -lt 10 ]; then eval "exec $fd>&-" 2>/dev/null || true; fi ;;
  esac
done
exec "$@"
`;

const live = new Set<ChildProcess>();
const livePids = new Set<number>();
let exitHookInstalled = false;

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.on('exit', () => {
    for (const c of live) c.kill('SIGKILL');
    for (const p of livePids) {
      try {
        process.kill(p, 'SIGKILL');
      } catch {
        // gone
      }
    }
  });
}

const OVERLAY_UNSAFE = /[,:\\\n]/;

function usage(msg: string): ArchwayError {
  return new ArchwayError('USAGE', msg);
}

function validate(opts: SandboxOptions): void {
  if (!Array.isArray(opts.argv) || opts.argv.length === 0) throw usage('sandbox: argv is empty');
  if (opts.argv.some((a) => a.includes('\0'))) throw usage('sandbox: argv contains a NUL byte');
  const hasLayers = opts.layers !== undefined && opts.layers.length > 0;
  if (hasLayers === (opts.rootfs !== undefined)) throw usage('sandbox: give either layers or rootfs');
  if (opts.rootfs !== undefined && opts.upperDir !== undefined) throw usage('sandbox: upperDir needs layers, not rootfs');
  for (const l of opts.layers ?? []) {
    if (!path.isAbsolute(l)) throw usage(`sandbox: layer path must be absolute: ${l}`);
    if (OVERLAY_UNSAFE.test(l)) throw usage(`sandbox: layer path cannot contain ',', ':', '\\' or a newline: ${l}`);
  }
  if (opts.upperDir !== undefined && (!path.isAbsolute(opts.upperDir) || OVERLAY_UNSAFE.test(opts.upperDir))) {
    throw usage(`sandbox: upperDir must be absolute without ',', ':', '\\': ${opts.upperDir}`);
  }
  if (opts.rootfs !== undefined && !path.isAbsolute(opts.rootfs)) throw usage(`sandbox: rootfs must be absolute: ${opts.rootfs}`);
  for (const e of opts.env) {
    const i = e.indexOf('=');
    if (i <= 0 || e.includes('\0')) throw usage(`sandbox: environment entry must be KEY=VALUE: ${JSON.stringify(e)}`);
  }
  if (opts.hostname !== undefined && !/^[A-Za-z0-9]([A-Za-z0-9.-]{0,62})$/.test(opts.hostname)) {
    throw usage(`sandbox: invalid hostname "${opts.hostname}"`);
  }
  if (opts.network !== 'none' && opts.network !== 'host') throw usage(`sandbox: network must be none or host`);
  if (opts.cwd !== undefined && !opts.cwd.startsWith('/')) throw usage(`sandbox: cwd must be absolute: ${opts.cwd}`);
  for (const b of opts.binds ?? []) {
    if (!path.isAbsolute(b.source)) throw usage(`sandbox: bind source must be absolute: ${b.source}`);
    if (!b.target.startsWith('/')) throw usage(`sandbox: bind target must be absolute: ${b.target}`);
    const parts = b.target.split('/').filter((c) => c !== '' && c !== '.');
    if (parts.some((c) => c === '..')) throw usage(`sandbox: bind target cannot contain '..': ${b.target}`);
    if (parts.length === 0) throw usage('sandbox: bind target cannot be /');
  }
}

/** A per-process template of /dev links and dirs, copied into each sandbox's /dev by one cp. */
async function makeDevTemplate(state: string): Promise<void> {
  const d = path.join(state, 'devtemplate');
  await fs.mkdir(d);
  await fs.mkdir(path.join(d, 'pts'));
  await fs.mkdir(path.join(d, 'shm'));
  await fs.symlink('/proc/self/fd', path.join(d, 'fd'));
  await fs.symlink('/proc/self/fd/0', path.join(d, 'stdin'));
  await fs.symlink('/proc/self/fd/1', path.join(d, 'stdout'));
  await fs.symlink('/proc/self/fd/2', path.join(d, 'stderr'));
  await fs.symlink('pts/ptmx', path.join(d, 'ptmx'));
  await fs.symlink('/proc/kcore', path.join(d, 'core'));
}

/** Removes a mount stub at base/rel if it is still a stub (empty dir or empty file), never following links. */
async function removeStub(base: string, rel: string): Promise<void> {
  const parts = rel.split('/').filter((c) => c !== '');
  if (parts.some((c) => c === '..' || c === '.')) return;
  let cur = base;
  for (let i = 0; i < parts.length - 1; i++) {
    cur = path.join(cur, parts[i] as string);
    const st = await fs.lstat(cur).catch(() => undefined);
    if (!st || !st.isDirectory()) return;
  }
  const target = path.join(base, ...parts);
  const st = await fs.lstat(target).catch(() => undefined);
  if (!st) return;
  if (st.isDirectory()) await fs.rmdir(target).catch(() => undefined);
  else if (st.isFile() && st.size === 0) await fs.unlink(target).catch(() => undefined);
}

function personalityFor(platform: Platform | undefined): string[] {
  if (!platform) return [];
  const p = normalizePlatform(platform);
  const h = normalizePlatform(hostPlatform());
  if (!platformMatches(nativelyRunnable(h), p)) return [];
  const is32on64 = (p.architecture === '386' && h.architecture === 'amd64') || (p.architecture === 'arm' && h.architecture === 'arm64');
  return is32on64 ? ['setarch', 'linux32'] : [];
}

function hostsFile(hostname: string): string {
  return `127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\t${hostname}\n`;
}

/**
 * Runs argv inside a sandbox and resolves with its exit status. Throws 'USAGE' for bad options,
 * 'UNSAFE' for a hostile root (links where /proc, /dev, /sys, /dev/null or a bind target must
 * be), 'EMULATION' when a foreign platform has no usable emulator, 'SANDBOX' when the kernel
 * refuses (overlay, mounts, user namespaces), and the abort error when the signal fires (the
 * sandbox is killed).
 */
export async function runInSandbox(opts: SandboxOptions): Promise<SandboxResult> {
  validate(opts);
  if (opts.signal?.aborted) throw abortError(opts.signal, 'sandbox run');
  const layers = opts.layers && opts.layers.length > 0 ? opts.layers : undefined;
  const driver = layers ? (opts.rootfsDriver ?? (await rootfsDriverSetting())) : 'overlay';
  if (layers && opts.upperDir !== undefined && driver === 'copy') {
    throw usage('sandbox: upperDir needs the overlay rootfs driver (a copied root has no upper; compare trees instead)');
  }
  const plan = await userNamespacePlan();
  if (opts.platform) {
    await assertCanRun(opts.platform, opts.signal ? { signal: opts.signal } : {});
  }
  const rootLayers = layers ?? [opts.rootfs as string];
  for (const l of rootLayers) {
    const st = await fs.stat(l).catch(() => undefined);
    if (!st || !st.isDirectory()) throw usage(`sandbox: not a directory: ${l}`);
  }
  const user = await resolveUser(rootLayers, opts.user);
  if (user.uid > plan.maxUid || user.gid > plan.maxGid) {
    const mapped = plan.maxUid === 0 ? 'only root (0:0) exists' : `only ids 0-${Math.min(plan.maxUid, plan.maxGid)} exist`;
    throw new ArchwayError('SANDBOX', `sandbox: user ${JSON.stringify(opts.user ?? '')} is ${user.uid}:${user.gid}, but in this rootless sandbox ${mapped}`, {
      hint: `${plan.noRangeReason ? `${plan.noRangeReason}; ` : ''}give your user a range in /etc/subuid and /etc/subgid (e.g. "${os.userInfo().username}:100000:65536") and install the Debian package "uidmap", or run as root (docs/rootless.md)`,
      details: { reason: 'userns-ids' },
    });
  }
  await sweepStaleTemps(os.tmpdir(), plan.unshareArgs);
  if (opts.scratchDir !== undefined) await sweepStaleTemps(opts.scratchDir, plan.unshareArgs);

  if (!layers || opts.upperDir !== undefined) return runPrepared(opts, plan, user, rootLayers, layers ? 'overlay' : 'dir');
  if (driver === 'copy' || (driver === 'auto' && overlayUnavailable() !== undefined)) return runPrepared(opts, plan, user, rootLayers, 'copy');
  try {
    return await runPrepared(opts, plan, user, rootLayers, 'overlay');
  } catch (e) {
    if (!isOverlayFailure(e)) throw e;
    noteOverlayUnavailable(e.message);
    if (driver !== 'auto') throw e;
    // The mount failed before anything ran: run again in a copied tree.
    return runPrepared(opts, plan, user, rootLayers, 'copy');
  }
}

async function runPrepared(
  opts: SandboxOptions,
  plan: UserNamespacePlan,
  user: ResolvedUser,
  rootLayers: string[],
  kind: 'overlay' | 'copy' | 'dir',
): Promise<SandboxResult> {
  const hostname = opts.hostname ?? 'archway';
  const state = await makeTempDir(os.tmpdir(), 'sandbox');
  let owork: string | undefined;
  let copied: string | undefined;
  try {
    await makeDevTemplate(state);
    await fs.writeFile(path.join(state, 'hosts'), hostsFile(hostname));
    await fs.writeFile(path.join(state, 'hostname'), `${hostname}\n`);
    let resolv = '';
    if (opts.network === 'host') resolv = await fs.readFile('/etc/resolv.conf', 'utf8').catch(() => '');
    await fs.writeFile(path.join(state, 'resolv.conf'), resolv);
    await fs.writeFile(path.join(state, 'stubs'), '');

    let root: string;
    let mode: 'overlay' | 'rootfs';
    let lower = '';
    let upper = '';
    let lcwd = '/';
    if (kind === 'overlay') {
      const layers = rootLayers;
      mode = 'overlay';
      root = path.join(state, 'root');
      await fs.mkdir(root);
      if (opts.upperDir !== undefined) {
        upper = opts.upperDir;
        await fs.mkdir(upper, { recursive: true });
        owork = await fs.mkdtemp(path.join(path.dirname(upper), '.archway-work-'));
      } else {
        upper = path.join(state, 'upper');
        owork = path.join(state, 'work');
        await fs.mkdir(upper);
        await fs.mkdir(owork);
      }
      // overlay's lowerdir: top first. Long stacks exceed the one-page mount option limit, so
      // paths are given relative to their common parent directory (the script cd's there).
      const topFirst = [...layers].reverse();
      const full = topFirst.join(':');
      if (full.length > 3000) {
        let common = path.dirname(topFirst[0] as string);
        while (!topFirst.every((l) => l.startsWith(common.endsWith('/') ? common : `${common}/`)) && common !== '/') common = path.dirname(common);
        lcwd = common;
        lower = topFirst.map((l) => path.relative(common, l)).join(':');
      } else {
        lower = full;
      }
    } else if (kind === 'copy') {
      mode = 'rootfs';
      copied = await makeTempDir(opts.scratchDir ?? os.tmpdir(), 'rootfs');
      root = copied;
      await mergeLayers(rootLayers, root, { mode: 'copy', ...(opts.signal ? { signal: opts.signal } : {}) });
    } else {
      mode = 'rootfs';
      root = opts.rootfs as string;
    }

    // Working directory: resolved inside the root (links confined), created when missing.
    let wd = '/';
    const mkdirs: string[] = [];
    if (opts.cwd !== undefined && opts.cwd !== '/') {
      const r = await resolveInRoot(rootLayers, opts.cwd);
      wd = `/${r.components.join('/')}`;
      if (!r.stats) {
        for (let i = 1; i <= r.components.length; i++) mkdirs.push(r.components.slice(0, i).join('/'));
      } else if (!r.stats.isDirectory()) {
        throw usage(`sandbox: working directory ${opts.cwd} is not a directory in the image`);
      }
    }

    const env = [...opts.env];
    if (!env.some((e) => e.startsWith('PATH='))) env.push(`PATH=${DEFAULT_PATH}`);
    if (!env.some((e) => e.startsWith('HOME='))) env.push(`HOME=${user.home || '/'}`);
    if (!env.some((e) => e.startsWith('HOSTNAME='))) env.push(`HOSTNAME=${hostname}`);

    const bindArgs: string[] = [String((opts.binds ?? []).length)];
    for (const b of opts.binds ?? []) {
      const st = await fs.stat(b.source).catch(() => undefined);
      if (!st) throw usage(`sandbox: bind source does not exist: ${b.source}`);
      const parts = b.target.split('/').filter((c) => c !== '' && c !== '.');
      bindArgs.push(b.source, st.isDirectory() ? 'dir' : 'file', b.readonly ? 'ro' : 'rw', String(parts.length));
      for (let i = 1; i <= parts.length; i++) bindArgs.push(parts.slice(0, i).join('/'));
    }

    // With only root mapped (rootless, no subordinate ids) setgroups(2) is denied and the ids
    // already are 0:0: unshare must not try to change them.
    const ids = plan.rootless && plan.maxGid === 0 ? [] : ['--setgid', String(user.gid), '--setuid', String(user.uid)];
    const execVector = [
      'setpriv',
      '--bounding-set',
      `-all,${DEFAULT_CAPS.map((c) => `+${c}`).join(',')}`,
      '--',
      ...personalityFor(opts.platform),
      'env',
      '-i',
      '--',
      ENV_MARK,
      'unshare',
      `--root=${root}`,
      `--wd=${wd}`,
      ...ids,
      '--',
      ...opts.argv,
    ];
    const scriptArgs = [
      root, mode, lower, upper, owork ?? '', lcwd, state, hostname, opts.network,
      ...bindArgs,
      String(mkdirs.length), ...mkdirs,
      '--',
      ...execVector,
    ];
    const unshareArgs = [...plan.unshareArgs, '--mount', '--pid', '--uts', '--ipc', '--fork', '--kill-child', '--propagation', 'private'];
    if (opts.network === 'none') unshareArgs.push('--net');
    const shell = await hostShell();
    // bash reads ~/.bashrc even when not interactive if its stdin is a socket (it takes that for
    // rshd), and a Node pipe is one: --norc keeps the host user's start-up files out.
    const shellOpts = shell.endsWith('bash') ? ['--norc', '--noprofile'] : [];
    unshareArgs.push('--', shell, ...shellOpts, '-c', SANDBOX_SCRIPT, 'archway-sandbox', ...scriptArgs);

    const envVars: Record<string, string> = { ARCHWAY_ENV_N: String(env.length) };
    env.forEach((e, i) => (envVars[`ARCHWAY_ENV_${i + 1}`] = e));
    const result = await spawnSandbox(unshareArgs, opts, envVars);

    // Remove mount stubs from what persists (the kept upper or the caller's writable rootfs).
    const persisted = kind === 'overlay' ? opts.upperDir : kind === 'dir' ? root : undefined;
    if (persisted !== undefined) {
      const stubs = (await fs.readFile(path.join(state, 'stubs'), 'utf8').catch(() => '')).split('\n').filter(Boolean);
      for (const s of stubs.reverse()) await removeStub(persisted, s);
    }
    return { ...result, rootfs: kind };
  } finally {
    await removeTree(state, plan.unshareArgs).catch(() => undefined);
    if (copied !== undefined) await removeTree(copied, plan.unshareArgs).catch(() => undefined);
    if (owork !== undefined && opts.upperDir !== undefined) await removeTree(owork, plan.unshareArgs).catch(() => undefined);
  }
}

let shellCache: string | undefined;

/**
 * The host shell that runs the setup script: bash when present, because only bash can close
 * descriptors above 9 (an fd the archway process inherited without close-on-exec must not reach
 * the sandboxed command); dash closes 3-9 only.
 */
async function hostShell(): Promise<string> {
  if (shellCache) return shellCache;
  for (const c of ['/bin/bash', '/usr/bin/bash']) {
    try {
      await fs.access(c, fsConstants.X_OK);
      shellCache = c;
      return c;
    } catch {
      // next
    }
  }
  shellCache = '/bin/sh';
  return shellCache;
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

async function waitGone(pid: number, ms: number): Promise<void> {
  const end = Date.now() + ms;
  while (pidAlive(pid) && Date.now() < end) await new Promise((r) => setTimeout(r, 10));
}

type RawResult = Omit<SandboxResult, 'rootfs'>;

function spawnSandbox(args: string[], opts: SandboxOptions, env: Record<string, string>): Promise<RawResult> {
  installExitHook();
  return new Promise<RawResult>((resolve, reject) => {
    const pipe = opts.stdio === 'pipe';
    const child = spawn('unshare', args, {
      stdio: [pipe || opts.stdin === 'ignore' ? 'ignore' : 'inherit', pipe ? 'pipe' : 'inherit', pipe ? 'pipe' : 'inherit', 'pipe'],
      env: { ...env, PATH: '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin', LC_ALL: 'C' },
    });
    live.add(child);
    let status = '';
    let nsPid: number | undefined;
    let aborted = false;
    const fd3 = child.stdio[3];
    if (fd3 && 'on' in fd3) {
      fd3.on('data', (d: Buffer) => {
        status += d.toString();
        const m = /^PID (\d+)$/m.exec(status);
        if (m && nsPid === undefined) {
          const pid = Number(m[1]);
          nsPid = pid;
          livePids.add(pid);
          opts.onStart?.({
            kill: (sig) => {
              if (!livePids.has(pid)) return false;
              try {
                process.kill(pid, sig);
                return true;
              } catch {
                return false;
              }
            },
          });
        }
      });
      fd3.on('error', () => undefined);
    }
    if (pipe) {
      child.stdout?.on('data', (d: Buffer) => opts.onOutput?.(d, 'stdout'));
      child.stderr?.on('data', (d: Buffer) => opts.onOutput?.(d, 'stderr'));
    }
    const onAbort = (): void => {
      aborted = true;
      child.kill('SIGKILL');
      if (nsPid !== undefined) {
        try {
          process.kill(nsPid, 'SIGKILL');
        } catch {
          // already gone
        }
      }
    };
    opts.signal?.addEventListener('abort', onAbort, { once: true });
    child.on('error', (e) => {
      opts.signal?.removeEventListener('abort', onAbort);
      live.delete(child);
      reject(new ArchwayError('SANDBOX', `cannot start the sandbox (unshare): ${e.message}`, { cause: e, hint: 'install util-linux' }));
    });
    child.on('close', (code, sig) => {
      void (async () => {
        opts.signal?.removeEventListener('abort', onAbort);
        live.delete(child);
        if (nsPid !== undefined) {
          // The namespace's pid 1 dies with unshare (--kill-child); wait so its mounts are gone.
          await waitGone(nsPid, 5000);
          livePids.delete(nsPid);
        }
        if (aborted) {
          reject(abortError(opts.signal, 'sandbox run'));
          return;
        }
        const err = /^(UNSAFE|SANDBOX|OVERLAY|EMULATION) (.*)$/m.exec(status);
        if (code === 125 && err) {
          const kind = err[1] as string;
          const detail = status
            .split('\n')
            .filter((l) => l !== '' && !l.startsWith('PID ') && l !== err[0])
            .join('; ');
          const msg = `sandbox: ${err[2] ?? ''}${detail ? ` (${detail})` : ''}`;
          if (kind === 'UNSAFE') reject(new ArchwayError('UNSAFE', msg));
          else if (kind === 'OVERLAY') {
            reject(new ArchwayError('SANDBOX', msg, {
              hint: 'the kernel must support overlayfs, and the upper dir must not be on an overlay filesystem; ARCHWAY_ROOTFS_DRIVER=copy uses a copied tree instead',
              details: { reason: 'overlay' },
            }));
          } else reject(new ArchwayError('SANDBOX', msg));
          return;
        }
        resolve({ exitCode: sig ? null : code, signal: sig });
      })();
    });
  });
}

