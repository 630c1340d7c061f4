/**
 * A private certificate authority and server certificates for the proxy's TLS listener.
 *
 * What clients demand of a server certificate, and why each field is here:
 * - subjectAltName with every DNS name and IP clients dial. Go (docker, containerd), OpenSSL (curl) and
 *   Node ignore the CN; an IP literal only matches an IP SAN, never a DNS SAN.
 * - extKeyUsage serverAuth, keyUsage digitalSignature, basicConstraints CA:FALSE.
 * - authorityKeyIdentifier equal to the CA's subjectKeyIdentifier, or OpenSSL skips the CA as a candidate.
 * - issuer byte-identical to the CA's subject: Go matches parents by the raw DER of the name.
 * - at most 825 days of validity (Apple's limit for certificates from private CAs).
 *
 * Keys are ECDSA P-256 (PKCS#8 PEM). A CA created elsewhere may be reused: ECDSA P-256/P-384/P-521 or RSA.
 * Everything here is in memory; the `certs init` command does the file handling.
 */
import { createPrivateKey, randomBytes, webcrypto, X509Certificate as NodeX509Certificate } from 'node:crypto';
import { isIP } from 'node:net';
import type { Extension, JsonGeneralName, Name, X509Certificate } from '@peculiar/x509';
import { PortcullisError } from '../errors.js';

/** Days a new CA is valid unless told otherwise (10 years). */
export const DEFAULT_CA_DAYS = 3650;
/** Longest server certificate validity accepted by every client we care about (Apple: 825 days). */
export const MAX_SERVER_DAYS = 825;
/** Validity starts this long before "now", so a client whose clock runs behind still accepts the cert. */
export const BACKDATE_MS = 60 * 60 * 1000;

const DAY_MS = 24 * 60 * 60 * 1000;
const MAX_CA_DAYS = 36_500;

/** PEM text of a CA: its certificate (the first one, if the PEM holds several) and its private key. */
export interface CertificateAuthority {
  cert: string;
  key: string;
}

export interface ServerCertificate {
  /** The server certificate alone. */
  cert: string;
  /** Its private key, PKCS#8 PEM. */
  key: string;
  /** Server certificate followed by the CA certificate: what the TLS listener should present. */
  chain: string;
  notBefore: Date;
  notAfter: Date;
  serialNumber: string;
  /** Things the operator should hear about (validity shortened to the CA's, ...). Not errors. */
  warnings: string[];
}

export interface CertificateAuthorityOptions {
  commonName: string;
  /** Validity in days; DEFAULT_CA_DAYS when absent. */
  days?: number;
}

export interface ServerCertificateOptions {
  /** DNS names (a leading `*.` wildcard is allowed). */
  hosts: string[];
  /** IPv4 or IPv6 addresses. */
  ips: string[];
  /** Validity in days, 1 to MAX_SERVER_DAYS; MAX_SERVER_DAYS when absent. */
  days?: number;
  /** Subject CN; defaults to the first host (or IP). Informational only: clients check the SANs. */
  commonName?: string;
  /** "Now", for tests. */
  now?: Date;
}

const subtle = webcrypto.subtle;
/** @peculiar/x509 is typed against the DOM Crypto interface, which Node's webcrypto implements. */
const cryptoImpl = webcrypto as unknown as Crypto;

const EC_P256: EcKeyGenParams = { name: 'ECDSA', namedCurve: 'P-256' };

export type X509Lib = typeof import('@peculiar/x509');
let x509Lib: Promise<X509Lib> | null = null;

/**
 * @peculiar/x509 resolves its algorithms through tsyringe, which refuses to load without the Reflect
 * metadata API: reflect-metadata provides it. Both are loaded on first use, so processes that never make
 * certificates (serve) are not touched.
 */
export function loadX509(): Promise<X509Lib> {
  x509Lib ??= import('reflect-metadata').then(() => import('@peculiar/x509'));
  return x509Lib;
}

/** Create a self-signed CA (ECDSA P-256) that can sign server certificates and nothing below them. */
export async function createCertificateAuthority(opts: CertificateAuthorityOptions): Promise<CertificateAuthority> {
  const {
    AuthorityKeyIdentifierExtension,
    BasicConstraintsExtension,
    KeyUsageFlags,
    KeyUsagesExtension,
    SubjectKeyIdentifierExtension,
    X509CertificateGenerator,
  } = await loadX509();
  const days = checkDays(opts.days ?? DEFAULT_CA_DAYS, MAX_CA_DAYS, 'CA validity');
  const commonName = opts.commonName.trim();
  if (commonName.length === 0 || commonName.length > 64) {
    throw new PortcullisError('PCL_ERR_USAGE', `CA common name must be 1 to 64 characters, got ${JSON.stringify(opts.commonName)}`);
  }
  const keys = await subtle.generateKey(EC_P256, true, ['sign', 'verify']);
  const notBefore = new Date(Date.now() - BACKDATE_MS);
  const ski = await SubjectKeyIdentifierExtension.create(keys.publicKey, false, cryptoImpl);
  const cert = await X509CertificateGenerator.createSelfSigned(
    {
      serialNumber: randomSerial(),
      name: [{ CN: [commonName] }],
      keys,
      notBefore,
      notAfter: new Date(notBefore.getTime() + days * DAY_MS),
      signingAlgorithm: { name: 'ECDSA', hash: 'SHA-256' } as EcdsaParams,
      extensions: [
        // pathLen 0: this CA signs server certificates only, never another CA.
        new BasicConstraintsExtension(true, 0, true),
        new KeyUsagesExtension(KeyUsageFlags.keyCertSign | KeyUsageFlags.cRLSign, true),
        ski,
        new AuthorityKeyIdentifierExtension(ski.keyId, false),
      ],
    },
    cryptoImpl,
  );
  return { cert: cert.toString('pem') + '\n', key: await privateKeyPem(keys.privateKey) };
}

/** Issue a server certificate for `hosts` and `ips`, signed by `ca`. Throws PortcullisError (PCL_ERR_TLS
 * when the CA is unusable, PCL_ERR_USAGE when a name or the validity is invalid). */
export async function createServerCertificate(
  ca: CertificateAuthority,
  opts: ServerCertificateOptions,
): Promise<ServerCertificate> {
  const {
    AuthorityKeyIdentifierExtension,
    BasicConstraintsExtension,
    ExtendedKeyUsage,
    ExtendedKeyUsageExtension,
    KeyUsageFlags,
    KeyUsagesExtension,
    SubjectAlternativeNameExtension,
    SubjectKeyIdentifierExtension,
    X509CertificateGenerator,
  } = await loadX509();
  const hosts = unique(opts.hosts.map(normalizeDnsName));
  const ips = unique(opts.ips.map(normalizeIp));
  if (hosts.length === 0 && ips.length === 0) {
    throw new PortcullisError('PCL_ERR_USAGE', 'a server certificate needs at least one host name or IP address');
  }
  const days = checkDays(opts.days ?? MAX_SERVER_DAYS, MAX_SERVER_DAYS, 'server certificate validity');
  const now = opts.now ?? new Date();
  const signer = await loadCertificateAuthority(ca, now);
  const warnings: string[] = [];

  const notBefore = new Date(now.getTime() - BACKDATE_MS);
  let notAfter = new Date(notBefore.getTime() + days * DAY_MS);
  if (notAfter > signer.cert.notAfter) {
    notAfter = signer.cert.notAfter;
    warnings.push(
      `the CA expires on ${signer.cert.notAfter.toISOString()}, so the server certificate does too (asked for ${days} days)`,
    );
  }

  const keys = await subtle.generateKey(EC_P256, true, ['sign', 'verify']);
  const sans: JsonGeneralName[] = [
    ...hosts.map((value): JsonGeneralName => ({ type: 'dns', value })),
    ...ips.map((value): JsonGeneralName => ({ type: 'ip', value })),
  ];
  const cn = opts.commonName ?? hosts[0] ?? ips[0] ?? 'portcullis';
  const extensions: Extension[] = [
    new BasicConstraintsExtension(false, undefined, true),
    new KeyUsagesExtension(KeyUsageFlags.digitalSignature, true),
    new ExtendedKeyUsageExtension([ExtendedKeyUsage.serverAuth], false),
    new SubjectAlternativeNameExtension(sans, false),
    await SubjectKeyIdentifierExtension.create(keys.publicKey, false, cryptoImpl),
    new AuthorityKeyIdentifierExtension(signer.keyId, false),
  ];
  const cert = await X509CertificateGenerator.create(
    {
      serialNumber: randomSerial(),
      subject: [{ CN: [cn.length <= 64 ? cn : 'portcullis'] }],
      issuer: signer.subject,
      notBefore,
      notAfter,
      publicKey: keys.publicKey,
      signingKey: signer.key,
      signingAlgorithm: signer.algorithm,
      extensions,
    },
    cryptoImpl,
  );
  const certPem = cert.toString('pem') + '\n';
  // Check the result with OpenSSL's view of it (Node's X509Certificate), not only with the library that built it.
  const issued = new NodeX509Certificate(certPem);
  if (!issued.checkIssued(signer.node) || !issued.verify(signer.node.publicKey)) {
    throw new PortcullisError('PCL_ERR_TLS', 'the issued certificate does not verify against the CA (this is a bug)');
  }
  return {
    cert: certPem,
    key: await privateKeyPem(keys.privateKey),
    chain: certPem + signer.pem,
    notBefore: cert.notBefore,
    notAfter: cert.notAfter,
    serialNumber: cert.serialNumber,
    warnings,
  };
}

interface Signer {
  cert: X509Certificate;
  node: NodeX509Certificate;
  pem: string;
  subject: Name;
  key: CryptoKey;
  algorithm: EcdsaParams | RsaHashedImportParams;
  keyId: string;
}

/** Parse and check a CA for signing: it is a CA, its key matches, it is valid, and its names re-encode exactly. */
async function loadCertificateAuthority(ca: CertificateAuthority, now: Date): Promise<Signer> {
  const x509 = await loadX509();
  const { KeyUsageFlags, KeyUsagesExtension, SubjectKeyIdentifierExtension } = x509;
  const pem = firstPemCertificate(ca.cert);
  let node: NodeX509Certificate;
  let cert: X509Certificate;
  try {
    node = new NodeX509Certificate(pem);
    cert = new x509.X509Certificate(pem);
  } catch (err) {
    throw new PortcullisError('PCL_ERR_TLS', `CA certificate is not a valid PEM certificate: ${(err as Error).message}`, {
      cause: err,
    });
  }
  if (!node.ca) {
    throw new PortcullisError('PCL_ERR_TLS', `CA certificate "${node.subject}" is not a CA (basicConstraints CA:TRUE missing)`);
  }
  const keyUsage = cert.getExtension(KeyUsagesExtension);
  if (keyUsage && (keyUsage.usages & KeyUsageFlags.keyCertSign) === 0) {
    throw new PortcullisError('PCL_ERR_TLS', 'CA certificate may not sign certificates (keyUsage lacks keyCertSign)');
  }
  if (cert.notAfter.getTime() <= now.getTime() + DAY_MS) {
    throw new PortcullisError('PCL_ERR_TLS', `CA certificate expired or expires within a day (${cert.notAfter.toISOString()})`);
  }
  if (cert.notBefore.getTime() > now.getTime()) {
    throw new PortcullisError('PCL_ERR_TLS', `CA certificate is not valid before ${cert.notBefore.toISOString()}`);
  }

  let nodeKey: ReturnType<typeof createPrivateKey>;
  try {
    nodeKey = createPrivateKey(ca.key);
  } catch (err) {
    const encrypted = /passphrase/i.test((err as Error).message);
    throw new PortcullisError(
      'PCL_ERR_TLS',
      encrypted
        ? 'CA private key is encrypted; decrypt it first (openssl pkey -in ca.key -out ca-plain.key)'
        : `CA private key cannot be read: ${(err as Error).message}`,
      { cause: err },
    );
  }
  if (!node.checkPrivateKey(nodeKey)) {
    throw new PortcullisError('PCL_ERR_TLS', 'CA private key does not belong to the CA certificate');
  }
  const algorithm = signingAlgorithmFor(nodeKey);
  const pkcs8 = nodeKey.export({ type: 'pkcs8', format: 'der' });
  const key = await subtle.importKey('pkcs8', pkcs8, algorithm, false, ['sign']);

  // The issuer of what we sign must be byte-identical to the CA's subject (Go compares raw DER). Re-encoding a
  // parsed name normally gives back the same bytes; if it does not, the bytes cannot be found in the CA's DER.
  const subject = new x509.Name(cert.subjectName.toArrayBuffer());
  const subjectDer = Buffer.from(subject.toArrayBuffer());
  if (!node.raw.includes(subjectDer)) {
    throw new PortcullisError('PCL_ERR_TLS', `CA subject "${node.subject}" cannot be re-encoded exactly; use a CA created by certs init`);
  }

  const ski = cert.getExtension(SubjectKeyIdentifierExtension);
  const keyId = ski ? ski.keyId : (await SubjectKeyIdentifierExtension.create(cert.publicKey, false, cryptoImpl)).keyId;
  return { cert, node, pem, subject, key, algorithm, keyId };
}

function signingAlgorithmFor(key: ReturnType<typeof createPrivateKey>): EcdsaParams | RsaHashedImportParams {
  const type = key.asymmetricKeyType;
  if (type === 'ec') {
    const curve = key.asymmetricKeyDetails?.namedCurve;
    const byCurve: Record<string, { namedCurve: string; hash: string }> = {
      prime256v1: { namedCurve: 'P-256', hash: 'SHA-256' },
      secp384r1: { namedCurve: 'P-384', hash: 'SHA-384' },
      secp521r1: { namedCurve: 'P-521', hash: 'SHA-512' },
    };
    const found = curve === undefined ? undefined : byCurve[curve];
    if (found) return { name: 'ECDSA', namedCurve: found.namedCurve, hash: found.hash } as EcdsaParams;
    throw new PortcullisError('PCL_ERR_TLS', `CA key uses the unsupported curve ${curve ?? '(unknown)'}; use P-256, P-384 or P-521`);
  }
  if (type === 'rsa') return { name: 'RSASSA-PKCS1-v1_5', hash: 'SHA-256' };
  throw new PortcullisError('PCL_ERR_TLS', `CA key type ${type ?? '(unknown)'} is not supported; use ECDSA or RSA`);
}

function firstPemCertificate(text: string): string {
  const match = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/.exec(text);
  if (!match) throw new PortcullisError('PCL_ERR_TLS', 'CA certificate file holds no PEM certificate');
  return match[0] + '\n';
}

async function privateKeyPem(key: CryptoKey): Promise<string> {
  const { PemConverter } = await loadX509();
  return PemConverter.encode(await subtle.exportKey('pkcs8', key), 'PRIVATE KEY') + '\n';
}

/** 128 random bits, positive, no leading zero octet (RFC 5280 4.1.2.2: at most 20 octets). */
function randomSerial(): string {
  const bytes = randomBytes(16);
  bytes[0] = (bytes[0]! & 0x7f) | 0x40;
  return bytes.toString('hex');
}

function checkDays(days: number, max: number, what: string): number {
  if (!Number.isInteger(days) || days < 1 || days > max) {
    throw new PortcullisError('PCL_ERR_USAGE', `${what} must be a whole number of days from 1 to ${max}, got ${days}`);
  }
  return days;
}

function unique(values: string[]): string[] {
  return [...new Set(values)];
}

const LABEL = /^(?!-)[a-z0-9-]{1,63}(?<!-)$/;

/** Lower-case a DNS name and check it is one (RFC 1123 labels, optional leading `*.`). */
export function normalizeDnsName(name: string): string {
  const n = name.trim().toLowerCase().replace(/\.$/, '');
  if (isIP(n) !== 0) {
    throw new PortcullisError('PCL_ERR_USAGE', `"${name}" is an IP address: give it as an IP, not as a host name`);
  }
  const labels = n.split('.');
  const wildcard = labels[0] === '*' && labels.length >= 3;
  const checked = wildcard ? labels.slice(1) : labels;
  if (n.length === 0 || n.length > 253 || !checked.every((l) => LABEL.test(l)) || /^\d+$/.test(labels.at(-1) ?? '')) {
    throw new PortcullisError(
      'PCL_ERR_USAGE',
      `"${name}" is not a valid DNS name (letters, digits and hyphens in dot-separated labels; "*." only as a leading label)`,
    );
  }
  return n;
}

/** Check an IP address and return it in the form the certificate encoder accepts. */
export function normalizeIp(ip: string): string {
  const v = ip.trim().replace(/^\[(.*)\]$/, '$1');
  const family = v.includes('%') ? 0 : isIP(v);
  if (family === 0) throw new PortcullisError('PCL_ERR_USAGE', `"${ip}" is not an IPv4 or IPv6 address`);
  if (family === 4) return v;
  // The encoder does not read an embedded dotted quad (::ffff:10.0.0.1): rewrite it as two hex groups.
  const m = /^(.*:)(\d+)\.(\d+)\.(\d+)\.(\d+)$/.exec(v);
  if (!m) return v.toLowerCase();
  const [a, b, c, d] = [m[2], m[3], m[4], m[5]].map(Number) as [number, number, number, number];
  return `${m[1]!.toLowerCase()}${((a << 8) | b).toString(16)}:${((c << 8) | d).toString(16)}`;
}
