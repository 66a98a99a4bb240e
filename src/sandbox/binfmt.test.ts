import { strict as assert } from 'node:assert';
import { promises as fs } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { isArchwayError } from '../util/index.js';
import { parsePlatform } from '../oci/index.js';
import {
  BINFMT_DIR,
  EMULATORS,
  canRun,
  emulatorForPlatform,
  emulatorSpec,
  installEmulators,
  parseBinfmtEntry,
  readBinfmt,
  supportedPlatforms,
  uninstallEmulators,
} from './index.js';
import { probeBinary, runsHere } from './compat.js';

const isRoot = process.getuid?.() === 0;

describe('binfmt table', () => {
  it('maps QEMU names, aliases and platforms', () => {
    assert.equal(emulatorSpec('arm64')?.name, 'aarch64');
    assert.equal(emulatorSpec('qemu-aarch64')?.name, 'aarch64');
    assert.equal(emulatorSpec('linux/arm/v7')?.name, 'arm');
    assert.equal(emulatorSpec('ppc64el')?.name, 'ppc64le');
    assert.equal(emulatorSpec('386')?.name, 'i386');
    assert.equal(emulatorSpec('mips64le')?.name, 'mips64el');
    assert.equal(emulatorSpec('nope'), undefined);
    assert.equal(emulatorForPlatform(parsePlatform('linux/arm/v6'))?.name, 'arm');
    assert.equal(emulatorForPlatform(parsePlatform('linux/s390x'))?.name, 's390x');
    assert.equal(emulatorForPlatform(parsePlatform('linux/riscv64'))?.name, 'riscv64');
  });

  it('has magic and mask of the same length for every emulator', () => {
    const bytes = (s: string): number => s.replace(/\\x[0-9a-f]{2}/gi, '.').length;
    for (const e of EMULATORS) assert.equal(bytes(e.magic), bytes(e.mask), e.name);
  });

  it('parses an entry file and recognizes its platform', () => {
    const text = [
      'enabled',
      'interpreter /usr/libexec/qemu-binfmt/aarch64-binfmt-P',
      'flags: POCF',
      'offset 0',
      'magic 7f454c460201010000000000000000000200b700',
      'mask ffffffffffffff00fffffffffffffffffeffffff',
      '',
    ].join('\n');
    const e = parseBinfmtEntry('qemu-aarch64', text);
    assert.equal(e.enabled, true);
    assert.equal(e.fixBinary, true);
    assert.equal(e.flags, 'POCF');
    assert.equal(e.platform, 'linux/arm64');
    assert.equal(e.interpreter, '/usr/libexec/qemu-binfmt/aarch64-binfmt-P');
    const s390 = parseBinfmtEntry(
      'qemu-s390x',
      'disabled\ninterpreter /usr/bin/qemu-s390x-static\nflags: \noffset 0\nmagic 7f454c4602020100000000000000000000020016\nmask fffffffffffffffcfffffffffffffffffffeffff\n',
    );
    assert.equal(s390.platform, 'linux/s390x');
    assert.equal(s390.enabled, false);
    assert.equal(s390.fixBinary, false);
  });
});

describe('binfmt on this kernel', { skip: !isRoot && 'needs root' }, () => {
  let tmp: string;
  before(async () => {
    tmp = await fs.mkdtemp(path.join(os.tmpdir(), 'archway-binfmt-test-'));
  });
  after(async () => {
    await fs.rm(tmp, { recursive: true, force: true });
  });

  it('readBinfmt agrees with /proc/sys/fs/binfmt_misc', async () => {
    const state = await readBinfmt();
    assert.equal(state.mounted, true);
    const status = (await fs.readFile(path.join(BINFMT_DIR, 'status'), 'utf8')).trim();
    assert.equal(state.enabled, status === 'enabled');
    const names = (await fs.readdir(BINFMT_DIR)).filter((n) => n !== 'register' && n !== 'status').sort();
    // entries may come and go while other tests run: every entry we report must be real
    for (const e of state.emulators) {
      let text: string;
      try {
        text = await fs.readFile(path.join(BINFMT_DIR, e.name), 'utf8');
      } catch {
        continue;
      }
      assert.equal(e.enabled, text.startsWith('enabled'));
      assert.match(text, new RegExp(`^interpreter ${e.interpreter.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}$`, 'm'));
      assert.match(text, new RegExp(`^flags: ${e.flags}$`, 'm'));
      assert.equal(e.fixBinary, e.flags.includes('F'));
    }
    for (const n of names) {
      if (!state.emulators.some((e) => e.name === n)) {
        // it must have been registered after we read
        assert.ok(n, `entry ${n} missing from readBinfmt`);
      }
    }
    const native = await supportedPlatforms();
    assert.ok(native.platforms.includes('linux/amd64') || native.platforms.length > 0);
  });

  it('installs and uninstalls qemu-mips64el (round trip)', async () => {
    await uninstallEmulators(['mips64el']);
    assert.equal((await canRun(parsePlatform('linux/mips64le'))).ok, false);
    const r = await installEmulators(['mips64el'], { persist: true, persistDir: tmp });
    assert.deepEqual(r.installed, ['qemu-mips64el']);
    const state = await readBinfmt();
    const e = state.emulators.find((x) => x.name === 'qemu-mips64el');
    assert.ok(e);
    assert.equal(e.enabled, true);
    assert.equal(e.fixBinary, true);
    assert.equal(e.platform, 'linux/mips64le');
    assert.equal(e.interpreter, '/usr/bin/qemu-mips64el-static');
    assert.match(e.flags, /F/);
    assert.match(e.flags, /C/);
    const conf = await fs.readFile(path.join(tmp, 'archway-qemu-mips64el.conf'), 'utf8');
    assert.match(conf, /^:qemu-mips64el:M:0:\\x7fELF\\x02\\x01\\x01.*:\/usr\/bin\/qemu-mips64el-static:P?OCF$/m);
    const can = await canRun(parsePlatform('linux/mips64le'));
    assert.deepEqual(can, { ok: true, via: 'emulator', emulator: 'qemu-mips64el' });
    assert.ok((await supportedPlatforms()).platforms.includes('linux/mips64le'));
    // a second install leaves it alone
    const again = await installEmulators(['mips64le']);
    assert.deepEqual(again.present, ['qemu-mips64el']);

    const u = await uninstallEmulators(['qemu-mips64el'], { persistDir: tmp });
    assert.deepEqual(u.removed, ['qemu-mips64el']);
    await assert.rejects(fs.access(path.join(tmp, 'archway-qemu-mips64el.conf')));
    assert.equal((await readBinfmt()).emulators.some((x) => x.name === 'qemu-mips64el'), false);
    const no = await canRun(parsePlatform('linux/mips64le'));
    assert.equal(no.ok, false);
    assert.match(no.hint ?? '', /archway binfmt --install mips64el/);
  });

  it('treats an entry without F as unusable and replaces it', async () => {
    await uninstallEmulators(['qemu-mips']);
    const spec = emulatorSpec('mips');
    assert.ok(spec);
    await fs.writeFile(path.join(BINFMT_DIR, 'register'), `:qemu-mips:M:0:${spec.magic}:${spec.mask}:/usr/bin/qemu-mips-static:`);
    try {
      const sp = await supportedPlatforms();
      assert.ok(!sp.platforms.includes('linux/mips'));
      assert.ok(sp.warnings.some((w) => w.includes('qemu-mips') && w.includes('F flag')));
      const c = await canRun(parsePlatform('linux/mips'));
      assert.equal(c.ok, false);
      assert.match(c.reason ?? '', /F \(fix-binary\)/);
      const r = await installEmulators(['mips']);
      assert.deepEqual(r.replaced, ['qemu-mips']);
      assert.equal((await canRun(parsePlatform('linux/mips'))).ok, true);
    } finally {
      await uninstallEmulators(['qemu-mips']);
    }
  });

  it('skips the host architecture and reports missing QEMU binaries', async () => {
    const r = await installEmulators(['amd64']);
    assert.equal(r.installed.length, 0);
    assert.equal(r.skipped[0]?.name, 'x86_64');
    await assert.rejects(installEmulators(['riscv64'], { qemuDir: tmp }), (e: unknown) => {
      assert.ok(isArchwayError(e, 'EMULATION'));
      assert.match(e.hint ?? '', /qemu-user-static/);
      return true;
    });
    await assert.rejects(installEmulators(['vax']), (e: unknown) => isArchwayError(e, 'USAGE'));
  });

  it('native platforms need no emulator; 386 is native only where the kernel runs it itself', async () => {
    assert.deepEqual(await canRun(parsePlatform('linux/amd64')), { ok: true, via: 'native' });
    const i386 = parsePlatform('linux/386');
    const entry = (await readBinfmt()).emulators.find((e) => e.enabled && e.platform === 'linux/386');
    const c = await canRun(i386);
    if (entry) {
      // binfmt_misc comes before the kernel's own ELF loader: the emulator runs 386 binaries.
      assert.equal(c.via, 'emulator');
      assert.equal(c.emulator, entry.name);
    } else if ((await runsHere(probeBinary(i386) as Buffer)) === 'no') {
      // A kernel without IA32 emulation: 386 needs QEMU, and the preflight names the fix.
      assert.equal(c.ok, false);
      assert.match(c.hint ?? '', /archway binfmt --install i386/);
    } else {
      assert.deepEqual(c, { ok: true, via: 'native' });
    }
    assert.equal((await supportedPlatforms()).native.includes('linux/386'), c.via === 'native');
  });
});
