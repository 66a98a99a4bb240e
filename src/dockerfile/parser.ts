/**
 * The Dockerfile line parser, after BuildKit's frontend/dockerfile/parser: parser directives,
 * comments, line continuations (with comments and empty lines inside them), builder flags and
 * heredocs. It yields raw nodes; instructions.ts gives them their typed meaning.
 */
import type { Warning } from '../graph/index.js';
import { parseError, suggest } from './errors.js';
import { processWords } from './lex.js';

export const INSTRUCTIONS = [
  'ADD',
  'ARG',
  'CMD',
  'COPY',
  'ENTRYPOINT',
  'ENV',
  'EXPOSE',
  'FROM',
  'HEALTHCHECK',
  'LABEL',
  'MAINTAINER',
  'ONBUILD',
  'RUN',
  'SHELL',
  'STOPSIGNAL',
  'USER',
  'VOLUME',
  'WORKDIR',
] as const;

export interface Heredoc {
  name: string;
  /** Raw content lines, each followed by `\n` (tabs not yet stripped). */
  content: string;
  /** The delimiter was not quoted: the content may be expanded. */
  expand: boolean;
  /** `<<-`: strip leading tabs. */
  chomp: boolean;
  fileDescriptor: number;
}

export interface CheckDirective {
  /** Rule names to skip, or ['all']. */
  skip: string[];
  /** Turn warnings into errors. */
  error: boolean;
}

export interface Directives {
  syntax?: string;
  escape: '\\' | '`';
  check?: CheckDirective;
}

export interface RawNode {
  /** Keyword as written (`copy`, `COPY`). */
  keyword: string;
  /** Keyword uppercased. */
  cmd: string;
  /** Builder flags as words (`--from=build`), quotes removed. */
  flags: string[];
  /** The rest after the flags, trimmed (continuations joined, comment lines removed). */
  args: string;
  line: number;
  column: number;
  endLine: number;
  /** The instruction's lines as written, joined with `\n` (heredoc bodies included). */
  original: string;
  heredocs: Heredoc[];
}

export interface RawDockerfile {
  directives: Directives;
  nodes: RawNode[];
  warnings: Warning[];
}

const DIRECTIVE_RE = /^#\s*([a-zA-Z][a-zA-Z0-9]*)\s*=\s*(.+?)\s*$/;
const KNOWN_DIRECTIVES = new Set(['syntax', 'escape', 'check']);
const HEREDOC_RE = /^(\d*)<<(-?)([^<]*)$/;
const HEREDOC_COMMANDS = new Set(['RUN', 'COPY', 'ADD']);

function trimLeft(s: string): string {
  return s.replace(/^[ \t\v\f\r]+/, '');
}

function isComment(line: string): boolean {
  return trimLeft(line).startsWith('#');
}

/** Parses `<<EOF`, `<<-EOF`, `<<"EOF"`, `3<<EOF`; undefined when the word is not a heredoc. */
export function parseHeredocWord(word: string): Omit<Heredoc, 'content'> | undefined {
  const m = HEREDOC_RE.exec(word);
  if (!m) return undefined;
  const rest = m[3] ?? '';
  if (rest === '') return undefined;
  let words: string[];
  let raw: string[];
  try {
    words = processWords(rest, () => undefined, { skipUnsetEnv: true }).words;
    raw = processWords(rest, () => undefined, { skipUnsetEnv: true, rawQuotes: true }).words;
  } catch {
    return undefined;
  }
  if (words.length !== 1 || raw.length !== 1) return undefined;
  const name = words[0] as string;
  const count = (s: string): number => (s.match(/['"]/g) ?? []).length;
  return {
    name,
    expand: count(name) === count(raw[0] as string),
    chomp: m[2] === '-',
    fileDescriptor: m[1] ? Number(m[1]) : 0,
  };
}

/** The heredocs a line opens, in order (BuildKit's heredocsFromLine). */
export function heredocsFromLine(line: string): Array<Omit<Heredoc, 'content'>> {
  let words: string[];
  try {
    words = processWords(line, () => undefined, { rawQuotes: true, rawEscapes: true }).words;
  } catch {
    return [];
  }
  const out: Array<Omit<Heredoc, 'content'>> = [];
  for (const w of words) {
    const h = parseHeredocWord(w);
    if (h) out.push(h);
  }
  return out;
}

/** Strips leading tabs from every line (for `<<-`). */
export function chompHeredocContent(content: string): string {
  return content.replace(/^\t+/gm, '');
}

/** BuildKit's extractBuilderFlags: leading `--name[=value]` words, quotes and escapes honoured. */
export function extractBuilderFlags(line: string): { rest: string; flags: string[] } {
  const words: string[] = [];
  let phase: 'spaces' | 'word' | 'quote' = 'spaces';
  let word = '';
  let quote = '';
  let blankOK = false;
  for (let pos = 0; pos <= line.length; pos++) {
    const ch = pos < line.length ? (line[pos] as string) : '';
    if (phase === 'spaces') {
      if (pos === line.length) break;
      if (/\s/.test(ch)) continue;
      if (ch !== '-' || pos + 1 === line.length || line[pos + 1] !== '-') return { rest: line.slice(pos), flags: words };
      phase = 'word';
    }
    if (pos === line.length) {
      if (word !== '--' && (blankOK || word.length > 0)) words.push(word);
      break;
    }
    if (phase === 'word') {
      if (/\s/.test(ch)) {
        phase = 'spaces';
        if (word === '--') return { rest: line.slice(pos), flags: words };
        if (blankOK || word.length > 0) words.push(word);
        word = '';
        blankOK = false;
        continue;
      }
      if (ch === "'" || ch === '"') {
        quote = ch;
        blankOK = true;
        phase = 'quote';
        continue;
      }
      let c = ch;
      if (c === '\\') {
        if (pos + 1 === line.length) continue;
        pos++;
        c = line[pos] as string;
      }
      word += c;
      continue;
    }
    // in quote
    if (ch === quote) {
      phase = 'word';
      continue;
    }
    let c = ch;
    if (c === '\\') {
      if (pos + 1 === line.length) {
        phase = 'word';
        continue;
      }
      pos++;
      c = line[pos] as string;
    }
    word += c;
  }
  return { rest: '', flags: words };
}

function parseCheck(value: string): CheckDirective {
  const out: CheckDirective = { skip: [], error: false };
  for (const part of value.split(';')) {
    const [k, v] = part.split('=', 2).map((s) => s.trim());
    if (k === undefined || v === undefined) continue;
    if (k.toLowerCase() === 'skip') out.skip = v.split(',').map((s) => s.trim()).filter(Boolean);
    else if (k.toLowerCase() === 'error') out.error = v.toLowerCase() === 'true';
  }
  return out;
}

/** Splits a Dockerfile into raw instruction nodes. */
export function parseRaw(text: string, file = 'Dockerfile'): RawDockerfile {
  const lines = text.replace(/^\uFEFF/, '').split(/\r?\n/);
  if (lines.length > 0 && lines[lines.length - 1] === '') lines.pop();
  const directives: Directives = { escape: '\\' };
  const warnings: Warning[] = [];
  const nodes: RawNode[] = [];
  const seen = new Set<string>();
  let directivesDone = false;
  let contRe = /\\[ \t]*$/;

  let i = 0;
  while (i < lines.length) {
    const raw = lines[i] as string;
    const lineNo = i + 1;
    i++;
    if (!directivesDone) {
      const m = DIRECTIVE_RE.exec(trimLeft(raw));
      const key = m?.[1]?.toLowerCase();
      if (!m || key === undefined || !KNOWN_DIRECTIVES.has(key)) {
        directivesDone = true;
      } else {
        const value = m[2] as string;
        const column = raw.length - trimLeft(raw).length + 1;
        if (seen.has(key)) throw parseError(file, { line: lineNo, column, source: raw }, `only one ${key} parser directive can be used`);
        seen.add(key);
        if (key === 'escape') {
          if (value !== '\\' && value !== '`') {
            throw parseError(file, { line: lineNo, column, source: raw }, `invalid escape token '${value}' does not match \` or \\`);
          }
          directives.escape = value;
          contRe = value === '`' ? /`[ \t]*$/ : /\\[ \t]*$/;
        } else if (key === 'syntax') {
          directives.syntax = value;
        } else {
          directives.check = parseCheck(value);
        }
        continue;
      }
    }
    const left = trimLeft(raw);
    if (left.startsWith('#') || left.trim() === '') continue;
    const column = raw.length - left.length + 1;
    const original = [raw];
    let line = left;
    let continued = contRe.test(line);
    if (continued) line = line.replace(contRe, '');
    while (continued && i < lines.length) {
      const next = lines[i] as string;
      const nextNo = i + 1;
      i++;
      original.push(next);
      if (isComment(next)) continue;
      if (next.trim() === '') {
        warnings.push({
          kind: 'empty-continuation',
          message: 'empty continuation line found (empty continuation lines will become errors in a future release)',
          file,
          line: nextNo,
          column: 1,
        });
        continue;
      }
      continued = contRe.test(next);
      line += continued ? next.replace(contRe, '') : next;
    }
    // drop trailing comment/empty lines from the quoted original
    while (original.length > 1 && (isComment(original[original.length - 1] as string) || (original[original.length - 1] as string).trim() === '')) {
      original.pop();
    }
    const endLineOfInstr = lineNo + original.length - 1;
    const trimmed = line.trim();
    if (trimmed === '') continue;
    const split = /^(\S+)(?:[\t\v\f\r ]+([\s\S]*))?$/.exec(trimmed);
    const keyword = split?.[1] ?? trimmed;
    const after = split?.[2] ?? '';
    const cmd = keyword.toUpperCase();
    if (!(INSTRUCTIONS as readonly string[]).includes(cmd)) {
      const s = suggest(cmd, INSTRUCTIONS);
      throw parseError(
        file,
        { line: lineNo, column, source: original.join('\n') },
        `unknown instruction "${keyword}"${s ? ` (did you mean ${s}?)` : ''}`,
      );
    }
    const { rest, flags } = extractBuilderFlags(after);
    const node: RawNode = {
      keyword,
      cmd,
      flags,
      args: rest.trim(),
      line: lineNo,
      column,
      endLine: endLineOfInstr,
      original: original.join('\n'),
      heredocs: [],
    };
    if (HEREDOC_COMMANDS.has(cmd) && line.includes('<<') && !isJsonArgs(node.args)) {
      let lastLine = endLineOfInstr;
      for (const h of heredocsFromLine(line)) {
        let content = '';
        let terminated = false;
        while (i < lines.length) {
          const body = lines[i] as string;
          i++;
          lastLine = i;
          original.push(body);
          const candidate = h.chomp ? body.replace(/^\t+/, '') : body;
          if (candidate === h.name) {
            terminated = true;
            break;
          }
          content += body + '\n';
        }
        if (!terminated) {
          throw parseError(file, { line: lineNo, column, source: original.slice(0, 1).join('\n') }, `unterminated heredoc "${h.name}"`);
        }
        node.heredocs.push({ ...h, content });
      }
      node.endLine = lastLine;
      node.original = original.join('\n');
    }
    nodes.push(node);
  }
  return { directives, nodes, warnings };
}

function isJsonArgs(args: string): boolean {
  if (!args.startsWith('[')) return false;
  try {
    const v: unknown = JSON.parse(args);
    return Array.isArray(v);
  } catch {
    return false;
  }
}
