/**
 * One serving process: builds the services from the config, listens, and keeps them current.
 *
 * - htpasswd: followed by the Authenticator itself.
 * - certificate and key: followed here; new handshakes get the new pair, open connections keep theirs.
 * - tls.acme: this process orders and swaps certificates itself (alone), or follows the storage files the
 *   primary writes and answers the tls-alpn-01 challenges it relays (a cluster worker).
 * - proxy.yaml: re-read on SIGHUP; the services are swapped as a whole, so a request never sees half of
 *   two configs. Unchanged parts are kept (the credential cache and the upstream pool survive a reload).
 * - SIGTERM/SIGINT: drain (drain.ts), then resolve with exit code 0.
 *
 * Used alone (`workers: 1`) or as a cluster worker (primary.ts).
 */
import cluster from 'node:cluster';
import { existsSync } from 'node:fs';
import type http from 'node:http';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import { effectiveConfig } from '../config/effective.js';
import { loadConfig, type Config } from '../config/load.js';
import { Drain } from './drain.js';
import type { Logger } from '../ops/log.js';
import { createAcmeMetrics, Metrics, registerCertificateExpiry } from '../ops/metrics.js';
import { startProbeServer, upstreamProbe } from '../ops/probes.js';
import { createRequestHandler } from '../http/pipeline.js';
import { createServer } from '../http/server.js';
import { displayHost, listen } from './listen.js';
import { buildServices, retire } from './services.js';
import { attachAcme, attachAcmeInWorker, placeholderMaterial, validationLog, type AttachedAcme } from '../tls/acme/attach.js';
import { TlsAlpnChallenges } from '../tls/acme/challenges.js';
import { loadCABundle, loadTlsMaterial, secureContextOptions, type TlsMaterial } from '../tls/material.js';
import { FileWatcher } from './watch.js';

/** How long a certificate reload that failed waits for the files to settle before it is refused. */
const TLS_SETTLE_MS = 1500;

export async function runInstance(initial: Config, logger: Logger): Promise<number> {
  const worker = cluster.isWorker;
  const metrics = new Metrics();
  const acme = initial.tls?.acme ?? null;
  // With tls.acme, cert and key are the storage files: absent on a first start, when a placeholder serves
  // until the first certificate (the port must listen for tls-alpn-01 to validate on it).
  let tls: TlsMaterial | null = !initial.tls
    ? null
    : acme
      ? await storedOrPlaceholder(initial.tls, acme.domains, logger)
      : loadTlsMaterial(initial.tls.cert, initial.tls.key, initial.tls.clientCA);
  if (tls) registerCertificateExpiry(metrics.registry, () => tls?.validTo ?? null);
  if (!tls) {
    logger.warn(
      'TLS IS DISABLED (tls: false): passwords and images cross the network in clear text, and docker ' +
        'refuses plain-HTTP registries unless listed in insecure-registries. Use this only behind another TLS terminator.',
    );
  }
  let services = await buildServices(initial, null, logger, metrics);
  const drain = new Drain();
  const pipeline = createRequestHandler({ services: () => services, metrics, logger, draining: () => drain.draining });
  const alpn = acme?.challenge === 'tls-alpn-01' ? new TlsAlpnChallenges() : null;
  const server = createServer(initial, tls, drain.track(pipeline), metrics, alpn ? { tlsAlpn: { challenges: alpn, onValidation: validationLog(logger) } } : {});
  drain.watch(server);
  // tls.acme alone: the CA file and storage are checked before the port opens, so a broken setting stops
  // the start; ordering begins once the port listens (tls-alpn-01 validates on it).
  let acmeHandle: AttachedAcme | null = null;
  let detachAcme: (() => void) | null = null;
  if (acme && server instanceof https.Server) {
    if (worker) {
      if (alpn) detachAcme = attachAcmeInWorker(alpn, process);
    } else {
      acmeHandle = await attachAcme(server, acme, alpn, { minVersion: initial.tls?.minVersion ?? 'TLSv1.2', clientCA: tls?.clientCA ?? null }, {
        logger,
        metrics: createAcmeMetrics(metrics.registry),
        onCertificate: (c, source) => {
          tls = { cert: Buffer.from(c.cert), key: Buffer.from(c.key), clientCA: tls?.clientCA ?? null, subject: `serial ${c.serial}`, validTo: c.notAfter };
          if (source === 'order') metrics.reloads.inc({ kind: 'tls', result: 'ok' });
          logger.info({ serial: c.serial, validTo: c.notAfter, source }, 'certificate installed');
        },
      });
      await acmeHandle.manager.prepare();
    }
  }
  await listen(server, initial.listen.host, initial.listen.port);
  const port = (server.address() as AddressInfo).port;
  logger.info(
    {
      url: `${initial.tls ? 'https' : 'http'}://${displayHost(initial.listen.host)}:${port}`,
      upstream: initial.upstream.url.origin,
      ...(tls ? { certificate: tls.subject, validTo: tls.validTo } : {}),
    },
    worker ? 'worker listening' : 'listening',
  );
  await acmeHandle?.start();

  let probe: http.Server | null = null;
  if (initial.metrics && !worker) {
    probe = await startProbeServer({
      ...initial.metrics,
      metrics: async () => ({ contentType: metrics.registry.contentType, body: await metrics.registry.metrics() }),
      ready: () => upstreamProbe(services.config.upstream.url, services.forwarder.agent)(),
      logger,
    });
    const a = probe.address() as AddressInfo;
    logger.info({ url: `http://${displayHost(initial.metrics.host)}:${a.port}` }, 'metrics listening');
  }

  // A renewal replaces two files, the key and then the certificate (or copies one in place): a reload that
  // lands between the two sees a pair that does not match, or a truncated file. Such a failure is looked at
  // again once the files have had time to settle, and refused (logged as an error, counted) only if it holds.
  let settle: NodeJS.Timeout | null = null;
  const reloadTls = (final = false): void => {
    if (settle) clearTimeout(settle);
    settle = null;
    const cfg = services.config.tls;
    if (!cfg) return;
    try {
      tls = loadTlsMaterial(cfg.cert, cfg.key, cfg.clientCA);
      // setSecureContext replaces every context option, not only cert and key: without minVersion again a
      // `minVersion: TLSv1.3` server would accept TLS 1.2 after its first certificate reload. The version
      // stays the one the server started with (a minVersion change needs a restart).
      if (server instanceof https.Server) server.setSecureContext({ ...secureContextOptions(tls), minVersion: initial.tls?.minVersion ?? 'TLSv1.2' });
      metrics.reloads.inc({ kind: 'tls', result: 'ok' });
      logger.info({ certificate: tls.subject, validTo: tls.validTo }, 'certificate reloaded');
    } catch (err) {
      if (!final) {
        logger.info({ err: (err as Error).message, retryInMs: TLS_SETTLE_MS }, 'certificate files do not load yet; looking again once they settle');
        settle = setTimeout(() => reloadTls(true), TLS_SETTLE_MS);
        settle.unref();
        return;
      }
      metrics.reloads.inc({ kind: 'tls', result: 'error' });
      logger.error({ err: (err as Error).message }, 'certificate reload refused; the previous certificate keeps serving');
    }
  };
  // Alone with tls.acme, this process installs its certificates itself (it still follows a client CA file);
  // workers, and everyone without ACME, follow the files.
  const watchTls = (t: NonNullable<Config['tls']>): FileWatcher | null => {
    const files = [...(t.acme && !worker ? [] : [t.cert, t.key]), ...(t.clientCA ? [t.clientCA] : [])];
    return files.length > 0 ? new FileWatcher(files, () => reloadTls(), { debounceMs: 500 }) : null;
  };
  let certWatcher = initial.tls ? watchTls(initial.tls) : null;

  /** SIGHUP: re-read proxy.yaml and swap the services. Nothing changes unless every step succeeds. */
  const reloadConfig = async (): Promise<void> => {
    const current = services.config;
    let next = loadConfig(current.file);
    const fixed = restartOnlyChanges(current, next);
    if (fixed.length > 0) logger.warn({ keys: fixed }, 'these settings change only on restart');
    // What is bound to sockets and processes stays as started.
    // tls.acme is bound to the ACME manager and its listeners: switching to or from it needs a restart.
    const keepTls = current.tls?.acme !== undefined || next.tls?.acme !== undefined;
    next = { ...next, listen: current.listen, workers: current.workers, metrics: current.metrics, tls: keepTls ? current.tls : reloadableTls(current.tls, next.tls) };
    const old = services;
    services = await buildServices(next, old, logger, metrics);
    retire(old, services, next.shutdown.gracePeriodMs);
    logger.level = next.log.level;
    if (current.tls && next.tls && (current.tls.cert !== next.tls.cert || current.tls.key !== next.tls.key || current.tls.clientCA !== next.tls.clientCA)) {
      certWatcher?.close();
      certWatcher = watchTls(next.tls);
      reloadTls();
    }
    metrics.reloads.inc({ kind: 'config', result: 'ok' });
    logger.info({ config: effectiveConfig(services.config) }, 'config reloaded');
  };
  // One reload at a time, in signal order; a failed one is logged and counted, never thrown.
  let reloads = Promise.resolve();
  const onSighup = (): void => {
    reloads = reloads.then(reloadConfig).catch((err: unknown) => {
      metrics.reloads.inc({ kind: 'config', result: 'error' });
      logger.error({ err: err instanceof Error ? err.message : String(err) }, 'config reload refused; the previous config keeps serving');
    });
  };

  return new Promise<number>((resolve) => {
    process.on('SIGHUP', onSighup);
    const shutdown = (signal: string): void => {
      if (drain.draining) return;
      const graceMs = services.config.shutdown.gracePeriodMs;
      const { inFlight, closed } = drain.start(server, graceMs, () => logger.warn('grace period over: closing remaining connections'));
      logger.info({ signal, inFlight, graceMs }, 'shutting down: draining in-flight requests');
      void closed.then(async () => {
        certWatcher?.close();
        if (settle) clearTimeout(settle);
        detachAcme?.();
        await acmeHandle?.close();
        probe?.close();
        await services.authenticator.close();
        services.forwarder.close();
        await services.audit.close();
        logger.info('stopped');
        resolve(0);
      });
    };
    process.on('SIGTERM', () => shutdown('SIGTERM'));
    process.on('SIGINT', () => shutdown('SIGINT'));
  });
}


/** Settings bound to sockets or processes: a reload cannot change them. */
function restartOnlyChanges(a: Config, b: Config): string[] {
  const changed: string[] = [];
  if (a.listen.host !== b.listen.host || a.listen.port !== b.listen.port) changed.push('listen');
  if (a.workers !== b.workers) changed.push('workers');
  if (JSON.stringify(a.metrics) !== JSON.stringify(b.metrics)) changed.push('metrics.listen');
  if ((a.tls === null) !== (b.tls === null) || a.tls?.minVersion !== b.tls?.minVersion) changed.push('tls');
  if ((a.tls?.clientCA == null) !== (b.tls?.clientCA == null) || a.tls?.clientAuth !== b.tls?.clientAuth) changed.push('tls.clientCA, tls.clientAuth');
  if (JSON.stringify(a.tls?.acme ?? null) !== JSON.stringify(b.tls?.acme ?? null)) changed.push('tls.acme');
  if (
    a.limits.headersTimeoutMs !== b.limits.headersTimeoutMs ||
    a.limits.keepAliveTimeoutMs !== b.limits.keepAliveTimeoutMs ||
    a.limits.maxHeaderSize !== b.limits.maxHeaderSize
  ) {
    changed.push('limits (timeouts, maxHeaderSize)');
  }
  return changed;
}

/**
 * The TLS settings a reload may apply: new files for the pair and the client CA; whether client certificates
 * are asked for at all, and the version floor, are properties of the listening server and stay as started.
 */
function reloadableTls(current: Config['tls'], next: Config['tls']): Config['tls'] {
  if (!current || !next) return current;
  return { ...next, minVersion: current.minVersion, clientAuth: current.clientAuth, clientCA: current.clientCA === null ? null : (next.clientCA ?? current.clientCA) };
}

/** The stored ACME certificate, or a placeholder when there is none yet (or it does not load). */
async function storedOrPlaceholder(files: { cert: string; key: string; clientCA: string | null }, domains: readonly string[], logger: Logger): Promise<TlsMaterial> {
  if (existsSync(files.cert)) {
    try {
      return loadTlsMaterial(files.cert, files.key, files.clientCA);
    } catch (err) {
      logger.warn({ err: (err as Error).message }, 'stored ACME certificate does not load; serving a placeholder until a new one is ordered');
    }
  }
  const placeholder = await placeholderMaterial(domains);
  return files.clientCA ? { ...placeholder, clientCA: loadCABundle(files.clientCA) } : placeholder;
}
