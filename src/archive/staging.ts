import { rm } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { ArchwayError } from '../util/index.js';
import { OciLayout, tempName } from '../store/index.js';

/**
 * The temp OCI layout beside an archive being written (`.FILE.PID.RAND.SUFFIX`). It is created on
 * the first write, not when the target is opened: a command that fails before it sends anything
 * (a missing source tag, a refused option) leaves nothing behind. `drop()` removes it, waiting
 * for a creation in progress first.
 */
export class Staging {
  readonly dir: string;
  private opening: Promise<OciLayout> | undefined;
  private dropped = false;

  constructor(
    file: string,
    suffix: string,
    private readonly name: string,
  ) {
    this.dir = join(dirname(file), `.${basename(file)}.${tempName(suffix)}`);
  }

  /** The layout, created on first use. */
  layout(opts: { signal?: AbortSignal | undefined } = {}): Promise<OciLayout> {
    if (this.dropped) return Promise.reject(new ArchwayError('FAILED', `${this.name}: already closed`));
    if (!this.opening) {
      this.opening = OciLayout.open(this.dir, { create: true, name: this.name, ...(opts.signal ? { signal: opts.signal } : {}) });
      // Awaited by every caller; a failure is theirs to report (and drop() ignores it).
      this.opening.catch(() => undefined);
    }
    return this.opening;
  }

  /** The layout when anything was written to it; undefined before (nothing to read). */
  async written(): Promise<OciLayout | undefined> {
    return this.opening;
  }

  async drop(): Promise<void> {
    this.dropped = true;
    await this.opening?.catch(() => undefined);
    await rm(this.dir, { recursive: true, force: true });
  }
}
