/**
 * `archway prune` while other archway commands are working, as a user runs it from another
 * terminal: a running build keeps its working directories (its RUN steps go on writing), and a
 * running container keeps the unpacked layers under it even after its image was removed with
 * `archway rm` (as Docker keeps an image's layers while a container uses them). Once they are done,
 * the next prune frees what they held.
 *
 * The commands under test wait for a file the test creates after the prune, so nothing depends on
 * how long a step takes.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { archway, buildBusyboxBase, expectCode, tempHome, type CliResult } from '../support/cli.js';

const BASE = 'archway-test/busybox:prune-live';
const home = tempHome('archway-prune-live-');
const aw = (args: string[]): Promise<CliResult> => archway(args, { env: home.env });

interface PruneJson {
  blobs: { count: number };
  snapshots: { count: number };
  temp: { count: number };
}

async function prune(...args: string[]): Promise<PruneJson> {
  const r = expectCode(await aw(['prune', ...args, '--format', 'json']), 0, `prune ${args.join(' ')}`);
  return JSON.parse(r.stdout) as PruneJson;
}

/** Starts a command in the background; `seen(text)` resolves once its output shows `text`. */
function background(args: string[]): { done: Promise<CliResult>; seen: (text: string) => Promise<void> } {
  let out = '';
  const waiters: Array<{ text: string; resolve: () => void }> = [];
  const check = (): void => {
    for (const w of [...waiters]) if (out.includes(w.text)) (waiters.splice(waiters.indexOf(w), 1), w.resolve());
  };
  const done = archway(args, {
    env: home.env,
    onSpawn: (child) => {
      child.stdout?.on('data', (d: Buffer) => ((out += d.toString()), check()));
      child.stderr?.on('data', (d: Buffer) => ((out += d.toString()), check()));
    },
  });
  const seen = (text: string): Promise<void> =>
    Promise.race([
      new Promise<void>((resolve) => {
        waiters.push({ text, resolve });
        check();
      }),
      done.then((r) => {
        throw new Error(`archway ${args.join(' ')} ended (exit ${r.code}) before printing "${text}"\n${r.stdout}\n${r.stderr}`);
      }),
    ]);
  return { done, seen };
}

function snapshotDirs(): string[] {
  const dir = join(home.env.ARCHWAY_HOME as string, 'snapshots', 'sha256');
  return existsSync(dir) ? readdirSync(dir).sort() : [];
}

before(async () => {
  await buildBusyboxBase(home.dir, home.env, 'linux/amd64', BASE);
});

after(() => home.cleanup());

test('prune during a build leaves the build its working directories: the build succeeds', async () => {
  const ctx = join(home.dir, 'slow');
  mkdirSync(join(ctx, 'signal'), { recursive: true });
  writeFileSync(
    join(ctx, 'Dockerfile'),
    [
      `FROM ${BASE}`,
      'RUN echo one > /s1',
      // The step is under way (its overlay upper and work dirs are in the store's tmp) until the test
      // says go. It prints "waiting-42", which the step's own line (echoed by --progress plain) does not hold.
      'RUN --mount=type=bind,source=signal,target=/signal sh -c \'echo "waiting-$((6*7))"; while [ ! -e /signal/go ]; do sleep 0.05; done; echo two > /s2\'',
      'RUN cat /s1 /s2 > /both',
      '',
    ].join('\n'),
  );
  const go = (): void => writeFileSync(join(ctx, 'signal', 'go'), '');
  const build = background(['build', '--progress', 'plain', '--no-cache', '--platform', 'linux/amd64', '-t', 'slow:live', ctx]);
  try {
    await build.seen('waiting-42');
    const tmp = join(home.env.ARCHWAY_HOME as string, 'tmp');
    const working = readdirSync(tmp).sort();
    assert.ok(working.length > 0, 'the running step has a working directory in the store');

    const pruned = await prune('--all');
    assert.equal(pruned.temp.count, 0, 'nothing of the running build is a leftover');
    assert.deepEqual(readdirSync(tmp).sort(), working);
  } finally {
    go(); // a failed check above must not leave the build waiting
  }
  const r = await build.done;
  expectCode(r, 0, 'the build that a prune ran beside');
  assert.doesNotMatch(r.stderr, /nonexistent directory/);
  const both = expectCode(await aw(['run', 'slow:live', 'cat', '/both']), 0, 'run the result');
  assert.equal(both.stdout, 'one\ntwo\n');
  assert.equal((await prune()).temp.count, 0, 'the build cleaned up after itself');
});

test('a build started beside another one leaves that build\'s mounts alone; prune too', async () => {
  const ctx = join(home.dir, 'mounted');
  mkdirSync(join(ctx, 'signal'), { recursive: true });
  writeFileSync(
    join(ctx, 'Dockerfile'),
    [
      `FROM ${BASE} AS stage`,
      'RUN echo from-the-stage > /x',
      `FROM ${BASE}`,
      // The stage (two layers) is mounted read-only under the store's tmp for the step's length.
      'RUN --mount=type=bind,from=stage,target=/stage --mount=type=bind,source=signal,target=/signal sh -c \'echo "waiting-$((6*7))"; while [ ! -e /signal/go ]; do sleep 0.05; done; cat /stage/x > /got\'',
      '',
    ].join('\n'),
  );
  const other = join(home.dir, 'other');
  mkdirSync(other, { recursive: true });
  writeFileSync(join(other, 'Dockerfile'), `FROM ${BASE}\nRUN echo other > /other\n`);
  const build = background(['build', '--progress', 'plain', '--no-cache', '--platform', 'linux/amd64', '-t', 'mounted:live', ctx]);
  try {
    await build.seen('waiting-42');
    // A build starting cleans up the mounts that crashed builds left: not this live one's.
    expectCode(await aw(['build', '--progress', 'plain', '--no-cache', '--platform', 'linux/amd64', '-t', 'other:live', other]), 0, 'the other build');
    assert.equal((await prune('--all')).temp.count, 0);
  } finally {
    writeFileSync(join(ctx, 'signal', 'go'), '');
  }
  expectCode(await build.done, 0, 'the build whose step had the stage mounted');
  const got = expectCode(await aw(['run', 'mounted:live', 'cat', '/got']), 0, 'run the result');
  assert.equal(got.stdout, 'from-the-stage\n');
});

test('prune --all during a run whose image was removed keeps its layers until the run ends, then frees them', async () => {
  const ctx = join(home.dir, 'app');
  mkdirSync(ctx, { recursive: true });
  writeFileSync(join(ctx, 'Dockerfile'), `FROM ${BASE}\nRUN echo run-one > /s1\n`);
  expectCode(await aw(['build', '--progress', 'plain', '--platform', 'linux/amd64', '-t', 'app:live', ctx]), 0, 'build app');
  const signal = join(home.dir, 'run-signal');
  mkdirSync(signal, { recursive: true });
  await prune('--all'); // what the tests before left behind

  const run = background(['run', '-v', `${signal}:/signal`, 'app:live', 'sh', '-c', 'echo started; while [ ! -e /signal/go ]; do sleep 0.05; done; cat /s1']);
  let during: string[];
  try {
    await run.seen('started');
    during = snapshotDirs();
    expectCode(await aw(['rm', 'app:live']), 0, 'rm the running image');
    const pruned = await prune('--all');
    assert.equal(pruned.snapshots.count, 0, 'the running container\'s layers stay');
    assert.deepEqual(snapshotDirs(), during);
  } finally {
    writeFileSync(join(signal, 'go'), ''); // a failed check above must not leave the run waiting
  }
  const r = expectCode(await run.done, 0, 'the run its layers were kept for');
  assert.equal(r.stdout, 'started\nrun-one\n');

  // The run is over: what only it held goes now (its own layer; the base's stays with the base).
  const afterRun = await prune('--all');
  assert.equal(afterRun.snapshots.count, 1);
  assert.ok(afterRun.blobs.count >= 1, 'the layer blob goes too');
  assert.equal(snapshotDirs().length, during.length - 1);
  const base = expectCode(await aw(['run', BASE, 'sh', '-c', 'test ! -e /s1 && echo base']), 0, 'the base still runs');
  assert.equal(base.stdout, 'base\n');
});
