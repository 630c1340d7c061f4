/**
 * Self-signed certificates the ACME side needs, made in-process (ECDSA P-256):
 *
 * - the tls-alpn-01 answer (RFC 8737 section 3): one subjectAltName, the challenged name, and a critical
 *   id-pe-acmeIdentifier extension holding SHA-256(key authorization). Made here rather than with
 *   acme-client's createAlpnCertificate: that one carries only keyCertSign and cRLSign key usage, which
 *   OpenSSL refuses to sign a TLS 1.2 handshake with ("handshake failure"), so a validation over TLS 1.2
 *   would fail. This one has digitalSignature and works with TLS 1.2 and 1.3.
 * - a placeholder for the first start, so the TLS port can listen (and answer tls-alpn-01) before the
 *   first certificate exists. Clients see an untrusted certificate for those seconds, not a refused port.
 */
import { createHash, randomBytes, webcrypto } from 'node:crypto';
import type { Extension } from '@peculiar/x509';
import { loadX509 } from '../ca.js';

/** id-pe-acmeIdentifier (RFC 8737 section 6.1). */
export const ACME_IDENTIFIER_OID = '1.3.6.1.5.5.7.1.31';

/** @peculiar/x509 is typed against the DOM Crypto interface, which Node's webcrypto implements. */
const cryptoImpl = webcrypto as unknown as Crypto;

export interface PemPair {
  cert: string;
  key: string;
}

export async function createAlpnCertificate(domain: string, keyAuthorization: string): Promise<PemPair> {
  const { Extension } = await loadX509();
  const digest = createHash('sha256').update(keyAuthorization).digest();
  // The extension value is the DER OCTET STRING of the digest: tag 0x04, length 0x20, 32 bytes.
  const value = Buffer.concat([Buffer.from([0x04, 0x20]), digest]);
  return selfSigned([domain], 7 * 86_400_000, [new Extension(ACME_IDENTIFIER_OID, true, value)]);
}

/** Valid for a day: long enough for a first order, short enough to show up in the expiry metric. */
export async function createPlaceholderCertificate(domains: readonly string[]): Promise<PemPair> {
  return selfSigned(domains, 86_400_000, []);
}

async function selfSigned(names: readonly string[], lifetimeMs: number, extra: Extension[]): Promise<PemPair> {
  const { KeyUsageFlags, KeyUsagesExtension, SubjectAlternativeNameExtension, X509CertificateGenerator } = await loadX509();
  const keys = await webcrypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-256' }, true, ['sign', 'verify']);
  const now = Date.now();
  const cert = await X509CertificateGenerator.createSelfSigned(
    {
      // Positive (high bit clear) 16-byte serial.
      serialNumber: randomBytes(16).toString('hex').replace(/^[89a-f]/, '7'),
      name: [{ CN: [names[0] ?? 'portcullis'] }],
      keys,
      notBefore: new Date(now - 3_600_000),
      notAfter: new Date(now + lifetimeMs),
      signingAlgorithm: { name: 'ECDSA', hash: 'SHA-256' } as EcdsaParams,
      extensions: [
        new KeyUsagesExtension(KeyUsageFlags.digitalSignature, true),
        new SubjectAlternativeNameExtension(names.map((value) => ({ type: 'dns' as const, value })), false),
        ...extra,
      ],
    },
    cryptoImpl,
  );
  const pkcs8 = Buffer.from(await webcrypto.subtle.exportKey('pkcs8', keys.privateKey)).toString('base64');
  const key = `-----BEGIN PRIVATE KEY-----\n${pkcs8.match(/.{1,64}/g)?.join('\n') ?? ''}\n-----END PRIVATE KEY-----\n`;
  return { cert: cert.toString('pem') + '\n', key };
}
