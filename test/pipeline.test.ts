/**
 * The request pipeline in-process, over raw HTTP: the proxy's own answers (401, 413, 400, 404), the
 * 100-continue handshake, and the access log. A small upstream records what reaches it.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import net, { type AddressInfo } from 'node:net';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import bcrypt from 'bcryptjs';
import { Authenticator } from '../src/auth/authenticator.ts';
import { parseConfig } from '../src/config/load.ts';
import { createLogger } from '../src/ops/log.ts';
import { Metrics } from '../src/ops/metrics.ts';
import { Forwarder } from '../src/proxy/forwarder.ts';
import { createRequestHandler, type Services } from '../src/http/pipeline.ts';
import { createServer } from '../src/http/server.ts';

const PASSWORD = 'pa:ss:word'; // colons are legal in passwords: split on the first one only
const logLines: Array<Record<string, unknown>> = [];
const seen: Array<{ method: string; url: string; headers: http.IncomingHttpHeaders }> = [];
let upstream: http.Server;
let proxy: http.Server;
let base: string;
let services: Services;
let metrics: Metrics;

before(async () => {
  upstream = http.createServer((req, res) => {
    seen.push({ method: req.method!, url: req.url!, headers: req.headers });
    req.resume();
    req.on('end', () => res.end(JSON.stringify({ ok: true })));
  });
  await new Promise<void>((r) => upstream.listen(0, '127.0.0.1', r));
  const upPort = (upstream.address() as AddressInfo).port;

  const dir = mkdtempSync(join(tmpdir(), 'pcl-pipeline-'));
  writeFileSync(join(dir, 'htpasswd'), `alice:${bcrypt.hashSync(PASSWORD, 4).replace(/^\$2b\$/, '$2y$')}\n`);
  const config = parseConfig(
    `listen: "127.0.0.1:0"
tls: false
upstream: { url: "http://127.0.0.1:${upPort}" }
auth: { htpasswd: htpasswd, realm: "Test Realm" }
limits: { maxBodySize: 1M, maxHeaderSize: 16K, headersTimeout: 1s }
`,
    join(dir, 'proxy.yaml'),
  );
  const sink = new Writable({
    write(chunk: Buffer, _e, cb) {
      for (const line of chunk.toString().split('\n').filter(Boolean)) logLines.push(JSON.parse(line));
      cb();
    },
  });
  const logger = createLogger('trace', sink);
  metrics = new Metrics();
  const authenticator = await Authenticator.open({ htpasswdPath: config.auth.htpasswd, cacheTtlMs: 60_000, cacheSize: 100, logger });
  const forwarder = new Forwarder({ upstream: config.upstream.url, ca: null, timeoutMs: 5000, maxSockets: 8, maxBodySize: config.limits.maxBodySize, internalOrigins: [config.upstream.url.origin] });
  services = { config, authenticator, forwarder };
  proxy = createServer(config, null, createRequestHandler({ services: () => services, metrics, logger, draining: () => false }), metrics);
  await new Promise<void>((r) => proxy.listen(0, '127.0.0.1', r));
  base = `http://127.0.0.1:${(proxy.address() as AddressInfo).port}`;
});

after(async () => {
  await services.authenticator.close();
  services.forwarder.close();
  proxy.closeAllConnections();
  upstream.closeAllConnections();
  await new Promise((r) => proxy.close(r));
  await new Promise((r) => upstream.close(r));
});

const basic = (user: string, pass: string): string => `Basic ${Buffer.from(`${user}:${pass}`).toString('base64')}`;

async function get(path: string, headers: Record<string, string> = {}, method = 'GET') {
  const res = await fetch(base + path, { method, headers });
  return { status: res.status, headers: res.headers, text: await res.text() };
}

function assertRegistryError(r: { status: number; headers: Headers; text: string }, status: number, code: string): void {
  assert.equal(r.status, status);
  assert.match(r.headers.get('content-type') ?? '', /^application\/json/);
  assert.equal(r.headers.get('docker-distribution-api-version'), 'registry/2.0');
  assert.equal(JSON.parse(r.text).errors[0].code, code);
}

test('anonymous GET /v2/ is 401 with the Basic challenge and registry JSON', async () => {
  const r = await get('/v2/');
  assertRegistryError(r, 401, 'UNAUTHORIZED');
  assert.equal(r.headers.get('www-authenticate'), 'Basic realm="Test Realm"');
});

test('"Basic Og==" (containers/image with no credentials) is anonymous: 401', async () => {
  const r = await get('/v2/', { Authorization: 'Basic Og==' });
  assertRegistryError(r, 401, 'UNAUTHORIZED');
  assert.ok(r.headers.get('www-authenticate'));
});

test('wrong password and unknown user: 401 with the challenge', async () => {
  assertRegistryError(await get('/v2/', { Authorization: basic('alice', 'pa') }), 401, 'UNAUTHORIZED');
  assertRegistryError(await get('/v2/', { Authorization: basic('mallory', PASSWORD) }), 401, 'UNAUTHORIZED');
});

test('right password (with colons) is forwarded; the registry never sees the credentials', async () => {
  const before = seen.length;
  const r = await get('/v2/', { Authorization: basic('alice', PASSWORD) });
  assert.equal(r.status, 200);
  assert.equal(seen.length, before + 1);
  assert.equal(seen.at(-1)!.headers.authorization, undefined);
  assert.equal(seen.at(-1)!.headers['x-forwarded-proto'], 'http');
});

test('malformed Authorization headers are 401, oversized headers 431, never 500', async () => {
  for (const h of ['Basic !!!notbase64', 'Basic', 'Bearer abc', 'Basic ' + Buffer.from('no-colon').toString('base64'), 'Basic ' + 'A'.repeat(9000)]) {
    const r = await get('/v2/', { Authorization: h });
    assert.equal(r.status, 401, h.slice(0, 30));
  }
  const big = await rawRequest(`GET /v2/ HTTP/1.1\r\nHost: x\r\nAuthorization: Basic ${'A'.repeat(20_000)}\r\n\r\n`);
  assert.match(big, /^HTTP\/1\.1 431 /);
  assert.equal((await get('/v2/', { Authorization: basic('alice', PASSWORD) })).status, 200, 'still serving');
});

test('paths outside /v2/ are 404, ambiguous paths 400 NAME_INVALID; neither reaches the registry', async () => {
  const before = seen.length;
  assertRegistryError(await get('/metrics', { Authorization: basic('alice', PASSWORD) }), 404, 'UNSUPPORTED');
  // raw sockets: fetch would resolve the dot segments itself before sending
  for (const path of ['/v2/a/%2e%2e/b/tags/list', '/v2/a/../b/tags/list', '/v2/a%2Fb/tags/list']) {
    const raw = await rawRequest(`GET ${path} HTTP/1.1\r\nHost: x\r\nAuthorization: ${basic('alice', PASSWORD)}\r\nConnection: close\r\n\r\n`);
    assert.match(raw, /^HTTP\/1\.1 400 /, path);
    assert.match(raw, /"code":"NAME_INVALID"/, path);
  }
  assert.equal(seen.length, before);
});

test('a declared Content-Length over the limit is 413 DENIED before anything reaches the registry', async () => {
  const before = seen.length;
  const raw = await rawRequest(
    `PUT /v2/a/blobs/uploads/u?digest=sha256:x HTTP/1.1\r\nHost: x\r\nAuthorization: ${basic('alice', PASSWORD)}\r\nContent-Length: ${2 * 1024 * 1024}\r\n\r\n`,
  );
  assert.match(raw, /^HTTP\/1\.1 413 /);
  assert.match(raw, /"code":"DENIED"/);
  assert.match(raw, /1M/);
  assert.match(raw, /connection: close/i);
  assert.equal(seen.length, before);
});

test('Expect: 100-continue: no 100 before authentication; 100 then forwarding after it', async () => {
  const denied = await rawRequest(`PUT /v2/a/blobs/uploads/u HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n`, 300);
  assert.match(denied, /^HTTP\/1\.1 401 /, 'the 401 comes first, not "100 Continue"');
  const before = seen.length;
  const ok = await rawRequest(
    `PUT /v2/a/blobs/uploads/u HTTP/1.1\r\nHost: x\r\nAuthorization: ${basic('alice', PASSWORD)}\r\nContent-Length: 5\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n`,
    300,
    'hello',
  );
  assert.match(ok, /^HTTP\/1\.1 100 Continue\r\n\r\nHTTP\/1\.1 200 /);
  assert.equal(seen.at(-1)!.headers.expect, undefined);
  assert.equal(seen.length, before + 1);
});

test('access log: one allow-listed line per request, no credentials at any level (trace here)', async () => {
  await get('/v2/team/app/manifests/1.0', { Authorization: basic('alice', PASSWORD) });
  await new Promise((r) => setTimeout(r, 50));
  const line = logLines.findLast((l) => l.msg === 'request' && l.path === '/v2/team/app/manifests/1.0')!;
  assert.ok(line, 'request logged');
  assert.equal(line.user, 'alice');
  assert.equal(line.repository, 'team/app');
  assert.equal(line.operation, 'manifest');
  assert.equal(line.status, 200);
  assert.equal(line.upstreamStatus, 200);
  assert.equal(line.aborted, false);
  assert.equal(typeof line.durationMs, 'number');
  assert.equal(typeof line.reqId, 'string');
  const everything = JSON.stringify(logLines);
  assert.ok(!everything.includes(PASSWORD), 'password in the log');
  assert.ok(!everything.includes(Buffer.from(`alice:${PASSWORD}`).toString('base64')), 'Authorization in the log');
  const ping401 = logLines.findLast((l) => l.msg === 'request' && l.path === '/v2/' && l.status === 401)!;
  assert.equal(ping401.level, 20, 'the 401 every login starts with is logged at debug');
});

test('metrics count requests by operation and status class, and auth outcomes', async () => {
  const text = await metrics.registry.metrics();
  assert.match(text, /portcullis_requests_total\{method="GET",operation="manifest",status_class="2xx"\} \d+/);
  assert.match(text, /portcullis_auth_total\{outcome="failed"\} \d+/);
  assert.match(text, /portcullis_auth_total\{outcome="(ok|cached)"\} \d+/);
  const upstreamCount = /portcullis_upstream_response_seconds_count\{operation="manifest"\} (\d+)/.exec(text);
  assert.ok(upstreamCount && Number(upstreamCount[1]) >= 1, 'time to upstream headers is observed');
  assert.doesNotMatch(text, /alice|team\/app/, 'no user or repository labels');
});

test('slow headers are cut with 408 (headersTimeout), while a long body is not', async () => {
  const answer = await rawRequest('GET /v2/ HTTP/1.1\r\nHost: x\r\nX-Slow: ', 6000);
  assert.match(answer, /^HTTP\/1\.1 408 /);

  // A body that trickles in for 2.5 s (well past the 1 s headers timeout) still goes through.
  const { port } = new URL(base);
  const slow = await new Promise<string>((resolve, reject) => {
    const socket = net.connect(Number(port), '127.0.0.1');
    let data = '';
    socket.on('data', (d) => (data += d.toString('latin1')));
    socket.on('error', reject);
    socket.on('close', () => resolve(data));
    socket.write(`PATCH /v2/a/blobs/uploads/u HTTP/1.1\r\nHost: x\r\nAuthorization: ${basic('alice', PASSWORD)}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n`);
    let n = 0;
    const timer = setInterval(() => {
      n += 1;
      if (n <= 5) socket.write('4\r\nslow\r\n');
      else {
        clearInterval(timer);
        socket.write('0\r\n\r\n');
      }
    }, 500);
  });
  assert.match(slow, /^HTTP\/1\.1 200 /);
  assert.equal(seen.at(-1)!.method, 'PATCH');
});

function rawRequest(head: string, waitMs = 2000, body?: string): Promise<string> {
  const { port } = new URL(base);
  return new Promise((resolve, reject) => {
    const socket = net.connect(Number(port), '127.0.0.1');
    let data = '';
    socket.on('data', (d) => {
      data += d.toString('latin1');
      if (body !== undefined && /^HTTP\/1\.1 100 Continue\r\n\r\n/.test(data) && !socket.destroyed) {
        socket.write(body);
        body = undefined;
      }
    });
    socket.on('error', reject);
    socket.on('close', () => resolve(data));
    socket.write(head);
    setTimeout(() => {
      socket.destroy();
      resolve(data);
    }, waitMs).unref();
  });
}
