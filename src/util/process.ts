import { spawn } from 'node:child_process';
import { ArchwayError, type ErrorCode } from './errors.js';

/**
 * Runs a host tool (mount, cp, mknod ...) to completion; a failure is an ArchwayError with `code`
 * that names the command and carries the end of its stderr.
 */
export function runTool(cmd: string, args: readonly string[], opts: { code: ErrorCode; signal?: AbortSignal }): Promise<void> {
  const { code, signal } = opts;
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ['ignore', 'ignore', 'pipe'], ...(signal ? { signal } : {}) });
    let err = '';
    child.stderr.on('data', (d: Buffer) => {
      if (err.length < 8192) err += d.toString();
    });
    child.on('error', (e) => reject(signal?.aborted ? e : new ArchwayError(code, `cannot run ${cmd}: ${e.message}`, { cause: e })));
    child.on('close', (status) => {
      if (status === 0) resolve();
      else reject(new ArchwayError(code, `${cmd} ${args.join(' ')} failed: ${err.trim() || `exit ${status}`}`));
    });
  });
}
