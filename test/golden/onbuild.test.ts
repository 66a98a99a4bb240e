/**
 * ONBUILD triggers in the plan: a base image's OnBuild list (given to the planner once the base is
 * resolved) and a base stage's ONBUILD instructions become the first steps of the stage built on
 * them, parsed by the same parser, expanded with that stage's variables; bad triggers are errors at
 * the FROM line that name the trigger and where it came from.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { planBuild, type PlanOptions } from '../../src/dockerfile/index.js';
import type { BuildPlan, Step } from '../../src/graph/index.js';
import { isArchwayError } from '../../src/util/index.js';
import { formatPlatform, parsePlatform } from '../../src/oci/index.js';

const amd64 = parsePlatform('linux/amd64');
const arm64 = parsePlatform('linux/arm64');

function plan(dockerfile: string, onbuild: Record<string, string[]>, extra: Partial<PlanOptions> = {}): BuildPlan {
  return planBuild({ dockerfile, platforms: [amd64], buildPlatform: amd64, baseImageOnBuild: (ref) => onbuild[ref], ...extra });
}

function shown(steps: Step[]): string[] {
  return steps.map((s) => `${s.line} ${s.display}`);
}

test("a base image's triggers run first, at the FROM line, shown as ONBUILD", () => {
  const p = plan('ARG V=1\nFROM app-base:1\nRUN echo mine\n', { 'app-base:1': ['COPY . /src', 'RUN make -C /src'] });
  const steps = p.targets[0]?.stage.steps ?? [];
  assert.deepEqual(shown(steps), ['2 ONBUILD COPY . /src', '2 ONBUILD RUN make -C /src', '3 RUN echo mine']);
  assert.equal(steps[0]?.kind, 'copy');
  assert.deepEqual(steps[1]?.kind === 'run' ? steps[1].args : [], ['/bin/sh', '-c', 'make -C /src']);
});

test('triggers change the stage key, so a build with them never reuses one without', () => {
  const df = 'FROM app-base:1\nRUN echo mine\n';
  const without = plan(df, {});
  const withTriggers = plan(df, { 'app-base:1': ['RUN echo trigger'] });
  assert.notEqual(without.targets[0]?.stage.id, withTriggers.targets[0]?.stage.id);
});

test('triggers see the build args and ENV of the stage, and set ENV for the steps after them', () => {
  const p = plan('FROM app-base:1\nRUN echo $GREETING\n', { 'app-base:1': ['ARG WHO=world', 'ENV GREETING="hello $WHO"'] }, { buildArgs: { WHO: 'archway' } });
  const steps = p.targets[0]?.stage.steps ?? [];
  const env = steps.find((s) => s.kind === 'env');
  assert.deepEqual(env?.kind === 'env' ? env.pairs : [], [{ key: 'GREETING', value: 'hello archway' }]);
});

test('each platform gets the triggers of its own base manifest', () => {
  const p = planBuild({
    dockerfile: 'FROM app-base:1\n',
    platforms: [amd64, arm64],
    buildPlatform: amd64,
    baseImageOnBuild: (_ref, platform) => [`RUN echo ${formatPlatform(platform)}`],
  });
  assert.deepEqual(
    p.targets.map((t) => t.stage.steps.map((s) => s.display)),
    [['ONBUILD RUN echo linux/amd64'], ['ONBUILD RUN echo linux/arm64']],
  );
});

test("a base stage's ONBUILD instructions trigger in the stage built on it, and only there", () => {
  const df = ['FROM scratch AS base', 'ONBUILD COPY hello.txt /hello.txt', 'FROM base AS child', 'RUN true', 'FROM child AS grandchild', 'CMD ["x"]', ''].join('\n');
  const p = plan(df, {});
  const byName = new Map(p.stages.map((s) => [s.name, s]));
  assert.deepEqual(shown(byName.get('base')?.steps ?? []), ['2 ONBUILD COPY hello.txt /hello.txt']);
  assert.equal(byName.get('base')?.steps[0]?.kind, 'onbuild', 'in its own stage ONBUILD only records the trigger');
  assert.deepEqual(shown(byName.get('child')?.steps ?? []), ['3 ONBUILD COPY hello.txt /hello.txt', '4 RUN true']);
  assert.deepEqual(shown(byName.get('grandchild')?.steps ?? []), ['6 CMD ["x"]'], 'triggers do not carry over two levels');
});

test('a trigger may copy from a stage of the Dockerfile, which becomes a dependency', () => {
  const p = plan('FROM scratch AS tools\nCOPY a /a\nFROM app-base:1\n', { 'app-base:1': ['COPY --from=tools /a /b'] });
  const root = p.targets[0]?.stage;
  assert.equal(root?.deps.length, 1);
  assert.equal(p.stages.length, 2);
});

function triggerError(triggers: string[], re: RegExp): void {
  assert.throws(
    () => plan('# a comment\nFROM app-base:1\nRUN true\n', { 'app-base:1': triggers }),
    (e: unknown) => {
      assert.ok(isArchwayError(e), String(e));
      assert.equal(e.code, 'PARSE');
      assert.match(e.message, /^Dockerfile:2:1: ONBUILD trigger /);
      assert.match(e.message, /from base image "app-base:1"/);
      assert.match(e.message, re);
      assert.equal(e.details['line'], 2);
      return true;
    },
  );
}

test('a trigger that does not parse is an error at the FROM line naming the base image and the trigger', () => {
  triggerError(['RUNN make'], /"RUNN make".*unknown instruction "RUNN".*did you mean RUN/);
  triggerError(['COPY onlyone'], /"COPY onlyone".*COPY requires at least two arguments/);
  triggerError(['RUN --mount=type=bogus,target=/x true'], /unsupported mount type "bogus"/);
});

test('FROM, MAINTAINER and ONBUILD are not allowed as triggers', () => {
  triggerError(['FROM busybox'], /FROM isn't allowed as an ONBUILD trigger/);
  triggerError(['MAINTAINER me'], /MAINTAINER isn't allowed as an ONBUILD trigger/);
  triggerError(['ONBUILD RUN x'], /Chaining ONBUILD/);
});

test('an expansion error inside a trigger names the trigger too', () => {
  triggerError(["ENV A=${B:?needs_B}"], /"ENV A=\$\{B:\?needs_B\}".*needs_B/);
});
