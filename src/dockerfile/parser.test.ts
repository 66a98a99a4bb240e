import { test } from 'node:test';
import assert from 'node:assert/strict';
import { isArchwayError } from '../util/index.js';
import { parseDockerfile, parseRaw, parseGoDuration, type Instruction } from './index.js';

function one(text: string): Instruction {
  const p = parseDockerfile(text);
  const last = p.instructions[p.instructions.length - 1];
  assert.ok(last);
  return last;
}

function expectError(text: string, message: RegExp, line: number, column: number): void {
  assert.throws(
    () => parseDockerfile(text),
    (e: unknown) => {
      assert.ok(isArchwayError(e, 'PARSE'), String(e));
      assert.match(e.message, message);
      assert.equal(e.details['line'], line, e.message);
      assert.equal(e.details['column'], column, e.message);
      assert.match(e.message, new RegExp(`^Dockerfile:${line}:${column}: `));
      return true;
    },
  );
}

test('FROM with --platform and AS', () => {
  const i = one('FROM --platform=$BUILDPLATFORM golang:1.22 AS Build');
  assert.equal(i.kind, 'from');
  if (i.kind !== 'from') return;
  assert.equal(i.image, 'golang:1.22');
  assert.equal(i.stageName, 'build');
  assert.equal(i.platform, '$BUILDPLATFORM');
});

test('RUN shell and exec forms', () => {
  const a = one('FROM x\nRUN apt-get update && apt-get install -y curl');
  assert.deepEqual(a.kind === 'run' && a.command, { shell: 'apt-get update && apt-get install -y curl' });
  const b = one('FROM x\nRUN ["/bin/bash", "-c", "echo hello"]');
  assert.deepEqual(b.kind === 'run' && b.command, { exec: ['/bin/bash', '-c', 'echo hello'] });
});

test('RUN with malformed JSON falls back to shell form with a warning (BuildKit)', () => {
  const p = parseDockerfile("FROM x\nRUN ['echo', 'hi']");
  const r = p.instructions[1];
  assert.deepEqual(r?.kind === 'run' && r.command, { shell: "['echo', 'hi']" });
  assert.ok(p.warnings.some((w) => w.kind === 'invalid-json' && w.line === 2));
});

test('RUN --mount flags and --network', () => {
  const r = one('FROM x\nRUN --mount=type=cache,target=/root/.cache,sharing=locked --mount=type=secret,id=npmrc --network=none make');
  assert.equal(r.kind, 'run');
  if (r.kind !== 'run') return;
  assert.deepEqual(r.mounts, ['type=cache,target=/root/.cache,sharing=locked', 'type=secret,id=npmrc']);
  assert.equal(r.network, 'none');
  assert.deepEqual(r.command, { shell: 'make' });
});

test('line continuations with comments and empty lines inside', () => {
  const p = parseDockerfile('FROM x\nRUN apt-get update \\\n# a comment\n    && apt-get install \\\n\n    curl\n');
  const r = p.instructions[1];
  assert.deepEqual(r?.kind === 'run' && r.command, { shell: 'apt-get update     && apt-get install     curl' });
  assert.equal(r?.line, 2);
  assert.equal(r?.endLine, 6);
  assert.ok(p.warnings.some((w) => w.kind === 'empty-continuation' && w.line === 5));
});

test('comments and empty lines are skipped; positions are kept', () => {
  const p = parseDockerfile('# comment\n\nFROM x\n  # indented comment\n   RUN echo hi # not a comment\n');
  const r = p.instructions[1];
  assert.equal(r?.line, 5);
  assert.equal(r?.column, 4);
  assert.deepEqual(r?.kind === 'run' && r.command, { shell: 'echo hi # not a comment' });
});

test('directives: syntax, escape, check', () => {
  const p = parseRaw('# syntax=docker/dockerfile:1\n# escape=`\n# check=skip=JSONArgsRecommended;error=true\nFROM x\n');
  assert.equal(p.directives.syntax, 'docker/dockerfile:1');
  assert.equal(p.directives.escape, '`');
  assert.deepEqual(p.directives.check, { skip: ['JSONArgsRecommended'], error: true });
});

test('directives after a comment or instruction are plain comments', () => {
  const p = parseRaw('# about\n# escape=`\nFROM x\n');
  assert.equal(p.directives.escape, '\\');
  const q = parseRaw('FROM x\n# escape=`\n');
  assert.equal(q.directives.escape, '\\');
});

test('escape directive: backtick continues lines and backslash is literal (Windows example)', () => {
  const p = parseDockerfile('# escape=`\nFROM mcr.microsoft.com/windows/servercore\nCOPY testfile.txt c:\\\nRUN dir c:\\ `\n    /w\n');
  const c = p.instructions[1];
  assert.ok(c?.kind === 'copy');
  if (c?.kind === 'copy') assert.equal(c.dest, 'c:\\');
  const r = p.instructions[2];
  assert.deepEqual(r?.kind === 'run' && r.command, { shell: 'dir c:\\     /w' });
});

test('without escape directive a trailing backslash continues the line', () => {
  const p = parseDockerfile('FROM x\nCOPY testfile.txt c:\\\nRUN dir c:\\\n');
  assert.equal(p.instructions.length, 2);
  const c = p.instructions[1];
  assert.ok(c?.kind === 'copy');
  if (c?.kind === 'copy') {
    assert.deepEqual(c.sources, ['testfile.txt', 'c:RUN', 'dir']);
    assert.equal(c.dest, 'c:');
  }
});

test('heredoc RUN <<EOF', () => {
  const r = one('FROM x\nRUN <<EOF\napt-get update\napt-get install -y vim\nEOF\n');
  assert.ok(r.kind === 'run');
  if (r.kind !== 'run') return;
  assert.equal(r.heredocs.length, 1);
  assert.equal(r.heredocs[0]?.content, 'apt-get update\napt-get install -y vim\n');
  assert.equal(r.endLine, 5);
});

test('several heredocs in one instruction', () => {
  const r = one('FROM x\nRUN <<FILE1 cat > file1 && <<FILE2 cat > file2\nI am\nfirst\nFILE1\nI am\nsecond\nFILE2\n');
  assert.ok(r.kind === 'run');
  if (r.kind !== 'run') return;
  assert.deepEqual(r.heredocs.map((h) => [h.name, h.content]), [['FILE1', 'I am\nfirst\n'], ['FILE2', 'I am\nsecond\n']]);
});

test('heredoc with quoted delimiter disables expansion, <<- strips tabs', () => {
  const r = one('FROM x\nCOPY <<-"EOT" /a\n\t$HOME\n\tEOT\n');
  assert.ok(r.kind === 'copy');
  if (r.kind !== 'copy') return;
  const h = r.heredocSources[0];
  assert.equal(h?.expand, false);
  assert.equal(h?.chomp, true);
  assert.equal(h?.content, '\t$HOME\n');
  assert.equal(r.dest, '/a');
});

test('COPY <<EOF /path', () => {
  const c = one('FROM x\nCOPY <<EOF /usr/share/nginx/html/index.html\n<html></html>\nEOF\n');
  assert.ok(c.kind === 'copy');
  if (c.kind !== 'copy') return;
  assert.deepEqual(c.sources, []);
  assert.equal(c.heredocSources[0]?.name, 'EOF');
});

test('COPY flags', () => {
  const c = one('FROM x\nCOPY --from=build --chown=55:mygroup --chmod=644 --link --parents --exclude=*.md --exclude=*.txt a b /dst/');
  assert.ok(c.kind === 'copy');
  if (c.kind !== 'copy') return;
  assert.equal(c.from, 'build');
  assert.equal(c.chown, '55:mygroup');
  assert.equal(c.chmod, '644');
  assert.equal(c.link, true);
  assert.equal(c.parents, true);
  assert.deepEqual(c.exclude, ['*.md', '*.txt']);
  assert.deepEqual(c.sources, ['a', 'b']);
  assert.equal(c.dest, '/dst/');
});

test('COPY JSON form with spaces', () => {
  const c = one('FROM x\nCOPY ["my file.txt", "/dst dir/"]');
  assert.ok(c.kind === 'copy' && c.sources[0] === 'my file.txt' && c.dest === '/dst dir/');
});

test('ADD flags and URL', () => {
  const a = one('FROM x\nADD --checksum=sha256:24454f830cdb571e2c4ad15481119c43b3cafd48dd869a9b2945d1036d1dc68d --chown=1 https://mirrors.edge.kernel.org/pub/linux/kernel/Historic/linux-0.01.tar.gz /');
  assert.ok(a.kind === 'add');
  if (a.kind !== 'add') return;
  assert.match(a.checksum ?? '', /^sha256:/);
  assert.equal(a.sources[0], 'https://mirrors.edge.kernel.org/pub/linux/kernel/Historic/linux-0.01.tar.gz');
  const b = one('FROM x\nADD --keep-git-dir=true --link --unpack=false git@github.com:user/repo.git /src');
  assert.ok(b.kind === 'add' && b.keepGitDir && b.link && b.unpack === false);
});

test('ENV both forms', () => {
  const a = one('FROM x\nENV MY_NAME="John Doe" MY_DOG=Rex\\ The\\ Dog MY_CAT=fluffy');
  assert.deepEqual(a.kind === 'env' && a.pairs, [
    { key: 'MY_NAME', value: '"John Doe"' },
    { key: 'MY_DOG', value: 'Rex\\ The\\ Dog' },
    { key: 'MY_CAT', value: 'fluffy' },
  ]);
  const p = parseDockerfile('FROM x\nENV MY_VAR my-value with spaces');
  const b = p.instructions[1];
  assert.deepEqual(b?.kind === 'env' && b.pairs, [{ key: 'MY_VAR', value: 'my-value with spaces' }]);
  assert.ok(p.warnings.some((w) => w.kind === 'legacy-key-value'));
});

test('LABEL multiple and multi-line', () => {
  const l = one('FROM x\nLABEL "com.example.vendor"="ACME Incorporated" \\\n      version="1.0" description="This text illustrates \\\nthat label-values can span multiple lines."');
  assert.ok(l.kind === 'label');
  if (l.kind !== 'label') return;
  assert.equal(l.pairs.length, 3);
  assert.equal(l.pairs[0]?.key, '"com.example.vendor"');
});

test('ARG with and without defaults', () => {
  const a = one('FROM x\nARG user1=someuser buildno=1 nodefault');
  assert.deepEqual(a.kind === 'arg' && a.args, [{ key: 'user1', value: 'someuser' }, { key: 'buildno', value: '1' }, { key: 'nodefault' }]);
});

test('EXPOSE, VOLUME, USER, WORKDIR, STOPSIGNAL, MAINTAINER', () => {
  const p = parseDockerfile('FROM x\nEXPOSE 80/udp 443\nVOLUME ["/data", "/logs"]\nVOLUME /var/log /var/db\nUSER patrick:grp\nWORKDIR /a\nSTOPSIGNAL SIGKILL\nMAINTAINER me <me@x>');
  const [, e, v1, v2, u, w, s, m] = p.instructions;
  assert.deepEqual(e?.kind === 'expose' && e.ports, ['80/udp', '443']);
  assert.deepEqual(v1?.kind === 'volume' && v1.paths, ['/data', '/logs']);
  assert.deepEqual(v2?.kind === 'volume' && v2.paths, ['/var/log', '/var/db']);
  assert.equal(u?.kind === 'user' && u.user, 'patrick:grp');
  assert.equal(w?.kind === 'workdir' && w.path, '/a');
  assert.equal(s?.kind === 'stopsignal' && s.signal, 'SIGKILL');
  assert.equal(m?.kind === 'maintainer' && m.maintainer, 'me <me@x>');
  assert.ok(p.warnings.some((x) => x.kind === 'maintainer-deprecated'));
});

test('CMD and ENTRYPOINT forms', () => {
  const c = one('FROM x\nCMD ["executable","param1","param2"]');
  assert.deepEqual(c.kind === 'cmd' && c.command, { exec: ['executable', 'param1', 'param2'] });
  const e = one('FROM x\nENTRYPOINT exec top -b');
  assert.deepEqual(e.kind === 'entrypoint' && e.command, { shell: 'exec top -b' });
});

test('HEALTHCHECK CMD with options, and NONE', () => {
  const h = one('FROM x\nHEALTHCHECK --interval=5m --timeout=3s --start-period=1m30s --start-interval=5s --retries=3 \\\n  CMD curl -f http://localhost/ || exit 1');
  assert.ok(h.kind === 'healthcheck');
  if (h.kind !== 'healthcheck') return;
  assert.deepEqual(h.test, ['CMD-SHELL', 'curl -f http://localhost/ || exit 1']);
  assert.equal(h.interval, 300e9);
  assert.equal(h.timeout, 3e9);
  assert.equal(h.startPeriod, 90e9);
  assert.equal(h.startInterval, 5e9);
  assert.equal(h.retries, 3);
  const j = one('FROM x\nHEALTHCHECK CMD ["curl", "-f", "http://localhost/"]');
  assert.deepEqual(j.kind === 'healthcheck' && j.test, ['CMD', 'curl', '-f', 'http://localhost/']);
  const n = one('FROM x\nHEALTHCHECK NONE');
  assert.deepEqual(n.kind === 'healthcheck' && n.test, ['NONE']);
});

test('SHELL and ONBUILD', () => {
  const s = one('FROM x\nSHELL ["powershell", "-command"]');
  assert.deepEqual(s.kind === 'shell' && s.shell, ['powershell', '-command']);
  const o = one('FROM x\nONBUILD ADD . /app/src');
  assert.ok(o.kind === 'onbuild' && o.trigger === 'ADD . /app/src' && o.inner.kind === 'add');
});

test('instruction keywords are case-insensitive', () => {
  const p = parseDockerfile('from x\nrun echo hi\ncopy a b');
  assert.deepEqual(p.instructions.map((i) => i.kind), ['from', 'run', 'copy']);
});

test('Go durations', () => {
  assert.equal(parseGoDuration('1h2m3s'), 3723e9);
  assert.equal(parseGoDuration('1.5s'), 1.5e9);
  assert.equal(parseGoDuration('300ms'), 300e6);
  // Both spellings Go accepts for microseconds: the micro sign and the Greek mu.
  assert.equal(parseGoDuration('1500\u00b5s'), 1.5e6);
  assert.equal(parseGoDuration('2\u03bcs'), 2e3);
  assert.throws(() => parseGoDuration('10'), /missing unit/);
});

// Error paths: message, line and column
const errors: Array<[string, string, RegExp, number, number]> = [
  ['unknown instruction with suggestion', 'FROM x\nCOPPY . /app', /unknown instruction "COPPY" \(did you mean COPY\?\)\n {2}2 \| COPPY \. \/app/, 2, 1],
  ['unknown instruction indented', 'FROM x\n    RUNN echo', /unknown instruction "RUNN" \(did you mean RUN\?\)/, 2, 5],
  ['unknown instruction without suggestion', 'FROM x\nFOOBARBAZ x', /unknown instruction "FOOBARBAZ"$|unknown instruction "FOOBARBAZ"\n/, 2, 1],
  ['unknown flag', 'FROM x\nCOPY --form=build a b', /unknown flag: --form \(did you mean --from\?\)/, 2, 6],
  ['flag missing value', 'FROM x\nCOPY --from a b', /missing a value on flag: --from/, 2, 6],
  ['bad bool flag', 'FROM x\nCOPY --link=maybe a b', /expecting boolean value for flag --link, not: maybe/, 2, 6],
  ['duplicate flag', 'FROM x\nCOPY --from=a --from=b a b', /duplicate flag specified: --from/, 2, 6],
  ['FROM arg count', 'FROM a b', /FROM requires either one or three arguments/, 1, 1],
  ['FROM bad AS', 'FROM a AZ b', /expected "AS"/, 1, 8],
  ['bad stage name', 'FROM a AS 1st', /invalid name for build stage: "1st"/, 1, 11],
  ['COPY one argument', 'FROM x\nCOPY onlyone', /COPY requires at least two arguments, but only one was provided/, 2, 1],
  ['ADD no argument', 'FROM x\nADD', /ADD requires at least two arguments, but none were provided/, 2, 1],
  ['JSON non-string array', 'FROM x\nCMD ["a", 1]', /arrays must be comprised of strings only/, 2, 5],
  ['SHELL not JSON', 'FROM x\nSHELL /bin/bash -c', /SHELL requires the arguments to be in JSON form/, 2, 1],
  ['SHELL empty array', 'FROM x\nSHELL []', /SHELL requires at least one argument/, 2, 1],
  ['ENV missing value', 'FROM x\nENV ONLYKEY', /ENV must have two arguments/, 2, 1],
  ['ENV mixed forms', 'FROM x\nENV a=1 b', /can't find = in "b"/, 2, 9],
  ['LABEL empty', 'FROM x\nLABEL', /LABEL must have two arguments/, 2, 1],
  ['ARG empty', 'ARG', /ARG requires at least one argument/, 1, 1],
  ['EXPOSE empty', 'FROM x\nEXPOSE', /EXPOSE requires at least one argument/, 2, 1],
  ['USER empty', 'FROM x\nUSER', /USER requires exactly one argument/, 2, 1],
  ['WORKDIR empty', 'FROM x\nWORKDIR', /WORKDIR requires exactly one argument/, 2, 1],
  ['STOPSIGNAL empty', 'FROM x\nSTOPSIGNAL', /STOPSIGNAL requires exactly one argument/, 2, 1],
  ['RUN empty', 'FROM x\nRUN', /RUN requires at least one argument/, 2, 1],
  ['HEALTHCHECK NONE args', 'FROM x\nHEALTHCHECK NONE foo', /HEALTHCHECK NONE takes no arguments/, 2, 1],
  ['HEALTHCHECK bad type', 'FROM x\nHEALTHCHECK RUN true', /Unknown type "RUN" in HEALTHCHECK \(try CMD\)/, 2, 13],
  ['HEALTHCHECK missing cmd', 'FROM x\nHEALTHCHECK CMD', /Missing command after HEALTHCHECK CMD/, 2, 1],
  ['HEALTHCHECK short interval', 'FROM x\nHEALTHCHECK --interval=1us CMD true', /Interval "interval" cannot be less than 1ms/, 2, 13],
  ['HEALTHCHECK bad duration', 'FROM x\nHEALTHCHECK --timeout=abc CMD true', /time: invalid duration "abc"/, 2, 13],
  ['HEALTHCHECK negative retries', 'FROM x\nHEALTHCHECK --retries=-1 CMD true', /--retries cannot be negative \(-1\)/, 2, 13],
  ['ONBUILD ONBUILD', 'FROM x\nONBUILD ONBUILD RUN x', /Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed/, 2, 9],
  ['ONBUILD FROM', 'FROM x\nONBUILD FROM y', /FROM isn't allowed as an ONBUILD trigger/, 2, 9],
  ['ONBUILD unknown', 'FROM x\nONBUILD CPY a b', /unknown instruction "CPY" \(did you mean COPY\?\)/, 2, 9],
  ['unterminated heredoc', 'FROM x\nRUN <<EOF\necho hi\n', /unterminated heredoc "EOF"/, 2, 1],
  ['heredoc as destination', 'FROM x\nCOPY a <<EOF\nx\nEOF\n', /COPY cannot accept a heredoc as a destination/, 2, 8],
  ['invalid escape directive', '# escape=x\nFROM x', /invalid escape token 'x' does not match ` or \\/, 1, 1],
  ['duplicate directive', '# escape=`\n# escape=\\\nFROM x', /only one escape parser directive can be used/, 2, 1],
  ['mount bad type', 'FROM x\nRUN --mount=type=cahce,target=/x true', /unsupported mount type "cahce" \(did you mean cache\?\)/, 2, 5],
  ['mount unknown key', 'FROM x\nRUN --mount=type=cache,targte=/x true', /unexpected key 'targte' in 'targte=\/x' \(did you mean target\?\)/, 2, 5],
  ['mount bad sharing', 'FROM x\nRUN --mount=type=cache,target=/x,sharing=all true', /unsupported sharing value "all"/, 2, 5],
  ['mount sharing on bind', 'FROM x\nRUN --mount=type=bind,target=/x,sharing=locked true', /invalid cache sharing set for bind mount/, 2, 5],
  ['secret with from', 'FROM x\nRUN --mount=type=secret,id=a,from=b true', /secret mount should not have a from/, 2, 5],
  ['secret needs id or target', 'FROM x\nRUN --mount=type=secret true', /one of source, target required/, 2, 5],
  ['mount bad mode', 'FROM x\nRUN --mount=type=cache,target=/x,mode=999 true', /invalid value 999 for mode/, 2, 5],
  ['mount size on cache', 'FROM x\nRUN --mount=type=cache,target=/x,size=1m true', /unexpected key 'size' for mount type 'cache'/, 2, 5],
  ['mount bare field', 'FROM x\nRUN --mount=type=cache,target=/x,bogus true', /invalid field 'bogus' must be a key=value pair/, 2, 5],
  ['bad network', 'FROM x\nRUN --network=bridge true', /unsupported network mode "bridge"/, 2, 5],
  ['bad checksum', 'FROM x\nADD --checksum=md5:abc http://x/y /', /invalid checksum digest format/, 2, 5],
];

for (const [name, text, re, line, col] of errors) {
  test(`error: ${name}`, () => expectError(text, re, line, col));
}
