/**
 * Prometheus metrics, on their own plain-HTTP listener (bind it to an internal address).
 *
 * Labels stay low-cardinality: method, operation, status class. Never user or repository: those belong
 * in the access log. Blob transfers last minutes, so total duration has wide exponential buckets and
 * time-to-upstream-headers is measured separately.
 *
 * With several workers, each worker records into its own registry and the primary process serves the
 * sum (prom-client's AggregatorRegistry over the cluster IPC channel): counters and histograms add up,
 * gauges too (in-flight requests = the sum over workers), except certificate expiry (the minimum).
 * ACME orders happen in the primary, which serves its own small registry next to the aggregate.
 */
import cluster from 'node:cluster';
import { PerformanceObserver, constants as perf } from 'node:perf_hooks';
import { AggregatorRegistry, Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

const LABELS = ['method', 'operation', 'status_class'] as const;

export class Metrics {
  readonly registry = new Registry();
  readonly requests = new Counter({
    name: 'portcullis_requests_total',
    help: 'Requests answered, by method, registry operation and status class.',
    labelNames: LABELS,
    registers: [this.registry],
  });
  readonly duration = new Histogram({
    name: 'portcullis_request_duration_seconds',
    help: 'Time from request to the end of the response.',
    labelNames: LABELS,
    buckets: [0.005, 0.02, 0.05, 0.2, 0.8, 3.2, 12.8, 51.2, 204.8, 819.2],
    registers: [this.registry],
  });
  readonly upstreamLatency = new Histogram({
    name: 'portcullis_upstream_response_seconds',
    help: 'Time until the upstream registry sent response headers.',
    labelNames: ['operation'],
    registers: [this.registry],
  });
  readonly bytes = new Counter({
    name: 'portcullis_bytes_total',
    help: 'Body bytes proxied, by direction (in = client to registry, out = registry to client).',
    labelNames: ['direction'],
    registers: [this.registry],
  });
  readonly auth = new Counter({
    name: 'portcullis_auth_total',
    help: 'Authentication outcomes: ok (password verified), cached, certificate (client certificate identity), failed, throttled, anonymous, malformed.',
    labelNames: ['outcome'],
    registers: [this.registry],
  });
  readonly upstreamErrors = new Counter({
    name: 'portcullis_upstream_errors_total',
    help: 'Requests the upstream could not serve: unavailable (refused, reset), timeout, or protocol (an answer the proxy does not read).',
    labelNames: ['kind'],
    registers: [this.registry],
  });
  readonly inFlight = new Gauge({
    name: 'portcullis_requests_in_flight',
    help: 'Requests being served now.',
    registers: [this.registry],
  });
  readonly aborted = new Counter({
    name: 'portcullis_client_aborts_total',
    help: 'Requests the client abandoned before the response was complete.',
    registers: [this.registry],
  });
  readonly tlsErrors = new Counter({
    name: 'portcullis_tls_handshake_errors_total',
    help: 'TLS handshakes that failed (untrusted CA on the client, protocol mismatch, plain HTTP to the TLS port).',
    registers: [this.registry],
  });
  readonly reloads = new Counter({
    name: 'portcullis_config_reloads_total',
    help: 'Reloads of htpasswd, certificate and proxy.yaml, by what and result (ok or error).',
    labelNames: ['kind', 'result'],
    registers: [this.registry],
  });

  /**
   * Every garbage collection, by kind. prom-client's gc histogram reads only the first entry of each
   * observer batch (lib/metrics/gc.js), so it undercounts exactly when collections come in bursts: a full-GC
   * storm (src/runtime/node-flags.ts) is what this counter is for.
   */
  readonly gc = new Counter({
    name: 'portcullis_gc_total',
    help: 'Garbage collections, by kind: major (full mark-compact), minor (scavenge), incremental, weakcb.',
    labelNames: ['kind'],
    registers: [this.registry],
  });

  constructor() {
    collectDefaultMetrics({ register: this.registry, prefix: 'portcullis_' });
    for (const kind of Object.values(GC_KINDS)) this.gc.inc({ kind }, 0);
    new PerformanceObserver((list) => {
      for (const entry of list.getEntries()) {
        const kind = GC_KINDS[(entry as { detail?: { kind?: number } }).detail?.kind ?? 0];
        if (kind !== undefined) this.gc.inc({ kind });
      }
    }).observe({ entryTypes: ['gc'] });
    // A worker answers the primary's aggregation requests from this registry. prom-client installs the
    // worker's answering listener only in the AggregatorRegistry constructor (setRegistries alone leaves
    // the primary waiting until its 5 s timeout, and /metrics answers 500), hence the instance.
    if (cluster.isWorker) {
      AggregatorRegistry.setRegistries([this.registry]);
      new AggregatorRegistry();
    }
  }
}

const GC_KINDS: Record<number, string> = {
  [perf.NODE_PERFORMANCE_GC_MAJOR]: 'major',
  [perf.NODE_PERFORMANCE_GC_MINOR]: 'minor',
  [perf.NODE_PERFORMANCE_GC_INCREMENTAL]: 'incremental',
  [perf.NODE_PERFORMANCE_GC_WEAKCB]: 'weakcb',
};

/**
 * portcullis_tls_certificate_expiry_seconds: seconds until the served certificate expires, whatever its
 * source (files or ACME), computed at scrape time so it falls between reloads and an alert such as
 * `< 14 * 86400` fires when renewal is stuck. Across workers the minimum, not the sum: one worker still
 * serving an old certificate shows.
 */
export function registerCertificateExpiry(registry: Registry, validTo: () => Date | null): Gauge {
  return new Gauge({
    name: 'portcullis_tls_certificate_expiry_seconds',
    help: 'Seconds until the served TLS certificate expires (negative once expired).',
    registers: [registry],
    aggregator: 'min',
    collect() {
      const end = validTo();
      // NaN rather than 0 without a certificate: `expiry < X` must not fire for a process that has none.
      this.set(end === null ? Number.NaN : Math.floor((end.getTime() - Date.now()) / 1000));
    },
  });
}

export type AcmeOrderResult = 'ok' | 'error';

/** What the ACME manager records (a small interface, so tests can pass their own). */
export interface AcmeMetrics {
  orders: { inc(labels: { result: AcmeOrderResult }): void };
}

/** portcullis_acme_orders_total{result}: every order attempt, first issuance and renewals alike. */
export function createAcmeMetrics(registry: Registry): AcmeMetrics {
  const orders = new Counter({
    name: 'portcullis_acme_orders_total',
    help: 'ACME certificate orders, by result (ok: certificate stored; error: the order failed and is retried).',
    labelNames: ['result'],
    registers: [registry],
  });
  // Both series exist from the start, so an alert on errors does not wait for the first failure to appear.
  orders.inc({ result: 'ok' }, 0);
  orders.inc({ result: 'error' }, 0);
  return { orders };
}

export function statusClass(status: number): string {
  return `${Math.floor(status / 100)}xx`;
}
