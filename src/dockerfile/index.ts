export { planBuild, PLATFORM_ARG_NAMES, type PlanOptions } from './plan.js';
export { parseDockerfile, parseGoDuration, parseWords, type Instruction, type InstructionKind, type ParsedDockerfile, type CommandArgs, type KV } from './instructions.js';
export { parseRaw, INSTRUCTIONS, type RawNode, type RawDockerfile, type Directives, type CheckDirective, type Heredoc } from './parser.js';
export { processWord, processWords, envFromRecord, ShellLexError, type EnvLookup, type LexOptions, type ExpandResult, type WordsResult } from './lex.js';
export { parseMount, splitCsv, type RawMount } from './mounts.js';
export { dockerignoreMatcher, selectIgnoreFile, readIgnorePatterns } from './dockerignore.js';
export { formatPlan } from '../graph/index.js';
