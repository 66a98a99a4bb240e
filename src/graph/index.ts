export * from './types.js';
export { canonicalJson, contentKey } from './key.js';
export { stageDependencies, topologicalStages } from './order.js';
export { formatPlan } from './format.js';
