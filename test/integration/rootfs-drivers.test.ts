/**
 * The two ways the sandbox makes a root filesystem, end to end through the CLI: overlayfs, and a
 * copied tree (ARCHWAY_ROOTFS_DRIVER=copy, or 'auto' where overlayfs cannot be mounted — here
 * because the temp dir or the store is itself on an overlay, as inside a container). A build whose
 * RUN steps add, change and delete files must give layers that apply to the same tree either way,
 * with whiteouts for deletions; `archway run` must work; nothing may stay mounted or copied.
 * Then rootless: `archway run` as the user nobody, through a user namespace.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { archway, ARCHWAY_BIN, expectCode, runCommand, tempHome, type CliResult } from '../support/cli.js';
import { makeBusyboxContext } from '../support/make-busybox-context.js';
import { hostPlatform, parsePlatform } from '../../src/oci/index.js';
import { Store } from '../../src/store/index.js';
import { resolveImageForPlatform } from '../../src/image/index.js';
import { applyLayer } from '../../src/layer/index.js';

const isRoot = process.getuid?.() === 0;
const onAmd64 = hostPlatform().architecture === 'amd64';
const skip = (!isRoot && 'needs root (it mounts overlays and runs as another user)') || (!onAmd64 && 'amd64 host only');

const home = tempHome('archway-rootfs-');
const tmpdir = join(home.dir, 'tmp');
const mounts: string[] = [];

function aw(args: string[], env: NodeJS.ProcessEnv = {}, extra: Parameters<typeof archway>[1] = {}): Promise<CliResult> {
  return archway(args, { env: { ...home.env, TMPDIR: tmpdir, ...env }, ...extra });
}

function mountinfoMentions(s: string): string[] {
  return readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .filter((l) => l.includes(s) && !mounts.some((m) => l.includes(` ${m} `)));
}

/** What the sandbox leaves behind: its temp dirs, the builder's work dirs, merged trees. */
function leftovers(): string[] {
  const out: string[] = [];
  for (const dir of [tmpdir, join(home.env.ARCHWAY_HOME as string, 'tmp'), join(home.env.ARCHWAY_HOME as string, 'tmp', 'mounts')]) {
    if (!existsSync(dir)) continue;
    for (const n of readdirSync(dir)) if (/archway-(sandbox|rootfs)|^run-|^merged-/.test(n)) out.push(join(dir, n));
  }
  return out;
}

/** An overlay mounted at DIR/merged (its upper on this disk), where overlayfs refuses a nested upper. */
function overlayDir(name: string): string {
  const base = join(home.dir, name);
  for (const d of ['lower', 'upper', 'work', 'merged']) mkdirSync(join(base, d), { recursive: true });
  execFileSync('mount', ['-t', 'overlay', 'overlay', '-o', `lowerdir=${base}/lower,upperdir=${base}/upper,workdir=${base}/work`, join(base, 'merged')]);
  mounts.push(join(base, 'merged'));
  return join(base, 'merged');
}

/** The tree an image's layers give when applied in order (docker/umoci semantics), listed. */
async function appliedTree(tag: string, dest: string): Promise<{ listing: string; layers: string[] }> {
  const store = await Store.open({ env: home.env });
  const root = await store.resolve(tag);
  const image = await resolveImageForPlatform(store, root, parsePlatform('linux/amd64'), { strict: true, what: tag });
  mkdirSync(dest, { recursive: true });
  const layers: string[] = [];
  for (const d of image.manifest.value.layers) {
    await applyLayer(await store.fetch(d), dest, { mediaType: d.mediaType, allowDevices: true });
    layers.push(d.digest);
  }
  const listing = execFileSync('sh', ['-c', 'cd "$1" && find . -mindepth 1 -printf "%P %y %m %U %G %s %l\\n" | sort && find . -type f -print0 | sort -z | xargs -0 -r md5sum', 'x', dest]).toString();
  return { listing, layers };
}

function layerEntries(digest: string): string[] {
  const blob = join(home.env.ARCHWAY_HOME as string, 'content', 'blobs', ...digest.split(':'));
  return execFileSync('tar', ['-tzf', blob]).toString().split('\n').filter(Boolean);
}

const APP = `FROM base:1 AS other
RUN echo from-other > /other.txt
FROM base:1
RUN set -e; echo new > /added; echo changed >> /etc/passwd; rm /bin/true; rm -r /home; mkdir -p /opt/d/e; ln -s /added /opt/link; touch /opt/d/e/f; chmod 700 /opt/d
COPY --from=other /other.txt /other.txt
RUN echo second >> /added && rm /opt/link && rm /bin/false
`;

describe('rootfs drivers', { skip }, () => {
  let ctx: string;
  before(async () => {
    mkdirSync(tmpdir, { recursive: true });
    ctx = join(home.dir, 'base-ctx');
    await makeBusyboxContext(ctx, [parsePlatform('linux/amd64')]);
    expectCode(await aw(['build', '--progress', 'plain', '--platform', 'linux/amd64', '-t', 'base:1', ctx]), 0, 'build the busybox base');
    const app = join(home.dir, 'app');
    mkdirSync(app, { recursive: true });
    writeFileSync(join(app, 'Dockerfile'), APP);
  });
  after(() => {
    for (const m of mounts.reverse()) spawnSync('umount', ['-l', m]);
    home.cleanup();
  });

  test('a build with RUN steps that add, change and delete gives the same tree with overlay and with a copied tree', async () => {
    const app = join(home.dir, 'app');
    expectCode(await aw(['build', '--no-cache', '--progress', 'plain', '--platform', 'linux/amd64', '-t', 'app:overlay', app], { ARCHWAY_ROOTFS_DRIVER: 'overlay' }), 0, 'build with overlay');
    expectCode(await aw(['build', '--no-cache', '--progress', 'plain', '--platform', 'linux/amd64', '-t', 'app:copy', app], { ARCHWAY_ROOTFS_DRIVER: 'copy' }), 0, 'build with copies');
    const o = await appliedTree('app:overlay', join(home.dir, 'tree-overlay'));
    const c = await appliedTree('app:copy', join(home.dir, 'tree-copy'));
    assert.equal(c.listing, o.listing);
    assert.match(o.listing, /^added f 644 0 0 11 $/m);
    assert.match(o.listing, /^opt\/d d 700 /m);
    assert.match(o.listing, /^other\.txt f /m);
    assert.doesNotMatch(o.listing, /^(bin\/true|bin\/false|home|opt\/link) /m);
    // Deletions are whiteouts in both: layers 2 and 4 are the RUN steps.
    for (const t of [o, c]) {
      assert.equal(t.layers.length, 4);
      const first = layerEntries(t.layers[1] as string);
      assert.ok(first.includes('bin/.wh.true'), first.join('\n'));
      assert.ok(first.includes('.wh.home'), first.join('\n'));
      const second = layerEntries(t.layers[3] as string);
      assert.ok(second.includes('opt/.wh.link') && second.includes('bin/.wh.false'), second.join('\n'));
      assert.ok(!second.some((e) => e.startsWith('etc/passwd')), 'an unchanged file is not in the layer');
    }
    assert.deepEqual(leftovers(), []);
    assert.deepEqual(mountinfoMentions(home.dir), []);
  });

  test('archway run with a copied tree: changes are thrown away, exit codes pass through, nothing is left', async () => {
    const env = { ARCHWAY_ROOTFS_DRIVER: 'copy' };
    const r = await aw(['run', 'app:copy', 'sh', '-c', 'cat /added /other.txt; test -e /bin/true || echo no-true; echo $$; hostname; echo x > /scratch; rm /bin/sh; exit 3'], env);
    assert.equal(r.code, 3, r.stderr);
    assert.equal(r.stdout, 'new\nsecond\nfrom-other\nno-true\n1\narchway\n');
    const again = expectCode(await aw(['run', 'app:copy', 'sh', '-c', 'test -e /scratch && echo kept; test -e /bin/sh && echo sh-still-there'], env), 0, 'run again');
    assert.equal(again.stdout, 'sh-still-there\n');
    assert.deepEqual(leftovers(), []);
    assert.deepEqual(mountinfoMentions(home.dir), []);
  });

  test('archway run interrupted while using a copied tree leaves no copy and no mount', async () => {
    let child: import('node:child_process').ChildProcess | undefined;
    const p = aw(['run', 'app:copy', 'sleep', '67'], { ARCHWAY_ROOTFS_DRIVER: 'copy' }, { onSpawn: (c) => (child = c) });
    for (let i = 0; i < 200; i++) {
      await new Promise((res) => setTimeout(res, 50));
      const running = readdirSync('/proc').some((d) => {
        try {
          return /^\d+$/.test(d) && readFileSync(`/proc/${d}/cmdline`, 'utf8') === 'sleep\x0067\x00';
        } catch {
          return false;
        }
      });
      if (running) break;
    }
    // The first SIGINT goes to the command, which as pid 1 without a handler ignores it; the
    // second stops the container.
    child?.kill('SIGINT');
    await new Promise((res) => setTimeout(res, 300));
    child?.kill('SIGINT');
    const r = await p;
    assert.equal(r.code, 130, r.stderr);
    assert.match(r.stderr, /SIGINT passed to the command/);
    assert.deepEqual(leftovers(), []);
    assert.deepEqual(mountinfoMentions(home.dir), []);
  });

  test('archway run passes SIGTERM and SIGINT to the command, whose exit code comes back', async () => {
    for (const sig of ['SIGTERM', 'SIGINT'] as const) {
      let child: import('node:child_process').ChildProcess | undefined;
      let out = '';
      const script = `trap 'echo got-${sig}; exit 3' ${sig.slice(3)}; echo ready; while :; do sleep 0.1; done`;
      const p = aw(['run', 'app:copy', 'sh', '-c', script], {}, {
        onSpawn: (c) => {
          child = c;
          c.stdout?.on('data', (d: Buffer) => {
            out += d.toString();
            if (out === 'ready\n') c.kill(sig);
          });
        },
      });
      const r = await p;
      assert.ok(child);
      assert.equal(r.code, 3, `${sig}: ${r.stderr}`);
      assert.equal(r.stdout, `ready\ngot-${sig}\n`);
    }
    assert.deepEqual(mountinfoMentions(home.dir), []);
  });

  test("'auto' falls back to a copied tree where overlayfs refuses the mount; 'overlay' says why it failed", async () => {
    const ovTmp = overlayDir('ov-tmp');
    const env = { TMPDIR: ovTmp };
    const r = expectCode(await aw(['run', 'app:overlay', 'sh', '-c', 'cat /added; test -e /bin/true || echo no-true'], env), 0, 'run with auto on an overlay temp dir');
    assert.equal(r.stdout, 'new\nsecond\nno-true\n');
    const forced = await aw(['run', 'app:overlay', 'sh', '-c', 'exit 0'], { ...env, ARCHWAY_ROOTFS_DRIVER: 'overlay' });
    assert.equal(forced.code, 7, forced.stderr);
    assert.match(forced.stderr, /overlay/);
    assert.match(forced.stderr, /ARCHWAY_ROOTFS_DRIVER=copy/);
    // the same choice from config.toml
    const cfg = join(home.dir, 'sandbox.toml');
    writeFileSync(cfg, '[sandbox]\nrootfs-driver = "overlay"\n');
    const fromConfig = await aw(['run', 'app:overlay', 'sh', '-c', 'exit 0'], { ...env, ARCHWAY_CONFIG: cfg });
    assert.equal(fromConfig.code, 7, fromConfig.stderr);
    writeFileSync(cfg, '[sandbox]\nrootfs-driver = "copy"\n');
    expectCode(await aw(['run', 'app:overlay', 'sh', '-c', 'exit 0'], { ...env, ARCHWAY_CONFIG: cfg }), 0, 'run with rootfs-driver = "copy"');
    assert.deepEqual(readdirSync(ovTmp).filter((n) => n.includes('archway-')), []);
    assert.deepEqual(mountinfoMentions(home.dir), []);
  });

  test("'auto' builds with a store on an overlay filesystem (archway inside a container)", async () => {
    const storeHome = join(overlayDir('ov-store'), 'home');
    const ctx2 = join(home.dir, 'scratch-ctx');
    mkdirSync(ctx2, { recursive: true });
    execFileSync('cp', ['-a', join(ctx, 'rootfs-amd64'), join(ctx2, 'rootfs')]);
    // No deletion here: a store on overlayfs cannot hold the whiteout devices of snapshots (see docs/rootless.md).
    writeFileSync(join(ctx2, 'Dockerfile'), 'FROM scratch\nCOPY rootfs/ /\nRUN echo y > /y\nRUN cat /y && echo z > /z\n');
    const env = { ARCHWAY_HOME: storeHome };
    const forced = await aw(['build', '--progress', 'plain', '--platform', 'linux/amd64', '-t', 'inside:0', ctx2], { ...env, ARCHWAY_ROOTFS_DRIVER: 'overlay' });
    assert.notEqual(forced.code, 0, 'overlayfs cannot have its upper there');
    assert.match(forced.stderr, /overlay/);
    expectCode(await aw(['build', '--progress', 'plain', '--platform', 'linux/amd64', '-t', 'inside:1', ctx2], env), 0, 'build on an overlay store');
    const r = expectCode(await aw(['run', 'inside:1', 'sh', '-c', 'cat /y /z'], env), 0, 'run on an overlay store');
    assert.equal(r.stdout, 'y\nz\n');
    assert.deepEqual(readdirSync(join(storeHome, 'tmp')).filter((n) => /archway-|^run-|^merged-/.test(n)), []);
  });
});

describe('rootless archway run (as nobody)', { skip }, () => {
  let rl: string;
  let why: string | undefined;
  const nobody = (args: string[], env: Record<string, string> = {}): Promise<CliResult> =>
    runCommand('setpriv', [
      '--reuid=65534', '--regid=65534', '--clear-groups', '--',
      'env', '-i', `PATH=${process.env.PATH ?? '/usr/bin:/bin'}`, `HOME=${rl}`, `ARCHWAY_HOME=${rl}/home`, `ARCHWAY_CONFIG=${rl}/none.toml`, `TMPDIR=${rl}/tmp`,
      `ARCHWAY_NODE=${process.execPath}`, ...Object.entries(env).map(([k, v]) => `${k}=${v}`),
      ARCHWAY_BIN, ...args,
    ], { cwd: rl });

  before(async () => {
    const probe = spawnSync('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', 'unshare', '--user', '--map-root-user', 'true']);
    if (probe.status !== 0) {
      why = `this kernel does not let an unprivileged user create a user namespace: ${probe.stderr.toString().trim()}`;
      console.log(`# skipping rootless checks: ${why}`);
      return;
    }
    rl = join(home.dir, 'rootless');
    mkdirSync(join(rl, 'tmp'), { recursive: true });
    chmodSync(home.dir, 0o755);
    const ctx = join(home.dir, 'rl-ctx');
    await makeBusyboxContext(ctx, [parsePlatform('linux/amd64')]);
    writeFileSync(join(ctx, 'Dockerfile'), 'FROM scratch\nCOPY rootfs-amd64/ /\nRUN echo made-by-root > /hello && rm /bin/true\nCMD ["sh"]\n');
    expectCode(await aw(['build', '--progress', 'plain', '--platform', 'linux/amd64', '-t', 'rl:1', ctx]), 0, 'build the image');
    expectCode(await aw(['copy', 'store:rl:1', `oci:${rl}/layout:rl`]), 0, 'copy it to a layout');
    execFileSync('chown', ['-R', '65534:65534', rl]);
  });

  for (const driver of ['auto', 'copy']) {
    test(`runs as root in a user namespace (${driver}): own pid 1, hostname, /dev, exit codes`, async (t) => {
      if (why) return t.skip(why);
      const r = await nobody(['run', `oci:${rl}/layout:rl`, 'sh', '-c', 'id -u; echo $$; hostname; cat /hello; test -e /bin/true || echo no-true; ls /dev | wc -l; echo > /dev/null && echo null-ok; touch /new; exit 4'], { ARCHWAY_ROOTFS_DRIVER: driver });
      assert.equal(r.code, 4, r.stderr);
      assert.equal(r.stdout, '0\n1\narchway\nmade-by-root\nno-true\n14\nnull-ok\n');
    });
  }

  test('a user other than root without a subordinate id range is a clear error (exit 7)', async (t) => {
    if (why) return t.skip(why);
    const subuid = readFileSync('/etc/subuid', 'utf8');
    if (/^(nobody|65534):/m.test(subuid)) return t.skip('nobody has a range in /etc/subuid on this machine');
    const r = await nobody(['run', '-u', 'nobody', `oci:${rl}/layout:rl`, 'id']);
    assert.equal(r.code, 7, r.stderr);
    assert.match(r.stderr, /rootless/);
    assert.match(r.stderr, /\/etc\/subuid/);
    assert.match(r.stderr, /uidmap/);
  });

  test('a build with COPY is refused before any work, naming the step and pointing at the docs (exit 7)', async (t) => {
    if (why) return t.skip(why);
    const ctx = join(rl, 'copy-ctx');
    mkdirSync(ctx);
    writeFileSync(join(ctx, 'Dockerfile'), 'FROM scratch\nCOPY f.txt /f.txt\n');
    writeFileSync(join(ctx, 'f.txt'), 'f\n');
    execFileSync('chown', ['-R', '65534:65534', ctx]);
    const r = await nobody(['build', '--progress', 'plain', ctx]);
    assert.equal(r.code, 7, r.stderr);
    assert.match(r.stderr, /Dockerfile:2: COPY f\.txt \/f\.txt: COPY and ADD need root/);
    assert.match(r.stderr, /docs\/rootless\.md/);
    assert.doesNotMatch(r.stderr, /EPERM|\[linux\/amd64\] COPY/);
  });

  test('leaves nothing behind it cannot delete', async (t) => {
    if (why) return t.skip(why);
    assert.deepEqual(readdirSync(join(rl, 'tmp')), []);
    assert.deepEqual(readdirSync(join(rl, 'home', 'tmp')).filter((n) => n.includes('archway-')), []);
    assert.deepEqual(mountinfoMentions(rl), []);
  });
});
