import { strict as assert } from 'node:assert';
import { spawnSync } from 'node:child_process';
import { existsSync, promises as fs } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { describe, it } from 'node:test';
import { parsePlatform } from '../oci/index.js';
import { keptAnswerFile, probeBinary, refusesWithMemory, runsHere } from './compat.js';

describe('companion-architecture probe', () => {
  for (const [platform, machine, qemu] of [
    ['linux/386', 3, '/usr/bin/qemu-i386-static'],
    ['linux/arm/v7', 40, '/usr/bin/qemu-arm-static'],
  ] as const) {
    it(`the ${platform} probe is a static ELF32 that exits 42 (run under ${path.basename(qemu)})`, async (t) => {
      const bin = probeBinary(parsePlatform(platform));
      assert.ok(bin);
      assert.equal(bin.subarray(0, 4).toString('latin1'), '\x7fELF');
      assert.equal(bin[4], 1, 'ELFCLASS32');
      assert.equal(bin.readUInt16LE(18), machine);
      if (!existsSync(qemu)) {
        t.skip(`${qemu} is not installed (Debian package qemu-user-static)`);
        return;
      }
      // QEMU runs the file itself, whatever the kernel and binfmt_misc would do with it.
      const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'archway-probe-test-'));
      try {
        const file = path.join(dir, 'probe');
        await fs.writeFile(file, bin, { mode: 0o755 });
        assert.equal(spawnSync(qemu, [file]).status, 42);
      } finally {
        await fs.rm(dir, { recursive: true, force: true });
      }
    });
  }

  it('has no probe for the host architecture or other systems', () => {
    assert.equal(probeBinary(parsePlatform('linux/amd64')), undefined);
    assert.equal(probeBinary(parsePlatform('windows/386')), undefined);
  });

  it('tells a binary the kernel refuses from one that runs', async () => {
    // An ELF for a machine no kernel or binfmt_misc entry knows (0x7fff) is refused with ENOEXEC.
    const alien = probeBinary(parsePlatform('linux/386'));
    assert.ok(alien);
    alien.writeUInt16LE(0x7fff, 18);
    assert.equal(await runsHere(alien), 'no');
    assert.equal(await runsHere(Buffer.from('#!/bin/sh\nexit 42\n')), 'yes');
    assert.equal(await runsHere(Buffer.from('#!/bin/sh\nexit 3\n')), 'no');
  });

  it('keeps the answer for the boot, and trusts only a kept answer of its own', async () => {
    const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'archway-kept-test-'));
    try {
      const file = keptAnswerFile('386', { XDG_RUNTIME_DIR: dir });
      assert.ok(file, 'the boot id is readable here');
      assert.ok(file.startsWith(`${dir}/`));
      const runs = Buffer.from('#!/bin/sh\nexit 42\n');
      // First asked: the probe runs (the binary exits 42) and its answer is kept.
      assert.equal(await refusesWithMemory(runs, file), false);
      assert.equal(await fs.readFile(file, 'utf8'), 'runs\n');
      // A kept answer is taken without running anything: this one says "refuses".
      await fs.writeFile(file, 'refuses\n', { mode: 0o600 });
      assert.equal(await refusesWithMemory(runs, file), true);
      // One that others may write is not trusted: the probe runs again and replaces it.
      await fs.chmod(file, 0o666);
      assert.equal(await refusesWithMemory(runs, file), false);
      assert.equal(await fs.readFile(file, 'utf8'), 'runs\n');
      assert.equal((await fs.stat(file)).mode & 0o777, 0o600);
      // Nor is a symlink planted in its place.
      await fs.rm(file);
      await fs.writeFile(path.join(dir, 'elsewhere'), 'refuses\n', { mode: 0o600 });
      await fs.symlink(path.join(dir, 'elsewhere'), file);
      assert.equal(await refusesWithMemory(runs, file), false);
    } finally {
      await fs.rm(dir, { recursive: true, force: true });
    }
  });
});
