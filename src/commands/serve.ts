/**
 * `portcullis serve --config FILE`: run the proxy in the foreground.
 *
 * One process by default; `workers: N` forks N processes sharing the port (node:cluster). Each worker
 * serves requests and keeps its own credential cache (a credential costs one bcrypt per worker); the
 * primary only supervises, serves /metrics (the sum over workers), /healthz and /readyz.
 *
 * Signals: SIGHUP re-reads proxy.yaml; SIGTERM/SIGINT drain (stop accepting, let transfers finish up to
 * `shutdown.gracePeriod`) and exit 0.
 */
import cluster, { type Worker } from 'node:cluster';
import { readFileSync } from 'node:fs';
import type http from 'node:http';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { AggregatorRegistry } from 'prom-client';
import { Authenticator } from '../auth.js';
import { loadConfig, redactedConfig, type Config } from '../config.js';
import { PortcullisError } from '../errors.js';
import { createLogger, type Logger } from '../log.js';
import { Metrics, startProbeServer, upstreamProbe } from '../metrics.js';
import { Forwarder, upstreamAgent } from '../proxy.js';
import { createRequestHandler, createServer, type Services } from '../server.js';
import { loadTlsMaterial, secureContextOptions, type TlsMaterial } from '../tls.js';
import { FileWatcher } from '../watch.js';
import type { CommandIO } from './io.js';

export async function serveCommand(argv: string[], io: CommandIO): Promise<number> {
  const file = optionValue(argv, '--config') ?? 'proxy.yaml';
  let config: Config;
  try {
    config = loadConfig(file);
  } catch (err) {
    io.stderr.write(`portcullis: ${(err as Error).message}\n`);
    return 1;
  }
  const logger = createLogger(config.log.level);
  try {
    if (config.workers > 1 && cluster.isPrimary) return await runPrimary(config, logger);
    return await runInstance(config, logger);
  } catch (err) {
    const message = err instanceof PortcullisError ? err.message : (err as Error).stack ?? String(err);
    logger.fatal({ err: message }, 'cannot start');
    io.stderr.write(`portcullis: ${message}\n`);
    return 1;
  }
}

export function optionValue(argv: string[], name: string): string | undefined {
  const i = argv.findIndex((a) => a === name || a.startsWith(`${name}=`));
  if (i === -1) return undefined;
  return argv[i]!.includes('=') ? argv[i]!.slice(name.length + 1) : argv[i + 1];
}

/** Authenticators replaced by a SIGHUP: they follow the htpasswd file until closed, but no longer count. */
const retired = new WeakSet<Authenticator>();

/** Pieces built from one config; rebuilt on SIGHUP. */
async function buildServices(config: Config, logger: Logger, metrics: Metrics): Promise<Services> {
  let self: Authenticator | null = null;
  const authenticator = await Authenticator.open({
    htpasswdPath: config.auth.htpasswd,
    cacheTtlMs: config.auth.cacheTtlMs,
    cacheSize: config.auth.cacheSize,
    throttle: { maxFailures: config.auth.maxFailures, windowMs: config.auth.failureWindowMs },
    logger,
    // After a SIGHUP the replaced authenticator still follows the file until retire() closes it: without
    // this check one change of the file counted as two reloads for a whole grace period.
    onReload: (result) => {
      if (self === null || !retired.has(self)) metrics.reloads.inc({ kind: 'htpasswd', result });
    },
  });
  self = authenticator;
  const forwarder = new Forwarder({
    upstream: config.upstream.url,
    ca: config.upstream.ca ? readFileSync(config.upstream.ca) : null,
    timeoutMs: config.upstream.timeoutMs,
    maxSockets: config.upstream.maxSockets,
    maxBodySize: config.limits.maxBodySize,
    internalOrigins: [config.upstream.url.origin, ...config.upstream.aliases],
  });
  return { config, authenticator, forwarder };
}

/** Retire replaced services once requests that started with them have had time to finish. */
function retire(old: Services, afterMs: number): void {
  retired.add(old.authenticator);
  setTimeout(() => {
    void old.authenticator.close();
    old.forwarder.close();
  }, afterMs).unref();
}

async function runInstance(initial: Config, logger: Logger): Promise<number> {
  const worker = cluster.isWorker;
  const metrics = new Metrics();
  let tls: TlsMaterial | null = initial.tls ? loadTlsMaterial(initial.tls.cert, initial.tls.key) : null;
  if (!tls) {
    logger.warn(
      'TLS IS DISABLED (tls: false): passwords and images cross the network in clear text, and docker ' +
        'refuses plain-HTTP registries unless listed in insecure-registries. Use this only behind another TLS terminator.',
    );
  }
  let services = await buildServices(initial, logger, metrics);
  let draining = false;
  // Responses being served, by connection: the drain needs them (see shutdown below).
  const open = new Map<Socket, Set<ServerResponse>>();
  const pipeline = createRequestHandler({ services: () => services, metrics, logger, draining: () => draining });
  const handler = (req: IncomingMessage, res: ServerResponse): void => {
    const socket = req.socket;
    let responses = open.get(socket);
    if (!responses) open.set(socket, (responses = new Set()));
    const mine = responses;
    mine.add(res);
    res.once('close', () => {
      mine.delete(res);
      if (mine.size > 0) return;
      if (open.get(socket) === mine) open.delete(socket);
      // A response that began before the drain said keep-alive; now that it is over (and flushed: 'close'
      // follows 'finish'), end its connection gracefully.
      if (draining) socket.end(() => socket.destroy());
    });
    pipeline(req, res);
  };
  const server = createServer(initial, tls, handler, metrics);
  await listen(server, initial.listen.host, initial.listen.port);
  const address = server.address() as AddressInfo;
  const url = `${initial.tls ? 'https' : 'http'}://${formatHost(initial.listen.host)}:${address.port}`;
  logger.info(
    { url, upstream: initial.upstream.url.origin, ...(tls ? { certificate: tls.subject, validTo: tls.validTo } : {}) },
    worker ? 'worker listening' : 'listening',
  );

  let probe: http.Server | null = null;
  if (initial.metrics && !worker) {
    probe = await startProbeServer({
      ...initial.metrics,
      metrics: async () => ({ contentType: metrics.registry.contentType, body: await metrics.registry.metrics() }),
      ready: () => upstreamProbe(services.config.upstream.url, services.forwarder.agent)(),
      logger,
    });
    const a = probe.address() as AddressInfo;
    logger.info({ url: `http://${formatHost(initial.metrics.host)}:${a.port}` }, 'metrics listening');
  }

  const reloadTls = (): void => {
    const cfg = services.config.tls;
    if (!cfg) return;
    try {
      tls = loadTlsMaterial(cfg.cert, cfg.key);
      // setSecureContext replaces every context option, not only cert and key: without minVersion again a
      // `minVersion: TLSv1.3` server would accept TLS 1.2 after its first certificate reload. The version
      // stays the one the server started with (a minVersion change needs a restart).
      (server as unknown as import('node:tls').Server).setSecureContext({ ...secureContextOptions(tls), minVersion: initial.tls?.minVersion ?? 'TLSv1.2' });
      metrics.reloads.inc({ kind: 'tls', result: 'ok' });
      logger.info({ certificate: tls.subject, validTo: tls.validTo }, 'certificate reloaded');
    } catch (err) {
      metrics.reloads.inc({ kind: 'tls', result: 'error' });
      logger.error({ err: (err as Error).message }, 'certificate reload refused; the previous certificate keeps serving');
    }
  };
  let certWatcher = initial.tls ? new FileWatcher([initial.tls.cert, initial.tls.key], reloadTls, { debounceMs: 500 }) : null;

  const reloadConfig = async (): Promise<void> => {
    let next: Config;
    try {
      next = loadConfig(services.config.file);
    } catch (err) {
      metrics.reloads.inc({ kind: 'config', result: 'error' });
      logger.error({ err: (err as Error).message }, 'config reload refused; the previous config keeps serving');
      return;
    }
    const current = services.config;
    const fixed = restartOnlyChanges(current, next);
    if (fixed.length > 0) logger.warn({ keys: fixed }, 'these settings change only on restart');
    try {
      const fresh = await buildServices({ ...next, listen: current.listen, workers: current.workers, metrics: current.metrics, tls: current.tls && next.tls }, logger, metrics);
      const old = services;
      services = fresh;
      retire(old, next.shutdown.gracePeriodMs);
    } catch (err) {
      metrics.reloads.inc({ kind: 'config', result: 'error' });
      logger.error({ err: (err as Error).message }, 'config reload refused; the previous config keeps serving');
      return;
    }
    logger.level = next.log.level;
    if (current.tls && next.tls && (current.tls.cert !== next.tls.cert || current.tls.key !== next.tls.key)) {
      certWatcher?.close();
      certWatcher = new FileWatcher([next.tls.cert, next.tls.key], reloadTls, { debounceMs: 500 });
      reloadTls();
    }
    metrics.reloads.inc({ kind: 'config', result: 'ok' });
    logger.info({ config: redactedConfig(services.config) }, 'config reloaded');
  };

  return new Promise<number>((resolve) => {
    process.on('SIGHUP', () => void reloadConfig());
    const shutdown = (signal: string): void => {
      if (draining) return;
      draining = true;
      const graceMs = services.config.shutdown.gracePeriodMs;
      let inFlight = 0;
      for (const responses of open.values()) {
        for (const res of responses) {
          inFlight += 1;
          // Not answered yet: answer with `Connection: close`, so the client does not send its next request
          // into a connection that is about to close.
          if (!res.headersSent) res.shouldKeepAlive = false;
        }
      }
      logger.info({ signal, inFlight, graceMs }, 'shutting down: draining in-flight requests');
      const force = setTimeout(() => {
        logger.warn('grace period over: closing remaining connections');
        server.closeAllConnections();
      }, graceMs);
      // close() stops accepting and closes the connections idle now. No periodic closeIdleConnections()
      // after that: it destroys a connection whose response has ended but is not flushed yet (a slow
      // client's last bytes), cutting downloads short. Connections busy now are closed when their
      // response is over (above).
      server.close(() => {
        clearTimeout(force);
        certWatcher?.close();
        probe?.close();
        void services.authenticator.close();
        services.forwarder.close();
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
  if (a.limits.headersTimeoutMs !== b.limits.headersTimeoutMs || a.limits.keepAliveTimeoutMs !== b.limits.keepAliveTimeoutMs || a.limits.maxHeaderSize !== b.limits.maxHeaderSize) {
    changed.push('limits (timeouts, maxHeaderSize)');
  }
  return changed;
}

/** The primary of `workers: N`: forks, restarts crashed workers, relays signals, serves the probes. */
async function runPrimary(config: Config, logger: Logger): Promise<number> {
  // Fail fast in one place rather than N times: the certificate must load before anything forks.
  if (config.tls) loadTlsMaterial(config.tls.cert, config.tls.key);
  let stopping = false;
  let listening = 0;
  const fork = (): Worker => cluster.fork();
  for (let i = 0; i < config.workers; i++) fork();
  cluster.on('listening', (_w, address) => {
    listening += 1;
    if (listening === config.workers) {
      logger.info({ url: `${config.tls ? 'https' : 'http'}://${formatHost(config.listen.host)}:${address.port}`, workers: config.workers }, 'listening');
    }
  });
  cluster.on('exit', (w, code, signal) => {
    if (stopping) return;
    logger.error({ worker: w.process.pid, code, signal }, 'worker exited; starting a new one');
    setTimeout(fork, 1000).unref();
  });

  // /readyz checks the upstream the workers forward to, so it follows `upstream` across SIGHUP too.
  interface ProbeTarget {
    key: string;
    agent: http.Agent;
    ready: () => Promise<boolean>;
  }
  const targetKey = (c: Config): string => `${c.upstream.url.href} ${c.upstream.ca ?? ''}`;
  const probeTarget = (c: Config): ProbeTarget => {
    const agent = upstreamAgent(c.upstream.url, c.upstream.ca ? readFileSync(c.upstream.ca) : null, 2);
    return { key: targetKey(c), agent, ready: upstreamProbe(c.upstream.url, agent) };
  };
  let target: ProbeTarget | null = config.metrics ? probeTarget(config) : null;
  const followUpstream = (): void => {
    if (!target) return;
    try {
      const next = loadConfig(config.file);
      if (targetKey(next) === target.key) return;
      const fresh = probeTarget(next);
      target.agent.destroy();
      target = fresh;
    } catch {
      // The workers refuse the same file and log why; the probe keeps its target.
    }
  };

  let probe: http.Server | null = null;
  if (config.metrics) {
    const aggregate = new AggregatorRegistry();
    probe = await startProbeServer({
      ...config.metrics,
      metrics: async () => ({ contentType: aggregate.contentType, body: await aggregate.clusterMetrics() }),
      ready: () => target?.ready() ?? Promise.resolve(false),
      logger,
    });
    logger.info({ url: `http://${formatHost(config.metrics.host)}:${(probe.address() as AddressInfo).port}` }, 'metrics listening');
  }

  return new Promise<number>((resolve) => {
    const each = (fn: (w: Worker) => void): void => Object.values(cluster.workers ?? {}).forEach((w) => w && fn(w));
    process.on('SIGHUP', () => {
      followUpstream();
      each((w) => w.process.kill('SIGHUP'));
    });
    const stop = (signal: NodeJS.Signals): void => {
      if (stopping) return;
      stopping = true;
      logger.info({ signal }, 'shutting down workers');
      each((w) => w.process.kill(signal === 'SIGINT' ? 'SIGTERM' : signal));
      const done = (): void => {
        if (Object.keys(cluster.workers ?? {}).length > 0) return;
        probe?.close();
        logger.info('stopped');
        resolve(0);
      };
      cluster.on('exit', done);
      done();
    };
    process.on('SIGTERM', () => stop('SIGTERM'));
    process.on('SIGINT', () => stop('SIGINT'));
  });
}

function listen(server: http.Server, host: string, port: number): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
}

function formatHost(host: string): string {
  const h = host === '0.0.0.0' || host === '::' ? '127.0.0.1' : host;
  return h.includes(':') ? `[${h}]` : h;
}
