#!/usr/bin/env node
// Runs the compiled tests with Node's own test runner. `--unit` runs only the tests beside the code
// (dist/src); otherwise test/ (integration, hostile, conformance, golden) runs too. Without file filters,
// the unit tests and the installed command then run again on Node 24 (npx -y node@24); --no-node24 skips that.
import { readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';

const args = process.argv.slice(2);
const unitOnly = args.includes('--unit');
const filters = args.filter((a) => !a.startsWith('--'));
const roots = unitOnly ? ['dist/src'] : ['dist/src', 'dist/test'];

function walk(dir, out) {
  let entries;
  try {
    entries = readdirSync(dir);
  } catch {
    return out;
  }
  for (const name of entries) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) walk(p, out);
    else if (name.endsWith('.test.js')) out.push(p);
  }
  return out;
}

let files = roots.flatMap((r) => walk(r, [])).sort();
if (filters.length > 0) files = files.filter((f) => filters.some((x) => f.includes(x)));
if (files.length === 0) {
  console.error('no test files found (did the build run?)');
  process.exit(1);
}
const r = spawnSync(process.execPath, ['--test', '--test-concurrency=2', ...files], { stdio: 'inherit' });
if (r.status !== 0 || filters.length > 0 || args.includes('--no-node24')) process.exit(r.status ?? 1);

// DESIGN.md: test on the machine's Node and on Node 24. The unit tests and the installed command
// (bundle, code cache) run again on Node 24, fetched from the npm registry by npx.
const major = Number(process.versions.node.split('.')[0]);
if (major === 24) process.exit(0);
const which = spawnSync('npx', ['-y', 'node@24', '-e', 'console.log(process.execPath)'], { encoding: 'utf8' });
const node24 = which.status === 0 ? which.stdout.trim().split('\n').pop() : '';
if (!node24) {
  console.log(`# SKIPPED the Node 24 pass: npx -y node@24 failed (${(which.stderr || '').trim().split('\n').pop() ?? 'no output'})`);
  process.exit(0);
}
const again = [...walk('dist/src', []), 'dist/test/integration/cli-launcher.test.js'].filter((f) => f.endsWith('.test.js')).sort();
console.log(`# the unit tests and the launcher again on ${node24}`);
const r24 = spawnSync(node24, ['--test', '--test-concurrency=2', '--test-reporter=tap', ...again], { stdio: 'inherit' });
process.exit(r24.status ?? 1);
