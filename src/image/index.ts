export * from './target.js';
export * from './read.js';
export * from './mutate.js';
export * from './validate.js';
