/**
 * The listening server: TLS 1.2+ and HTTP/1.1 only, with the timeouts that make slow clients cheap.
 *
 * Every connection has a deadline until it is useful: the TLS handshake and then the request headers must
 * each arrive within `limits.headersTimeout`. A connection that fails either is destroyed, not ended: a TLS
 * socket whose handshake never finished cannot carry an HTTP answer, and `end()` on it would only wait for a
 * peer that may never close (descriptors then pile up in CLOSE-WAIT).
 *
 * With tls.acme and tls-alpn-01, validation connections from the CA arrive on this same port: they are told
 * apart by their ClientHello before TLS starts (tls/acme/tls-alpn.ts) and never reach the HTTP server.
 */
import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import https from 'node:https';
import type { Socket } from 'node:net';
import type { TLSSocket } from 'node:tls';
import type { Config } from '../config/schema.js';
import { RegistryError } from '../errors.js';
import type { Metrics } from '../ops/metrics.js';
import type { TlsAlpnChallenges } from '../tls/acme/challenges.js';
import { routeTlsAlpnChallenges, type TlsAlpnRouterOptions } from '../tls/acme/tls-alpn.js';
import { API_VERSION, API_VERSION_HEADER } from '../proxy/headers.js';
import { secureContextOptions, type TlsMaterial } from '../tls/material.js';

/** How long a connection refused for malformed HTTP may stay open for the client to read the answer. */
const ANSWERED_ERROR_LINGER_MS = 2000;

export interface ServerOptions {
  /** tls-alpn-01 (RFC 8737): answer validations for the names in this store on the TLS port. */
  tlsAlpn?: { challenges: TlsAlpnChallenges; onValidation?: TlsAlpnRouterOptions['onValidation'] };
}

/** The listening server: TLS 1.2+ and HTTP/1.1 only (Go push clients disable HTTP/2 for uploads anyway). */
export function createServer(
  config: Config,
  tlsMaterial: TlsMaterial | null,
  handler: (req: IncomingMessage, res: ServerResponse) => void,
  metrics: Metrics,
  opts: ServerOptions = {},
): http.Server | https.Server {
  const common: http.ServerOptions = {
    // Node's 300 s default answers 408 in the middle of a multi-gigabyte upload.
    requestTimeout: 0,
    // Slow headers are still cut (slowloris). Node enforces this only when it sweeps its connections,
    // every 30 s by default: sweep every second so the limit means what it says.
    headersTimeout: config.limits.headersTimeoutMs,
    connectionsCheckingInterval: 1000,
    keepAliveTimeout: config.limits.keepAliveTimeoutMs,
    maxHeaderSize: config.limits.maxHeaderSize,
    // Node answers a missing Host itself, with an empty 400; the pipeline refuses it in registry JSON instead.
    requireHostHeader: false,
  };
  const server = tlsMaterial
    ? https.createServer({
        ...common,
        ...secureContextOptions(tlsMaterial),
        minVersion: config.tls?.minVersion ?? 'TLSv1.2',
        ALPNProtocols: ['http/1.1'],
        // Node's default is 120 s: a connection that sends nothing should cost no more than slow headers do.
        handshakeTimeout: config.limits.headersTimeoutMs,
        // With a client CA every client is asked for a certificate; `require` ends the handshake of one
        // without a certificate from that CA, `optional` lets it in without (authentication decides).
        ...(tlsMaterial.clientCA ? { requestCert: true, rejectUnauthorized: config.tls?.clientAuth !== 'optional' } : {}),
      })
    : http.createServer(common);
  if (opts.tlsAlpn && server instanceof https.Server) {
    // Installed first, while Node's own TLS connection listener is the only one: the route wraps it.
    routeTlsAlpnChallenges(server, opts.tlsAlpn.challenges, {
      peekTimeoutMs: config.limits.headersTimeoutMs,
      ...(opts.tlsAlpn.onValidation ? { onValidation: opts.tlsAlpn.onValidation } : {}),
    });
  }
  server.timeout = 0;
  // Responses begun on each connection and not yet closed, so a parse error found later (in a request body,
  // or in a pipelined request) never writes a status line into the middle of, or after, one of them.
  const responses = new WeakMap<Socket, Set<ServerResponse>>();
  // The last request of each connection, settled when its response closes.
  const previous = new WeakMap<Socket, Promise<void>>();
  const track = (req: IncomingMessage, res: ServerResponse): void => {
    const { socket } = req;
    const open = responses.get(socket) ?? new Set<ServerResponse>();
    responses.set(socket, open);
    open.add(res);
    const closed = new Promise<void>((resolve) => res.once('close', () => resolve()));
    res.once('close', () => open.delete(res));
    const before = previous.get(socket);
    previous.set(socket, closed);
    if (before === undefined) return handler(req, res);
    // A pipelined request. Node parses it, and hands it over, while the one before it is still being answered;
    // handled at once, it would reach the registry even when that answer ends the connection (a refusal with
    // `Connection: close`), and RFC 9112 9.6 says a server must not process any request after such an answer.
    // So requests on one connection are handled one at a time, and not at all once the connection is ending.
    void before.then(() => {
      if (socket.writableEnded || socket.destroyed || res.destroyed) return;
      handler(req, res);
    });
  };
  server.on('request', track);
  server.on('checkContinue', track);
  // Any other `Expect` Node would answer with an empty 417 itself; the pipeline answers it in registry JSON.
  server.on('checkExpectation', track);
  const secured = new WeakSet<Socket>();
  server.on('secureConnection', (socket: TLSSocket) => {
    secured.add(socket);
    // Node lets a client renegotiate (tls.CLIENT_RENEG_LIMIT times per 10 minutes): each one is a full handshake
    // the server pays for at the client's will, and HTTP/1.1 has no use for it. Refused outright, as nginx does;
    // the attempt ends the connection (ERR_TLS_RENEGOTIATION_DISABLED, below).
    socket.disableRenegotiation();
  });
  server.on('tlsClientError', (_err: Error, socket: Socket) => {
    metrics.tlsErrors.inc();
    socket.destroy();
  });
  server.on('clientError', (err: NodeJS.ErrnoException, socket: Socket) => {
    // Handshake timeouts and failures arrive here too, on a socket with no TLS session to answer on; so does a
    // refused renegotiation, on a session that can no longer be trusted to carry one.
    if ((tlsMaterial && !secured.has(socket)) || !socket.writable || err.code === 'ECONNRESET' || err.code === 'ERR_TLS_RENEGOTIATION_DISABLED') {
      return socket.destroy();
    }
    // Malformed HTTP never reaches the handler; answer it in registry JSON like everything else, then close even
    // if the client never reads the answer nor closes its side (the server allows half-open sockets). But if an
    // answer has already begun on this connection (the error is in the body of a request being answered, e.g.
    // a bad chunk size after an early answer), a second status line would be read by the client as the answer
    // to its next request: send nothing more, just close once what was written has gone out.
    const begun = [...(responses.get(socket) ?? [])].some((res) => res.headersSent);
    if (begun) socket.end();
    else socket.end(malformedAnswer(err.code));
    const timer = setTimeout(() => socket.destroy(), ANSWERED_ERROR_LINGER_MS);
    timer.unref();
    socket.once('close', () => clearTimeout(timer));
  });
  return server;
}

/** The raw answer to a request Node's parser refused: what Node would answer, as registry JSON. */
function malformedAnswer(code: string | undefined): string {
  const [status, message] =
    code === 'HPE_HEADER_OVERFLOW'
      ? [431, 'request headers too large']
      : code === 'ERR_HTTP_REQUEST_TIMEOUT'
        ? [408, 'request headers not received in time']
        : [400, 'malformed HTTP request'];
  const body = JSON.stringify(new RegistryError('UNSUPPORTED', message, { status }).body());
  return [
    `HTTP/1.1 ${status} ${http.STATUS_CODES[status]}`,
    'Content-Type: application/json; charset=utf-8',
    `${API_VERSION_HEADER}: ${API_VERSION}`,
    'Connection: close',
    `Content-Length: ${Buffer.byteLength(body)}`,
    '',
    body,
  ].join('\r\n');
}
