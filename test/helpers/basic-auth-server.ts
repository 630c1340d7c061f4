/**
 * A tiny HTTPS server that answers like a registry's `/v2/` behind Basic auth: 401 with
 * `WWW-Authenticate: Basic realm="..."` without the right credentials, 200 `{}` with them, and
 * `Docker-Distribution-Api-Version: registry/2.0` always. Enough for `docker login` (which only calls GET /v2/).
 * Every request is recorded so a test can check what the client really sent.
 */
import { createServer, type Server } from 'node:https';
import type { AddressInfo } from 'node:net';
import { basic } from './wire.js';

export interface SeenRequest {
  method: string;
  url: string;
  authorization: string | undefined;
  userAgent: string | undefined;
}

export interface BasicAuthServer {
  /** "https://127.0.0.1:PORT". */
  url: string;
  port: number;
  /** "127.0.0.1:PORT". */
  hostPort: string;
  requests: SeenRequest[];
  close(): Promise<void>;
}

export async function startBasicAuthServer(o: {
  cert: string;
  key: string;
  user: string;
  password: string;
  realm?: string;
}): Promise<BasicAuthServer> {
  const expected = basic(o.user, o.password);
  const requests: SeenRequest[] = [];
  const server: Server = createServer({ cert: o.cert, key: o.key }, (req, res) => {
    requests.push({
      method: req.method ?? '',
      url: req.url ?? '',
      authorization: req.headers.authorization,
      userAgent: req.headers['user-agent'],
    });
    req.resume();
    res.setHeader('Docker-Distribution-Api-Version', 'registry/2.0');
    res.setHeader('Content-Type', 'application/json; charset=utf-8');
    if (req.headers.authorization === expected) {
      res.writeHead(200).end('{}');
      return;
    }
    res.setHeader('WWW-Authenticate', `Basic realm="${o.realm ?? 'x'}"`);
    res.writeHead(401).end(JSON.stringify({ errors: [{ code: 'UNAUTHORIZED', message: 'authentication required', detail: null }] }));
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const port = (server.address() as AddressInfo).port;
  return {
    url: `https://127.0.0.1:${port}`,
    port,
    hostPort: `127.0.0.1:${port}`,
    requests,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
