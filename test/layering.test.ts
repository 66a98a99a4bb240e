/**
 * DESIGN.md's layers, enforced (as go-containerregistry's depcheck does): a folder of src/ imports
 * another only through its index.ts, and only folders above it in the list.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join, relative, resolve, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

const ORDER = ['util', 'oci', 'ref', 'progress', 'layer', 'image', 'store', 'registry', 'archive', 'imagetools', 'graph', 'dockerfile', 'sandbox', 'build', 'cli'];
const root = resolve(dirname(fileURLToPath(import.meta.url)), '../../src');

function files(dir: string): string[] {
  return readdirSync(dir).flatMap((n) => {
    const p = join(dir, n);
    return statSync(p).isDirectory() ? files(p) : p.endsWith('.ts') && !p.endsWith('.test.ts') ? [p] : [];
  });
}

test('src/ folders import only upward, and only through index.ts', () => {
  const violations: string[] = [];
  for (const file of files(root)) {
    const rel = relative(root, file);
    const folder = rel.split('/')[0] as string;
    if (!ORDER.includes(folder)) continue;
    const text = readFileSync(file, 'utf8');
    for (const m of text.matchAll(/(?:import|export)[^'"]*?from\s+['"](\.[^'"]+)['"]/g)) {
      const target = relative(root, resolve(dirname(file), m[1] as string));
      const targetFolder = target.split('/')[0] as string;
      if (targetFolder === folder || !ORDER.includes(targetFolder)) continue;
      if (ORDER.indexOf(targetFolder) > ORDER.indexOf(folder)) violations.push(`${rel} imports ${target}: ${targetFolder} is below ${folder}`);
      if (target !== `${targetFolder}/index.js`) violations.push(`${rel} imports ${target}: not through ${targetFolder}/index.ts`);
    }
  }
  assert.deepEqual(violations, []);
});

test('every src/ folder has an index.ts', () => {
  for (const f of ORDER) {
    assert.ok(statSync(join(root, f, 'index.ts')).isFile(), `src/${f}/index.ts is missing`);
  }
});
