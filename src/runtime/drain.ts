/**
 * Graceful shutdown of the client-facing server: stop accepting, let in-flight transfers finish within a
 * grace period, then close what is left.
 *
 * Why not just `server.close()` plus periodic `closeIdleConnections()`: Node counts a connection whose
 * response has ended but is not yet flushed as idle, so that cuts a slow client's download short. Instead
 * we track the responses of each connection: requests not yet answered get `Connection: close`, and a
 * keep-alive connection is ended once its last response is over (flushed: 'close' follows 'finish').
 */
import type http from 'node:http';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';

export class Drain {
  #draining = false;
  /** Responses being served, by connection. */
  readonly #open = new Map<Socket, Set<ServerResponse>>();
  /** Every accepted TCP connection, including those still in their TLS handshake (no HTTP yet). */
  readonly #sockets = new Set<Socket>();

  /** Follow the server's raw connections, so the end of the grace period can close every one of them. */
  watch(server: http.Server): void {
    server.on('connection', (socket: Socket) => {
      this.#sockets.add(socket);
      socket.once('close', () => this.#sockets.delete(socket));
    });
  }

  get draining(): boolean {
    return this.#draining;
  }

  /** Wraps a request handler so its responses are tracked. */
  track(handler: (req: IncomingMessage, res: ServerResponse) => void): (req: IncomingMessage, res: ServerResponse) => void {
    return (req, res) => {
      const socket = req.socket;
      let responses = this.#open.get(socket);
      if (!responses) this.#open.set(socket, (responses = new Set()));
      const mine = responses;
      mine.add(res);
      res.once('close', () => {
        mine.delete(res);
        if (mine.size > 0) return;
        if (this.#open.get(socket) === mine) this.#open.delete(socket);
        if (this.#draining) socket.end(() => socket.destroy());
      });
      handler(req, res);
    };
  }

  /**
   * Stop accepting and resolve once every connection is gone, closing the rest after `graceMs`.
   * Returns the number of requests in flight when it began.
   */
  start(server: http.Server, graceMs: number, onForce: () => void): { inFlight: number; closed: Promise<void> } {
    this.#draining = true;
    let inFlight = 0;
    for (const responses of this.#open.values()) {
      for (const res of responses) {
        inFlight += 1;
        // Not answered yet: answer with `Connection: close`, so the client does not send its next request
        // into a connection that is about to close.
        if (!res.headersSent) res.shouldKeepAlive = false;
      }
    }
    const closed = new Promise<void>((resolve) => {
      const force = setTimeout(() => {
        onForce();
        server.closeAllConnections();
        // closeAllConnections knows only HTTP connections; a socket still in its TLS handshake would keep
        // close() waiting for its own timeout.
        for (const socket of this.#sockets) socket.destroy();
      }, graceMs);
      // close() stops accepting and closes the connections idle now; busy ones end with their response.
      server.close(() => {
        clearTimeout(force);
        resolve();
      });
    });
    return { inFlight, closed };
  }
}
