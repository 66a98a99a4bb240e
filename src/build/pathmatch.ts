/**
 * Go's filepath.Match for one path component, which is what COPY/ADD source wildcards use
 * (`*`, `?`, `[a-z]`, `[^a]`, and `\` escapes). A pattern without these is matched literally.
 */
export function hasWildcard(pattern: string): boolean {
  return /[*?[\\]/.test(pattern);
}

export function matchComponent(pattern: string, name: string): boolean {
  return toRegExp(pattern).test(name);
}

const cache = new Map<string, RegExp>();

function toRegExp(pattern: string): RegExp {
  const hit = cache.get(pattern);
  if (hit) return hit;
  let re = '^';
  for (let i = 0; i < pattern.length; i++) {
    const c = pattern[i] as string;
    if (c === '*') re += '[^/]*';
    else if (c === '?') re += '[^/]';
    else if (c === '\\' && i + 1 < pattern.length) re += escape(pattern[++i] as string);
    else if (c === '[') {
      const end = pattern.indexOf(']', i + 2);
      if (end < 0) {
        re += '\\[';
        continue;
      }
      let body = pattern.slice(i + 1, end);
      if (body.startsWith('^')) body = `^${body.slice(1)}`;
      re += `[${body.replace(/\\/g, '\\\\')}]`;
      i = end;
    } else re += escape(c);
  }
  const compiled = new RegExp(`${re}$`, 's');
  cache.set(pattern, compiled);
  return compiled;
}

function escape(c: string): string {
  return c.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&');
}
