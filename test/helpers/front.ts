/**
 * The proxy assembled in-process exactly as `serve` assembles one instance (config -> services -> pipeline ->
 * server), listening on a free port, for tests that talk raw bytes to it. Each call is independent: its own
 * config, log lines and metrics, so tests do not depend on each other's traffic.
 */
import { writeFileSync } from 'node:fs';
import type http from 'node:http';
import type https from 'node:https';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import bcrypt from 'bcryptjs';
import { parseConfig } from '../../src/config/load.ts';
import { createRequestHandler, type Services } from '../../src/http/pipeline.ts';
import { createServer } from '../../src/http/server.ts';
import { createLogger } from '../../src/ops/log.ts';
import { Metrics } from '../../src/ops/metrics.ts';
import { buildServices } from '../../src/runtime/services.ts';
import { loadTlsMaterial } from '../../src/tls/material.ts';
import { makeTempDir } from './proc.js';
import { makeTestCerts, type TestCerts } from './tls.js';

export interface Front {
  port: number;
  /** "https://127.0.0.1:PORT" (or http:// with `tls: false`). */
  url: string;
  /** PEM of the CA that signed the server certificate (null with `tls: false`). */
  ca: string | null;
  certs: TestCerts | null;
  services: Services;
  metrics: Metrics;
  server: http.Server | https.Server;
  /** Log lines written so far, parsed. */
  logs: Array<Record<string, unknown>>;
  close(): Promise<void>;
}

export interface FrontOptions {
  /** user -> password; written as bcrypt cost 4 in the `$2y$` form `htpasswd -B` writes. */
  users?: Record<string, string>;
  /** YAML lines appended to the generated config (e.g. `limits: { maxBodySize: 1M }`). */
  extraConfig?: string;
  /** `upstream:` mapping body, e.g. `{ url: "http://127.0.0.1:1234", maxSockets: 1 }`. */
  upstream: string;
  /** Serve TLS with a test certificate (default true). */
  tls?: boolean;
  /** `auth:` mapping body; the htpasswd file is `htpasswd` (default: no throttle to speak of). */
  auth?: string;
}

export async function startFront(opts: FrontOptions): Promise<Front> {
  const dir = makeTempDir('portcullis-front-');
  const users = opts.users ?? { alice: 'secret' };
  const lines = Object.entries(users).map(([u, p]) => `${u}:${bcrypt.hashSync(p, 4).replace(/^\$2b\$/, '$2y$')}`);
  writeFileSync(join(dir, 'htpasswd'), lines.join('\n') + '\n');
  const certs = opts.tls === false ? null : await makeTestCerts();
  const config = parseConfig(
    [
      'listen: "127.0.0.1:0"',
      certs ? `tls: { cert: "${certs.certFile}", key: "${certs.keyFile}" }` : 'tls: false',
      `upstream: ${opts.upstream}`,
      `auth: ${opts.auth ?? '{ htpasswd: htpasswd, maxFailures: 1000, maxFailuresPerAddress: 0 }'}`,
      opts.extraConfig ?? '',
    ].join('\n'),
    join(dir, 'proxy.yaml'),
  );
  const logs: Array<Record<string, unknown>> = [];
  const sink = new Writable({
    write(chunk: Buffer, _e, cb) {
      for (const line of chunk.toString().split('\n').filter(Boolean)) logs.push(JSON.parse(line) as Record<string, unknown>);
      cb();
    },
  });
  const logger = createLogger('trace', sink);
  const metrics = new Metrics();
  let services = await buildServices(config, null, logger, metrics);
  const handler = createRequestHandler({ services: () => services, metrics, logger, draining: () => false });
  const material = config.tls ? loadTlsMaterial(config.tls.cert, config.tls.key) : null;
  const server = createServer(config, material, handler, metrics);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  return {
    port,
    url: `${certs ? 'https' : 'http'}://127.0.0.1:${port}`,
    ca: certs?.ca ?? null,
    certs,
    get services() {
      return services;
    },
    set services(s: Services) {
      services = s;
    },
    metrics,
    server,
    logs,
    close: async () => {
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
      await services.authenticator.close();
      services.forwarder.close();
      await services.audit.close();
      certs?.cleanup();
    },
  };
}
