#!/usr/bin/env node
// Bundles the compiled CLI into one file, dist/archway.cjs, and V8's code cache for it,
// dist/archway.cjs.v8cache; bin/archway.cjs loads both. Start-up is most of a short command's time:
// resolving and loading some 150 modules one by one cost about 0.14 s on a 2-core machine, parsing
// one bundle about 0.05 s, and loading it from the code cache about half of that.
import { mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import Module, { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { Writable } from 'node:stream';
import vm from 'node:vm';
import { build } from 'esbuild';

const { version } = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8'));
const outfile = resolve('dist/archway.cjs');
await build({
  entryPoints: ['dist/src/cli/main.js'],
  outfile,
  bundle: true,
  platform: 'node',
  target: 'node20',
  format: 'cjs',
  logLevel: 'warning',
  define: { ARCHWAY_VERSION: JSON.stringify(version) },
  // Whitespace and syntax only (names stay, for stack traces): a smaller file is read and hashed
  // faster at every start.
  minifyWhitespace: true,
  minifySyntax: true,
  // main.ts reads package.json through import.meta only when ARCHWAY_VERSION is not defined.
  logOverride: { 'empty-import-meta': 'silent' },
});

// Compile the bundle, run its module bodies, then a small workload through the CLI's main (a
// two-platform build, cold then cached, and copies to an OCI layout, in a throw-away store), so
// that the cache holds the bytecode of every function those paths run: V8 would otherwise compile
// them lazily at every start (about 10 ms of a cached build). The rest compile lazily as usual.
const source = readFileSync(outfile, 'utf8');
// esbuild escapes non-ASCII everywhere but in regular expression literals; one such character
// makes Node hold the whole source as a two-byte string, at every start.
const wide = source.search(/[^\x00-\x7f]/);
if (wide >= 0) console.warn(`bundle: ${outfile} is not ASCII-only near ${JSON.stringify(source.slice(Math.max(0, wide - 40), wide + 10))}; escape it in the source (\\uXXXX)`);
const script = new vm.Script(Module.wrap(source), { filename: outfile });
const mod = { exports: {} };
script.runInThisContext()(mod.exports, createRequire(outfile), mod, outfile, dirname(outfile));
if (typeof mod.exports.runCli !== 'function') throw new Error(`${outfile} does not export runCli`);
await train(mod.exports.main).catch((e) => console.warn(`bundle: the training run failed (${e?.message ?? e}); the code cache covers less`));
const tmp = `${outfile}.v8cache.tmp`;
writeFileSync(tmp, script.createCachedData());
renameSync(tmp, `${outfile}.v8cache`);

async function train(main) {
  const dir = mkdtempSync(join(tmpdir(), 'archway-bundle-'));
  const home = process.env.ARCHWAY_HOME;
  process.env.ARCHWAY_HOME = join(dir, 'home');
  try {
    const context = join(dir, 'context');
    mkdirSync(context);
    writeFileSync(join(context, 'Dockerfile'), 'FROM scratch\nARG TARGETPLATFORM\nCOPY a.txt /a.txt\nENV A=b\nLABEL x=y\nWORKDIR /w\nCMD ["/a.txt"]\n');
    writeFileSync(join(context, 'a.txt'), 'a\n');
    const sink = () => new Writable({ write: (_chunk, _encoding, done) => done() });
    const io = { stdout: sink(), stderr: sink(), stdin: process.stdin, env: process.env };
    const layout = `oci:${join(dir, 'layout')}:1`;
    const runs = [
      ['--help'],
      ['build', '--progress', 'plain', '--platform', 'linux/amd64,linux/arm64', '-t', 'train:1', context],
      ['build', '--progress', 'plain', '--platform', 'linux/amd64,linux/arm64', '-t', 'train:1', context],
      ['copy', '--progress', 'plain', 'store:train:1', layout],
      ['copy', '--progress', 'plain', 'store:train:1', layout],
      ['inspect', layout],
    ];
    for (const argv of runs) {
      const code = await main(argv, io, new AbortController().signal);
      // Only the cache's coverage depends on it: say so, but do not fail the build.
      if (code !== 0) console.warn(`bundle: training run 'archway ${argv.join(' ')}' exited ${code}; the code cache covers less`);
    }
  } finally {
    if (home === undefined) delete process.env.ARCHWAY_HOME;
    else process.env.ARCHWAY_HOME = home;
    rmSync(dir, { recursive: true, force: true });
  }
}
