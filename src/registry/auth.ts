/** WWW-Authenticate parsing and the registry token flow's small pieces. */

export type Challenge =
  | { scheme: 'none' }
  | { scheme: 'basic'; realm?: string }
  | { scheme: 'bearer'; realm: string; service?: string; scope?: string; error?: string };

/**
 * Parses a WWW-Authenticate header (`Bearer realm="https://auth/token",service="reg",scope="repository:a:pull"`).
 * Quoted values may contain commas. Unknown schemes come back undefined.
 */
export function parseChallenge(header: string | string[] | undefined): Challenge | undefined {
  const values = Array.isArray(header) ? header : header === undefined ? [] : [header];
  let basic: Challenge | undefined;
  for (const value of values) {
    const m = /^\s*([A-Za-z]+)\s*(.*)$/s.exec(value);
    if (!m) continue;
    const scheme = (m[1] as string).toLowerCase();
    const params: Record<string, string> = {};
    const re = /([A-Za-z_-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^,\s]*))/g;
    for (let p = re.exec(m[2] ?? ''); p; p = re.exec(m[2] ?? '')) {
      params[(p[1] as string).toLowerCase()] = p[2] !== undefined ? p[2].replace(/\\(.)/g, '$1') : (p[3] ?? '');
    }
    if (scheme === 'bearer' && params['realm']) {
      return {
        scheme: 'bearer',
        realm: params['realm'],
        ...(params['service'] !== undefined ? { service: params['service'] } : {}),
        ...(params['scope'] !== undefined ? { scope: params['scope'] } : {}),
        ...(params['error'] !== undefined ? { error: params['error'] } : {}),
      };
    }
    if (scheme === 'basic') basic = { scheme: 'basic', ...(params['realm'] !== undefined ? { realm: params['realm'] } : {}) };
  }
  return basic;
}

export function pullScope(repository: string): string {
  return `repository:${repository}:pull`;
}

export function pushScope(repository: string): string {
  return `repository:${repository}:pull,push`;
}

/** Merges scopes: actions of the same resource are united (`repository:a:pull` + `repository:a:push`). */
export function mergeScopes(scopes: readonly string[]): string[] {
  const byResource = new Map<string, Set<string>>();
  const order: string[] = [];
  for (const s of scopes.flatMap((x) => x.split(' ')).filter(Boolean)) {
    const i = s.lastIndexOf(':');
    const resource = i > 0 ? s.slice(0, i) : s;
    const actions = i > 0 ? s.slice(i + 1).split(',') : [];
    let set = byResource.get(resource);
    if (!set) {
      set = new Set();
      byResource.set(resource, set);
      order.push(resource);
    }
    for (const a of actions) if (a) set.add(a);
  }
  return order.map((r) => {
    const actions = [...(byResource.get(r) ?? [])].sort();
    return actions.length > 0 ? `${r}:${actions.join(',')}` : r;
  });
}

/** Parses Retry-After (seconds or an HTTP date) into milliseconds from now. */
export function retryAfterMs(value: string | undefined, now = Date.now()): number | undefined {
  if (value === undefined) return undefined;
  const v = value.trim();
  if (/^\d+$/.test(v)) return Number(v) * 1000;
  const t = Date.parse(v);
  if (Number.isNaN(t)) return undefined;
  return Math.max(0, t - now);
}
