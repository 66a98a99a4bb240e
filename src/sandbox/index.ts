export {
  BINFMT_DIR,
  EMULATORS,
  assertCanRun,
  canRun,
  emulatorForPlatform,
  emulatorSpec,
  installEmulators,
  parseBinfmtEntry,
  readBinfmt,
  runnableNatively,
  supportedPlatforms,
  uninstallEmulators,
} from './binfmt.js';
export type {
  BinfmtEntry,
  BinfmtState,
  CanRunResult,
  EmulatorSpec,
  InstallOptions,
  InstallResult,
  SupportedPlatforms,
} from './binfmt.js';
export { DEFAULT_PATH, runInSandbox } from './run.js';
export type { SandboxBind, SandboxControl, SandboxOptions, SandboxResult } from './run.js';
export { readFileInRoot, resolveInRoot, resolveUser } from './rootpath.js';
export type { ResolvedPath, ResolvedUser } from './rootpath.js';
export {
  isOverlayFailure,
  mergeLayers,
  noteOverlayUnavailable,
  overlayUnavailable,
  removeTree,
  rootfsDriverSetting,
  sameFilesystem,
  sweepStaleTemps,
} from './tree.js';
export type { MergeOptions, RootfsDriver } from './tree.js';
export { parseSubIds, userNamespaceBlocker, userNamespacePlan } from './userns.js';
export type { IdRange, UserNamespacePlan } from './userns.js';
