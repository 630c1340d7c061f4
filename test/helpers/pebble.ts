/**
 * Pebble (Let's Encrypt's ACME test server, Debian package `pebble`) for tests, with real validation.
 *
 * - Free ports for its ACME and management listeners; `httpPort`/`tlsPort` are where it validates
 *   http-01 and tls-alpn-01: the test's own listeners.
 * - Its listeners need a certificate: the Debian package does not ship pebble's test/certs, so one is made
 *   here (helpers/tls.ts); `ca` is what a client trusts for the directory (tls.acme.ca).
 * - Names resolve through a DNS stub in this process (`-dnsserver`): every A query gets 127.0.0.1 and
 *   AAAA gets no answer, so pebble connects to 127.0.0.1 whatever the domain.
 * - Pebble keeps everything in memory and makes a new root CA at every start: after `restart()` the
 *   accounts are gone and `root()` is a different certificate.
 * - PEBBLE_VA_NOSLEEP=1 (no random 0-5 s wait before validating) and PEBBLE_AUTHZREUSE=0 (every order
 *   proves control again); validation itself is real (never PEBBLE_VA_ALWAYS_VALID).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import dgram from 'node:dgram';
import { writeFileSync } from 'node:fs';
import https from 'node:https';
import { join } from 'node:path';
import { freePort, makeTempDir, TailBuffer, terminate, track } from './proc.js';
import { makeTestCerts } from './tls.js';
import { eventually } from './wait.js';

export const PEBBLE = process.env['PORTCULLIS_TEST_PEBBLE'] ?? '/usr/bin/pebble';

export interface PebbleOptions {
  /** Port pebble connects to for http-01. */
  httpPort: number;
  /** Port pebble connects to for tls-alpn-01. */
  tlsPort: number;
  /** Lifetime of issued certificates in seconds (pebble's certificateValidityPeriod). Default 5 years. */
  validitySeconds?: number;
  /** Extra environment for pebble. */
  env?: Record<string, string>;
}

export interface RunningPebble {
  /** The ACME directory URL. */
  directory: string;
  /** PEM that pebble's own listeners chain to: trust it for `directory` (tls.acme.ca). */
  ca: string;
  caFile: string;
  /** The root that signs issued certificates (management /roots/0). Changes at every (re)start. */
  root(): Promise<string>;
  /** Orders pebble has accepted since its last start. */
  orders(): number;
  /** Certificates pebble has issued since its last start. */
  issued(): number;
  /** Stdout and stderr so far (all starts). */
  output(): string;
  /** DNS names looked up through the stub so far. */
  lookups(): string[];
  /** Kill it (the ports close; in-memory state is lost). */
  stop(): Promise<void>;
  /** Start again on the same ports, with a fresh state. */
  restart(): Promise<void>;
  /** Stop pebble and the DNS stub. */
  close(): Promise<void>;
}

export async function startPebble(o: PebbleOptions): Promise<RunningPebble> {
  const dir = makeTempDir('portcullis-pebble-');
  const certs = await makeTestCerts({ san: ['DNS:localhost', 'IP:127.0.0.1'] });
  const dns = await startDnsStub();
  const log = new TailBuffer(1024 * 1024);
  let child: ChildProcess | null = null;
  let sinceStart = 0;
  let listen = 0;
  let management = 0;

  const launch = async (): Promise<void> => {
    const configFile = join(dir, 'pebble-config.json');
    writeFileSync(
      configFile,
      JSON.stringify({
        pebble: {
          listenAddress: `127.0.0.1:${listen}`,
          managementListenAddress: `127.0.0.1:${management}`,
          certificate: certs.certFile,
          privateKey: certs.keyFile,
          httpPort: o.httpPort,
          tlsPort: o.tlsPort,
          ocspResponderURL: '',
          externalAccountBindingRequired: false,
          certificateValidityPeriod: o.validitySeconds ?? 157_766_400,
        },
      }),
    );
    sinceStart = log.toString().length;
    const c = spawn(PEBBLE, ['-config', configFile, '-dnsserver', `127.0.0.1:${dns.port}`], {
      env: { PATH: process.env['PATH'] ?? '/usr/bin:/bin', PEBBLE_VA_NOSLEEP: '1', PEBBLE_AUTHZREUSE: '0', ...o.env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    track(c);
    c.stdout?.on('data', (b: Buffer) => log.push(b));
    c.stderr?.on('data', (b: Buffer) => log.push(b));
    child = c;
    await eventually(
      `pebble answering on ${listen} and ${management}\n--- pebble output ---\n${log.toString()}`,
      async () => {
        if (c.exitCode !== null) throw new Error(`pebble exited with ${c.exitCode}: ${log.toString().slice(sinceStart)}`);
        await get(`https://127.0.0.1:${listen}/dir`, certs.ca);
        await get(`https://127.0.0.1:${management}/roots/0`, certs.ca);
        return true;
      },
      15_000,
    );
  };

  // A port from freePort() can be taken before pebble binds it: try a few pairs.
  for (let attempt = 1; ; attempt++) {
    listen = await freePort();
    management = await freePort();
    try {
      await launch();
      break;
    } catch (err) {
      if (child) await terminate(child, 'SIGKILL');
      if (attempt >= 3 || !/address already in use/.test(log.toString().slice(sinceStart))) {
        dns.close();
        throw err;
      }
    }
  }

  const current = (): string => log.toString().slice(sinceStart);
  let dnsOpen = true;
  const stop = async (): Promise<void> => {
    if (child) await terminate(child, 'SIGTERM', 3000);
    child = null;
  };
  return {
    directory: `https://127.0.0.1:${listen}/dir`,
    ca: certs.ca,
    caFile: certs.caFile,
    root: () => get(`https://127.0.0.1:${management}/roots/0`, certs.ca),
    orders: () => current().split('\n').filter((l) => l.includes('Added order')).length,
    issued: () => current().split('\n').filter((l) => l.includes('Issued certificate serial')).length,
    output: () => log.toString(),
    lookups: () => [...dns.lookups],
    stop,
    restart: async () => {
      await stop();
      await launch();
    },
    close: async () => {
      await stop();
      if (dnsOpen) dns.close();
      dnsOpen = false;
    },
  };
}

function get(url: string, ca: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const req = https.get(url, { ca, timeout: 5000 }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (b: Buffer) => chunks.push(b));
      res.on('end', () => {
        const body = Buffer.concat(chunks).toString('utf8');
        if (res.statusCode === 200) resolve(body);
        else reject(new Error(`GET ${url}: ${res.statusCode}: ${body}`));
      });
    });
    req.on('timeout', () => req.destroy(new Error(`GET ${url}: timeout`)));
    req.on('error', reject);
  });
}

/**
 * The smallest DNS server pebble needs (RFC 1035 section 4.1): answers each query for type A with
 * 127.0.0.1 (TTL 0), and any other type with no records. Bound to a port it keeps, so nothing can take it.
 */
export async function startDnsStub(): Promise<{ port: number; lookups: string[]; close(): void }> {
  const socket = dgram.createSocket('udp4');
  const lookups: string[] = [];
  socket.on('message', (query, peer) => {
    try {
      const { name, type, end } = readQuestion(query);
      lookups.push(name);
      const header = Buffer.alloc(12);
      query.copy(header, 0, 0, 2); // id
      header.writeUInt16BE(0x8180 | (query.readUInt16BE(2) & 0x0100), 2); // response, recursion available, RD copied
      header.writeUInt16BE(1, 4); // one question
      header.writeUInt16BE(type === 1 ? 1 : 0, 6); // answers
      const question = query.subarray(12, end);
      const answer =
        type === 1
          ? Buffer.concat([Buffer.from([0xc0, 0x0c]), u16(1), u16(1), Buffer.from([0, 0, 0, 0]), u16(4), Buffer.from([127, 0, 0, 1])])
          : Buffer.alloc(0);
      socket.send(Buffer.concat([header, question, answer]), peer.port, peer.address);
    } catch {
      /* not a query we understand: no answer, the client times out */
    }
  });
  await new Promise<void>((resolve, reject) => {
    socket.once('error', reject);
    socket.bind(0, '127.0.0.1', () => resolve());
  });
  return { port: socket.address().port, lookups, close: () => socket.close() };
}

function readQuestion(q: Buffer): { name: string; type: number; end: number } {
  const labels: string[] = [];
  let i = 12;
  for (;;) {
    const len = q.readUInt8(i);
    i += 1;
    if (len === 0) break;
    if (len > 63) throw new Error('compressed or bad label');
    labels.push(q.toString('latin1', i, i + len));
    i += len;
  }
  const type = q.readUInt16BE(i);
  return { name: labels.join('.'), type, end: i + 4 };
}

function u16(n: number): Buffer {
  const b = Buffer.alloc(2);
  b.writeUInt16BE(n);
  return b;
}
