import { unlinkSync } from 'node:fs';
import { mkdir, readdir, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { throwIfAborted } from '../util/index.js';
import { pidAlive, readSmallFile, storageError, tempName, tempOwnerOf, writeFileAtomic, type SignalOptions } from './fsutil.js';

/**
 * Leases: what a running process uses from the store and `prune` must not take away meanwhile (the
 * unpacked snapshots under a running container's overlay, the layer blobs they come from), even when
 * no image names them any more — as Docker keeps an image's layers while a container uses them.
 *
 * Each process keeps one lease file per store, `<home>/leases/<pid>.<random>.s<start>.lease`
 * (named as temp files are, see tempName), holding the JSON list of what it holds. It is written
 * before the content is looked up or made, under the store's index lock, which prune holds for its
 * whole pass: a prune either sees the lease or is over before the content is looked for. The file
 * is rewritten as leases are released and removed when the process exits; a crashed process's
 * file is ignored (its pid is gone, or belongs to a later process) and removed by the next prune.
 */

export interface Lease {
  /** Gives up this lease (what other leases of the process hold stays held). Idempotent. */
  release(): Promise<void>;
}

export interface LeaseContent {
  /** diffIDs of unpacked snapshots. */
  snapshots?: readonly string[];
  /** Blob digests. */
  blobs?: readonly string[];
}

export interface LeasedContent {
  snapshots: Set<string>;
  blobs: Set<string>;
}

interface LeaseFile {
  pid: number;
  snapshots: string[];
  blobs: string[];
}

/** This process's lease file in one store. */
interface Holder {
  file: string;
  /** `s:<diffID>` and `b:<digest>`, with how many leases hold each. */
  counts: Map<string, number>;
  /** What the file says now. */
  written: Set<string>;
  /** Writes of the file, one at a time. */
  queue: Promise<void>;
}

const holders = new Map<string, Holder>();
let exitHook = false;

function onExit(): void {
  for (const h of holders.values()) {
    try {
      unlinkSync(h.file);
    } catch {
      // never written, or already gone
    }
  }
}

const LEASE_LIMIT = 16 * 1024 * 1024;

export class Leases {
  constructor(
    /** `<home>/leases` */
    readonly dir: string,
    /** Where the file's temp copy is written (same filesystem). */
    private readonly tmpDir: string,
    /** Runs `fn` holding the lock that prune holds. */
    private readonly withGcLock: <T>(fn: () => Promise<T>, opts: SignalOptions) => Promise<T>,
  ) {}

  private holder(): Holder {
    let h = holders.get(this.dir);
    if (!h) {
      h = { file: join(this.dir, tempName('lease')), counts: new Map(), written: new Set(), queue: Promise.resolve() };
      holders.set(this.dir, h);
      if (!exitHook) {
        exitHook = true;
        process.on('exit', onExit);
      }
    }
    return h;
  }

  /**
   * Holds `content` until the lease is released or this process ends. Resolves once the lease is
   * on disk (a prune that starts later keeps the content); call it before looking the content up.
   */
  async acquire(content: LeaseContent, opts: SignalOptions = {}): Promise<Lease> {
    throwIfAborted(opts.signal);
    const keys = [...new Set([...(content.snapshots ?? []).map((d) => `s:${d}`), ...(content.blobs ?? []).map((d) => `b:${d}`)])];
    const h = this.holder();
    for (const k of keys) h.counts.set(k, (h.counts.get(k) ?? 0) + 1);
    let released = false;
    const lease: Lease = {
      release: async () => {
        if (released) return;
        released = true;
        for (const k of keys) {
          const n = (h.counts.get(k) ?? 1) - 1;
          if (n > 0) h.counts.set(k, n);
          else h.counts.delete(k);
        }
        // Giving protection up needs no lock: a prune that still sees the key only keeps more.
        await this.sync(h, false, {}).catch(() => undefined);
      },
    };
    // A release being written may be taking one of these keys off the file: look after it.
    await h.queue;
    if (keys.some((k) => !h.written.has(k))) {
      try {
        await this.sync(h, true, opts);
      } catch (e) {
        await lease.release();
        throw storageError('cannot write a lease in the store', e);
      }
    }
    return lease;
  }

  /** Writes the holder's file as its counts say (removes it when they hold nothing), in order. */
  private sync(h: Holder, locked: boolean, opts: SignalOptions): Promise<void> {
    const write = async (): Promise<void> => {
      const now = [...h.counts.keys()];
      if (now.length === h.written.size && now.every((k) => h.written.has(k))) return;
      if (now.length === 0) {
        await unlink(h.file).catch(() => undefined);
        h.written = new Set();
        return;
      }
      const data: LeaseFile = {
        pid: process.pid,
        snapshots: now.filter((k) => k.startsWith('s:')).map((k) => k.slice(2)),
        blobs: now.filter((k) => k.startsWith('b:')).map((k) => k.slice(2)),
      };
      const put = async (): Promise<void> => {
        await mkdir(this.dir, { recursive: true });
        await writeFileAtomic(h.file, JSON.stringify(data), this.tmpDir);
      };
      await (locked ? this.withGcLock(put, opts) : put());
      h.written = new Set(now);
    };
    const p = h.queue.then(write);
    h.queue = p.catch(() => undefined);
    return p;
  }

  /**
   * What the live processes' leases hold. Lease files of processes that are gone are removed
   * (unless `keepDead`); returns how many.
   */
  async active(opts: SignalOptions & { keepDead?: boolean } = {}): Promise<LeasedContent & { dead: number }> {
    const out: LeasedContent & { dead: number } = { snapshots: new Set(), blobs: new Set(), dead: 0 };
    let names: string[];
    try {
      names = await readdir(this.dir);
    } catch {
      return out;
    }
    for (const name of names) {
      throwIfAborted(opts.signal);
      if (!name.endsWith('.lease')) continue;
      const owner = tempOwnerOf(name);
      const file = join(this.dir, name);
      if (!owner || !pidAlive(owner.pid, owner.start)) {
        out.dead++;
        if (!opts.keepDead) await unlink(file).catch(() => undefined);
        continue;
      }
      let parsed: Partial<LeaseFile>;
      try {
        const raw = readSmallFile(file, LEASE_LIMIT, 'lease');
        if (raw === undefined) continue; // released meanwhile
        parsed = JSON.parse(raw.toString('utf8')) as Partial<LeaseFile>;
      } catch {
        continue; // written whole by rename, so this is not a lease of ours
      }
      for (const d of Array.isArray(parsed.snapshots) ? parsed.snapshots : []) if (typeof d === 'string') out.snapshots.add(d);
      for (const d of Array.isArray(parsed.blobs) ? parsed.blobs : []) if (typeof d === 'string') out.blobs.add(d);
    }
    return out;
  }
}
