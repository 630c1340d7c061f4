/**
 * The request pipeline. `serve()` reads top to bottom:
 *   1. what is asked: the target, the body's framing, the singleton headers -> a Route
 *   2. who asks: authentication -> an Identity, or 401 / 429
 *   3. may they: authorization -> 401 for anonymous, 403 DENIED for a known caller
 *   4. the declared size and `Expect: 100-continue`
 *   5. forwarding: the registry's headers, the body through its meter, the response headers through the
 *      Location rewrite (and a JSON answer through a transform where a route needs one)
 * Every exchange ends in one place, `finish()`, when its response closes: one access-log line, the metrics.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { randomUUID } from 'node:crypto';
import type { TLSSocket } from 'node:tls';
import { catalogRequest, filterCatalog, hasNextLink, nextLink, type CatalogPage } from '../access/catalog.js';
import type { Authorizer } from '../access/policy.js';
import { authenticate, type AuthenticationOutcome, type RequestCredentials } from '../auth/authentication.js';
import type { Authenticator } from '../auth/authenticator.js';
import { nameOf, type Identity } from '../auth/identity.js';
import type { Config } from '../config/schema.js';
import { RegistryError } from '../errors.js';
import { accessLevel, type AccessRecord } from '../ops/access-log.js';
import { auditEventOf, type AuditLog } from '../ops/audit.js';
import type { Logger } from '../ops/log.js';
import { statusClass, type Metrics } from '../ops/metrics.js';
import { BodyLimit, bodyTooLarge } from '../proxy/body-limit.js';
import type { ForwardPlan, Forwarder, UpstreamOutcome } from '../proxy/forwarder.js';
import {
  clientIpOf,
  clientOriginOf,
  duplicatedSingleton,
  forwardHeaders,
  requestFraming,
  rewriteResponseHeaders,
  type Framing,
} from '../proxy/headers.js';
import { sendError, unauthorized } from './reply.js';
import { classify, isAmbiguousPath, isRegistryPath, looksNamed, queryProblem, splitTarget, withoutMount, type Route } from './route.js';
import type { Router } from './router.js';

/** What a request needs. Replaced as a whole on reload, so one request never sees half of two configs. */
export interface Services {
  readonly config: Config;
  readonly authenticator: Authenticator;
  readonly authorizer: Authorizer;
  readonly forwarder: Forwarder;
  /** Paths outside the registry API (/v2/). */
  readonly router: Router;
  readonly audit: AuditLog;
}

export interface PipelineDeps {
  services: () => Services;
  metrics: Metrics;
  logger: Logger;
  /** True once shutdown began: answers then close their connection. */
  draining: () => boolean;
}

/** Everything one exchange learns, filled in as the pipeline goes, for its log line and metrics. */
interface Exchange {
  readonly started: number;
  readonly record: AccessRecord;
  readonly audit: AuditLog;
  auth: AuthenticationOutcome | null;
  identity: Identity['kind'];
  /** The authorization refused the request. */
  denied: boolean;
  /** The request body's meter, once the request is forwarded with a body. */
  meter: BodyLimit | null;
  /** The registry side, once forwarded. */
  upstream: UpstreamOutcome | null;
}

export function createRequestHandler(deps: PipelineDeps): (req: IncomingMessage, res: ServerResponse) => void {
  return (req, res) => {
    const services = deps.services();
    const ex: Exchange = {
      started: performance.now(),
      record: newRecord(req),
      audit: services.audit,
      auth: null,
      identity: 'anonymous',
      denied: false,
      meter: null,
      upstream: null,
    };
    deps.metrics.inFlight.inc();
    if (deps.draining()) res.shouldKeepAlive = false;
    res.once('close', () => finish(deps, ex, res));
    serve(req, res, services, ex).catch((err: unknown) => {
      if (err instanceof RegistryError) {
        // An expected refusal raised below the pipeline (e.g. the password workers are saturated or down).
        ex.record.error = err.code.toLowerCase();
        sendError(res, err);
        return;
      }
      // A bug, not a client problem: answer 500 and keep serving everyone else.
      ex.record.error = 'internal';
      deps.logger.error({ reqId: ex.record.reqId, err: err instanceof Error ? err.stack : String(err) }, 'request failed');
      sendError(res, new RegistryError('UNKNOWN', 'internal proxy error'));
    });
  };
}

async function serve(req: IncomingMessage, res: ServerResponse, services: Services, ex: Exchange): Promise<void> {
  const { config } = services;
  const { record } = ex;

  // 1. What is asked.
  const asked = readRequest(req);
  if ('refusal' in asked) return sendError(res, asked.refusal, { close: true });
  const { path, route, framing } = asked;
  record.path = path;
  record.operation = route.operation;
  record.repository = route.repository;
  record.action = route.action;
  if (!isRegistryPath(path)) {
    const handler = services.router.find(path);
    if (handler) return handler(req, res);
    return sendError(res, new RegistryError('UNSUPPORTED', 'not a registry API path (/v2/)', { status: 404 }));
  }
  if (route.operation === 'other') {
    // No registry route: nothing to authorize it against, so nothing to forward.
    if (looksNamed(path)) return sendError(res, new RegistryError('NAME_INVALID', 'invalid repository name'));
    return sendError(res, new RegistryError('UNSUPPORTED', 'not a registry API route', { status: 404 }));
  }

  // 2. Who asks.
  const authn = await authenticate(services.authenticator, credentialsOf(req, record.clientIp), config.auth.clientCertificate);
  ex.auth = authn.outcome;
  if (authn.kind === 'refused') {
    if (authn.outcome !== 'throttled') {
      return sendError(res, unauthorized(config.auth.realm, authn.outcome === 'malformed' ? 'malformed Authorization header' : 'authentication required'));
    }
    const retry = String(Math.max(1, Math.ceil(authn.retryAfterMs / 1000)));
    return sendError(res, new RegistryError('TOOMANYREQUESTS', 'too many failed logins; try again later', { headers: { 'Retry-After': retry } }));
  }
  record.user = nameOf(authn.identity);
  ex.identity = authn.identity.kind;

  // 3. May they.
  const { authorizer } = services;
  const identity = authn.identity;
  const decision = authorizer.authorize(identity, route);
  record.decision = `${decision.allowed ? 'allow' : 'deny'}: ${decision.reason}`;
  if (!decision.allowed) {
    ex.denied = true;
    // Anonymous callers get the challenge: docker and podman send credentials only after one.
    if (identity.kind === 'anonymous') return sendError(res, unauthorized(config.auth.realm));
    record.error = 'denied';
    return sendError(res, new RegistryError('DENIED', 'requested access to the resource is denied'));
  }
  if (route.mountFrom !== null && !authorizer.may(identity, 'pull', route.mountFrom).allowed) {
    // A mount reads its source repository: without pull there, the registry gets an ordinary upload (202)
    // instead of a link to a blob the caller could not read (distribution app.go: from= needs pull).
    req.url = withoutMount(req.url ?? '');
    record.decision += `; mount from ${route.mountFrom} dropped`;
  }

  // 4. The declared size, then `100 Continue`: Node sends it only because we listen for 'checkContinue',
  // so the client sends its body only once it is authenticated, authorized and within the limit.
  const limit = config.limits.maxBodySize;
  if (limit > 0 && framing.kind === 'length' && framing.length > limit) {
    // Refused before a byte reaches the registry; close so we need not read the body at all.
    record.error = 'body_too_large';
    return sendError(res, bodyTooLarge(limit), { close: true });
  }
  if (/100-continue/i.test(String(req.headers.expect ?? ''))) res.writeContinue();

  // 5. Forward.
  const proto = config.tls ? 'https' : 'http';
  const listenHost = `${config.listen.host}:${config.listen.port}`;
  const clientOrigin = clientOriginOf(proto, req.headers.host, listenHost);
  const internalOrigins = [config.upstream.url.origin, ...config.upstream.aliases];
  // In place of the client's: http-proxy copies `req.headers` (and skips its own hook when `Expect` is
  // present, node-http-proxy#1447, so this is the one place that works for every request).
  // An empty Host falls back like a missing one: Node would otherwise put the registry's own address in its place.
  req.headers = forwardHeaders(req.headers, framing, { clientIp: record.clientIp, proto, host: req.headers.host || listenHost });
  ex.meter = hasBody(framing) ? new BodyLimit(limit, framing.kind === 'length' ? framing.length : null) : null;
  ex.upstream = { status: null, ms: null, bytesOut: 0, digest: null, error: null, settled: false };
  const plan: ForwardPlan = { body: ex.meter, responseHeaders: (headers) => rewriteResponseHeaders(headers, internalOrigins, clientOrigin) };
  if (route.operation === 'catalog' && authorizer.filtersCatalog) plan.transformJson = catalogFilter(services, identity, req);
  await services.forwarder.forward(req, res, plan, ex.upstream);
}

/**
 * The catalog as this caller may see it: the registry's answer to the forwarded request, filtered, and further
 * registry pages read with the same headers until the page is full (access/catalog.ts).
 */
function catalogFilter(services: Services, identity: Identity, req: IncomingMessage): NonNullable<ForwardPlan['transformJson']> {
  const upstreamHeaders = req.headers;
  const request = catalogRequest(splitTarget(req.url ?? '').query);
  const fetchPage = async (last: string, n: number): Promise<CatalogPage> => {
    const page = await services.forwarder.getJson(`/v2/_catalog?n=${n}&last=${encodeURIComponent(last)}`, upstreamHeaders);
    return { repositories: repositoriesOf(page.body), more: hasNextLink(page.headers.link) };
  };
  return async (body, headers) => {
    const first = { repositories: repositoriesOf(body), more: hasNextLink(headers.link) };
    const filtered = await filterCatalog(first, request, (name) => services.authorizer.may(identity, 'pull', name).allowed, fetchPage);
    if (filtered.next === null) delete headers.link;
    else headers.link = nextLink(filtered.next, request.n);
    return { repositories: filtered.repositories };
  };
}

/** The names of a catalog answer; an answer of another shape is the registry's error to own. */
function repositoriesOf(body: unknown): string[] {
  const names = (body as { repositories?: unknown } | null)?.repositories;
  if (!Array.isArray(names) || !names.every((n) => typeof n === 'string')) {
    throw new RegistryError('UNAVAILABLE', 'upstream catalog answer has no list of repositories', { status: 502 });
  }
  return names;
}

/** Step 1: the request as the proxy will treat it, or why it is refused before anything else happens. */
function readRequest(req: IncomingMessage): { path: string; route: Route; framing: Framing } | { refusal: RegistryError } {
  const target = req.url ?? '';
  if (!target.startsWith('/')) return { refusal: new RegistryError('UNSUPPORTED', 'request target must be a path', { status: 400 }) };
  // No fragment in a request target (RFC 9112 3.2). http-proxy would cut it off (`url.parse`), so the registry
  // would act on another path than the one checked here: `/v2/a/tags/list#x` is no route to us, a route to it.
  if (target.includes('#')) return { refusal: new RegistryError('UNSUPPORTED', 'request target must not contain "#"', { status: 400 }) };
  // RFC 9112 3.2: an HTTP/1.1 request without Host is a 400 (Node's own answer to it would not be registry JSON).
  if (req.httpVersion !== '1.0' && req.headers.host === undefined) {
    return { refusal: new RegistryError('UNSUPPORTED', 'missing Host header', { status: 400 }) };
  }
  // Node hands over a request whose `Expect` is not 100-continue only because we listen for 'checkExpectation'
  // (its own answer, an empty 417, would not be registry JSON); RFC 9110 10.1.1 allows refusing it with 417.
  const expect = req.headers.expect;
  if (expect !== undefined && !CONTINUE.test(expect)) {
    return { refusal: new RegistryError('UNSUPPORTED', 'unsupported expectation', { status: 417 }) };
  }
  const { path, query } = splitTarget(target);
  if (isAmbiguousPath(path)) {
    // The registry's router would decode or clean this path into another name than the one we see.
    return { refusal: new RegistryError('NAME_INVALID', 'invalid repository path', { status: 400 }) };
  }
  const badQuery = queryProblem(query);
  if (badQuery !== null) return { refusal: new RegistryError('UNSUPPORTED', badQuery, { status: 400 }) };
  const duplicated = duplicatedSingleton(req.rawHeaders);
  if (duplicated !== null) return { refusal: new RegistryError('UNSUPPORTED', `more than one ${duplicated} header`, { status: 400 }) };
  const framing = requestFraming(req.headers);
  if ('problem' in framing) return { refusal: new RegistryError('UNSUPPORTED', framing.problem, { status: 501 }) };
  // On POST, PUT and PATCH the registry reads `mount` and `from` with Go's FormValue, which prefers a form body
  // to the query: such a body could name a mount source no rule was asked about. No registry client sends one.
  if (/^(?:POST|PUT|PATCH)$/.test(req.method ?? '') && /^\s*(?:application\/x-www-form-urlencoded|multipart\/form-data)\b/i.test(req.headers['content-type'] ?? '')) {
    return { refusal: new RegistryError('UNSUPPORTED', 'form-encoded bodies are not registry requests', { status: 400 }) };
  }
  return { path, route: classify(req.method ?? 'GET', path, query), framing };
}

/** What Node's server counts as asking for `100 Continue` (node/lib/_http_server.js continueExpression). */
const CONTINUE = /(?:^|\W)100-continue(?:$|\W)/i;

function hasBody(framing: Framing): boolean {
  return framing.kind === 'chunked' || (framing.kind === 'length' && framing.length > 0);
}

function credentialsOf(req: IncomingMessage, clientIp: string): RequestCredentials {
  const socket = req.socket as Partial<TLSSocket>;
  return {
    authorization: req.headers.authorization,
    clientIp,
    peerCertificate: () => {
      if (socket.authorized !== true || typeof socket.getPeerCertificate !== 'function') return null;
      const cert = socket.getPeerCertificate();
      return cert && Object.keys(cert).length > 0 ? cert : null;
    },
  };
}

function newRecord(req: IncomingMessage): AccessRecord {
  return {
    reqId: randomUUID(),
    clientIp: clientIpOf(req.socket.remoteAddress),
    user: null,
    method: req.method ?? 'GET',
    path: '',
    repository: null,
    operation: 'other',
    action: null,
    decision: null,
    status: 0,
    bytesIn: 0,
    bytesOut: 0,
    durationMs: 0,
    upstreamStatus: null,
    aborted: false,
    error: null,
  };
}

/** The one end of every exchange, answered here or forwarded: when its response has closed. */
function finish(deps: PipelineDeps, ex: Exchange, res: ServerResponse): void {
  const { metrics, logger } = deps;
  const { record, upstream } = ex;
  record.status = res.statusCode;
  record.durationMs = Math.round((performance.now() - ex.started) * 10) / 10;
  // Aborted: the client left before its response was whole, and not because the proxy cut the exchange.
  record.aborted = !res.writableFinished && !(upstream?.settled ?? false);
  record.bytesIn = ex.meter?.bytes ?? 0;
  if (upstream) {
    record.bytesOut = upstream.bytesOut;
    record.upstreamStatus = upstream.status;
    record.error = upstream.error ?? record.error;
    if (upstream.ms !== null) metrics.upstreamLatency.observe({ operation: record.operation }, upstream.ms / 1000);
  } else {
    record.bytesOut = Number(res.getHeader('content-length') ?? 0);
  }
  const labels = { method: record.method, operation: record.operation, status_class: statusClass(record.status) };
  metrics.inFlight.dec();
  metrics.requests.inc(labels);
  metrics.duration.observe(labels, record.durationMs / 1000);
  if (ex.auth) metrics.auth.inc({ outcome: ex.auth });
  if (record.bytesIn) metrics.bytes.inc({ direction: 'in' }, record.bytesIn);
  if (record.bytesOut) metrics.bytes.inc({ direction: 'out' }, record.bytesOut);
  if (record.aborted) metrics.aborted.inc();
  if (record.error === 'upstream_unavailable') metrics.upstreamErrors.inc({ kind: 'unavailable' });
  if (record.error === 'upstream_timeout') metrics.upstreamErrors.inc({ kind: 'timeout' });
  if (record.error === 'upstream_protocol') metrics.upstreamErrors.inc({ kind: 'protocol' });
  logger[accessLevel(record)](record, 'request');
  const event = auditEventOf({ ...record, identity: ex.identity, denied: ex.denied, digest: upstream?.digest ?? null }, new Date());
  if (event) ex.audit.record(event);
}
