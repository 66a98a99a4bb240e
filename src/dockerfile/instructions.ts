/**
 * Typed instructions from raw nodes, after BuildKit's frontend/dockerfile/instructions/parse.go and
 * the argument parsers of parser/line_parsers.go. Values are kept unexpanded here.
 */
import type { Warning } from '../graph/index.js';
import { parseError, suggest } from './errors.js';
import { MountError, parseMount } from './mounts.js';
import { parseHeredocWord, parseRaw, INSTRUCTIONS, type Directives, type Heredoc, type RawNode } from './parser.js';

export type CommandArgs = { shell: string } | { exec: string[] };

export interface KV {
  key: string;
  value: string;
}

interface Common {
  line: number;
  column: number;
  endLine: number;
  original: string;
  node: RawNode;
}

export type Instruction = Common &
  (
    | { kind: 'from'; image: string; stageName?: string; platform?: string }
    | { kind: 'run'; command: CommandArgs; mounts: string[]; network?: string; security?: string; heredocs: Heredoc[] }
    | { kind: 'cmd'; command: CommandArgs }
    | { kind: 'entrypoint'; command: CommandArgs }
    | { kind: 'shell'; shell: string[] }
    | { kind: 'env'; pairs: KV[]; legacy: boolean }
    | { kind: 'label'; pairs: KV[]; legacy: boolean }
    | { kind: 'arg'; args: Array<{ key: string; value?: string }> }
    | { kind: 'expose'; ports: string[] }
    | { kind: 'volume'; paths: string[] }
    | { kind: 'user'; user: string }
    | { kind: 'workdir'; path: string }
    | { kind: 'stopsignal'; signal: string }
    | { kind: 'maintainer'; maintainer: string }
    | {
        kind: 'copy';
        sources: string[];
        dest: string;
        heredocSources: Heredoc[];
        from?: string;
        chown?: string;
        chmod?: string;
        link: boolean;
        parents: boolean;
        exclude: string[];
      }
    | {
        kind: 'add';
        sources: string[];
        dest: string;
        heredocSources: Heredoc[];
        chown?: string;
        chmod?: string;
        link: boolean;
        exclude: string[];
        checksum?: string;
        keepGitDir: boolean;
        unpack?: boolean;
      }
    | { kind: 'healthcheck'; test: string[]; interval?: number; timeout?: number; startPeriod?: number; startInterval?: number; retries?: number }
    | { kind: 'onbuild'; trigger: string; inner: Instruction }
  );

export type InstructionKind = Instruction['kind'];

export interface ParsedDockerfile {
  directives: Directives;
  instructions: Instruction[];
  warnings: Warning[];
}

type FlagType = 'string' | 'bool' | 'strings';

const FLAGS: Record<string, Record<string, FlagType>> = {
  FROM: { platform: 'string' },
  RUN: { mount: 'strings', network: 'string', security: 'string' },
  COPY: { from: 'string', chown: 'string', chmod: 'string', link: 'bool', parents: 'bool', exclude: 'strings' },
  ADD: { chown: 'string', chmod: 'string', link: 'bool', checksum: 'string', 'keep-git-dir': 'bool', exclude: 'strings', unpack: 'bool' },
  HEALTHCHECK: { interval: 'string', timeout: 'string', 'start-period': 'string', 'start-interval': 'string', retries: 'string' },
};

interface Flags {
  str: Map<string, string>;
  bool: Map<string, boolean>;
  list: Map<string, string[]>;
}

const STRING_ARRAY_ERROR = 'when using JSON array syntax, arrays must be comprised of strings only';

class Ctx {
  constructor(
    readonly file: string,
    readonly node: RawNode,
    readonly escape: string,
    readonly warnings: Warning[],
  ) {}
  error(message: string, column = this.node.column): Error {
    return parseError(this.file, { line: this.node.line, column, source: this.node.original }, message);
  }
  /** Column of `needle` in the instruction's first line, or the instruction's column. */
  columnOf(needle: string, after = 0): number {
    const first = this.node.original.split('\n')[0] ?? '';
    const i = first.indexOf(needle, this.node.column - 1 + after);
    return i >= 0 ? i + 1 : this.node.column;
  }
  warn(kind: Warning['kind'], message: string): void {
    this.warnings.push({ kind, message, file: this.file, line: this.node.line, column: this.node.column });
  }
}

function parseFlags(ctx: Ctx): Flags {
  const spec = FLAGS[ctx.node.cmd] ?? {};
  const out: Flags = { str: new Map(), bool: new Map(), list: new Map() };
  for (const arg of ctx.node.flags) {
    if (!arg.startsWith('--')) throw ctx.error(`arg should start with -- : ${arg}`);
    if (arg === '--') continue;
    const body = arg.slice(2);
    const eq = body.indexOf('=');
    const name = eq < 0 ? body : body.slice(0, eq);
    const value = eq < 0 ? undefined : body.slice(eq + 1);
    const col = ctx.columnOf(`--${name}`);
    const type = spec[name];
    if (type === undefined) {
      const s = suggest(name, Object.keys(spec));
      throw ctx.error(`unknown flag: --${name}${s ? ` (did you mean --${s}?)` : ''}`, col);
    }
    if (type !== 'strings' && (out.str.has(name) || out.bool.has(name))) throw ctx.error(`duplicate flag specified: --${name}`, col);
    if (type === 'bool') {
      if (value === undefined || value.toLowerCase() === 'true' || value === '') out.bool.set(name, true);
      else if (value.toLowerCase() === 'false') out.bool.set(name, false);
      else throw ctx.error(`expecting boolean value for flag --${name}, not: ${value}`, col);
    } else {
      if (value === undefined) throw ctx.error(`missing a value on flag: --${name}`, col);
      if (type === 'string') out.str.set(name, value);
      else out.list.set(name, [...(out.list.get(name) ?? []), value]);
    }
  }
  return out;
}

/** BuildKit's parseWords: whitespace-separated words, quotes and escapes kept in the words. */
export function parseWords(rest: string, escape: string): string[] {
  const words: string[] = [];
  let phase: 'spaces' | 'word' | 'quote' = 'spaces';
  let word = '';
  let quote = '';
  let blankOK = false;
  const chars = Array.from(rest);
  for (let pos = 0; pos <= chars.length; pos++) {
    let ch = chars[pos] ?? '';
    const end = pos === chars.length;
    if (phase === 'spaces') {
      if (end) break;
      if (/\s/u.test(ch)) continue;
      phase = 'word';
    }
    if (end) {
      if (blankOK || word.length > 0) words.push(word);
      break;
    }
    if (phase === 'word') {
      if (/\s/u.test(ch)) {
        phase = 'spaces';
        if (blankOK || word.length > 0) words.push(word);
        word = '';
        blankOK = false;
        continue;
      }
      if (ch === "'" || ch === '"') {
        quote = ch;
        blankOK = true;
        phase = 'quote';
      }
      if (ch === escape) {
        if (pos + 1 === chars.length) continue;
        word += ch;
        pos++;
        ch = chars[pos] as string;
      }
      word += ch;
      continue;
    }
    if (ch === quote) phase = 'word';
    if (ch === escape && quote !== "'") {
      if (pos + 1 === chars.length) {
        phase = 'word';
        continue;
      }
      pos++;
      word += ch;
      ch = chars[pos] as string;
    }
    word += ch;
  }
  return words;
}

type JsonResult = { ok: true; list: string[] } | { ok: false; notStrings: boolean; error?: string };

function parseJsonArray(rest: string): JsonResult {
  const t = rest.trimStart();
  if (!t.startsWith('[')) return { ok: false, notStrings: false };
  let v: unknown;
  try {
    v = JSON.parse(t);
  } catch (e) {
    return { ok: false, notStrings: false, error: (e as Error).message };
  }
  if (!Array.isArray(v)) return { ok: false, notStrings: false };
  if (!v.every((x): x is string => typeof x === 'string')) return { ok: false, notStrings: true };
  return { ok: true, list: v };
}

/** RUN, CMD, ENTRYPOINT, SHELL, HEALTHCHECK CMD: JSON array if it parses, otherwise the shell form. */
function maybeJson(ctx: Ctx, rest: string): CommandArgs {
  const j = parseJsonArray(rest);
  if (j.ok) return { exec: j.list };
  if (j.notStrings) throw ctx.error(STRING_ARRAY_ERROR, ctx.columnOf('['));
  if (j.error !== undefined) {
    ctx.warn('invalid-json', `${ctx.node.cmd} argument starts with "[" but is not a valid JSON array (${j.error}); it runs as a shell command, as BuildKit does`);
  }
  return { shell: rest };
}

/** ADD, COPY, VOLUME: JSON array, else whitespace-separated words. */
function maybeJsonToList(ctx: Ctx, rest: string): { list: string[]; json: boolean } {
  const j = parseJsonArray(rest);
  if (j.ok) return { list: j.list, json: true };
  if (j.notStrings) throw ctx.error(STRING_ARRAY_ERROR, ctx.columnOf('['));
  if (j.error !== undefined) {
    ctx.warn('invalid-json', `${ctx.node.cmd} argument starts with "[" but is not a valid JSON array (${j.error}); it is split on whitespace, as BuildKit does`);
  }
  return { list: rest.split(/[\t\v\f\r\n ]+/).filter((s) => s !== ''), json: false };
}

/** ENV and LABEL: `key=value ...` or the legacy `key value`. */
function nameVal(ctx: Ctx, rest: string, what: string): { pairs: KV[]; legacy: boolean } {
  const words = parseWords(rest, ctx.escape);
  if (words.length === 0) throw ctx.error(`${what} must have two arguments`);
  if (!(words[0] as string).includes('=')) {
    const parts = rest.split(/[\t\v\f\r ]+/);
    const key = parts[0] ?? '';
    const m = /^\S+[\t\v\f\r ]+([\s\S]*)$/.exec(rest);
    if (!m || parts.length < 2) throw ctx.error(`${what} must have two arguments`);
    ctx.warn('legacy-key-value', `"${what} key=value" should be used instead of legacy "${what} key value" format`);
    return { pairs: [{ key, value: m[1] as string }], legacy: true };
  }
  const pairs: KV[] = [];
  for (const w of words) {
    const eq = w.indexOf('=');
    if (eq < 0) throw ctx.error(`Syntax error - can't find = in "${w}". Must be of the form: name=value`, ctx.columnOf(w));
    if (eq === 0) throw ctx.error(`${what} names can not be blank`, ctx.columnOf(w));
    pairs.push({ key: w.slice(0, eq), value: w.slice(eq + 1) });
  }
  return { pairs, legacy: false };
}

/** Go's time.ParseDuration, in nanoseconds. */
export function parseGoDuration(s: string): number {
  const units: Record<string, number> = { ns: 1, us: 1e3, 'µs': 1e3, 'μs': 1e3, ms: 1e6, s: 1e9, m: 60e9, h: 3600e9 };
  let rest = s;
  let sign = 1;
  if (rest.startsWith('-') || rest.startsWith('+')) {
    if (rest.startsWith('-')) sign = -1;
    rest = rest.slice(1);
  }
  if (rest === '0') return 0;
  if (rest === '') throw new Error(`time: invalid duration "${s}"`);
  let total = 0;
  // µs (micro sign) and μs (Greek mu), escaped: a bundle of ASCII only loads as a one-byte string.
  const re = /^(\d+(?:\.\d*)?|\.\d+)(ns|us|\u00b5s|\u03bcs|ms|s|m|h)/u;
  while (rest !== '') {
    const m = re.exec(rest);
    if (!m) {
      if (/^(\d+(?:\.\d*)?|\.\d+)$/.test(rest)) throw new Error(`time: missing unit in duration "${s}"`);
      throw new Error(`time: invalid duration "${s}"`);
    }
    total += Number(m[1]) * (units[m[2] as string] as number);
    rest = rest.slice(m[0].length);
  }
  return Math.round(sign * total);
}

function optInterval(ctx: Ctx, flags: Flags, name: string): number | undefined {
  const v = flags.str.get(name);
  if (v === undefined || v === '') return undefined;
  let d: number;
  try {
    d = parseGoDuration(v);
  } catch (e) {
    throw ctx.error((e as Error).message, ctx.columnOf(`--${name}`));
  }
  if (d === 0) return 0;
  if (d < 1e6) throw ctx.error(`Interval "${name}" cannot be less than 1ms`, ctx.columnOf(`--${name}`));
  return d;
}

function exactlyOne(ctx: Ctx, rest: string): string {
  if (rest === '') throw ctx.error(`${ctx.node.cmd} requires exactly one argument`);
  return rest;
}

function sourcesAndDest(ctx: Ctx, rest: string): { sources: string[]; dest: string; heredocSources: Heredoc[] } {
  const { list } = maybeJsonToList(ctx, rest);
  const what = ctx.node.cmd;
  if (list.length === 0) throw ctx.error(`${what} requires at least two arguments, but none were provided. Destination could not be determined.`);
  if (list.length < 2) throw ctx.error(`${what} requires at least two arguments, but only one was provided. Destination could not be determined.`);
  const dest = list[list.length - 1] as string;
  if (ctx.node.heredocs.length > 0 && parseHeredocWord(dest) !== undefined) {
    throw ctx.error(`${what} cannot accept a heredoc as a destination`, ctx.columnOf(dest));
  }
  const sources: string[] = [];
  const heredocSources: Heredoc[] = [];
  for (const src of list.slice(0, -1)) {
    const w = ctx.node.heredocs.length > 0 ? parseHeredocWord(src) : undefined;
    const h = w ? ctx.node.heredocs.find((x) => x.name === w.name) : undefined;
    if (h) heredocSources.push(h);
    else sources.push(src);
  }
  return { sources, dest, heredocSources };
}

const STAGE_NAME_RE = /^[a-z][a-z0-9-_.]*$/;

function parseOne(ctx: Ctx, inOnbuild: boolean): Instruction {
  const n = ctx.node;
  const base: Common = { line: n.line, column: n.column, endLine: n.endLine, original: n.original, node: n };
  const flags = parseFlags(ctx);
  const rest = n.args;
  switch (n.cmd) {
    case 'FROM': {
      const words = rest.split(/[\t\v\f\r\n ]+/).filter((w) => w !== '');
      if (words.length !== 1 && words.length !== 3) throw ctx.error('FROM requires either one or three arguments');
      let stageName: string | undefined;
      if (words.length === 3) {
        if ((words[1] as string).toLowerCase() !== 'as') throw ctx.error(`FROM requires either one or three arguments; expected "AS" but got "${words[1]}"`, ctx.columnOf(words[1] as string));
        const raw = words[2] as string;
        stageName = raw.toLowerCase();
        if (!STAGE_NAME_RE.test(stageName)) {
          throw ctx.error(`invalid name for build stage: "${raw}", name can't start with a number or contain symbols`, ctx.columnOf(raw));
        }
        if (raw !== stageName) ctx.warn('stage-name-casing', `stage name "${raw}" should be lowercase`);
        const kw = n.keyword;
        const asKw = words[1] as string;
        if ((kw === kw.toUpperCase()) !== (asKw === asKw.toUpperCase())) ctx.warn('from-as-casing', `'${asKw}' and '${kw}' keywords' casing do not match`);
      }
      const out: Instruction = { ...base, kind: 'from', image: words[0] as string };
      if (stageName !== undefined) out.stageName = stageName;
      const platform = flags.str.get('platform');
      if (platform !== undefined) out.platform = platform;
      return out;
    }
    case 'RUN': {
      if (rest === '') throw ctx.error('RUN requires at least one argument');
      const command = maybeJson(ctx, rest);
      const mounts = flags.list.get('mount') ?? [];
      for (const m of mounts) {
        try {
          parseMount(m);
        } catch (e) {
          if (e instanceof MountError) throw ctx.error(`invalid --mount=${m}: ${e.message}`, ctx.columnOf('--mount'));
          throw e;
        }
      }
      const out: Instruction = { ...base, kind: 'run', command, mounts, heredocs: n.heredocs };
      const network = flags.str.get('network');
      if (network !== undefined) {
        if (!network.includes('$') && !['default', 'none', 'host'].includes(network)) {
          throw ctx.error(`unsupported network mode "${network}" (expected default, none or host)`, ctx.columnOf('--network'));
        }
        out.network = network;
      }
      const security = flags.str.get('security');
      if (security !== undefined) {
        if (!['sandbox', 'insecure'].includes(security)) throw ctx.error(`unsupported security mode "${security}" (expected sandbox or insecure)`, ctx.columnOf('--security'));
        out.security = security;
      }
      return out;
    }
    case 'CMD':
    case 'ENTRYPOINT': {
      const command = rest === '' ? { exec: [] } : maybeJson(ctx, rest);
      if ('shell' in command) ctx.warn('json-args-recommended', `JSON arguments recommended for ${n.cmd} to prevent unintended behavior related to OS signals`);
      return n.cmd === 'CMD' ? { ...base, kind: 'cmd', command } : { ...base, kind: 'entrypoint', command };
    }
    case 'SHELL': {
      const j = parseJsonArray(rest);
      if (!j.ok) {
        if (j.notStrings) throw ctx.error(STRING_ARRAY_ERROR, ctx.columnOf('['));
        throw ctx.error(`SHELL requires the arguments to be in JSON form${j.error !== undefined ? ` (${j.error})` : ''}`);
      }
      if (j.list.length === 0) throw ctx.error('SHELL requires at least one argument');
      return { ...base, kind: 'shell', shell: j.list };
    }
    case 'ENV': {
      const { pairs, legacy } = nameVal(ctx, rest, 'ENV');
      return { ...base, kind: 'env', pairs, legacy };
    }
    case 'LABEL': {
      const { pairs, legacy } = nameVal(ctx, rest, 'LABEL');
      return { ...base, kind: 'label', pairs, legacy };
    }
    case 'ARG': {
      const words = parseWords(rest, ctx.escape);
      if (words.length === 0) throw ctx.error('ARG requires at least one argument');
      const args = words.map((w) => {
        const eq = w.indexOf('=');
        if (eq === 0) throw ctx.error('ARG names can not be blank', ctx.columnOf(w));
        return eq < 0 ? { key: w } : { key: w.slice(0, eq), value: w.slice(eq + 1) };
      });
      return { ...base, kind: 'arg', args };
    }
    case 'EXPOSE': {
      const ports = rest.split(/[\t\v\f\r\n ]+/).filter((w) => w !== '');
      if (ports.length === 0) throw ctx.error('EXPOSE requires at least one argument');
      return { ...base, kind: 'expose', ports };
    }
    case 'VOLUME': {
      const { list } = maybeJsonToList(ctx, rest);
      if (list.length === 0) throw ctx.error('VOLUME requires at least one argument');
      for (const p of list) if (p.trim() === '') throw ctx.error('VOLUME specified can not be an empty string');
      return { ...base, kind: 'volume', paths: list };
    }
    case 'USER':
      return { ...base, kind: 'user', user: exactlyOne(ctx, rest) };
    case 'WORKDIR':
      return { ...base, kind: 'workdir', path: exactlyOne(ctx, rest) };
    case 'STOPSIGNAL':
      return { ...base, kind: 'stopsignal', signal: exactlyOne(ctx, rest) };
    case 'MAINTAINER':
      ctx.warn('maintainer-deprecated', 'MAINTAINER instruction is deprecated in favor of using label');
      return { ...base, kind: 'maintainer', maintainer: exactlyOne(ctx, rest) };
    case 'COPY': {
      const sd = sourcesAndDest(ctx, rest);
      const out: Instruction = {
        ...base,
        kind: 'copy',
        ...sd,
        link: flags.bool.get('link') ?? false,
        parents: flags.bool.get('parents') ?? false,
        exclude: flags.list.get('exclude') ?? [],
      };
      for (const k of ['from', 'chown', 'chmod'] as const) {
        const v = flags.str.get(k);
        if (v !== undefined) out[k] = v;
      }
      return out;
    }
    case 'ADD': {
      const sd = sourcesAndDest(ctx, rest);
      const out: Instruction = {
        ...base,
        kind: 'add',
        ...sd,
        link: flags.bool.get('link') ?? false,
        keepGitDir: flags.bool.get('keep-git-dir') ?? false,
        exclude: flags.list.get('exclude') ?? [],
      };
      for (const k of ['chown', 'chmod', 'checksum'] as const) {
        const v = flags.str.get(k);
        if (v !== undefined) out[k] = v;
      }
      const unpack = flags.bool.get('unpack');
      if (unpack !== undefined) out.unpack = unpack;
      if (out.checksum !== undefined && !out.checksum.includes('$') && !/^(sha256|sha384|sha512):[0-9a-f]+$/.test(out.checksum)) {
        throw ctx.error(`invalid checksum digest format "${out.checksum}" (expected sha256:<hex>)`, ctx.columnOf('--checksum'));
      }
      return out;
    }
    case 'HEALTHCHECK': {
      const m = /^(\S+)\s*([\s\S]*)$/.exec(rest);
      if (!m) throw ctx.error('HEALTHCHECK requires at least one argument');
      const typ = (m[1] as string).toUpperCase();
      const cmdText = m[2] as string;
      if (typ === 'NONE') {
        if (cmdText !== '') throw ctx.error('HEALTHCHECK NONE takes no arguments');
        return { ...base, kind: 'healthcheck', test: ['NONE'] };
      }
      if (typ !== 'CMD') throw ctx.error(`Unknown type "${m[1]}" in HEALTHCHECK (try CMD)`, ctx.columnOf(m[1] as string));
      if (cmdText === '') throw ctx.error('Missing command after HEALTHCHECK CMD');
      const cmd = maybeJson(ctx, cmdText);
      const test = 'exec' in cmd ? ['CMD', ...cmd.exec] : ['CMD-SHELL', cmd.shell];
      if ('exec' in cmd && cmd.exec.length === 0) throw ctx.error('Missing command after HEALTHCHECK CMD');
      const out: Instruction = { ...base, kind: 'healthcheck', test };
      const interval = optInterval(ctx, flags, 'interval');
      const timeout = optInterval(ctx, flags, 'timeout');
      const startPeriod = optInterval(ctx, flags, 'start-period');
      const startInterval = optInterval(ctx, flags, 'start-interval');
      if (interval !== undefined) out.interval = interval;
      if (timeout !== undefined) out.timeout = timeout;
      if (startPeriod !== undefined) out.startPeriod = startPeriod;
      if (startInterval !== undefined) out.startInterval = startInterval;
      const retries = flags.str.get('retries');
      if (retries !== undefined && retries !== '') {
        if (!/^-?\d+$/.test(retries)) throw ctx.error(`strconv.ParseInt: parsing "${retries}": invalid syntax`, ctx.columnOf('--retries'));
        const r = Number(retries);
        if (r < 0) throw ctx.error(`--retries cannot be negative (${r})`, ctx.columnOf('--retries'));
        out.retries = r;
      }
      return out;
    }
    case 'ONBUILD': {
      if (inOnbuild) throw ctx.error('Chaining ONBUILD via `ONBUILD ONBUILD` isn\'t allowed');
      if (rest === '') throw ctx.error('ONBUILD requires at least one argument');
      const m = /^(\S+)(?:[\t\v\f\r ]+([\s\S]*))?$/.exec(rest);
      const kw = (m?.[1] ?? '').toUpperCase();
      const kwCol = ctx.columnOf(m?.[1] ?? '', n.keyword.length);
      if (kw === 'ONBUILD') throw ctx.error('Chaining ONBUILD via `ONBUILD ONBUILD` isn\'t allowed', kwCol);
      if (kw === 'FROM' || kw === 'MAINTAINER') throw ctx.error(`${kw} isn't allowed as an ONBUILD trigger`, kwCol);
      if (!(INSTRUCTIONS as readonly string[]).includes(kw)) {
        const s = suggest(kw, INSTRUCTIONS);
        throw ctx.error(`unknown instruction "${m?.[1] ?? ''}"${s ? ` (did you mean ${s}?)` : ''}`, kwCol);
      }
      const sub = parseRaw(rest, ctx.file).nodes[0];
      if (sub === undefined) throw ctx.error('ONBUILD requires at least one argument');
      const innerNode: RawNode = { ...sub, line: n.line, column: kwCol, endLine: n.endLine, original: n.original };
      const inner = parseOne(new Ctx(ctx.file, innerNode, ctx.escape, []), true);
      return { ...base, kind: 'onbuild', trigger: rest, inner };
    }
    default:
      throw ctx.error(`unknown instruction "${n.keyword}"`);
  }
}

/** Parses a Dockerfile into typed, unexpanded instructions (errors carry file:line:column). */
export function parseDockerfile(text: string, file = 'Dockerfile'): ParsedDockerfile {
  const raw = parseRaw(text, file);
  const warnings = [...raw.warnings];
  const instructions = raw.nodes.map((node) => parseOne(new Ctx(file, node, raw.directives.escape, warnings), false));
  return { directives: raw.directives, instructions, warnings };
}
