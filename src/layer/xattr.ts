/**
 * Extended attributes. Node has no xattr calls and we avoid native addons, so one python3 helper
 * process per layer does the batch (not one process per file). The helper opens every path from
 * the root one component at a time with O_NOFOLLOW, so it cannot be sent through a link.
 * Without python3, xattrs are skipped and counted (the caller reports it).
 */
import { spawn } from 'node:child_process';
import { ArchwayError } from '../util/index.js';

const HELPER = String.raw`
import sys, os, json, base64
req = json.load(sys.stdin)
root = req['root']
out = {}
def walk(rel):
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    parts = [p for p in rel.split('/') if p]
    try:
        for p in parts[:-1]:
            nfd = os.open(p, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
            os.close(fd)
            fd = nfd
        if not parts:
            return fd
        last = os.open(parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY, dir_fd=fd)
        os.close(fd)
        return last
    except BaseException:
        os.close(fd)
        raise
failed = []
if req['op'] == 'set':
    for item in req['items']:
        try:
            fd = walk(item['path'])
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
else:
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
json.dump({'out': out, 'failed': failed}, sys.stdout)
`;

let python: string | null | undefined;

async function runHelper(req: unknown, signal?: AbortSignal): Promise<{ out: Record<string, Record<string, string>>; failed: Array<[string, string]> } | undefined> {
  if (python === null) return undefined;
  const cmd = python ?? 'python3';
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, ['-c', HELPER], { stdio: ['pipe', 'pipe', 'pipe'], ...(signal ? { signal } : {}) });
    const out: Buffer[] = [];
    let err = '';
    child.stdout.on('data', (d: Buffer) => out.push(d));
    child.stderr.on('data', (d: Buffer) => {
      if (err.length < 4096) err += d.toString();
    });
    child.stdin.on('error', () => undefined);
    child.on('error', (e: NodeJS.ErrnoException) => {
      if (e.code === 'ENOENT') {
        python = null;
        resolve(undefined);
      } else reject(new ArchwayError('STORAGE', `xattr helper: ${e.message}`));
    });
    child.on('close', (code) => {
      if (code !== 0) {
        reject(new ArchwayError('STORAGE', `xattr helper (python3) failed: ${err.trim()}`));
        return;
      }
      python = cmd;
      try {
        resolve(JSON.parse(Buffer.concat(out).toString('utf8')) as { out: Record<string, Record<string, string>>; failed: Array<[string, string]> });
      } catch (e) {
        reject(new ArchwayError('STORAGE', `xattr helper: bad output`, { cause: e }));
      }
    });
    child.stdin.end(JSON.stringify(req));
  });
}

export interface XattrItem {
  /** Path relative to root, '/'-separated. */
  path: string;
  xattrs: Record<string, Buffer>;
}

/** Sets xattrs in one helper run. Returns the number that could not be set (no python3, or refused). */
export async function setXattrs(root: string, items: XattrItem[], opts: { signal?: AbortSignal } = {}): Promise<number> {
  if (items.length === 0) return 0;
  const req = {
    op: 'set',
    root,
    items: items.map((i) => ({ path: i.path, xattrs: Object.fromEntries(Object.entries(i.xattrs).map(([k, v]) => [k, v.toString('base64')])) })),
  };
  const res = await runHelper(req, opts.signal);
  if (res === undefined) return items.reduce((n, i) => n + Object.keys(i.xattrs).length, 0);
  return res.failed.length;
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
  const res = paths.length === 0 ? { out: {}, failed: [] } : await runHelper({ op: 'get', root, paths, names: opts.names ?? null }, opts.signal);
  if (res === undefined) return undefined;
  const m = new Map<string, Record<string, Buffer>>();
  for (const [p, x] of Object.entries(res.out)) {
    m.set(p, Object.fromEntries(Object.entries(x).map(([k, v]) => [k, Buffer.from(v, 'base64')])));
  }
  return m;
}

/** Whether xattrs can be read and written on this machine. */
export async function xattrsSupported(): Promise<boolean> {
  if (python === undefined) await getXattrs('/', ['.'], { names: [] }).catch(() => undefined);
  return python !== null && python !== undefined;
}
