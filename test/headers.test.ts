import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { IncomingHttpHeaders } from 'node:http';
import {
  clientIpOf,
  clientOriginOf,
  dropResponseHopHeaders,
  duplicatedSingleton,
  forwardHeaders,
  isValidHost,
  originOf,
  requestFraming,
  rewriteLocation,
} from '../src/proxy/headers.ts';

test('client forwarding headers are dropped and set once by the proxy', () => {
  const h: IncomingHttpHeaders = {
    host: 'reg.example:44301',
    forwarded: 'for=6.6.6.6;proto=http;host=evil',
    'x-forwarded-proto': 'http',
    'x-forwarded-host': 'evil.example',
    'x-forwarded-for': '6.6.6.6',
    'x-forwarded-port': '80',
    'x-real-ip': '6.6.6.6',
    authorization: 'Basic YTpi',
    'content-type': 'application/octet-stream',
  };
  const out = forwardHeaders(h, { kind: 'none' }, { clientIp: '10.1.2.3', proto: 'https', host: 'reg.example:44301' });
  assert.equal(out.host, 'reg.example:44301', 'Host is kept as sent, port included');
  assert.equal(out.forwarded, undefined);
  assert.equal(out['x-forwarded-port'], undefined);
  assert.equal(out['x-forwarded-proto'], 'https', 'not "http,https": the registry uses it verbatim');
  assert.equal(out['x-forwarded-host'], 'reg.example:44301');
  assert.equal(out['x-forwarded-for'], '10.1.2.3');
  assert.equal(out['x-real-ip'], '10.1.2.3');
  assert.equal(out.authorization, undefined, 'credentials stop at the proxy');
  assert.equal(out['content-type'], 'application/octet-stream');
  assert.equal(h['x-forwarded-for'], '6.6.6.6', 'the client headers are left as they were');
});

test('hop-by-hop headers, those Connection names, and Expect are removed; the framing is the proxy\'s', () => {
  const h: IncomingHttpHeaders = {
    connection: 'close, x-secret-hop',
    'x-secret-hop': '1',
    'keep-alive': 'timeout=5',
    te: 'trailers',
    upgrade: 'h2c',
    expect: '100-continue',
    'transfer-encoding': 'chunked',
  };
  const out = forwardHeaders(h, { kind: 'chunked' }, { clientIp: '::1', proto: 'https', host: 'localhost:5043' });
  for (const k of ['connection', 'x-secret-hop', 'keep-alive', 'te', 'upgrade', 'expect', 'content-length']) assert.equal(out[k], undefined, k);
  assert.equal(out['transfer-encoding'], 'chunked');
  const sized = forwardHeaders({ 'content-length': '7', 'transfer-encoding': 'chunked' }, { kind: 'length', length: 5 }, { clientIp: '::1', proto: 'https', host: 'h' });
  assert.equal(sized['content-length'], '5', 'written from the framing, not copied');
  assert.equal(sized['transfer-encoding'], undefined);
});

test('no Connection token can remove the framing, Host or a header the proxy sets', () => {
  const tokens = 'content-length, transfer-encoding, host, x-forwarded-for, x-forwarded-proto, x-forwarded-host, x-real-ip';
  const out = forwardHeaders(
    { connection: tokens, host: 'r:5043', 'content-length': '48' },
    { kind: 'length', length: 48 },
    { clientIp: '10.0.0.1', proto: 'https', host: 'r:5043' },
  );
  assert.equal(out['content-length'], '48');
  assert.equal(out.host, 'r:5043');
  assert.equal(out['x-forwarded-for'], '10.0.0.1');
  assert.equal(out['x-forwarded-proto'], 'https');
  assert.equal(out['x-forwarded-host'], 'r:5043');
  assert.equal(out['x-real-ip'], '10.0.0.1');
});

test('requestFraming: chunked, a length, none; codings other than chunked refused', () => {
  assert.deepEqual(requestFraming({ 'transfer-encoding': 'Chunked' }), { kind: 'chunked' });
  assert.deepEqual(requestFraming({ 'content-length': '0' }), { kind: 'length', length: 0 });
  assert.deepEqual(requestFraming({ 'content-length': '1048576' }), { kind: 'length', length: 1048576 });
  assert.deepEqual(requestFraming({}), { kind: 'none' });
  assert.ok('problem' in requestFraming({ 'transfer-encoding': 'gzip, chunked' }));
  assert.ok('problem' in requestFraming({ 'content-length': '-1' }));
});

test('duplicatedSingleton finds a second Host, Authorization or framing header in raw order', () => {
  assert.equal(duplicatedSingleton(['Host', 'a', 'Accept', '*/*', 'host', 'b']), 'host');
  assert.equal(duplicatedSingleton(['Host', 'a', 'Authorization', 'x', 'AUTHORIZATION', 'y']), 'authorization');
  assert.equal(duplicatedSingleton(['Host', 'a', 'Accept', '1', 'Accept', '2']), null, 'list headers may repeat');
});

test('response hop-by-hop headers are dropped, the response framing kept', () => {
  const h: IncomingHttpHeaders = { connection: 'keep-alive, x-hop, content-length', 'x-hop': '1', 'keep-alive': 'timeout=5', 'content-length': '3', 'docker-content-digest': 'sha256:x' };
  dropResponseHopHeaders(h);
  assert.deepEqual(h, { 'content-length': '3', 'docker-content-digest': 'sha256:x' });
});

test('originOf makes default ports explicit and ignores relative references', () => {
  assert.equal(originOf('http://reg:5000/v2/'), 'http://reg:5000');
  assert.equal(originOf('http://REG/v2/'), 'http://reg:80');
  assert.equal(originOf('https://reg/v2/?a=b'), 'https://reg:443');
  assert.equal(originOf('https://[::1]/x'), 'https://[::1]:443');
  assert.equal(originOf('/v2/x/blobs/uploads/1'), null);
});

const STATE = '_state=Zk9vYmFy%2Bc2lnbmVk%3D%3D&x=1';

test('a Location on the upstream origin is rewritten to the client origin, on any port, query byte for byte', () => {
  const loc = `http://127.0.0.1:5000/v2/app/blobs/uploads/0f3c?${STATE}`;
  assert.equal(
    rewriteLocation(loc, ['http://127.0.0.1:5000'], 'https://reg.example:44301'),
    `https://reg.example:44301/v2/app/blobs/uploads/0f3c?${STATE}`,
  );
});

test('aliases (the registry http.host) are rewritten too', () => {
  const loc = 'http://registry:5000/v2/a/blobs/uploads/u';
  assert.equal(rewriteLocation(loc, ['http://127.0.0.1:5000', 'http://registry:5000'], 'https://r:5043'), 'https://r:5043/v2/a/blobs/uploads/u');
});

test('Locations to other hosts (S3 pre-signed redirects) and relative ones pass untouched', () => {
  const s3 = 'https://bucket.s3.amazonaws.com/docker/registry/v2/blobs/sha256/ab/abcd/data?X-Amz-Signature=abc%2F';
  assert.equal(rewriteLocation(s3, ['http://127.0.0.1:5000'], 'https://r:5043'), s3);
  const rel = '/v2/a/blobs/uploads/u?_state=x';
  assert.equal(rewriteLocation(rel, ['http://127.0.0.1:5000'], 'https://r:5043'), rel);
});

test('http:// on the client\'s own host is upgraded to the scheme the client used', () => {
  assert.equal(rewriteLocation('http://r:5043/v2/a/blobs/uploads/u', [], 'https://r:5043'), 'https://r:5043/v2/a/blobs/uploads/u');
  // another port on the same host is another service: untouched
  assert.equal(rewriteLocation('http://r:9000/x', [], 'https://r:5043'), 'http://r:9000/x');
});

test('client origin comes from Host as sent, with a safe fallback', () => {
  assert.equal(clientOriginOf('https', 'reg.example:44301', '0.0.0.0:5043'), 'https://reg.example:44301');
  assert.equal(clientOriginOf('https', undefined, '127.0.0.1:5043'), 'https://127.0.0.1:5043');
  assert.equal(clientOriginOf('https', 'evil.example/path?', '127.0.0.1:5043'), 'https://127.0.0.1:5043');
  assert.ok(isValidHost('[::1]:5043'));
  assert.ok(!isValidHost('a b'));
  assert.equal(clientIpOf('::ffff:10.0.0.1'), '10.0.0.1');
  assert.equal(clientIpOf('::1'), '::1');
});
