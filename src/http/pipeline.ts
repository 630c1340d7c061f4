/**
 * The request pipeline, read top to bottom:
 * classify -> authenticate -> check the declared size -> 100-continue -> rewrite headers -> forward -> log.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { randomUUID } from 'node:crypto';
import { accessLevel, type AccessRecord } from '../ops/access-log.js';
import type { AuthOutcome, Authenticator } from '../auth/authenticator.js';
import { bodyTooLarge } from '../proxy/body-limit.js';
import type { Config } from '../config/schema.js';
import { RegistryError } from '../errors.js';
import { clientIpOf, clientOriginOf, duplicatedSingleton, forwardHeaders, requestFraming } from '../proxy/headers.js';
import type { Logger } from '../ops/log.js';
import { statusClass, type Metrics } from '../ops/metrics.js';
import type { Exchange, Forwarder } from '../proxy/forwarder.js';
import { sendError, unauthorized } from './reply.js';
import { classify, isAmbiguousPath, splitTarget } from './route.js';

/** What a request needs. Replaced as a whole on reload, so one request never sees half of two configs. */
export interface Services {
  readonly config: Config;
  readonly authenticator: Authenticator;
  readonly forwarder: Forwarder;
}

export interface PipelineDeps {
  services: () => Services;
  metrics: Metrics;
  logger: Logger;
  /** True once shutdown began: answers then close their connection. */
  draining: () => boolean;
}

export function createRequestHandler(deps: PipelineDeps): (req: IncomingMessage, res: ServerResponse) => void {
  return (req, res) => {
    const services = deps.services();
    const started = performance.now();
    const record: AccessRecord = {
      reqId: randomUUID(),
      clientIp: clientIpOf(req.socket.remoteAddress),
      user: null,
      method: req.method ?? 'GET',
      path: '',
      repository: null,
      operation: 'other',
      status: 0,
      bytesIn: 0,
      bytesOut: 0,
      durationMs: 0,
      upstreamStatus: null,
      aborted: false,
      error: null,
    };
    const outcome: Outcome = { auth: null, exchange: null, forwarding: false };
    deps.metrics.inFlight.inc();
    if (deps.draining()) res.shouldKeepAlive = false;
    // A forwarded exchange is finished by the forwarder (it knows bytes, upstream status, aborts);
    // anything answered here, or abandoned before forwarding, is finished when the response closes.
    const done = (): void => finish(deps, record, outcome, res, started);
    res.once('close', () => {
      if (!outcome.forwarding) done();
    });

    handle(req, res, services, record, outcome).then(
      () => {
        if (outcome.forwarding) done();
      },
      (err: unknown) => {
        if (err instanceof RegistryError) {
          // An expected refusal raised below the pipeline (e.g. the bcrypt workers are saturated or down).
          record.error = err.code.toLowerCase();
          sendError(res, err);
        } else {
          // A bug, not a client problem: answer 500 and keep serving everyone else.
          record.error = 'internal';
          deps.logger.error({ reqId: record.reqId, err: err instanceof Error ? err.stack : String(err) }, 'request failed');
          sendError(res, new RegistryError('UNKNOWN', 'internal proxy error'));
        }
        if (outcome.forwarding) done();
      },
    );
  };
}

/** What the pipeline learnt beyond the access record, for metrics. */
interface Outcome {
  auth: AuthOutcome | null;
  exchange: Exchange | null;
  /** Handed to the forwarder, which reports the end of the exchange. */
  forwarding: boolean;
}

async function handle(
  req: IncomingMessage,
  res: ServerResponse,
  services: Services,
  record: AccessRecord,
  outcome: Outcome,
): Promise<void> {
  const { config, authenticator, forwarder } = services;
  const target = req.url ?? '';
  const { path } = splitTarget(target);
  const route = classify(path);
  record.path = path;
  record.operation = route.operation;
  record.repository = route.repository;

  if (!target.startsWith('/')) {
    return sendError(res, new RegistryError('UNSUPPORTED', 'request target must be a path', { status: 400 }), { close: true });
  }
  if (isAmbiguousPath(path)) {
    // The registry's router would decode or clean this path into another name than the one we see.
    return sendError(res, new RegistryError('NAME_INVALID', 'invalid repository path', { status: 400 }));
  }
  if (!path.startsWith('/v2/') && path !== '/v2') {
    return sendError(res, new RegistryError('UNSUPPORTED', 'not a registry API path (/v2/)', { status: 404 }));
  }
  // The request's framing and its singleton headers are settled before anything reads or rewrites them.
  const duplicated = duplicatedSingleton(req.rawHeaders);
  if (duplicated !== null) {
    return sendError(res, new RegistryError('UNSUPPORTED', `more than one ${duplicated} header`, { status: 400 }), { close: true });
  }
  const framing = requestFraming(req.headers);
  if ('problem' in framing) {
    return sendError(res, new RegistryError('UNSUPPORTED', framing.problem, { status: 501 }), { close: true });
  }

  const auth = await authenticator.authenticate(req.headers.authorization, record.clientIp);
  outcome.auth = auth.outcome;
  if (auth.outcome === 'throttled') {
    const retry = Math.ceil(config.auth.failureWindowMs / 1000);
    return sendError(res, new RegistryError('TOOMANYREQUESTS', 'too many failed logins; try again later', { headers: { 'Retry-After': String(retry) } }));
  }
  if (auth.outcome !== 'ok' && auth.outcome !== 'cached') {
    const message = auth.outcome === 'malformed' ? 'malformed Authorization header' : 'authentication required';
    return sendError(res, unauthorized(config.auth.realm, message));
  }
  record.user = auth.user;

  if (config.limits.maxBodySize > 0 && framing.kind === 'length' && framing.length > config.limits.maxBodySize) {
    // Refused before a byte reaches the registry; close so we need not read the body at all.
    record.error = 'body_too_large';
    return sendError(res, bodyTooLarge(config.limits.maxBodySize), { close: true });
  }
  // Node only skips its automatic `100 Continue` because we listen for 'checkContinue': the client sends
  // its body only once it is authenticated and within the limit.
  if (/100-continue/i.test(String(req.headers.expect ?? ''))) res.writeContinue();

  const proto = config.tls ? 'https' : 'http';
  const listenHost = `${config.listen.host}:${config.listen.port}`;
  const clientOrigin = clientOriginOf(proto, req.headers.host, listenHost);
  // In place of the client's: http-proxy copies `req.headers` (and skips its own hook when `Expect` is present,
  // node-http-proxy#1447, so this is the one place that works for every request).
  req.headers = forwardHeaders(req.headers, framing, { clientIp: record.clientIp, proto, host: req.headers.host ?? listenHost });
  outcome.forwarding = true;
  outcome.exchange = await forwarder.forward(req, res, clientOrigin, framing);
}

function finish(deps: PipelineDeps, record: AccessRecord, outcome: Outcome, res: ServerResponse, started: number): void {
  const { metrics, logger } = deps;
  const ex = outcome.exchange;
  record.status = res.statusCode;
  record.durationMs = Math.round((performance.now() - started) * 10) / 10;
  record.aborted = ex ? ex.aborted : !res.writableFinished;
  if (ex) {
    record.bytesIn = ex.bytesIn;
    record.bytesOut = ex.bytesOut;
    record.upstreamStatus = ex.upstreamStatus;
    if (ex.upstreamMs !== null) metrics.upstreamLatency.observe({ operation: record.operation }, ex.upstreamMs / 1000);
    record.error = ex.error ?? record.error;
  } else {
    record.bytesOut = Number(res.getHeader('content-length') ?? 0);
  }
  const labels = { method: record.method, operation: record.operation, status_class: statusClass(record.status) };
  metrics.inFlight.dec();
  metrics.requests.inc(labels);
  metrics.duration.observe(labels, record.durationMs / 1000);
  if (outcome.auth) metrics.auth.inc({ outcome: outcome.auth });
  if (record.bytesIn) metrics.bytes.inc({ direction: 'in' }, record.bytesIn);
  if (record.bytesOut) metrics.bytes.inc({ direction: 'out' }, record.bytesOut);
  if (record.aborted) metrics.aborted.inc();
  if (record.error === 'upstream_unavailable') metrics.upstreamErrors.inc({ kind: 'unavailable' });
  if (record.error === 'upstream_timeout') metrics.upstreamErrors.inc({ kind: 'timeout' });
  logger[accessLevel(record)](record, 'request');
}
