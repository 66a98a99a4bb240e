import { strict as assert } from 'node:assert';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { describe, it } from 'node:test';
import { ArchwayError } from '../util/index.js';
import {
  DockerConfigCredentials,
  configKeyFor,
  endpointFor,
  mergeScopes,
  normalizeRegistryName,
  parseChallenge,
  parseRegistrySettings,
  retryAfterMs,
  settingsFor,
} from './index.js';

describe('WWW-Authenticate', () => {
  it('parses a bearer challenge with commas inside quotes', () => {
    assert.deepEqual(parseChallenge('Bearer realm="https://auth.example.com/token",service="registry.example.com",scope="repository:a/b:pull,push"'), {
      scheme: 'bearer',
      realm: 'https://auth.example.com/token',
      service: 'registry.example.com',
      scope: 'repository:a/b:pull,push',
    });
  });
  it('parses basic and ignores unknown schemes', () => {
    assert.deepEqual(parseChallenge('Basic realm="Registry Realm"'), { scheme: 'basic', realm: 'Registry Realm' });
    assert.equal(parseChallenge('Negotiate abc'), undefined);
    assert.equal(parseChallenge(undefined), undefined);
  });
  it('prefers bearer when several are offered', () => {
    assert.equal(parseChallenge(['Basic realm="x"', 'Bearer realm="https://a/t"'])?.scheme, 'bearer');
  });
});

describe('scopes and Retry-After', () => {
  it('merges actions per resource', () => {
    assert.deepEqual(mergeScopes(['repository:a:pull', 'repository:a:push', 'repository:b:pull']), ['repository:a:pull,push', 'repository:b:pull']);
    assert.deepEqual(mergeScopes(['repository:a:pull,push repository:c:pull']), ['repository:a:pull,push', 'repository:c:pull']);
  });
  it('reads seconds and HTTP dates', () => {
    assert.equal(retryAfterMs('3'), 3000);
    const now = Date.parse('2024-01-01T00:00:00Z');
    assert.equal(retryAfterMs('Mon, 01 Jan 2024 00:00:05 GMT', now), 5000);
    assert.equal(retryAfterMs('soon'), undefined);
  });
});

describe('registry settings', () => {
  it('parses buildkitd-shaped tables; ca paths relative to the file', () => {
    const s = parseRegistrySettings(
      ['[registry."localhost:5000"]', 'http = true', '[registry."reg.example.com"]', 'insecure = true', 'ca = ["certs/ca.pem"]', 'mirrors = ["https://mirror.example.com/"]'].join('\n'),
      '/etc/archway/config.toml',
    );
    assert.deepEqual(s.hosts['localhost:5000'], { http: true });
    assert.deepEqual(s.hosts['reg.example.com'], { insecure: true, ca: ['/etc/archway/certs/ca.pem'], mirrors: ['mirror.example.com'] });
  });
  it('refuses unknown keys and wrong types with the file name', () => {
    assert.throws(() => parseRegistrySettings('[registry."a.io"]\nhttps = true', '/x.toml'), (e: unknown) => e instanceof ArchwayError && e.message.includes('/x.toml') && e.message.includes('https'));
    assert.throws(() => parseRegistrySettings('[registry."a.io"]\nhttp = "yes"', '/x.toml'), ArchwayError);
  });
  it('chooses schemes: loopback HTTP, others TLS, insecure tries TLS then HTTP (HTTP first on loopback)', () => {
    assert.deepEqual(endpointFor('localhost:5000', {}).schemes, ['http']);
    assert.deepEqual(endpointFor('127.0.0.2:5000', {}).schemes, ['http']);
    assert.deepEqual(endpointFor('reg.example.com', {}).schemes, ['https']);
    assert.deepEqual(endpointFor('127.0.0.1:5000', { http: false }).schemes, ['https']);
    assert.deepEqual(endpointFor('127.0.0.1:5000', { ca: ['/ca.pem'] }), { schemes: ['https'], verify: true, ca: ['/ca.pem'] });
    assert.deepEqual(endpointFor('reg.example.com', { insecure: true }), { schemes: ['https', 'http'], verify: false, ca: [] });
    // On loopback plain HTTP is tried first (it is the default there).
    assert.deepEqual(endpointFor('127.0.0.1:5000', { insecure: true }), { schemes: ['http', 'https'], verify: false, ca: [] });
    assert.deepEqual(endpointFor('localhost:5000', { insecure: true }).schemes, ['http', 'https']);
    assert.equal(settingsFor({ hosts: {} }, 'reg.example.com', ['reg.example.com']).insecure, true);
    assert.deepEqual(settingsFor({ hosts: { 'docker.io': { mirrors: ['m.example.com'] } } }, 'registry-1.docker.io').mirrors, ['m.example.com']);
  });
});

describe('Docker config credentials', () => {
  it('reads base64 auth and identity tokens, matching URL-shaped keys', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'archway-cred-unit-'));
    writeFileSync(
      path.join(dir, 'config.json'),
      JSON.stringify({
        auths: {
          'https://index.docker.io/v1/': { auth: Buffer.from('hubuser:hub:pass').toString('base64') },
          'https://reg.example.com': { identitytoken: 'refresh-123' },
        },
      }),
    );
    const c = new DockerConfigCredentials({ configDir: dir });
    assert.deepEqual(await c.get('docker.io'), { username: 'hubuser', password: 'hub:pass' });
    assert.deepEqual(await c.get('reg.example.com'), { identityToken: 'refresh-123' });
    assert.equal(await c.get('other.example.com'), undefined);
  });
  it('does not quote a broken config file in its error', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'archway-cred-unit-'));
    writeFileSync(path.join(dir, 'config.json'), '{"auths": {"x": {"auth": "c2VjcmV0LXB3"}}');
    await assert.rejects(new DockerConfigCredentials({ configDir: dir }).get('x'), (e: unknown) => e instanceof ArchwayError && !e.message.includes('c2VjcmV0LXB3'));
  });
  it('uses Docker Hub\'s key and normalizes registry names', () => {
    assert.equal(configKeyFor('docker.io'), 'https://index.docker.io/v1/');
    assert.equal(configKeyFor('localhost:5000'), 'localhost:5000');
    assert.equal(normalizeRegistryName('https://index.docker.io/v1/'), 'docker.io');
    assert.equal(normalizeRegistryName('localhost:5000'), 'localhost:5000');
    assert.throws(() => normalizeRegistryName('bad host!'), ArchwayError);
  });
});
