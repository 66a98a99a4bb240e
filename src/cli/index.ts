/** The CLI as a library: `main(argv, io, signal)` returns the exit code a shell would see. */
export { main, runCli } from './main.js';
export type { Io } from './main.js';
export { commands } from './commands/index.js';
