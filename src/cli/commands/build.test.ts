import { test } from 'node:test';
import assert from 'node:assert/strict';
import { isArchwayError } from '../../util/index.js';
import { parseOutput } from './build.js';

function refusal(spec: string): string {
  try {
    parseOutput(spec);
  } catch (e) {
    assert.ok(isArchwayError(e, 'USAGE'), `${spec}: ${String(e)}`);
    return e.message;
  }
  assert.fail(`${spec} was accepted`);
}

test("--output takes buildx's keys per type", () => {
  assert.deepEqual(parseOutput('type=oci,dest=o.tar'), { type: 'oci', dest: 'o.tar' });
  assert.deepEqual(parseOutput('type=oci,dest=d,tar=false,name=app:1'), { type: 'oci', dest: 'd', tar: false, name: 'app:1' });
  assert.deepEqual(parseOutput('type=oci,dest=o.tar,tar=true'), { type: 'oci', dest: 'o.tar' });
  assert.deepEqual(parseOutput('type=docker,dest=o.tar,name=my/img:2'), { type: 'docker', dest: 'o.tar', name: 'my/img:2' });
  assert.deepEqual(parseOutput('type=docker,dest=o.tar,"name=a:1,b:2"'), { type: 'docker', dest: 'o.tar', name: 'a:1,b:2' });
  assert.deepEqual(parseOutput('type=local,dest=out'), { type: 'local', dest: 'out' });
  assert.deepEqual(parseOutput('out'), { type: 'local', dest: 'out' });
  assert.deepEqual(parseOutput('type=registry,name=r.example/a:1'), { type: 'registry', name: 'r.example/a:1' });
  assert.deepEqual(parseOutput('type=registry,push-by-digest=true'), { type: 'registry', pushByDigest: true });
  assert.deepEqual(parseOutput('type=image,name=r.example/a:1,push=true'), { type: 'registry', name: 'r.example/a:1' });
  assert.deepEqual(parseOutput('type=image,name=a:1'), { type: 'store', name: 'a:1' });
  assert.deepEqual(parseOutput('type=image'), { type: 'store' });
});

test("buildx's split-runner recipe: name-canonical is accepted and changes nothing; oci-mediatypes picks the media types", () => {
  const spec = parseOutput('type=image,name=r.example/app,push-by-digest=true,name-canonical=true,push=true');
  assert.deepEqual(spec, { type: 'registry', name: 'r.example/app', pushByDigest: true });
  assert.deepEqual(parseOutput('type=registry,name=r.example/app,name-canonical=false'), { type: 'registry', name: 'r.example/app' });
  assert.deepEqual(parseOutput('type=registry,name=r.example/app,oci-mediatypes=false'), { type: 'registry', name: 'r.example/app', ociMediatypes: false });
  assert.deepEqual(parseOutput('type=image,name=a:1,oci-mediatypes=true'), { type: 'store', name: 'a:1', ociMediatypes: true });
  assert.match(refusal('type=image,name-canonical=yes'), /name-canonical=yes: expected true or false/);
  assert.match(refusal('type=image,oci-mediatypes=1'), /oci-mediatypes=1: expected true or false/);
});

test('--output refuses a key its type does not take, naming the key, the type and what it takes', () => {
  assert.match(refusal('type=oci,dest=d,bogus=1'), /type=oci does not take "bogus" \(it takes dest, tar, name\)/);
  assert.match(refusal('type=local,dest=d,name=x'), /type=local does not take "name" \(it takes dest\)/);
  assert.match(refusal('type=local,dest=d,tar=false'), /type=local does not take "tar"/);
  assert.match(refusal('type=registry,dest=d'), /type=registry does not take "dest" \(it takes name, push, push-by-digest, name-canonical, oci-mediatypes\)/);
  assert.match(refusal('type=oci,dest=d,oci-mediatypes=false'), /type=oci does not take "oci-mediatypes"/);
  assert.match(refusal('type=image,compression=zstd'), /type=image does not take "compression"/);
});

test('--output refuses bad values', () => {
  assert.match(refusal('type=oci,dest=d,tar=no'), /tar=no: expected true or false/);
  assert.match(refusal('type=docker,dest=d,tar=false'), /type=docker writes a tar only/);
  assert.match(refusal('type=oci'), /type=oci needs dest=/);
  assert.match(refusal('type=oci,dest=-'), /stdout/);
  assert.match(refusal('type=docker,dest=d,name='), /name= is empty/);
  assert.match(refusal('type=oci,dest=a,dest=b'), /dest is given twice/);
  assert.match(refusal('type=image,push-by-digest=true'), /needs push=true/);
  assert.match(refusal('type=tarball,dest=x'), /unknown type "tarball"/);
  assert.match(refusal('type=oci,"dest=x'), /unterminated quote/);
  assert.match(refusal('-'), /stdout/);
});
