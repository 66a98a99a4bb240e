/**
 * Keeps a stream-heavy process's heap from growing in steps of tens of megabytes. Node copies
 * every piece of an HTTP body into a fresh Buffer, whose memory V8 gives back only when it
 * collects the young generation, and it waits for ~64 MiB of such memory before it does. A
 * 250 MB copy then grows its malloc heap by that much, and every new page is a fault (costly on
 * a VM: 17 thousand of them took a fifth of a copy's CPU here). A young-generation collection
 * every few MiB of body keeps the same pages in use; it costs well under a millisecond.
 */
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';

const EVERY_BYTES = 4 * 1024 * 1024;

let collect: ((options: { type: 'minor' }) => void) | null | undefined;
let pending = 0;

function youngCollector(): ((options: { type: 'minor' }) => void) | null {
  if (collect !== undefined) return collect;
  try {
    // V8's gc() with {type: 'minor'} scavenges the young generation only. --expose-gc after start
    // gives it to new contexts (not to this one, where user code would see a global gc).
    setFlagsFromString('--expose-gc');
    const gc: unknown = runInNewContext('gc');
    collect = typeof gc === 'function' ? (gc as (options: { type: 'minor' }) => void) : null;
  } catch {
    collect = null;
  }
  return collect;
}

/** Counts bytes streamed through fresh Buffers; every few MiB, collects the young generation. */
export function streamedBytes(bytes: number): void {
  pending += bytes;
  if (pending < EVERY_BYTES) return;
  pending = 0;
  youngCollector()?.({ type: 'minor' });
}
