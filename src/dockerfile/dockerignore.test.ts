import { test } from 'node:test';
import assert from 'node:assert/strict';
import { dockerignoreMatcher, selectIgnoreFile, readIgnorePatterns } from './index.js';

// [ignore file, path, excluded?] — Docker's .dockerignore reference examples and patternmatcher tests
const cases: Array<[string, string, boolean]> = [
  ['*/temp*', 'somedir/temporary.txt', true],
  ['*/temp*', 'somedir/temp', true],
  ['*/temp*', 'temp', false],
  ['*/*/temp*', 'somedir/subdir/temporary.txt', true],
  ['temp?', 'tempa', true],
  ['temp?', 'temp', false],
  ['**/*.go', 'a/b/c/main.go', true],
  ['**/*.go', 'main.go', true],
  ['*.md\n!README.md', 'README.md', false],
  ['*.md\n!README.md', 'CHANGES.md', true],
  ['*.md\n!README*.md\nREADME-secret.md', 'README-secret.md', true],
  ['*.md\nREADME-secret.md\n!README*.md', 'README-secret.md', false],
  ['/node_modules', 'node_modules/x/index.js', true],
  ['node_modules/', 'node_modules', true],
  ['dir', 'dir/sub/file', true],
  ['./dir/../other', 'other/x', true],
  ['# comment\n\n  build  ', 'build', true],
  ['docs/**', 'docs/a/b.md', true],
  ['docs/**', 'docs', false],
  ['[a-c].txt', 'b.txt', true],
  ['*.txt', 'dir/a.txt', false],
  ['a.b', 'aXb', false],
  ['!keep\n*', 'keep', true],
];
for (const [file, path, want] of cases) {
  test(`dockerignore ${JSON.stringify(file)} ${path}`, () => {
    assert.equal(dockerignoreMatcher(file)(path), want);
  });
}

test('readIgnorePatterns normalizes', () => {
  assert.deepEqual(readIgnorePatterns('/a/\n! /b\n#x\n c//d '), ['a', '!b', 'c/d']);
});

test('a lone ! is an error', () => {
  assert.throws(() => dockerignoreMatcher('!'), /illegal exclusion pattern/);
});

test('selectIgnoreFile prefers <Dockerfile>.dockerignore', () => {
  assert.deepEqual(selectIgnoreFile('Dockerfile'), ['Dockerfile.dockerignore', '.dockerignore']);
  assert.deepEqual(selectIgnoreFile('build/app.Dockerfile'), ['build/app.Dockerfile.dockerignore', '.dockerignore']);
});
