import type { ProgressEvent, ProgressSink } from '../progress/index.js';
import { shortDigest } from '../oci/index.js';
import { ArchwayError } from '../util/index.js';

function formatSize(n: number): string {
  if (n < 1024) return `${n}B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)}kB`;
  if (n < 1024 * 1024 * 1024) return `${(n / 1024 / 1024).toFixed(1)}MB`;
  return `${(n / 1024 / 1024 / 1024).toFixed(2)}GB`;
}
export { formatSize };

/** Plain lines: one per finished thing; what CI logs and pipes get. */
class PlainRenderer implements ProgressSink {
  constructor(private readonly out: NodeJS.WritableStream) {}
  emit(e: ProgressEvent): void {
    const line = plainLine(e);
    if (line !== undefined) this.out.write(`${line}\n`);
  }
}

export function plainLine(e: ProgressEvent): string | undefined {
  switch (e.kind) {
    case 'blob':
      if (e.phase === 'start') return undefined;
      return `${e.phase === 'done' ? 'copied' : e.phase === 'skip' ? 'exists' : 'mounted'} ${shortDigest(e.digest)} ${formatSize(e.size)}${e.what ? ` ${e.what}` : ''}`;
    case 'blob-bytes':
      return undefined;
    case 'manifest':
      return `manifest ${shortDigest(e.digest)}${e.what ? ` ${e.what}` : ''}`;
    case 'tag':
      return `tagged ${e.reference} -> ${shortDigest(e.digest)}`;
    case 'step': {
      const dur = e.durationMs !== undefined ? ` ${(e.durationMs / 1000).toFixed(1)}s` : '';
      if (e.phase === 'start') return `[${e.platform}] ${e.text}`;
      if (e.phase === 'cached') return `[${e.platform}] CACHED ${e.text}`;
      if (e.phase === 'done') return `[${e.platform}] DONE${dur} ${e.text}`;
      return `[${e.platform}] ERROR${dur} ${e.text}${e.error ? `: ${e.error}` : ''}`;
    }
    case 'log':
      return `[${e.platform}] ${e.line}`;
    case 'message':
      return e.level === 'warn' ? `warning: ${e.text}` : e.text;
  }
}

class JsonRenderer implements ProgressSink {
  constructor(private readonly out: NodeJS.WritableStream) {}
  emit(e: ProgressEvent): void {
    if (e.kind === 'blob-bytes') return;
    this.out.write(`${JSON.stringify({ time: new Date().toISOString(), ...e })}\n`);
  }
}

/**
 * A live view for terminals: running steps are redrawn in place, finished ones scroll above.
 * Kept simple: the last N running lines are rewritten with ANSI cursor moves.
 */
class TtyRenderer implements ProgressSink {
  private readonly running = new Map<string, { text: string; started: number }>();
  private drawn = 0;
  private timer: NodeJS.Timeout | undefined;
  constructor(private readonly out: NodeJS.WritableStream) {}
  emit(e: ProgressEvent): void {
    if (e.kind === 'step' && e.phase === 'start') {
      this.running.set(`${e.platform} ${e.id}`, { text: `[${e.platform}] ${e.text}`, started: Date.now() });
      this.schedule();
      return;
    }
    if (e.kind === 'step') this.running.delete(`${e.platform} ${e.id}`);
    if (e.kind === 'blob-bytes' || (e.kind === 'blob' && e.phase === 'start')) return;
    const line = plainLine(e);
    this.clear();
    if (line !== undefined) this.out.write(`${line}\n`);
    this.draw();
  }
  private schedule(): void {
    if (this.timer) return;
    this.timer = setInterval(() => {
      this.clear();
      this.draw();
      if (this.running.size === 0 && this.timer) {
        clearInterval(this.timer);
        this.timer = undefined;
      }
    }, 250);
    this.timer.unref();
    this.clear();
    this.draw();
  }
  private clear(): void {
    if (this.drawn > 0) this.out.write(`\x1b[${this.drawn}A\x1b[J`);
    this.drawn = 0;
  }
  private draw(): void {
    const cols = (this.out as NodeJS.WriteStream).columns ?? 100;
    for (const { text, started } of this.running.values()) {
      const secs = ((Date.now() - started) / 1000).toFixed(1);
      this.out.write(`\x1b[2m=> ${`${text} ${secs}s`.slice(0, cols - 4)}\x1b[0m\n`);
      this.drawn++;
    }
  }
}

export function makeProgress(mode: string, out: NodeJS.WritableStream & { isTTY?: boolean }): ProgressSink {
  if (!['auto', 'tty', 'plain', 'json'].includes(mode)) throw new ArchwayError('USAGE', `--progress must be auto, tty, plain or json, not "${mode}"`);
  if (mode === 'json') return new JsonRenderer(out);
  if (mode === 'tty' || (mode === 'auto' && out.isTTY === true)) return new TtyRenderer(out);
  return new PlainRenderer(out);
}
