/**
 * Copy scenarios: a ≥ 250 MB four-platform image (distinct data per platform) copied from
 * registry A to registry B, archway copy against skopeo copy --all; B either fresh for every run
 * (restarted on the same port with empty storage) or already holding every blob.
 */
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import { FOUR_PLATFORMS } from './build.js';
import {
  archwayArgv,
  archwayEnv,
  freePort,
  makeTempDir,
  mustRun,
  removeTree,
  scale,
  startRegistry,
  writeDataSet,
  type BenchRegistry,
  type PreparedScenario,
  type ScenarioDef,
} from './common.js';

interface Source {
  dir: string;
  registry: BenchRegistry;
  ref: string;
}

async function pushSource(label: string): Promise<Source> {
  const dir = makeTempDir(label);
  let registry: BenchRegistry | undefined;
  try {
    registry = await startRegistry();
    const ctx = path.join(dir, 'context');
    const perPlatform = Math.floor(66 * 1024 * 1024 * scale());
    for (const p of FOUR_PLATFORMS.split(',')) {
      const [, arch, variant] = p.split('/');
      await writeDataSet(path.join(ctx, `data-${arch}${variant ?? ''}`), { bytes: perPlatform, seed: `copy-${p}` });
    }
    await fs.writeFile(path.join(ctx, 'Dockerfile'), 'FROM scratch\nARG TARGETARCH\nARG TARGETVARIANT\nCOPY data-${TARGETARCH}${TARGETVARIANT}/ /data/\n');
    const a = archwayEnv(dir);
    const ref = `${registry.host}/bench/x:1`;
    await mustRun(archwayArgv('build', '--progress', 'plain', '--platform', FOUR_PLATFORMS, '-t', ref, '--push', '--insecure-registry', registry.host, ctx), { env: a.env });
    // The context and the store are not needed any more; the registry holds the image.
    await removeTree(ctx);
    await removeTree(a.home);
    return { dir, registry, ref };
  } catch (e) {
    await registry?.stop();
    await removeTree(dir);
    throw e;
  }
}

function copyScenario(existing: boolean): ScenarioDef {
  const name = existing ? 'copy-multiarch-existing' : 'copy-multiarch';
  return {
    name,
    async setup(): Promise<PreparedScenario> {
      const src = await pushSource(name);
      const port = await freePort();
      let dest: BenchRegistry | undefined;
      const destHost = `127.0.0.1:${port}`;
      const a = archwayEnv(src.dir);
      const archway = archwayArgv('copy', '--progress', 'plain', '--multi-arch', 'all', '--insecure-registry', src.registry.host, '--insecure-registry', destHost, `docker://${src.ref}`, `docker://${destHost}/bench/x:2`);
      const peer = ['skopeo', 'copy', '--all', '--src-tls-verify=false', '--dest-tls-verify=false', `docker://${src.ref}`, `docker://${destHost}/bench/x:2`];
      try {
        dest = await startRegistry(port);
        if (existing) await mustRun(archway, { env: a.env });
      } catch (e) {
        await dest?.stop();
        await src.registry.stop();
        await removeTree(src.dir);
        throw e;
      }
      return {
        scenario: {
          name,
          prepare: existing
            ? undefined
            : async () => {
                await dest?.stop();
                dest = await startRegistry(port);
              },
          archway: { argv: archway, env: a.env },
          peer: { name: 'skopeo copy --all', argv: peer },
          targetRatio: existing ? 0.5 : 0.8,
          targetRssMb: 150,
        },
        cleanup: async () => {
          await dest?.stop();
          await src.registry.stop();
          await removeTree(src.dir);
        },
      };
    },
  };
}

export const copyScenarios: ScenarioDef[] = [copyScenario(false), copyScenario(true)];
