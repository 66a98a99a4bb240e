/**
 * The benchmark: archway side by side with buildah, skopeo, tar and podman on the same inputs.
 *   npm run bench [-- NAME_FILTER...]     BENCH_RUNS (default 3) runs per side, BENCH_SCALE scales data sizes
 * Prints the table and writes bench-results.json. A scenario whose setup or peer fails is skipped
 * with the reason (no numbers are made up).
 */
import { writeFileSync } from 'node:fs';
import { formatResults, runScenario, type ScenarioResult } from './harness.js';
import { buildScenarios } from './scenarios/build.js';
import { archwayArgv, mustRun, PeerUnavailable, type ScenarioDef } from './scenarios/common.js';
import { copyScenarios } from './scenarios/copy.js';
import { layerScenarios } from './scenarios/layer.js';
import { runScenarios } from './scenarios/run.js';

const all: ScenarioDef[] = [...buildScenarios, ...copyScenarios, ...layerScenarios, ...runScenarios];

const filters = process.argv.slice(2).filter((a) => !a.startsWith('-'));
const selected = filters.length ? all.filter((s) => filters.some((f) => s.name.includes(f))) : all;
const runsEnv = Number(process.env['BENCH_RUNS'] ?? '3');
const runs = Number.isInteger(runsEnv) && runsEnv > 0 ? runsEnv : 3;

if (selected.length === 0) {
  console.error(`no scenario matches ${filters.join(' ')}; scenarios: ${all.map((s) => s.name).join(', ')}`);
  process.exit(2);
}

function firstLines(e: unknown): string {
  return (e instanceof Error ? e.message : String(e)).split('\n').slice(0, 12).join('\n  ');
}

// Emulators for the foreign platforms (idempotent).
await mustRun(archwayArgv('binfmt', '--install', 'arm64,arm,ppc64le,s390x')).catch((e: unknown) => console.log(`# binfmt --install failed: ${firstLines(e)}`));

const results: ScenarioResult[] = [];
const skipped: Array<{ name: string; reason: string }> = [];
const started = Date.now();
for (const def of selected) {
  const t0 = Date.now();
  console.log(`# ${def.name}: setting up`);
  let prepared;
  try {
    prepared = await def.setup();
  } catch (e) {
    const reason = `${e instanceof PeerUnavailable ? 'peer unavailable' : 'setup failed'}: ${firstLines(e)}`;
    console.log(`# ${def.name}: SKIPPED (${reason})`);
    skipped.push({ name: def.name, reason });
    continue;
  }
  try {
    console.log(`# ${def.name}: measuring (${runs} run(s) per side, setup took ${((Date.now() - t0) / 1000).toFixed(1)}s)`);
    const r = await runScenario(prepared.scenario, runs);
    results.push(r);
    console.log(`# ${def.name}: archway ${(r.archwayMedianMs / 1000).toFixed(2)}s, ${r.peer} ${(r.peerMedianMs / 1000).toFixed(2)}s, ratio ${r.ratio.toFixed(2)}`);
  } catch (e) {
    const reason = `a measured run failed: ${firstLines(e)}`;
    console.log(`# ${def.name}: SKIPPED (${reason})`);
    skipped.push({ name: def.name, reason });
  } finally {
    await prepared.cleanup().catch((e: unknown) => console.log(`# ${def.name}: cleanup failed: ${firstLines(e)}`));
  }
}

console.log('');
console.log(formatResults(results));
for (const s of skipped) console.log(`skipped ${s.name}: ${s.reason.split('\n')[0]}`);
console.log(`\ntotal ${((Date.now() - started) / 1000).toFixed(0)}s`);
writeFileSync('bench-results.json', `${JSON.stringify({ runs, scale: Number(process.env['BENCH_SCALE'] ?? '1'), results, skipped }, null, 2)}\n`);
