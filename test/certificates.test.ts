/**
 * `portcullis certs init` and the certificate functions, checked by independent implementations: the openssl
 * CLI (verify, x509 -text), Node's X509Certificate, and a real TLS handshake with Node's tls module.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { X509Certificate, createPrivateKey } from 'node:crypto';
import { existsSync, writeFileSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import tls from 'node:tls';
import { promisify } from 'node:util';
import {
  MAX_SERVER_DAYS,
  createCertificateAuthority,
  createServerCertificate,
  normalizeIp,
} from '../src/tls/ca.js';
import { certsCommand } from '../src/cli/commands/certs.js';
import { PortcullisError } from '../src/errors.js';
import { sink } from './helpers/sink.js';

const execFileP = promisify(execFile);
const DAY_MS = 86_400_000;

let root: string;
before(async () => {
  root = await mkdtemp(join(tmpdir(), 'portcullis-certs-'));
});
after(async () => {
  await rm(root, { recursive: true, force: true });
});

let dirNo = 0;
const newDir = (): string => join(root, `d${++dirNo}`);

async function certs(argv: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const out = sink();
  const err = sink();
  const code = await certsCommand(argv, { stdout: out.stream, stderr: err.stream });
  return { code, stdout: out.text(), stderr: err.text() };
}

async function openssl(args: string[]): Promise<{ ok: boolean; out: string }> {
  try {
    const r = await execFileP('openssl', args);
    return { ok: true, out: r.stdout + r.stderr };
  } catch (err) {
    const e = err as { stdout?: string; stderr?: string };
    return { ok: false, out: `${e.stdout ?? ''}${e.stderr ?? ''}` };
  }
}

function pemBlocks(text: string): string[] {
  return text.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----\n?/g) ?? [];
}

/** Minimal DER reader: the raw bytes of the issuer and subject of a certificate. Go compares these byte for byte. */
function rawNames(pem: string): { issuer: Buffer; subject: Buffer } {
  const der = new X509Certificate(pem).raw;
  const tlv = (buf: Buffer, at: number): { start: number; end: number; content: number } => {
    let len = buf[at + 1]!;
    let content = at + 2;
    if (len & 0x80) {
      const n = len & 0x7f;
      len = 0;
      for (let i = 0; i < n; i++) len = len * 256 + buf[at + 2 + i]!;
      content = at + 2 + n;
    }
    return { start: at, end: content + len, content };
  };
  const cert = tlv(der, 0);
  const tbs = tlv(der, cert.content);
  const fields: Array<{ start: number; end: number }> = [];
  for (let at = tbs.content; at < tbs.end; ) {
    const f = tlv(der, at);
    fields.push(f);
    at = f.end;
  }
  const offset = der[tbs.content] === 0xa0 ? 1 : 0; // [0] version present
  const pick = (i: number): Buffer => der.subarray(fields[i + offset]!.start, fields[i + offset]!.end);
  return { issuer: pick(2), subject: pick(4) };
}

interface Issued {
  dir: string;
  caPem: string;
  chainPem: string;
  keyPem: string;
  stdout: string;
}

async function init(extra: string[] = []): Promise<Issued> {
  const dir = newDir();
  const r = await certs(['init', '--dir', dir, ...extra]);
  assert.equal(r.code, 0, r.stderr);
  return {
    dir,
    caPem: await readFile(join(dir, 'ca.crt'), 'utf8'),
    chainPem: await readFile(join(dir, 'server.crt'), 'utf8'),
    keyPem: await readFile(join(dir, 'server.key'), 'utf8'),
    stdout: r.stdout,
  };
}

/** Handshake against a real TLS server that presents the generated chain; resolve with the client's verdict. */
async function handshake(
  issued: Issued,
  client: { host: string; servername?: string; ca?: string },
  listenHost = '127.0.0.1',
): Promise<{ authorized: boolean; error: string | null }> {
  const server = tls.createServer({ cert: issued.chainPem, key: issued.keyPem }, (s) => s.end('hello'));
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, listenHost, resolve);
  });
  const port = (server.address() as AddressInfo).port;
  try {
    return await new Promise((resolve) => {
      const opts: tls.ConnectionOptions = { host: client.host, port, ca: client.ca ?? issued.caPem };
      if (client.servername !== undefined) opts.servername = client.servername;
      const socket = tls.connect(opts, () => {
        const authorized = socket.authorized;
        socket.end();
        resolve({ authorized, error: null });
      });
      socket.on('error', (err: NodeJS.ErrnoException) => resolve({ authorized: false, error: err.code ?? err.message }));
    });
  } finally {
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }
}

describe('certs init: defaults', () => {
  let issued: Issued;
  before(async () => {
    issued = await init(['--port', '6000']);
  });

  it('writes ca.crt, ca.key, server.crt and server.key, keys with mode 0600', async () => {
    for (const f of ['ca.key', 'server.key']) {
      const st = await stat(join(issued.dir, f));
      assert.equal(st.mode & 0o777, 0o600, `${f} mode ${(st.mode & 0o777).toString(8)}`);
    }
    for (const f of ['ca.crt', 'server.crt']) {
      const st = await stat(join(issued.dir, f));
      assert.equal(st.mode & 0o022, 0, `${f} must not be group/other writable`);
    }
    assert.match(issued.keyPem, /^-----BEGIN PRIVATE KEY-----\n/, 'PKCS#8 PEM');
    assert.match(await readFile(join(issued.dir, 'ca.key'), 'utf8'), /^-----BEGIN PRIVATE KEY-----\n/);
  });

  it('server.crt is the full chain: server certificate, then the CA', () => {
    const blocks = pemBlocks(issued.chainPem);
    assert.equal(blocks.length, 2);
    assert.equal(new X509Certificate(blocks[1]!).fingerprint256, new X509Certificate(issued.caPem).fingerprint256);
    const leaf = new X509Certificate(blocks[0]!);
    assert.equal(leaf.ca, false);
    assert.ok(leaf.checkIssued(new X509Certificate(issued.caPem)));
  });

  it('openssl verify accepts the chain (x509_strict, sslserver purpose, host names and IPs)', async () => {
    const ca = join(issued.dir, 'ca.crt');
    const cert = join(issued.dir, 'server.crt');
    const base = ['verify', '-x509_strict', '-purpose', 'sslserver', '-CAfile', ca];
    for (const extra of [[], ['-verify_hostname', 'localhost'], ['-verify_ip', '127.0.0.1'], ['-verify_ip', '::1']]) {
      const r = await openssl([...base, ...extra, cert]);
      assert.ok(r.ok && /: OK/.test(r.out), `${extra.join(' ')}: ${r.out}`);
    }
    const wrongName = await openssl([...base, '-verify_hostname', 'not-in-the-cert.example', cert]);
    assert.equal(wrongName.ok, false, 'a name outside the SANs must fail');
    const other = await init();
    const wrongCa = await openssl(['verify', '-CAfile', join(other.dir, 'ca.crt'), cert]);
    assert.equal(wrongCa.ok, false, 'another CA must not verify this chain');
  });

  it('openssl x509 -text shows SANs, serverAuth, CA:FALSE and key identifiers linking to the CA', async () => {
    const leaf = await openssl(['x509', '-noout', '-text', '-in', join(issued.dir, 'server.crt')]);
    assert.ok(leaf.ok, leaf.out);
    assert.match(leaf.out, /DNS:localhost/);
    assert.match(leaf.out, /IP Address:127\.0\.0\.1/);
    assert.match(leaf.out, /IP Address:0:0:0:0:0:0:0:1/);
    assert.match(leaf.out, /Extended Key Usage:\s*\n\s*TLS Web Server Authentication/);
    assert.match(leaf.out, /Basic Constraints: critical\s*\n\s*CA:FALSE/);
    assert.match(leaf.out, /Key Usage: critical\s*\n\s*Digital Signature\s*\n/);
    assert.match(leaf.out, /Public Key Algorithm: id-ecPublicKey[\s\S]*NIST CURVE: P-256/);
    const ca = await openssl(['x509', '-noout', '-text', '-in', join(issued.dir, 'ca.crt')]);
    assert.match(ca.out, /Basic Constraints: critical\s*\n\s*CA:TRUE/);
    assert.match(ca.out, /Key Usage: critical\s*\n\s*Certificate Sign, CRL Sign/);
    const aki = /Authority Key Identifier:\s*\n\s*(?:keyid:)?([0-9A-F:]+)/.exec(leaf.out)?.[1];
    const caSki = /Subject Key Identifier:\s*\n\s*([0-9A-F:]+)/.exec(ca.out)?.[1];
    const leafSki = /Subject Key Identifier:\s*\n\s*([0-9A-F:]+)/.exec(leaf.out)?.[1];
    assert.ok(aki && caSki && leafSki);
    assert.equal(aki, caSki);
    assert.notEqual(leafSki, caSki);
  });

  it('keys match their certificates', () => {
    const leaf = new X509Certificate(pemBlocks(issued.chainPem)[0]!);
    const ca = new X509Certificate(issued.caPem);
    assert.equal(leaf.checkPrivateKey(createPrivateKey(issued.keyPem)), true);
    assert.equal(ca.checkPrivateKey(createPrivateKey(issued.keyPem)), false);
  });

  it('validity: server at most 825 days, CA about 10 years, random positive serials', () => {
    const leaf = new X509Certificate(pemBlocks(issued.chainPem)[0]!);
    const ca = new X509Certificate(issued.caPem);
    const leafDays = (Date.parse(leaf.validTo) - Date.parse(leaf.validFrom)) / DAY_MS;
    assert.ok(leafDays <= MAX_SERVER_DAYS && leafDays > MAX_SERVER_DAYS - 1, `server validity ${leafDays} days`);
    assert.ok(Date.parse(leaf.validFrom) <= Date.now());
    const caDays = (Date.parse(ca.validTo) - Date.parse(ca.validFrom)) / DAY_MS;
    assert.ok(caDays >= 3649 && caDays <= 3651, `CA validity ${caDays} days`);
    assert.notEqual(leaf.serialNumber, ca.serialNumber);
    assert.ok(leaf.serialNumber.length >= 30, `serial ${leaf.serialNumber} has at least 120 random bits`);
    assert.ok(parseInt(leaf.serialNumber.slice(0, 2), 16) < 0x80, 'serial is positive');
  });

  it('a real TLS client trusting only ca.crt connects by name (localhost) and by IP (127.0.0.1)', async () => {
    const byName = await handshake(issued, { host: '127.0.0.1', servername: 'localhost' });
    assert.deepEqual(byName, { authorized: true, error: null });
    const byIp = await handshake(issued, { host: '127.0.0.1' });
    assert.deepEqual(byIp, { authorized: true, error: null });
  });

  it('the TLS client refuses a name outside the SANs and a server it has no CA for', async () => {
    const wrongName = await handshake(issued, { host: '127.0.0.1', servername: 'elsewhere.example' });
    assert.equal(wrongName.error, 'ERR_TLS_CERT_ALTNAME_INVALID');
    const other = await init();
    const wrongCa = await handshake(issued, { host: '127.0.0.1', servername: 'localhost', ca: other.caPem });
    assert.equal(wrongCa.authorized, false);
    assert.ok(wrongCa.error, 'handshake must fail with a foreign CA');
  });

  it('prints the client trust steps with HOST:PORT', () => {
    const out = issued.stdout;
    const ca = join(issued.dir, 'ca.crt');
    assert.ok(
      out.includes(`sudo mkdir -p /etc/docker/certs.d/localhost:6000 && sudo cp ${ca} /etc/docker/certs.d/localhost:6000/ca.crt`),
      out,
    );
    assert.ok(out.includes(`/etc/containers/certs.d/localhost:6000/ca.crt`));
    assert.ok(out.includes(`cp ${ca} /usr/local/share/ca-certificates/portcullis.crt && sudo update-ca-certificates`));
    assert.ok(out.includes('/etc/containerd/certs.d/localhost:6000/hosts.toml'));
    assert.ok(out.includes('ca = "/etc/containerd/certs.d/localhost:6000/ca.crt"'));
    assert.ok(out.includes('docker login localhost:6000'));
    assert.ok(!out.includes('ca.key /etc'), 'never tells anyone to copy the CA key');
  });
});

describe('certs init: second run', () => {
  it('refuses to replace server.crt without --force, and writes nothing', async () => {
    const first = await init();
    const r = await certs(['init', '--dir', first.dir]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /server\.crt already exists/);
    assert.match(r.stderr, /--force/);
    assert.equal(await readFile(join(first.dir, 'server.crt'), 'utf8'), first.chainPem);
    assert.equal(await readFile(join(first.dir, 'server.key'), 'utf8'), first.keyPem);
  });

  it('with --force reissues the server certificate and reuses the CA', async () => {
    const first = await init();
    const caKey = await readFile(join(first.dir, 'ca.key'), 'utf8');
    const r = await certs(['init', '--dir', first.dir, '--force', '--host', 'registry.example.test', '--ip', '10.9.8.7']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /Reused the CA/);
    assert.equal(await readFile(join(first.dir, 'ca.crt'), 'utf8'), first.caPem, 'CA certificate unchanged');
    assert.equal(await readFile(join(first.dir, 'ca.key'), 'utf8'), caKey, 'CA key unchanged');
    const chain = await readFile(join(first.dir, 'server.crt'), 'utf8');
    assert.notEqual(chain, first.chainPem);
    const leaf = new X509Certificate(pemBlocks(chain)[0]!);
    assert.equal(leaf.subjectAltName, 'DNS:registry.example.test, IP Address:10.9.8.7', 'explicit names replace the defaults');
    const v = await openssl(['verify', '-x509_strict', '-verify_hostname', 'registry.example.test', '-CAfile', join(first.dir, 'ca.crt'), join(first.dir, 'server.crt')]);
    assert.ok(v.ok, v.out);
    assert.equal((await stat(join(first.dir, 'server.key'))).mode & 0o777, 0o600);
  });

  it('refuses a CA certificate without its key (and the reverse) instead of making a new CA', async () => {
    const first = await init();
    const dir = newDir();
    await mkdir(dir);
    await writeFile(join(dir, 'ca.crt'), first.caPem);
    const r = await certs(['init', '--dir', dir]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /ca\.crt exists but .*ca\.key does not/);
    assert.equal(existsSync(join(dir, 'server.crt')), false);
    assert.equal(existsSync(join(dir, 'ca.key')), false);
  });

  it('refuses a CA key that does not belong to ca.crt', async () => {
    const a = await init();
    const b = await init();
    const dir = newDir();
    await mkdir(dir);
    await writeFile(join(dir, 'ca.crt'), a.caPem);
    await writeFile(join(dir, 'ca.key'), await readFile(join(b.dir, 'ca.key')));
    const r = await certs(['init', '--dir', dir]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /does not belong to the CA certificate/);
    assert.equal(existsSync(join(dir, 'server.crt')), false);
  });
});

describe('certs init: an existing CA made with openssl', () => {
  it('signs with an RSA CA whose subject has several attributes; issuer bytes equal the CA subject bytes', async () => {
    const dir = newDir();
    await mkdir(dir);
    const mk = await openssl([
      'req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', join(dir, 'ca.key'), '-out', join(dir, 'ca.crt'),
      '-days', '3000', '-subj', '/C=DE/O=Acme Corp/OU=Platform/CN=Acme Internal Root',
      '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign',
    ]);
    assert.ok(mk.ok, mk.out);
    const r = await certs(['init', '--dir', dir, '--host', 'reg.acme.test']);
    assert.equal(r.code, 0, r.stderr);
    const v = await openssl(['verify', '-x509_strict', '-purpose', 'sslserver', '-verify_hostname', 'reg.acme.test', '-CAfile', join(dir, 'ca.crt'), join(dir, 'server.crt')]);
    assert.ok(v.ok, v.out);
    const chain = await readFile(join(dir, 'server.crt'), 'utf8');
    const caPem = await readFile(join(dir, 'ca.crt'), 'utf8');
    assert.ok(rawNames(pemBlocks(chain)[0]!).issuer.equals(rawNames(caPem).subject));
    assert.ok(!rawNames(pemBlocks(chain)[0]!).subject.equals(rawNames(caPem).subject));
    const text = await openssl(['x509', '-noout', '-text', '-in', join(dir, 'server.crt')]);
    assert.match(text.out, /Signature Algorithm: sha256WithRSAEncryption/);
  });

  it('shortens the server certificate to the CA expiry, with a warning', async () => {
    const dir = newDir();
    await mkdir(dir);
    const mk = await openssl([
      'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-384', '-nodes', '-keyout', join(dir, 'ca.key'),
      '-out', join(dir, 'ca.crt'), '-days', '30', '-subj', '/CN=Short CA',
      '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign',
    ]);
    assert.ok(mk.ok, mk.out);
    const r = await certs(['init', '--dir', dir, '--host', 'short.test']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, /warning: the CA expires on/);
    const leaf = new X509Certificate(pemBlocks(await readFile(join(dir, 'server.crt'), 'utf8'))[0]!);
    const ca = new X509Certificate(await readFile(join(dir, 'ca.crt'), 'utf8'));
    assert.equal(Date.parse(leaf.validTo), Date.parse(ca.validTo));
    const text = await openssl(['x509', '-noout', '-text', '-in', join(dir, 'server.crt')]);
    assert.match(text.out, /Signature Algorithm: ecdsa-with-SHA384/);
    const v = await openssl(['verify', '-x509_strict', '-CAfile', join(dir, 'ca.crt'), join(dir, 'server.crt')]);
    assert.ok(v.ok, v.out);
  });

  it('refuses a certificate that is not a CA', async () => {
    const first = await init();
    const dir = newDir();
    await mkdir(dir);
    await writeFile(join(dir, 'ca.crt'), pemBlocks(first.chainPem)[0]!);
    await writeFile(join(dir, 'ca.key'), first.keyPem);
    const r = await certs(['init', '--dir', dir]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /is not a CA/);
  });
});

describe('certs init: a folder the system refuses', () => {
  it('a file in the path: one line naming the command and the cause, exit 1', async () => {
    const file = `${newDir()}-file`;
    writeFileSync(file, 'x');
    const r = await certs(['init', '--dir', join(file, 'certs')]);
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, /^portcullis certs: ENOTDIR: not a directory, .*\n$/);
  });
});

describe('certs init: usage errors exit 2 and write nothing', () => {
  const cases: Array<[string, string[], RegExp]> = [
    ['no action', [], /missing action/],
    ['unknown action', ['renew'], /unknown action "renew"/],
    ['unknown option', ['init', '--bogus'], /Unknown option '--bogus'/],
    ['days above 825', ['init', '--days', '826'], /--days must be from 1 to 825/],
    ['days not a number', ['init', '--days', '1y'], /--days must be a whole number/],
    ['port out of range', ['init', '--port', '70000'], /--port must be from 1 to 65535/],
    ['bad host name', ['init', '--host', 'under_score.example'], /not a valid DNS name/],
    ['bad IP', ['init', '--ip', '300.1.1.1'], /not an IPv4 or IPv6 address/],
    ['stray argument', ['init', 'extra'], /Unexpected argument 'extra'|unexpected/i],
  ];
  for (const [what, argv, message] of cases) {
    it(what, async () => {
      const dir = newDir();
      const r = await certs(argv.length === 0 ? [] : [...argv, '--dir', dir]);
      assert.equal(r.code, 2, r.stderr);
      assert.match(r.stderr, message);
      assert.equal(existsSync(dir), false, 'nothing written');
    });
  }

  it('--help prints the usage on stdout and exits 0', async () => {
    const r = await certs(['init', '--help']);
    assert.equal(r.code, 0);
    assert.match(r.stdout, /Usage: portcullis certs init/);
  });
});

describe('certificate functions', () => {
  it('an IP given as --host goes into an IP SAN; IPv4-mapped IPv6 and wildcards are encoded', async () => {
    const issued = await init(['--host', '192.0.2.10', '--host', '*.apps.example.test', '--ip', '::ffff:192.0.2.11']);
    const leaf = new X509Certificate(pemBlocks(issued.chainPem)[0]!);
    assert.equal(leaf.subjectAltName, 'DNS:*.apps.example.test, IP Address:192.0.2.10, IP Address:0:0:0:0:0:FFFF:C000:20B');
    assert.equal(leaf.checkHost('registry.apps.example.test'), '*.apps.example.test');
    assert.equal(leaf.checkHost('apps.example.test'), undefined);
    assert.equal(leaf.checkIP('192.0.2.10'), '192.0.2.10');
    assert.match(issued.stdout, /docker login 192\.0\.2\.10:5043/);
    assert.equal(normalizeIp('[::1]'), '::1');
  });

  it('rejects a certificate with no names, and validity beyond 825 days', async () => {
    const ca = await createCertificateAuthority({ commonName: 'Test CA', days: 30 });
    await assert.rejects(createServerCertificate(ca, { hosts: [], ips: [] }), (e: unknown) => e instanceof PortcullisError && e.code === 'PCL_ERR_USAGE');
    await assert.rejects(
      createServerCertificate(ca, { hosts: ['a.test'], ips: [], days: MAX_SERVER_DAYS + 1 }),
      (e: unknown) => e instanceof PortcullisError && e.code === 'PCL_ERR_USAGE',
    );
    const ok = await createServerCertificate(ca, { hosts: ['a.test'], ips: [], days: 7 });
    assert.equal(pemBlocks(ok.chain).length, 2);
    assert.equal(ok.chain, ok.cert + ca.cert);
    assert.ok(Math.abs(ok.notAfter.getTime() - ok.notBefore.getTime() - 7 * DAY_MS) < 1000);
  });

  it('refuses a CA that expires within a day', async () => {
    const ca = await createCertificateAuthority({ commonName: 'Test CA', days: 30 });
    await assert.rejects(
      createServerCertificate(ca, { hosts: ['a.test'], ips: [], now: new Date(Date.now() + 40 * DAY_MS) }),
      (e: unknown) => e instanceof PortcullisError && e.code === 'PCL_ERR_TLS' && /expire/.test(e.message),
    );
  });
});
