/**
 * run-arm64: `archway run --platform linux/arm64 bench/busybox true` against `podman run --rm` of
 * the same image (exported by archway to an OCI layout and pulled into podman's own storage).
 */
import * as path from 'node:path';
import { parsePlatformList } from '../../src/oci/index.js';
import { makeBusyboxContext } from '../../test/support/make-busybox-context.js';
import { BASE } from './build.js';
import {
  archwayArgv,
  archwayEnv,
  containersWithFallback,
  makeTempDir,
  mustRun,
  removeContainersEnv,
  removeTree,
  type ContainersEnv,
  type PreparedScenario,
  type ScenarioDef,
} from './common.js';

const PLATFORMS = 'linux/amd64,linux/arm64';

export const runScenarios: ScenarioDef[] = [
  {
    name: 'run-arm64',
    async setup(): Promise<PreparedScenario> {
      const dir = makeTempDir('run-arm64');
      let containers: ContainersEnv | undefined;
      try {
        const ctx = path.join(dir, 'busybox-context');
        await makeBusyboxContext(ctx, parsePlatformList(PLATFORMS));
        const a = archwayEnv(dir);
        await mustRun(archwayArgv('build', '--progress', 'plain', '--platform', PLATFORMS, '-t', BASE, ctx), { env: a.env });
        const layout = path.join(dir, 'layout');
        await mustRun(archwayArgv('copy', '--progress', 'plain', '--multi-arch', 'all', `store:${BASE}:latest`, `oci:${layout}:busybox`), { env: a.env });
        containers = await containersWithFallback(dir, async (c) => {
          // skopeo names the image in podman's storage (podman pull oci:DIR names it after the path).
          const storage = `containers-storage:[${c.driver}@${c.root}+${c.runroot}]localhost/${BASE}:latest`;
          await mustRun(['skopeo', 'copy', '--override-arch', 'arm64', '--override-os', 'linux', `oci:${layout}:busybox`, storage], { env: c.env });
          // A probe run: when podman cannot run containers here, say why and skip.
          await mustRun(c.podman('run', '--rm', '--platform', 'linux/arm64', `localhost/${BASE}:latest`, 'true'), { env: c.env });
        });
        const c = containers;
        return {
          scenario: {
            name: 'run-arm64',
            archway: { argv: archwayArgv('run', '--platform', 'linux/arm64', BASE, 'true'), env: a.env },
            peer: { name: `podman run (${c.driver})`, argv: c.podman('run', '--rm', '--platform', 'linux/arm64', `localhost/${BASE}:latest`, 'true'), env: c.env },
            targetRatio: 0.5,
          },
          cleanup: async () => {
            await removeContainersEnv(c);
            await removeTree(dir);
          },
        };
      } catch (e) {
        if (containers) await removeContainersEnv(containers);
        await removeTree(dir);
        throw e;
      }
    },
  },
];
