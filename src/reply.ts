/**
 * Responses the proxy makes itself. Every one carries registry JSON and the API version header
 * (clients parse errors only as `application/json`; the nginx recipe adds the header with `always`).
 */
import type { ServerResponse } from 'node:http';
import { RegistryError } from './errors.js';
import { API_VERSION, API_VERSION_HEADER } from './headers.js';

export interface ReplyOptions {
  /** Close the connection after this response: used when an unread request body must not be drained. */
  close?: boolean;
}

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
  if (opts.close) res.setHeader('Connection', 'close');
  res.end(body);
}

/** The 401 every unauthenticated request gets. docker and podman only send credentials for schemes learned
 * from this challenge on the /v2/ ping, containerd from any 401: so every 401 carries it. */
export function unauthorized(realm: string, message = 'authentication required'): RegistryError {
  return new RegistryError('UNAUTHORIZED', message, {
    headers: { 'WWW-Authenticate': `Basic realm="${realm}"` },
  });
}
