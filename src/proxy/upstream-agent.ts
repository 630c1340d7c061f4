import http from 'node:http';
import https from 'node:https';
import { isIP } from 'node:net';

/** The keep-alive pool to the registry (http-proxy without an agent sends `Connection: close`). */
export function upstreamAgent(upstream: URL, ca: Buffer | null, maxSockets: number): http.Agent {
  const options = {
    keepAlive: true,
    maxSockets,
    // Idle pooled sockets are closed well before typical upstream idle timeouts, so a reused
    // socket is not one the registry is closing at the same moment (nodejs/node#47130).
    timeout: 30_000,
  };
  if (upstream.protocol !== 'https:') return new http.Agent(options);
  // The registry's certificate is checked against upstream.url's host. Without a servername here, Node's
  // agent takes it from each request's Host header, which the proxy forwards as the client sent it (the
  // proxy's own name), and would refuse a registry certificate made for the registry's address.
  const host = upstream.hostname.replace(/^\[|\]$/g, '');
  return new https.Agent({ ...options, servername: isIP(host) === 0 ? host : '', ...(ca ? { ca } : {}) });
}
