/**
 * The forwarder against small purpose-built upstreams that misbehave on cue: stall, reset, answer early,
 * die mid-body. The real registry is exercised in the end-to-end suite.
 */
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import net, { type AddressInfo } from 'node:net';
import { BodyLimit } from '../src/proxy/body-limit.ts';
import { Forwarder, type UpstreamOutcome } from '../src/proxy/forwarder.ts';
import { forwardHeaders, requestFraming, rewriteResponseHeaders, type Framing } from '../src/proxy/headers.ts';
import { createLogger } from '../src/ops/log.ts';
import { eventually } from './helpers/wait.js';

/** What one exchange came to, as the pipeline's access log would record it. */
type Exchange = UpstreamOutcome & { aborted: boolean };

interface Harness {
  url: string;
  forwarder: Forwarder;
  exchanges: Exchange[];
  close(): Promise<void>;
}

async function listen(server: net.Server): Promise<number> {
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return (server.address() as AddressInfo).port;
}

/** A front server that plans each exchange the way the pipeline does (framing, meter, header rewrites). */
async function front(
  upstreamPort: number,
  opts: { timeoutMs?: number; maxBodySize?: number; transformJson?: (body: unknown, headers: http.IncomingHttpHeaders) => Promise<unknown> } = {},
): Promise<Harness> {
  const origin = `http://127.0.0.1:${upstreamPort}`;
  const forwarder = new Forwarder({
    upstream: new URL(origin),
    ca: null,
    timeoutMs: opts.timeoutMs ?? 5000,
    maxSockets: 16,
    logger: createLogger('silent'),
  });
  const exchanges: Exchange[] = [];
  const server = http.createServer({ requestTimeout: 0 }, (req, res) => {
    const host = req.headers.host ?? '';
    const framing = requestFraming(req.headers) as Framing;
    req.headers = forwardHeaders(req.headers, framing, { clientIp: '127.0.0.1', proto: 'https', host });
    const body = framing.kind === 'chunked' || (framing.kind === 'length' && framing.length > 0)
      ? new BodyLimit(opts.maxBodySize ?? 0, framing.kind === 'length' ? framing.length : null)
      : null;
    const outcome: UpstreamOutcome = { status: null, ms: null, bytesOut: 0, digest: null, error: null, settled: false };
    res.once('close', () => exchanges.push({ ...outcome, aborted: !res.writableFinished && !outcome.settled }));
    const plan = { body, responseHeaders: (h: http.IncomingHttpHeaders) => rewriteResponseHeaders(h, [origin], `https://${host}`) };
    void forwarder.forward(req, res, opts.transformJson ? { ...plan, transformJson: opts.transformJson } : plan, outcome);
  });
  const port = await listen(server);
  return {
    url: `http://127.0.0.1:${port}`,
    forwarder,
    exchanges,
    close: async () => {
      forwarder.close();
      server.closeAllConnections();
      await new Promise((r) => server.close(r));
    },
  };
}

const cleanups: Array<() => Promise<void> | void> = [];
after(async () => {
  for (const c of cleanups.reverse()) await c();
});

async function upstream(handler: http.RequestListener): Promise<{ port: number; server: http.Server }> {
  const server = http.createServer(handler);
  const port = await listen(server);
  cleanups.push(() => {
    server.closeAllConnections();
    return new Promise((r) => server.close(() => r()));
  });
  return { port, server };
}

function request(url: string, init: { method?: string; headers?: Record<string, string>; body?: Buffer | 'stream' } = {}) {
  return new Promise<{ status: number; headers: http.IncomingHttpHeaders; body: string; req: http.ClientRequest }>((resolve, reject) => {
    const req = http.request(url, { method: init.method ?? 'GET', headers: init.headers, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode!, headers: res.headers, body: Buffer.concat(chunks).toString(), req }));
      res.on('error', reject);
    });
    req.on('error', reject);
    if (init.body instanceof Buffer) req.end(init.body);
    else if (init.body !== 'stream') req.end();
  });
}

test('202 Location on the upstream origin comes back on the client origin; other headers pass', async () => {
  const up = await upstream((req, res) => {
    res.writeHead(202, {
      Location: `http://127.0.0.1:${(req.socket.address() as AddressInfo).port}/v2/a/blobs/uploads/u?_state=a%2Bb%3D`,
      'Docker-Upload-UUID': 'u',
      Range: '0-0',
      'X-Seen-Proto': String(req.headers['x-forwarded-proto']),
      'X-Seen-Auth': String(req.headers.authorization),
    });
    res.end();
  });
  const h = await front(up.port);
  cleanups.push(h.close);
  const res = await request(`${h.url}/v2/a/blobs/uploads/`, { method: 'POST', headers: { Host: 'reg.example:44301', Authorization: 'Basic YTpi' } });
  assert.equal(res.status, 202);
  assert.equal(res.headers.location, 'https://reg.example:44301/v2/a/blobs/uploads/u?_state=a%2Bb%3D');
  assert.equal(res.headers['docker-upload-uuid'], 'u');
  assert.equal(res.headers['x-seen-proto'], 'https');
  assert.equal(res.headers['x-seen-auth'], 'undefined');
  assert.equal(res.headers['docker-distribution-api-version'], 'registry/2.0', 'added when the upstream omits it');
});

test('upstream refusing connections: 502 UNAVAILABLE in registry JSON, then recovery', async () => {
  const probe = net.createServer();
  const port = await listen(probe);
  await new Promise((r) => probe.close(r)); // nothing listens there now
  const h = await front(port);
  cleanups.push(h.close);
  const res = await request(`${h.url}/v2/`);
  assert.equal(res.status, 502);
  assert.match(String(res.headers['content-type']), /application\/json/);
  assert.equal(JSON.parse(res.body).errors[0].code, 'UNAVAILABLE');
  assert.equal(res.headers['docker-distribution-api-version'], 'registry/2.0');
  assert.equal(h.exchanges.at(-1)?.error, 'upstream_unavailable');

  // the upstream comes back on the same port
  const back = http.createServer((_q, s) => s.end('{}'));
  await new Promise<void>((r) => back.listen(port, '127.0.0.1', r));
  cleanups.push(() => new Promise((r) => back.close(() => r())));
  assert.equal((await request(`${h.url}/v2/`)).status, 200);
});

test('upstream resetting the connection mid-request: 502, proxy keeps serving', async () => {
  let n = 0;
  const up = await upstream((req, res) => {
    n += 1;
    if (n === 1) req.socket.destroy();
    else res.end('ok');
  });
  const h = await front(up.port);
  cleanups.push(h.close);
  assert.equal((await request(`${h.url}/v2/`)).status, 502);
  assert.equal((await request(`${h.url}/v2/`)).status, 200);
});

test('upstream idle past the timeout before answering: 504', async () => {
  const up = await upstream(() => {
    /* never answers */
  });
  const h = await front(up.port, { timeoutMs: 300 });
  cleanups.push(h.close);
  const res = await request(`${h.url}/v2/app/manifests/latest`);
  assert.equal(res.status, 504);
  assert.equal(JSON.parse(res.body).errors[0].code, 'UNAVAILABLE');
  assert.equal(h.exchanges.at(-1)?.error, 'upstream_timeout');
});

test('upstream dying mid-body: the client connection is cut, not left hanging', async () => {
  const up = await upstream((_req, res) => {
    res.writeHead(200, { 'Content-Length': '1000000' });
    res.write(Buffer.alloc(1000));
    setTimeout(() => res.socket?.destroy(), 50);
  });
  const h = await front(up.port);
  cleanups.push(h.close);
  await assert.rejects(request(`${h.url}/v2/a/blobs/sha256:x`), /aborted|socket hang up|ECONNRESET/);
});

test('chunked body over the limit: 413 DENIED, upstream never gets a byte past the limit and is aborted', async () => {
  let received = 0;
  let upstreamAborted = false;
  const up = await upstream((req, res) => {
    req.on('data', (c: Buffer) => (received += c.length));
    req.on('close', () => {
      if (!req.complete) upstreamAborted = true;
    });
    req.on('end', () => res.end('done'));
  });
  const limit = 64 * 1024;
  const h = await front(up.port, { maxBodySize: limit });
  cleanups.push(h.close);
  const res = await new Promise<{ status: number; body: string }>((resolve, reject) => {
    const req = http.request(`${h.url}/v2/a/blobs/uploads/u`, { method: 'PATCH', headers: { 'Transfer-Encoding': 'chunked' }, agent: false }, (r) => {
      const chunks: Buffer[] = [];
      r.on('data', (c: Buffer) => chunks.push(c));
      r.on('end', () => resolve({ status: r.statusCode!, body: Buffer.concat(chunks).toString() }));
    });
    req.on('error', () => {}); // the proxy closes after answering; a late write may fail
    let sent = 0;
    const pump = (): void => {
      while (sent < limit * 4 && !req.destroyed) {
        sent += 16 * 1024;
        if (!req.write(Buffer.alloc(16 * 1024))) return void req.once('drain', pump);
      }
      req.end();
    };
    pump();
    setTimeout(() => reject(new Error('no answer')), 5000).unref();
  });
  assert.equal(res.status, 413);
  const err = JSON.parse(res.body).errors[0];
  assert.equal(err.code, 'DENIED');
  assert.match(err.message, /64K/);
  await eventually('the upstream request was aborted, not completed', async () => upstreamAborted);
  assert.ok(received <= limit, `upstream received ${received} bytes, limit ${limit}`);
  assert.equal(h.exchanges.at(-1)?.error, 'body_too_large');
});

test('clients aborting mid-download release their upstream sockets (no leak after many aborts)', async () => {
  const open = new Set<net.Socket>();
  const up = await upstream((_req, res) => {
    res.writeHead(200, { 'Content-Length': String(64 * 1024 * 1024) });
    // write slowly forever-ish: only a client abort ends this
    const timer = setInterval(() => res.write(Buffer.alloc(16 * 1024)), 5);
    res.on('close', () => clearInterval(timer));
  });
  up.server.on('connection', (s: net.Socket) => {
    open.add(s);
    s.on('close', () => open.delete(s));
  });
  const h = await front(up.port);
  cleanups.push(h.close);
  for (let i = 0; i < 25; i++) {
    await new Promise<void>((resolve) => {
      const req = http.get(`${h.url}/v2/a/blobs/sha256:big`, { agent: false }, (res) => {
        res.once('data', () => {
          req.destroy();
          resolve();
        });
      });
      req.on('error', () => resolve());
    });
  }
  await eventually(`no upstream socket left open after 25 aborts (open: ${open.size})`, async () => open.size === 0);
  await eventually('25 exchanges recorded as aborted', async () => h.exchanges.filter((e) => e.aborted).length === 25);
});

test('an early upstream answer to a big upload (before the body is read) reaches the client every time', async () => {
  // Like the registry (Go's net/http): answer before reading the body, stop reading, and close the
  // connection 500 ms later (Go's rstAvoidanceDelay), so the answer is not reset away upstream.
  const up = await upstream((req, res) => {
    res.writeHead(404, { 'Content-Type': 'application/json', Connection: 'close' });
    res.socket!.destroySoon = () => setTimeout(() => req.socket.destroy(), 500);
    res.end('{"errors":[{"code":"BLOB_UPLOAD_UNKNOWN","message":"no"}]}');
  });
  const h = await front(up.port);
  cleanups.push(h.close);
  // The client keeps sending 16 MiB without reading, as Go clients do; a reset would eat the answer.
  for (let attempt = 0; attempt < 5; attempt++) {
    const res = await new Promise<{ status: number; body: string } | Error>((resolve) => {
      const req = http.request(`${h.url}/v2/a/blobs/uploads/u`, { method: 'PATCH', headers: { 'Transfer-Encoding': 'chunked' }, agent: false }, (r) => {
        const chunks: Buffer[] = [];
        r.on('data', (c: Buffer) => chunks.push(c));
        r.on('end', () => resolve({ status: r.statusCode!, body: Buffer.concat(chunks).toString() }));
      });
      req.on('error', (err) => resolve(err));
      const chunk = Buffer.alloc(256 * 1024);
      let sent = 0;
      const pump = (): void => {
        while (sent < 64 && !req.destroyed) {
          sent += 1;
          if (!req.write(chunk)) return void req.once('drain', pump);
        }
        req.end();
      };
      pump();
    });
    assert.ok(!(res instanceof Error), `attempt ${attempt}: ${res instanceof Error ? res.message : ''}`);
    assert.equal(res.status, 404);
    assert.match(res.body, /BLOB_UPLOAD_UNKNOWN/);
  }
});

test('keep-alive: sequential requests reuse one upstream connection', async () => {
  let connections = 0;
  const up = await upstream((_req, res) => res.end('ok'));
  up.server.on('connection', () => (connections += 1));
  const h = await front(up.port);
  cleanups.push(h.close);
  for (let i = 0; i < 10; i++) assert.equal((await request(`${h.url}/v2/`, { headers: { Connection: 'close' } })).status, 200);
  assert.equal(connections, 1, 'a client Connection: close must not close the pooled upstream socket');
});

test('a JSON answer goes through the plan\'s transform (headers too); other answers stream untouched', async () => {
  const blob = Buffer.alloc(256 * 1024, 7);
  const up = await upstream((req, res) => {
    if (req.url === '/v2/_catalog') {
      res.writeHead(200, { 'Content-Type': 'application/json', Link: '</v2/_catalog?last=c&n=3>; rel="next"' });
      res.end(JSON.stringify({ repositories: ['a', 'b', 'c'] }));
    } else if (req.url === '/v2/huge') {
      res.writeHead(200, { 'Content-Type': 'application/json' });
      res.end(`{"x":"${'y'.repeat(9 * 1024 * 1024)}"}`);
    } else {
      res.writeHead(200, { 'Content-Type': 'application/octet-stream', 'Content-Length': String(blob.length) });
      res.end(blob);
    }
  });
  const seen: unknown[] = [];
  const h = await front(up.port, {
    transformJson: async (body, headers) => {
      seen.push(body);
      delete headers.link;
      const { repositories } = body as { repositories: string[] };
      return { repositories: repositories.filter((r) => r !== 'b') };
    },
  });
  cleanups.push(h.close);
  const catalog = await request(`${h.url}/v2/_catalog`);
  assert.equal(catalog.status, 200);
  assert.deepEqual(JSON.parse(catalog.body), { repositories: ['a', 'c'] });
  assert.equal(catalog.headers['content-length'], String(Buffer.byteLength(catalog.body)));
  assert.equal(catalog.headers.link, undefined, 'the transform may edit headers');
  assert.deepEqual(seen, [{ repositories: ['a', 'b', 'c'] }]);

  const raw = await request(`${h.url}/v2/a/blobs/sha256:x`);
  assert.equal(raw.status, 200);
  assert.equal(raw.body.length, blob.length, 'a blob is not handed to the transform');
  assert.equal(seen.length, 1);

  const huge = await request(`${h.url}/v2/huge`);
  assert.equal(huge.status, 502, 'a JSON answer too large to transform is refused, not passed through unfiltered');
  assert.equal(h.exchanges.at(-1)?.error, 'bad_upstream_json');
});
