/** Benchmark helper: `node dist/bench/scenarios/layer-gzip-cli.js DIR OUT` writes DIR as a gzip layer. */
import { writeLayerFromDirectory } from '../../src/layer/index.js';

const [dir, out] = process.argv.slice(2);
if (!dir || !out) {
  console.error('usage: layer-gzip-cli DIR OUT');
  process.exit(2);
}
const info = await writeLayerFromDirectory(dir, out, { compression: 'gzip' });
console.log(JSON.stringify(info));
