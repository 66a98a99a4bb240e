/**
 * BuildKit's shell lexer (frontend/dockerfile/shell/lex.go) for variable expansion in Dockerfile
 * instructions: `$VAR`, `${VAR}`, `${VAR:-w}`, `${VAR-w}`, `${VAR:+w}`, `${VAR+w}`, `${VAR:?w}`,
 * `${VAR?w}`, `${VAR#p}`, `${VAR##p}`, `${VAR%p}`, `${VAR%%p}`, `${VAR/p/r}`, `${VAR//p/r}`,
 * single and double quotes and the escape token. Pure: the environment is a lookup function.
 */

export type EnvLookup = (name: string) => string | undefined;

export interface LexOptions {
  /** `\` (default) or `` ` `` (from the `# escape=` directive). */
  escapeToken?: string;
  /** Leave `$NAME` as it is when NAME is unset (used for heredoc names). */
  skipUnsetEnv?: boolean;
  /** Keep quote characters in the result. */
  rawQuotes?: boolean;
  /** Keep escape tokens in the result. */
  rawEscapes?: boolean;
  /** Quotes are ordinary characters (heredoc bodies). */
  skipProcessQuotes?: boolean;
}

export interface ExpandResult {
  value: string;
  /** Names looked up and found. */
  matched: Set<string>;
  /** Names looked up and not set, in plain `$X`/`${X}` form (candidates for an undefined-variable warning). */
  unmatched: Set<string>;
}

export interface WordsResult {
  words: string[];
  matched: Set<string>;
  unmatched: Set<string>;
}

/** A lexer error; the caller adds the Dockerfile position. */
export class ShellLexError extends Error {
  override name = 'ShellLexError';
}

const SPECIAL_PARAMS = new Set(['*', '#', '@', '?', '-', '$', '!', '0']);

function isSpace(ch: string): boolean {
  return /\s/u.test(ch);
}
function isDigit(ch: string): boolean {
  return ch >= '0' && ch <= '9';
}
function isNameChar(ch: string): boolean {
  return /[\p{L}\p{Nd}_]/u.test(ch);
}

class Words {
  word = '';
  words: string[] = [];
  inWord = false;
  addChar(ch: string): void {
    if (isSpace(ch) && this.inWord) {
      if (this.word.length !== 0) {
        this.words.push(this.word);
        this.word = '';
        this.inWord = false;
      }
    } else if (!isSpace(ch)) {
      this.addRawChar(ch);
    }
  }
  addRawChar(ch: string): void {
    this.word += ch;
    this.inWord = true;
  }
  addString(s: string): void {
    for (const ch of s) this.addChar(ch);
  }
  addRawString(s: string): void {
    this.word += s;
    this.inWord = true;
  }
  getWords(): string[] {
    if (this.word.length > 0) {
      this.words.push(this.word);
      this.word = '';
      this.inWord = false;
    }
    return this.words;
  }
}

class Scanner {
  private readonly chars: string[];
  private pos = 0;
  constructor(text: string) {
    this.chars = Array.from(text);
  }
  peek(): string | undefined {
    return this.chars[this.pos];
  }
  next(): string | undefined {
    const c = this.chars[this.pos];
    if (c !== undefined) this.pos++;
    return c;
  }
}

class ShellWord {
  readonly matched = new Set<string>();
  readonly unmatched = new Set<string>();
  private readonly scanner: Scanner;
  private readonly esc: string;
  constructor(
    text: string,
    private readonly env: EnvLookup,
    private readonly opts: LexOptions,
  ) {
    this.scanner = new Scanner(text);
    this.esc = opts.escapeToken ?? '\\';
  }

  private getEnv(name: string, plain: boolean): string | undefined {
    const v = this.env(name);
    if (v === undefined) {
      if (plain && !SPECIAL_PARAMS.has(name) && !/^\d+$/.test(name)) this.unmatched.add(name);
    } else {
      this.matched.add(name);
    }
    return v;
  }

  process(): { value: string; words: string[] } {
    const [value, words] = this.processStopOn(undefined);
    return { value, words };
  }

  processStopOn(stop: string | undefined): [string, string[]] {
    let result = '';
    const words = new Words();
    for (;;) {
      const ch = this.scanner.peek();
      if (ch === undefined) break;
      if (stop !== undefined && ch === stop) {
        this.scanner.next();
        return [result, words.getWords()];
      }
      if (ch === '$') {
        const tmp = this.processDollar();
        result += tmp;
        words.addString(tmp);
      } else if ((ch === "'" || ch === '"') && !this.opts.skipProcessQuotes) {
        const tmp = ch === "'" ? this.processSingleQuote() : this.processDoubleQuote();
        result += tmp;
        words.addRawString(tmp);
      } else {
        let c = this.scanner.next() as string;
        if (c === this.esc) {
          if (this.opts.rawEscapes) {
            words.addRawChar(c);
            result += c;
          }
          const n = this.scanner.next();
          if (n === undefined) break;
          c = n;
          words.addRawChar(c);
        } else {
          words.addChar(c);
        }
        result += c;
      }
    }
    if (stop !== undefined) throw new ShellLexError(`unexpected end of statement while looking for matching ${stop}`);
    return [result, words.getWords()];
  }

  private processSingleQuote(): string {
    // All chars between single quotes are taken as-is; no escapes.
    this.scanner.next();
    let result = this.opts.rawQuotes ? "'" : '';
    for (;;) {
      const ch = this.scanner.next();
      if (ch === undefined) throw new ShellLexError('unexpected end of statement while looking for matching single-quote');
      if (ch === "'") {
        if (this.opts.rawQuotes) result += ch;
        return result;
      }
      result += ch;
    }
  }

  private processDoubleQuote(): string {
    // Everything up to the next unescaped " is taken as-is except $; the escape token escapes " $ and itself.
    this.scanner.next();
    let result = this.opts.rawQuotes ? '"' : '';
    for (;;) {
      const ch = this.scanner.peek();
      if (ch === undefined) throw new ShellLexError('unexpected end of statement while looking for matching double-quote');
      if (ch === '"') {
        this.scanner.next();
        if (this.opts.rawQuotes) result += ch;
        return result;
      }
      if (ch === '$') {
        result += this.processDollar();
        continue;
      }
      let c = this.scanner.next() as string;
      if (c === this.esc) {
        const n = this.scanner.peek();
        if (n === undefined) continue;
        if (n === '"' || n === '$' || n === this.esc) {
          if (this.opts.rawEscapes) result += c;
          c = this.scanner.next() as string;
        }
      }
      result += c;
    }
  }

  private processName(): string {
    let name = '';
    for (;;) {
      const ch = this.scanner.peek();
      if (ch === undefined) break;
      if (name.length === 0 && isDigit(ch)) {
        while (this.scanner.peek() !== undefined && isDigit(this.scanner.peek() as string)) name += this.scanner.next();
        return name;
      }
      if (name.length === 0 && SPECIAL_PARAMS.has(ch)) {
        this.scanner.next();
        return ch;
      }
      if (!isNameChar(ch)) break;
      name += this.scanner.next();
    }
    return name;
  }

  private processDollar(): string {
    this.scanner.next();
    if (this.scanner.peek() !== '{') {
      const name = this.processName();
      if (name === '') return '$';
      const v = this.getEnv(name, true);
      if (v === undefined && this.opts.skipUnsetEnv) return '$' + name;
      return v ?? '';
    }
    this.scanner.next();
    const first = this.scanner.peek();
    if (first === undefined) throw new ShellLexError("syntax error: missing '}'");
    if (first === '{' || first === '}' || first === ':') throw new ShellLexError('syntax error: bad substitution');
    const name = this.processName();
    const ch = this.scanner.next();
    switch (ch) {
      case '}': {
        const v = this.getEnv(name, true);
        if (v === undefined && this.opts.skipUnsetEnv) return `\${${name}}`;
        return v ?? '';
      }
      case '?': {
        const [word] = this.processStopOn('}');
        const v = this.getEnv(name, false);
        if (v === undefined) throw new ShellLexError(`${name}: ${word || 'is not allowed to be unset'}`);
        return v;
      }
      case ':': {
        const modifier = this.scanner.next();
        const [word] = this.processStopOn('}');
        const v = this.getEnv(name, false);
        if (this.opts.skipUnsetEnv && v === undefined) return `\${${name}:${modifier ?? ''}${word}}`;
        const value = v ?? '';
        switch (modifier) {
          case '+':
            return value !== '' ? word : '';
          case '-':
            return value === '' ? word : value;
          case '?':
            if (value === '') throw new ShellLexError(`${name}: ${word || 'is not allowed to be unset or empty'}`);
            return value;
          default:
            throw new ShellLexError(`unsupported modifier (${modifier ?? ''}) in substitution`);
        }
      }
      case '+':
      case '-': {
        const [word] = this.processStopOn('}');
        const v = this.getEnv(name, false);
        if (this.opts.skipUnsetEnv && v === undefined) return `\${${name}${ch}${word}}`;
        if (ch === '+') return v !== undefined ? word : '';
        return v === undefined ? word : v;
      }
      case '#':
      case '%': {
        let longest = false;
        if (this.scanner.peek() === ch) {
          this.scanner.next();
          longest = true;
        }
        const [pattern] = this.processStopOn('}');
        const value = this.getEnv(name, false) ?? '';
        return trimPattern(value, pattern, ch === '#', longest);
      }
      case '/': {
        let all = false;
        if (this.scanner.peek() === '/') {
          this.scanner.next();
          all = true;
        }
        const [pattern] = this.processStopOn('/');
        const [replacement] = this.processStopOn('}');
        const value = this.getEnv(name, false) ?? '';
        const re = globToRegExp(pattern);
        return value.replace(new RegExp(re, all ? 'gu' : 'u'), () => replacement);
      }
      case undefined:
        throw new ShellLexError("syntax error: missing '}'");
      default:
        throw new ShellLexError(`unsupported modifier (${ch}) in substitution`);
    }
  }
}

/** A shell glob (`*`, `?`, `[...]`, `\x`) as a RegExp source (unanchored). */
function globToRegExp(glob: string): string {
  let out = '';
  const chars = Array.from(glob);
  for (let i = 0; i < chars.length; i++) {
    const c = chars[i] as string;
    if (c === '*') out += '[\\s\\S]*';
    else if (c === '?') out += '[\\s\\S]';
    else if (c === '\\' && i + 1 < chars.length) out += escapeRe(chars[++i] as string);
    else if (c === '[') {
      const end = chars.indexOf(']', i + 1);
      if (end > i + 1) {
        let cls = chars.slice(i + 1, end).join('');
        if (cls.startsWith('!')) cls = '^' + cls.slice(1);
        out += `[${cls.replace(/\\/g, '\\\\')}]`;
        i = end;
      } else out += '\\[';
    } else out += escapeRe(c);
  }
  return out;
}

function escapeRe(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&');
}

function trimPattern(value: string, pattern: string, prefix: boolean, longest: boolean): string {
  const re = globToRegExp(pattern);
  const chars = Array.from(value);
  if (prefix) {
    const test = new RegExp(`^(?:${re})$`, 'u');
    const order = longest ? [...Array(chars.length + 1).keys()].reverse() : [...Array(chars.length + 1).keys()];
    for (const n of order) if (test.test(chars.slice(0, n).join(''))) return chars.slice(n).join('');
    return value;
  }
  const test = new RegExp(`^(?:${re})$`, 'u');
  const order = longest ? [...Array(chars.length + 1).keys()] : [...Array(chars.length + 1).keys()].reverse();
  for (const n of order) if (test.test(chars.slice(n).join(''))) return chars.slice(0, n).join('');
  return value;
}

/** Expands one word (quotes removed, whitespace kept), as BuildKit's ProcessWord. */
export function processWord(word: string, env: EnvLookup, opts: LexOptions = {}): ExpandResult {
  const sw = new ShellWord(word, env, opts);
  const { value } = sw.process();
  return { value, matched: sw.matched, unmatched: sw.unmatched };
}

/** Expands and splits into words (unquoted expansions split on whitespace), as BuildKit's ProcessWords. */
export function processWords(word: string, env: EnvLookup, opts: LexOptions = {}): WordsResult {
  const sw = new ShellWord(word, env, opts);
  const { words } = sw.process();
  return { words, matched: sw.matched, unmatched: sw.unmatched };
}

/** An EnvLookup over a plain record (own keys only). */
export function envFromRecord(rec: Record<string, string>): EnvLookup {
  return (name) => (Object.prototype.hasOwnProperty.call(rec, name) ? rec[name] : undefined);
}
