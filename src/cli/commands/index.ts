import type { Command } from '../command.js';
import { binfmtCommand } from './binfmt.js';
import { buildCommand } from './build.js';
import { copyCommand } from './copy.js';
import { duCommand } from './du.js';
import { imagesCommand } from './images.js';
import { indexCommand } from './index-command.js';
import { inspectCommand } from './inspect.js';
import { loginCommand } from './login.js';
import { logoutCommand } from './logout.js';
import { mirrorCommand } from './mirror.js';
import { platformsCommand } from './platforms.js';
import { pruneCommand } from './prune.js';
import { pullCommand } from './pull.js';
import { pushCommand } from './push.js';
import { rmCommand } from './rm.js';
import { runCommand } from './run.js';

/** Every top-level command, in the order `archway --help` lists them. */
export const commands: Command[] = [
  buildCommand,
  runCommand,
  inspectCommand,
  copyCommand,
  mirrorCommand,
  indexCommand,
  pullCommand,
  pushCommand,
  loginCommand,
  logoutCommand,
  imagesCommand,
  rmCommand,
  pruneCommand,
  duCommand,
  binfmtCommand,
  platformsCommand,
];
