/**
 * Forwards one authenticated request to the registry and streams the answer back.
 *
 * http-proxy 1.18 does the header copying and piping; everything it gets wrong is done here instead
 * (node-http-proxy issues cited inline):
 * - client aborts: it listens for `req 'aborted'`, which is unreliable since Node 15 (#1559), so upstream
 *   sockets leaked. We destroy the upstream request when the response closes unfinished, and the response
 *   when the upstream response closes early (with Content-Length the client would hang otherwise).
 * - timeouts: its `proxyTimeout` surfaces as a bare ECONNRESET (#1331); ours is tagged and answered 504.
 * - keep-alive: without an `agent` it sends `Connection: close` upstream; we pass a pooled agent.
 * - Location: its autoRewrite skips 202 (#914); we rewrite in `proxyRes` (see headers.ts).
 * - pooling: Node's agent returns a socket to the pool once the response ended and the request finished.
 *   An exchange that ends any other way (client gone, body cut at the limit, an early answer while the body
 *   was still coming) leaves bytes on that socket the next request would be read with: it is destroyed.
 * - upgrades: a `101` to a plain request would leave the client waiting forever (Node hands the socket to
 *   an 'upgrade' listener or silently drops it); we answer 502.
 * - framing: its `deleteLength` pass turns a DELETE or OPTIONS without Content-Length into `Content-Length: 0`
 *   and drops Transfer-Encoding, so a chunked body would follow unframed, to be read by the registry as a
 *   further request. The pass is removed: the framing the pipeline decided is the one that goes upstream.
 */
import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import httpProxy from 'http-proxy';
import { BodyLimit, FramingError } from './body-limit.js';
import { RegistryError, hasErrno } from '../errors.js';
import { API_VERSION, API_VERSION_HEADER, dropResponseHopHeaders, rewriteLocation, type Framing } from './headers.js';
import { closeAfterResponse, sendError } from '../http/reply.js';
import { upstreamAgent } from './upstream-agent.js';

export interface ForwarderOptions {
  upstream: URL;
  /** PEM CA bundle trusted for an https upstream; null = system roots. */
  ca: Buffer | null;
  /** Upstream idle timeout (no bytes either way), in ms. 0 disables it. */
  timeoutMs: number;
  maxSockets: number;
  /** Streaming body limit in bytes; 0 = unlimited. */
  maxBodySize: number;
  /** Origins the registry may put in absolute Locations (its own address, `http.host`). */
  internalOrigins: readonly string[];
}

/** What happened to one exchange, for the access log and metrics. */
export interface Exchange {
  upstreamStatus: number | null;
  /** Milliseconds from forwarding until the registry's response headers arrived; null if they never did. */
  upstreamMs: number | null;
  bytesIn: number;
  bytesOut: number;
  /** The client went away before the response was complete. */
  aborted: boolean;
  /** Why the proxy answered or cut the exchange itself, if it did: a stable code. */
  error: 'upstream_unavailable' | 'upstream_timeout' | 'upstream_upgrade' | 'body_too_large' | 'bad_framing' | null;
}

interface State {
  exchange: Exchange;
  clientOrigin: string;
  started: number;
  proxyReq: http.ClientRequest | null;
  proxyRes: IncomingMessage | null;
  limiter: BodyLimit | null;
  /** The proxy has already answered (or cut) this exchange; later upstream errors are noise. */
  settled: boolean;
}

class UpstreamTimeoutError extends Error {
  readonly code = 'PCL_UPSTREAM_TIMEOUT';
}

export class Forwarder {
  readonly agent: http.Agent;
  readonly #proxy: httpProxy;
  readonly #options: ForwarderOptions;
  readonly #states = new WeakMap<IncomingMessage, State>();

  constructor(options: ForwarderOptions) {
    this.#options = options;
    this.agent = upstreamAgent(options.upstream, options.ca, options.maxSockets);
    this.#proxy = httpProxy.createProxyServer({
      target: options.upstream.origin,
      agent: this.agent,
      secure: true,
      xfwd: false, // it appends to client-sent X-Forwarded-*; headers.ts sets them instead
      changeOrigin: false, // Host stays as the client sent it
      ws: false,
    });
    withoutPass(this.#proxy, 'deleteLength');
    this.#proxy.on('proxyReq', (proxyReq, req, res) => this.#onProxyReq(proxyReq, req, res));
    this.#proxy.on('proxyRes', (proxyRes, req, res) => this.#onProxyRes(proxyRes, req, res));
    // http-proxy rethrows 'error' when nobody listens; every call passes its own callback, this is a backstop.
    this.#proxy.on('error', () => {});
  }

  /**
   * Forwards `req` (headers already prepared for the registry, `framing` decided from the client's request
   * before that) and resolves when the exchange is over, either way. `clientOrigin` is where Locations
   * pointing at the registry are sent instead.
   */
  forward(req: IncomingMessage, res: ServerResponse, clientOrigin: string, framing: Framing): Promise<Exchange> {
    const exchange: Exchange = { upstreamStatus: null, upstreamMs: null, bytesIn: 0, bytesOut: 0, aborted: false, error: null };
    const state: State = { exchange, clientOrigin, started: performance.now(), proxyReq: null, proxyRes: null, limiter: null, settled: false };
    this.#states.set(req, state);

    return new Promise<Exchange>((resolve) => {
      res.once('close', () => {
        if (!res.writableFinished) exchange.aborted = !state.settled;
        // Only an exchange framed exactly both ways may leave its socket to the pool.
        const { proxyReq, proxyRes } = state;
        if (proxyReq && !(res.writableFinished && proxyReq.writableFinished && proxyRes?.complete)) proxyReq.destroy();
        if (state.limiter) exchange.bytesIn = state.limiter.bytes;
        resolve(exchange);
      });

      let buffer: BodyLimit | undefined;
      if (framing.kind === 'chunked' || (framing.kind === 'length' && framing.length > 0)) {
        const limiter = new BodyLimit(this.#options.maxBodySize, framing.kind === 'length' ? framing.length : null);
        state.limiter = limiter;
        limiter.on('error', (err) => {
          if (err instanceof RegistryError) {
            exchange.error = 'body_too_large';
            this.#settle(state, req, res, err);
          } else {
            exchange.error = err instanceof FramingError ? 'bad_framing' : exchange.error;
            this.#settle(state, req, res, null);
          }
        });
        req.pipe(limiter);
        buffer = limiter;
      }
      this.#proxy.web(req, res, buffer ? { buffer } : {}, (err: Error) => this.#onError(err, state, req, res));
    });
  }

  close(): void {
    this.#proxy.close();
    this.agent.destroy();
  }

  #onProxyReq(proxyReq: http.ClientRequest, req: IncomingMessage, res: ServerResponse): void {
    const state = this.#states.get(req);
    if (!state) return;
    state.proxyReq = proxyReq;
    if (state.settled) {
      proxyReq.destroy();
      return;
    }
    if (this.#options.timeoutMs > 0) {
      proxyReq.setTimeout(this.#options.timeoutMs, () => {
        proxyReq.destroy(new UpstreamTimeoutError(`upstream idle for ${this.#options.timeoutMs} ms`));
      });
    }
    // With a listener, Node hands a 101 here instead of dropping it (and the client with it).
    proxyReq.on('upgrade', (upgradeRes: IncomingMessage, socket) => {
      socket.destroy();
      state.exchange.upstreamStatus = upgradeRes.statusCode ?? null;
      state.exchange.error = 'upstream_upgrade';
      this.#settle(state, req, res, new RegistryError('UNAVAILABLE', 'upstream registry switched protocols on a plain request', { status: 502 }));
    });
  }

  #onProxyRes(proxyRes: IncomingMessage, req: IncomingMessage, res: ServerResponse): void {
    const state = this.#states.get(req);
    if (!state) return;
    state.proxyRes = proxyRes;
    state.exchange.upstreamStatus = proxyRes.statusCode ?? null;
    state.exchange.upstreamMs = performance.now() - state.started;
    const headers = proxyRes.headers;
    dropResponseHopHeaders(headers);
    if (typeof headers.location === 'string') {
      headers.location = rewriteLocation(headers.location, this.#options.internalOrigins, state.clientOrigin);
    }
    headers[API_VERSION_HEADER] ??= API_VERSION;
    // Our decision, not the client's raw header: Node decided keep-alive from the request already, and a
    // registry that answers before the body is read (an early 4xx) leaves an unread body: close then.
    if (!req.complete && state.limiter) {
      headers.connection = 'close';
      closeAfterResponse(res); // the registry refused early: deliver its answer, then let the client stop
    } else {
      headers.connection = res.shouldKeepAlive ? 'keep-alive' : 'close';
    }
    proxyRes.on('data', (chunk: Buffer) => {
      state.exchange.bytesOut += chunk.length;
    });
    proxyRes.once('close', () => {
      // The upstream went away mid-body: without this the client waits for bytes that never come.
      if (!proxyRes.complete && !res.writableFinished) res.destroy();
    });
  }

  #onError(err: Error, state: State, req: IncomingMessage, res: ServerResponse): void {
    if (state.settled) return;
    if (state.exchange.upstreamStatus !== null) {
      // The response has begun: a write error on the request side (the registry answered a big upload
      // early and stopped reading: #1677) must not replace or cut it. If the response itself breaks,
      // its 'close' handler in #onProxyRes cuts the client.
      return;
    }
    const timeout = err instanceof UpstreamTimeoutError;
    if (res.writableEnded || (!timeout && req.socket.destroyed && hasErrno(err, 'ECONNRESET'))) return; // client left
    state.exchange.error = timeout ? 'upstream_timeout' : 'upstream_unavailable';
    const answer = timeout
      ? new RegistryError('UNAVAILABLE', 'upstream registry did not answer in time', { status: 504 })
      : new RegistryError('UNAVAILABLE', 'upstream registry unavailable', {
          status: 502,
          detail: { reason: errorCode(err) },
        });
    this.#settle(state, req, res, answer);
  }

  /** Answer (or cut) the exchange ourselves, once, and stop talking to the upstream. */
  #settle(state: State, req: IncomingMessage, res: ServerResponse, answer: RegistryError | null): void {
    if (state.settled) return;
    state.settled = true;
    state.proxyReq?.destroy();
    if (state.limiter) req.unpipe(state.limiter);
    if (answer === null || res.headersSent) {
      res.destroy();
      return;
    }
    sendError(res, answer);
  }
}


function errorCode(err: Error): string {
  return typeof (err as NodeJS.ErrnoException).code === 'string' ? (err as NodeJS.ErrnoException).code! : err.message;
}

/**
 * Removes one of http-proxy's request passes. `webPasses` is the list its `before`/`after` methods edit; if a
 * version lacks it or the pass, fail at start-up rather than forward with the pass in place.
 */
function withoutPass(proxy: httpProxy, name: string): void {
  const holder = proxy as unknown as { webPasses?: Array<{ name: string }> };
  const passes = holder.webPasses;
  const index = Array.isArray(passes) ? passes.findIndex((p) => p.name === name) : -1;
  if (!passes || index === -1) throw new Error(`http-proxy has no "${name}" web pass to remove: review src/proxy/forwarder.ts`);
  passes.splice(index, 1);
}
