/**
 * Test support: a small HTTP proxy in front of a real registry that injects faults into chosen
 * requests. The Host header is passed on unchanged, so the registry's Location headers point back
 * at the proxy. Faults are consumed in order by the first requests that match them.
 *
 *   reset     destroy the client connection without answering
 *   status    answer with `status` (500, 503, 429 ...) and a registry-style error body, once
 *   truncate  pass the upstream response's headers but only the first half of its body, then cut
 *   flip      pass the upstream response with one byte of its body changed
 */
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import { after } from 'node:test';

export type FaultKind = 'reset' | 'status' | 'truncate' | 'flip';

export interface Fault {
  kind: FaultKind;
  /** Which requests: a method and/or a substring (or regexp) of the path. All requests when absent. */
  method?: string;
  path?: string | RegExp;
  /** How many matching requests get the fault (default 1). */
  times?: number;
  /** For 'status'. */
  status?: number;
  /** For 'status' 429/503: the Retry-After header value (seconds or an HTTP date). */
  retryAfter?: string;
}

export interface ProxiedRequest {
  method: string;
  path: string;
  status: number;
  fault?: FaultKind;
  at: number;
  authorization: boolean;
}

export interface FaultProxy {
  /** `127.0.0.1:PORT`. */
  host: string;
  url: string;
  requests: ProxiedRequest[];
  inject(fault: Fault): void;
  clear(): void;
  close(): Promise<void>;
}

const open = new Set<FaultProxy>();
// At the importing test file's top level: runs once after all of its tests.
after(async () => {
  await Promise.all([...open].map((p) => p.close()));
});

export async function startFaultProxy(upstream: { host: string }): Promise<FaultProxy> {
  const [upHost, upPortText] = splitHostPort(upstream.host);
  const faults: Array<Fault & { left: number }> = [];
  const requests: ProxiedRequest[] = [];
  const agent = new http.Agent({ keepAlive: false });

  const take = (req: http.IncomingMessage): Fault | undefined => {
    for (const f of faults) {
      if (f.left <= 0) continue;
      if (f.method && f.method !== req.method) continue;
      const p = req.url ?? '';
      if (f.path !== undefined && (typeof f.path === 'string' ? !p.includes(f.path) : !f.path.test(p))) continue;
      f.left--;
      return f;
    }
    return undefined;
  };

  const server = http.createServer((req, res) => {
    const fault = take(req);
    const record = (status: number): void => {
      requests.push({ method: req.method ?? '', path: req.url ?? '', status, at: Date.now(), authorization: req.headers.authorization !== undefined, ...(fault ? { fault: fault.kind } : {}) });
    };
    if (fault?.kind === 'reset') {
      record(0);
      req.socket.destroy();
      return;
    }
    if (fault?.kind === 'status') {
      const status = fault.status ?? 500;
      record(status);
      req.resume();
      const headers: http.OutgoingHttpHeaders = { 'content-type': 'application/json', connection: 'close' };
      if (fault.retryAfter !== undefined) headers['retry-after'] = fault.retryAfter;
      res.writeHead(status, headers);
      res.end(JSON.stringify({ errors: [{ code: status === 429 ? 'TOOMANYREQUESTS' : 'UNKNOWN', message: `injected ${status}` }] }));
      return;
    }
    const up = http.request(
      { host: upHost, port: Number(upPortText), method: req.method, path: req.url, headers: req.headers, agent },
      (upRes) => {
        const status = upRes.statusCode ?? 502;
        record(status);
        if (fault?.kind === 'truncate' || fault?.kind === 'flip') {
          const chunks: Buffer[] = [];
          upRes.on('data', (c: Buffer) => chunks.push(c));
          upRes.on('end', () => {
            const body = Buffer.concat(chunks);
            res.writeHead(status, upRes.headers);
            if (fault.kind === 'truncate') {
              res.write(body.subarray(0, Math.floor(body.length / 2)));
              setTimeout(() => res.socket?.destroy(), 20);
            } else {
              if (body.length > 0) body[Math.floor(body.length / 2)] = (body[Math.floor(body.length / 2)] ?? 0) ^ 0xff;
              res.end(body);
            }
          });
          return;
        }
        res.writeHead(status, upRes.headers);
        upRes.pipe(res);
      },
    );
    up.on('error', () => {
      record(502);
      if (!res.headersSent) res.writeHead(502);
      res.end();
    });
    req.pipe(up);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  let closed = false;
  const proxy: FaultProxy = {
    host: `127.0.0.1:${port}`,
    url: `http://127.0.0.1:${port}`,
    requests,
    inject(fault) {
      faults.push({ ...fault, left: fault.times ?? 1 });
    },
    clear() {
      faults.length = 0;
      requests.length = 0;
    },
    async close() {
      if (closed) return;
      closed = true;
      open.delete(proxy);
      server.closeAllConnections();
      agent.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
  open.add(proxy);
  return proxy;
}

function splitHostPort(host: string): [string, string] {
  const i = host.lastIndexOf(':');
  return [host.slice(0, i).replace(/^\[|\]$/g, ''), host.slice(i + 1)];
}
