import { spawn } from 'node:child_process';
import { readFileSync, rmSync } from 'node:fs';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** One timed run of a command: wall time and peak resident memory (from GNU time). */
export interface Measurement {
  wallMs: number;
  peakRssKb: number;
  exitCode: number;
}

export interface CommandSpec {
  argv: string[];
  env?: NodeJS.ProcessEnv;
  cwd?: string;
}

export interface Scenario {
  name: string;
  /** Runs once before every measured run of either side (clear caches, reset the registry ...). */
  prepare?: () => Promise<void>;
  archway: CommandSpec;
  peer: CommandSpec & { name: string };
  /** The ratio archway/peer the issue asks for, shown beside the measured one. */
  targetRatio?: number;
  targetRssMb?: number;
}

export interface ScenarioResult {
  name: string;
  peer: string;
  archwayMedianMs: number;
  peerMedianMs: number;
  ratio: number;
  archwayPeakRssMb: number;
  targetRatio?: number;
  targetRssMb?: number;
  runs: number;
}

/** Runs a command under /usr/bin/time -f to read its peak RSS; output is discarded unless it fails. */
export async function measure(cmd: CommandSpec): Promise<Measurement> {
  const dir = mkdtempSync(join(tmpdir(), 'archway-bench-'));
  const timeFile = join(dir, 'time');
  const started = process.hrtime.bigint();
  const child = spawn('/usr/bin/time', ['-f', '%M', '-o', timeFile, ...cmd.argv], {
    env: { ...process.env, ...cmd.env },
    cwd: cmd.cwd,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  child.stdout.on('data', (c: Buffer) => (output = (output + c.toString()).slice(-4000)));
  child.stderr.on('data', (c: Buffer) => (output = (output + c.toString()).slice(-4000)));
  const exitCode = await new Promise<number>((resolve) => child.on('close', (code) => resolve(code ?? 1)));
  const wallMs = Number(process.hrtime.bigint() - started) / 1e6;
  let peakRssKb = 0;
  try {
    peakRssKb = Number(readFileSync(timeFile, 'utf8').trim().split('\n').pop());
  } catch {
    /* time could not write: leave 0 */
  }
  rmSync(dir, { recursive: true, force: true });
  if (exitCode !== 0) throw new Error(`benchmark command failed (${exitCode}): ${cmd.argv.join(' ')}\n${output}`);
  return { wallMs, peakRssKb, exitCode };
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? (s[m] as number) : ((s[m - 1] as number) + (s[m] as number)) / 2;
}

/** Runs archway and the peer alternately (so drift hits both alike), `runs` times each. */
export async function runScenario(s: Scenario, runs: number): Promise<ScenarioResult> {
  const a: Measurement[] = [];
  const p: Measurement[] = [];
  for (let i = 0; i < runs; i++) {
    await s.prepare?.();
    a.push(await measure(s.archway));
    await s.prepare?.();
    p.push(await measure(s.peer));
  }
  const archwayMedianMs = median(a.map((m) => m.wallMs));
  const peerMedianMs = median(p.map((m) => m.wallMs));
  const result: ScenarioResult = {
    name: s.name,
    peer: s.peer.name,
    archwayMedianMs,
    peerMedianMs,
    ratio: archwayMedianMs / peerMedianMs,
    archwayPeakRssMb: Math.max(...a.map((m) => m.peakRssKb)) / 1024,
    runs,
  };
  if (s.targetRatio !== undefined) result.targetRatio = s.targetRatio;
  if (s.targetRssMb !== undefined) result.targetRssMb = s.targetRssMb;
  return result;
}

export function formatResults(results: ScenarioResult[]): string {
  const rows = [['scenario', 'peer', 'archway (median)', 'peer (median)', 'ratio', 'target', 'archway peak RSS', 'RSS target']];
  for (const r of results) {
    rows.push([
      r.name,
      r.peer,
      `${(r.archwayMedianMs / 1000).toFixed(2)}s`,
      `${(r.peerMedianMs / 1000).toFixed(2)}s`,
      r.ratio.toFixed(2),
      r.targetRatio !== undefined ? `<= ${r.targetRatio}${r.ratio <= r.targetRatio ? ' ok' : ' MISSED'}` : '',
      `${r.archwayPeakRssMb.toFixed(0)} MB`,
      r.targetRssMb !== undefined ? `<= ${r.targetRssMb}${r.archwayPeakRssMb <= r.targetRssMb ? ' ok' : ' MISSED'}` : '',
    ]);
  }
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length)));
  return rows.map((r) => r.map((c, i) => c.padEnd(widths[i] ?? 0)).join('  ')).join('\n');
}
