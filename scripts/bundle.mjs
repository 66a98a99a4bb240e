#!/usr/bin/env node
// Bundles the compiled CLI into one file, dist/archway.cjs, and V8's code cache for it,
// dist/archway.cjs.<node version>.v8cache; bin/archway.cjs loads both. Start-up is most of a short command's time:
// resolving and loading some 150 modules one by one cost about 0.14 s on a 2-core machine, parsing
// one bundle about 0.05 s, and loading it from the code cache about half of that.
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import Module, { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { Writable } from 'node:stream';
import vm from 'node:vm';
import { build } from 'esbuild';

// Node's own modules that a short command (inspect, a copy that finds everything in place) does
// not touch, or touches late: loading them all at start cost about a sixth of such a command's
// time (crypto alone pulls in ciphers, key generation and more).
const LAZY_BUILTINS = new Set(['child_process', 'crypto', 'fs/promises', 'readline', 'stream/promises', 'v8', 'worker_threads', 'zlib']);

/**
 * Each Node module archway's code imports becomes one shared namespace: esbuild otherwise copies
 * every member of, say, node:crypto into a fresh object in each of the dozens of files importing
 * it, at every start. The modules in `lazy` become objects of getters that load the module on
 * first use; esbuild reads members at call time ((0, ns.fn)(...)), so only the load moves. Their
 * member names are the bundling Node's, which is the Node archway runs on.
 */
function sharedBuiltins(lazy) {
  const require = createRequire(import.meta.url);
  return {
    name: 'shared-builtins',
    setup(b) {
      b.onResolve({ filter: /^node:/ }, (args) =>
        // Only static imports from archway's files; dynamic imports stay loads on demand, and
        // the namespaces' own imports are the real modules.
        args.kind === 'import-statement' && args.namespace === 'file'
          ? { path: args.path.slice('node:'.length), namespace: 'builtin' }
          : { path: args.path, external: true },
      );
      b.onResolve({ filter: /^lazy:/ }, (args) => ({ path: args.path.slice('lazy:'.length), namespace: 'lazy-builtin' }));
      b.onLoad({ filter: /.*/, namespace: 'builtin' }, (args) => {
        const id = JSON.stringify(lazy.has(args.path) ? `lazy:${args.path}` : `node:${args.path}`);
        return { contents: `export * from ${id};export default require(${id});`, loader: 'js' };
      });
      b.onLoad({ filter: /.*/, namespace: 'lazy-builtin' }, (args) => {
        const id = JSON.stringify(`node:${args.path}`);
        const getters = Object.getOwnPropertyNames(require(`node:${args.path}`)).map((k) => `${JSON.stringify(k)}:{get:()=>load()[${JSON.stringify(k)}],enumerable:true}`);
        return { contents: `let m;const load=()=>m??=require(${id});module.exports=Object.defineProperties({},{${getters.join(',')}});`, loader: 'js' };
      });
    },
  };
}

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
  plugins: [sharedBuiltins(LAZY_BUILTINS)],
});

// Compile the bundle, run its module bodies, then a small workload through the CLI's main (a
// two-platform build, cold then cached, and copies to an OCI layout, in a throw-away store), so
// that the cache holds the bytecode of every function those paths run: V8 would otherwise compile
// them lazily at every start (about 10 ms of a cached build). The rest compile lazily as usual.
const source = readFileSync(outfile, 'utf8');
// esbuild escapes non-ASCII everywhere but in regular expression literals. bin/archway.cjs reads
// the bundle as Latin-1, the cheapest decoding, which is right for ASCII only (and one wide
// character would make V8 hold the whole source as a two-byte string).
const wide = source.search(/[^\x00-\x7f]/);
if (wide >= 0) throw new Error(`bundle: ${outfile} is not ASCII-only near ${JSON.stringify(source.slice(Math.max(0, wide - 40), wide + 10))}; escape it in the source (\\uXXXX)`);
const script = new vm.Script(Module.wrap(source), { filename: outfile });
const mod = { exports: {} };
script.runInThisContext()(mod.exports, createRequire(outfile), mod, outfile, dirname(outfile));
if (typeof mod.exports.runCli !== 'function') throw new Error(`${outfile} does not export runCli`);
await train(mod.exports.main).catch((e) => console.warn(`bundle: the training run failed (${e?.message ?? e}); the code cache covers less`));
// Caches of an earlier bundle, for any Node, are stale now.
for (const f of readdirSync(dirname(outfile))) if (/^archway\.cjs\..*v8cache/.test(f)) rmSync(join(dirname(outfile), f), { force: true });
const tmp = `${outfile}.${process.version}.v8cache.tmp`;
writeFileSync(tmp, script.createCachedData());
renameSync(tmp, `${outfile}.${process.version}.v8cache`);

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
