import { ArchwayError } from '../util/index.js';
import { applyLayer } from '../layer/index.js';
import type { LayerRef } from '../image/index.js';
import type { Store } from '../store/index.js';

/**
 * The unpacked snapshot of a layer, made once per diffID and kept in the store. Whiteouts are kept
 * in overlay form so snapshots stack as overlayfs lower directories. The unpacked content must
 * hash to the diffID the image config promises.
 */
export function layerSnapshot(store: Store, layer: LayerRef, signal?: AbortSignal): Promise<string> {
  const s = signal ? { signal } : {};
  return store.ensureSnapshot(layer.diffID, async (tmp) => {
    const stream = await store.fetch(layer.descriptor, s);
    const res = await applyLayer(stream, tmp, { mediaType: layer.descriptor.mediaType, allowDevices: true, overlayWhiteouts: true, ...s });
    if (res.diffID !== layer.diffID) {
      throw new ArchwayError('INTEGRITY', `layer ${layer.descriptor.digest} unpacks to ${res.diffID}, but the image config says ${layer.diffID}`);
    }
  }, s);
}

/** Snapshots for a whole stack of layers, bottom first. */
export function layerSnapshots(store: Store, layers: readonly LayerRef[], signal?: AbortSignal): Promise<string[]> {
  return Promise.all(layers.map((l) => layerSnapshot(store, l, signal)));
}
