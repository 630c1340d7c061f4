/**
 * Responses the proxy makes itself. Every one carries registry JSON and the API version header
 * (clients parse errors only as `application/json`; the nginx recipe adds the header with `always`).
 */
import type { ServerResponse } from 'node:http';
import { RegistryError } from '../errors.js';
import { API_VERSION, API_VERSION_HEADER } from '../proxy/headers.js';

export interface ReplyOptions {
  /** Close the connection after this response even if the request was read whole (e.g. a bad request line). */
  close?: boolean;
}

/** How long a refused client may keep sending before we stop listening (nginx lingers 5 s, Go 0.5 s). */
const LINGER_MS = 5000;

export function sendError(res: ServerResponse, err: RegistryError, opts: ReplyOptions = {}): void {
  if (res.headersSent) {
    // Too late for a status line: the only honest signal left is a broken connection.
    res.destroy(err);
    return;
  }
  const body = JSON.stringify(err.body());
  res.statusCode = err.status;
  res.setHeader('Content-Type', 'application/json; charset=utf-8');
  res.setHeader('Content-Length', Buffer.byteLength(body));
  res.setHeader(API_VERSION_HEADER, API_VERSION);
  for (const [k, v] of Object.entries(err.headers)) res.setHeader(k, v);
  // A body we did not read (refused upload) is not drained to reuse the connection: close it, gently.
  const unread = !res.req.complete;
  if (opts.close || unread) res.setHeader('Connection', 'close');
  if (!unread) {
    res.end(body);
    return;
  }
  res.write(body);
  endAfterDrain(res);
}

/**
 * Lingering close (RFC 9112 9.6) for a response complete before its request body was read.
 *
 * With `Connection: close`, Node closes the socket as soon as the response ends. The client is typically
 * still sending its layer; its next bytes then meet a TCP reset, and the reset can overtake our answer in
 * the client's receive buffer: docker and skopeo report "broken pipe" instead of our 413 `denied`, and retry.
 * So the answer is written whole but the response not ended yet; what the client still sends is read and
 * discarded, and the response ends (and Node closes the connection) when the body is over, the client
 * goes away, or after LINGER_MS. Call with everything written except the end.
 */
export function endAfterDrain(res: ServerResponse): void {
  const req = res.req;
  if (req.complete) {
    res.end();
    return;
  }
  // Whatever is written goes out now, and an empty answer's head too: the client must see it while we wait.
  res.flushHeaders();
  let ended = false;
  const end = (): void => {
    if (ended) return;
    ended = true;
    clearTimeout(timer);
    res.end();
  };
  const timer = setTimeout(end, LINGER_MS);
  timer.unref();
  req.unpipe();
  req.once('end', end);
  req.once('close', end);
  req.resume();
}

/** The 401 every unauthenticated request gets. docker and podman only send credentials for schemes learned
 * from this challenge on the /v2/ ping, containerd from any 401: so every 401 carries it. */
export function unauthorized(realm: string, message = 'authentication required'): RegistryError {
  return new RegistryError('UNAUTHORIZED', message, {
    headers: { 'WWW-Authenticate': `Basic realm="${realm}"` },
  });
}
