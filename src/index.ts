/**
 * archway as a library: the same operations the CLI runs, for programs. The facades take strings
 * (references, platforms); the typed core is in each layer's own module.
 */
export * as oci from './oci/index.js';
export * as ref from './ref/index.js';
export * as image from './image/index.js';
export { Store } from './store/index.js';
export { buildDockerfile, planDockerfile } from './build/index.js';
export { main as runArchway } from './cli/index.js';
