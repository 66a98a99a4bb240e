export { buildDockerfile, planDockerfile, formatPlan } from './facade.js';
export type { BuildOptions, BuildResult, OutputSpec, PlatformOutcome } from './types.js';
export { resolveInRoot, cleanSourcePath } from './context.js';
export { cleanStaleMounts, withMergedRoot } from './rootfs.js';
export { layerSnapshot, layerSnapshots } from './snapshots.js';
export { parseSecretSpec, loadSecrets, MAX_SECRET_SIZE, type SecretSpec } from './secrets.js';
export { cacheMountsDir } from './mounts.js';
