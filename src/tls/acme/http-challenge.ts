/**
 * The plain-HTTP listener for http-01 (`tls.acme.httpListen`, usually :80): it answers
 * `/.well-known/acme-challenge/<token>` (RFC 8555 section 8.3) and sends everything else to https with a
 * 308, so a method and body survive the redirect. It never proxies: registry traffic stays on TLS.
 */
import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import type { HttpChallenges } from './challenges.js';

const PREFIX = '/.well-known/acme-challenge/';
/** Tokens are base64url (RFC 8555 section 8.1). */
const TOKEN = /^[A-Za-z0-9_-]+$/;
/** A host name, IPv4 address or bracketed IPv6 address, with an optional port: nothing to inject into Location. */
const HOST = /^(?:[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\])(?::\d{1,5})?$/;

export interface HttpChallengeOptions {
  /** The port clients reach the TLS listener on; omitted from the redirect when 443. */
  httpsPort: number;
}

export function httpChallengeHandler(challenges: HttpChallenges, opts: HttpChallengeOptions): (req: IncomingMessage, res: ServerResponse) => void {
  return (req, res) => {
    const target = req.url ?? '/';
    const path = target.split('?')[0] ?? '/';
    if (path.startsWith(PREFIX) && (req.method === 'GET' || req.method === 'HEAD')) {
      const token = path.slice(PREFIX.length);
      const answer = TOKEN.test(token) ? challenges.get(token) : undefined;
      if (answer === undefined) return reply(res, 404, 'no such challenge\n');
      return reply(res, 200, answer);
    }
    const host = req.headers.host ?? '';
    if (!HOST.test(host) || !target.startsWith('/')) return reply(res, 400, 'bad request\n');
    const hostname = host.replace(/:\d+$/, '');
    const port = opts.httpsPort === 443 ? '' : `:${opts.httpsPort}`;
    res.writeHead(308, { Location: `https://${hostname}${port}${target}`, 'Content-Length': 0, Connection: 'close' });
    res.end();
  };
}

function reply(res: ServerResponse, status: number, body: string): void {
  res.writeHead(status, { 'Content-Type': 'text/plain; charset=utf-8', 'Content-Length': Buffer.byteLength(body), Connection: 'close' });
  res.end(body);
}

/** The listener itself: small limits, it only ever serves tiny answers. Not yet listening. */
export function createHttpChallengeServer(challenges: HttpChallenges, opts: HttpChallengeOptions): http.Server {
  const server = http.createServer(
    { headersTimeout: 10_000, requestTimeout: 10_000, maxHeaderSize: 8192, connectionsCheckingInterval: 1000 },
    httpChallengeHandler(challenges, opts),
  );
  server.keepAliveTimeout = 1000;
  return server;
}
