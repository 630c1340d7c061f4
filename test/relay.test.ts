/**
 * The raw path (src/proxy/relay.ts over upstream-pool.ts) against a fake registry that writes exact bytes:
 * good and bad framing, refused heads, interim responses, early close, stale keep-alive connections, stalls,
 * slow readers, pipelining and clients that leave. The same front as the pipeline: forwarded headers, a plan
 * and an outcome, the access log's `aborted` computed as finish() does.
 */
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import http from 'node:http';
import https from 'node:https';
import net, { type AddressInfo } from 'node:net';
import { BodyLimit } from '../src/proxy/body-limit.ts';
import type { UpstreamOutcome } from '../src/proxy/forwarder.ts';
import { forwardHeaders, requestFraming, type Framing } from '../src/proxy/headers.ts';
import { relay } from '../src/proxy/relay.ts';
import { UpstreamPool } from '../src/proxy/upstream-pool.ts';
import { createLogger } from '../src/ops/log.ts';
import { makeTestCerts, type TestCerts } from './helpers/tls.js';
import { eventually } from './helpers/wait.js';
import { startRecordingUpstream, type RecordingUpstream } from './helpers/wire.js';

/** What one exchange came to, as the pipeline's access log would record it. */
type Exchange = UpstreamOutcome & { aborted: boolean };

// ------------------------------------------------------------------------------------------ fixtures

/** One request the fake upstream received, and the socket to answer on. */
interface Received {
  head: string;
  socket: net.Socket;
  /** Index of the connection it arrived on (0 = first connection). */
  connection: number;
}

interface FakeUpstream {
  port: number;
  connections: number;
  /** Upstream connections that closed (the relay ended or reset them), counted. */
  closedByPeer: number;
  requests: Received[];
  close(): Promise<void>;
}

/** A raw TCP upstream: `answer` gets each request head and writes whatever bytes the test wants. */
async function fakeUpstream(answer: (r: Received, n: number) => void): Promise<FakeUpstream> {
  const state = { connections: 0, closedByPeer: 0, requests: [] as Received[] };
  const sockets = new Set<net.Socket>();
  let closing = false;
  const server = net.createServer((socket) => {
    const connection = state.connections++;
    sockets.add(socket);
    socket.on('error', () => {});
    socket.on('close', () => {
      sockets.delete(socket);
      if (!closing) state.closedByPeer++;
    });
    let pending = '';
    socket.on('data', (b: Buffer) => {
      pending += b.toString('latin1');
      let end: number;
      while ((end = pending.indexOf('\r\n\r\n')) !== -1) {
        const head = pending.slice(0, end + 4);
        pending = pending.slice(end + 4);
        const r = { head, socket, connection };
        state.requests.push(r);
        answer(r, state.requests.length - 1);
      }
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    port: (server.address() as AddressInfo).port,
    get connections() {
      return state.connections;
    },
    get closedByPeer() {
      return state.closedByPeer;
    },
    requests: state.requests,
    close: async () => {
      closing = true;
      for (const s of sockets) s.destroy();
      await new Promise((r) => server.close(r));
    },
  };
}

interface Front {
  url: string;
  pool: UpstreamPool;
  exchanges: Exchange[];
  close(): Promise<void>;
}

let certs: TestCerts | null = null;
async function testCerts(): Promise<{ key: string; cert: string }> {
  certs ??= await makeTestCerts();
  return { key: certs.key, cert: certs.cert };
}

/** The client-facing side, plain HTTP or TLS, relaying every request the way the pipeline would. */
async function front(upstreamPort: number, opts: { tls?: boolean; timeoutMs?: number; maxBodySize?: number; onBodyChunk?: (c: Buffer) => void } = {}): Promise<Front> {
  const pool = new UpstreamPool({ host: '127.0.0.1', port: upstreamPort, maxSockets: 8, idleTimeoutMs: 5000 });
  const exchanges: Exchange[] = [];
  const ctx = { pool, timeoutMs: opts.timeoutMs ?? 5000, logger: createLogger('silent'), origin: `http://127.0.0.1:${upstreamPort}` };
  const handler: http.RequestListener = (req, res) => {
    const framing = requestFraming(req.headers) as Framing;
    req.headers = forwardHeaders(req.headers, framing, { clientIp: '127.0.0.1', proto: 'https', host: req.headers.host ?? '' });
    const body = framing.kind === 'chunked' || (framing.kind === 'length' && framing.length > 0)
      ? new BodyLimit(opts.maxBodySize ?? 0, framing.kind === 'length' ? framing.length : null)
      : null;
    const outcome: UpstreamOutcome = { status: null, ms: null, bytesOut: 0, digest: null, error: null, settled: false };
    if (opts.onBodyChunk) req.prependListener('data', opts.onBodyChunk);
    void relay(req, res, { body, responseHeaders: () => {} }, outcome, ctx).then(() =>
      exchanges.push({ ...outcome, aborted: !res.writableFinished && !outcome.settled }),
    );
  };
  const server = opts.tls ? https.createServer({ ...(await testCerts()) }, handler) : http.createServer(handler);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as AddressInfo).port;
  return {
    url: `${opts.tls ? 'https' : 'http'}://127.0.0.1:${port}`,
    pool,
    exchanges,
    close: async () => {
      pool.close();
      server.closeAllConnections();
      await new Promise((r) => server.close(r));
    },
  };
}

interface Reply {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: Buffer;
  /** The response ended with an error (cut connection) instead of 'end'. */
  cut: boolean;
}

function get(url: string, opts: { method?: string; agent?: http.Agent; headers?: Record<string, string>; slowMs?: number } = {}): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const u = new URL(url);
    const mod = u.protocol === 'https:' ? https : http;
    const req = mod.request(u, { method: opts.method ?? 'GET', agent: opts.agent ?? false, headers: opts.headers, rejectUnauthorized: false }, (res) => {
      const parts: Buffer[] = [];
      res.on('data', (b: Buffer) => {
        parts.push(b);
        if (opts.slowMs) {
          res.pause();
          setTimeout(() => res.resume(), opts.slowMs);
        }
      });
      const done = (cut: boolean): void => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(parts), cut });
      res.once('end', () => done(false));
      res.once('error', () => done(true));
      res.once('aborted', () => done(true));
    });
    req.once('error', reject);
    req.end();
  });
}

const cleanups: Array<() => Promise<void>> = [];
after(async () => {
  for (const c of cleanups.reverse()) await c();
});
async function setup(answer: (r: Received, n: number) => void, opts: { tls?: boolean; timeoutMs?: number } = {}): Promise<{ up: FakeUpstream; fr: Front }> {
  const up = await fakeUpstream(answer);
  const fr = await front(up.port, opts);
  cleanups.push(() => up.close(), () => fr.close());
  return { up, fr };
}
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

// ------------------------------------------------------------------------------------------- tests

describe('exact framing', () => {
  test('Content-Length body arrives byte for byte and the connection is reused', async () => {
    const body = randomBytes(5 * 1024 * 1024 + 17);
    const { up, fr } = await setup((r) => {
      r.socket.write(`HTTP/1.1 200 OK\r\nContent-Length: ${body.length}\r\nDocker-Content-Digest: sha256:x\r\n\r\n`);
      r.socket.write(body);
    });
    for (let i = 0; i < 3; i++) {
      const res = await get(`${fr.url}/v2/a/blobs/sha256:x`);
      assert.equal(res.status, 200);
      assert.equal(res.headers['content-length'], String(body.length));
      assert.equal(res.headers['docker-content-digest'], 'sha256:x');
      assert.equal(sha(res.body), sha(body));
    }
    assert.equal(up.connections, 1);
    assert.equal(fr.exchanges.at(-1)!.bytesOut, body.length);
  });

  test('HEAD: Content-Length forwarded, no body read, connection reused', async () => {
    const { up, fr } = await setup((r) => r.socket.write('HTTP/1.1 200 OK\r\nContent-Length: 123456\r\n\r\n'));
    for (let i = 0; i < 2; i++) {
      const res = await get(`${fr.url}/v2/a/blobs/sha256:x`, { method: 'HEAD' });
      assert.equal(res.status, 200);
      assert.equal(res.headers['content-length'], '123456');
      assert.equal(res.body.length, 0);
    }
    assert.equal(up.connections, 1);
  });

  test('206 with Content-Range passes through', async () => {
    const { fr } = await setup((r) => r.socket.write('HTTP/1.1 206 Partial Content\r\nContent-Range: bytes 2-4/10\r\nContent-Length: 3\r\n\r\nabc'));
    const res = await get(`${fr.url}/v2/a/blobs/sha256:x`, { headers: { range: 'bytes=2-4' } });
    assert.equal(res.status, 206);
    assert.equal(res.headers['content-range'], 'bytes 2-4/10');
    assert.equal(res.body.toString(), 'abc');
  });

  test('chunked body is decoded, re-framed, and the connection reused when the terminator was exact', async () => {
    const { up, fr } = await setup((r) => r.socket.write('HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3;ext=1\r\nabc\r\n2\r\nde\r\n0\r\nX-Trailer: t\r\n\r\n'));
    for (let i = 0; i < 2; i++) {
      const res = await get(`${fr.url}/v2/a/blobs/sha256:x`);
      assert.equal(res.body.toString(), 'abcde');
      assert.equal(res.headers['x-trailer'], undefined);
    }
    assert.equal(up.connections, 1);
  });

  test('a close-delimited body is relayed to EOF and its connection never reused', async () => {
    const { up, fr } = await setup((r) => r.socket.end('HTTP/1.1 200 OK\r\n\r\nuntil-close'));
    for (let i = 0; i < 2; i++) assert.equal((await get(`${fr.url}/v2/a/blobs/sha256:x`)).body.toString(), 'until-close');
    assert.equal(up.connections, 2);
  });

  test('Connection: close and HTTP/1.0 answers are not pooled', async () => {
    const { up, fr } = await setup((r, n) =>
      r.socket.write(n === 0 ? 'HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\na' : 'HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\nb'),
    );
    await get(`${fr.url}/v2/a/blobs/sha256:x`);
    await get(`${fr.url}/v2/a/blobs/sha256:x`);
    await get(`${fr.url}/v2/a/blobs/sha256:x`);
    assert.equal(up.connections, 3);
  });

  test('1xx interim responses are skipped, the final one relayed', async () => {
    const { fr } = await setup((r) => r.socket.write('HTTP/1.1 103 Early Hints\r\nLink: </x>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok'));
    const res = await get(`${fr.url}/v2/a/blobs/sha256:x`);
    assert.equal(res.status, 200);
    assert.equal(res.body.toString(), 'ok');
  });

  test('bytes after the body: the client gets exactly Content-Length, the connection is dropped', async () => {
    const { up, fr } = await setup((r) => r.socket.write('HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhelloHTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nevil'));
    assert.equal((await get(`${fr.url}/v2/a/blobs/sha256:x`)).body.toString(), 'hello');
    assert.equal((await get(`${fr.url}/v2/a/blobs/sha256:x`)).body.toString(), 'hello');
    assert.equal(up.connections, 2);
  });
});

describe('refused heads: 502, connection closed', () => {
  const bad: Array<[string, string]> = [
    ['duplicate Content-Length', 'HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello'],
    ['Content-Length list', 'HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\nhello'],
    ['non-digit Content-Length', 'HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\nhello'],
    ['Content-Length with Transfer-Encoding', 'HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n'],
    ['duplicate Transfer-Encoding', 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n'],
    ['Transfer-Encoding other than chunked', 'HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n'],
    ['obs-fold', 'HTTP/1.1 200 OK\r\nX-A: a\r\n  b\r\nContent-Length: 0\r\n\r\n'],
    ['space before colon', 'HTTP/1.1 200 OK\r\nContent-Length : 0\r\n\r\n'],
    ['bare LF', 'HTTP/1.1 200 OK\nContent-Length: 0\n\n'],
    ['101 without Upgrade', 'HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\n\r\n'],
    ['unknown version', 'HTTP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n'],
    ['two-digit status', 'HTTP/1.1 20 OK\r\nContent-Length: 0\r\n\r\n'],
    ['NUL in a value', 'HTTP/1.1 200 OK\r\nX-A: a\0b\r\nContent-Length: 0\r\n\r\n'],
    ['oversized head', `HTTP/1.1 200 OK\r\nX-A: ${'a'.repeat(40 * 1024)}\r\nContent-Length: 0\r\n\r\n`],
  ];
  for (const [name, bytes] of bad) {
    test(name, async () => {
      const { up, fr } = await setup((r) => r.socket.write(bytes));
      const res = await get(`${fr.url}/v2/a/blobs/sha256:x`);
      assert.equal(res.status, 502);
      await sleep(50);
      assert.equal(fr.exchanges.at(-1)!.error, name.startsWith('101') ? 'upstream_upgrade' : 'upstream_protocol');
      assert.equal(up.closedByPeer, 1, 'the relay closed the upstream connection');
    });
  }

  test('invalid chunk framing mid-body cuts the client', async () => {
    const { fr } = await setup((r) => r.socket.write('HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcX\r\n'));
    // Cut before the head reached the wire (a hang-up) or after (an aborted body): either way not a clean end.
    const res = await get(`${fr.url}/v2/a/blobs/sha256:x`).catch(() => null);
    assert.ok(res === null || res.cut);
  });
});

describe('failures', () => {
  test('upstream closes before answering: 502, no retry on a fresh connection', async () => {
    const { up, fr } = await setup((r) => r.socket.destroy());
    assert.equal((await get(`${fr.url}/v2/a/blobs/sha256:x`)).status, 502);
    assert.equal(up.connections, 1);
  });

  test('a pooled connection the upstream closed while idle is dropped: the next request gets a new one', async () => {
    const { up, fr } = await setup((r) => r.socket.end('HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok'.replace('\r\n\r\n', '\r\nConnection: keep-alive\r\n\r\n')));
    assert.equal((await get(`${fr.url}/v2/a/blobs/sha256:x`)).body.toString(), 'ok');
    await sleep(50);
    assert.equal(fr.pool.openConnections, 0, 'the EOF on the idle connection closed it');
    assert.equal((await get(`${fr.url}/v2/a/blobs/sha256:x`)).body.toString(), 'ok');
    assert.equal(up.connections, 2);
  });

  test('a pooled connection reset as it is reused: 502, and the request is not sent again', async () => {
    const { up, fr } = await setup((r, n) => {
      if (n === 1) r.socket.destroy(); // the second request, on the reused connection
      else r.socket.write('HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok');
    });
    assert.equal((await get(`${fr.url}/v2/a/blobs/sha256:x`)).body.toString(), 'ok');
    assert.equal((await get(`${fr.url}/v2/a/blobs/sha256:x`)).status, 502);
    assert.equal(up.requests.length, 2, 'no retry behind the client\'s back');
    assert.equal((await get(`${fr.url}/v2/a/blobs/sha256:x`)).body.toString(), 'ok');
  });

  test('upstream dies mid-body: the client connection is cut, not left waiting', async () => {
    const { fr } = await setup((r) => {
      r.socket.write(`HTTP/1.1 200 OK\r\nContent-Length: ${1024 * 1024}\r\n\r\n`);
      r.socket.write(randomBytes(100 * 1024), () => r.socket.destroy());
    });
    const res = await get(`${fr.url}/v2/a/blobs/sha256:x`);
    assert.equal(res.cut, true);
    await sleep(20);
    assert.equal(fr.exchanges.at(-1)!.error, 'upstream_unavailable');
  });

  test('no response head within the timeout: 504', async () => {
    const { fr } = await setup(() => {}, { timeoutMs: 200 });
    assert.equal((await get(`${fr.url}/v2/a/blobs/sha256:x`)).status, 504);
  });

  test('upstream stalls mid-body: the client is cut after the timeout', async () => {
    const { fr } = await setup((r) => r.socket.write('HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc'), { timeoutMs: 200 });
    const res = await get(`${fr.url}/v2/a/blobs/sha256:x`);
    assert.equal(res.cut, true);
    await sleep(20);
    assert.equal(fr.exchanges.at(-1)!.error, 'upstream_timeout');
  });

  test('client leaves mid-body: the upstream connection is destroyed, not pooled', async () => {
    const { up, fr } = await setup((r) => {
      r.socket.write(`HTTP/1.1 200 OK\r\nContent-Length: ${64 * 1024 * 1024}\r\n\r\n`);
      r.socket.write(Buffer.alloc(8 * 1024 * 1024));
    });
    await new Promise<void>((resolve) => {
      http.get(`${fr.url}/v2/a/blobs/sha256:x`, { agent: false }, (res) => {
        res.once('data', () => {
          res.destroy();
          resolve();
        });
      });
    });
    await sleep(200);
    assert.equal(up.closedByPeer, 1);
    assert.equal(fr.pool.openConnections, 0);
    assert.equal(fr.exchanges.at(-1)!.aborted, true);
  });
});

describe('backpressure and buffer reuse', () => {
  test('a slow client holds the upstream back (bounded, not buffered in the proxy)', async () => {
    const total = 256 * 1024 * 1024;
    let written = 0;
    const { fr } = await setup((r) => {
      r.socket.write(`HTTP/1.1 200 OK\r\nContent-Length: ${total}\r\n\r\n`);
      const piece = Buffer.alloc(1024 * 1024);
      const pump = (): void => {
        while (written < total) {
          written += piece.length;
          if (!r.socket.write(piece)) return void r.socket.once('drain', pump);
        }
      };
      pump();
    });
    const req = http.get(`${fr.url}/v2/a/blobs/sha256:x`, { agent: false });
    const res = await new Promise<http.IncomingMessage>((r) => req.once('response', r));
    res.pause();
    await sleep(500);
    // Socket buffers on three sockets plus RING read buffers, not the 256 MiB body.
    assert.ok(written < 32 * 1024 * 1024, `upstream wrote ${written} bytes to a paused client`);
    res.destroy();
  });

  test('TLS client, slow reader, random body: every byte intact (no read buffer reused too early)', async () => {
    const body = randomBytes(24 * 1024 * 1024);
    const { fr } = await setup(
      (r) => {
        r.socket.write(`HTTP/1.1 200 OK\r\nContent-Length: ${body.length}\r\n\r\n`);
        r.socket.write(body);
      },
      { tls: true },
    );
    const res = await get(`${fr.url}/v2/a/blobs/sha256:x`, { slowMs: 1 });
    assert.equal(sha(res.body), sha(body));
  });

  test('plain-HTTP client (writes queue by reference in libuv): every byte intact', async () => {
    const body = randomBytes(24 * 1024 * 1024);
    const { fr } = await setup((r) => {
      r.socket.write(`HTTP/1.1 200 OK\r\nContent-Length: ${body.length}\r\n\r\n`);
      r.socket.write(body);
    });
    const res = await get(`${fr.url}/v2/a/blobs/sha256:x`, { slowMs: 1 });
    assert.equal(sha(res.body), sha(body));
  });

  test('pipelined requests on one client connection: both answers whole and in order', async () => {
    const a = randomBytes(3 * 1024 * 1024);
    const b = randomBytes(2 * 1024 * 1024);
    const { fr } = await setup((r) => {
      const body = r.head.includes('/a ') ? a : b;
      r.socket.write(`HTTP/1.1 200 OK\r\nContent-Length: ${body.length}\r\n\r\n`);
      r.socket.write(body);
    });
    const port = Number(new URL(fr.url).port);
    const raw = await new Promise<Buffer>((resolve) => {
      const s = net.connect(port, '127.0.0.1', () => {
        // write, not end: Node's server treats a half-closed client as gone and aborts its pending requests.
        s.write('GET /v2/r/blobs/a HTTP/1.1\r\nHost: x\r\n\r\nGET /v2/r/blobs/b HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n');
      });
      const parts: Buffer[] = [];
      s.on('data', (d: Buffer) => parts.push(d));
      s.on('close', () => resolve(Buffer.concat(parts)));
    });
    const first = raw.indexOf('\r\n\r\n') + 4;
    assert.equal(sha(raw.subarray(first, first + a.length)), sha(a));
    const second = raw.indexOf('\r\n\r\n', first + a.length) + 4;
    assert.equal(sha(raw.subarray(second, second + b.length)), sha(b));
  });
});

describe('request bodies (uploads)', () => {
  /** A front over a recording registry (helpers/wire.ts: it frames bodies as a strict server does). */
  async function recorded(opts: { timeoutMs?: number; maxBodySize?: number; tls?: boolean; onBodyChunk?: (c: Buffer) => void } = {}): Promise<{ up: RecordingUpstream; fr: Front }> {
    const up = await startRecordingUpstream((r) => `HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\nX-Got: ${r.body.length}\r\n\r\n`);
    const fr = await front(up.port, opts);
    cleanups.push(() => up.close(), () => fr.close());
    return { up, fr };
  }

  /** One request with a body (chunked when `chunks` is given), and its answer. */
  function upload(url: string, opts: { method?: string; body?: Buffer; chunks?: Buffer[]; trailers?: Record<string, string> }): Promise<Reply> {
    return new Promise((resolve, reject) => {
      const headers: Record<string, string> = opts.chunks ? { 'transfer-encoding': 'chunked' } : { 'content-length': String(opts.body?.length ?? 0) };
      const req = http.request(url, { method: opts.method ?? 'PATCH', agent: false, headers }, (res) => {
        const parts: Buffer[] = [];
        res.on('data', (b: Buffer) => parts.push(b));
        res.once('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(parts), cut: false }));
        res.once('error', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(parts), cut: true }));
      });
      req.once('error', reject);
      if (opts.trailers) req.addTrailers(opts.trailers);
      for (const c of opts.chunks ?? []) req.write(c);
      req.end(opts.body);
    });
  }

  test('a Content-Length body arrives byte for byte, and the connection is reused after it', async () => {
    const { up, fr } = await recorded();
    const body = randomBytes(3 * 1024 * 1024 + 5);
    for (let i = 0; i < 2; i++) {
      const res = await upload(`${fr.url}/v2/a/blobs/uploads/u`, { method: 'PUT', body });
      assert.equal(res.status, 202);
      assert.equal(res.headers['x-got'], String(body.length));
    }
    assert.equal(sha(up.requests[0]!.body), sha(body));
    assert.equal(up.header(up.requests[0]!, 'content-length'), String(body.length));
    assert.equal(up.requests[1]!.conn, up.requests[0]!.conn, 'one upstream connection for both');
    assert.equal(fr.exchanges.at(-1)!.error, null);
  });

  test('a chunked body is decoded by Node and framed again by us: same bytes, no trailers, connection reused', async () => {
    const { up, fr } = await recorded();
    const chunks = Array.from({ length: 40 }, (_, i) => randomBytes(1000 + i * 997));
    for (let i = 0; i < 2; i++) {
      const res = await upload(`${fr.url}/v2/a/blobs/uploads/u`, { chunks, trailers: { 'X-Evil-Trailer': '1' } });
      assert.equal(res.status, 202);
    }
    assert.equal(sha(up.requests[0]!.body), sha(Buffer.concat(chunks)));
    assert.equal(up.header(up.requests[0]!, 'transfer-encoding'), 'chunked');
    assert.doesNotMatch(up.raw.get(up.requests[0]!.conn)!.toString('latin1'), /X-Evil-Trailer/i);
    assert.equal(up.requests[1]!.conn, up.requests[0]!.conn);
  });

  test('each body chunk is freed once the registry socket has written it (Node 22+), and the bytes are intact', async () => {
    // Node's parser gives every TLS record of the body its own ArrayBuffer; the relay detaches it with
    // ArrayBuffer.prototype.transfer(0) after the write's callback. Node 20 has no transfer: the GC frees them.
    const seen: Buffer[] = [];
    const { up, fr } = await recorded({ tls: true, onBodyChunk: (c) => seen.push(c) });
    const body = randomBytes(2 * 1024 * 1024 + 77);
    const res = await new Promise<Reply>((resolve, reject) => {
      const req = https.request(`${fr.url}/v2/a/blobs/uploads/u`, { method: 'PATCH', agent: false, rejectUnauthorized: false, headers: { 'transfer-encoding': 'chunked' } }, (r) => {
        r.resume();
        r.once('end', () => resolve({ status: r.statusCode ?? 0, headers: r.headers, body: Buffer.alloc(0), cut: false }));
      });
      req.once('error', reject);
      for (let i = 0; i < body.length; i += 100_000) req.write(body.subarray(i, i + 100_000));
      req.end();
    });
    assert.equal(res.status, 202);
    assert.equal(sha(up.requests[0]!.body), sha(body), 'the registry got every byte, none from a freed buffer');
    assert.ok(seen.length > 100, `the body came in TLS records (${seen.length} chunks)`);
    const freed = seen.filter((c) => c.byteLength === 0).length;
    if (typeof (ArrayBuffer.prototype as { transfer?: unknown }).transfer === 'function') assert.equal(freed, seen.length, `${process.version}: every chunk freed`);
    else assert.equal(freed, 0, `${process.version}: nothing to free with`);
  });

  test('over the limit: 413, the registry never gets a byte past it, and its connection is destroyed', async () => {
    const limit = 64 * 1024;
    const { up, fr } = await recorded({ maxBodySize: limit });
    const res = await upload(`${fr.url}/v2/a/blobs/uploads/u`, { chunks: Array.from({ length: 16 }, () => randomBytes(16 * 1024)) });
    assert.equal(res.status, 413);
    assert.equal(JSON.parse(res.body.toString()).errors[0].code, 'DENIED');
    await eventually('the upstream connection is closed', async () => up.open() === 0);
    const raw = up.raw.get(1)!;
    const sent = raw.length - raw.indexOf('\r\n\r\n') - 4;
    assert.ok(sent < limit, `the registry got ${sent} bytes of framing and body, limit ${limit}`);
    assert.equal(up.requests.length, 0, 'never a whole request');
    assert.equal(fr.exchanges.at(-1)!.error, 'body_too_large');
  });

  test('an early answer while the body still comes: the client gets it whole, the connection is not reused', async () => {
    const { up, fr } = await recorded();
    up.respondAtHead = () => 'HTTP/1.1 401 Unauthorized\r\nContent-Length: 2\r\n\r\nno';
    const res = await upload(`${fr.url}/v2/a/blobs/uploads/u`, { chunks: Array.from({ length: 64 }, () => randomBytes(64 * 1024)) });
    assert.equal(res.status, 401);
    assert.equal(res.body.toString(), 'no');
    assert.equal(res.headers.connection, 'close');
    up.respondAtHead = null;
    await upload(`${fr.url}/v2/a/blobs/uploads/u`, { body: Buffer.from('ok') });
    assert.notEqual(up.requests.at(-1)!.conn, 1, 'the next request went on a new connection');
  });

  test('a registry that stops reading holds the client back: the proxy buffers a bounded amount', async () => {
    let upstreamSocket: net.Socket | null = null;
    const server = net.createServer((s) => {
      upstreamSocket = s;
      s.pause();
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const fr = await front((server.address() as AddressInfo).port);
    cleanups.push(async () => {
      (upstreamSocket as net.Socket | null)?.destroy();
      await new Promise((r) => server.close(r));
    }, () => fr.close());
    const total = 256 * 1024 * 1024;
    let written = 0;
    const req = http.request(`${fr.url}/v2/a/blobs/uploads/u`, { method: 'PATCH', agent: false, headers: { 'content-length': String(total) } });
    req.on('error', () => {});
    const piece = Buffer.alloc(1024 * 1024);
    const pump = (): void => {
      while (written < total) {
        written += piece.length;
        if (!req.write(piece)) return void req.once('drain', pump);
      }
    };
    pump();
    await sleep(800);
    // Socket buffers on three sockets and one turn's batch, not the 256 MiB body.
    assert.ok(written < 48 * 1024 * 1024, `the client wrote ${written} bytes to a registry that reads nothing`);
    req.destroy();
  });

  test('the client leaves mid-upload: the registry connection is destroyed, the exchange aborted', async () => {
    const { up, fr } = await recorded();
    await new Promise<void>((resolve) => {
      const req = http.request(`${fr.url}/v2/a/blobs/uploads/u`, { method: 'PATCH', agent: false, headers: { 'content-length': String(10 * 1024 * 1024) } });
      req.on('error', () => {});
      req.write(randomBytes(256 * 1024), () => setTimeout(() => {
        req.destroy();
        resolve();
      }, 50));
    });
    await eventually('the upstream connection is closed', async () => up.open() === 0);
    await eventually('the exchange is recorded as aborted', async () => fr.exchanges.at(-1)?.aborted === true);
    assert.equal(fr.pool.openConnections, 0);
  });

  test('a body that stops coming: 504 once the registry side is idle past the timeout, connection destroyed', async () => {
    const { up, fr } = await recorded({ timeoutMs: 300 });
    const req = http.request(`${fr.url}/v2/a/blobs/uploads/u`, { method: 'PATCH', agent: false, headers: { 'content-length': '10' } });
    req.on('error', () => {});
    req.write('hello');
    const res = await new Promise<http.IncomingMessage>((resolve) => req.once('response', resolve));
    assert.equal(res.statusCode, 504);
    assert.equal(res.headers.connection, 'close', 'the unread rest of the body ends this connection');
    await eventually('the upstream connection is closed', async () => up.open() === 0);
    req.destroy();
    await eventually('the exchange is recorded as timed out', async () => fr.exchanges.at(-1)?.error === 'upstream_timeout');
  });
});
