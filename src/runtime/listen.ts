import type http from 'node:http';
import net from 'node:net';
import { hasErrno, PortcullisError } from '../errors.js';

/**
 * Listen on host:port. A failure is a PCL_ERR_LISTEN naming the address, the setting (`what`, when it is not
 * `listen`) and the cause in words: at start-up it is the one line an operator reads.
 */
export function listen(server: http.Server | net.Server, host: string, port: number, what = 'listen'): Promise<void> {
  return new Promise((resolve, reject) => {
    const onError = (err: Error): void => reject(listenError(err, host, port, what));
    server.once('error', onError);
    server.listen(port, host, () => {
      server.off('error', onError);
      resolve();
    });
  });
}

/**
 * Bind host:port and let it go again: fails as `listen` would. The primary of `workers: N` checks its addresses
 * this way before it forks, because a worker that cannot listen only exits and is started again, forever.
 */
export async function checkListen(host: string, port: number, what = 'listen'): Promise<void> {
  const probe = net.createServer();
  await listen(probe, host, port, what);
  await new Promise<void>((resolve) => probe.close(() => resolve()));
}

function listenError(err: Error, host: string, port: number, what: string): PortcullisError {
  const reason = hasErrno(err, 'EADDRINUSE')
    ? 'address already in use (another process holds this port)'
    : hasErrno(err, 'EACCES')
      ? 'permission denied (a port below 1024 needs root or CAP_NET_BIND_SERVICE)'
      : hasErrno(err, 'EADDRNOTAVAIL')
        ? 'address not available (not an address of this machine)'
        : err.message;
  const address = `${host.includes(':') ? `[${host}]` : host}:${port}`;
  return new PortcullisError('PCL_ERR_LISTEN', `cannot listen on ${address}${what === 'listen' ? '' : ` (${what})`}: ${reason}`, { cause: err });
}

/** The address to print for a listener: a wildcard is shown as loopback, IPv6 in brackets. */
export function displayHost(host: string): string {
  const h = host === '0.0.0.0' || host === '::' ? '127.0.0.1' : host;
  return h.includes(':') ? `[${h}]` : h;
}
