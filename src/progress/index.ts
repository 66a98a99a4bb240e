/**
 * Typed progress events and the sink they go to. Rendering (tty, plain, json) belongs to the CLI;
 * library code only emits.
 */
export type ProgressEvent =
  | { kind: 'blob'; phase: 'start' | 'skip' | 'mount' | 'done'; digest: string; size: number; what?: string }
  | { kind: 'blob-bytes'; digest: string; bytes: number; total: number }
  | { kind: 'manifest'; phase: 'done'; digest: string; mediaType: string; what?: string }
  | { kind: 'tag'; reference: string; digest: string }
  | { kind: 'step'; phase: 'start' | 'done' | 'cached' | 'error'; id: string; platform: string; text: string; durationMs?: number; error?: string }
  | { kind: 'log'; id: string; platform: string; stream: 'stdout' | 'stderr'; line: string }
  | { kind: 'message'; level: 'info' | 'warn'; text: string };

export interface ProgressSink {
  emit(event: ProgressEvent): void;
}

export const nullProgress: ProgressSink = { emit: () => undefined };

/** Collects events; for tests and for summaries. */
export class ProgressRecorder implements ProgressSink {
  readonly events: ProgressEvent[] = [];
  emit(event: ProgressEvent): void {
    this.events.push(event);
  }
}
