/**
 * The typed error base. Every error a user can see is an ArchwayError with a stable code; the
 * code decides the exit status (DESIGN.md "Exit codes"), the message carries the user's words.
 */
export type ErrorCode =
  | 'STEP_FAILED' // 1
  | 'FAILED' // 1
  | 'USAGE' // 2
  | 'PARSE' // 2
  | 'REFERENCE' // 2
  | 'PLATFORM' // 2
  | 'NOT_FOUND' // 2: a named thing (image, stage, file) does not exist
  | 'REGISTRY' // 3
  | 'NETWORK' // 3
  | 'AUTH' // 4
  | 'DENIED' // 4
  | 'INTEGRITY' // 5
  | 'FORMAT' // 5
  | 'UNSAFE' // 6
  | 'SANDBOX' // 7
  | 'EMULATION' // 7
  | 'STORAGE' // 8
  | 'LOCKED' // 8
  | 'INTERRUPTED'; // 130

const EXIT_CODES: Record<ErrorCode, number> = {
  STEP_FAILED: 1,
  FAILED: 1,
  USAGE: 2,
  PARSE: 2,
  REFERENCE: 2,
  PLATFORM: 2,
  NOT_FOUND: 2,
  REGISTRY: 3,
  NETWORK: 3,
  AUTH: 4,
  DENIED: 4,
  INTEGRITY: 5,
  FORMAT: 5,
  UNSAFE: 6,
  SANDBOX: 7,
  EMULATION: 7,
  STORAGE: 8,
  LOCKED: 8,
  INTERRUPTED: 130,
};

export interface ArchwayErrorOptions {
  /** A known fix, printed under the message. */
  hint?: string;
  cause?: unknown;
  /** Structured facts for --progress json and tests (file, line, platform, reference ...). */
  details?: Record<string, unknown>;
}

export class ArchwayError extends Error {
  readonly code: ErrorCode;
  readonly hint: string | undefined;
  readonly details: Record<string, unknown>;

  constructor(code: ErrorCode, message: string, options: ArchwayErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'ArchwayError';
    this.code = code;
    this.hint = options.hint;
    this.details = options.details ?? {};
  }

  get exitCode(): number {
    return EXIT_CODES[this.code];
  }
}

export function exitCodeOf(code: ErrorCode): number {
  return EXIT_CODES[code];
}

export function isArchwayError(e: unknown, code?: ErrorCode): e is ArchwayError {
  return e instanceof ArchwayError && (code === undefined || e.code === code);
}

/** An AbortSignal's reason as an ArchwayError, so interruption has one shape everywhere. */
export function abortError(signal: AbortSignal | undefined, what = 'operation'): ArchwayError {
  const reason: unknown = signal?.reason;
  if (reason instanceof ArchwayError) return reason;
  return new ArchwayError('INTERRUPTED', `${what} interrupted`, { cause: reason });
}

export function throwIfAborted(signal: AbortSignal | undefined, what?: string): void {
  if (signal?.aborted) throw abortError(signal, what);
}

export function errorMessage(e: unknown): string {
  if (e instanceof Error) return e.message;
  return String(e);
}

/** Errors from Node's fs carry a code; this narrows to them without `any`. */
export function isErrnoException(e: unknown, code?: string): e is NodeJS.ErrnoException {
  return e instanceof Error && 'code' in e && (code === undefined || (e as NodeJS.ErrnoException).code === code);
}
