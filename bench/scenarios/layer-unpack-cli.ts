/** Benchmark helper: `node dist/bench/scenarios/layer-unpack-cli.js LAYER DIR` applies a layer file into DIR. */
import { createReadStream } from 'node:fs';
import { applyLayer } from '../../src/layer/index.js';

const [layer, dir] = process.argv.slice(2);
if (!layer || !dir) {
  console.error('usage: layer-unpack-cli LAYER DIR');
  process.exit(2);
}
await applyLayer(createReadStream(layer), dir, { mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip' });
