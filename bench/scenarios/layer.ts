/**
 * Layer scenarios: a gzip layer from a 200 MB directory of mixed files (archway's
 * writeLayerFromDirectory against tar -czf), and unpacking it into a fresh dir (applyLayer against tar -xzf).
 */
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import { DIST_BENCH, makeTempDir, mustRun, removeTree, scale, writeDataSet, type PreparedScenario, type ScenarioDef } from './common.js';

const GZIP_CLI = path.join(DIST_BENCH, 'scenarios', 'layer-gzip-cli.js');
const UNPACK_CLI = path.join(DIST_BENCH, 'scenarios', 'layer-unpack-cli.js');

async function dataDir(label: string): Promise<{ dir: string; data: string }> {
  const dir = makeTempDir(label);
  const data = path.join(dir, 'data');
  try {
    await writeDataSet(data, { bytes: Math.floor(200 * 1024 * 1024 * scale()), seed: 'layer', mixed: true, largeShare: 0.6 });
  } catch (e) {
    await removeTree(dir);
    throw e;
  }
  return { dir, data };
}

const layerGzip: ScenarioDef = {
  name: 'layer-gzip',
  async setup(): Promise<PreparedScenario> {
    const { dir, data } = await dataDir('layer-gzip');
    const out = path.join(dir, 'layer.tar.gz');
    return {
      scenario: {
        name: 'layer-gzip',
        prepare: () => fs.rm(out, { force: true }),
        archway: { argv: [process.execPath, GZIP_CLI, data, out] },
        peer: { name: 'tar -czf', argv: ['tar', '-czf', out, '-C', data, '.'] },
        targetRatio: 0.6,
        targetRssMb: 200,
      },
      cleanup: () => removeTree(dir),
    };
  },
};

const layerUnpack: ScenarioDef = {
  name: 'layer-unpack',
  async setup(): Promise<PreparedScenario> {
    const { dir, data } = await dataDir('layer-unpack');
    const layer = path.join(dir, 'layer.tar.gz');
    const target = path.join(dir, 'unpacked');
    try {
      await mustRun([process.execPath, GZIP_CLI, data, layer]);
      await removeTree(data);
    } catch (e) {
      await removeTree(dir);
      throw e;
    }
    return {
      scenario: {
        name: 'layer-unpack',
        prepare: async () => {
          await fs.rm(target, { recursive: true, force: true });
          await fs.mkdir(target);
        },
        archway: { argv: [process.execPath, UNPACK_CLI, layer, target] },
        peer: { name: 'tar -xzf', argv: ['tar', '-xzf', layer, '-C', target] },
        targetRatio: 1.2,
      },
      cleanup: () => removeTree(dir),
    };
  },
};

export const layerScenarios: ScenarioDef[] = [layerGzip, layerUnpack];
