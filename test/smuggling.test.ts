/**
 * Request framing and the upstream pool, at the wire: raw bytes over TLS in, exactly what the registry
 * received out. A request the proxy did not authenticate must never reach the registry, and an answer
 * must never reach anyone but the client whose request it answers.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { startFront, type Front } from './helpers/front.js';
import { basic, echoTarget, parseResponses, startRecordingUpstream, tlsExchange, type RecordingUpstream } from './helpers/wire.js';

const AUTH = basic('alice', 'secret');
let upstream: RecordingUpstream;
let front: Front;

before(async () => {
  upstream = await startRecordingUpstream();
  // One pooled connection, so a poisoned connection is the one every later request reuses.
  front = await startFront({ upstream: `{ url: "${upstream.url}", maxSockets: 1, timeout: 3s }`, extraConfig: 'limits: { maxBodySize: 1M }' });
});

after(async () => {
  await front.close();
  await upstream.close();
});

function send(bytes: string, until?: (s: string) => boolean, timeoutMs = 3000): Promise<string> {
  return tlsExchange(front.port, bytes, { ca: front.ca!, ...(until ? { until } : {}), timeoutMs });
}

const oneResponse = (s: string): boolean => parseResponses(s).length >= 1 && parseResponses(s)[0]!.body.length >= Number(parseResponses(s)[0]!.headers.find(([n]) => n === 'content-length')?.[1] ?? 0);

const SMUGGLED = 'GET /v2/smuggled/tags/list HTTP/1.1\r\nHost: x\r\n\r\n';

function smuggle(method: string, hop: string, inner = SMUGGLED): string {
  return `${method} /v2/ HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: ${AUTH}\r\nConnection: ${hop}\r\nContent-Length: ${inner.length}\r\n\r\n${inner}`;
}

function smuggledTargets(): string[] {
  return upstream.requests.filter((r) => r.target.includes('smuggled')).map((r) => `${r.method} ${r.target}`);
}

test('Connection: content-length cannot strip the framing: the body stays the body of the request', async () => {
  const before = upstream.requests.length;
  const answer = await send(smuggle('GET', 'content-length'), oneResponse);
  assert.equal(parseResponses(answer)[0]!.status, 200);
  const received = upstream.requests.slice(before);
  assert.deepEqual(smuggledTargets(), [], 'no request reached the registry unauthenticated');
  assert.equal(received.length, 1, 'the registry parsed exactly one request');
  assert.equal(upstream.header(received[0]!, 'content-length'), String(SMUGGLED.length));
  assert.equal(received[0]!.body.toString('latin1'), SMUGGLED, 'the declared body arrived as the body');
});

test('the same with HEAD and an inner DELETE, and with every case and spacing of the token', async () => {
  const inner = 'DELETE /v2/smuggled/manifests/sha256:aaaa HTTP/1.1\r\nHost: x\r\n\r\n';
  for (const hop of ['Content-Length', 'close, content-length', 'keep-alive,CONTENT-LENGTH ', 'te, content-length, upgrade']) {
    const before = upstream.requests.length;
    await send(smuggle('HEAD', hop, inner), (s) => /\r\n\r\n/.test(s));
    await send(`GET /v2/ HTTP/1.1\r\nHost: x\r\nAuthorization: ${AUTH}\r\n\r\n`, oneResponse);
    assert.deepEqual(smuggledTargets(), [], hop);
    assert.equal(upstream.requests.length, before + 2, `${hop}: two requests in, two requests upstream`);
  }
});

test('a chunked body on DELETE or OPTIONS keeps its framing (http-proxy would rewrite it to Content-Length: 0)', async () => {
  for (const method of ['DELETE', 'OPTIONS']) {
    const before = upstream.requests.length;
    const inner = `GET /v2/smuggled/${method.toLowerCase()}/tags/list HTTP/1.1\r\nHost: x\r\n\r\n`;
    const body = `${inner.length.toString(16)}\r\n${inner}\r\n0\r\n\r\n`;
    await send(`${method} /v2/team/app/manifests/sha256:aaaa HTTP/1.1\r\nHost: x\r\nAuthorization: ${AUTH}\r\nTransfer-Encoding: chunked\r\n\r\n${body}`, oneResponse);
    assert.deepEqual(smuggledTargets(), [], method);
    const received = upstream.requests.slice(before);
    assert.equal(received.length, 1, `${method}: one request upstream`);
    assert.equal(received[0]!.body.toString('latin1'), inner, `${method}: the body arrived as the body`);
  }
});

test('no Connection token removes Transfer-Encoding, Host or a header the proxy sets', async () => {
  const before = upstream.requests.length;
  const body = '5\r\nhello\r\n0\r\n\r\n';
  const hops = 'transfer-encoding, host, x-forwarded-for, x-forwarded-proto, x-forwarded-host, x-real-ip, content-length';
  const answer = await send(
    `PATCH /v2/team/app/blobs/uploads/u1 HTTP/1.1\r\nHost: reg.example:5043\r\nAuthorization: ${AUTH}\r\nConnection: ${hops}\r\nTransfer-Encoding: chunked\r\n\r\n${body}`,
    oneResponse,
  );
  assert.equal(parseResponses(answer)[0]!.status, 200);
  const [r] = upstream.requests.slice(before);
  assert.ok(r);
  assert.equal(r.body.toString(), 'hello');
  assert.equal(upstream.header(r, 'transfer-encoding'), 'chunked');
  assert.equal(upstream.header(r, 'host'), 'reg.example:5043');
  assert.equal(upstream.header(r, 'x-forwarded-for'), '127.0.0.1');
  assert.equal(upstream.header(r, 'x-real-ip'), '127.0.0.1');
  assert.equal(upstream.header(r, 'x-forwarded-proto'), 'https');
  assert.equal(upstream.header(r, 'x-forwarded-host'), 'reg.example:5043');
  assert.equal(upstream.header(r, 'connection'), 'keep-alive', 'the proxy decides the upstream connection');
  for (const name of ['transfer-encoding', 'host', 'x-forwarded-for', 'content-length']) {
    assert.equal(r.headers.filter(([n]) => n === name).length, name === 'content-length' ? 0 : 1, `${name} exactly once`);
  }
});

test('a concurrent victim gets only its own answers while an attacker tries to poison the pool', async () => {
  // A registry answers the inner request a moment after the outer one: by then the connection is back in the
  // pool, and whoever is sent on it next would read that answer as their own.
  upstream.respond = (req) => (req.target.includes('smuggled') ? { afterMs: 30, bytes: echoTarget(req) as string } : echoTarget(req));
  const victims = Array.from({ length: 12 }, (_, i) => `/v2/victim/app${i}/tags/list`);
  const attacks = Array.from({ length: 4 }, () => send(smuggle('GET', 'content-length'), oneResponse));
  const answers = await Promise.all(
    victims.map((path) => send(`GET ${path} HTTP/1.1\r\nHost: x\r\nAuthorization: ${AUTH}\r\n\r\n`, oneResponse)),
  );
  await Promise.all(attacks);
  upstream.respond = echoTarget;
  answers.forEach((a, i) => {
    const [res] = parseResponses(a);
    assert.deepEqual(JSON.parse(res?.body ?? 'null'), { target: victims[i] }, 'the answer to my own request');
  });
  assert.deepEqual(smuggledTargets(), []);
});

test('a request body cut at the limit never leaves its upstream connection in the pool', async () => {
  // Chunked, so the limit is found while streaming: 1M passes, the next chunk crosses it.
  const chunk = 'x'.repeat(512 * 1024);
  const chunked = `80000\r\n${chunk}\r\n`.repeat(3);
  const answer = await send(
    `PATCH /v2/team/app/blobs/uploads/u2 HTTP/1.1\r\nHost: x\r\nAuthorization: ${AUTH}\r\nTransfer-Encoding: chunked\r\n\r\n${chunked}`,
    (s) => /\r\n\r\n/.test(s),
  );
  assert.match(answer, /^HTTP\/1\.1 413 /);
  const next = await send(`GET /v2/after/cut/tags/list HTTP/1.1\r\nHost: x\r\nAuthorization: ${AUTH}\r\n\r\n`, oneResponse);
  assert.deepEqual(JSON.parse(parseResponses(next)[0]!.body), { target: '/v2/after/cut/tags/list' });
  const after = upstream.requests.find((r) => r.target === '/v2/after/cut/tags/list')!;
  // The connection that carried the cut body carried nothing else (the raw pool and http-proxy's agent are
  // two pools: the next request may reuse a connection of the other one, never this one).
  const cut = [...upstream.raw].filter(([, bytes]) => bytes.includes('PATCH /v2/team/app/blobs/uploads/u2 '));
  assert.equal(cut.length, 1, 'the cut request reached the registry once');
  const [cutConn, bytes] = cut[0]!;
  assert.notEqual(after.conn, cutConn, 'the next request went on another upstream connection');
  const rest = bytes.subarray(bytes.indexOf('PATCH /v2/team/app/blobs/uploads/u2 ') + 1).toString('latin1');
  assert.doesNotMatch(rest, /\r\n[A-Z]+ \/v2\//, 'nothing was sent on the cut connection after it');
});

test('an early upstream answer while the body is still coming: the client gets it, the connection is not reused', async () => {
  // Its own front with the default (long) upstream timeout, so a connection held by the unfinished request
  // would keep the single pool slot for minutes.
  const own = await startFront({ upstream: `{ url: "${upstream.url}", maxSockets: 1 }` });
  upstream.respondAtHead = (head) => (head.target.includes('early') ? 'HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n' : null);
  try {
    const connectionsBefore = upstream.connections();
    // 100 KiB declared, 10 bytes sent, then the client waits: the registry has answered at the head.
    const answer = await tlsExchange(
      own.port,
      `PUT /v2/team/app/blobs/uploads/early HTTP/1.1\r\nHost: x\r\nAuthorization: ${AUTH}\r\nContent-Length: 102400\r\n\r\n0123456789`,
      { ca: own.ca!, until: (s) => /\r\n\r\n/.test(s), timeoutMs: 5000 },
    );
    assert.match(answer, /^HTTP\/1\.1 401 /);
    assert.match(answer, /connection: close/i, 'the client is told its connection ends here');
    const next = await tlsExchange(own.port, `GET /v2/after/early/tags/list HTTP/1.1\r\nHost: x\r\nAuthorization: ${AUTH}\r\n\r\n`, {
      ca: own.ca!,
      until: oneResponse,
      timeoutMs: 5000,
    });
    assert.deepEqual(JSON.parse(parseResponses(next)[0]?.body ?? 'null'), { target: '/v2/after/early/tags/list' });
    const after = upstream.requests.find((r) => r.target === '/v2/after/early/tags/list')!;
    assert.ok(after.conn > connectionsBefore + 1, 'a fresh upstream connection, not the one with a body half sent');
  } finally {
    upstream.respondAtHead = null;
    await own.close();
  }
});

test('an upstream 101 to a plain request is answered 502 in registry JSON, and the proxy keeps serving', async () => {
  upstream.respond = (req) => (req.target.includes('upgrade') ? 'HTTP/1.1 101 Switching Protocols\r\nUpgrade: foo\r\nConnection: upgrade\r\n\r\n' : echoTarget(req));
  try {
    const answer = await send(`GET /v2/upgrade/me/tags/list HTTP/1.1\r\nHost: x\r\nAuthorization: ${AUTH}\r\n\r\n`, oneResponse);
    const [res] = parseResponses(answer);
    assert.equal(res?.status, 502);
    assert.equal(JSON.parse(res.body).errors[0].code, 'UNAVAILABLE');
    const next = await send(`GET /v2/after/switch/tags/list HTTP/1.1\r\nHost: x\r\nAuthorization: ${AUTH}\r\n\r\n`, oneResponse);
    assert.equal(parseResponses(next)[0]?.status, 200);
  } finally {
    upstream.respond = echoTarget;
  }
});

test('two Host headers, two Authorization headers, or a coding before chunked: refused, nothing upstream', async () => {
  const before = upstream.requests.length;
  const cases: Array<[string, number]> = [
    [`GET /v2/ HTTP/1.1\r\nHost: a\r\nHost: b\r\nAuthorization: ${AUTH}\r\n\r\n`, 400],
    [`GET /v2/ HTTP/1.1\r\nHost: a\r\nAuthorization: ${AUTH}\r\nAuthorization: ${basic('mallory', 'x')}\r\n\r\n`, 400],
    [`PATCH /v2/a/blobs/uploads/u HTTP/1.1\r\nHost: a\r\nAuthorization: ${AUTH}\r\nTransfer-Encoding: gzip, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n`, 501],
  ];
  for (const [bytes, status] of cases) {
    const answer = await send(bytes, oneResponse);
    const [res] = parseResponses(answer);
    assert.equal(res?.status, status, bytes.split('\r\n').slice(1, 4).join(' | '));
    assert.match(res.headers.find(([n]) => n === 'content-type')?.[1] ?? '', /application\/json/);
  }
  assert.equal(upstream.requests.length, before);
});

test('identity and forwarding headers a client sends never reach the registry', async () => {
  const before = upstream.requests.length;
  const forged = [
    'Remote-User: admin', 'X-Remote-User: admin', 'X-Auth-User: admin', 'X-Authenticated-User: admin', 'X-Remote-Group: admins',
    'X-Forwarded-User: admin', 'X-Auth-Request-User: admin', 'X-Portcullis-User: admin', 'Forwarded: for=1.2.3.4;host=evil',
    'X-Forwarded-Host: evil', 'X-Real-IP: 1.2.3.4', 'Proxy-Authorization: Basic YTpi',
  ];
  await send(`GET /v2/ HTTP/1.1\r\nHost: x\r\nAuthorization: ${AUTH}\r\n${forged.join('\r\n')}\r\nX-Kept: yes\r\n\r\n`, oneResponse);
  const [r] = upstream.requests.slice(before);
  assert.ok(r);
  for (const line of forged) {
    const name = line.slice(0, line.indexOf(':')).toLowerCase();
    const value = upstream.header(r, name);
    assert.ok(value === undefined || !/admin|evil|1\.2\.3\.4|YTpi/.test(value), `${name}: ${value}`);
  }
  assert.equal(upstream.header(r, 'authorization'), undefined);
  assert.equal(upstream.header(r, 'x-kept'), 'yes', 'ordinary end-to-end headers pass');
});
