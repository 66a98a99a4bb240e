import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gitInfo } from './git.js';

// git itself is the judge of what HEAD and origin are.
function git(dir: string, ...args: string[]): string {
  return execFileSync('git', ['-C', dir, '-c', 'user.name=t', '-c', 'user.email=t@example.com', ...args], { encoding: 'utf8' }).trim();
}

test('revision and origin as git reports them: loose refs, packed refs, a worktree, a subdirectory', () => {
  const root = mkdtempSync(join(tmpdir(), 'archway-git-'));
  try {
    const repo = join(root, 'repo');
    mkdirSync(join(repo, 'app', 'src'), { recursive: true });
    git(root, 'init', '-q', '-b', 'main', repo);
    writeFileSync(join(repo, 'app', 'Dockerfile'), 'FROM scratch\n');
    git(repo, 'add', '.');
    git(repo, 'commit', '-q', '-m', 'one');
    git(repo, 'remote', 'add', 'origin', 'https://git.example.com/team/app.git');
    const head = git(repo, 'rev-parse', 'HEAD');
    assert.deepEqual(gitInfo(join(repo, 'app')), { revision: head, source: 'https://git.example.com/team/app.git' });

    git(repo, 'pack-refs', '--all');
    assert.equal(gitInfo(join(repo, 'app', 'src')).revision, head);

    git(repo, 'checkout', '-q', '--detach');
    writeFileSync(join(repo, 'app', 'Dockerfile'), 'FROM scratch\nLABEL a=b\n');
    git(repo, 'commit', '-q', '-am', 'two');
    assert.equal(gitInfo(repo).revision, git(repo, 'rev-parse', 'HEAD'));

    const wt = join(root, 'wt');
    git(repo, 'worktree', 'add', '-q', wt, 'main');
    assert.deepEqual(gitInfo(wt), { revision: head, source: 'https://git.example.com/team/app.git' });
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});

test('a remote url with a credential is left out; outside a repository nothing is known', () => {
  const root = mkdtempSync(join(tmpdir(), 'archway-git-'));
  try {
    assert.deepEqual(gitInfo(root), {});
    git(root, 'init', '-q');
    git(root, 'remote', 'add', 'origin', 'https://user:s3cret@git.example.com/app.git');
    // No commit yet: HEAD names a branch that does not exist.
    assert.deepEqual(gitInfo(root), {});
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});
