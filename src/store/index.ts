export { OciLayout, OCI_LAYOUT_FILE, OCI_LAYOUT_VERSION, LAYOUT_TMP_DIR, type OpenLayoutOptions, type TaggedEntry, type Reachability } from './layout.js';
export {
  Store,
  storeHome,
  normalizeImageName,
  type StoreOptions,
  type ImageSummary,
  type PruneOptions,
  type PruneResult,
  type DiskUsage,
  type CountBytes,
} from './store.js';
export { withLock, writeFileAtomic, cleanTemps, tempName, tempOwnerOf, tempOwnerAlive, pidAlive, processStartTicks, type LockOptions, type SignalOptions } from './fsutil.js';
export { type Lease, type LeaseContent, type LeasedContent } from './leases.js';
