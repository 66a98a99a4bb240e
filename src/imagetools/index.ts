export { copyImage, type CopyOptions, type CopyResult, type MultiArch } from './copy.js';
export { CopyPlan, planNode, executePlan, copyBlob, convertManifest, rewriteIndex, type ExecuteOptions, type ExecuteStats, type PlanContext, type PlannedNode } from './graph.js';
export {
  inspect,
  classifyIndex,
  formatInspectText,
  inspectJson,
  platformLines,
  type InspectOptions,
  type InspectResult,
  type ImageDetails,
  type IndexEntryInfo,
  type AttestationInfo,
  type LayerInfo,
} from './inspect.js';
export {
  createIndex,
  parseAnnotation,
  type IndexSource,
  type IndexTarget,
  type IndexCreateOptions,
  type IndexCreateResult,
  type IndexEntrySummary,
  type ParsedAnnotation,
} from './index-create.js';
export { parseSpec, expandTemplate, fromArgs, type IndexRequest } from './spec.js';
export { mirror, mirrorTargetName, parseImageList, type MirrorOptions, type MirrorItem } from './mirror.js';
export { openSource, openTarget, canMount, type OpenContext, type Opened, type RepositoryOpener } from './open.js';
export { MemoryTarget } from './memory.js';
