/**
 * Makes the build context of examples/busybox-base: one busybox root filesystem per platform,
 * named rootfs-ARCHVARIANT as the Dockerfile's COPY expects. Usage:
 *   node dist/test/support/make-busybox-context.js DIR linux/amd64,linux/arm64,...
 */
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { parsePlatformList, type Platform } from '../../src/oci/index.js';
import { busyboxRootfs } from './busybox-rootfs.js';

export async function makeBusyboxContext(dir: string, platforms: Platform[]): Promise<void> {
  await fs.mkdir(dir, { recursive: true });
  const dockerfile = fileURLToPath(new URL('../../../examples/busybox-base/Dockerfile', import.meta.url));
  await fs.copyFile(dockerfile, path.join(dir, 'Dockerfile'));
  for (const p of platforms) {
    const rootfs = await busyboxRootfs(p);
    const dest = path.join(dir, `rootfs-${p.architecture}${p.variant ?? ''}`);
    await fs.rm(dest, { recursive: true, force: true });
    // cp -a keeps the applet symlinks and modes exactly.
    const r = spawnSync('cp', ['-a', rootfs, dest]);
    if (r.status !== 0) throw new Error(`cp -a ${rootfs} ${dest} failed: ${r.stderr.toString()}`);
  }
}

if (process.argv[1] && fileURLToPath(import.meta.url) === path.resolve(process.argv[1])) {
  const [dir, list] = process.argv.slice(2);
  if (!dir || !list) {
    console.error('usage: make-busybox-context DIR PLATFORMS');
    process.exit(2);
  }
  await makeBusyboxContext(dir, parsePlatformList(list));
}
