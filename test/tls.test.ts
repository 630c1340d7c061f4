/**
 * TLS termination: full chains served whole, the version floor, HTTP/1.1 only, and clear errors for a
 * certificate that does not load. The PKI is made with the openssl CLI: root -> intermediate -> leaf.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import tls from 'node:tls';
import { parseConfig, type Config } from '../src/config/load.ts';
import { PortcullisError } from '../src/errors.ts';
import { Metrics } from '../src/ops/metrics.ts';
import { createServer } from '../src/http/server.ts';
import { loadTlsMaterial } from '../src/tls/material.ts';

const dir = mkdtempSync(join(tmpdir(), 'pcl-tls-'));
const f = (name: string): string => join(dir, name);
const servers: Server[] = [];

function openssl(...args: string[]): void {
  execFileSync('openssl', args, { stdio: 'pipe' });
}

before(() => {
  const ext = f('ext.cnf');
  writeFileSync(
    ext,
    [
      '[ca]',
      'basicConstraints=critical,CA:TRUE',
      'keyUsage=critical,keyCertSign,cRLSign',
      '[leaf]',
      'basicConstraints=critical,CA:FALSE',
      'keyUsage=critical,digitalSignature',
      'extendedKeyUsage=serverAuth',
      'subjectAltName=DNS:localhost,IP:127.0.0.1',
    ].join('\n'),
  );
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes'];
  openssl('req', '-x509', ...ec, '-keyout', f('root.key'), '-out', f('root.crt'), '-days', '2', '-subj', '/CN=Test Root', '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign');
  openssl('req', ...ec, '-keyout', f('int.key'), '-out', f('int.csr'), '-subj', '/CN=Test Intermediate');
  openssl('x509', '-req', '-in', f('int.csr'), '-CA', f('root.crt'), '-CAkey', f('root.key'), '-CAcreateserial', '-out', f('int.crt'), '-days', '2', '-extfile', ext, '-extensions', 'ca');
  openssl('req', ...ec, '-keyout', f('leaf.key'), '-out', f('leaf.csr'), '-subj', '/CN=localhost');
  openssl('x509', '-req', '-in', f('leaf.csr'), '-CA', f('int.crt'), '-CAkey', f('int.key'), '-CAcreateserial', '-out', f('leaf.crt'), '-days', '2', '-extfile', ext, '-extensions', 'leaf');
  writeFileSync(f('chain.crt'), readFileSync(f('leaf.crt'), 'utf8') + readFileSync(f('int.crt'), 'utf8'));
  writeFileSync(f('htpasswd'), '');
});

after(async () => {
  for (const s of servers) {
    s.closeAllConnections();
    await new Promise((r) => s.close(r));
  }
  rmSync(dir, { recursive: true, force: true });
});

/** The proxy's server for a config naming `cert`; without `minVersion` the config leaves it to the default. */
async function serve(cert: string, minVersion?: 'TLSv1.2' | 'TLSv1.3'): Promise<number> {
  const config: Config = parseConfig(
    `listen: "127.0.0.1:0"
tls: { cert: ${cert}, key: leaf.key${minVersion ? `, minVersion: ${minVersion}` : ''} }
upstream: { url: "http://127.0.0.1:9" }
auth: { htpasswd: htpasswd }
`,
    f('proxy.yaml'),
  );
  const server = createServer(config, loadTlsMaterial(config.tls!.cert, config.tls!.key), (_q, s) => s.end('hi'), new Metrics());
  servers.push(server);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return (server.address() as AddressInfo).port;
}

function handshake(port: number, opts: tls.ConnectionOptions): Promise<tls.TLSSocket> {
  return new Promise((resolve, reject) => {
    const socket = tls.connect({ host: '127.0.0.1', port, servername: 'localhost', ca: readFileSync(f('root.crt')), ...opts }, () => resolve(socket));
    socket.on('error', reject);
  });
}

test('a full chain is served whole: a client trusting only the root verifies it', async () => {
  const port = await serve('chain.crt');
  const socket = await handshake(port, {});
  assert.ok(socket.authorized);
  const peer = socket.getPeerCertificate(true);
  assert.equal(peer.subject.CN, 'localhost');
  assert.equal(peer.issuerCertificate.subject.CN, 'Test Intermediate', 'the intermediate came with the leaf');
  socket.destroy();
});

test('without the intermediate in the file, the same client fails: the chain test above is not vacuous', async () => {
  const port = await serve('leaf.crt');
  await assert.rejects(handshake(port, {}), /unable to (get|verify)/i);
});

/**
 * OpenSSL 3 refuses TLS 1.0 and 1.1 on its own at its default security level, whatever minVersion says, so a
 * 1.1 client refused by the proxy proves nothing about the configured floor. Security level 0 (on both ends)
 * lifts OpenSSL's own refusal; what still refuses old versions then is the server's minVersion, nothing else.
 * The proxy sets no ciphers of its own, so the server takes tls.DEFAULT_CIPHERS at creation.
 */
async function serveAtSecurityLevel0(minVersion?: 'TLSv1.2' | 'TLSv1.3'): Promise<number> {
  const saved = tls.DEFAULT_CIPHERS;
  tls.DEFAULT_CIPHERS = 'DEFAULT@SECLEVEL=0';
  try {
    return await serve('chain.crt', minVersion);
  } finally {
    tls.DEFAULT_CIPHERS = saved;
  }
}

const oldClient = (version: 'TLSv1' | 'TLSv1.1'): tls.ConnectionOptions => ({ minVersion: version, maxVersion: version, ciphers: 'DEFAULT@SECLEVEL=0' });
/** The server's "protocol version" alert: refused for the version, not for a cipher or a certificate. */
const versionRefused = (e: unknown): boolean => (e as NodeJS.ErrnoException).code === 'ERR_SSL_TLSV1_ALERT_PROTOCOL_VERSION';

test('TLS 1.0 and 1.1 are possible at security level 0: the floor tests below are not vacuous', async () => {
  const saved = tls.DEFAULT_CIPHERS;
  tls.DEFAULT_CIPHERS = 'DEFAULT@SECLEVEL=0';
  let server: tls.Server;
  try {
    server = tls.createServer({ cert: readFileSync(f('chain.crt')), key: readFileSync(f('leaf.key')), minVersion: 'TLSv1' }, (s) => s.end());
  } finally {
    tls.DEFAULT_CIPHERS = saved;
  }
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  try {
    const port = (server.address() as AddressInfo).port;
    for (const version of ['TLSv1', 'TLSv1.1'] as const) {
      const s = await handshake(port, oldClient(version));
      assert.equal(s.getProtocol(), version);
      s.destroy();
    }
  } finally {
    await new Promise((r) => server.close(r));
  }
});

test('the default config refuses TLS 1.0 and 1.1 by its own minVersion, and accepts 1.2', async () => {
  const port = await serveAtSecurityLevel0();
  for (const version of ['TLSv1', 'TLSv1.1'] as const) await assert.rejects(handshake(port, oldClient(version)), versionRefused, version);
  const v12 = await handshake(port, { maxVersion: 'TLSv1.2' });
  assert.equal(v12.getProtocol(), 'TLSv1.2');
  v12.destroy();
});

test('minVersion TLSv1.3 refuses a TLS 1.2 client and accepts 1.3', async () => {
  const port = await serveAtSecurityLevel0('TLSv1.3');
  await assert.rejects(handshake(port, { maxVersion: 'TLSv1.2' }), versionRefused);
  await assert.rejects(handshake(port, oldClient('TLSv1.1')), versionRefused);
  const v13 = await handshake(port, {});
  assert.equal(v13.getProtocol(), 'TLSv1.3');
  v13.destroy();
});

test('ALPN offers HTTP/1.1 only', async () => {
  const port = await serve('chain.crt');
  const socket = await handshake(port, { ALPNProtocols: ['h2', 'http/1.1'] });
  assert.equal(socket.alpnProtocol, 'http/1.1');
  socket.destroy();
});

test('a certificate that does not load is a clear PCL_ERR_TLS naming the file', () => {
  const tlsError = (cert: string, key: string, pattern: RegExp): void => {
    assert.throws(
      () => loadTlsMaterial(cert, key),
      (e: unknown) => e instanceof PortcullisError && e.code === 'PCL_ERR_TLS' && pattern.test(e.message),
    );
  };
  tlsError(f('missing.crt'), f('leaf.key'), /missing\.crt: cannot read certificate/);
  writeFileSync(f('garbage.crt'), 'not a certificate');
  tlsError(f('garbage.crt'), f('leaf.key'), /garbage\.crt: not a PEM certificate/);
  tlsError(f('chain.crt'), f('int.key'), /int\.key does not match the certificate in .*chain\.crt/);
  const ok = loadTlsMaterial(f('chain.crt'), f('leaf.key'));
  assert.match(ok.subject, /CN=localhost/);
});
