/**
 * Test support: real CNCF distribution registries (`docker-registry serve CONFIG.yml`, Debian's
 * package `docker-registry`) on free loopback ports, each with its own storage under a temp dir.
 *
 *   anonymous  plain HTTP, no auth
 *   htpasswd   plain HTTP, basic auth with a generated user and password (bcrypt through perl's crypt)
 *   tls        HTTPS with a self-signed certificate (SAN 127.0.0.1, localhost); `caFile` trusts it
 *   token      plain HTTP, bearer token auth; a small token server in this process issues RS256 JWTs
 *              (header x5c = the signing certificate, which is also the registry's rootcertbundle)
 *
 * Every registry started is stopped by `stop()`, by the test file's `after` hook, and at process exit.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createHash, createPrivateKey, randomBytes, sign as cryptoSign, X509Certificate } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import * as http from 'node:http';
import * as https from 'node:https';
import * as net from 'node:net';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { after } from 'node:test';

export type RegistryKind = 'anonymous' | 'htpasswd' | 'tls' | 'token';

export interface StartRegistryOptions {
  kind: RegistryKind;
  /** Bind address (a loopback address); default 127.0.0.1. */
  bindHost?: string;
  /** Name used in `host`: '127.0.0.1' (default) or 'localhost'. */
  hostName?: string;
  /** For 'htpasswd' and 'token': the user (default 'archway'); the password is generated. */
  user?: string;
  /** For 'token': anonymous token requests get pull access (default false: no access). */
  anonymousPull?: boolean;
  /** For 'token': refresh tokens the token server accepts (POST grant_type=refresh_token), mapped to a user. */
  refreshTokens?: Record<string, string>;
}

export interface TokenRequest {
  method: string;
  user: string | undefined;
  scopes: string[];
  service: string | undefined;
  grantType?: string;
}

export interface TestRegistry {
  kind: RegistryKind;
  /** `127.0.0.1:PORT` (or `localhost:PORT`). */
  host: string;
  /** `http://host` or `https://host`. */
  url: string;
  user?: string;
  password?: string;
  /** For 'tls': the PEM certificate that verifies the registry. */
  caFile?: string;
  storageDir: string;
  /** For 'token': the token server's realm URL and what it was asked for. */
  realm?: string;
  tokenRequests?: TokenRequest[];
  dir: string;
  stop(): Promise<void>;
  /** Synchronous kill, for the process 'exit' handler. */
  stopSync(): void;
}

const running = new Set<TestRegistry>();
let hooksInstalled = false;

// Registered when a test file imports this module, at the file's top level, so it runs once after
// all of the file's tests (an `after` called inside a test or hook would run when that one ends).
after(async () => {
  await Promise.all([...running].map((r) => r.stop()));
});

function installHooks(): void {
  if (hooksInstalled) return;
  hooksInstalled = true;
  process.on('exit', () => {
    for (const r of running) r.stopSync();
  });
}

export async function freePort(host = '127.0.0.1'): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, host, () => {
      const addr = srv.address();
      const port = typeof addr === 'object' && addr ? addr.port : 0;
      srv.close(() => resolve(port));
    });
  });
}

const BCRYPT_ALPHABET = './ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789';

/** A bcrypt hash (distribution's htpasswd needs bcrypt) through libcrypt, via perl's crypt(). */
export function bcryptHash(password: string): string {
  const salt = Array.from(randomBytes(22), (b) => BCRYPT_ALPHABET[b % 64]).join('');
  const r = spawnSync('perl', ['-e', 'my $p = <STDIN>; print crypt($p, $ARGV[0])', `$2y$10$${salt}`], { input: password, encoding: 'utf8' });
  const out = r.stdout.trim();
  if (r.status !== 0 || !out.startsWith('$2')) {
    // Some libcrypt builds know $2b$ but not $2y$; distribution accepts both.
    const r2 = spawnSync('perl', ['-e', 'my $p = <STDIN>; print crypt($p, $ARGV[0])', `$2b$10$${salt}`], { input: password, encoding: 'utf8' });
    const out2 = r2.stdout.trim();
    if (!out2.startsWith('$2')) throw new Error(`cannot make a bcrypt hash with perl crypt(): ${r.stderr}${r2.stderr}`);
    return out2;
  }
  return out;
}

/** A self-signed certificate and key for `names` (DNS and IP SANs). */
export function selfSignedCert(dir: string, base: string, cn: string, names: string[]): { cert: string; key: string } {
  const cert = path.join(dir, `${base}.crt`);
  const key = path.join(dir, `${base}.key`);
  const san = names.map((n) => (/^[\d.]+$/.test(n) || n.includes(':') ? `IP:${n}` : `DNS:${n}`)).join(',');
  const r = spawnSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-sha256', '-days', '2', '-subj', `/CN=${cn}`, '-keyout', key, '-out', cert, ...(san ? ['-addext', `subjectAltName=${san}`] : [])], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`openssl req failed: ${r.stderr}`);
  return { cert, key };
}

function b64url(data: Buffer | string): string {
  return Buffer.from(data).toString('base64url');
}

interface TokenServer {
  realm: string;
  service: string;
  issuer: string;
  certFile: string;
  requests: TokenRequest[];
  close(): Promise<void>;
}

async function startTokenServer(dir: string, users: Record<string, string>, opts: StartRegistryOptions): Promise<TokenServer> {
  const service = 'archway-test-registry';
  const issuer = 'archway-test-token-issuer';
  const { cert, key } = selfSignedCert(dir, 'token', issuer, []);
  const privateKey = createPrivateKey(readFileSync(key));
  const certDer = new X509Certificate(readFileSync(cert)).raw;
  const requests: TokenRequest[] = [];

  const issue = (user: string | undefined, scopes: string[]): string => {
    const access: Array<{ type: string; name: string; actions: string[] }> = [];
    for (const scope of scopes) {
      for (const s of scope.split(' ')) {
        const parts = s.split(':');
        if (parts.length < 3) continue;
        const type = parts[0] as string;
        const actions = (parts[parts.length - 1] as string).split(',').filter(Boolean);
        const name = parts.slice(1, -1).join(':');
        const granted = user !== undefined ? actions : opts.anonymousPull ? actions.filter((a) => a === 'pull') : [];
        if (granted.length > 0) access.push({ type, name, actions: granted });
      }
    }
    const now = Math.floor(Date.now() / 1000);
    const header = { typ: 'JWT', alg: 'RS256', x5c: [certDer.toString('base64')] };
    const claims = { iss: issuer, sub: user ?? '', aud: service, exp: now + 300, nbf: now - 10, iat: now, jti: randomBytes(8).toString('hex'), access };
    const signingInput = `${b64url(JSON.stringify(header))}.${b64url(JSON.stringify(claims))}`;
    const sig = cryptoSign('sha256', Buffer.from(signingInput), privateKey);
    return `${signingInput}.${b64url(sig)}`;
  };

  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const url = new URL(req.url ?? '/', 'http://x');
      let user: string | undefined;
      let scopes = url.searchParams.getAll('scope');
      let svc = url.searchParams.get('service') ?? undefined;
      let grantType: string | undefined;
      const deny = (): void => {
        res.writeHead(401, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ errors: [{ code: 'UNAUTHORIZED', message: 'bad credentials' }] }));
      };
      if (req.method === 'POST') {
        const form = new URLSearchParams(Buffer.concat(chunks).toString('utf8'));
        grantType = form.get('grant_type') ?? undefined;
        scopes = form.getAll('scope').flatMap((s) => s.split(' '));
        svc = form.get('service') ?? undefined;
        if (grantType === 'refresh_token') {
          const u = opts.refreshTokens?.[form.get('refresh_token') ?? ''];
          requests.push({ method: 'POST', user: u, scopes, service: svc, grantType });
          if (u === undefined) return deny();
          user = u;
        } else if (grantType === 'password') {
          const u = form.get('username') ?? '';
          requests.push({ method: 'POST', user: u, scopes, service: svc, grantType });
          if (users[u] === undefined || users[u] !== form.get('password')) return deny();
          user = u;
        } else {
          res.writeHead(400);
          res.end('unsupported grant_type');
          return;
        }
      } else {
        const auth = req.headers.authorization;
        if (auth?.startsWith('Basic ')) {
          const decoded = Buffer.from(auth.slice(6), 'base64').toString('utf8');
          const i = decoded.indexOf(':');
          const u = decoded.slice(0, i);
          requests.push({ method: 'GET', user: u, scopes, service: svc });
          if (users[u] === undefined || users[u] !== decoded.slice(i + 1)) return deny();
          user = u;
        } else {
          requests.push({ method: 'GET', user: undefined, scopes, service: svc });
        }
      }
      const token = issue(user, scopes);
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ token, access_token: token, expires_in: 300, issued_at: new Date().toISOString() }));
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const addr = server.address() as net.AddressInfo;
  return {
    realm: `http://127.0.0.1:${addr.port}/token`,
    service,
    issuer,
    certFile: cert,
    requests,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

function yamlString(s: string): string {
  return JSON.stringify(s);
}

async function waitUntilUp(url: string, child: ChildProcess, logs: () => string): Promise<void> {
  const deadline = Date.now() + 20_000;
  while (Date.now() < deadline) {
    if (child.exitCode !== null) throw new Error(`docker-registry exited with ${child.exitCode}: ${logs()}`);
    const status = await new Promise<number>((resolve) => {
      const mod = url.startsWith('https:') ? https : http;
      const req = mod.get(`${url}/v2/`, { rejectUnauthorized: false, agent: false }, (res) => {
        res.resume();
        resolve(res.statusCode ?? 0);
      });
      req.on('error', () => resolve(0));
      req.setTimeout(1000, () => req.destroy());
    });
    if (status === 200 || status === 401) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`docker-registry did not answer at ${url}/v2/ in time: ${logs()}`);
}

export async function startRegistry(opts: StartRegistryOptions): Promise<TestRegistry> {
  installHooks();
  const dir = mkdtempSync(path.join(tmpdir(), `archway-registry-${opts.kind}-`));
  const storageDir = path.join(dir, 'storage');
  const bindHost = opts.bindHost ?? '127.0.0.1';
  const hostName = opts.hostName ?? bindHost;
  const user = opts.user ?? 'archway';
  const password = `pw-${randomBytes(12).toString('hex')}`;
  let tokenServer: TokenServer | undefined;
  let caFile: string | undefined;

  const lines = [
    'version: 0.1',
    'log:',
    '  level: warn',
    '  accesslog:',
    '    disabled: true',
    'storage:',
    '  filesystem:',
    `    rootdirectory: ${yamlString(storageDir)}`,
    '  delete:',
    '    enabled: true',
    '  maintenance:',
    '    uploadpurging:',
    '      enabled: false',
    'http:',
    `  addr: ${yamlString(`${bindHost}:PORT`)}`,
    `  secret: ${yamlString(randomBytes(16).toString('hex'))}`,
  ];
  if (opts.kind === 'tls') {
    const { cert, key } = selfSignedCert(dir, 'registry', bindHost, [...new Set(['127.0.0.1', 'localhost', bindHost, hostName])]);
    caFile = cert;
    lines.push('  tls:', `    certificate: ${yamlString(cert)}`, `    key: ${yamlString(key)}`);
  }
  if (opts.kind === 'htpasswd') {
    const file = path.join(dir, 'htpasswd');
    writeFileSync(file, `${user}:${bcryptHash(password)}\n`);
    lines.push('auth:', '  htpasswd:', '    realm: archway-test', `    path: ${yamlString(file)}`);
  }
  if (opts.kind === 'token') {
    tokenServer = await startTokenServer(dir, { [user]: password }, opts);
    lines.push('auth:', '  token:', `    realm: ${yamlString(tokenServer.realm)}`, `    service: ${yamlString(tokenServer.service)}`, `    issuer: ${yamlString(tokenServer.issuer)}`, `    rootcertbundle: ${yamlString(tokenServer.certFile)}`);
  }

  let lastError: unknown;
  for (let attempt = 0; attempt < 5; attempt++) {
    const port = await freePort(bindHost);
    const configFile = path.join(dir, 'config.yml');
    writeFileSync(configFile, `${lines.join('\n').replace(':PORT"', `:${port}"`)}\n`);
    const env: NodeJS.ProcessEnv = { PATH: process.env['PATH'] ?? '/usr/bin:/bin', HOME: dir };
    const child = spawn('docker-registry', ['serve', configFile], { stdio: ['ignore', 'pipe', 'pipe'], env });
    let output = '';
    child.stdout?.on('data', (d: Buffer) => (output = (output + d.toString()).slice(-8000)));
    child.stderr?.on('data', (d: Buffer) => (output = (output + d.toString()).slice(-8000)));
    const host = `${hostName}:${port}`;
    const url = `${opts.kind === 'tls' ? 'https' : 'http'}://${host}`;
    try {
      await waitUntilUp(url, child, () => output);
    } catch (e) {
      lastError = e;
      child.kill('SIGKILL');
      continue;
    }
    let stopped = false;
    const reg: TestRegistry = {
      kind: opts.kind,
      host,
      url,
      storageDir,
      dir,
      ...(opts.kind === 'htpasswd' || opts.kind === 'token' ? { user, password } : {}),
      ...(caFile ? { caFile } : {}),
      ...(tokenServer ? { realm: tokenServer.realm, tokenRequests: tokenServer.requests } : {}),
      stopSync() {
        if (stopped) return;
        stopped = true;
        running.delete(reg);
        if (child.exitCode === null) child.kill('SIGKILL');
        try {
          rmSync(dir, { recursive: true, force: true });
        } catch {
          // best effort at exit
        }
      },
      async stop() {
        if (stopped) return;
        stopped = true;
        running.delete(reg);
        if (child.exitCode === null) {
          const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
          child.kill('SIGTERM');
          const t = setTimeout(() => child.kill('SIGKILL'), 3000);
          await exited;
          clearTimeout(t);
        }
        await tokenServer?.close();
        rmSync(dir, { recursive: true, force: true });
      },
    };
    running.add(reg);
    return reg;
  }
  await tokenServer?.close();
  rmSync(dir, { recursive: true, force: true });
  throw lastError instanceof Error ? lastError : new Error(String(lastError));
}

/** The path of a blob's data file in the registry's filesystem storage. */
export function blobDataPath(reg: TestRegistry, digest: string): string {
  const [algo, hex] = digest.split(':') as [string, string];
  return path.join(reg.storageDir, 'docker/registry/v2/blobs', algo, hex.slice(0, 2), hex, 'data');
}

/** The link file that makes a blob part of a repository (present after a push or a mount). */
export function repositoryLayerLinkPath(reg: TestRegistry, repository: string, digest: string): string {
  const [algo, hex] = digest.split(':') as [string, string];
  return path.join(reg.storageDir, 'docker/registry/v2/repositories', repository, '_layers', algo, hex, 'link');
}

export function sha256Hex(data: Buffer | string): string {
  return createHash('sha256').update(data).digest('hex');
}
