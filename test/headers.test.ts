import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { IncomingHttpHeaders } from 'node:http';
import { clientOriginOf, isValidHost, clientIpOf, originOf, prepareForwardHeaders, rewriteLocation } from '../src/proxy/headers.ts';

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
  prepareForwardHeaders(h, { clientIp: '10.1.2.3', proto: 'https', host: 'reg.example:44301' });
  assert.equal(h.host, 'reg.example:44301', 'Host is kept as sent, port included');
  assert.equal(h.forwarded, undefined);
  assert.equal(h['x-forwarded-port'], undefined);
  assert.equal(h['x-forwarded-proto'], 'https', 'not "http,https": the registry uses it verbatim');
  assert.equal(h['x-forwarded-host'], 'reg.example:44301');
  assert.equal(h['x-forwarded-for'], '10.1.2.3');
  assert.equal(h['x-real-ip'], '10.1.2.3');
  assert.equal(h.authorization, undefined, 'credentials stop at the proxy');
  assert.equal(h['content-type'], 'application/octet-stream');
});

test('hop-by-hop headers and Expect are removed, Transfer-Encoding kept', () => {
  const h: IncomingHttpHeaders = {
    connection: 'close, x-secret-hop',
    'x-secret-hop': '1',
    'keep-alive': 'timeout=5',
    te: 'trailers',
    upgrade: 'h2c',
    expect: '100-continue',
    'transfer-encoding': 'chunked',
  };
  prepareForwardHeaders(h, { clientIp: '::1', proto: 'https', host: 'localhost:5043' });
  for (const k of ['connection', 'x-secret-hop', 'keep-alive', 'te', 'upgrade', 'expect']) assert.equal(h[k], undefined, k);
  assert.equal(h['transfer-encoding'], 'chunked');
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
