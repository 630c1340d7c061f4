/**
 * Carries out the forwarding the pipeline planned: sends one request to the registry, its body through the
 * plan's meter, and streams the answer back with the plan's header rewrite (or, for a JSON answer the plan
 * transforms, the transformed body).
 *
 * Two ways, one plan and one outcome: to a plain-HTTP registry, pulls and pushes (GET and HEAD without a
 * body, POST, PUT, PATCH) go over the pooled raw path (relay.ts over upstream-pool.ts), which carries their
 * bytes without Node's HTTP client; everything else (an https registry, the catalog transform, DELETE and
 * other methods) goes the general way below, over http-proxy.
 *
 * http-proxy 1.18 builds and sends the upstream request; the response is written here (`selfHandleResponse`),
 * so that the status, the headers and the end of every response are ours. What it gets wrong is done here
 * instead (node-http-proxy issues cited inline):
 * - client aborts: it listens for `req 'aborted'`, unreliable since Node 15 (#1559), so upstream sockets
 *   leaked. The upstream request is destroyed when the response closes unfinished, and the response when
 *   the upstream response closes early (with Content-Length the client would hang otherwise).
 * - timeouts: its `proxyTimeout` surfaces as a bare ECONNRESET (#1331); ours is tagged and answered 504.
 * - keep-alive: without an `agent` it sends `Connection: close` upstream; we pass a pooled agent.
 * - pooling: Node's agent returns a socket to the pool once the response ended and the request finished.
 *   An exchange that ends any other way (client gone, body cut at the limit, an early answer while the body
 *   was still coming) leaves bytes on that socket the next request would be read with: it is destroyed.
 * - upgrades: a `101` to a plain request would leave the client waiting forever (Node hands the socket to
 *   an 'upgrade' listener or silently drops it); we answer 502.
 * - framing: its `deleteLength` pass turns a DELETE or OPTIONS without Content-Length into `Content-Length: 0`
 *   and drops Transfer-Encoding, so a chunked body would follow unframed, to be read by the registry as a
 *   further request. The pass is removed: the framing the pipeline decided is the one that goes upstream.
 */
import http, { type IncomingHttpHeaders, type IncomingMessage, type ServerResponse } from 'node:http';
import https from 'node:https';
import httpProxy from 'http-proxy';
import { FramingError, PortcullisError, RegistryError, UpstreamTimeoutError, codeOf } from '../errors.js';
import { endAfterDrain, sendError } from '../http/reply.js';
import type { Logger } from '../ops/log.js';
import type { BodyLimit } from './body-limit.js';
import { dropResponseHopHeaders } from './headers.js';
import { relay } from './relay.js';
import { upstreamAgent } from './upstream-agent.js';
import { UpstreamPool } from './upstream-pool.js';

export interface ForwarderOptions {
  upstream: URL;
  /** PEM CA bundle trusted for an https upstream; null = system roots. */
  ca: Buffer | null;
  /** Upstream idle timeout (no bytes either way), in ms. 0 disables it. */
  timeoutMs: number;
  maxSockets: number;
  logger: Logger;
}

/** How to forward one request, decided by the pipeline. */
export interface ForwardPlan {
  /** The request body goes through this meter on its way (byte count, size limit, declared length); null when
   * the request has no body. */
  body: BodyLimit | null;
  /** Rewrites the registry's response headers in place, before they go to the client. */
  responseHeaders: (headers: IncomingHttpHeaders) => void;
  /**
   * Replaces a successful JSON answer: the body (at most MAX_TRANSFORMED_BYTES, parsed) in, the body to send
   * out; headers may be edited in place (a Link header, say). Other answers, and every blob, stream untouched.
   */
  transformJson?: (body: unknown, headers: IncomingHttpHeaders) => Promise<unknown>;
}

/** Why the proxy answered or cut a forwarded exchange itself: stable codes for the access log and metrics. */
export type ForwardError =
  | 'upstream_unavailable'
  | 'upstream_timeout'
  | 'upstream_upgrade'
  | 'upstream_protocol'
  | 'body_too_large'
  | 'bad_framing'
  | 'bad_upstream_json';

/** What happened on the registry side, filled in as the exchange goes. */
export interface UpstreamOutcome {
  status: number | null;
  /** Milliseconds from forwarding until the registry's response headers arrived; null if they never did. */
  ms: number | null;
  /** Response body bytes sent on to the client. */
  bytesOut: number;
  /** The registry's Docker-Content-Digest, when it sent one (for the audit trail). */
  digest: string | null;
  error: ForwardError | null;
  /** The proxy answered (or cut) the exchange itself: the client did not abort it. */
  settled: boolean;
}

/** A JSON answer larger than this is not transformed but refused (a catalog page of 10,000 names is ~0.5 MiB). */
export const MAX_TRANSFORMED_BYTES = 8 * 1024 * 1024;

interface State {
  plan: ForwardPlan;
  outcome: UpstreamOutcome;
  started: number;
  proxyReq: http.ClientRequest | null;
  proxyRes: IncomingMessage | null;
}

export class Forwarder {
  readonly agent: http.Agent;
  /** The raw path's connections; null for an https registry, which goes the general way only. */
  readonly #pool: UpstreamPool | null;
  readonly #proxy: httpProxy;
  readonly #options: ForwarderOptions;
  readonly #states = new WeakMap<IncomingMessage, State>();

  constructor(options: ForwarderOptions) {
    this.#options = options;
    this.agent = upstreamAgent(options.upstream, options.ca, options.maxSockets);
    this.#pool =
      options.upstream.protocol === 'http:'
        ? new UpstreamPool({
            host: options.upstream.hostname.replace(/^\[|\]$/g, ''),
            port: Number(options.upstream.port || 80),
            maxSockets: options.maxSockets,
            // As the agent's (upstream-agent.ts): well before the registry would close an idle connection.
            idleTimeoutMs: 30_000,
          })
        : null;
    this.#proxy = httpProxy.createProxyServer({
      target: options.upstream.origin,
      agent: this.agent,
      secure: true,
      xfwd: false, // it appends to client-sent X-Forwarded-*; the pipeline sets them instead
      changeOrigin: false, // Host stays as the client sent it
      ws: false,
      selfHandleResponse: true,
    });
    withoutPass(this.#proxy, 'deleteLength');
    this.#proxy.on('proxyReq', (proxyReq, req, res) => this.#onProxyReq(proxyReq, req, res));
    this.#proxy.on('proxyRes', (proxyRes, req, res) => this.#onProxyRes(proxyRes, req, res));
    // http-proxy rethrows 'error' when nobody listens; every call passes its own callback, this is a backstop.
    this.#proxy.on('error', (err) => options.logger.warn({ err: codeOf(err) }, 'upstream error outside an exchange'));
  }

  /**
   * Forwards `req`, whose headers the pipeline has already made the registry's, and resolves when the
   * response to the client is closed, whichever way. `outcome` is filled in as it goes.
   */
  forward(req: IncomingMessage, res: ServerResponse, plan: ForwardPlan, outcome: UpstreamOutcome): Promise<void> {
    if (this.#pool !== null && this.#takesRawPath(req, plan)) {
      const { timeoutMs, logger, upstream } = this.#options;
      return relay(req, res, plan, outcome, { pool: this.#pool, timeoutMs, logger, origin: upstream.origin });
    }
    const state: State = { plan, outcome, started: performance.now(), proxyReq: null, proxyRes: null };
    this.#states.set(req, state);
    return new Promise<void>((resolve) => {
      res.once('close', () => {
        // Only an exchange framed exactly both ways may leave its socket to the pool.
        const { proxyReq, proxyRes } = state;
        if (proxyReq && !(res.writableFinished && proxyReq.writableFinished && proxyRes?.complete)) proxyReq.destroy();
        resolve();
      });
      const meter = plan.body;
      if (meter) {
        meter.on('error', (err) => {
          if (err instanceof RegistryError) {
            outcome.error = 'body_too_large';
            this.#settle(state, req, res, err);
          } else {
            outcome.error = err instanceof FramingError ? 'bad_framing' : outcome.error;
            this.#settle(state, req, res, null);
          }
        });
        req.pipe(meter);
      }
      this.#proxy.web(req, res, meter ? { buffer: meter } : {}, (err: Error) => this.#onError(err, state, req, res));
    });
  }

  /**
   * A GET of the proxy's own to the registry, answered as parsed JSON (at most MAX_TRANSFORMED_BYTES): further
   * catalog pages. `headers` are the registry's headers of the request it serves (Host, forwarding headers).
   */
  getJson(path: string, headers: IncomingHttpHeaders): Promise<{ status: number; headers: IncomingHttpHeaders; body: unknown }> {
    const { upstream, timeoutMs } = this.#options;
    const request = upstream.protocol === 'https:' ? https.request : http.request;
    const sent: IncomingHttpHeaders = { ...headers };
    delete sent['content-length'];
    delete sent['transfer-encoding'];
    return new Promise((resolve, reject) => {
      const req = request(new URL(path, upstream), { method: 'GET', agent: this.agent, headers: sent }, (res) => {
        const chunks: Buffer[] = [];
        let size = 0;
        res.on('data', (c: Buffer) => {
          size += c.length;
          if (size > MAX_TRANSFORMED_BYTES) req.destroy(new RegistryError('UNAVAILABLE', `JSON answer over ${MAX_TRANSFORMED_BYTES} bytes`, { status: 502 }));
          else chunks.push(c);
        });
        res.on('end', () => {
          try {
            resolve({ status: res.statusCode ?? 0, headers: res.headers, body: JSON.parse(Buffer.concat(chunks).toString('utf8')) as unknown });
          } catch (err) {
            reject(err);
          }
        });
        res.on('error', reject);
      });
      if (timeoutMs > 0) req.setTimeout(timeoutMs, () => req.destroy(new UpstreamTimeoutError(`upstream idle for ${timeoutMs} ms`)));
      req.on('error', reject);
      req.end();
    });
  }

  close(): void {
    this.#proxy.close();
    this.agent.destroy();
    this.#pool?.close();
  }

  /** Pulls and pushes whose answer is passed on as it is: GET and HEAD without a body, POST, PUT and PATCH. */
  #takesRawPath(req: IncomingMessage, plan: ForwardPlan): boolean {
    if (plan.transformJson !== undefined) return false;
    switch (req.method) {
      case 'GET':
      case 'HEAD':
        return plan.body === null;
      case 'POST':
      case 'PUT':
      case 'PATCH':
        return true;
      default:
        return false;
    }
  }

  #onProxyReq(proxyReq: http.ClientRequest, req: IncomingMessage, res: ServerResponse): void {
    const state = this.#states.get(req);
    if (!state) return;
    state.proxyReq = proxyReq;
    if (state.outcome.settled) {
      proxyReq.destroy();
      return;
    }
    if (this.#options.timeoutMs > 0) {
      proxyReq.setTimeout(this.#options.timeoutMs, () => {
        // Once the response has begun, the timeout cuts the client's copy first: a response framed only by the
        // end of its connection (no Content-Length, not chunked) would otherwise end cleanly when the socket is
        // destroyed below, and the client would take a truncated answer for a whole one.
        if (state.proxyRes !== null) res.destroy();
        proxyReq.destroy(new UpstreamTimeoutError(`upstream idle for ${this.#options.timeoutMs} ms`));
      });
    }
    // With a listener, Node hands a 101 here instead of dropping it (and the client with it).
    proxyReq.on('upgrade', (upgradeRes: IncomingMessage, socket) => {
      socket.destroy();
      state.outcome.status = upgradeRes.statusCode ?? null;
      state.outcome.error = 'upstream_upgrade';
      this.#options.logger.warn({ status: upgradeRes.statusCode }, 'upstream switched protocols on a plain request');
      this.#settle(state, req, res, new RegistryError('UNAVAILABLE', 'upstream registry switched protocols on a plain request', { status: 502 }));
    });
  }

  #onProxyRes(proxyRes: IncomingMessage, req: IncomingMessage, res: ServerResponse): void {
    const state = this.#states.get(req);
    if (!state || state.outcome.settled) {
      proxyRes.resume();
      return;
    }
    state.proxyRes = proxyRes;
    state.outcome.status = proxyRes.statusCode ?? null;
    state.outcome.ms = performance.now() - state.started;
    const headers = proxyRes.headers;
    const digest = headers['docker-content-digest'];
    if (typeof digest === 'string') state.outcome.digest = digest;
    dropResponseHopHeaders(headers);
    // The registry's framing is for its connection to us; Node frames ours from Content-Length or chunks it.
    delete headers['transfer-encoding'];
    state.plan.responseHeaders(headers);
    // A registry that answers before the whole body arrived (an early 4xx to an upload) leaves an unread body:
    // this connection ends with this answer. Otherwise keep-alive is Node's decision from the request.
    const early = !req.complete && state.plan.body !== null;
    headers.connection = early || !res.shouldKeepAlive ? 'close' : 'keep-alive';
    proxyRes.once('close', () => {
      // The upstream went away mid-body: without this the client waits for bytes that never come.
      if (!proxyRes.complete && !res.writableFinished) res.destroy();
    });
    const transform = state.plan.transformJson;
    if (transform && proxyRes.statusCode === 200 && /^application\/json\b/i.test(String(headers['content-type'] ?? ''))) {
      void this.#transform(proxyRes, res, state, transform);
      return;
    }
    res.writeHead(proxyRes.statusCode ?? 502, proxyRes.statusMessage, headers);
    proxyRes.on('data', (chunk: Buffer) => {
      state.outcome.bytesOut += chunk.length;
    });
    proxyRes.pipe(res, { end: false });
    proxyRes.once('end', () => {
      if (early) endAfterDrain(res);
      else res.end();
    });
  }

  async #transform(
    proxyRes: IncomingMessage,
    res: ServerResponse,
    state: State,
    transform: NonNullable<ForwardPlan['transformJson']>,
  ): Promise<void> {
    const chunks: Buffer[] = [];
    let size = 0;
    try {
      for await (const chunk of proxyRes as AsyncIterable<Buffer>) {
        size += chunk.length;
        if (size > MAX_TRANSFORMED_BYTES) throw new RegistryError('UNAVAILABLE', `JSON answer over ${MAX_TRANSFORMED_BYTES} bytes`);
        chunks.push(chunk);
      }
      const headers = proxyRes.headers;
      const out = JSON.stringify(await transform(JSON.parse(Buffer.concat(chunks).toString('utf8')) as unknown, headers));
      headers['content-length'] = String(Buffer.byteLength(out));
      res.writeHead(200, proxyRes.statusMessage, headers);
      state.outcome.bytesOut = Buffer.byteLength(out);
      res.end(out);
    } catch (err) {
      if (res.headersSent || res.destroyed) return;
      state.outcome.error = 'bad_upstream_json';
      this.#options.logger.warn({ err: codeOf(err) }, 'upstream JSON answer could not be transformed');
      state.outcome.settled = true;
      proxyRes.destroy();
      sendError(res, new RegistryError('UNAVAILABLE', 'upstream registry answer could not be read', { status: 502 }));
    }
  }

  #onError(err: Error, state: State, req: IncomingMessage, res: ServerResponse): void {
    const { outcome } = state;
    if (outcome.settled) return;
    if (outcome.status !== null) {
      // The response has begun: a write error on the request side (the registry answered a big upload
      // early and stopped reading: #1677) must not replace or cut it. If the response itself breaks,
      // its 'close' handler in #onProxyRes cuts the client.
      this.#options.logger.debug({ err: codeOf(err) }, 'upstream request error after the response began');
      return;
    }
    const timeout = err instanceof UpstreamTimeoutError;
    if (res.writableEnded || (!timeout && req.socket.destroyed && codeOf(err) === 'ECONNRESET')) return; // client left
    outcome.error = timeout ? 'upstream_timeout' : 'upstream_unavailable';
    this.#options.logger.warn(
      { err: codeOf(err), upstream: this.#options.upstream.origin, ...certificateProblem(err) },
      timeout ? 'upstream timed out' : 'upstream unavailable',
    );
    const answer = timeout
      ? new RegistryError('UNAVAILABLE', 'upstream registry did not answer in time', { status: 504 })
      : new RegistryError('UNAVAILABLE', 'upstream registry unavailable', { status: 502, detail: { reason: codeOf(err) } });
    this.#settle(state, req, res, answer);
  }

  /** Answer (or cut) the exchange ourselves, once, and stop talking to the upstream. */
  #settle(state: State, req: IncomingMessage, res: ServerResponse, answer: RegistryError | null): void {
    if (state.outcome.settled) return;
    state.outcome.settled = true;
    state.proxyReq?.destroy();
    if (state.plan.body) req.unpipe(state.plan.body);
    if (answer === null || res.headersSent) {
      res.destroy();
      return;
    }
    sendError(res, answer);
  }
}

/** OpenSSL's certificate verification codes as Node reports them, and Node's own name check. */
const CERTIFICATE_CODE = /^(?:ERR_TLS_CERT_ALTNAME_INVALID|UNABLE_TO_\w+|DEPTH_ZERO_SELF_SIGNED_CERT|SELF_SIGNED_CERT_IN_CHAIN|CERT_\w+|INVALID_CA|INVALID_PURPOSE|PATH_LENGTH_EXCEEDED|HOSTNAME_MISMATCH|ERROR_IN_CERT_\w+)$/;

/**
 * An https registry whose certificate the proxy refused: its code alone (SELF_SIGNED_CERT_IN_CHAIN) does not
 * tell an operator what to change, so the log line says it in words, with the setting to look at.
 */
export function certificateProblem(err: unknown): { reason: string; hint: string } | null {
  const code = codeOf(err);
  if (!(err instanceof Error) || !CERTIFICATE_CODE.test(code)) return null;
  const hint =
    code === 'ERR_TLS_CERT_ALTNAME_INVALID' || code === 'HOSTNAME_MISMATCH'
      ? "the registry's certificate does not name the host of upstream.url"
      : code === 'CERT_HAS_EXPIRED' || code === 'CERT_NOT_YET_VALID'
        ? "the registry's certificate is outside its validity period"
        : "the registry's certificate is not signed by a CA the proxy trusts: set upstream.ca to the CA that signed it";
  return { reason: `registry certificate refused: ${err.message}`, hint };
}

/**
 * Removes one of http-proxy's request passes. `webPasses` is the list its `before`/`after` methods edit; if a
 * version lacks it or the pass, fail at start-up rather than forward with the pass in place.
 */
function withoutPass(proxy: httpProxy, name: string): void {
  const holder = proxy as unknown as { webPasses?: Array<{ name: string }> };
  const passes = holder.webPasses;
  const index = Array.isArray(passes) ? passes.findIndex((p) => p.name === name) : -1;
  if (!passes || index === -1) {
    throw new PortcullisError('PCL_ERR_DEPENDENCY', `http-proxy has no "${name}" web pass to remove: review src/proxy/forwarder.ts`);
  }
  passes.splice(index, 1);
}
