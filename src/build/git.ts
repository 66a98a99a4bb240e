/**
 * The revision and origin of a build context in a git work tree, read from the .git directory as
 * git itself stores them (HEAD, loose refs, packed-refs, config), so a build does not start git
 * twice for two labels. Anything unusual (a missing file, a ref it cannot resolve) means "unknown".
 */
import { readFileSync, statSync } from 'node:fs';
import * as path from 'node:path';

export interface GitInfo {
  revision?: string;
  /** remote.origin.url, when it carries no credentials. */
  source?: string;
}

function read(file: string): string | undefined {
  try {
    return readFileSync(file, 'utf8');
  } catch {
    return undefined;
  }
}

/** The git directory of the work tree holding `dir`: `.git` itself, or where a `.git` file points (worktrees, submodules). */
function findGitDir(dir: string): string | undefined {
  for (let d = path.resolve(dir); ; d = path.dirname(d)) {
    const dotGit = path.join(d, '.git');
    try {
      if (statSync(dotGit).isDirectory()) return dotGit;
      const m = /^gitdir:\s*(.+?)\s*$/m.exec(read(dotGit) ?? '');
      if (m?.[1]) return path.resolve(d, m[1]);
    } catch {
      // no .git here: look further up
    }
    if (path.dirname(d) === d) return undefined;
  }
}

function resolveRef(gitDir: string, commonDir: string, ref: string, depth = 0): string | undefined {
  if (depth > 5) return undefined;
  for (const base of [gitDir, commonDir]) {
    const content = read(path.join(base, ref))?.trim();
    if (content === undefined) continue;
    if (/^[0-9a-f]{40,64}$/.test(content)) return content;
    const sym = /^ref:\s*(\S+)$/.exec(content);
    return sym?.[1] ? resolveRef(gitDir, commonDir, sym[1], depth + 1) : undefined;
  }
  for (const line of (read(path.join(commonDir, 'packed-refs')) ?? '').split('\n')) {
    const [hash, name] = line.split(' ');
    if (name === ref && hash && /^[0-9a-f]{40,64}$/.test(hash)) return hash;
  }
  return undefined;
}

/** The url of [remote "origin"] in a git config file. */
function originUrl(config: string): string | undefined {
  let inOrigin = false;
  for (const raw of config.split('\n')) {
    const line = raw.trim();
    if (line.startsWith('[')) inOrigin = /^\[remote\s+"origin"\]$/.test(line);
    else if (inOrigin) {
      const m = /^url\s*=\s*(.+)$/.exec(line);
      if (m?.[1]) return m[1].replace(/^"(.*)"$/, '$1');
    }
  }
  return undefined;
}

export function gitInfo(context: string): GitInfo {
  const gitDir = findGitDir(context);
  if (!gitDir) return {};
  const common = read(path.join(gitDir, 'commondir'))?.trim();
  const commonDir = common ? path.resolve(gitDir, common) : gitDir;
  const info: GitInfo = {};
  const revision = resolveRef(gitDir, commonDir, 'HEAD');
  if (revision) info.revision = revision;
  const remote = originUrl(read(path.join(commonDir, 'config')) ?? '');
  // A url with user:password@ would publish the credential in the image's labels.
  if (remote && !/\/\/[^/]*@/.test(remote)) info.source = remote;
  return info;
}
