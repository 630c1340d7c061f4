import http from 'node:http';
import https from 'node:https';

/** The keep-alive pool to the registry (http-proxy without an agent sends `Connection: close`). */
export function upstreamAgent(upstream: URL, ca: Buffer | null, maxSockets: number): http.Agent {
  const options = {
    keepAlive: true,
    maxSockets,
    // Idle pooled sockets are closed well before typical upstream idle timeouts, so a reused
    // socket is not one the registry is closing at the same moment (nodejs/node#47130).
    timeout: 30_000,
  };
  return upstream.protocol === 'https:' ? new https.Agent({ ...options, ...(ca ? { ca } : {}) }) : new http.Agent(options);
}
