import { test } from 'node:test';
import assert from 'node:assert/strict';
import { canonicalJson, contentKey, topologicalStages, type StageNode } from './index.js';

test('canonicalJson sorts keys and drops undefined', () => {
  assert.equal(canonicalJson({ b: 1, a: [1, { d: undefined, c: 'x' }] }), '{"a":[1,{"c":"x"}],"b":1}');
  assert.equal(contentKey({ a: 1, b: 2 }), contentKey({ b: 2, a: 1 }));
});

test('topologicalStages puts dependencies first and dedupes', () => {
  const p = { os: 'linux', architecture: 'amd64' };
  const mk = (id: string, base: StageNode['base']): StageNode => ({ id, index: 0, platform: p, base, steps: [], targetPlatforms: [], line: 1, column: 1, text: '', display: '', baseEnvKnown: true, deps: [] });
  const a = mk('a', { kind: 'scratch' });
  const b = mk('b', { kind: 'stage', stage: a });
  const c = mk('c', { kind: 'stage', stage: b });
  assert.deepEqual(topologicalStages([c, b]).map((s) => s.id), ['a', 'b', 'c']);
});
