/**
 * Throwaway PKI for tests, made with the openssl CLI: a CA and a server certificate it signs
 * (SAN DNS:localhost, IP:127.0.0.1, or what you pass), EC P-256, valid for 2 days.
 *
 * File names matter for skopeo/podman: a `--*-cert-dir` folder is scanned for `*.crt` (CAs), and every
 * `X.key` must have a matching `X.cert` (client certificate) or the copy fails. So the server key and chain
 * are `.pem` files, and `caDir` is a separate folder holding only `ca.crt`.
 */
import { copyFileSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describeRun, makeTempDir, removeTempDir, run } from './proc.js';

export interface TestCerts {
  /** Temp folder with everything below. */
  dir: string;
  /** The CA certificate (PEM). Trust this. */
  caFile: string;
  /** A folder containing only `ca.crt`: pass it to skopeo `--dest-cert-dir`/`--src-cert-dir`. */
  caDir: string;
  /** The CA private key, to sign more certificates (`signCert`). */
  caKeyFile: string;
  /** Server certificate followed by the CA certificate (full chain, what a TLS server should send). */
  certFile: string;
  /** Server certificate alone. */
  leafFile: string;
  /** Server private key (PKCS#8 PEM, unencrypted). */
  keyFile: string;
  /** PEM contents, for `https.createServer`/`tls.connect` without reading files. */
  ca: string;
  cert: string;
  key: string;
  /** Remove the folder (it is removed at process exit anyway). */
  cleanup(): void;
}

export interface MakeTestCertsOptions {
  /** subjectAltName entries. Default ["DNS:localhost", "IP:127.0.0.1"]. */
  san?: string[];
  /** Server certificate common name. Default "localhost". */
  cn?: string;
  /** Validity of the server certificate in days. Default 2. */
  days?: number;
}

export async function makeTestCerts(opts: MakeTestCertsOptions = {}): Promise<TestCerts> {
  const dir = makeTempDir('portcullis-tls-');
  const caFile = join(dir, 'ca.crt');
  const caKeyFile = join(dir, 'ca-key.pem');
  try {
    await openssl([
      'req', '-x509', '-new', '-nodes',
      '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1',
      '-keyout', caKeyFile, '-out', caFile, '-days', '3',
      '-subj', `/CN=Portcullis Test CA ${process.pid}-${Date.now()}`,
      '-addext', 'basicConstraints=critical,CA:TRUE',
      '-addext', 'keyUsage=critical,keyCertSign,cRLSign',
      '-addext', 'subjectKeyIdentifier=hash',
    ]);
    const server = await signCert({ dir, caFile, caKeyFile, name: 'server', cn: opts.cn, san: opts.san, days: opts.days });
    const caDir = join(dir, 'ca-dir');
    mkdirSync(caDir);
    copyFileSync(caFile, join(caDir, 'ca.crt'));
    return {
      dir,
      caFile,
      caDir,
      caKeyFile,
      certFile: server.chainFile,
      leafFile: server.leafFile,
      keyFile: server.keyFile,
      ca: readFileSync(caFile, 'utf8'),
      cert: readFileSync(server.chainFile, 'utf8'),
      key: readFileSync(server.keyFile, 'utf8'),
      cleanup: () => removeTempDir(dir),
    };
  } catch (e) {
    removeTempDir(dir);
    throw e;
  }
}

export interface SignCertOptions {
  dir: string;
  caFile: string;
  caKeyFile: string;
  /** Base name of the files written: NAME-key.pem, NAME-leaf.pem, NAME-chain.pem. */
  name: string;
  cn?: string | undefined;
  san?: string[] | undefined;
  /** Default 2. Negative values are not supported by openssl; use a past-dated CA for expiry tests. */
  days?: number | undefined;
  /** extendedKeyUsage of the certificate. Default 'serverAuth'; 'clientAuth' for a client certificate. */
  usage?: 'serverAuth' | 'clientAuth' | undefined;
}

/**
 * Issue one more certificate from a CA made by makeTestCerts: a server certificate (e.g. for a certificate
 * rotation test) or, with `usage: 'clientAuth'`, a client certificate.
 */
export async function signCert(o: SignCertOptions): Promise<{ keyFile: string; leafFile: string; chainFile: string }> {
  const keyFile = join(o.dir, `${o.name}-key.pem`);
  const csrFile = join(o.dir, `${o.name}.csr.pem`);
  const leafFile = join(o.dir, `${o.name}-leaf.pem`);
  const chainFile = join(o.dir, `${o.name}-chain.pem`);
  const extFile = join(o.dir, `${o.name}-ext.cnf`);
  const san = o.san ?? ['DNS:localhost', 'IP:127.0.0.1'];
  writeFileSync(
    extFile,
    [
      `subjectAltName=${san.join(',')}`,
      'basicConstraints=critical,CA:FALSE',
      'keyUsage=critical,digitalSignature,keyEncipherment',
      `extendedKeyUsage=${o.usage ?? 'serverAuth'}`,
      'authorityKeyIdentifier=keyid',
      '',
    ].join('\n'),
  );
  await openssl([
    'req', '-new', '-nodes',
    '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1',
    '-keyout', keyFile, '-out', csrFile, '-subj', `/CN=${o.cn ?? 'localhost'}`,
  ]);
  await openssl([
    'x509', '-req', '-in', csrFile, '-CA', o.caFile, '-CAkey', o.caKeyFile, '-CAcreateserial',
    '-out', leafFile, '-days', String(o.days ?? 2), '-extfile', extFile,
  ]);
  writeFileSync(chainFile, readFileSync(leafFile, 'utf8') + readFileSync(o.caFile, 'utf8'));
  return { keyFile, leafFile, chainFile };
}

async function openssl(args: string[]): Promise<void> {
  const r = await run('openssl', args, { timeoutMs: 30_000 });
  if (r.code !== 0) throw new Error(describeRun(`openssl ${args.slice(0, 2).join(' ')}`, r));
}
