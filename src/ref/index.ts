export * from './reference.js';
export * from './transport.js';
