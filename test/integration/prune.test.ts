/**
 * `archway prune` as a user meets it after a few builds: the build cache (step records and cache
 * mounts) goes unless --keep-cache, tagged images stay runnable, and --dry-run frees nothing.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { archway, buildBusyboxBase, expectCode, tempHome } from '../support/cli.js';

const BASE = 'archway-test/busybox:prune';
const home = tempHome('archway-prune-');
const aw = (args: string[]): ReturnType<typeof archway> => archway(args, { env: home.env });
const app = join(home.dir, 'app');

before(async () => {
  await buildBusyboxBase(home.dir, home.env, 'linux/amd64', BASE);
  mkdirSync(app);
  writeFileSync(join(app, 'note.txt'), 'kept by the image\n');
  writeFileSync(
    join(app, 'Dockerfile'),
    [
      `FROM ${BASE}`,
      'COPY note.txt /note.txt',
      // The cache mount counts its runs: 1 on a fresh cache, 2 when the cache survived.
      'RUN --mount=type=cache,id=counter,target=/cache echo x >> /cache/runs && wc -l < /cache/runs > /runs.txt',
      '',
    ].join('\n'),
  );
});

after(() => home.cleanup());

async function build(): Promise<{ ran: number; stderr: string }> {
  const r = await aw(['build', '--progress', 'plain', '--platform', 'linux/amd64', '-t', 'app:prune', app]);
  expectCode(r, 0, 'build app');
  const m = /\((\d+) run, (\d+) cached\)/.exec(r.stdout + r.stderr);
  assert.ok(m, r.stdout + r.stderr);
  return { ran: Number(m[1]), stderr: r.stderr };
}

async function runs(): Promise<string> {
  const r = await aw(['run', 'app:prune', 'cat', '/runs.txt']);
  expectCode(r, 0, 'run app');
  return r.stdout.trim();
}

test('prune --keep-cache keeps the build cache; prune drops it and the cache mounts; the image stays', async () => {
  assert.equal((await build()).ran, 2, 'a first build runs COPY and RUN');
  assert.equal(await runs(), '1');

  const dry = await aw(['prune', '--all', '--dry-run', '--format', 'json']);
  expectCode(dry, 0, 'prune --dry-run');
  const planned = JSON.parse(dry.stdout) as { buildCache: { count: number }; dryRun: boolean };
  assert.equal(planned.dryRun, true);
  assert.ok(planned.buildCache.count >= 3, `two step records and one cache mount, got ${dry.stdout}`);
  assert.equal((await build()).ran, 0, 'a dry run removes nothing');

  expectCode(await aw(['prune', '--all', '--keep-cache']), 0, 'prune --keep-cache');
  assert.equal((await build()).ran, 0, 'the build cache survived --keep-cache');

  const pruned = await aw(['prune', '--all']);
  expectCode(pruned, 0, 'prune');
  assert.match(pruned.stdout, /Removed [1-9]\d* build cache entries/);
  assert.equal(await runs(), '1', 'the tagged image still runs after prune');

  assert.equal((await build()).ran, 2, 'after prune every step runs again');
  assert.equal(await runs(), '1', 'the cache mount started empty again');
});
