/**
 * Build scenarios: six platforms cold and warm (RUN under QEMU + a COPY), and a copy-heavy build,
 * archway against buildah, both starting from the same multi-platform busybox base in their stores.
 */
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import { parsePlatformList } from '../../src/oci/index.js';
import { makeBusyboxContext } from '../../test/support/make-busybox-context.js';
import {
  archwayArgv,
  archwayEnv,
  containersWithFallback,
  makeTempDir,
  mustRun,
  removeContainersEnv,
  removeTree,
  runCommand,
  scale,
  writeDataSet,
  type ArchwayEnv,
  type ContainersEnv,
  type PreparedScenario,
  type ScenarioDef,
} from './common.js';

export const SIX_PLATFORMS = 'linux/amd64,linux/arm64,linux/arm/v7,linux/ppc64le,linux/s390x,linux/386';
export const FOUR_PLATFORMS = 'linux/amd64,linux/arm64,linux/arm/v7,linux/s390x';

/** The base image name both tools get (buildah resolves the short name to localhost/bench/busybox). */
export const BASE = 'bench/busybox';

export interface BaseSetup {
  dir: string;
  archway: ArchwayEnv;
  containers: ContainersEnv;
}

/** Builds the busybox base for `platforms` into a fresh archway store and a fresh buildah root. */
export async function setupBase(label: string, platforms: string): Promise<BaseSetup> {
  const dir = makeTempDir(label);
  try {
    const ctx = path.join(dir, 'busybox-context');
    await makeBusyboxContext(ctx, parsePlatformList(platforms));
    const archway = archwayEnv(dir);
    await mustRun(archwayArgv('build', '--progress', 'plain', '--platform', platforms, '-t', BASE, ctx), { env: archway.env });
    const containers = await containersWithFallback(dir, async (c) => {
      await mustRun(c.buildah('build', '--platform', platforms, '--manifest', BASE, ctx), { env: c.env });
    });
    return { dir, archway, containers };
  } catch (e) {
    await removeTree(dir);
    throw e;
  }
}

export async function teardownBase(b: BaseSetup): Promise<void> {
  await removeContainersEnv(b.containers);
  await removeTree(b.dir);
}

async function writeAppContext(dir: string): Promise<void> {
  await fs.mkdir(dir, { recursive: true });
  await fs.writeFile(
    path.join(dir, 'Dockerfile'),
    [
      `FROM ${BASE}`,
      'ARG TARGETPLATFORM',
      'ARG BUILDPLATFORM',
      'RUN echo "$TARGETPLATFORM $BUILDPLATFORM $(uname -m)" > /info.txt',
      'COPY hello.txt /hello.txt',
      '',
    ].join('\n'),
  );
  await fs.writeFile(path.join(dir, 'hello.txt'), 'hello from the archway benchmark\n');
}

function sixPlatforms(warm: boolean): ScenarioDef {
  const name = warm ? 'build-6-platforms-warm' : 'build-6-platforms-cold';
  return {
    name,
    async setup(): Promise<PreparedScenario> {
      const base = await setupBase(name, SIX_PLATFORMS);
      try {
      const ctx = path.join(base.dir, 'app-context');
      await writeAppContext(ctx);
      const c = base.containers;
      const archway = archwayArgv('build', '--progress', 'plain', ...(warm ? [] : ['--no-cache']), '--platform', SIX_PLATFORMS, '-t', 'bench/app', ctx);
      const peer = c.buildah('build', warm ? '--layers' : '--layers=false', '--platform', SIX_PLATFORMS, '--manifest', 'bench/app', ctx);
      const removeManifest = async (): Promise<void> => {
        await runCommand(c.buildah('manifest', 'rm', 'localhost/bench/app'), { env: c.env });
      };
      if (warm) {
        // Warm both caches once, outside the measurement.
        await mustRun(archway, { env: base.archway.env });
        await removeManifest();
        await mustRun(peer, { env: c.env });
      }
      return {
        scenario: {
          name,
          prepare: removeManifest,
          archway: { argv: archway, env: base.archway.env },
          peer: { name: `buildah (${c.driver})`, argv: peer, env: c.env },
          targetRatio: warm ? 0.1 : 0.3,
          targetRssMb: 300,
        },
        cleanup: () => teardownBase(base),
      };
      } catch (e) {
        await teardownBase(base);
        throw e;
      }
    },
  };
}

const copyHeavy: ScenarioDef = {
  name: 'build-copy-heavy',
  async setup(): Promise<PreparedScenario> {
    const base = await setupBase('build-copy-heavy', FOUR_PLATFORMS);
    try {
      const ctx = path.join(base.dir, 'copy-context');
      await writeDataSet(path.join(ctx, 'data'), { bytes: Math.floor(84 * 1024 * 1024 * scale()), seed: 'copy-heavy' });
      await fs.writeFile(path.join(ctx, 'Dockerfile'), `FROM ${BASE}\nCOPY data/ /data/\n`);
      const c = base.containers;
      const removeManifest = async (): Promise<void> => {
        await runCommand(c.buildah('manifest', 'rm', 'localhost/bench/copy'), { env: c.env });
      };
      return {
        scenario: {
          name: 'build-copy-heavy',
          prepare: removeManifest,
          archway: { argv: archwayArgv('build', '--progress', 'plain', '--no-cache', '--platform', FOUR_PLATFORMS, '-t', 'bench/copy', ctx), env: base.archway.env },
          peer: { name: `buildah (${c.driver})`, argv: c.buildah('build', '--layers=false', '--platform', FOUR_PLATFORMS, '--manifest', 'bench/copy', ctx), env: c.env },
          targetRatio: 0.6,
        },
        cleanup: () => teardownBase(base),
      };
    } catch (e) {
      await teardownBase(base);
      throw e;
    }
  },
};

export const buildScenarios: ScenarioDef[] = [sixPlatforms(false), sixPlatforms(true), copyHeavy];
