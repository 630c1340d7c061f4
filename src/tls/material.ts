/**
 * The server certificate: loaded, checked, and swapped on change.
 *
 * New handshakes use the new certificate (`server.setSecureContext`); connections already open keep the
 * one they negotiated. A new pair that does not load or does not match is refused and the last good pair
 * keeps serving: a half-copied key must not take the registry down.
 */
import { readFileSync } from 'node:fs';
import { X509Certificate, createPrivateKey } from 'node:crypto';
import type { SecureContextOptions } from 'node:tls';
import { PortcullisError } from '../errors.js';

export interface TlsMaterial {
  cert: Buffer;
  key: Buffer;
  /** Leaf certificate facts, for the start-up log. */
  subject: string;
  validTo: Date;
}

/** Reads and checks a cert (full chain allowed: leaf first) and its key. Throws PCL_ERR_TLS with the file named. */
export function loadTlsMaterial(certPath: string, keyPath: string): TlsMaterial {
  const cert = readOrThrow(certPath, 'certificate');
  const key = readOrThrow(keyPath, 'private key');
  let leaf: X509Certificate;
  try {
    leaf = new X509Certificate(cert);
  } catch (err) {
    throw new PortcullisError('PCL_ERR_TLS', `${certPath}: not a PEM certificate: ${(err as Error).message}`);
  }
  let privateKey;
  try {
    privateKey = createPrivateKey(key);
  } catch (err) {
    throw new PortcullisError('PCL_ERR_TLS', `${keyPath}: not a PEM private key: ${(err as Error).message}`);
  }
  if (!leaf.checkPrivateKey(privateKey)) {
    throw new PortcullisError('PCL_ERR_TLS', `${keyPath} does not match the certificate in ${certPath}`);
  }
  return { cert, key, subject: leaf.subject.replace(/\n/g, ', '), validTo: new Date(leaf.validTo) };
}

/** A PEM file of CA certificates (tls.acme.ca): read and checked to hold at least one certificate. */
export function loadCaCertificates(path: string, key: string): string {
  const text = readOrThrow(path, key).toString('utf8');
  try {
    new X509Certificate(text);
  } catch (err) {
    throw new PortcullisError('PCL_ERR_TLS', `${path}: ${key} is not a PEM certificate: ${(err as Error).message}`);
  }
  return text;
}

export function secureContextOptions(m: TlsMaterial): SecureContextOptions {
  return { cert: m.cert, key: m.key };
}

function readOrThrow(path: string, what: string): Buffer {
  try {
    return readFileSync(path);
  } catch (err) {
    throw new PortcullisError('PCL_ERR_TLS', `${path}: cannot read ${what}: ${(err as Error).message}`);
  }
}
