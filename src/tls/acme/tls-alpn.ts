/**
 * tls-alpn-01 on the proxy's own TLS port (RFC 8737): a connection whose ClientHello offers ALPN
 * `acme-tls/1` for a name with a pending challenge is handed to a small responder that presents the
 * challenge certificate; every other connection goes to the server as before.
 *
 * The split happens on the raw socket, before TLS (see client-hello.ts for why SNICallback and
 * ALPNCallback cannot do it). The peeked bytes are pushed back with `unshift`; Node's TLSSocket feeds
 * data already buffered on the socket into the handshake, so the server sees an untouched stream.
 * While no challenge is pending (nearly always) connections are handed over directly, without a peek.
 */
import type { Socket } from 'node:net';
import tls from 'node:tls';
import { AcmeError } from '../../errors.js';
import { MAX_CLIENT_HELLO, parseClientHello, type ClientHello } from './client-hello.js';
import type { TlsAlpnChallenges } from './challenges.js';

export const ACME_TLS_ALPN = 'acme-tls/1';

export interface TlsAlpnRouterOptions {
  /** Give up reading a ClientHello after this long (only while a challenge is pending). Default 10 s. */
  peekTimeoutMs?: number;
  /** Called for each validation connection answered, e.g. for a debug log. */
  onValidation?: (hello: ClientHello, socket: tls.TLSSocket) => void;
}

type ConnectionListener = (socket: Socket) => void;

/**
 * Route tls-alpn-01 validations arriving on `server` (an https.Server or tls.Server, listening or not yet)
 * to the challenge certificates in `challenges`. Returns a function that restores the server as it was.
 */
export function routeTlsAlpnChallenges(server: tls.Server, challenges: TlsAlpnChallenges, opts: TlsAlpnRouterOptions = {}): () => void {
  const peekTimeoutMs = opts.peekTimeoutMs ?? 10_000;
  const responder = tls.createServer({
    ALPNProtocols: [ACME_TLS_ALPN],
    handshakeTimeout: peekTimeoutMs,
    SNICallback: (name, cb) => {
      const context = challenges.context(name);
      // The challenge may have been withdrawn between the peek and here: fail the handshake.
      if (context) cb(null, context);
      else cb(new AcmeError(`no tls-alpn-01 challenge for ${name}`));
    },
  });
  responder.on('secureConnection', (socket: tls.TLSSocket) => {
    const hello: ClientHello = { serverName: socket.servername || null, alpn: socket.alpnProtocol ? [socket.alpnProtocol] : [] };
    opts.onValidation?.(hello, socket);
    // RFC 8737 section 3: once the handshake is complete, no application data is exchanged.
    socket.end();
  });
  responder.on('tlsClientError', () => {});

  const original = server.listeners('connection') as ConnectionListener[];
  const handOver = (socket: Socket): void => {
    for (const listener of original) listener.call(server, socket);
  };
  const route: ConnectionListener = (socket) => {
    if (challenges.size === 0) return handOver(socket);
    void peek(socket, peekTimeoutMs).then((hello) => {
      if (socket.destroyed) return;
      const name = hello?.serverName;
      if (hello && name && hello.alpn.includes(ACME_TLS_ALPN) && challenges.context(name)) responder.emit('connection', socket);
      else handOver(socket);
    });
  };
  server.removeAllListeners('connection');
  server.on('connection', route);
  return () => {
    server.removeListener('connection', route);
    for (const listener of original) server.on('connection', listener);
    responder.close();
  };
}

/** Read until a whole ClientHello is in (or it is clearly not one), then push the bytes back. */
function peek(socket: Socket, timeoutMs: number): Promise<ClientHello | null> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const finish = (hello: ClientHello | null): void => {
      clearTimeout(timer);
      socket.removeListener('data', onData);
      socket.removeListener('end', onEnd);
      socket.removeListener('error', onEnd);
      socket.pause();
      if (size > 0) socket.unshift(Buffer.concat(chunks, size));
      resolve(hello);
    };
    const onData = (chunk: Buffer): void => {
      chunks.push(chunk);
      size += chunk.length;
      const result = parseClientHello(Buffer.concat(chunks, size));
      if (result.kind === 'incomplete' && size < MAX_CLIENT_HELLO) return;
      finish(result.kind === 'hello' ? result.hello : null);
    };
    const onEnd = (): void => finish(null);
    const timer = setTimeout(() => {
      finish(null);
      socket.destroy();
    }, timeoutMs);
    timer.unref();
    socket.on('data', onData);
    socket.once('end', onEnd);
    socket.once('error', onEnd);
  });
}
