/**
 * The file operations Node has no call for: extended attributes and mknod (fifos, device nodes,
 * overlay whiteouts). We avoid native addons, so a python3 helper process does them. It is
 * started only when something needs it, once per layer (not once per file), and answers
 * newline-delimited JSON requests in order. The helper reaches every path from the root one
 * component at a time with O_NOFOLLOW, so it cannot be sent through a link.
 * Without python3, xattrs are skipped and counted (the caller reports it) and mknod is left to
 * the caller (see `Helper.mknod`).
 */
import { existsSync } from 'node:fs';
import type { Socket } from 'node:net';
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { ArchwayError, throwIfAborted } from '../util/index.js';

const HELPER = String.raw`
import sys, os, json, base64, stat
os.umask(0)
def walk(root, rel, parent_only=False):
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    parts = [p for p in rel.split('/') if p]
    try:
        for p in parts[:-1]:
            nfd = os.open(p, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
            os.close(fd)
            fd = nfd
        if parent_only or not parts:
            return fd
        last = os.open(parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY, dir_fd=fd)
        os.close(fd)
        return last
    except BaseException:
        os.close(fd)
        raise
KINDS = {'p': stat.S_IFIFO, 'c': stat.S_IFCHR, 'b': stat.S_IFBLK}
def handle(req):
    root = req['root']
    if req['op'] == 'set':
        failed = []
        for item in req['items']:
            try:
                fd = walk(root, item['path'])
            except OSError as e:
                failed.append([item['path'], str(e)]); continue
            try:
                for k, v in item['xattrs'].items():
                    try:
                        os.setxattr(fd, k, base64.b64decode(v))
                    except OSError as e:
                        failed.append([item['path'] + ' ' + k, str(e)])
            finally:
                os.close(fd)
        return {'failed': failed}
    if req['op'] == 'mknod':
        name = [p for p in req['path'].split('/') if p][-1]
        fd = walk(root, req['path'], parent_only=True)
        try:
            os.mknod(name, KINDS[req['kind']] | (req['mode'] & 0o7777), os.makedev(req['major'], req['minor']), dir_fd=fd)
        finally:
            os.close(fd)
        return {}
    out = {}
    names = req.get('names')
    for rel in req['paths']:
        full = os.path.join(root, rel)
        try:
            keys = names if names is not None else os.listxattr(full, follow_symlinks=False)
        except OSError:
            continue
        got = {}
        for k in keys:
            try:
                got[k] = base64.b64encode(os.getxattr(full, k, follow_symlinks=False)).decode()
            except OSError:
                pass
        if got:
            out[rel] = got
    return {'out': out}
while True:
    line = sys.stdin.buffer.readline()
    if not line:
        break
    try:
        res = handle(json.loads(line))
    except OSError as e:
        res = {'error': e.strerror or str(e), 'errno': e.errno}
    sys.stdout.write(json.dumps(res) + '\n')
    sys.stdout.flush()
`;

/** null: python3 is known to be missing; a string: the command that worked. */
let python: string | null | undefined;

/**
 * The system's python3 first: a python3 earlier on PATH may be a version manager's shim (pyenv's
 * runs several bash processes, which made each helper start cost ~10x more than python itself).
 */
function pythonCommand(): string {
  return python ?? (existsSync('/usr/bin/python3') ? '/usr/bin/python3' : 'python3');
}

interface Reply {
  error?: string;
  failed?: Array<[string, string]>;
  out?: Record<string, Record<string, string>>;
}

interface Waiter {
  resolve: (r: Reply | undefined) => void;
  reject: (e: Error) => void;
}

/** One helper process; requests are answered in order. */
export class Helper {
  private readonly child: ChildProcessWithoutNullStreams;
  private readonly waiters: Waiter[] = [];
  private out = '';
  private err = '';
  /** Set once the process is gone: undefined replies for a missing python3, an Error otherwise. */
  private gone: { error?: Error } | undefined;

  private constructor(signal?: AbortSignal) {
    this.child = spawn(pythonCommand(), ['-c', HELPER], { stdio: ['pipe', 'pipe', 'pipe'], ...(signal ? { signal } : {}) });
    this.child.stdout.setEncoding('utf8');
    this.child.stdout.on('data', (d: string) => {
      this.out += d;
      for (let nl = this.out.indexOf('\n'); nl >= 0; nl = this.out.indexOf('\n')) {
        const line = this.out.slice(0, nl);
        this.out = this.out.slice(nl + 1);
        const w = this.waiters.shift();
        try {
          w?.resolve(JSON.parse(line) as Reply);
        } catch (e) {
          w?.reject(new ArchwayError('STORAGE', 'file helper (python3): bad output', { cause: e }));
        }
      }
    });
    this.child.stderr.on('data', (d: Buffer) => {
      if (this.err.length < 4096) this.err += d.toString();
    });
    this.child.stdin.on('error', () => undefined); // shows up as the exit status instead
    this.child.on('error', (e: NodeJS.ErrnoException) => {
      if (e.code === 'ENOENT') {
        python = null;
        this.end({});
      } else this.end({ error: new ArchwayError('STORAGE', `file helper (python3): ${e.message}`) });
    });
    this.child.on('close', (code) => {
      if (code === 0 && this.waiters.length === 0) this.end({});
      else this.end({ error: new ArchwayError('STORAGE', `file helper (python3) exited with ${code ?? 'a signal'}: ${this.err.trim()}`) });
    });
  }

  /** A helper, or undefined when python3 is known to be missing. */
  static start(signal?: AbortSignal): Helper | undefined {
    return python === null ? undefined : new Helper(signal);
  }

  private end(how: { error?: Error }): void {
    if (this.gone !== undefined) return;
    this.gone = how;
    for (const w of this.waiters.splice(0)) {
      if (how.error !== undefined) w.reject(how.error);
      else w.resolve(undefined);
    }
  }

  /** Sends one request; undefined when python3 turned out to be missing. */
  private request(req: unknown): Promise<Reply | undefined> {
    if (this.gone !== undefined) return this.gone.error ? Promise.reject(this.gone.error) : Promise.resolve(undefined);
    if (this.waiters.length === 0) this.hold(true);
    const settled = (): void => {
      if (this.waiters.length === 0) this.hold(false);
    };
    return new Promise((resolve, reject) => {
      this.waiters.push({
        resolve: (r) => {
          if (r !== undefined) python ??= pythonCommand();
          settled();
          resolve(r);
        },
        reject: (e) => {
          settled();
          reject(e);
        },
      });
      this.child.stdin.write(`${JSON.stringify(req)}\n`);
    });
  }

  /**
   * Whether this process keeps Node's event loop alive: only while a request waits, so that the
   * shared helper, idle, never holds archway open (it ends when our end of its stdin closes).
   */
  private hold(on: boolean): void {
    // Pipes to a child are sockets, which the stream types do not say.
    const pipes = [this.child.stdin, this.child.stdout, this.child.stderr] as unknown as Socket[];
    for (const h of [this.child, ...pipes]) {
      if (on) h.ref();
      else h.unref();
    }
  }

  get alive(): boolean {
    return this.gone === undefined;
  }

  /** Sets xattrs. Returns the number that could not be set (no python3, or refused). */
  async setXattrs(root: string, items: XattrItem[]): Promise<number> {
    if (items.length === 0) return 0;
    const res = await this.request({
      op: 'set',
      root,
      items: items.map((i) => ({ path: i.path, xattrs: Object.fromEntries(Object.entries(i.xattrs).map(([k, v]) => [k, v.toString('base64')])) })),
    });
    if (res === undefined) return items.reduce((n, i) => n + Object.keys(i.xattrs).length, 0);
    return res.failed?.length ?? 0;
  }

  async getXattrs(root: string, paths: string[], names: string[] | undefined): Promise<Map<string, Record<string, Buffer>> | undefined> {
    const res = paths.length === 0 ? { out: {} } : await this.request({ op: 'get', root, paths, names: names ?? null });
    if (res === undefined) return undefined;
    const m = new Map<string, Record<string, Buffer>>();
    for (const [p, x] of Object.entries(res.out ?? {})) {
      m.set(p, Object.fromEntries(Object.entries(x).map(([k, v]) => [k, Buffer.from(v, 'base64')])));
    }
    return m;
  }

  /**
   * Creates a fifo ('p') or device node ('c', 'b') at `path` (relative to root, its parent already
   * resolved to real directories) with exactly `mode`. False when python3 is missing.
   */
  async mknod(root: string, path: string, node: { kind: 'p' | 'c' | 'b'; mode: number; major: number; minor: number }): Promise<boolean> {
    const res = await this.request({ op: 'mknod', root, path, ...node });
    if (res === undefined) return false;
    if (res.error !== undefined) throw new ArchwayError('STORAGE', `mknod "${path}": ${res.error}`);
    return true;
  }

  /** Ends the process (after the requests sent so far were answered). */
  async close(): Promise<void> {
    if (this.gone !== undefined) return;
    const done = new Promise<void>((resolve) => this.child.once('close', () => resolve()));
    this.hold(true);
    this.child.stdin.end();
    await done;
  }
}

export interface XattrItem {
  /** Path relative to root, '/'-separated. */
  path: string;
  xattrs: Record<string, Buffer>;
}

/**
 * One helper for the whole process, started on first use: a build reads the xattrs of a dozen
 * layers, and starting python3 for each cost more than the work.
 */
let shared: Helper | undefined;

/** The process's helper (started now if need be), or undefined when python3 is missing. */
export function sharedHelper(): Helper | undefined {
  if (shared === undefined || !shared.alive) shared = Helper.start();
  return shared;
}

async function once<T>(signal: AbortSignal | undefined, fn: (h: Helper) => Promise<T>, missing: T): Promise<T> {
  throwIfAborted(signal);
  const h = sharedHelper();
  return h === undefined ? missing : fn(h);
}

/** Sets xattrs in one helper run. Returns the number that could not be set (no python3, or refused). */
export async function setXattrs(root: string, items: XattrItem[], opts: { signal?: AbortSignal } = {}): Promise<number> {
  if (items.length === 0) return 0;
  return once(opts.signal, (h) => h.setXattrs(root, items), items.reduce((n, i) => n + Object.keys(i.xattrs).length, 0));
}

/**
 * Reads xattrs (all, or only `names`) of paths relative to root, without following a final link.
 * Returns undefined when no helper is available.
 */
export async function getXattrs(
  root: string,
  paths: string[],
  opts: { names?: string[]; signal?: AbortSignal } = {},
): Promise<Map<string, Record<string, Buffer>> | undefined> {
  if (paths.length === 0) return new Map();
  return once(opts.signal, (h) => h.getXattrs(root, paths, opts.names), undefined);
}

/** Whether xattrs can be read and written on this machine. */
export async function xattrsSupported(): Promise<boolean> {
  if (python === undefined) await getXattrs('/', ['.'], { names: [] }).catch(() => undefined);
  return python !== null && python !== undefined;
}
