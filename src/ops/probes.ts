/**
 * The probe listener: GET /metrics, GET /healthz (process up), GET /readyz (upstream reachable).
 * Plain HTTP, meant for an internal address only.
 */
import http from 'node:http';
import https from 'node:https';
import { UpstreamTimeoutError } from '../errors.js';
import type { Logger } from './log.js';
import { listen } from '../runtime/listen.js';

export interface ProbeServerOptions {
  host: string;
  port: number;
  /** Text exposition of the metrics (own registry, or the cluster aggregate). */
  metrics: () => Promise<{ contentType: string; body: string }>;
  /** Is the upstream registry reachable? */
  ready: () => Promise<boolean>;
  logger: Logger;
}

/** GET /metrics, GET /healthz (process up), GET /readyz (upstream reachable). */
export async function startProbeServer(opts: ProbeServerOptions): Promise<http.Server> {
  const server = http.createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    const reply = (status: number, body: string, type = 'text/plain; charset=utf-8'): void => {
      res.writeHead(status, { 'Content-Type': type, 'Content-Length': Buffer.byteLength(body) });
      res.end(body);
    };
    if (req.method !== 'GET' && req.method !== 'HEAD') return reply(405, 'method not allowed\n');
    if (path === '/healthz') return reply(200, 'ok\n');
    if (path === '/readyz') {
      opts.ready().then(
        (ok) => reply(ok ? 200 : 503, ok ? 'ready\n' : 'upstream registry unreachable\n'),
        () => reply(503, 'upstream registry unreachable\n'),
      );
      return;
    }
    if (path === '/metrics') {
      opts.metrics().then(
        (m) => reply(200, m.body, m.contentType),
        (err: Error) => {
          opts.logger.error({ err: err.message }, 'metrics collection failed');
          reply(500, 'metrics collection failed\n');
        },
      );
      return;
    }
    reply(404, 'not found\n');
  });
  await listen(server, opts.host, opts.port, 'metrics.listen');
  return server;
}

/** Reachable = the registry answers /v2/ at all (200 or 401), within a short time. */
export function upstreamProbe(url: URL, agent: http.Agent, timeoutMs = 2000): () => Promise<boolean> {
  const request = url.protocol === 'https:' ? https.request : http.request;
  return () =>
    new Promise<boolean>((resolve) => {
      const req = request(new URL('/v2/', url), { method: 'GET', agent, timeout: timeoutMs }, (res) => {
        res.resume();
        resolve(res.statusCode !== undefined && res.statusCode < 500);
      });
      req.on('timeout', () => req.destroy(new UpstreamTimeoutError(`no answer from ${url.origin} within ${timeoutMs} ms`)));
      req.on('error', () => resolve(false));
      req.end();
    });
}
