/**
 * The primary process of `workers: N` (node:cluster): forks the workers that share the port, restarts
 * crashed ones, relays SIGHUP and SIGTERM, and serves the probes.
 *
 * Each worker keeps its own credential cache (a credential costs one bcrypt per worker) and its own
 * metrics; the primary's /metrics is their sum (prom-client's AggregatorRegistry over cluster IPC), and its
 * /readyz checks the upstream the workers forward to.
 *
 * With tls.acme the primary is the one ACME client of the installation: it orders into storage, which the
 * workers serve from and follow, and relays tls-alpn-01 challenges to them (tls/acme/relay.ts).
 */
import cluster, { type Worker } from 'node:cluster';
import { readFileSync } from 'node:fs';
import type http from 'node:http';
import type { AddressInfo } from 'node:net';
import { AggregatorRegistry, Registry } from 'prom-client';
import { loadConfig, type Config } from '../config/load.js';
import { loadHtpasswdFile } from '../auth/htpasswd-file.js';
import { RestartBackoff } from './backoff.js';
import { checkListen, displayHost } from './listen.js';
import { withGcFlags } from './node-flags.js';
import type { Logger } from '../ops/log.js';
import { createAcmeMetrics } from '../ops/metrics.js';
import { startProbeServer, upstreamProbe } from '../ops/probes.js';
import { upstreamAgent } from '../proxy/upstream-agent.js';
import { startAcmeInPrimary } from '../tls/acme/attach.js';
import { loadTlsMaterial } from '../tls/material.js';

export async function runPrimary(config: Config, logger: Logger): Promise<number> {
  // Fail fast in one place rather than N times: what every worker needs must load before anything forks
  // (workers that cannot start would otherwise only crash and be restarted, more and more slowly).
  // With tls.acme that is the CA file and storage (created here, before the workers watch it).
  if (config.tls && !config.tls.acme) loadTlsMaterial(config.tls.cert, config.tls.key, config.tls.clientCA);
  await loadHtpasswdFile(config.auth.htpasswd);
  await checkListen(config.listen.host, config.listen.port);
  if (config.metrics) await checkListen(config.metrics.host, config.metrics.port, 'metrics.listen');
  const acmeRegistry = new Registry();
  const acme = config.tls?.acme
    ? await startAcmeInPrimary(config.tls.acme, () => Object.values(cluster.workers ?? {}).filter((w) => w !== undefined), {
        logger,
        metrics: createAcmeMetrics(acmeRegistry),
      })
    : null;
  if (acme) {
    await acme.manager.prepare();
    cluster.on('online', (w) => acme.relay.welcome(w));
  }
  let stopping = false;
  let listening = 0;
  const startedAt = new Map<number, number>();
  const restarts = new Set<NodeJS.Timeout>();
  const backoff = new RestartBackoff();
  // Workers inherit the primary's execArgv; the primary may have got its GC flags at run time instead
  // (the npm bin), so they are put on the workers' command line here.
  cluster.setupPrimary({ execArgv: withGcFlags(process.execArgv) });
  const fork = (): void => {
    const w = cluster.fork();
    startedAt.set(w.id, performance.now());
  };
  for (let i = 0; i < config.workers; i++) fork();
  cluster.on('listening', (_w, address) => {
    listening += 1;
    if (listening === config.workers) {
      logger.info({ url: `${config.tls ? 'https' : 'http'}://${displayHost(config.listen.host)}:${address.port}`, workers: config.workers }, 'listening');
      // tls-alpn-01 validates on the workers' port: order only once they all listen.
      acme?.start().catch((err: unknown) => logger.error({ err: (err as Error).message }, 'acme: cannot start'));
    }
  });
  cluster.on('exit', (w, code, signal) => {
    const lived = performance.now() - (startedAt.get(w.id) ?? 0);
    startedAt.delete(w.id);
    if (stopping) return;
    const delay = backoff.next(lived);
    logger.error({ worker: w.process.pid, code, signal, livedMs: Math.round(lived), restartInMs: delay }, 'worker exited; starting a new one');
    const timer = setTimeout(() => {
      restarts.delete(timer);
      fork();
    }, delay);
    restarts.add(timer);
  });

  const readiness = new UpstreamReadiness(config);
  let probe: http.Server | null = null;
  if (config.metrics) {
    const aggregate = new AggregatorRegistry();
    probe = await startProbeServer({
      ...config.metrics,
      // The aggregate holds only the workers' registries; the primary's own ACME metrics exist nowhere else.
      metrics: async () => ({ contentType: aggregate.contentType, body: (await aggregate.clusterMetrics()) + (await acmeRegistry.metrics()) }),
      ready: () => readiness.check(),
      logger,
    });
    logger.info({ url: `http://${displayHost(config.metrics.host)}:${(probe.address() as AddressInfo).port}` }, 'metrics listening');
  }

  return new Promise<number>((resolve) => {
    const each = (fn: (w: Worker) => void): void => Object.values(cluster.workers ?? {}).forEach((w) => w && fn(w));
    process.on('SIGHUP', () => {
      readiness.follow(config.file);
      each((w) => w.process.kill('SIGHUP'));
    });
    const stop = (signal: NodeJS.Signals): void => {
      if (stopping) return;
      stopping = true;
      for (const t of restarts) clearTimeout(t);
      logger.info({ signal }, 'shutting down workers');
      each((w) => w.process.kill(signal === 'SIGINT' ? 'SIGTERM' : signal));
      const done = (): void => {
        if (Object.keys(cluster.workers ?? {}).length > 0) return;
        probe?.close();
        void acme?.close();
        logger.info('stopped');
        resolve(0);
      };
      // A worker leaves cluster.workers once both its 'exit' and 'disconnect' happened, in either order.
      cluster.on('exit', done);
      cluster.on('disconnect', done);
      done();
    };
    process.on('SIGTERM', () => stop('SIGTERM'));
    process.on('SIGINT', () => stop('SIGINT'));
  });
}

/** /readyz of the primary: is the upstream the workers forward to reachable? Follows `upstream` across SIGHUP. */
class UpstreamReadiness {
  #target: { key: string; agent: http.Agent; probe: () => Promise<boolean> };

  constructor(config: Config) {
    this.#target = UpstreamReadiness.#targetFor(config);
  }

  check(): Promise<boolean> {
    return this.#target.probe();
  }

  /** Re-read the config file; a file the workers will refuse (and log) leaves the target as it is. */
  follow(file: string): void {
    let next: Config;
    try {
      next = loadConfig(file);
    } catch {
      return; // the workers log why
    }
    if (UpstreamReadiness.#keyOf(next) === this.#target.key) return;
    this.#target.agent.destroy();
    this.#target = UpstreamReadiness.#targetFor(next);
  }

  static #keyOf(c: Config): string {
    return `${c.upstream.url.href} ${c.upstream.ca ?? ''}`;
  }

  static #targetFor(c: Config): { key: string; agent: http.Agent; probe: () => Promise<boolean> } {
    const agent = upstreamAgent(c.upstream.url, c.upstream.ca ? readFileSync(c.upstream.ca) : null, 2);
    return { key: UpstreamReadiness.#keyOf(c), agent, probe: upstreamProbe(c.upstream.url, agent) };
  }
}
