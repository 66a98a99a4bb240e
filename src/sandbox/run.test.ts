import { strict as assert } from 'node:assert';
import { execFileSync } from 'node:child_process';
import { promises as fs, readFileSync, readdirSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { isArchwayError } from '../util/index.js';
import { hostPlatform, parsePlatform, type Platform } from '../oci/index.js';
import { busyboxRootfs } from '../../test/support/busybox-rootfs.js';
import { canRun, installEmulators, resolveUser, runInSandbox, uninstallEmulators, type SandboxOptions } from './index.js';
import { kernelRefuses } from './compat.js';

const isRoot = process.getuid?.() === 0;
const onAmd64 = hostPlatform().architecture === 'amd64';

async function run(opts: Partial<SandboxOptions> & { argv: string[] }): Promise<{ out: string; err: string; exitCode: number | null; signal: NodeJS.Signals | null; rootfs: string }> {
  let out = '';
  let err = '';
  const r = await runInSandbox({
    env: [],
    network: 'none',
    stdio: 'pipe',
    onOutput: (c, s) => {
      if (s === 'stdout') out += c.toString();
      else err += c.toString();
    },
    ...opts,
  });
  return { out, err, ...r };
}

function mountinfoMentions(s: string): string[] {
  return readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .filter((l) => l.includes(s));
}

async function snapshot(dir: string): Promise<string> {
  return execFileSync('sh', ['-c', 'cd "$1" && find . -printf "%p %y %s %m %l\\n" | sort', 'x', dir]).toString();
}

describe('runInSandbox (amd64 busybox)', { skip: (!isRoot && 'needs root') || (!onAmd64 && 'amd64 host only') }, () => {
  let rootfs: string;
  let tmp: string;
  before(async () => {
    rootfs = await busyboxRootfs(parsePlatform('linux/amd64'));
    tmp = await fs.mkdtemp(path.join(os.tmpdir(), 'archway-run-test-'));
  });
  after(async () => {
    await fs.rm(tmp, { recursive: true, force: true });
  });

  it('runs uname -m', async () => {
    const r = await run({ layers: [rootfs], argv: ['uname', '-m'] });
    assert.equal(r.out, 'x86_64\n');
    assert.equal(r.exitCode, 0);
  });

  it('gives the command its environment without keeping it in any command line while it runs', async () => {
    const secret = `s3cret-${process.pid}-${Date.now()}`;
    let started!: () => void;
    const running = new Promise<void>((resolve) => (started = resolve));
    let out = '';
    const p = runInSandbox({
      layers: [rootfs],
      env: [`TOKEN=${secret}`, 'SPACED=a b  c', 'NL=one\ntwo'],
      network: 'none',
      stdio: 'pipe',
      argv: ['sh', '-c', 'echo started; sleep 0.5; printf "%s|%s|%s" "$TOKEN" "$SPACED" "$NL"'],
      onOutput: (c) => {
        out += c.toString();
        if (out.startsWith('started\n')) started();
      },
    });
    // Any user can read every process's arguments (ps). The values pass through env -i's arguments
    // for the instant of the final exec; once the command runs, no process may hold them.
    await running;
    const seen: string[] = [];
    const until = Date.now() + 300;
    while (Date.now() < until) {
      for (const d of readdirSync('/proc')) {
        if (!/^\d+$/.test(d)) continue;
        try {
          if (readFileSync(`/proc/${d}/cmdline`, 'utf8').includes(secret)) seen.push(d);
        } catch {
          // gone
        }
      }
      await new Promise((r) => setTimeout(r, 5));
    }
    const r = await p;
    assert.equal(r.exitCode, 0);
    assert.equal(out, `started\n${secret}|a b  c|one\ntwo`);
    assert.deepEqual(seen, [], 'the value appeared in a command line');
  });

  it('passes the exit code and the signal through', async () => {
    const r = await run({ layers: [rootfs], argv: ['sh', '-c', 'exit 7'] });
    assert.equal(r.exitCode, 7);
    // pid 1 of a pid namespace can only be killed from outside it (SIGKILL from the host):
    const p = run({ layers: [rootfs], argv: ['sleep', '31'] });
    let victim: string | undefined;
    for (let i = 0; i < 200 && victim === undefined; i++) {
      await new Promise((r) => setTimeout(r, 20));
      victim = readdirSync('/proc').find((d) => {
        try {
          return /^\d+$/.test(d) && readFileSync(`/proc/${d}/cmdline`, 'utf8') === 'sleep\x0031\x00';
        } catch {
          return false;
        }
      });
    }
    assert.ok(victim, 'found the sandboxed process');
    process.kill(Number(victim), 'SIGKILL');
    const k = await p;
    // util-linux 2.38's unshare cannot re-raise SIGKILL on itself and exits 1 ("child exit failed")
    assert.ok(k.signal === 'SIGKILL' || k.exitCode === 1, JSON.stringify(k));
    const nf = await run({ layers: [rootfs], argv: ['/no/such/program'] });
    assert.notEqual(nf.exitCode, 0);
  });

  it('sets env, cwd, user and hostname; the process is pid 1 with its own /proc', async () => {
    const r = await run({
      layers: [rootfs],
      argv: ['sh', '-c', 'echo "$FOO|$(pwd)|$(id -u):$(id -g)|$(hostname)|$$|$(head -c 5 /proc/1/cmdline | tr "\\0" " ")|$HOME|$(ls /proc | grep -c "^[0-9]")"'],
      env: ['FOO=bar baz'],
      cwd: '/tmp/work/dir',
      user: 'nobody',
      hostname: 'builder1',
    });
    assert.equal(r.err, '');
    const [foo, cwd, ids, hn, pid, cmdline, home, nprocs] = r.out.trim().split('|');
    assert.equal(foo, 'bar baz');
    assert.equal(cwd, '/tmp/work/dir');
    assert.equal(ids, '65534:65534');
    assert.equal(hn, 'builder1');
    assert.equal(pid, '1');
    assert.equal(cmdline, 'sh -c');
    assert.equal(home, '/nonexistent');
    assert.ok(Number(nprocs) <= 4, `only the sandbox's processes are visible, saw ${nprocs}`);
    const u = await run({ layers: [rootfs], argv: ['id'], user: '1234:55' });
    assert.match(u.out, /uid=1234 gid=55/);
    await assert.rejects(run({ layers: [rootfs], argv: ['id'], user: 'nosuchuser' }), (e: unknown) => isArchwayError(e, 'USAGE'));
  });

  it('only fds 0-2 reach the process', async () => {
    const r = await run({ layers: [rootfs], argv: ['ls', '/proc/self/fd'] });
    // ls itself opens the directory as fd 3
    assert.deepEqual(r.out.trim().split('\n').sort(), ['0', '1', '2', '3']);
  });

  it('network none sees only lo', async () => {
    const r = await run({ layers: [rootfs], argv: ['sh', '-c', 'tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d " "'] });
    assert.equal(r.out.trim(), 'lo');
    const h = await run({ layers: [rootfs], argv: ['sh', '-c', 'tail -n +3 /proc/net/dev | wc -l'], network: 'host' });
    assert.ok(Number(h.out.trim()) >= 1);
  });

  it('writes go to the upper dir, never to the lower dirs, and mount stubs are cleaned', async () => {
    const layer2 = path.join(tmp, 'layer2');
    await fs.mkdir(path.join(layer2, 'data'), { recursive: true });
    await fs.writeFile(path.join(layer2, 'data', 'hello'), 'from layer2\n');
    const upper = path.join(tmp, 'upper1');
    const before1 = await snapshot(rootfs);
    const before2 = await snapshot(layer2);
    const r = await run({
      layers: [rootfs, layer2],
      upperDir: upper,
      argv: ['sh', '-c', 'cat /data/hello; echo new > /newfile; echo more >> /data/hello; rm /bin/true; echo x > /etc/hosts; ls /mnt/in'],
      binds: [{ source: layer2, target: '/mnt/in', readonly: true }],
    });
    assert.equal(r.exitCode, 0, r.err);
    assert.match(r.out, /^from layer2\n/);
    assert.equal(await snapshot(rootfs), before1);
    assert.equal(await snapshot(layer2), before2);
    assert.equal(await fs.readFile(path.join(upper, 'newfile'), 'utf8'), 'new\n');
    assert.equal(await fs.readFile(path.join(upper, 'data', 'hello'), 'utf8'), 'from layer2\nmore\n');
    const wh = await fs.lstat(path.join(upper, 'bin', 'true'));
    assert.ok(wh.isCharacterDevice() && wh.rdev === 0, 'a whiteout records the removal');
    // /etc/hosts, /etc/resolv.conf, /etc/hostname and the bind target were mount stubs: gone
    await assert.rejects(fs.lstat(path.join(upper, 'etc', 'hosts')));
    await assert.rejects(fs.lstat(path.join(upper, 'etc', 'hostname')));
    await assert.rejects(fs.lstat(path.join(upper, 'mnt')));
    // a thrown-away upper leaves nothing either
    const r2 = await run({ layers: [rootfs], argv: ['sh', '-c', 'echo y > /zzz'] });
    assert.equal(r2.exitCode, 0);
    await assert.rejects(fs.lstat(path.join(rootfs, 'zzz')));
    assert.deepEqual(mountinfoMentions(tmp), []);
  });

  it('a read-only bind cannot be written', async () => {
    const src = path.join(tmp, 'robind');
    await fs.mkdir(src);
    const r = await run({ layers: [rootfs], argv: ['sh', '-c', 'echo x > /ro/f'], binds: [{ source: src, target: '/ro', readonly: true }] });
    assert.notEqual(r.exitCode, 0);
    assert.deepEqual(await fs.readdir(src), []);
  });

  it('runs in a writable rootfs dir used as is', async () => {
    const dir = path.join(tmp, 'rw');
    execFileSync('cp', ['-a', rootfs, dir]);
    const r = await run({ rootfs: dir, argv: ['sh', '-c', 'echo hi > /root/x'] });
    assert.equal(r.exitCode, 0, r.err);
    assert.equal(await fs.readFile(path.join(dir, 'root', 'x'), 'utf8'), 'hi\n');
    await assert.rejects(fs.lstat(path.join(dir, 'etc', 'hosts')), 'mount stub removed');
  });

  it('abort kills the process tree and leaves no mount', async () => {
    const ac = new AbortController();
    const t0 = Date.now();
    const p = run({ layers: [rootfs], argv: ['sh', '-c', 'sleep 37 & sleep 37; echo done'], signal: ac.signal });
    setTimeout(() => ac.abort(), 300);
    await assert.rejects(p, (e: unknown) => isArchwayError(e, 'INTERRUPTED'));
    assert.ok(Date.now() - t0 < 10_000);
    // no process of the sandbox is left
    const left = readdirSync('/proc').filter((d) => {
      if (!/^\d+$/.test(d)) return false;
      try {
        return readFileSync(`/proc/${d}/cmdline`, 'utf8') === 'sleep\x0037\x00';
      } catch {
        return false;
      }
    });
    assert.deepEqual(left, []);
    assert.deepEqual(mountinfoMentions('.archway-sandbox'), []);
    assert.deepEqual(mountinfoMentions(rootfs), []);
  });

  it('/dev holds only the minimal set; /etc/hosts, /etc/resolv.conf and /etc/hostname are generated', async () => {
    const r = await run({
      layers: [rootfs],
      argv: ['sh', '-c', 'ls -A /dev | tr "\\n" " "; echo; cat /etc/hosts; echo "--"; cat /etc/resolv.conf; echo "--"; cat /etc/hostname; ls /dev/pts | head -1; echo > /dev/null && head -c 4 /dev/zero | wc -c'],
      hostname: 'box7',
    });
    assert.equal(r.exitCode, 0, r.err);
    const [devs, rest] = [r.out.split('\n')[0] ?? '', r.out.split('\n').slice(1).join('\n')];
    assert.deepEqual(devs.trim().split(' ').sort(), ['core', 'fd', 'full', 'null', 'ptmx', 'pts', 'random', 'shm', 'stderr', 'stdin', 'stdout', 'tty', 'urandom', 'zero']);
    const [hosts, resolv, tailText] = rest.split('--\n');
    assert.match(hosts ?? '', /^127\.0\.0\.1\tlocalhost$/m);
    assert.match(hosts ?? '', /^127\.0\.1\.1\tbox7$/m);
    assert.equal(resolv, '', 'no name servers without a network');
    assert.match(tailText ?? '', /^box7\n(ptmx\n)?4\n$/);
    const h = await run({ layers: [rootfs], argv: ['cat', '/etc/resolv.conf'], network: 'host' });
    assert.equal(h.out, readFileSync('/etc/resolv.conf', 'utf8'));
  });

  it('-u takes user names and name:group from the image, and numbers', async () => {
    const layer = path.join(tmp, 'users');
    await fs.mkdir(path.join(layer, 'etc'), { recursive: true });
    await fs.writeFile(path.join(layer, 'etc', 'passwd'), 'root:x:0:0:root:/root:/bin/sh\napp:x:1500:1600:app:/home/app:/bin/sh\n');
    await fs.writeFile(path.join(layer, 'etc', 'group'), 'root:x:0:\napp:x:1600:\nstaff:x:50:\n');
    const id = async (user: string): Promise<string> => (await run({ layers: [rootfs, layer], argv: ['sh', '-c', 'echo $(id -u):$(id -g):$HOME'], user })).out.trim();
    assert.equal(await id('app'), '1500:1600:/home/app');
    assert.equal(await id('app:staff'), '1500:50:/home/app');
    assert.equal(await id('1500'), '1500:1600:/home/app');
    assert.equal(await id('77:88'), '77:88:/');
    await assert.rejects(run({ layers: [rootfs, layer], argv: ['true'], user: 'app:nogroup' }), (e: unknown) => isArchwayError(e, 'USAGE'));
  });

  it('the copy rootfs driver: same view, writes stay in a copy that is removed, whiteouts hide', async () => {
    const top = path.join(tmp, 'copy-top');
    await fs.mkdir(path.join(top, 'bin'), { recursive: true });
    execFileSync('mknod', ['-m', '0', path.join(top, 'bin', 'true'), 'c', '0', '0']);
    await fs.writeFile(path.join(top, 'added'), 'from top\n');
    const scratch = path.join(tmp, 'copy-scratch');
    const before1 = await snapshot(rootfs);
    const before2 = await snapshot(top);
    const r = await run({
      layers: [rootfs, top],
      rootfsDriver: 'copy',
      scratchDir: scratch,
      argv: ['sh', '-c', 'test -e /bin/true && echo true-visible; cat /added; echo x > /newfile; echo more >> /added; rm /bin/false; echo $$; hostname'],
      hostname: 'copied',
    });
    assert.equal(r.exitCode, 0, r.err);
    assert.equal(r.rootfs, 'copy');
    assert.match(r.out, /^from top\n1\ncopied\n/);
    assert.equal(await snapshot(rootfs), before1);
    assert.equal(await snapshot(top), before2);
    assert.deepEqual(await fs.readdir(scratch), [], 'the copied root is removed');
    assert.deepEqual(mountinfoMentions(scratch), []);
    const o = await run({ layers: [rootfs, top], argv: ['true'], rootfsDriver: 'overlay' });
    assert.equal(o.rootfs, 'overlay');
    await assert.rejects(
      run({ layers: [rootfs], upperDir: path.join(tmp, 'u-copy'), rootfsDriver: 'copy', argv: ['true'] }),
      (e: unknown) => isArchwayError(e, 'USAGE') && /overlay rootfs driver/.test(e.message),
    );
  });

  it('the copy driver passes exit codes through and cleans up after an abort', async () => {
    const scratch = path.join(tmp, 'copy-scratch2');
    const r = await run({ layers: [rootfs], rootfsDriver: 'copy', scratchDir: scratch, argv: ['sh', '-c', 'exit 42'] });
    assert.equal(r.exitCode, 42);
    const ac = new AbortController();
    const p = run({ layers: [rootfs], rootfsDriver: 'copy', scratchDir: scratch, argv: ['sleep', '39'], signal: ac.signal });
    setTimeout(() => ac.abort(), 300);
    await assert.rejects(p, (e: unknown) => isArchwayError(e, 'INTERRUPTED'));
    assert.deepEqual(await fs.readdir(scratch), []);
    assert.deepEqual(mountinfoMentions(scratch), []);
  });

  it('an already-aborted signal runs nothing', async () => {
    await assert.rejects(run({ layers: [rootfs], argv: ['true'], signal: AbortSignal.abort() }), (e: unknown) => isArchwayError(e, 'INTERRUPTED'));
  });

  it('rejects bad input as USAGE', async () => {
    await assert.rejects(run({ layers: [rootfs], argv: [] }), (e: unknown) => isArchwayError(e, 'USAGE'));
    await assert.rejects(run({ layers: [rootfs], argv: ['true'], env: ['NOEQUALS'] }), (e: unknown) => isArchwayError(e, 'USAGE'));
    await assert.rejects(run({ layers: ['/a,b'], argv: ['true'] }), (e: unknown) => isArchwayError(e, 'USAGE'));
    await assert.rejects(
      run({ layers: [rootfs], argv: ['true'], binds: [{ source: tmp, target: '/a/../../x', readonly: true }] }),
      (e: unknown) => isArchwayError(e, 'USAGE'),
    );
  });
});

describe('runInSandbox with a hostile rootfs', { skip: (!isRoot && 'needs root') || (!onAmd64 && 'amd64 host only') }, () => {
  let rootfs: string;
  let tmp: string;
  before(async () => {
    rootfs = await busyboxRootfs(parsePlatform('linux/amd64'));
    tmp = await fs.mkdtemp(path.join(os.tmpdir(), 'archway-hostile-test-'));
  });
  after(async () => {
    await fs.rm(tmp, { recursive: true, force: true });
  });

  async function layerWith(name: string, make: (dir: string) => Promise<void>): Promise<string> {
    const d = path.join(tmp, name);
    await fs.mkdir(d);
    await make(d);
    return d;
  }

  it('refuses /proc -> /tmp/xyz', async () => {
    const target = path.join(tmp, 'xyz');
    await fs.mkdir(target);
    const evil = await layerWith('evilproc', async (d) => {
      await fs.symlink(target, path.join(d, 'proc'));
    });
    await assert.rejects(run({ layers: [rootfs, evil], argv: ['true'] }), (e: unknown) => isArchwayError(e, 'UNSAFE') && /\/proc/.test(e.message));
    assert.deepEqual(mountinfoMentions(target), []);
    assert.deepEqual(await fs.readdir(target), []);
  });

  it('refuses /dev -> / and /dev/null -> a host file', async () => {
    const evil = await layerWith('evildev', async (d) => {
      await fs.symlink('/', path.join(d, 'dev'));
    });
    await assert.rejects(run({ layers: [rootfs, evil], argv: ['true'] }), (e: unknown) => isArchwayError(e, 'UNSAFE'));
    const victim = path.join(tmp, 'victim');
    await fs.writeFile(victim, 'keep');
    const evil2 = await layerWith('evilnull', async (d) => {
      await fs.mkdir(path.join(d, 'dev'));
      await fs.symlink(victim, path.join(d, 'dev', 'null'));
    });
    await assert.rejects(run({ layers: [rootfs, evil2], argv: ['true'] }), (e: unknown) => isArchwayError(e, 'UNSAFE'));
    assert.equal(await fs.readFile(victim, 'utf8'), 'keep');
    const evil3 = await layerWith('evilsys', async (d) => {
      await fs.symlink('/sys', path.join(d, 'sys'));
    });
    await assert.rejects(run({ layers: [rootfs, evil3], argv: ['true'] }), (e: unknown) => isArchwayError(e, 'UNSAFE'));
  });

  it('a layer with /etc -> /host-path cannot make the sandbox write outside', async () => {
    const hostEtc = path.join(tmp, 'host-etc');
    await fs.mkdir(hostEtc);
    await fs.writeFile(path.join(hostEtc, 'passwd'), 'root:x:0:0::/:/bin/sh\nnobody:x:4242:4242::/:/bin/sh\n');
    const evil = await layerWith('eviletc', async (d) => {
      await fs.symlink(hostEtc, path.join(d, 'etc'));
    });
    const upper = path.join(tmp, 'evil-upper');
    const r = await run({
      layers: [rootfs, evil],
      upperDir: upper,
      argv: ['sh', '-c', 'echo pwned > /etc/pwned; cat /etc/hosts; true'],
    });
    assert.equal(r.exitCode, 0);
    assert.deepEqual((await fs.readdir(hostEtc)).sort(), ['passwd']);
    // the user lookup does not read the host's file through the link either
    await assert.rejects(resolveUser([rootfs, evil], 'nobody'), (e: unknown) => isArchwayError(e, 'USAGE'));
    // a bind target through the link is refused
    await assert.rejects(
      run({ layers: [rootfs, evil], argv: ['true'], binds: [{ source: tmp, target: '/etc/x', readonly: true }] }),
      (e: unknown) => isArchwayError(e, 'UNSAFE'),
    );
    assert.deepEqual((await fs.readdir(hostEtc)).sort(), ['passwd']);
  });

  it('with the copy driver too, a layer with /etc -> /host-path cannot make the sandbox write outside', async () => {
    const hostEtc = path.join(tmp, 'host-etc-copy');
    await fs.mkdir(hostEtc);
    const evil = await layerWith('eviletc-copy', async (d) => {
      await fs.symlink(hostEtc, path.join(d, 'etc'));
      await fs.mkdir(path.join(d, 'work'));
      await fs.symlink('/', path.join(d, 'work', 'up'));
    });
    const r = await run({
      layers: [rootfs, evil],
      rootfsDriver: 'copy',
      argv: ['sh', '-c', 'echo pwned > /etc/pwned; echo pwned > /work/up/tmp/pwned-too; true'],
    });
    assert.equal(r.exitCode, 0, r.err);
    assert.equal(r.rootfs, 'copy');
    assert.deepEqual(await fs.readdir(hostEtc), []);
    await assert.rejects(fs.lstat('/tmp/pwned-too'));
  });

  it('a cwd through an absolute link stays inside the root', async () => {
    const outside = path.join(tmp, 'outside-wd');
    await fs.mkdir(outside);
    const evil = await layerWith('evilwd', async (d) => {
      await fs.symlink(outside, path.join(d, 'work'));
    });
    const r = await run({ layers: [rootfs, evil], argv: ['sh', '-c', 'pwd; touch here'], cwd: '/work/sub' });
    assert.equal(r.exitCode, 0, r.err);
    assert.deepEqual(await fs.readdir(outside), []);
  });
});

const FOREIGN: Array<[string, string]> = [
  ['linux/arm64', 'aarch64'],
  ['linux/arm/v7', 'armv7l'],
  ['linux/ppc64le', 'ppc64le'],
  ['linux/s390x', 's390x'],
  ['linux/386', 'i686'],
];

describe('runInSandbox on foreign platforms', { skip: (!isRoot && 'needs root') || (!onAmd64 && 'amd64 host only') }, () => {
  before(async () => {
    // never uninstalled: other tests use these emulators concurrently. 386 needs one only where
    // the kernel cannot run 32-bit x86 itself (registering it elsewhere would take over native runs).
    const i386 = (await kernelRefuses(parsePlatform('linux/386'))) ? ['i386'] : [];
    await installEmulators(['aarch64', 'arm', 'ppc64le', 's390x', ...i386]);
  });
  for (const [plat, machine] of FOREIGN) {
    it(`${plat}: uname -m prints ${machine}`, async () => {
      const platform: Platform = parsePlatform(plat);
      const root = await busyboxRootfs(platform);
      const r = await run({ layers: [root], argv: ['uname', '-m'], platform });
      assert.equal(r.exitCode, 0, r.err);
      assert.equal(r.out.trim(), machine);
    });
  }

  it('a platform without an emulator is an EMULATION error naming the install command', async () => {
    // No other test uses loongarch64: take its entry away for this test (setup's `binfmt
    // --install all` registers it) and put it back after.
    const registered = (await canRun(parsePlatform('linux/loong64'))).ok;
    if (registered) await uninstallEmulators(['loongarch64']);
    try {
      const rootfs = await busyboxRootfs(parsePlatform('linux/amd64'));
      await assert.rejects(run({ layers: [rootfs], argv: ['true'], platform: parsePlatform('linux/loong64') }), (e: unknown) => {
        assert.ok(isArchwayError(e, 'EMULATION'));
        assert.equal(e.exitCode, 7);
        assert.match(e.hint ?? '', /archway binfmt --install loongarch64/);
        return true;
      });
    } finally {
      if (registered) await installEmulators(['loongarch64']);
    }
  });
});
