import { test } from 'node:test';
import assert from 'node:assert/strict';
import { processWord, processWords, envFromRecord, ShellLexError } from './index.js';

const env = envFromRecord({ PWD: '/home', SHELL: 'bash', HOME: '/root', EMPTY: '', X: 'a b', FILE: 'archive.tar.gz', PATH: '/usr/bin:/bin' });

// [input, expected] (BuildKit shell/envVarTest and the Dockerfile reference's "Environment replacement")
const words: Array<[string, string]> = [
  ['hello', 'hello'],
  ['he\'llo\'', 'hello'],
  ['he"llo"', 'hello'],
  ['$PWD', '/home'],
  ['${PWD}', '/home'],
  ['${PWD}/x', '/home/x'],
  ['$PWD/x', '/home/x'],
  ['\\$PWD', '$PWD'],
  ['\'$PWD\'', '$PWD'],
  ['"$PWD"', '/home'],
  ['"\\$PWD"', '$PWD'],
  ['"a\\b"', 'a\\b'],
  ['"a\\"b"', 'a"b'],
  ['a\\ b', 'a b'],
  ['${UNSET:-default}', 'default'],
  ['${EMPTY:-default}', 'default'],
  ['${EMPTY-default}', ''],
  ['${UNSET-default}', 'default'],
  ['${PWD:-default}', '/home'],
  ['${PWD:+set}', 'set'],
  ['${EMPTY:+set}', ''],
  ['${EMPTY+set}', 'set'],
  ['${UNSET+set}', ''],
  ['${UNSET:-$HOME}', '/root'],
  ['${UNSET:-"quoted word"}', 'quoted word'],
  ['$UNSET', ''],
  ['$', '$'],
  ['$$', ''],
  ['${FILE%.gz}', 'archive.tar'],
  ['${FILE%%.*}', 'archive'],
  ['${FILE#*.}', 'tar.gz'],
  ['${FILE##*.}', 'gz'],
  ['${PATH/bin/sbin}', '/usr/sbin:/bin'],
  ['${PATH//bin/sbin}', '/usr/sbin:/sbin'],
  ['$X', 'a b'],
  ['"${X}"', 'a b'],
  ['$1abc', 'abc'],
  ['é$PWD', 'é/home'],
];

for (const [input, want] of words) {
  test(`processWord ${input}`, () => {
    assert.equal(processWord(input, env).value, want);
  });
}

test('backtick escape token', () => {
  assert.equal(processWord('C:`\\dir `$PWD', env, { escapeToken: '`' }).value, 'C:\\dir $PWD');
  assert.equal(processWord('a\\b', env, { escapeToken: '`' }).value, 'a\\b');
});

test('processWords splits unquoted expansions, keeps quoted ones', () => {
  assert.deepEqual(processWords('$X c', env).words, ['a', 'b', 'c']);
  assert.deepEqual(processWords('"$X" c', env).words, ['a b', 'c']);
  assert.deepEqual(processWords('80 443/udp', env).words, ['80', '443/udp']);
});

test('unmatched names are reported, defaulted ones are not', () => {
  const r = processWord('$A ${B} ${C:-x} ${D-y}', env);
  assert.deepEqual([...r.unmatched].sort(), ['A', 'B']);
});

const lexErrors: Array<[string, RegExp]> = [
  ['"abc', /matching double-quote/],
  ["'abc", /matching single-quote/],
  ['${abc', /missing '}'|matching \}/],
  ['${}', /bad substitution/],
  ['${:x}', /bad substitution/],
  ['${UNSET?must be set}', /UNSET: must be set/],
  ['${EMPTY:?}', /EMPTY: is not allowed to be unset or empty/],
  ['${PWD:=x}', /unsupported modifier \(=\)/],
];
for (const [input, re] of lexErrors) {
  test(`processWord error ${input}`, () => {
    assert.throws(() => processWord(input, env), (e: unknown) => e instanceof ShellLexError && re.test(e.message));
  });
}

test('skipProcessQuotes keeps quotes (heredoc bodies)', () => {
  assert.equal(processWord('echo "$PWD" \'x\'', env, { skipProcessQuotes: true }).value, 'echo "/home" \'x\'');
});
