/**
 * File names inside `tls.acme.storage`. Stable: the config points `tls.cert`/`tls.key` at two of them, and
 * cluster workers (or an operator's sidecar) follow them like any certificate files.
 */
import { join } from 'node:path';

export interface StorageLayout {
  dir: string;
  /** ACME account key (PKCS#8 PEM). */
  accountKey: string;
  /** Private key of the certificate. */
  key: string;
  /** Leaf certificate followed by the chain, as the CA sent it. */
  cert: string;
  /** `{ directory, domains, serial, notAfter }` of the certificate, to tell whether it still fits the config. */
  state: string;
  /** Held while one installation orders (lock.ts). */
  lock: string;
}

export function storageLayout(dir: string): StorageLayout {
  return {
    dir,
    accountKey: join(dir, 'account.key'),
    key: join(dir, 'key.pem'),
    cert: join(dir, 'cert.pem'),
    state: join(dir, 'state.json'),
    lock: join(dir, 'order.lock'),
  };
}
