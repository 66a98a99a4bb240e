import { test } from 'node:test';
import assert from 'node:assert/strict';
import { familiarName, formatReference, parseReference, withDefaultTag, isLoopbackRegistry } from './reference.js';
import { parseLocation } from './transport.js';
import { isArchwayError } from '../util/index.js';

const D = `sha256:${'c'.repeat(64)}`;
const CASES: Array<[string, string]> = [
  ['ubuntu', 'docker.io/library/ubuntu:latest'],
  ['ubuntu:22.04', 'docker.io/library/ubuntu:22.04'],
  ['library/ubuntu', 'docker.io/library/ubuntu:latest'],
  ['docker.io/ubuntu', 'docker.io/library/ubuntu:latest'],
  ['index.docker.io/library/ubuntu:1', 'docker.io/library/ubuntu:1'],
  ['team/app:v1', 'docker.io/team/app:v1'],
  ['localhost/app', 'localhost/app:latest'],
  ['localhost:5000/app:1', 'localhost:5000/app:1'],
  ['127.0.0.1:5000/a/b/c:x', '127.0.0.1:5000/a/b/c:x'],
  ['[::1]:5000/app:1', '[::1]:5000/app:1'],
  ['ghcr.io/org/app', 'ghcr.io/org/app:latest'],
  [`app@${D}`, `docker.io/library/app@${D}`],
  [`app:1@${D}`, `docker.io/library/app:1@${D}`],
  ['a.b-c/e__f/g-h:T.1-x', 'a.b-c/e__f/g-h:T.1-x'],
];
for (const [input, want] of CASES) {
  test(`reference ${input} normalizes to ${want}`, () => assert.equal(formatReference(withDefaultTag(parseReference(input))), want));
}

const BAD = ['', 'UPPER/app', 'app:', 'app:-x', 'app@sha256:1234', 'http://host/app', 'app//x', 'a/-b', `host:port/app`, 'app:' + 'x'.repeat(129)];
for (const input of BAD) {
  test(`malformed reference ${JSON.stringify(input)} is a REFERENCE error naming it`, () => {
    assert.throws(() => parseReference(input), (e: unknown) => isArchwayError(e, 'REFERENCE') && e.message.includes(JSON.stringify(input)));
  });
}

test('familiar names as docker prints them', () => {
  assert.equal(familiarName(withDefaultTag(parseReference('docker.io/library/busybox'))), 'busybox:latest');
  assert.equal(familiarName(parseReference('localhost:5000/app:1')), 'localhost:5000/app:1');
});

test('loopback registries default to plain HTTP', () => {
  for (const h of ['localhost', 'localhost:5000', '127.0.0.1:5000', '127.1.2.3', '[::1]:5000']) assert.ok(isLoopbackRegistry(h), h);
  for (const h of ['docker.io', '10.0.0.1:5000', 'registry.local']) assert.ok(!isLoopbackRegistry(h), h);
});

test("transports in skopeo's spelling", () => {
  assert.deepEqual(parseLocation('oci:/tmp/layout:v1'), { transport: 'oci', path: '/tmp/layout', tag: 'v1', input: 'oci:/tmp/layout:v1' });
  assert.deepEqual(parseLocation('oci:/tmp/layout'), { transport: 'oci', path: '/tmp/layout', input: 'oci:/tmp/layout' });
  assert.equal(parseLocation('oci-archive:img.tar:v1').transport, 'oci-archive');
  const d = parseLocation('docker-archive:img.tar:localhost:5000/app:1');
  assert.ok(d.transport === 'docker-archive' && d.path === 'img.tar' && d.ref && formatReference(d.ref) === 'localhost:5000/app:1');
  const r = parseLocation('docker://busybox');
  assert.ok(r.transport === 'registry' && formatReference(r.ref) === 'docker.io/library/busybox:latest');
  assert.equal(parseLocation('busybox', 'store').transport, 'store');
  assert.equal(parseLocation('store:busybox').transport, 'store');
});
