/**
 * The listening server: TLS 1.2+ and HTTP/1.1 only, with the timeouts that make slow clients cheap.
 */
import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import https from 'node:https';
import type { Socket } from 'node:net';
import type { Config } from '../config/schema.js';
import type { Metrics } from '../ops/metrics.js';
import { secureContextOptions, type TlsMaterial } from '../tls/material.js';

/** The listening server: TLS 1.2+ and HTTP/1.1 only (Go push clients disable HTTP/2 for uploads anyway). */
export function createServer(
  config: Config,
  tlsMaterial: TlsMaterial | null,
  handler: (req: IncomingMessage, res: ServerResponse) => void,
  metrics: Metrics,
): http.Server | https.Server {
  const common: http.ServerOptions = {
    // Node's 300 s default answers 408 in the middle of a multi-gigabyte upload.
    requestTimeout: 0,
    // Slow headers are still cut (slowloris). Node enforces this only when it sweeps its connections,
    // every 30 s by default: sweep every second so the limit means what it says.
    headersTimeout: config.limits.headersTimeoutMs,
    connectionsCheckingInterval: 1000,
    keepAliveTimeout: config.limits.keepAliveTimeoutMs,
    maxHeaderSize: config.limits.maxHeaderSize,
  };
  const server = tlsMaterial
    ? https.createServer({
        ...common,
        ...secureContextOptions(tlsMaterial),
        minVersion: config.tls?.minVersion ?? 'TLSv1.2',
        ALPNProtocols: ['http/1.1'],
      })
    : http.createServer(common);
  server.timeout = 0;
  server.on('request', handler);
  server.on('checkContinue', handler);
  server.on('tlsClientError', () => metrics.tlsErrors.inc());
  server.on('clientError', (err: NodeJS.ErrnoException, socket: Socket) => {
    // Malformed HTTP never reaches the handler; answer what Node would, without crashing.
    if (!socket.writable || (err.code === 'ECONNRESET')) return socket.destroy();
    const status = err.code === 'HPE_HEADER_OVERFLOW' ? 431 : err.code === 'ERR_HTTP_REQUEST_TIMEOUT' ? 408 : 400;
    socket.end(`HTTP/1.1 ${status} ${http.STATUS_CODES[status]}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n`);
  });
  return server;
}
