/**
 * ACME certificates (tls.acme): the pure parts one by one, then the whole against a real pebble that
 * validates tls-alpn-01 on the server's own TLS port and http-01 on the plain-HTTP listener.
 *
 * Timeline of the pebble part: pebble A (long-lived certificates) for first issuance, reuse across a
 * restart and http-01; pebble B (12-second certificates) for a renewal under an open download and for a
 * CA outage during renewal.
 */
import 'reflect-metadata';
import cluster from 'node:cluster';
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { EventEmitter } from 'node:events';
import { createHash, X509Certificate } from 'node:crypto';
import { existsSync, readdirSync, readFileSync, statSync, utimesSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import net, { type AddressInfo } from 'node:net';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import tls from 'node:tls';
import { X509Certificate as PeculiarCertificate, X509CertificateGenerator, SubjectAlternativeNameExtension } from '@peculiar/x509';
import { AggregatorRegistry, Registry, type RegistryContentType } from 'prom-client';
import { effectiveConfig } from '../src/config/effective.ts';
import { parseConfig, type Config } from '../src/config/load.ts';
import { PortcullisError, UnusableAcmeStorage } from '../src/errors.ts';
import { createServer } from '../src/http/server.ts';
import { createAcmeMetrics, Metrics, registerCertificateExpiry } from '../src/ops/metrics.ts';
import { HttpChallenges, TlsAlpnChallenges } from '../src/tls/acme/challenges.ts';
import { parseClientHello } from '../src/tls/acme/client-hello.ts';
import type { AcmeLogger, ChallengeSolver } from '../src/tls/acme/client.ts';
import { createHttpChallengeServer, httpChallengeHandler } from '../src/tls/acme/http-challenge.ts';
import { AcmeManager, type AcmeManagerOptions } from '../src/tls/acme/manager.ts';
import { attachAcme, placeholderMaterial, startAcmeInPrimary, validationLog } from '../src/tls/acme/attach.ts';
import { OrderLock } from '../src/tls/acme/lock.ts';
import { followAlpnRelay, WorkerAlpnRelay, type WorkerLike } from '../src/tls/acme/relay.ts';
import { MAX_TIMER_MS, orderReason, renewalTime, retryDelay, timerDelay } from '../src/tls/acme/renewal.ts';
import { ACME_IDENTIFIER_OID, createAlpnCertificate, createPlaceholderCertificate } from '../src/tls/acme/self-signed.ts';
import { AcmeStore } from '../src/tls/acme/store.ts';
import { ACME_TLS_ALPN } from '../src/tls/acme/tls-alpn.ts';
import { request } from './helpers/clients.ts';
import { startPebble, type RunningPebble } from './helpers/pebble.ts';
import { runCli, startPortcullis } from './helpers/portcullis.ts';
import { metric } from './helpers/prometheus.ts';
import { freePort, makeTempDir } from './helpers/proc.ts';
import { eventually } from './helpers/wait.ts';

const DAY = 86_400_000;
const cleanups: Array<() => unknown> = [];
after(async () => {
  // Each cleanup runs even when one before it fails, so nothing is left listening.
  for (const c of cleanups.reverse()) {
    try {
      await c();
    } catch (err) {
      console.error(`# cleanup: ${(err as Error).message}`);
    }
  }
});

// ---------------------------------------------------------------------------------------------------
// Helpers

interface LogRecord {
  level: string;
  msg: string;
  [key: string]: unknown;
}

function memoryLogger(): { logger: AcmeLogger; lines: LogRecord[] } {
  const lines: LogRecord[] = [];
  const at = (level: string) => (obj: object, msg: string) => {
    lines.push({ ...obj, level, msg });
  };
  return { logger: { info: at('info'), warn: at('warn'), error: at('error'), debug: at('debug') }, lines };
}

/** A self-signed certificate with chosen validity, PEM, for storage and manager tests. */
async function certificate(domains: string[], notBefore: number, notAfter: number): Promise<{ cert: string; key: string }> {
  const crypto = globalThis.crypto;
  const keys = await crypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-256' }, true, ['sign', 'verify']);
  const cert = await X509CertificateGenerator.createSelfSigned({
    serialNumber: String(1000 + Math.floor(Math.random() * 1e9)),
    name: [{ CN: [domains[0] ?? 'x'] }],
    keys,
    notBefore: new Date(notBefore),
    notAfter: new Date(notAfter),
    signingAlgorithm: { name: 'ECDSA', hash: 'SHA-256' },
    extensions: [new SubjectAlternativeNameExtension(domains.map((value) => ({ type: 'dns' as const, value })))],
  });
  const pkcs8 = Buffer.from(await crypto.subtle.exportKey('pkcs8', keys.privateKey)).toString('base64');
  return { cert: cert.toString('pem') + '\n', key: `-----BEGIN PRIVATE KEY-----\n${pkcs8.match(/.{1,64}/g)!.join('\n')}\n-----END PRIVATE KEY-----\n` };
}

/** The first bytes a real Node TLS client sends. */
async function capturedClientHello(opts: tls.ConnectionOptions): Promise<Buffer> {
  const chunks: Buffer[] = [];
  const server = net.createServer((socket) => {
    socket.on('data', (b: Buffer) => {
      chunks.push(b);
      if (parseClientHello(Buffer.concat(chunks)).kind !== 'incomplete') socket.destroy();
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as AddressInfo).port;
  await new Promise<void>((resolve) => {
    const c = tls.connect({ host: '127.0.0.1', port, ...opts });
    c.on('error', () => resolve());
    c.on('close', () => resolve());
  });
  server.close();
  return Buffer.concat(chunks);
}

interface Handshake {
  serial: string;
  subject: string;
  alpn: string | false | null;
  version: string | null;
}

/** Handshake with the server; with `ca` the chain and the name are verified, otherwise anything goes. */
function handshake(port: number, servername: string, opts: tls.ConnectionOptions = {}): Promise<Handshake> {
  return new Promise((resolve, reject) => {
    const socket = tls.connect({ host: '127.0.0.1', port, servername, rejectUnauthorized: opts.ca !== undefined, ...opts }, () => {
      const cert = socket.getPeerX509Certificate();
      resolve({ serial: cert?.serialNumber ?? '', subject: cert?.subject ?? '', alpn: socket.alpnProtocol, version: socket.getProtocol() });
      // end, not destroy: with TLS 1.3 the server completes its side only once it reads our Finished.
      socket.end();
    });
    socket.on('error', reject);
  });
}

/** The next event of `emitter` whose arguments pass `ok`, or a rejection naming what did not happen. */
function nextEvent<A extends unknown[]>(emitter: EventEmitter, name: string, ok: (...args: A) => boolean, what: string, timeoutMs: number): Promise<A> {
  return new Promise((resolve, reject) => {
    const on = (...args: unknown[]): void => {
      if (!ok(...(args as A))) return;
      clearTimeout(timer);
      emitter.off(name, on);
      resolve(args as A);
    };
    const timer = setTimeout(() => {
      emitter.off(name, on);
      reject(new Error(`${what}: not within ${timeoutMs} ms`));
    }, timeoutMs);
    emitter.on(name, on);
  });
}

const noopSolver: ChallengeSolver = { type: 'tls-alpn-01', present: async () => {}, remove: async () => {} };

// ---------------------------------------------------------------------------------------------------
// Pure parts

test('parseClientHello reads SNI and ALPN from real TLS 1.2 and 1.3 ClientHellos, whole or in pieces', async () => {
  for (const version of ['TLSv1.2', 'TLSv1.3'] as const) {
    const bytes = await capturedClientHello({ servername: 'Registry.Example.COM', ALPNProtocols: [ACME_TLS_ALPN, 'http/1.1'], minVersion: version, maxVersion: version });
    const whole = parseClientHello(bytes);
    assert.deepEqual(whole, { kind: 'hello', hello: { serverName: 'registry.example.com', alpn: [ACME_TLS_ALPN, 'http/1.1'] } }, version);
    // Every proper prefix is incomplete: the router keeps reading instead of guessing.
    for (const cut of [1, 5, 6, bytes.length - 1]) assert.deepEqual(parseClientHello(bytes.subarray(0, cut)), { kind: 'incomplete' }, `${version} cut at ${cut}`);
    // The same handshake split over two records (RFC 8446 section 5.1 allows it).
    const body = bytes.subarray(5);
    const half = Math.floor(body.length / 2);
    const record = (b: Buffer): Buffer => Buffer.concat([Buffer.from([22, 3, 1, b.length >> 8, b.length & 0xff]), b]);
    assert.deepEqual(parseClientHello(Buffer.concat([record(body.subarray(0, half)), record(body.subarray(half))])), whole);
  }
  const bare = await capturedClientHello({ host: '127.0.0.1' });
  assert.deepEqual(parseClientHello(bare), { kind: 'hello', hello: { serverName: null, alpn: [] } });
  assert.deepEqual(parseClientHello(Buffer.from('GET / HTTP/1.1\r\nHost: x\r\n\r\n')), { kind: 'other' });
  assert.deepEqual(parseClientHello(Buffer.from([22, 3, 1, 0, 4, 2, 0, 0, 0])), { kind: 'other' }, 'a ServerHello is not a ClientHello');
});

test('the tls-alpn-01 certificate carries one SAN and a critical acmeIdentifier with SHA-256 of the key authorization', async () => {
  const pem = await createAlpnCertificate('registry.example.com', 'token.thumbprint');
  const cert = new PeculiarCertificate(pem.cert);
  const ext = cert.getExtension(ACME_IDENTIFIER_OID);
  assert.ok(ext, 'acmeIdentifier present');
  assert.equal(ext.critical, true);
  const digest = createHash('sha256').update('token.thumbprint').digest();
  assert.deepEqual(Buffer.from(ext.value), Buffer.concat([Buffer.from([0x04, 0x20]), digest]));
  assert.equal(new X509Certificate(pem.cert).subjectAltName, 'DNS:registry.example.com');
  assert.ok(new X509Certificate(pem.cert).checkPrivateKey((await import('node:crypto')).createPrivateKey(pem.key)));
});

test('on one TLS port: acme-tls/1 + challenged SNI gets the challenge certificate, everything else the normal one (TLS 1.2 and 1.3)', async () => {
  const normal = await createPlaceholderCertificate(['registry.example.com']);
  const challenges = new TlsAlpnChallenges();
  const validations: string[] = [];
  // The product's server (http/server.ts) with the route installed as runtime/instance.ts does.
  const config = parseConfig('tls: { cert: c.pem, key: k.pem }\nupstream: { url: "http://127.0.0.1:9" }\nauth: { htpasswd: h }\n', '/x/proxy.yaml');
  const material = { cert: Buffer.from(normal.cert), key: Buffer.from(normal.key), clientCA: null, subject: 'normal', validTo: new Date(Date.now() + DAY) };
  const server = createServer(config, material, (_q, s) => s.end('registry\n'), new Metrics(), {
    tlsAlpn: { challenges, onValidation: (h, s) => validations.push(`${h.serverName} ${s.getProtocol()}`) },
  }) as https.Server;
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  cleanups.push(() => server.close());
  const port = (server.address() as AddressInfo).port;
  const normalSerial = new X509Certificate(normal.cert).serialNumber;

  // No challenge pending: acme-tls/1 gets no special treatment (and no protocol: alert 120).
  await assert.rejects(handshake(port, 'registry.example.com', { ALPNProtocols: [ACME_TLS_ALPN] }), /no application protocol/);

  const pem = await createAlpnCertificate('registry.example.com', 'tok.thumb');
  challenges.set('registry.example.com', pem);
  const challengeSerial = new X509Certificate(pem.cert).serialNumber;
  for (const version of ['TLSv1.2', 'TLSv1.3'] as const) {
    const v = { minVersion: version, maxVersion: version };
    const validation = await handshake(port, 'registry.example.com', { ...v, ALPNProtocols: [ACME_TLS_ALPN] });
    assert.equal(validation.serial, challengeSerial, `${version}: challenge certificate`);
    assert.equal(validation.alpn, ACME_TLS_ALPN);
    assert.equal((await handshake(port, 'registry.example.com', { ...v, ALPNProtocols: ['http/1.1'] })).serial, normalSerial, `${version}: http/1.1 gets the normal certificate`);
    assert.equal((await handshake(port, 'registry.example.com', v)).serial, normalSerial, `${version}: no ALPN gets the normal certificate`);
    await assert.rejects(handshake(port, 'other.example.com', { ...v, ALPNProtocols: [ACME_TLS_ALPN] }), /no application protocol/, `${version}: another name is not answered`);
  }
  // The server side sees the handshake end after the client does: wait for it.
  await eventually('both validations seen by the responder', async () => validations.length === 2, 5000);
  assert.deepEqual(validations, ['registry.example.com TLSv1.2', 'registry.example.com TLSv1.3']);
  // A request on the normal path still works while a challenge is pending.
  const body = await new Promise<string>((resolve, reject) => {
    https
      .get({ host: '127.0.0.1', port, servername: 'registry.example.com', rejectUnauthorized: false, agent: false }, (res) => {
        let text = '';
        res.on('data', (b: Buffer) => (text += b.toString()));
        res.on('end', () => resolve(text));
      })
      .on('error', reject);
  });
  assert.equal(body, 'registry\n');
  // Plain HTTP to the TLS port while peeking: refused by TLS as before, the server survives.
  const raw = await new Promise<string>((resolve) => {
    const s = net.connect(port, '127.0.0.1', () => s.write('GET / HTTP/1.1\r\nHost: x\r\n\r\n'));
    let got = '';
    s.on('data', (b: Buffer) => (got += b.toString('latin1')));
    s.on('close', () => resolve(got));
    s.on('error', () => resolve(got));
  });
  assert.doesNotMatch(raw, /registry/);
  challenges.delete('registry.example.com');
  await assert.rejects(handshake(port, 'registry.example.com', { ALPNProtocols: [ACME_TLS_ALPN] }), /no application protocol/);
});

test('http-01 listener: token answered, unknown token 404, anything else 308 to https on the same host and path', async () => {
  const challenges = new HttpChallenges();
  challenges.set('tok_EN-1', 'tok_EN-1.thumb');
  const call = async (httpsPort: number, path: string, host: string, method = 'GET'): Promise<{ status: number; location?: string; body: string }> => {
    const server = http.createServer(httpChallengeHandler(challenges, { httpsPort }));
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    try {
      return await new Promise((resolve, reject) => {
        const req = http.request({ host: '127.0.0.1', port: (server.address() as AddressInfo).port, path, method, headers: { host }, agent: false }, (res) => {
          let body = '';
          res.on('data', (b: Buffer) => (body += b.toString()));
          res.on('end', () => resolve({ status: res.statusCode ?? 0, ...(res.headers.location ? { location: res.headers.location } : {}), body }));
        });
        req.on('error', reject);
        req.end();
      });
    } finally {
      server.close();
    }
  };
  assert.deepEqual(await call(443, '/.well-known/acme-challenge/tok_EN-1', 'registry.example.com'), { status: 200, body: 'tok_EN-1.thumb' });
  assert.equal((await call(443, '/.well-known/acme-challenge/unknown', 'registry.example.com')).status, 404);
  assert.equal((await call(443, '/.well-known/acme-challenge/../etc', 'registry.example.com')).status, 404);
  assert.deepEqual(await call(443, '/v2/app/manifests/1?x=1', 'registry.example.com'), { status: 308, location: 'https://registry.example.com/v2/app/manifests/1?x=1', body: '' });
  assert.equal((await call(5043, '/v2/', 'registry.example.com:80', 'PUT')).location, 'https://registry.example.com:5043/v2/');
  assert.equal((await call(443, '/', 'evil.example.com/x?')).status, 400, 'a Host that is not a host name is not reflected');
  const server = createHttpChallengeServer(challenges, { httpsPort: 443 });
  assert.equal(server.headersTimeout, 10_000);
});

test('renewal at two thirds of the lifetime; capped, jittered exponential backoff; long waits cut into timer-sized pieces', () => {
  const t0 = Date.parse('2025-01-01T00:00:00Z');
  assert.equal(renewalTime(t0, t0 + 90 * DAY), t0 + 60 * DAY);
  assert.equal(renewalTime(t0, t0 + 6 * DAY), t0 + 4 * DAY);
  const b = { minMs: 1000, maxMs: 60_000 };
  assert.equal(retryDelay(0, b, () => 0), 500);
  assert.equal(retryDelay(0, b, () => 1), 1000);
  assert.equal(retryDelay(3, b, () => 1), 8000);
  assert.equal(retryDelay(3, b, () => 0), 4000);
  assert.equal(retryDelay(10, b, () => 1), 60_000, 'capped');
  assert.equal(retryDelay(5000, b, () => 1), 60_000, 'no overflow for huge attempt numbers');
  for (let attempt = 0; attempt < 20; attempt++) {
    const d = retryDelay(attempt, b);
    assert.ok(d >= 500 && d <= 60_000, `attempt ${attempt}: ${d}`);
  }
  assert.equal(timerDelay(t0 + 60 * DAY, t0), MAX_TIMER_MS, 'a 60-day wait is not handed to setTimeout whole (it would fire at once)');
  assert.equal(timerDelay(t0 - 5, t0), 0);
  assert.equal(timerDelay(t0 + 5, t0), 5);

  const want = { directory: 'https://ca.example/dir', domains: ['a.example', 'b.example'] };
  const stored = { ...want, notBefore: t0, notAfter: t0 + 90 * DAY };
  assert.equal(orderReason(null, want, t0), 'no certificate');
  assert.equal(orderReason(stored, want, t0 + DAY), null);
  assert.equal(orderReason({ ...stored, domains: ['b.example', 'a.example'] }, want, t0 + DAY), null, 'order of names does not matter');
  assert.equal(orderReason(stored, want, t0 + 60 * DAY), 'due for renewal');
  assert.equal(orderReason(stored, { ...want, domains: ['a.example'] }, t0 + DAY), 'domains changed');
  assert.equal(orderReason(stored, { ...want, directory: 'https://other.example/dir' }, t0 + DAY), 'directory changed');
});

test('storage: 0600 files in a 0700 folder, atomic writes, broken or mismatched files reported, not used', async () => {
  const dir = join(makeTempDir('portcullis-acme-store-'), 'acme');
  const store = new AcmeStore(dir);
  await store.prepare();
  assert.equal(await store.readCertificate(), null);
  assert.equal(await store.readAccountKey(), null);
  await store.writeAccountKey('account key');
  const a = await certificate(['a.example'], Date.now() - DAY, Date.now() + DAY);
  const stored = await store.writeCertificate({ ...a, directory: 'https://ca.example/dir', domains: ['a.example'] });
  assert.equal(stored.serial, new X509Certificate(a.cert).serialNumber);
  assert.equal(statSync(dir).mode & 0o777, 0o700);
  assert.deepEqual(readdirSync(dir).sort(), ['account.key', 'cert.pem', 'key.pem', 'state.json'], 'no temp files left');
  for (const f of readdirSync(dir)) assert.equal(statSync(join(dir, f)).mode & 0o777, 0o600, f);
  const back = await store.readCertificate();
  assert.equal(back?.serial, stored.serial);
  assert.deepEqual(back?.domains, ['a.example']);
  assert.equal(await store.readAccountKey(), 'account key');

  const b = await certificate(['a.example'], Date.now() - DAY, Date.now() + DAY);
  writeFileSync(join(dir, 'key.pem'), b.key);
  await assert.rejects(store.readCertificate(), (e: unknown) => e instanceof UnusableAcmeStorage && e.code === 'PCL_ERR_ACME' && /key\.pem does not match the certificate/.test(e.message));
  writeFileSync(join(dir, 'state.json'), '{');
  await assert.rejects(store.readCertificate(), (e: unknown) => e instanceof UnusableAcmeStorage && /state\.json: not JSON/.test(e.message));
});

test('tls.acme in proxy.yaml: defaults, paths relative to the file, errors naming file, line and key', () => {
  const base = 'upstream: { url: "http://127.0.0.1:5000" }\nauth: { htpasswd: htpasswd }\n';
  const parse = (tlsPart: string): Config => parseConfig(`${tlsPart}\n${base}`, '/etc/portcullis/proxy.yaml');
  const error = (tlsPart: string): string => {
    try {
      parse(tlsPart);
    } catch (err) {
      return (err as Error).message;
    }
    return assert.fail('expected a config error');
  };
  const c = parse('tls:\n  acme:\n    email: ops@example.com\n    domains: [Registry.Example.com]\n    storage: acme');
  assert.deepEqual(c.tls, {
    cert: '/etc/portcullis/acme/cert.pem',
    key: '/etc/portcullis/acme/key.pem',
    minVersion: 'TLSv1.2',
    clientCA: null,
    clientAuth: 'require',
    acme: {
      email: 'ops@example.com',
      domains: ['registry.example.com'],
      directory: 'https://acme-v02.api.letsencrypt.org/directory',
      challenge: 'tls-alpn-01',
      storage: '/etc/portcullis/acme',
      ca: null,
      httpListen: null,
      httpsPort: 443,
    },
  });
  // The effective config (check-config output) loads back to the same thing.
  const again = parseConfig(JSON.stringify(effectiveConfig(c)), '/etc/portcullis/proxy.yaml');
  assert.deepEqual(again.tls, c.tls);

  const h = parse('tls:\n  acme:\n    email: ops@example.com\n    domains: [a.example]\n    storage: /var/lib/acme\n    challenge: http-01\n    httpListen: ":80"\n    httpsPort: 8443\n    ca: pebble.pem\n    directory: https://127.0.0.1:14000/dir');
  assert.deepEqual(h.tls?.acme?.httpListen, { host: '0.0.0.0', port: 80 });
  assert.equal(h.tls?.acme?.httpsPort, 8443, 'redirects go to the published https port, whatever listen says');
  assert.deepEqual(parseConfig(JSON.stringify(effectiveConfig(h)), '/etc/portcullis/proxy.yaml').tls, h.tls);
  assert.equal(h.tls?.acme?.ca, '/etc/portcullis/pebble.pem');
  assert.equal(h.tls?.acme?.directory, 'https://127.0.0.1:14000/dir');

  const acme = (lines: string): string => `tls:\n  acme:\n${lines}`;
  assert.equal(error(acme('    email: ops@example.com\n    domains: [a.example]\n    storage: s\n    renewBefore: 30d')), '/etc/portcullis/proxy.yaml:6: tls.acme.renewBefore: unknown key');
  assert.equal(error(acme('    domains: [a.example]\n    storage: s')), '/etc/portcullis/proxy.yaml:3: tls.acme.email: is required');
  assert.equal(error(acme('    email: ops@example.com\n    domains: []\n    storage: s')), '/etc/portcullis/proxy.yaml:4: tls.acme.domains: must list at least one domain');
  assert.equal(error(acme('    email: not-an-address\n    domains: [a.example]\n    storage: s')), '/etc/portcullis/proxy.yaml:3: tls.acme.email: must be an email address');
  assert.match(error(acme('    email: ops@example.com\n    domains: ["*.a.example"]\n    storage: s')), /proxy\.yaml:4: tls\.acme\.domains\.0: .*wildcard.*dns-01/);
  assert.match(error(acme('    email: ops@example.com\n    domains: [a.example]\n    storage: s\n    challenge: dns-01')), /proxy\.yaml:6: tls\.acme\.challenge: must be one of tls-alpn-01, http-01/);
  assert.match(error(acme('    email: ops@example.com\n    domains: [a.example]\n    storage: s\n    challenge: http-01')), /proxy\.yaml:\d: tls\.acme\.httpListen: is required with challenge: http-01/);
  assert.match(error(acme('    email: ops@example.com\n    domains: [a.example]\n    storage: s\n    directory: http://ca.example/dir')), /proxy\.yaml:6: tls\.acme\.directory: .*https:\/\//);
  assert.match(error('tls:\n  cert: c.pem\n  acme:\n    email: ops@example.com\n    domains: [a.example]\n    storage: s'), /proxy\.yaml:3: tls\.acme: cannot be combined with cert and key/);
  assert.match(error('tls: {}'), /proxy\.yaml:1: tls\.cert: is required \(or tls\.acme\)/);
  assert.match(error(acme('    email: ops@example.com\n    domains: [a.example]\n    storage: s\n    httpsPort: 0')), /proxy\.yaml:6: tls\.acme\.httpsPort: /);
  assert.throws(() => parse('tls:\n  acme:\n    domains: [a.example]\n    storage: s'), (e: unknown) => e instanceof PortcullisError && e.code === 'PCL_ERR_CONFIG');
  // Environment overrides reach the new keys like any other.
  const env = parseConfig(`tls:\n  acme:\n    email: ops@example.com\n    domains: [a.example]\n    storage: s\n${base}`, '/etc/portcullis/proxy.yaml', { PORTCULLIS_TLS_ACME_DOMAINS: '[b.example, c.example]' });
  assert.deepEqual(env.tls?.acme?.domains, ['b.example', 'c.example']);
});

test('metrics: expiry of the served certificate (minimum across workers) and orders by result', async () => {
  let validTo: Date | null = new Date(Date.now() + 3600_000);
  const a = new Registry();
  registerCertificateExpiry(a, () => validTo);
  const value = async (r: Registry<RegistryContentType>): Promise<number | undefined> => (await r.getSingleMetric('portcullis_tls_certificate_expiry_seconds')?.get())?.values[0]?.value;
  const v = await value(a);
  assert.ok(v !== undefined && v > 3590 && v <= 3600, String(v));
  const b = new Registry();
  registerCertificateExpiry(b, () => new Date(Date.now() + 60_000));
  const merged = AggregatorRegistry.aggregate([await a.getMetricsAsJSON(), await b.getMetricsAsJSON()]);
  const m = await value(merged);
  assert.ok(m !== undefined && m > 50 && m <= 60, `min over workers, not the sum: ${m}`);
  validTo = null;
  assert.ok(Number.isNaN(await value(a)), 'no certificate: NaN, so no expiry alert fires');

  const r = new Registry();
  const metrics = createAcmeMetrics(r);
  metrics.orders.inc({ result: 'error' });
  assert.match(await r.metrics(), /portcullis_acme_orders_total\{result="ok"\} 0\n.*portcullis_acme_orders_total\{result="error"\} 1/s);
});

test('workers: the primary publishes a tls-alpn-01 certificate to every worker and waits for all of them', async () => {
  // Two in-memory IPC pairs: `worker` is the primary's view, `proc` the worker's `process`.
  const pair = (id: number): { worker: WorkerLike & EventEmitter; challenges: TlsAlpnChallenges; connected: { value: boolean } } => {
    const toWorker = new EventEmitter();
    const connected = { value: true };
    const worker = Object.assign(new EventEmitter(), {
      id,
      isConnected: () => connected.value,
      send: (m: unknown) => {
        if (!connected.value) return false;
        setImmediate(() => toWorker.emit('message', m));
        return true;
      },
    });
    const challenges = new TlsAlpnChallenges();
    followAlpnRelay(challenges, {
      on: (e, l) => toWorker.on(e, l),
      off: (e, l) => toWorker.off(e, l),
      send: (m) => {
        setImmediate(() => worker.emit('message', m));
        return true;
      },
    });
    return { worker, challenges, connected };
  };
  const w1 = pair(1);
  const w2 = pair(2);
  const relay = new WorkerAlpnRelay(() => [w1.worker, w2.worker], { ackTimeoutMs: 300 });
  const pem = await createAlpnCertificate('a.example', 'tok.thumb');
  await relay.set('a.example', pem);
  assert.ok(w1.challenges.context('a.example') && w2.challenges.context('A.example'), 'both workers have it once set() resolves');
  const w3 = pair(3);
  relay.welcome(w3.worker);
  await eventually('a late worker gets the pending challenge', async () => w3.challenges.size === 1, 2000);
  await relay.delete('a.example');
  assert.equal(w1.challenges.size + w2.challenges.size, 0);

  // A worker that never answers: set() rejects naming it, so the order fails (and is retried) instead of
  // asking the CA to validate against a worker that would not answer.
  const mute = Object.assign(new EventEmitter(), { id: 7, isConnected: () => true, send: () => true });
  const stuck = new WorkerAlpnRelay(() => [w1.worker, mute], { ackTimeoutMs: 100 });
  await assert.rejects(stuck.set('a.example', pem), /workers 7 did not take the tls-alpn-01 challenge/);
});

test('manager: a failing renewal is retried with backoff while the stored certificate keeps serving', async () => {
  const storage = join(makeTempDir('portcullis-acme-mgr-'), 'acme');
  const directory = 'https://ca.example/dir';
  const domains = ['a.example'];
  const now = Date.now();
  // Stored: three quarters through its life, so due for renewal.
  const old = await certificate(domains, now - 3 * 3600_000, now + 3600_000);
  const seed = new AcmeStore(storage);
  await seed.prepare();
  const oldSerial = (await seed.writeCertificate({ ...old, directory, domains })).serial;
  const fresh = await certificate(domains, now, now + 90 * DAY);
  const { logger, lines } = memoryLogger();
  const registry = new Registry();
  const served: string[] = [];
  let calls = 0;
  const options: AcmeManagerOptions = {
    config: { email: 'ops@example.com', domains, directory, storage, ca: null },
    solver: noopSolver,
    logger,
    metrics: createAcmeMetrics(registry),
    retry: { minMs: 20, maxMs: 80 },
    onCertificate: (c) => served.push(c.serial),
    order: async () => {
      calls += 1;
      if (calls <= 3) throw new Error(`connect ECONNREFUSED (attempt ${calls})`);
      return fresh;
    },
  };
  const manager = new AcmeManager(options);
  cleanups.push(() => manager.stop());
  const failures: number[] = [];
  manager.on('orderFailed', (_e, delay) => failures.push(delay));
  const renewed = nextEvent<[{ serial: string }, string]>(manager, 'certificate', (_c, source) => source === 'order', 'renewed certificate', 10_000);
  await manager.start();
  assert.deepEqual(served, [oldSerial], 'the stored certificate serves at once');
  const [c] = await renewed;
  assert.equal(c.serial, new X509Certificate(fresh.cert).serialNumber);
  assert.deepEqual(served, [oldSerial, c.serial], 'nothing else was served in between');
  assert.equal(calls, 4);
  assert.equal(failures.length, 3);
  assert.ok(failures[0]! >= 10 && failures[0]! <= 20 && failures[2]! >= 40 && failures[2]! <= 80, `backoff grows within bounds: ${failures.join(', ')}`);
  assert.match(await registry.metrics(), /result="ok"\} 1\n.*result="error"\} 3/s);
  const failed = lines.filter((l) => l.msg.startsWith('acme: order failed'));
  assert.equal(failed.length, 3);
  assert.equal(failed[0]!['serving'], oldSerial, 'the log says which certificate keeps serving');
  assert.equal((await manager.store.readCertificate())?.serial, c.serial);
  await manager.stop();
});

test('storage lock: one holder at a time, kept alive by its holder, released only by it, taken over when stale', async () => {
  const path = join(makeTempDir('portcullis-acme-lock-'), 'order.lock');
  const a = new OrderLock(path, { staleMs: 60_000, heartbeatMs: 50 });
  const b = new OrderLock(path, { staleMs: 60_000 });
  const held = await a.acquire();
  assert.ok(held.acquired);
  assert.equal(statSync(path).mode & 0o777, 0o600);
  const busy = await b.acquire();
  assert.ok(!busy.acquired);
  assert.equal(busy.holder?.pid, process.pid, 'the holder is named, for the log');
  // The holder's heartbeat keeps the lease fresh while its order runs.
  const past = new Date(Date.now() - 3_600_000);
  utimesSync(path, past, past);
  await eventually('the heartbeat touches the lock', async () => statSync(path).mtimeMs > Date.now() - 60_000, 5000);
  assert.ok(!(await b.acquire()).acquired, 'a touched lock is not stale');
  await held.release();
  assert.equal(existsSync(path), false);

  // A holder that died (no heartbeat for staleMs) does not block renewal for ever.
  const dead = new OrderLock(path, { staleMs: 1000 });
  const first = await dead.acquire();
  assert.ok(first.acquired);
  const old = new Date(Date.now() - 5000);
  utimesSync(path, old, old);
  const taker = new OrderLock(path, { staleMs: 1000 });
  const taken = await taker.acquire();
  assert.ok(taken.acquired, 'a stale lock is taken over');
  const token = (JSON.parse(readFileSync(path, 'utf8')) as { token: string }).token;
  // The dead holder's late release leaves the new holder's lock alone.
  await first.release();
  assert.equal((JSON.parse(readFileSync(path, 'utf8')) as { token: string }).token, token);
  await taken.release();
  assert.equal(existsSync(path), false);
});

test('manager: two installations on one storage folder place one order; the other serves what was stored', async () => {
  const storage = join(makeTempDir('portcullis-acme-shared-'), 'acme');
  const directory = 'https://ca.example/dir';
  const domains = ['a.example'];
  const fresh = await certificate(domains, Date.now(), Date.now() + 90 * DAY);
  let release: () => void = () => {};
  const gate = new Promise<void>((r) => (release = r));
  let orders = 0;
  const make = (): { manager: AcmeManager; lines: LogRecord[] } => {
    const { logger, lines } = memoryLogger();
    const manager = new AcmeManager({
      config: { email: 'ops@example.com', domains, directory, storage, ca: null },
      solver: noopSolver,
      logger,
      retry: { minMs: 40, maxMs: 80 },
      onCertificate: () => {},
      order: async () => {
        orders += 1;
        await gate;
        return fresh;
      },
    });
    cleanups.push(() => manager.stop());
    return { manager, lines };
  };
  const a = make();
  const b = make();
  await a.manager.start();
  await eventually('the first installation is ordering', async () => orders === 1, 5000);
  const busy = nextEvent<[number]>(b.manager, 'lockBusy', () => true, 'the second installation finds the lock taken', 5000);
  const fromStorage = nextEvent<[{ serial: string }, string]>(b.manager, 'certificate', (_c, source) => source === 'storage', 'the second installation serves the stored certificate', 10_000);
  await b.manager.start();
  await busy;
  release();
  const [c] = await fromStorage;
  assert.equal(c.serial, new X509Certificate(fresh.cert).serialNumber);
  assert.equal(orders, 1, 'one order for both installations');
  assert.ok(b.lines.some((l) => l.msg === 'acme: storage already has a fitting certificate; serving it'));
  assert.equal(a.manager.current?.serial, c.serial);
  await Promise.all([a.manager.idle(), b.manager.idle()]);
  assert.equal(existsSync(join(storage, 'order.lock')), false, 'the lock is gone once both are done');
  await Promise.all([a.manager.stop(), b.manager.stop()]);
});

test('check-config with tls.acme: CA file and storage checked, nothing asked of the CA; serve with workers refuses an unreadable CA before forking', async () => {
  const dir = makeTempDir('portcullis-acme-check-');
  writeFileSync(join(dir, 'htpasswd'), '');
  writeFileSync(join(dir, 'not-a-ca.pem'), 'hello\n');
  writeFileSync(join(dir, 'a-file'), '');
  const config = (acmeLines: string, extra = ''): string => {
    const file = join(dir, `proxy-${Math.random().toString(36).slice(2)}.yaml`);
    writeFileSync(file, `listen: "127.0.0.1:0"\ntls:\n  acme:\n    email: ops@example.com\n    domains: [registry.example.com]\n${acmeLines}upstream: { url: "http://127.0.0.1:9" }\nauth: { htpasswd: htpasswd }\n${extra}`);
    return file;
  };
  const ok = await runCli(['check-config', config('    storage: state/acme\n')]);
  assert.equal(ok.code, 0, ok.stderr);
  assert.match(ok.stdout, /acme:\n\s+email: ops@example.com/);
  assert.match(ok.stdout, /directory: https:\/\/acme-v02\.api\.letsencrypt\.org\/directory/);
  assert.match(ok.stdout, /httpsPort: 443/);
  assert.equal(existsSync(join(dir, 'state')), false, 'check-config creates nothing');

  const badCa = await runCli(['check-config', config('    storage: acme\n    ca: not-a-ca.pem\n')]);
  assert.equal(badCa.code, 1);
  assert.match(badCa.stderr, /not-a-ca\.pem: tls\.acme\.ca is not a PEM certificate/);
  const badStorage = await runCli(['check-config', config('    storage: a-file/acme\n')]);
  assert.equal(badStorage.code, 1);
  assert.match(badStorage.stderr, /a-file\/acme: tls\.acme\.storage /);

  // With workers the primary reads the CA before it forks: the start fails instead of serving a placeholder.
  const serve = await runCli(['serve', '--config', config('    storage: acme\n    ca: missing.pem\n', 'workers: 2\n')]);
  assert.equal(serve.code, 1, serve.stdout);
  assert.match(serve.stderr, /missing\.pem: cannot read tls\.acme\.ca/);
  assert.doesNotMatch(serve.stdout, /worker listening/);
});

// ---------------------------------------------------------------------------------------------------
// Against pebble

const PEBBLE_DOMAIN = 'registry.portcullis.test';

interface Proxy {
  server: https.Server;
  port: number;
  manager: AcmeManager;
  logs: LogRecord[];
  registry: Registry;
  validations(): string[];
  close(): Promise<void>;
}

/**
 * The proxy's TLS server (http/server.ts createServer) with ACME wired the way runtime/instance.ts does:
 * placeholder until the first certificate, tls-alpn-01 routed on the same port, new certificates swapped in
 * with setSecureContext. `/slow` streams until `release` is called, for the in-flight download test.
 */
async function startProxy(o: {
  port: number;
  pebble: RunningPebble;
  storage: string;
  domains?: string[];
  challenge?: 'tls-alpn-01' | 'http-01';
  httpPort?: number;
  handler?: (req: http.IncomingMessage, res: http.ServerResponse) => void;
}): Promise<Proxy> {
  const domains = o.domains ?? [PEBBLE_DOMAIN];
  const dir = makeTempDir('portcullis-acme-proxy-');
  writeFileSync(join(dir, 'pebble-ca.pem'), o.pebble.ca);
  const config = parseConfig(
    `listen: "127.0.0.1:${o.port}"
tls:
  acme:
    email: ops@portcullis.test
    domains: [${domains.join(', ')}]
    directory: ${o.pebble.directory}
    ca: pebble-ca.pem
    storage: ${o.storage}
    challenge: ${o.challenge ?? 'tls-alpn-01'}
    httpsPort: ${o.port}
${o.httpPort ? `    httpListen: "127.0.0.1:${o.httpPort}"` : ''}
upstream: { url: "http://127.0.0.1:9" }
auth: { htpasswd: htpasswd }
`,
    join(dir, 'proxy.yaml'),
  );
  const acme = config.tls!.acme!;
  const { logger, lines } = memoryLogger();
  const alpn = acme.challenge === 'tls-alpn-01' ? new TlsAlpnChallenges() : null;
  const server = createServer(config, await placeholderMaterial(acme.domains), o.handler ?? ((_q, s) => s.end('ok\n')), new Metrics(), alpn ? { tlsAlpn: { challenges: alpn, onValidation: validationLog(logger) } } : {}) as https.Server;
  await new Promise<void>((r) => server.listen(o.port, '127.0.0.1', r));
  const registry = new Registry();
  let servedValidTo: Date | null = null;
  registerCertificateExpiry(registry, () => servedValidTo);
  const attached = await attachAcme(server, acme, alpn, { minVersion: config.tls!.minVersion, clientCA: null }, {
    logger,
    metrics: createAcmeMetrics(registry),
    tuning: { retry: { minMs: 300, maxMs: 2000 }, pollMinMs: 100, http: { timeoutMs: 5000, retries: 0 } },
    onCertificate: (c) => {
      servedValidTo = c.notAfter;
    },
  });
  const manager = attached.manager;
  let closed = false;
  const proxy: Proxy = {
    server,
    port: o.port,
    manager,
    logs: lines,
    registry,
    validations: () => lines.filter((l) => l.msg === 'acme: answered a tls-alpn-01 validation').map((l) => `${String(l['domain'])} ${String(l['tls'])}`),
    close: async () => {
      if (closed) return;
      closed = true;
      await attached.close();
      await attached.manager.idle();
      server.closeAllConnections();
      await new Promise((r) => server.close(r));
    },
  };
  openProxies.add(proxy);
  return proxy;
}

const openProxies = new Set<Proxy>();
/** Close what an earlier (possibly failed) test left listening, so its port is free again. */
async function closeProxies(): Promise<void> {
  for (const p of openProxies) await p.close();
  openProxies.clear();
}
cleanups.push(closeProxies);

async function orders(p: Proxy, result: 'ok' | 'error'): Promise<number> {
  const m = await p.registry.getSingleMetric('portcullis_acme_orders_total')?.get();
  return m?.values.find((v) => v.labels['result'] === result)?.value ?? NaN;
}

let pebbleA: RunningPebble | null = null;
let storageA = '';
let tlsPortA = 0;
let httpPortA = 0;
let firstSerial = '';

test('pebble, tls-alpn-01 on the TLS port: a first start obtains a certificate that verifies against the pebble root', async () => {
  tlsPortA = await freePort();
  httpPortA = await freePort();
  const started = Date.now();
  pebbleA = await startPebble({ tlsPort: tlsPortA, httpPort: httpPortA });
  cleanups.push(() => pebbleA?.close());
  storageA = join(makeTempDir('portcullis-acme-a-'), 'acme');
  const proxy = await startProxy({ port: tlsPortA, pebble: pebbleA, storage: storageA });
  const before = await handshake(tlsPortA, PEBBLE_DOMAIN);
  assert.match(before.subject, /CN=registry\.portcullis\.test/, 'the placeholder serves until the first certificate');
  const issued = nextEvent<[{ serial: string }, string]>(proxy.manager, 'certificate', (_c, s) => s === 'order', `first certificate\n${JSON.stringify(proxy.logs)}\n${pebbleA.output()}`, 30_000);
  await proxy.manager.start();
  const [cert] = await issued;
  firstSerial = cert.serial;

  const root = await pebbleA.root();
  const verified = await handshake(tlsPortA, PEBBLE_DOMAIN, { ca: root });
  assert.equal(verified.serial, firstSerial, 'new handshakes get the issued certificate, verified against pebble root for the name');
  await assert.rejects(handshake(tlsPortA, 'elsewhere.portcullis.test', { ca: root }), /Hostname\/IP does not match/);
  // Pebble validates from three "perspectives" at once (as Let's Encrypt does from several vantage points).
  assert.ok(proxy.validations().length >= 1, 'pebble validated over the proxy TLS port');
  assert.deepEqual(new Set(proxy.validations()), new Set([`${PEBBLE_DOMAIN} TLSv1.3`]));
  assert.ok(pebbleA.lookups().includes(PEBBLE_DOMAIN), 'pebble resolved the name through the DNS stub');
  assert.equal(pebbleA.orders(), 1);
  assert.equal(await orders(proxy, 'ok'), 1);
  const steps = proxy.logs.map((l) => l.msg);
  for (const step of ['acme: ordering a certificate', 'acme: new account key stored', 'acme: account ready', 'acme: order created', 'acme: challenge ready, asking the CA to validate', 'acme: challenge valid', 'acme: order finalized', 'acme: certificate downloaded', 'acme: certificate stored']) {
    assert.ok(steps.includes(step), `logged: ${step}`);
  }
  for (const f of readdirSync(storageA)) assert.equal(statSync(join(storageA, f)).mode & 0o777, 0o600, f);
  const expiry = (await proxy.registry.getSingleMetric('portcullis_tls_certificate_expiry_seconds')?.get())?.values[0]?.value ?? 0;
  assert.ok(expiry > 4 * 365 * 86_400, `expiry metric follows the served certificate: ${expiry}`);
  await proxy.close();
  console.log(`# first issuance against pebble: ${Date.now() - started} ms (pebble start included)`);
});

test('pebble: a restart serves the stored certificate and places no order', async () => {
  await closeProxies();
  assert.ok(pebbleA && firstSerial, 'needs the previous test');
  const proxy = await startProxy({ port: tlsPortA, pebble: pebbleA, storage: storageA });
  const fromStorage = nextEvent<[{ serial: string }, string]>(proxy.manager, 'certificate', () => true, 'stored certificate', 5000);
  await proxy.manager.start();
  const [c, source] = await fromStorage;
  assert.equal(source, 'storage');
  assert.equal(c.serial, firstSerial);
  assert.equal((await handshake(tlsPortA, PEBBLE_DOMAIN, { ca: await pebbleA.root() })).serial, firstSerial);
  const line = proxy.logs.find((l) => l.msg === 'acme: serving the stored certificate');
  assert.ok(line && (line['renewAt'] as Date).getTime() > Date.now() + 365 * DAY, 'the next order is years away');
  assert.equal(pebbleA.orders(), 1, 'pebble saw no new order');
  assert.equal(await orders(proxy, 'ok') + (await orders(proxy, 'error')), 0);
  await proxy.close();
});

test('pebble, http-01 on the plain-HTTP listener', async () => {
  await closeProxies();
  assert.ok(pebbleA);
  const domain = 'http01.portcullis.test';
  const proxy = await startProxy({
    port: tlsPortA,
    pebble: pebbleA,
    storage: join(makeTempDir('portcullis-acme-http-'), 'acme'),
    domains: [domain],
    challenge: 'http-01',
    httpPort: httpPortA,
  });
  const issued = nextEvent<[{ serial: string }, string]>(proxy.manager, 'certificate', (_c, s) => s === 'order', `http-01 certificate\n${JSON.stringify(proxy.logs)}`, 30_000);
  await proxy.manager.start();
  const [c] = await issued;
  assert.equal((await handshake(tlsPortA, domain, { ca: await pebbleA.root() })).serial, c.serial);
  assert.deepEqual(proxy.validations(), [], 'no tls-alpn-01 validation was involved');
  assert.ok(pebbleA.output().includes(`Attempting to validate w/ HTTP: http://${domain}:${httpPortA}/.well-known/acme-challenge/`), 'pebble validated over HTTP');
  await proxy.close();
});

test('pebble, workers: 2 — the primary orders, both workers answer tls-alpn-01 and serve the stored result', async () => {
  await closeProxies();
  assert.ok(pebbleA);
  const domain = 'cluster.portcullis.test';
  const storage = join(makeTempDir('portcullis-acme-cluster-'), 'acme');
  const out = new Map<number, LogRecord[]>();
  cluster.setupPrimary({ exec: fileURLToPath(new URL('./helpers/acme-worker.ts', import.meta.url)), execArgv: ['--import', 'tsx'], silent: true });
  const workers = [1, 2].map(() => cluster.fork({ PORT: String(tlsPortA), STORAGE: storage, DOMAIN: domain }));
  cleanups.push(() => Promise.all(workers.map((w) => new Promise<void>((r) => (w.isDead() ? r() : (w.once('exit', () => r()), w.kill('SIGTERM')))))));
  for (const w of workers) {
    out.set(w.id, []);
    let buffer = '';
    w.process.stdout?.on('data', (b: Buffer) => {
      buffer += b.toString();
      const lines = buffer.split('\n');
      buffer = lines.pop() ?? '';
      for (const l of lines) if (l.startsWith('{')) out.get(w.id)?.push(JSON.parse(l) as LogRecord);
    });
    w.process.stderr?.on('data', (b: Buffer) => out.get(w.id)?.push({ level: 'stderr', msg: b.toString() }));
  }
  await Promise.all(workers.map((w) => new Promise<void>((r) => w.once('listening', () => r()))));
  const dir = makeTempDir('portcullis-acme-cluster-cfg-');
  writeFileSync(join(dir, 'pebble-ca.pem'), pebbleA.ca);
  const acme = parseConfig(
    `tls:\n  acme:\n    email: ops@portcullis.test\n    domains: [${domain}]\n    directory: ${pebbleA.directory}\n    ca: pebble-ca.pem\n    storage: ${storage}\nupstream: { url: "http://127.0.0.1:9" }\nauth: { htpasswd: htpasswd }\n`,
    join(dir, 'proxy.yaml'),
  ).tls!.acme!;
  const { logger, lines } = memoryLogger();
  const primary = await startAcmeInPrimary(acme, () => Object.values(cluster.workers ?? {}).filter((w) => w !== undefined), {
    logger,
    tuning: { retry: { minMs: 300, maxMs: 2000 }, pollMinMs: 100, http: { timeoutMs: 5000, retries: 0 } },
  });
  cleanups.push(() => primary.close());
  const issued = nextEvent<[{ serial: string }, string]>(primary.manager, 'certificate', (_c, s) => s === 'order', `cluster certificate\n${JSON.stringify(lines)}\n${JSON.stringify([...out])}`, 30_000);
  await primary.start();
  const [c] = await issued;
  const reloaded = (id: number): boolean => (out.get(id) ?? []).some((l) => l.msg === 'reloaded' && l['serial'] === c.serial);
  await eventually(`both workers follow the stored certificate\n${JSON.stringify([...out])}`, async () => workers.every((w) => reloaded(w.id)), 10_000);
  const root = await pebbleA.root();
  for (let i = 0; i < 6; i++) {
    const h = await handshake(tlsPortA, domain, { ca: root });
    assert.equal(h.serial, c.serial);
  }
  const answeredBy = new Set(workers.filter((w) => (out.get(w.id) ?? []).some((l) => l.msg === 'acme: answered a tls-alpn-01 validation')).map((w) => w.id));
  // Pebble opens three validation connections at once and the cluster hands them out round-robin, so
  // both workers answer: each had the challenge certificate before the CA was asked to validate.
  assert.equal(answeredBy.size, 2, `validations answered by workers ${[...answeredBy].join(', ')}`);
  assert.equal(lines.filter((l) => l.msg === 'acme: order starting').length, 1, 'one order, placed by the primary');
  await primary.close();
  await Promise.all(workers.map((w) => new Promise<void>((r) => (w.isDead() ? r() : (w.once('exit', () => r()), w.kill('SIGTERM'))))));
});

for (const workers of [1, 2]) {
  test(`pebble, \`portcullis serve\` with tls.acme, workers: ${workers}: certificate, metrics, clean stop, no order after a restart`, async () => {
    await closeProxies();
    assert.ok(pebbleA);
    const domain = `cli${workers}.portcullis.test`;
    const dir = makeTempDir('portcullis-acme-cli-');
    const config = [
      `listen: "127.0.0.1:${tlsPortA}"`,
      'tls:',
      '  acme:',
      '    email: ops@portcullis.test',
      `    domains: [${domain}]`,
      `    directory: ${pebbleA.directory}`,
      '    ca: pebble-ca.pem',
      '    storage: acme',
      'upstream: { url: "http://127.0.0.1:9" }',
      'auth: { htpasswd: htpasswd }',
      'metrics: { listen: "127.0.0.1:0" }',
      `workers: ${workers}`,
      '',
    ].join('\n');
    const ordersBefore = pebbleA.orders();
    const p = await startPortcullis(config, { dir, files: { 'pebble-ca.pem': pebbleA.ca, htpasswd: '' } });
    cleanups.push(() => p.stop());
    const stored = await p.waitForLog('acme: certificate stored', 30_000);
    const root = await pebbleA.root();
    await eventually(`the new certificate serves\n${p.output()}`, async () => (await handshake(tlsPortA, domain, { ca: root })).serial === stored['serial'], 10_000);
    // With workers the expiry gauge is their minimum: it leaves the placeholder's one day once every
    // worker has reloaded the stored certificate.
    const text = await eventually(
      'expiry metric follows the stored certificate',
      async () => {
        const t = (await request(`${p.metricsUrl}/metrics`)).body.toString();
        return metric(t, 'portcullis_tls_certificate_expiry_seconds') > 4 * 365 * 86_400 && t;
      },
      10_000,
    );
    assert.equal(metric(text, 'portcullis_acme_orders_total', { result: 'ok' }), 1);
    assert.equal(metric(text, 'portcullis_acme_orders_total', { result: 'error' }), 0);
    assert.equal(await p.stop(), 0, p.output());
    assert.equal(pebbleA.orders(), ordersBefore + 1);

    const again = await startPortcullis(config, { dir });
    cleanups.push(() => again.stop());
    await again.waitForLog('acme: serving the stored certificate', 10_000);
    assert.equal((await handshake(tlsPortA, domain, { ca: root })).serial, stored['serial']);
    assert.equal(pebbleA.orders(), ordersBefore + 1, 'no order after the restart');
    assert.equal(await again.stop(), 0);
    if (workers === 2) await pebbleA.close();
  });
}

test('pebble, 12 s certificates: renewal under an open download, then a CA outage during renewal', async () => {
  await closeProxies();
  const tlsPort = await freePort();
  const pebble = await startPebble({ tlsPort, httpPort: await freePort(), validitySeconds: 12 });
  cleanups.push(() => pebble.close());
  let release: () => void = () => {};
  let sent = 0;
  const proxy = await startProxy({
    port: tlsPort,
    pebble,
    storage: join(makeTempDir('portcullis-acme-b-'), 'acme'),
    handler: (req, res) => {
      if (req.url !== '/slow') return void res.end('ok\n');
      res.writeHead(200, { 'Content-Type': 'application/octet-stream' });
      const chunk = Buffer.alloc(16 * 1024, 1);
      const timer = setInterval(() => {
        res.write(chunk);
        sent += chunk.length;
      }, 50);
      release = () => {
        clearInterval(timer);
        res.end();
      };
    },
  });
  const first = nextEvent<[{ serial: string; notAfter: Date }, string]>(proxy.manager, 'certificate', (_c, s) => s === 'order', 'first short-lived certificate', 30_000);
  await proxy.manager.start();
  const [c1] = await first;
  const root = await pebble.root();
  assert.equal((await handshake(tlsPort, PEBBLE_DOMAIN, { ca: root })).serial, c1.serial);

  // A download on a connection made with the first certificate.
  const renewed = nextEvent<[{ serial: string }, string]>(proxy.manager, 'certificate', (c, s) => s === 'order' && c.serial !== c1.serial, 'renewal', 30_000);
  const download = new Promise<{ bytes: number; serial: string }>((resolve, reject) => {
    const req = https.get({ host: '127.0.0.1', port: tlsPort, servername: PEBBLE_DOMAIN, path: '/slow', ca: root, agent: false }, (res) => {
      let bytes = 0;
      const serial = (res.socket as tls.TLSSocket).getPeerX509Certificate()?.serialNumber ?? '';
      res.on('data', (b: Buffer) => (bytes += b.length));
      res.on('end', () => resolve({ bytes, serial }));
      res.on('error', reject);
    });
    req.on('error', reject);
  });
  await eventually('download under way', async () => sent > 0, 5000);
  const [c2] = await renewed;
  assert.equal((await handshake(tlsPort, PEBBLE_DOMAIN, { ca: root })).serial, c2.serial, 'a new handshake sees the new serial');
  const sentAtRenewal = sent;
  await eventually('download still flowing after the swap', async () => sent > sentAtRenewal + 64 * 1024, 5000);
  release();
  const got = await download;
  assert.equal(got.serial, c1.serial, 'the open connection kept its certificate');
  assert.equal(got.bytes, sent, 'and its download completed whole');

  // The CA goes away before the next renewal: the order fails, the current certificate keeps serving,
  // a retry after the CA is back succeeds (pebble restarts with a new root and no accounts).
  await pebble.stop();
  const failed = nextEvent<[Error, number]>(proxy.manager, 'orderFailed', () => true, 'failed renewal while pebble is down', 30_000);
  const recovered = nextEvent<[{ serial: string }, string]>(proxy.manager, 'certificate', (c, s) => s === 'order' && c.serial !== c2.serial, 'renewal after the outage', 40_000);
  const [err] = await failed;
  assert.match(err.message, /ECONNREFUSED/);
  assert.equal((await handshake(tlsPort, PEBBLE_DOMAIN)).serial, c2.serial, 'the old certificate keeps serving during the outage');
  assert.ok((await orders(proxy, 'error')) >= 1);
  await pebble.restart();
  const [c3] = await recovered;
  const newRoot = await pebble.root();
  assert.notEqual(newRoot, root, 'pebble restarted with a new root');
  assert.equal((await handshake(tlsPort, PEBBLE_DOMAIN, { ca: newRoot })).serial, c3.serial);
  const retried = proxy.logs.filter((l) => l.msg === 'acme: order starting' && l['reason'] === 'retry');
  assert.ok(retried.length >= 1, 'the certificate came from a retry');
  await proxy.close();
  await pebble.close();
});

