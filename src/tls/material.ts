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
  /** CA certificates client certificates must chain to (tls.clientCA), or null. */
  clientCA: Buffer | null;
  /** Leaf certificate facts, for the start-up log. */
  subject: string;
  validTo: Date;
}

/**
 * Reads and checks a cert (full chain allowed: leaf first), its key, and the client CA bundle if one is
 * configured. Throws PCL_ERR_TLS with the file named.
 */
export function loadTlsMaterial(certPath: string, keyPath: string, clientCAPath: string | null = null): TlsMaterial {
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
  const clientCA = clientCAPath === null ? null : loadCABundle(clientCAPath);
  return { cert, key, clientCA, subject: leaf.subject.replace(/\n/g, ', '), validTo: new Date(leaf.validTo) };
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

/** The context options a reload may change: the pair, and the CAs client certificates are verified with. */
export function secureContextOptions(m: TlsMaterial): SecureContextOptions {
  return { cert: m.cert, key: m.key, ...(m.clientCA ? { ca: m.clientCA } : {}) };
}

/** A PEM bundle of at least one CA certificate (tls.clientCA). Throws PCL_ERR_TLS naming the file. */
export function loadCABundle(path: string): Buffer {
  const pem = readOrThrow(path, 'client CA bundle');
  const blocks = pem.toString('utf8').match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? [];
  if (blocks.length === 0) throw new PortcullisError('PCL_ERR_TLS', `${path}: no PEM certificate in the client CA bundle`);
  for (const block of blocks) {
    let ca: X509Certificate;
    try {
      ca = new X509Certificate(block);
    } catch (err) {
      throw new PortcullisError('PCL_ERR_TLS', `${path}: not a PEM certificate: ${(err as Error).message}`);
    }
    if (!ca.ca) throw new PortcullisError('PCL_ERR_TLS', `${path}: ${ca.subject.replace(/\n/g, ', ')} is not a CA certificate`);
  }
  return pem;
}

function readOrThrow(path: string, what: string): Buffer {
  try {
    return readFileSync(path);
  } catch (err) {
    throw new PortcullisError('PCL_ERR_TLS', `${path}: cannot read ${what}: ${(err as Error).message}`);
  }
}
