export * from './errors.js';
export * from './redact.js';
export * from './streams.js';
export * from './concurrency.js';
export * from './process.js';
export * from './memory.js';
