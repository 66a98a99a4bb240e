/**
 * `.dockerignore` with Docker's semantics (moby/patternmatcher and its ignorefile reader): comments,
 * `!` exceptions (last match wins), `*`, `?`, `[...]`, `**`, leading `/` and trailing `/` removed by
 * path cleaning, and a path excluded when it or any of its parent directories matches.
 */
import { ArchwayError } from '../util/index.js';

/** path.Clean for slash paths. */
export function cleanPath(p: string): string {
  if (p === '') return '.';
  const rooted = p.startsWith('/');
  const out: string[] = [];
  for (const part of p.split('/')) {
    if (part === '' || part === '.') continue;
    if (part === '..') {
      if (out.length > 0 && out[out.length - 1] !== '..') out.pop();
      else if (!rooted) out.push('..');
      continue;
    }
    out.push(part);
  }
  const s = out.join('/');
  return rooted ? '/' + s : s === '' ? '.' : s;
}

/** The patterns of an ignore file, as Docker's ReadAll normalizes them. */
export function readIgnorePatterns(text: string): string[] {
  const out: string[] = [];
  for (const raw of text.replace(/^\uFEFF/, '').split(/\r?\n/)) {
    if (raw.startsWith('#')) continue;
    let p = raw.trim();
    if (p === '') continue;
    const invert = p.startsWith('!');
    if (invert) p = p.slice(1).trim();
    if (p.length > 0) {
      p = cleanPath(p);
      if (p.length > 1 && p.startsWith('/')) p = p.slice(1);
    }
    out.push(invert ? '!' + p : p);
  }
  return out;
}

const SHOULD_ESCAPE = new Set(['.', '+', '(', ')', '|', '{', '}', '$']);

function compile(pattern: string): RegExp {
  let re = '^';
  const chars = Array.from(pattern);
  for (let i = 0; i < chars.length; i++) {
    const ch = chars[i] as string;
    if (ch === '*') {
      if (chars[i + 1] === '*') {
        i++;
        if (chars[i + 1] === '/') i++;
        if (i + 1 >= chars.length) re += '.*';
        else re += '(.*/)?';
      } else re += '[^/]*';
    } else if (ch === '?') re += '[^/]';
    else if (SHOULD_ESCAPE.has(ch)) re += '\\' + ch;
    else if (ch === '\\') {
      if (i + 1 < chars.length) re += '\\' + (chars[++i] as string);
      else re += '\\\\';
    } else if (ch === '[' || ch === ']') re += ch;
    else if (ch === '^') re += '\\^';
    else re += ch;
  }
  re += '$';
  try {
    return new RegExp(re, 'su');
  } catch {
    throw new ArchwayError('PARSE', `.dockerignore: invalid pattern "${pattern}"`, { details: { pattern } });
  }
}

interface Pattern {
  re: RegExp;
  exclusion: boolean;
}

/**
 * A matcher for an ignore file: `(relPath) => true` when the path is excluded from the context.
 * `isDir` is accepted for callers walking a tree; Docker's rules treat files and directories alike.
 */
export function dockerignoreMatcher(text: string): (relPath: string, isDir?: boolean) => boolean {
  const patterns: Pattern[] = [];
  for (let p of readIgnorePatterns(text)) {
    p = p.trim();
    if (p === '') continue;
    let exclusion = false;
    if (p.startsWith('!')) {
      if (p.length === 1) throw new ArchwayError('PARSE', '.dockerignore: illegal exclusion pattern: "!"');
      exclusion = true;
      p = p.slice(1);
    }
    p = cleanPath(p);
    patterns.push({ re: compile(p), exclusion });
  }
  return (relPath: string): boolean => {
    const file = cleanPath(relPath.replace(/\\/g, '/')).replace(/^\/+/, '');
    const parts = file.split('/');
    const parents = parts.slice(0, -1);
    let matched = false;
    for (const pat of patterns) {
      if (pat.exclusion !== matched) continue;
      let match = pat.re.test(file);
      if (!match && parents.length > 0) {
        for (let i = 1; i <= parents.length; i++) {
          if (pat.re.test(parents.slice(0, i).join('/'))) {
            match = true;
            break;
          }
        }
      }
      if (match) matched = !pat.exclusion;
    }
    return matched;
  };
}

/**
 * The ignore files to try, first found wins: `<Dockerfile>.dockerignore` next to the Dockerfile
 * (BuildKit's per-Dockerfile ignore file), then `.dockerignore` at the context root.
 */
export function selectIgnoreFile(dockerfileName: string): string[] {
  const name = dockerfileName === '' ? 'Dockerfile' : dockerfileName;
  return [`${name}.dockerignore`, '.dockerignore'];
}
