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
  loadRegistrySettings,
  mergeScopes,
  RegistryClient,
  normalizeRegistryName,
  parseChallenge,
  parseRegistrySettings,
  retryAfterMs,
  settingsFor,
  timeoutsFromEnv,
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

describe('loading the registry config file', () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'archway-settings-unit-'));
  const missing = path.join(dir, 'nonexistent.toml');
  const quiet = { PATH: process.env['PATH'] ?? '', XDG_CONFIG_HOME: path.join(dir, 'xdg') };

  it('a file the user named (--registry-config) must exist: NOT_FOUND, exit 2, naming the file', async () => {
    await assert.rejects(loadRegistrySettings({ file: missing, env: quiet }), (e: unknown) => {
      assert.ok(e instanceof ArchwayError, String(e));
      assert.equal(e.code, 'NOT_FOUND');
      assert.equal(e.exitCode, 2);
      assert.ok(e.message.includes(missing), e.message);
      return true;
    });
    // Under a path that is not a directory, likewise.
    const file = path.join(dir, 'plain-file');
    writeFileSync(file, '');
    await assert.rejects(loadRegistrySettings({ file: path.join(file, 'config.toml'), env: quiet }), (e: unknown) => e instanceof ArchwayError && e.code === 'NOT_FOUND');
  });
  it('the default path and $ARCHWAY_CONFIG may be missing: no settings', async () => {
    assert.deepEqual(await loadRegistrySettings({ env: quiet }), { hosts: {} });
    assert.deepEqual(await loadRegistrySettings({ env: { ...quiet, ARCHWAY_CONFIG: missing } }), { hosts: {} });
    assert.deepEqual(await loadRegistrySettings({ file: missing, required: false, env: quiet }), { hosts: {} });
  });
  it('reads a named file that exists', async () => {
    const file = path.join(dir, 'named.toml');
    writeFileSync(file, '[registry."127.0.0.1:5000"]\nmirrors = ["127.0.0.1:5001"]\n');
    assert.deepEqual((await loadRegistrySettings({ file, env: quiet })).hosts['127.0.0.1:5000'], { mirrors: ['127.0.0.1:5001'] });
  });
  it('timeouts from ARCHWAY_REGISTRY_TIMEOUT and ARCHWAY_REGISTRY_IDLE_TIMEOUT (seconds); a bad value is a usage error naming the variable', async () => {
    assert.equal(timeoutsFromEnv({}), undefined);
    assert.deepEqual(timeoutsFromEnv({ ARCHWAY_REGISTRY_TIMEOUT: '0.25' }), { connectMs: 250, responseMs: 250 });
    assert.deepEqual(timeoutsFromEnv({ ARCHWAY_REGISTRY_IDLE_TIMEOUT: '600' }), { idleMs: 600_000 });
    assert.deepEqual((await loadRegistrySettings({ env: { ...quiet, ARCHWAY_REGISTRY_TIMEOUT: '5' } })).timeouts, { connectMs: 5000, responseMs: 5000 });
    for (const bad of ['0', '-1', 'soon']) {
      assert.throws(() => timeoutsFromEnv({ ARCHWAY_REGISTRY_TIMEOUT: bad }), (e: unknown) => e instanceof ArchwayError && e.exitCode === 2 && e.message.includes('ARCHWAY_REGISTRY_TIMEOUT') && e.message.includes(bad));
    }
  });
  it('the client takes the timeouts of its settings; its own options win', () => {
    const c = new RegistryClient({ settings: { hosts: {}, timeouts: { responseMs: 1500, idleMs: 9000 } } });
    assert.equal(c.transport.options.responseTimeoutMs, 1500);
    assert.equal(c.transport.options.idleTimeoutMs, 9000);
    assert.equal(c.transport.options.connectTimeoutMs, 30_000);
    const d = new RegistryClient({ settings: { hosts: {}, timeouts: { responseMs: 1500 } }, responseTimeoutMs: 200 });
    assert.equal(d.transport.options.responseTimeoutMs, 200);
    assert.equal(d.transport.options.idleTimeoutMs, 120_000);
  });
});

describe('credentials follow the host contacted', () => {
  it('the origin\'s API host uses the registry\'s credentials; a mirror host its own', () => {
    const c = new RegistryClient();
    assert.equal(c.credentialName('docker.io', 'registry-1.docker.io'), 'docker.io');
    assert.equal(c.credentialName('127.0.0.1:5000', '127.0.0.1:5000'), '127.0.0.1:5000');
    assert.equal(c.credentialName('127.0.0.1:5000', '127.0.0.1:5001'), '127.0.0.1:5001');
    assert.equal(c.credentialName('docker.io', 'mirror.gcr.io'), 'mirror.gcr.io');
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
