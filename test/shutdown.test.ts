/**
 * Graceful shutdown against the real registry: on SIGTERM (or SIGINT) the proxy stops accepting
 * connections, lets the transfers in flight finish (an upload streaming into the registry, a download
 * streaming out of it), then exits 0. A transfer that outlives `shutdown.gracePeriod` is cut, and the
 * process still exits 0.
 *
 * What "in flight" means here: a request the proxy has started to serve. A response finished during the
 * drain says `Connection: close`, so a keep-alive client opens a new connection for its next request (which
 * is refused: it goes to another instance) instead of racing the closing one.
 */
import assert from 'node:assert/strict';
import https from 'node:https';
import net from 'node:net';
import { Readable } from 'node:stream';
import { after, before, describe, test } from 'node:test';
import { request } from './helpers/clients.js';
import { sha256 } from './helpers/oci-image.js';
import type { RunningPortcullis } from './helpers/portcullis.js';
import type { RunningRegistry } from './helpers/registry.js';
import { startStack, type Stack } from './helpers/stack.js';
import type { TestCerts } from './helpers/tls.js';
import { eventually, waitForNewLog } from './helpers/wait.js';
import { basic } from './helpers/wire.js';

const T = { timeout: 90_000 };
const USER = { user: 'alice', password: 'alice-pw' };
const BLOB_SIZE = 8 * 1024 * 1024;

// ------------------------------------------------------------------------------------------ local helpers



/** Resolves with the exit status, or rejects after `timeoutMs` (the process is then left to after()). */
function exitWithin(p: RunningPortcullis, timeoutMs: number): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`proxy still running ${timeoutMs} ms after the signal\n--- proxy output ---\n${p.output()}`)), timeoutMs);
  });
  return Promise.race([p.exited, late]).finally(() => clearTimeout(timer));
}

/** Does a new TCP connection to the port get refused? */
function connectionRefused(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect({ host: '127.0.0.1', port });
    s.once('connect', () => {
      s.destroy();
      resolve(false);
    });
    s.once('error', (e: NodeJS.ErrnoException) => resolve(e.code === 'ECONNREFUSED'));
  });
}

/** Deterministic bytes for chunk i. */
function chunk(i: number, size: number): Buffer {
  const b = Buffer.alloc(size);
  for (let j = 0; j < size; j += 4) b.writeUInt32BE((i * 2654435761 + j) >>> 0, j);
  return b;
}

/** A request body that yields `count` chunks, one every `everyMs` (count Infinity: until destroyed). */
function slowBody(count: number, size: number, everyMs: number): Readable & { sent: () => number } {
  let i = 0;
  let sent = 0;
  const body = new Readable({
    read() {
      if (i >= count) {
        this.push(null);
        return;
      }
      const c = chunk(i++, size);
      setTimeout(() => {
        sent += c.length;
        this.push(c);
      }, everyMs);
    },
  });
  return Object.assign(body, { sent: () => sent });
}

interface Download {
  /** Resolves once `pauseAfter` bytes have arrived; reading is paused from then on until resume(). */
  paused: Promise<void>;
  /** Go on reading, at about `bytesPerSecond`. */
  resume(bytesPerSecond: number): void;
  done: Promise<{ status: number; body: Buffer; connection: string | undefined; complete: boolean }>;
}

/** A GET whose reader stops after `pauseAfter` bytes, then reads at a throttled rate: a slow client. */
function download(url: string, ca: string, pauseAfter: number, agent: https.Agent | false = false): Download {
  let resumeWith: ((rate: number) => void) | null = null;
  let pausedResolve: () => void = () => {};
  const paused = new Promise<void>((r) => (pausedResolve = r));
  const done = new Promise<{ status: number; body: Buffer; connection: string | undefined; complete: boolean }>((resolve, reject) => {
    const req = https.request(url, { ca, agent, headers: { authorization: basic(USER.user, USER.password) } }, (res) => {
      const chunks: Buffer[] = [];
      let got = 0;
      let rate = 0;
      let since = 0;
      let sinceBytes = 0;
      res.on('data', (c: Buffer) => {
        chunks.push(c);
        got += c.length;
        if (rate === 0 && got >= pauseAfter) {
          res.pause();
          resumeWith = (r) => {
            rate = r;
            since = Date.now();
            sinceBytes = got;
            res.resume();
          };
          pausedResolve();
          return;
        }
        if (rate > 0) {
          const ahead = (got - sinceBytes) / rate - (Date.now() - since) / 1000;
          if (ahead > 0) {
            res.pause();
            setTimeout(() => res.resume(), ahead * 1000);
          }
        }
      });
      const finish = (): void =>
        resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks), connection: res.headers.connection, complete: res.complete });
      res.once('end', finish);
      res.once('close', finish);
      res.once('error', () => finish());
    });
    req.once('error', reject);
    req.end();
  });
  return {
    paused,
    resume: (rate) => {
      if (!resumeWith) throw new Error('download not paused');
      resumeWith(rate);
    },
    done,
  };
}

// ------------------------------------------------------------------------------------------------ setup

let stack: Stack;
let registry: RunningRegistry;
let certs: TestCerts;
let blob: Buffer;
let blobDigest: string;

before(async () => {
  // The stack's own proxy is the first test's; the others start their own with other grace periods.
  stack = await startStack({ [USER.user]: USER.password }, { proxy: { shutdown: { gracePeriod: '60s' } } });
  ({ registry, certs } = stack);
  // One blob to download, pushed straight into the registry.
  blob = Buffer.concat(Array.from({ length: BLOB_SIZE / (1024 * 1024) }, (_, i) => chunk(1000 + i, 1024 * 1024)));
  blobDigest = sha256(blob);
  const start = await request(`${registry.url}/v2/shutdown/down/blobs/uploads/`, { method: 'POST', body: Buffer.alloc(0) });
  assert.equal(start.status, 202);
  const put = new URL(String(start.headers.location), registry.url);
  put.searchParams.set('digest', blobDigest);
  const done = await request(put, { method: 'PUT', body: blob, headers: { 'content-type': 'application/octet-stream' } });
  assert.equal(done.status, 201, done.text());
});

after(() => stack?.close());

/** POST an upload session through the proxy; its Location (proxy origin). */
async function openUpload(proxy: RunningPortcullis, repo: string): Promise<URL> {
  const r = await request(`${proxy.url}/v2/${repo}/blobs/uploads/`, { method: 'POST', ca: certs.ca, auth: USER, body: Buffer.alloc(0) });
  assert.equal(r.status, 202, r.text());
  return new URL(String(r.headers.location), proxy.url);
}

/** The same upload URL, at the registry itself. */
function atRegistry(location: URL): URL {
  return new URL(`${location.pathname}${location.search}`, registry.url);
}

// ------------------------------------------------------------------------------------------------ tests

describe('graceful shutdown', () => {
  const proxies: RunningPortcullis[] = [];
  after(async () => {
    for (const p of proxies) await p.stop('SIGKILL');
  });

  test('SIGTERM: new connections refused, in-flight upload and download complete, exit 0', T, async () => {
    const proxy = stack.proxy;
    proxies.push(proxy);

    // An idle keep-alive connection must not hold the shutdown up.
    const idleAgent = new https.Agent({ keepAlive: true, ca: certs.ca });
    const warm = await new Promise<number>((resolve, reject) => {
      https.get(`${proxy.url}/v2/`, { agent: idleAgent, headers: { authorization: basic(USER.user, USER.password) } }, (res) => {
        res.resume();
        res.once('end', () => resolve(res.statusCode ?? 0));
      }).once('error', reject);
    });
    assert.equal(warm, 200);

    // Upload: 16 x 64 KiB chunks, one every 150 ms (about 2.4 s), chunked like docker's PATCH.
    const location = await openUpload(proxy, 'shutdown/up');
    const body = slowBody(16, 64 * 1024, 150);
    const expected = Buffer.concat(Array.from({ length: 16 }, (_, i) => chunk(i, 64 * 1024)));
    // Keep-alive connections, as docker uses: the answer decides whether the client may reuse them.
    const upAgent = new https.Agent({ keepAlive: true, ca: certs.ca });
    const downAgent = new https.Agent({ keepAlive: true, ca: certs.ca });
    const patch = request(location, {
      method: 'PATCH',
      ca: certs.ca,
      auth: USER,
      headers: { 'content-type': 'application/octet-stream' },
      body,
      timeoutMs: 60_000,
      agent: upAgent,
    });

    // Downloads: slow readers, paused after the first MiB. One on a keep-alive connection (its headers said
    // keep-alive before the drain), one on a connection that closes after its response.
    const downloads = [downAgent, false as const].map((agent) =>
      download(`${proxy.url}/v2/shutdown/down/blobs/${blobDigest}`, certs.ca, 1024 * 1024, agent),
    );
    await Promise.all(downloads.map((d) => d.paused));
    await eventually('some upload bytes sent', async () => body.sent() >= 3 * 64 * 1024);

    const from = proxy.logs().length;
    proxy.proc.kill('SIGTERM');
    await waitForNewLog(proxy, from, 'shutting down', (l) => /^shutting down/.test(String(l['msg'])));
    assert.equal(await connectionRefused(proxy.port), true, 'a new connection is refused once draining');
    assert.ok(body.sent() < expected.length, 'the upload is still in flight');

    // About 2 s for the rest: slow clients to the end (their last bytes wait in the proxy's buffers).
    for (const d of downloads) d.resume(4 * 1024 * 1024);
    const [up, ...downs] = await Promise.all([patch, ...downloads.map((d) => d.done)]);

    for (const down of downs) {
      assert.equal(down.status, 200);
      assert.equal(down.complete, true, `download complete (got ${down.body.length} of ${BLOB_SIZE} bytes)`);
      assert.equal(down.body.length, BLOB_SIZE);
      assert.equal(sha256(down.body), blobDigest);
    }
    assert.equal(up.status, 202, up.text());
    assert.equal(up.headers.range, `0-${expected.length - 1}`);
    assert.equal(up.headers.connection, 'close', 'a response finished during the drain closes its connection');

    const exit = await exitWithin(proxy, 20_000);
    assert.deepEqual(exit, { code: 0, signal: null }, proxy.output());
    assert.ok(proxy.logs().some((l) => l['msg'] === 'stopped'));
    for (const a of [idleAgent, upAgent, downAgent]) a.destroy();

    // The registry got every byte of the PATCH: finish the upload there and check the digest.
    const status = await request(atRegistry(new URL(String(up.headers.location), proxy.url)));
    assert.equal(status.status, 204);
    assert.equal(status.headers.range, `0-${expected.length - 1}`);
    const put = atRegistry(new URL(String(up.headers.location), proxy.url));
    put.searchParams.set('digest', sha256(expected));
    const fin = await request(put, { method: 'PUT', body: Buffer.alloc(0) });
    assert.equal(fin.status, 201, fin.text());
    const access = proxy.logs().filter((l) => l['msg'] === 'request' && l['method'] === 'PATCH');
    assert.equal(access.length, 1);
    assert.equal(access[0]!['status'], 202);
    assert.equal(access[0]!['bytesIn'], expected.length);
  });

  test('SIGINT behaves like SIGTERM', T, async () => {
    const proxy = await stack.startProxy();
    proxies.push(proxy);
    const dl = download(`${proxy.url}/v2/shutdown/down/blobs/${blobDigest}`, certs.ca, 1024 * 1024);
    await dl.paused;
    const from = proxy.logs().length;
    proxy.proc.kill('SIGINT');
    const line = await waitForNewLog(proxy, from, 'shutting down', (l) => /^shutting down/.test(String(l['msg'])));
    assert.equal(line['signal'], 'SIGINT');
    assert.equal(await connectionRefused(proxy.port), true);
    dl.resume(8 * 1024 * 1024);
    const down = await dl.done;
    assert.equal(down.status, 200);
    assert.equal(down.body.length, BLOB_SIZE, 'the download in flight completes');
    assert.equal(sha256(down.body), blobDigest);
    assert.deepEqual(await exitWithin(proxy, 20_000), { code: 0, signal: null }, proxy.output());
  });

  test('a transfer that outlives shutdown.gracePeriod is cut, and the process still exits 0', T, async () => {
    const proxy = await stack.startProxy({ shutdown: { gracePeriod: '1s' } });
    proxies.push(proxy);
    const location = await openUpload(proxy, 'shutdown/cut');
    const body = slowBody(Infinity, 16 * 1024, 100); // never ends on its own
    const patch = request(location, { method: 'PATCH', ca: certs.ca, auth: USER, body, timeoutMs: 60_000 }).then(
      (r) => r,
      (e: Error) => e,
    );
    await eventually('some upload bytes sent', async () => body.sent() >= 4 * 16 * 1024);
    const from = proxy.logs().length;
    proxy.proc.kill('SIGTERM');
    const exit = await exitWithin(proxy, 20_000);
    assert.deepEqual(exit, { code: 0, signal: null }, proxy.output());
    const outcome = await patch;
    assert.ok(outcome instanceof Error, `the upload was cut, not answered (${outcome instanceof Error ? '' : outcome.status})`);
    assert.match(outcome.message, /socket hang up|ECONNRESET|closed|EPIPE/);
    body.destroy();
    assert.ok(proxy.logs().slice(from).some((l) => /grace period over/.test(String(l['msg']))), proxy.output());
  });
});
