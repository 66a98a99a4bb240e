'use strict';
// Runs the bundled CLI (dist/archway.cjs) through V8's code cache (dist/archway.cjs.v8cache, made
// by scripts/bundle.mjs): compiling the bundle would otherwise be most of archway's start-up.
// The malloc settings bin/archway chose are for this process only (see there).
if (process.env.ARCHWAY_GLIBC_TUNABLES) {
  delete process.env.GLIBC_TUNABLES;
  delete process.env.ARCHWAY_GLIBC_TUNABLES;
}
const fs = require('node:fs');
const path = require('node:path');
const vm = require('node:vm');
const { createRequire, wrap } = require('node:module');

const file = path.join(__dirname, '..', 'dist', 'archway.cjs');
// One cache per Node version (V8 rejects another's): the build leaves the one for its Node,
// filled by a training run, and a run under another Node (the tests run under two) neither
// throws it away nor is slowed by it.
const cacheFile = `${file}.${process.version}.v8cache`;
let cachedData;
try {
  // A cache older than the bundle belongs to an earlier build: V8 would only check its length.
  if (fs.statSync(cacheFile).mtimeMs >= fs.statSync(file).mtimeMs) cachedData = fs.readFileSync(cacheFile);
} catch {
  cachedData = undefined;
}
// Latin-1: the bundle is ASCII-only (scripts/bundle.mjs makes sure), and this decoding is a copy.
const script = new vm.Script(wrap(fs.readFileSync(file, 'latin1')), {
  filename: file,
  cachedData,
  // import() of Node's own modules inside the bundle, on a Node without process.getBuiltinModule.
  ...(vm.constants?.USE_MAIN_CONTEXT_DEFAULT_LOADER ? { importModuleDynamically: vm.constants.USE_MAIN_CONTEXT_DEFAULT_LOADER } : {}),
});
const bundle = { exports: {} };
script.runInThisContext()(bundle.exports, createRequire(file), bundle, file, path.dirname(file));
// Missing or stale: leave a fresh cache for the next run, where we may write. A current cache that
// V8 rejects was made under other V8 flags (NODE_OPTIONS); it stays for the runs without them.
if (cachedData === undefined) {
  process.once('exit', () => {
    const tmp = `${cacheFile}.${process.pid}`;
    try {
      fs.writeFileSync(tmp, script.createCachedData());
      fs.renameSync(tmp, cacheFile);
    } catch {
      fs.rmSync(tmp, { force: true });
    }
  });
}
bundle.exports.runCli();
