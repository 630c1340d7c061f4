/**
 * ACME wired to the proxy's processes. Three shapes, one per role:
 *
 * - attachAcme (workers: 1): this process orders, answers challenges and swaps certificates itself.
 * - startAcmeInPrimary (workers: N, in the primary): orders and writes storage; publishes tls-alpn-01
 *   certificates to the workers (relay.ts) or runs the http-01 listener itself. It serves no TLS: the
 *   workers follow storage's cert.pem/key.pem with the file watcher they use for any cert/key pair.
 * - attachAcmeInWorker (workers: N, in each worker): answers the tls-alpn-01 challenges the primary sends.
 *
 * The TLS server routes tls-alpn-01 validations to a TlsAlpnChallenges store (http/server.ts); these
 * functions fill that store. Before the first certificate exists the server starts with
 * placeholderMaterial(), so the port can listen and answer tls-alpn-01, which validates on that very port.
 */
import type http from 'node:http';
import type https from 'node:https';
import type { TLSSocket } from 'node:tls';
import type { AcmeConfig } from '../../config/schema.js';
import { AcmeError } from '../../errors.js';
import type { AcmeMetrics } from '../../ops/metrics.js';
import type { TlsMaterial } from '../material.js';
import { HttpChallenges, type TlsAlpnChallenges } from './challenges.js';
import type { ClientHello } from './client-hello.js';
import type { AcmeLogger, ChallengeSolver } from './client.js';
import { createHttpChallengeServer } from './http-challenge.js';
import { AcmeManager, type AcmeManagerOptions, type CertificateSource } from './manager.js';
import { followAlpnRelay, WorkerAlpnRelay, type PrimaryChannel, type WorkerLike } from './relay.js';
import { createPlaceholderCertificate } from './self-signed.js';
import { httpSolver, tlsAlpnSolver } from './solvers.js';
import type { StoredCertificate } from './store.js';

/** Manager settings that are not config (tests shorten them). */
export type AcmeTuning = Pick<AcmeManagerOptions, 'retry' | 'pollMinMs' | 'http' | 'lock'>;

export interface AcmeDeps {
  logger: AcmeLogger;
  metrics?: AcmeMetrics;
  tuning?: AcmeTuning;
}

export interface AttachedAcme {
  manager: AcmeManager;
  /** Start ordering and renewing. The TLS server must be listening (tls-alpn-01 validates on it). */
  start(): Promise<void>;
  close(): Promise<void>;
}

/** What the TLS server serves before the first certificate: self-signed for the domains, valid a day. */
export async function placeholderMaterial(domains: readonly string[]): Promise<TlsMaterial> {
  const pem = await createPlaceholderCertificate(domains);
  return {
    cert: Buffer.from(pem.cert),
    key: Buffer.from(pem.key),
    clientCA: null,
    subject: `placeholder for ${domains.join(', ')}`,
    validTo: new Date(Date.now() + 86_400_000),
  };
}

/**
 * workers: 1. `alpn` is the store the server routes tls-alpn-01 validations to (null with http-01).
 * `onCertificate` runs after the swap (log it, follow it in the expiry metric).
 */
export async function attachAcme(
  server: https.Server,
  acme: AcmeConfig,
  alpn: TlsAlpnChallenges | null,
  context: { minVersion: 'TLSv1.2' | 'TLSv1.3'; clientCA: Buffer | null },
  deps: AcmeDeps & { onCertificate?: (c: StoredCertificate, source: CertificateSource) => void },
): Promise<AttachedAcme> {
  return attachManager(acme, alpn, deps, (c, source) => {
    // setSecureContext replaces every context option: minVersion and the client CAs again (as
    // runtime/instance.ts reloads do).
    server.setSecureContext({ cert: c.cert, key: c.key, minVersion: context.minVersion, ...(context.clientCA ? { ca: context.clientCA } : {}) });
    deps.onCertificate?.(c, source);
  });
}

/** workers: N, primary. `workers()` lists the cluster workers (Object.values(cluster.workers ?? {})). */
export async function startAcmeInPrimary(acme: AcmeConfig, workers: () => WorkerLike[], deps: AcmeDeps): Promise<AttachedAcme & { relay: WorkerAlpnRelay }> {
  const relay = new WorkerAlpnRelay(workers);
  // Workers follow cert.pem/key.pem in storage; nothing to swap here.
  return { ...(await attachManager(acme, relay, deps, () => {})), relay };
}

/** The http-01 listener and the manager, for either way of running ACME. */
async function attachManager(
  acme: AcmeConfig,
  alpn: Parameters<typeof tlsAlpnSolver>[0] | null,
  deps: AcmeDeps,
  onCertificate: AcmeManagerOptions['onCertificate'],
): Promise<AttachedAcme> {
  const http01 = await startHttpListener(acme, deps.logger);
  const manager = new AcmeManager({
    config: acme,
    solver: solverFor(acme, http01.challenges, alpn),
    logger: deps.logger,
    ...(deps.metrics ? { metrics: deps.metrics } : {}),
    ...deps.tuning,
    onCertificate,
  });
  return {
    manager,
    start: () => manager.start(),
    close: async () => {
      await manager.stop();
      await http01.close();
    },
  };
}

/** workers: N, each worker: put the tls-alpn-01 challenges the primary publishes into `alpn`. */
export function attachAcmeInWorker(alpn: TlsAlpnChallenges, channel: PrimaryChannel): () => void {
  return followAlpnRelay(alpn, channel);
}

/** For the server's tls-alpn-01 route: one log line per validation connection answered. */
export function validationLog(logger: AcmeLogger): (hello: ClientHello, socket: TLSSocket) => void {
  return (hello, socket) => logger.info({ domain: hello.serverName, tls: socket.getProtocol(), from: socket.remoteAddress }, 'acme: answered a tls-alpn-01 validation');
}

function solverFor(acme: AcmeConfig, http01: HttpChallenges, alpn: Parameters<typeof tlsAlpnSolver>[0] | null): ChallengeSolver {
  if (acme.challenge === 'http-01') return httpSolver(http01);
  if (!alpn) throw new AcmeError('tls-alpn-01 needs the TLS server to route validations (no challenge store given)');
  return tlsAlpnSolver(alpn);
}

/** `httpListen`, when set: http-01 answers, and a redirect to https for everything else. */
async function startHttpListener(acme: AcmeConfig, logger: AcmeLogger): Promise<{ challenges: HttpChallenges; close(): Promise<void> }> {
  const challenges = new HttpChallenges();
  const listen = acme.httpListen;
  if (!listen) return { challenges, close: async () => {} };
  const server = createHttpChallengeServer(challenges, { httpsPort: acme.httpsPort });
  await new Promise<void>((resolve, reject) => {
    server.once('error', (err) => reject(new AcmeError(`tls.acme.httpListen ${listen.host}:${listen.port}: ${err.message}`, { cause: err })));
    server.listen(listen.port, listen.host, () => resolve());
  });
  const port = (server.address() as { port: number }).port;
  logger.info({ url: `http://${listen.host.includes(':') ? `[${listen.host}]` : listen.host}:${port}`, challenge: acme.challenge, redirectTo: acme.httpsPort }, 'acme: http listener (challenges, redirect to https)');
  return { challenges, close: () => closeServer(server) };
}

function closeServer(server: http.Server): Promise<void> {
  server.closeAllConnections();
  return new Promise((resolve) => server.close(() => resolve()));
}
