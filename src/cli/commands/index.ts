import type { Command } from '../command.js';
import { platformsCommand } from './platforms.js';

/** Every top-level command, in the order `archway --help` lists them. */
export const commands: Command[] = [platformsCommand];
