import { test } from 'node:test';
import assert from 'node:assert/strict';
import { planBuild, formatPlan, type PlanOptions } from '../../src/dockerfile/index.js';
import type { BuildPlan, RunStep, Step, CopyStep } from '../../src/graph/index.js';
import { isArchwayError } from '../../src/util/index.js';
import { parsePlatform } from '../../src/oci/index.js';

const amd64 = parsePlatform('linux/amd64');
const arm64 = parsePlatform('linux/arm64');
const armv7 = parsePlatform('linux/arm/v7');

function plan(dockerfile: string, extra: Partial<PlanOptions> = {}): BuildPlan {
  return planBuild({ dockerfile, platforms: [amd64], buildPlatform: amd64, ...extra });
}
function multi(dockerfile: string, extra: Partial<PlanOptions> = {}): BuildPlan {
  return planBuild({ dockerfile, platforms: [amd64, arm64, armv7], buildPlatform: amd64, ...extra });
}
function stepsOf(p: BuildPlan, i = 0): Step[] {
  return (p.targets[i]?.stage.steps ?? []) as Step[];
}
function step<K extends Step['kind']>(p: BuildPlan, kind: K, n = 0, t = 0): Extract<Step, { kind: K }> {
  const s = stepsOf(p, t).filter((x) => x.kind === kind)[n];
  assert.ok(s, `no ${kind} step #${n}`);
  return s as Extract<Step, { kind: K }>;
}
function planError(dockerfile: string, re: RegExp, line: number, column: number, extra: Partial<PlanOptions> = {}): void {
  assert.throws(
    () => plan(dockerfile, extra),
    (e: unknown) => {
      assert.ok(isArchwayError(e), String(e));
      assert.match(e.message, re);
      assert.equal(e.details['line'], line, e.message);
      assert.equal(e.details['column'], column, e.message);
      return true;
    },
  );
}

test('single stage: steps, display and shell-form CMD', () => {
  const p = plan('FROM alpine:3.20\nENV APP=/app\nWORKDIR $APP\nCOPY . $APP/\nRUN echo $APP\nCMD echo hi\nENTRYPOINT ["/bin/app"]');
  assert.equal(p.stages.length, 1);
  const s = p.targets[0]?.stage;
  assert.deepEqual(s?.base, { kind: 'image', ref: 'alpine:3.20', platform: amd64 });
  assert.equal(step(p, 'workdir').path, '/app');
  assert.equal(step(p, 'copy').dest, '/app/');
  assert.deepEqual(step(p, 'run').args, ['/bin/sh', '-c', 'echo $APP']);
  assert.deepEqual(step(p, 'cmd').args, ['/bin/sh', '-c', 'echo hi']);
  assert.deepEqual(step(p, 'entrypoint').args, ['/bin/app']);
  assert.equal(step(p, 'workdir').line, 3);
  assert.equal(step(p, 'workdir').text, 'WORKDIR $APP');
  assert.equal(step(p, 'workdir').display, 'WORKDIR /app');
});

test('ENV example from the reference: values expand with the env before the instruction', () => {
  const p = plan('FROM scratch\nENV abc=hello\nENV abc=bye def=$abc\nENV ghi=$abc');
  assert.deepEqual(step(p, 'env', 1).pairs, [{ key: 'abc', value: 'bye' }, { key: 'def', value: 'hello' }]);
  assert.deepEqual(step(p, 'env', 2).pairs, [{ key: 'ghi', value: 'bye' }]);
});

test('ENV value quoting and escapes', () => {
  const p = plan('FROM scratch\nENV MY_NAME="John Doe" MY_DOG=Rex\\ The\\ Dog');
  assert.deepEqual(step(p, 'env').pairs, [{ key: 'MY_NAME', value: 'John Doe' }, { key: 'MY_DOG', value: 'Rex The Dog' }]);
});

test('ENV overrides ARG of the same name (reference example)', () => {
  const p = plan('FROM ubuntu\nARG CONT_IMG_VER\nENV CONT_IMG_VER=v1.0.0\nRUN echo $CONT_IMG_VER\nUSER ${CONT_IMG_VER}', { buildArgs: { CONT_IMG_VER: 'v2.0.1' } });
  assert.equal(step(p, 'user').user, 'v1.0.0');
  assert.deepEqual(step(p, 'run').env, {});
});

test('ARG default, --build-arg override, RUN env', () => {
  const df = 'FROM busybox\nARG user1=someuser\nARG buildno\nRUN echo $user1 $buildno\nUSER $user1';
  const p = plan(df);
  assert.deepEqual(step(p, 'run').env, { user1: 'someuser' });
  assert.equal(step(p, 'user').user, 'someuser');
  const q = plan(df, { buildArgs: { user1: 'what_user', buildno: '7' } });
  assert.deepEqual(step(q, 'run').env, { user1: 'what_user', buildno: '7' });
  assert.equal(step(q, 'user').user, 'what_user');
});

test('ARG used before declaration expands empty (reference example)', () => {
  const p = plan('FROM busybox\nUSER ${username:-some_user}\nARG username\nUSER $username', { buildArgs: { username: 'what_user' } });
  assert.equal(step(p, 'user', 0).user, 'some_user');
  assert.equal(step(p, 'user', 1).user, 'what_user');
});

test('global ARG visible in FROM only unless redeclared', () => {
  const df = 'ARG VERSION=latest\nFROM busybox:$VERSION\nRUN echo $VERSION\nUSER u$VERSION\nARG VERSION\nWORKDIR /v$VERSION';
  const p = plan(df);
  assert.deepEqual(p.targets[0]?.stage.base, { kind: 'image', ref: 'busybox:latest', platform: amd64 });
  assert.equal(step(p, 'user').user, 'u');
  assert.equal(step(p, 'workdir').path, '/vlatest');
  const q = plan(df, { buildArgs: { VERSION: '1.36' } });
  assert.deepEqual(q.targets[0]?.stage.base, { kind: 'image', ref: 'busybox:1.36', platform: amd64 });
  assert.equal(step(q, 'workdir').path, '/v1.36');
});

test('ARG scope ends at the end of the stage', () => {
  const p = plan('FROM busybox AS a\nARG SETTINGS=x\nFROM a\nUSER u$SETTINGS');
  assert.equal(step(p, 'user').user, 'u');
});

test('ENV is inherited from a base stage, ARG is not', () => {
  const p = plan('FROM scratch AS base\nENV A=1\nARG B=2\nFROM base\nLABEL a=$A b=$B');
  assert.deepEqual(step(p, 'label').pairs, [{ key: 'a', value: '1' }, { key: 'b', value: '' }]);
});

test('automatic platform args: global scope for FROM, in a stage only after ARG', () => {
  const df = 'FROM --platform=$BUILDPLATFORM alpine AS b\nLABEL before=$TARGETARCH\nARG TARGETARCH TARGETPLATFORM BUILDARCH TARGETVARIANT\nLABEL after=$TARGETARCH p=$TARGETPLATFORM b=$BUILDARCH v=$TARGETVARIANT';
  const p = planBuild({ dockerfile: df, platforms: [armv7], buildPlatform: amd64 });
  assert.deepEqual(step(p, 'label', 0).pairs, [{ key: 'before', value: '' }]);
  assert.deepEqual(step(p, 'label', 1).pairs, [
    { key: 'after', value: 'arm' },
    { key: 'p', value: 'linux/arm/v7' },
    { key: 'b', value: 'amd64' },
    { key: 'v', value: 'v7' },
  ]);
  assert.ok(p.warnings.some((w) => w.kind === 'platform-arg-undeclared' && w.line === 2));
  assert.deepEqual(p.targets[0]?.stage.platform, amd64);
});

test('FROM uses TARGETARCH without declaring it', () => {
  const p = multi('FROM alpine:$TARGETARCH');
  assert.deepEqual(p.targets.map((t) => t.stage.base.kind === 'image' && t.stage.base.ref), ['alpine:amd64', 'alpine:arm64', 'alpine:arm']);
});

test('multi-platform single stage: one node per target, platform set', () => {
  const p = multi('FROM alpine\nRUN apk add curl');
  assert.equal(p.stages.length, 3);
  assert.deepEqual(p.targets.map((t) => t.stage.platform), [amd64, arm64, armv7]);
  const ids = new Set(p.targets.map((t) => t.stage.id));
  assert.equal(ids.size, 3);
});

const CROSS = `# syntax=docker/dockerfile:1
FROM --platform=$BUILDPLATFORM golang:1.22 AS deps
WORKDIR /src
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
FROM deps AS build
ARG TARGETOS TARGETARCH
COPY . .
RUN --mount=type=cache,target=/root/.cache/go-build GOOS=$TARGETOS GOARCH=$TARGETARCH go build -o /out/app .
FROM gcr.io/distroless/static:nonroot
COPY --from=build /out/app /app
ENTRYPOINT ["/app"]
`;

test('cross-compiling: builder stage without TARGET* is shared, the one with ARG TARGETARCH is not', () => {
  const p = multi(CROSS);
  const deps = p.stages.filter((s) => s.name === 'deps');
  assert.equal(deps.length, 1);
  assert.equal(deps[0]?.targetPlatforms.length, 3);
  assert.deepEqual(deps[0]?.platform, amd64);
  const build = p.stages.filter((s) => s.name === 'build');
  assert.equal(build.length, 3);
  assert.ok(build.every((b) => b.platform.architecture === 'amd64'));
  assert.deepEqual(build.map((b) => (b.steps[2] as RunStep).env['TARGETARCH']), ['amd64', 'arm64', 'arm']);
  const finals = p.targets.map((t) => t.stage);
  assert.deepEqual(finals.map((f) => f.platform), [amd64, arm64, armv7]);
  assert.equal(p.stages.length, 1 + 3 + 3);
  // topological: deps first
  assert.equal(p.stages[0]?.name, 'deps');
  for (const s of p.stages) for (const d of s.deps) assert.ok(p.stages.findIndex((x) => x.id === d) < p.stages.indexOf(s));
});

test('cross-compiling: ids are deterministic across runs and independent of line numbers', () => {
  const a = multi(CROSS);
  const b = multi('\n\n' + CROSS.replace('# syntax=docker/dockerfile:1\n', ''));
  assert.deepEqual(a.stages.map((s) => s.id), b.stages.map((s) => s.id));
});

test('cache mount defaults', () => {
  const p = multi(CROSS);
  const m = (p.stages[0]?.steps[2] as RunStep).mounts[0];
  assert.deepEqual(m, { type: 'cache', target: '/go/pkg/mod', readonly: false, id: '/go/pkg/mod', sharing: 'shared', mode: 0o755 });
});

test('secret, ssh, tmpfs and bind mounts', () => {
  const p = plan('FROM alpine AS src\nFROM alpine\nRUN --mount=type=secret,id=aws,required --mount=type=ssh --mount=type=tmpfs,target=/tmp,size=64m --mount=type=bind,from=src,source=/etc,target=/mnt,rw make');
  const ms = step(p, 'run').mounts;
  assert.deepEqual(ms[0], { type: 'secret', target: '/run/secrets/aws', readonly: true, id: 'aws', mode: 0o400, required: true });
  assert.deepEqual(ms[1], { type: 'ssh', target: '/run/buildkit/ssh_agent.0', readonly: true, id: 'default', mode: 0o600, required: false });
  assert.deepEqual(ms[2], { type: 'tmpfs', target: '/tmp', readonly: false, size: 64 * 1024 * 1024 });
  assert.equal(ms[3]?.from?.kind, 'stage');
  assert.equal(ms[3]?.readonly, false);
  assert.equal(ms[3]?.source, '/etc');
});

test('mount values are expanded', () => {
  const p = plan('FROM alpine\nARG CACHE=/c\nRUN --mount=type=cache,target=$CACHE,id=x-${CACHE} true');
  assert.deepEqual(step(p, 'run').mounts[0]?.target, '/c');
  assert.deepEqual(step(p, 'run').mounts[0]?.id, 'x-/c');
});

test('pruning and --target', () => {
  const df = 'FROM alpine AS a\nRUN a\nFROM alpine AS unused\nRUN u\nFROM alpine AS b\nCOPY --from=a /x /x\nFROM scratch AS c\n';
  const p = plan(df);
  assert.deepEqual(p.stages.map((s) => s.name), ['c']);
  const q = plan(df, { target: 'B' });
  assert.deepEqual(q.stages.map((s) => s.name), ['a', 'b']);
});

test('COPY --from by index, by name and image', () => {
  const p = plan('FROM alpine AS one\nFROM alpine\nCOPY --from=0 /a /a\nCOPY --from=one /b /b\nCOPY --from=nginx:latest /etc/nginx/nginx.conf /nginx.conf');
  const c = stepsOf(p).filter((s): s is CopyStep => s.kind === 'copy');
  assert.equal(c[0]?.from.kind === 'stage' && c[0].from.stage.name, 'one');
  assert.equal(c[1]?.from.kind === 'stage' && c[1].from.stage.index, 0);
  assert.deepEqual(c[2]?.from, { kind: 'image', ref: 'nginx:latest', platform: amd64 });
  assert.equal(p.stages.length, 2);
});

test('COPY --from expands variables', () => {
  const p = plan('FROM alpine AS stage-prod\nFROM alpine\nARG ENV=prod\nCOPY --from=stage-${ENV} /a /a');
  const c = step(p, 'copy');
  assert.equal(c.from.kind === 'stage' && c.from.stage.name, 'stage-prod');
});

test('COPY heredoc expands unless the delimiter is quoted; chmod applies', () => {
  const p = plan('FROM alpine\nARG NAME=world\nCOPY --chmod=755 <<EOF <<"RAW" /dst/\nhello "$NAME"\nEOF\n$NAME\nRAW\n');
  const c = step(p, 'copy');
  assert.deepEqual(c.heredocs.map((h) => [h.name, h.content, h.chmod]), [['EOF', 'hello "world"\n', '755'], ['RAW', '$NAME\n', '755']]);
});

test('RUN heredoc: simple script runs in the shell, shebang becomes a mounted script, complex goes to the shell', () => {
  const a = plan('FROM alpine\nRUN <<EOF\necho a\nEOF\n');
  assert.deepEqual(step(a, 'run').args, ['/bin/sh', '-c', 'echo a\n']);
  const b = plan('FROM alpine\nRUN <<EOF\n#!/usr/bin/env python3\nprint(1)\nEOF\n');
  assert.deepEqual(step(b, 'run').args, ['/dev/pipes/EOF']);
  assert.equal(step(b, 'run').script?.content, '#!/usr/bin/env python3\nprint(1)\n');
  const c = plan('FROM alpine\nRUN python3 <<EOF\nprint(1)\nEOF\n');
  assert.deepEqual(step(c, 'run').args, ['/bin/sh', '-c', 'python3 <<EOF\nprint(1)\nEOF']);
  const d = plan('FROM alpine\nRUN <<-EOF\n\techo tab\n\tEOF\n');
  assert.deepEqual(step(d, 'run').args, ['/bin/sh', '-c', 'echo tab\n']);
});

test('SHELL changes the shell of later shell-form instructions', () => {
  const p = plan('FROM alpine\nSHELL ["/bin/bash", "-o", "pipefail", "-c"]\nRUN a | b\nCMD run');
  assert.deepEqual(step(p, 'run').args, ['/bin/bash', '-o', 'pipefail', '-c', 'a | b']);
  assert.deepEqual(step(p, 'cmd').args, ['/bin/bash', '-o', 'pipefail', '-c', 'run']);
});

test('SHELL is inherited from a base stage', () => {
  const p = plan('FROM alpine AS a\nSHELL ["/bin/ash", "-c"]\nFROM a\nRUN x');
  assert.deepEqual(step(p, 'run').shell, ['/bin/ash', '-c']);
});

test('EXPOSE normalizes and expands ranges, VOLUME, STOPSIGNAL, HEALTHCHECK, ONBUILD, LABEL', () => {
  const p = plan('FROM alpine\nARG P=8080\nEXPOSE 80 $P/udp 9000-9002\nVOLUME ["/data"]\nSTOPSIGNAL SIGTERM\nHEALTHCHECK --interval=30s CMD true\nONBUILD RUN echo $X\nLABEL "com.example.vendor"="ACME Incorporated"');
  assert.deepEqual(step(p, 'expose').ports, ['80/tcp', '8080/udp', '9000/tcp', '9001/tcp', '9002/tcp']);
  assert.deepEqual(step(p, 'volume').paths, ['/data']);
  assert.equal(step(p, 'stopsignal').signal, 'SIGTERM');
  assert.equal(step(p, 'healthcheck').interval, 30e9);
  assert.equal(step(p, 'onbuild').instruction, 'RUN echo $X');
  assert.deepEqual(step(p, 'label').pairs, [{ key: 'com.example.vendor', value: 'ACME Incorporated' }]);
});

test('ADD splits URLs from local sources and keeps checksum', () => {
  const p = plan('FROM alpine\nADD --checksum=sha256:24454f830cdb571e2c4ad15481119c43b3cafd48dd869a9b2945d1036d1dc68d https://example.com/a.tar.gz /\nADD app.tar.gz git@github.com:moby/buildkit.git /src/');
  assert.deepEqual(step(p, 'add', 0).urls, ['https://example.com/a.tar.gz']);
  assert.deepEqual(step(p, 'add', 1).sources, ['app.tar.gz']);
  assert.deepEqual(step(p, 'add', 1).urls, ['git@github.com:moby/buildkit.git']);
});

test('escape directive backtick in a plan', () => {
  const p = planBuild({ dockerfile: '# escape=`\nFROM mcr.microsoft.com/windows/servercore\nWORKDIR C:\\work\nENV A=x`$B\nRUN dir `\n  c:\\', platforms: [parsePlatform('windows/amd64')], buildPlatform: amd64 });
  assert.equal(step(p, 'workdir').path, 'C:\\work');
  assert.deepEqual(step(p, 'env').pairs, [{ key: 'A', value: 'x$B' }]);
  assert.deepEqual(step(p, 'run').args, ['cmd', '/S', '/C', 'dir   c:\\']);
});

test('warnings: hard-coded platform, pinned digest, undefined variable', () => {
  const p = multi('FROM --platform=linux/amd64 alpine@sha256:0000000000000000000000000000000000000000000000000000000000000000 AS a\nFROM scratch\nCOPY --from=a /x $NOPE/');
  const kinds = p.warnings.map((w) => [w.kind, w.line]);
  assert.ok(kinds.some(([k, l]) => k === 'hardcoded-platform' && l === 1));
  assert.ok(kinds.some(([k, l]) => k === 'pinned-digest' && l === 1));
  assert.ok(kinds.some(([k, l]) => k === 'undefined-var' && l === 3));
  assert.equal(p.warnings.filter((w) => w.kind === 'undefined-var').length, 1);
});

test('undefined variables are not flagged when the base image env is unknown, and are expanded when given', () => {
  const df = 'FROM alpine\nWORKDIR $HOME/app';
  assert.ok(!plan(df).warnings.some((w) => w.kind === 'undefined-var'));
  const p = plan(df, { baseImageEnv: () => ({ HOME: '/root' }) });
  assert.equal(step(p, 'workdir').path, '/root/app');
  assert.equal(p.targets[0]?.stage.baseEnvKnown, true);
});

test("a base image's SHELL runs the child's shell-form RUN and CMD; a SHELL of its own still wins", () => {
  const df = 'FROM base\nRUN make\nCMD serve\nSHELL ["/bin/bash", "-c"]\nRUN test';
  const p = plan(df, { baseImageShell: () => ['/bin/ash', '-eo', 'pipefail', '-c'] });
  assert.deepEqual(step(p, 'run').args, ['/bin/ash', '-eo', 'pipefail', '-c', 'make']);
  assert.deepEqual(step(p, 'cmd').args, ['/bin/ash', '-eo', 'pipefail', '-c', 'serve']);
  assert.deepEqual(step(p, 'run', 1).args, ['/bin/bash', '-c', 'test']);
  // Without the base's config, the default shell.
  assert.deepEqual(step(plan(df), 'run').args, ['/bin/sh', '-c', 'make']);
});

test('--build-args that no ARG declares are listed; proxies, SOURCE_DATE_EPOCH and BUILDKIT_* never are', () => {
  const buildArgs = { VERSION: '1', GLOBAL: 'g', TYPO: 'x', HTTP_PROXY: 'p', no_proxy: 'n', SOURCE_DATE_EPOCH: '0', BUILDKIT_INLINE_CACHE: '1' };
  const p = plan('ARG GLOBAL\nFROM alpine\nARG VERSION\nRUN echo $VERSION', { buildArgs });
  assert.deepEqual(p.unusedBuildArgs, ['TYPO']);
  assert.equal(plan('FROM alpine', {}).unusedBuildArgs, undefined);
});

test('RUN referencing $TARGETARCH without ARG is flagged', () => {
  const p = plan('FROM alpine\nRUN echo ${TARGETARCH}');
  assert.ok(p.warnings.some((w) => w.kind === 'platform-arg-undeclared' && w.line === 2));
  const q = plan('FROM alpine\nARG TARGETARCH\nRUN echo ${TARGETARCH}');
  assert.ok(!q.warnings.some((w) => w.kind === 'platform-arg-undeclared'));
});

test('# check=skip and error=true', () => {
  const p = plan('# check=skip=JSONArgsRecommended\nFROM alpine\nCMD echo');
  assert.ok(!p.warnings.some((w) => w.kind === 'json-args-recommended'));
  planError('# check=error=true\nFROM alpine\nCMD echo', /lint error.*JSON arguments recommended/, 3, 1);
});

test('formatPlan shows platforms and shared stages', () => {
  const out = formatPlan(multi(CROSS));
  assert.match(out, /platform linux\/amd64: target stage 2/);
  assert.match(out, /stage 0 "deps" \[[0-9a-f]{12}\] on linux\/amd64 from golang:1\.22 \(linux\/amd64\) shared with linux\/arm64, linux\/arm\/v7/);
  assert.match(out, /stage 1 "build" \[[0-9a-f]{12}\] on linux\/amd64 from stage 0 "deps"\n/);
  assert.match(out, /platform linux\/arm\/v7/);
});

// error paths with positions
const errs: Array<[string, string, RegExp, number, number, Partial<PlanOptions>?]> = [
  ['instruction before FROM', 'RUN x\nFROM a', /RUN instruction before the first FROM/, 1, 1],
  ['no FROM', 'ARG A=1', /no FROM instruction/, 1, 1],
  ['empty', '# just a comment\n', /no instructions/, 1, 1],
  ['duplicate stage', 'FROM a AS x\nFROM b AS x', /duplicate stage name "x"/, 2, 1],
  ['invalid stage index', 'FROM a\nCOPY --from=3 /a /b', /invalid stage index 3/, 2, 1],
  ['copy from itself', 'FROM a AS me\nCOPY --from=me /a /b', /circular dependency detected on stage: me/, 2, 1],
  ['cycle', 'FROM a AS x\nCOPY --from=y /a /b\nFROM a AS y\nCOPY --from=x /a /b', /circular dependency detected on stage: (x|y)/, 2, 1],
  ['bad --from', 'FROM a\nCOPY --from=Not_A_Ref! /a /b', /neither a build stage nor a valid image reference/, 2, 1],
  ['blank base', 'ARG IMG\nFROM $IMG', /base name \(\$IMG\) should not be blank/, 2, 1],
  ['bad platform', 'FROM --platform=linux/m68k a', /failed to parse platform "linux\/m68k"/, 1, 6],
  ['bad reference', 'FROM Alpine', /invalid reference format/, 1, 1],
  ['bad expansion', 'FROM a\nWORKDIR ${', /missing '}'/, 2, 1],
  ['required var', 'FROM a\nUSER ${NAME:?set NAME}', /NAME: set NAME/, 2, 1],
  ['bad port', 'FROM a\nEXPOSE 80/http', /invalid port "80\/http"/, 2, 8],
  ['bad signal', 'FROM a\nSTOPSIGNAL SIGFOO', /Invalid signal: SIGFOO/, 2, 1],
  ['mount needs target', 'FROM a\nRUN --mount=type=cache true', /requires a target/, 2, 5],
  ['mount bad expanded target', 'FROM a\nARG T=/\nRUN --mount=type=cache,target=$T true', /invalid mount target "\/"/, 3, 5],
  ['network expanded', 'FROM a\nARG N=bridge\nRUN --network=$N true', /unsupported network mode "bridge"/, 3, 5],
  ['checksum needs URL', 'FROM a\nADD --checksum=sha256:abcd local.tar /', /checksum requires a single source that is an HTTP URL/, 2, 5],
];
for (const [name, df, re, line, col, extra] of errs) {
  test(`plan error: ${name}`, () => planError(df, re, line, col, extra));
}

test('unknown --target', () => {
  assert.throws(
    () => plan('FROM a AS builder\nFROM b', { target: 'buidler' }),
    (e: unknown) => isArchwayError(e, 'NOT_FOUND') && /target stage "buidler" could not be found \(did you mean builder\?\)/.test(e.message),
  );
});

test('--from naming no stage with a near miss is an image with a warning', () => {
  const p = plan('FROM a AS builder\nFROM b\nCOPY --from=buidler /a /b');
  assert.ok(p.warnings.some((w) => w.kind === 'from-not-stage' && w.line === 3 && /did you mean stage "builder"/.test(w.message)));
});
