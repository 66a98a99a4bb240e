import { ArchwayError } from '../util/index.js';

export interface Position {
  line: number;
  column: number;
  /** The instruction's lines as written, quoted under the message. */
  source?: string;
  /** Line number of the first line of `source` (defaults to `line`). */
  sourceLine?: number;
}

/** `Dockerfile:12:5: message` followed by the instruction's lines, numbered. */
export function parseError(file: string, pos: Position, message: string, hint?: string): ArchwayError {
  let text = `${file}:${pos.line}:${pos.column}: ${message}`;
  if (pos.source !== undefined) {
    const first = pos.sourceLine ?? pos.line;
    const lines = pos.source.split('\n');
    const shown = lines.slice(0, 6);
    const width = String(first + shown.length - 1).length;
    shown.forEach((l, i) => {
      text += `\n  ${String(first + i).padStart(width)} | ${l}`;
    });
    if (lines.length > shown.length) text += `\n  ${' '.repeat(width)} | ...`;
  }
  const opts: { hint?: string; details: Record<string, unknown> } = { details: { file, line: pos.line, column: pos.column } };
  if (hint !== undefined) opts.hint = hint;
  return new ArchwayError('PARSE', text, opts);
}

/** Levenshtein distance (for "did you mean"). */
export function editDistance(a: string, b: string): number {
  const m = a.length;
  const n = b.length;
  let prev = Array.from({ length: n + 1 }, (_, j) => j);
  for (let i = 1; i <= m; i++) {
    const cur = [i];
    for (let j = 1; j <= n; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      cur[j] = Math.min((prev[j] as number) + 1, (cur[j - 1] as number) + 1, (prev[j - 1] as number) + cost);
    }
    prev = cur;
  }
  return prev[n] as number;
}

/** The closest candidate within a small edit distance, case-insensitively. */
export function suggest(word: string, candidates: readonly string[]): string | undefined {
  const w = word.toLowerCase();
  let best: string | undefined;
  let bestD = Infinity;
  for (const c of candidates) {
    const d = editDistance(w, c.toLowerCase());
    if (d < bestD) {
      bestD = d;
      best = c;
    }
  }
  const limit = Math.max(1, Math.min(2, Math.floor(w.length / 2)));
  return bestD <= limit ? best : undefined;
}
