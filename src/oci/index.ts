export * from './digest.js';
export * from './mediatypes.js';
export * from './platform.js';
export * from './types.js';
