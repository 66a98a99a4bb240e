import { ArchwayError } from '../util/index.js';
import { applyLayer } from '../layer/index.js';
import type { LayerRef } from '../image/index.js';
import type { Store } from '../store/index.js';

/**
 * The unpacked snapshot of a layer, made once per diffID and kept in the store. Whiteouts are kept
 * in overlay form so snapshots stack as overlayfs lower directories. The unpacked content must
 * hash to the diffID the image config promises.
 *
 * The snapshot and its blob are leased for the rest of this process (see Store.lease): a
 * concurrent `archway prune` keeps them while a container or a build step may be using them,
 * even when the image was removed meanwhile.
 */
export async function layerSnapshot(store: Store, layer: LayerRef, signal?: AbortSignal): Promise<string> {
  await holdLayers(store, [layer], signal);
  return ensureLayerSnapshot(store, layer, signal);
}

/** Snapshots for a whole stack of layers, bottom first (leased as layerSnapshot's are). */
export async function layerSnapshots(store: Store, layers: readonly LayerRef[], signal?: AbortSignal): Promise<string[]> {
  await holdLayers(store, layers, signal);
  return Promise.all(layers.map((l) => ensureLayerSnapshot(store, l, signal)));
}

/** The lease is on disk before the snapshots are looked for: a prune either sees it or is over. */
async function holdLayers(store: Store, layers: readonly LayerRef[], signal?: AbortSignal): Promise<void> {
  if (layers.length === 0) return;
  await store.lease({ snapshots: layers.map((l) => l.diffID), blobs: layers.map((l) => l.descriptor.digest) }, signal ? { signal } : {});
}

function ensureLayerSnapshot(store: Store, layer: LayerRef, signal?: AbortSignal): Promise<string> {
  const s = signal ? { signal } : {};
  return store.ensureSnapshot(layer.diffID, async (tmp) => {
    const stream = await store.fetch(layer.descriptor, s);
    const res = await applyLayer(stream, tmp, { mediaType: layer.descriptor.mediaType, allowDevices: true, overlayWhiteouts: true, ...s });
    if (res.diffID !== layer.diffID) {
      throw new ArchwayError('INTEGRITY', `layer ${layer.descriptor.digest} unpacks to ${res.diffID}, but the image config says ${layer.diffID}`);
    }
  }, s);
}
