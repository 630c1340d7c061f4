/**
 * Hostile input, as a table: raw bytes over TLS to the proxy assembled in-process, in front of an upstream that
 * parses like a strict HTTP/1.1 server and records exactly what reaches it.
 *
 * Every case says what the client must get back: a registry-JSON error with its status and code, the registry's
 * own answer passed through, several answers in order, a closed connection, or a refused TLS handshake. After every
 * case, a normal authenticated request on a new connection must still be served, and the registry must have
 * received exactly the requests the case lists (each sent with valid credentials), byte for byte in their targets,
 * and nothing else: a smuggled or unauthenticated request shows up there as a target no case expects. Every
 * request that reaches the registry is also checked for what the proxy promises about its headers.
 */
import assert from 'node:assert/strict';
import net from 'node:net';
import tls, { type ConnectionOptions } from 'node:tls';
import { after, before, test } from 'node:test';
import { startFront, type Front } from './helpers/front.js';
import {
  basic,
  echoTarget,
  startRecordingUpstream,
  tlsConversation,
  type Conversation,
  type RecordedRequest,
  type RecordingUpstream,
  type Responder,
  type Step,
} from './helpers/wire.js';

const AUTH = basic('alice', 'secret');
const A = `Authorization: ${AUTH}\r\n`;
/** limits.headersTimeout and upstream.timeout of the proxy under test: short, so the slow cases are quick. */
const HEADERS_TIMEOUT_MS = 1000;

type Family = 'framing' | 'auth' | 'path' | 'client headers' | 'upstream' | 'tls' | 'slow';

type Expect =
  /** One answer made by the proxy: registry JSON with this status and code. */
  | { error: number; code: string }
  /** One answer from the registry, passed through with this status. */
  | { ok: number }
  /** Several answers, in this order (interim ones included): pipelining, `100 Continue`. */
  | { statuses: number[] }
  /** No answer: the connection is closed with nothing sent (`silent`), or after an answer began (`cut`). */
  | { closed: 'silent' | 'cut' }
  /** The TLS layer refuses: the handshake, or a renegotiation. */
  | { refused: 'tls' };

interface Case {
  name: string;
  family: Family;
  /** Bytes to send, steps (write, wait, write), or a whole conversation of the case's own. */
  send: string | Step[] | ((front: Front) => Promise<Conversation>);
  expect: Expect;
  /** Targets the registry must receive for this case, in order (default none). */
  reached?: string[];
  /** How the registry answers requests under /v2/evil/ during this case (default: echo the target). */
  upstream?: Responder;
  /** An answer the registry gives as soon as a head under /v2/evil/ arrives, before the body. */
  atHead?: (head: Omit<RecordedRequest, 'body'>) => string | null;
  /** The proxy answers before the request body is read, and lingers reading it: do not wait for the close. */
  linger?: boolean;
  timeoutMs?: number;
  /** Further checks on what the client received and what the registry got. */
  check?: (r: { conv: Conversation; responses: ParsedResponse[]; recorded: RecordedRequest[] }) => void;
}

// Request builders. Host is sent as clients send it; `A` is a valid Authorization line.
const get = (target: string, headers = ''): string => `GET ${target} HTTP/1.1\r\nHost: reg.example:5043\r\n${A}${headers}\r\n`;
const anon = (headers: string, target = '/v2/auth/app/tags/list'): string => `GET ${target} HTTP/1.1\r\nHost: x\r\n${headers}\r\n`;
const withBody = (method: string, target: string, headers: string, body: string): string =>
  `${method} ${target} HTTP/1.1\r\nHost: x\r\n${A}${headers}\r\n${body}`;
const chunked = (target: string, body: string, headers = ''): string =>
  withBody('PATCH', target, `Transfer-Encoding: chunked\r\n${headers}`, body);
const smuggled = (tag: string): string => `GET /v2/smuggled/${tag}/tags/list HTTP/1.1\r\nHost: x\r\n\r\n`;
const b64 = (s: string | Buffer): string => Buffer.from(s).toString('base64');
const evil = (slug: string): string => `/v2/evil/${slug}/tags/list`;
const json = (status: string, body: string, extra = ''): string =>
  `HTTP/1.1 ${status}\r\nContent-Type: application/json\r\n${extra}Content-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`;
const MALFORMED: Expect = { error: 400, code: 'UNSUPPORTED' };
const NAME_INVALID: Expect = { error: 400, code: 'NAME_INVALID' };
const UNAUTHORIZED: Expect = { error: 401, code: 'UNAUTHORIZED' };
const UNAVAILABLE: Expect = { error: 502, code: 'UNAVAILABLE' };

/** Headers a request reaching the registry never carries, whatever the client sent. */
const NEVER_UPSTREAM = [
  'authorization', 'proxy-authorization', 'keep-alive', 'proxy-connection', 'te', 'trailer', 'upgrade', 'expect',
  'forwarded', 'remote-user', 'x-remote-user', 'x-remote-group', 'x-remote-groups', 'x-auth-user', 'x-authenticated-user',
  'x-authenticated-groups', 'x-user', 'x-email', 'x-webauth-user', 'http2-settings',
];
const PROXY_SET = ['x-forwarded-for', 'x-forwarded-proto', 'x-forwarded-host', 'x-real-ip'];

/** Headers as received by the registry for the one request of a case. */
function only(recorded: RecordedRequest[]): RecordedRequest {
  assert.equal(recorded.length, 1, 'one request reached the registry');
  return recorded[0]!;
}
const valuesOf = (r: RecordedRequest, name: string): string[] => r.headers.filter(([n]) => n === name).map(([, v]) => v);
const responseHeader = (r: ParsedResponse | undefined, name: string): string | undefined => r?.headers.find(([n]) => n === name)?.[1];

const CASES: Case[] = [
  // ---- Framing and smuggling ------------------------------------------------------------------------------
  { family: 'framing', name: 'Content-Length and Transfer-Encoding together', send: withBody('POST', '/v2/f/blobs/uploads/', 'Content-Length: 5\r\nTransfer-Encoding: chunked\r\n', '0\r\n\r\n'), expect: MALFORMED },
  { family: 'framing', name: 'Transfer-Encoding before Content-Length', send: withBody('POST', '/v2/f/blobs/uploads/', 'Transfer-Encoding: chunked\r\nContent-Length: 5\r\n', '0\r\n\r\n'), expect: MALFORMED },
  { family: 'framing', name: 'two equal Content-Length headers', send: withBody('POST', '/v2/f/blobs/uploads/', 'Content-Length: 5\r\nContent-Length: 5\r\n', 'hello'), expect: MALFORMED },
  { family: 'framing', name: 'two different Content-Length headers', send: withBody('POST', '/v2/f/blobs/uploads/', 'Content-Length: 5\r\nContent-Length: 50\r\n', 'hello'), expect: MALFORMED },
  { family: 'framing', name: 'Content-Length as a list "5, 5"', send: withBody('POST', '/v2/f/blobs/uploads/', 'Content-Length: 5, 5\r\n', 'hello'), expect: MALFORMED },
  { family: 'framing', name: 'Content-Length with a sign', send: withBody('POST', '/v2/f/blobs/uploads/', 'Content-Length: +5\r\n', 'hello'), expect: MALFORMED },
  { family: 'framing', name: 'Content-Length in hex', send: withBody('POST', '/v2/f/blobs/uploads/', 'Content-Length: 0x5\r\n', 'hello'), expect: MALFORMED },
  { family: 'framing', name: 'Content-Length past 2^64', send: withBody('POST', '/v2/f/blobs/uploads/', 'Content-Length: 99999999999999999999\r\n', 'hello'), expect: MALFORMED },
  { family: 'framing', name: 'Content-Length of 16 digits', send: withBody('POST', '/v2/f/blobs/uploads/', 'Content-Length: 1000000000000000\r\n', 'hello'), expect: { error: 501, code: 'UNSUPPORTED' }, linger: true },
  { family: 'framing', name: 'Content-Length over limits.maxBodySize', send: withBody('PUT', '/v2/f/blobs/uploads/u?digest=sha256:1', 'Content-Length: 2000000\r\n', 'hello'), expect: { error: 413, code: 'DENIED' }, linger: true },
  { family: 'framing', name: 'Transfer-Encoding "chunked, chunked"', send: chunked('/v2/f/blobs/uploads/u', '0\r\n\r\n').replace('chunked\r\n', 'chunked, chunked\r\n'), expect: MALFORMED },
  { family: 'framing', name: 'two Transfer-Encoding headers', send: chunked('/v2/f/blobs/uploads/u', '0\r\n\r\n', 'Transfer-Encoding: chunked\r\n'), expect: MALFORMED },
  { family: 'framing', name: 'Transfer-Encoding "gzip, chunked"', send: chunked('/v2/f/blobs/uploads/u', '0\r\n\r\n').replace('chunked\r\n', 'gzip, chunked\r\n'), expect: { error: 501, code: 'UNSUPPORTED' } },
  { family: 'framing', name: 'Transfer-Encoding "chunked, gzip"', send: chunked('/v2/f/blobs/uploads/u', '0\r\n\r\n').replace('chunked\r\n', 'chunked, gzip\r\n'), expect: MALFORMED },
  { family: 'framing', name: 'Transfer-Encoding "identity"', send: withBody('POST', '/v2/f/blobs/uploads/', 'Transfer-Encoding: identity\r\n', ''), expect: { error: 501, code: 'UNSUPPORTED' } },
  { family: 'framing', name: 'Transfer-Encoding "xchunked"', send: chunked('/v2/f/blobs/uploads/u', '0\r\n\r\n').replace('chunked\r\n', 'xchunked\r\n'), expect: { error: 501, code: 'UNSUPPORTED' } },
  { family: 'framing', name: 'Transfer-Encoding folded onto the next line (obs-fold)', send: withBody('POST', '/v2/f/blobs/uploads/', 'Transfer-Encoding:\r\n chunked\r\n', '0\r\n\r\n'), expect: MALFORMED },
  { family: 'framing', name: 'obs-fold in an ordinary header', send: get('/v2/f/tags/list', 'X-Folded: a\r\n b\r\n'), expect: MALFORMED },
  { family: 'framing', name: 'bare LF line endings', send: `GET /v2/f/tags/list HTTP/1.1\nHost: x\nAuthorization: ${AUTH}\n\n`, expect: MALFORMED },
  { family: 'framing', name: 'bare CR inside a header value', send: get('/v2/f/tags/list', 'X-A: a\rb\r\n'), expect: MALFORMED },
  { family: 'framing', name: 'NUL inside a header value', send: get('/v2/f/tags/list', 'X-A: a\0b\r\n'), expect: MALFORMED },
  { family: 'framing', name: 'DEL inside a header value', send: get('/v2/f/tags/list', 'X-A: a\x7fb\r\n'), expect: MALFORMED },
  { family: 'framing', name: 'white space before the colon', send: `GET /v2/f/tags/list HTTP/1.1\r\nHost : x\r\n${A}\r\n`, expect: MALFORMED },
  { family: 'framing', name: 'chunk size that is not hex', send: chunked('/v2/f/blobs/uploads/u', 'zz\r\nhello\r\n0\r\n\r\n'), expect: MALFORMED },
  { family: 'framing', name: 'negative chunk size', send: chunked('/v2/f/blobs/uploads/u', '-5\r\nhello\r\n0\r\n\r\n'), expect: MALFORMED },
  { family: 'framing', name: 'chunk size overflowing 64 bits', send: chunked('/v2/f/blobs/uploads/u', 'fffffffffffffffff5\r\nhello\r\n0\r\n\r\n'), expect: MALFORMED },
  { family: 'framing', name: 'white space between chunk size and extension', send: chunked('/v2/f/blobs/uploads/u', '5 ;x=1\r\nhello\r\n0\r\n\r\n'), expect: MALFORMED },
  { family: 'framing', name: 'chunk data longer than its size', send: chunked('/v2/f/blobs/uploads/u', '3\r\nhello\r\n0\r\n\r\n'), expect: MALFORMED },
  { family: 'framing', name: 'chunks delimited by bare LF', send: chunked('/v2/f/blobs/uploads/u', '5\nhello\n0\n\n'), expect: MALFORMED },
  {
    family: 'framing', name: 'chunk extension: dropped, the body kept', send: chunked('/v2/f/blobs/uploads/ext', '5;name="v"\r\nhello\r\n0\r\n\r\n'),
    expect: { ok: 200 }, reached: ['/v2/f/blobs/uploads/ext'], check: ({ recorded }) => assert.equal(only(recorded).body.toString(), 'hello'),
  },
  {
    family: 'framing', name: 'chunk size with leading zeros', send: chunked('/v2/f/blobs/uploads/zeros', '0005\r\nhello\r\n0\r\n\r\n'),
    expect: { ok: 200 }, reached: ['/v2/f/blobs/uploads/zeros'], check: ({ recorded }) => assert.equal(only(recorded).body.toString(), 'hello'),
  },
  {
    family: 'framing', name: 'trailer fields never reach the registry', send: chunked('/v2/f/blobs/uploads/trailer', '5\r\nhello\r\n0\r\nX-Evil-Trailer: 1\r\n\r\n'),
    expect: { ok: 200 }, reached: ['/v2/f/blobs/uploads/trailer'],
    check: ({ recorded }) => {
      const r = only(recorded);
      assert.equal(r.body.toString(), 'hello');
      assert.equal(valuesOf(r, 'x-evil-trailer').length, 0);
    },
  },
  {
    family: 'framing', name: 'a request inside a Content-Length body stays the body', send: withBody('PUT', '/v2/f/manifests/inner', `Content-Length: ${smuggled('cl').length}\r\n`, smuggled('cl')),
    expect: { ok: 200 }, reached: ['/v2/f/manifests/inner'], check: ({ recorded }) => assert.equal(only(recorded).body.toString(), smuggled('cl')),
  },
  {
    family: 'framing', name: 'Connection: content-length cannot unframe a GET body', send: withBody('GET', '/v2/f/tags/list', `Connection: content-length\r\nContent-Length: ${smuggled('conn-cl').length}\r\n`, smuggled('conn-cl')),
    expect: { ok: 200 }, reached: ['/v2/f/tags/list'], check: ({ recorded }) => assert.equal(valuesOf(only(recorded), 'content-length')[0], String(smuggled('conn-cl').length)),
  },
  {
    family: 'framing', name: 'Connection: transfer-encoding cannot unframe a chunked DELETE',
    send: withBody('DELETE', '/v2/f/manifests/sha256:aa', 'Connection: transfer-encoding\r\nTransfer-Encoding: chunked\r\n', `${smuggled('conn-te').length.toString(16)}\r\n${smuggled('conn-te')}\r\n0\r\n\r\n`),
    expect: { ok: 200 }, reached: ['/v2/f/manifests/sha256:aa'], check: ({ recorded }) => assert.deepEqual(valuesOf(only(recorded), 'transfer-encoding'), ['chunked']),
  },
  {
    family: 'framing', name: 'bytes past Content-Length are a next request, and it has no credentials',
    send: withBody('PUT', '/v2/f/manifests/short', 'Content-Length: 5\r\n', `hello${smuggled('past-cl')}`),
    expect: { statuses: [200, 401] }, reached: ['/v2/f/manifests/short'],
  },
  {
    family: 'framing', name: 'Expect: 100-continue without credentials: 401, and no 100 Continue',
    send: `PUT /v2/f/blobs/uploads/u HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n`, expect: UNAUTHORIZED, linger: true,
    check: ({ conv }) => assert.doesNotMatch(conv.received, /100 Continue/),
  },
  {
    family: 'framing', name: 'Expect: 100-continue with credentials: 100, then the body, then the answer',
    send: [withBody('PUT', '/v2/f/blobs/uploads/continue', 'Expect: 100-continue\r\nContent-Length: 5\r\n', ''), { until: (s) => s.includes('100 Continue\r\n\r\n') }, 'hello'],
    expect: { statuses: [100, 200] }, reached: ['/v2/f/blobs/uploads/continue'],
    check: ({ recorded }) => assert.equal(only(recorded).body.toString(), 'hello'),
  },
  { family: 'framing', name: 'an Expect other than 100-continue', send: get('/v2/f/tags/list', 'Expect: 200-ok\r\n'), expect: { error: 417, code: 'UNSUPPORTED' } },
  { family: 'framing', name: 'HTTP/1.1 without Host', send: `GET /v2/f/tags/list HTTP/1.1\r\n${A}\r\n`, expect: MALFORMED },
  {
    family: 'framing', name: 'HTTP/1.0 without Host: the listen address stands in', send: `GET /v2/f/http10/tags/list HTTP/1.0\r\n${A}\r\n`,
    expect: { ok: 200 }, reached: ['/v2/f/http10/tags/list'],
  },
  {
    family: 'framing', name: 'an empty Host: the listen address stands in, not the registry\'s', send: `GET /v2/f/empty-host/tags/list HTTP/1.1\r\nHost:\r\n${A}\r\n`,
    expect: { ok: 200 }, reached: ['/v2/f/empty-host/tags/list'],
    check: ({ recorded }) => {
      const r = only(recorded);
      assert.match(valuesOf(r, 'host')[0] ?? '', /^127\.0\.0\.1:/);
      assert.deepEqual(valuesOf(r, 'x-forwarded-host'), valuesOf(r, 'host'));
    },
  },
  { family: 'framing', name: 'two Host headers', send: `GET /v2/f/tags/list HTTP/1.1\r\nHost: a\r\nHost: b\r\n${A}\r\n`, expect: MALFORMED },
  { family: 'framing', name: 'HTTP version 1.2', send: `GET /v2/f/tags/list HTTP/1.2\r\nHost: x\r\n${A}\r\n`, expect: MALFORMED },
  { family: 'framing', name: 'the HTTP/2 connection preface', send: 'PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', expect: MALFORMED },
  { family: 'framing', name: 'a lower-case method', send: `get /v2/f/tags/list HTTP/1.1\r\nHost: x\r\n${A}\r\n`, expect: MALFORMED },
  { family: 'framing', name: 'an unknown method', send: `FOO /v2/f/tags/list HTTP/1.1\r\nHost: x\r\n${A}\r\n`, expect: MALFORMED },
  { family: 'framing', name: 'CONNECT', send: `CONNECT 127.0.0.1:443 HTTP/1.1\r\nHost: 127.0.0.1:443\r\n${A}\r\n`, expect: { closed: 'silent' } },
  {
    family: 'framing', name: 'Upgrade: websocket is answered as a plain request', send: get('/v2/f/ws/tags/list', 'Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: x\r\n'),
    expect: { ok: 200 }, reached: ['/v2/f/ws/tags/list'],
  },
  {
    family: 'framing', name: 'Upgrade: h2c is answered as a plain request', send: get('/v2/f/h2c/tags/list', 'Upgrade: h2c\r\nConnection: Upgrade, HTTP2-Settings\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n'),
    expect: { ok: 200 }, reached: ['/v2/f/h2c/tags/list'],
  },

  // ---- Authorization header shapes (all on one route; only two shapes are valid) ------------------------------
  { family: 'auth', name: 'no Authorization', send: anon(''), expect: UNAUTHORIZED },
  { family: 'auth', name: 'an empty Authorization', send: anon('Authorization:\r\n'), expect: UNAUTHORIZED },
  { family: 'auth', name: 'Basic Og== (anonymous)', send: anon('Authorization: Basic Og==\r\n'), expect: UNAUTHORIZED },
  { family: 'auth', name: 'Bearer', send: anon('Authorization: Bearer eyJhbGciOiJub25lIn0.e30.\r\n'), expect: UNAUTHORIZED },
  { family: 'auth', name: 'Digest', send: anon('Authorization: Digest username="alice", response="x"\r\n'), expect: UNAUTHORIZED },
  { family: 'auth', name: '"Basic" and nothing after it', send: anon('Authorization: Basic\r\n'), expect: UNAUTHORIZED },
  { family: 'auth', name: 'a token that is not base64', send: anon('Authorization: Basic !!!!\r\n'), expect: UNAUTHORIZED },
  { family: 'auth', name: 'base64 without its padding', send: anon(`Authorization: Basic ${b64('alice:secret1').replace(/=+$/, '')}\r\n`), expect: UNAUTHORIZED },
  { family: 'auth', name: 'the URL-safe base64 alphabet', send: anon(`Authorization: Basic ${b64('alice:s\xfb\xff').replace(/\+/g, '-').replace(/\//g, '_')}\r\n`), expect: UNAUTHORIZED },
  { family: 'auth', name: 'no colon between user and password', send: anon(`Authorization: Basic ${b64('alicesecret')}\r\n`), expect: UNAUTHORIZED },
  { family: 'auth', name: 'a wrong password', send: anon(`Authorization: ${basic('alice', 'wrong')}\r\n`), expect: UNAUTHORIZED },
  { family: 'auth', name: 'an unknown user', send: anon(`Authorization: ${basic('mallory', 'secret')}\r\n`), expect: UNAUTHORIZED },
  { family: 'auth', name: 'the user name in another case', send: anon(`Authorization: ${basic('Alice', 'secret')}\r\n`), expect: UNAUTHORIZED },
  { family: 'auth', name: 'the right password with a NUL appended', send: anon(`Authorization: ${basic('alice', 'secret\0')}\r\n`), expect: UNAUTHORIZED },
  { family: 'auth', name: 'a control character in the user name', send: anon(`Authorization: ${basic('al\x01ice', 'secret')}\r\n`), expect: UNAUTHORIZED },
  { family: 'auth', name: 'credentials that are not UTF-8', send: anon(`Authorization: Basic ${b64(Buffer.from([0x61, 0x3a, 0xff, 0xfe]))}\r\n`), expect: UNAUTHORIZED },
  { family: 'auth', name: 'a tab instead of a space after Basic', send: anon(`Authorization: Basic\t${b64('alice:secret')}\r\n`), expect: UNAUTHORIZED },
  { family: 'auth', name: 'a latin1 no-break space (0xA0) after the token', send: anon(`Authorization: ${AUTH}\xa0\r\n`), expect: UNAUTHORIZED },
  { family: 'auth', name: 'an Authorization of 9000 characters', send: anon(`Authorization: Basic ${b64(`alice:${'x'.repeat(6740)}`)}\r\n`), expect: UNAUTHORIZED },
  { family: 'auth', name: 'an Authorization larger than maxHeaderSize', send: anon(`Authorization: Basic ${'A'.repeat(20_000)}\r\n`), expect: { error: 431, code: 'UNSUPPORTED' } },
  { family: 'auth', name: 'two valid Authorization headers', send: anon(`${A}${A}`), expect: MALFORMED },
  { family: 'auth', name: 'a valid Authorization, then another user\'s', send: anon(`${A}Authorization: ${basic('mallory', 'x')}\r\n`), expect: MALFORMED },
  { family: 'auth', name: 'credentials in Proxy-Authorization only', send: anon(`Proxy-${A}`), expect: UNAUTHORIZED },
  { family: 'auth', name: 'unauthenticated, on a path that would be refused anyway: refused first', send: anon('', '/v2/a/../b/tags/list'), expect: NAME_INVALID },
  { family: 'auth', name: 'scheme in lower case', send: anon(`Authorization: basic ${b64('alice:secret')}\r\n`, '/v2/auth/lower/tags/list'), expect: { ok: 200 }, reached: ['/v2/auth/lower/tags/list'] },
  { family: 'auth', name: 'several spaces after the scheme (RFC 9110 1*SP)', send: anon(`Authorization: Basic   ${b64('alice:secret')}\r\n`, '/v2/auth/spaces/tags/list'), expect: { ok: 200 }, reached: ['/v2/auth/spaces/tags/list'] },

  // ---- Paths and queries ----------------------------------------------------------------------------------
  { family: 'path', name: '%2e%2e', send: get('/v2/p/%2e%2e/q/tags/list'), expect: NAME_INVALID },
  { family: 'path', name: '%2F', send: get('/v2/p%2Fq/tags/list'), expect: NAME_INVALID },
  { family: 'path', name: '%2f in lower case', send: get('/v2/p%2fq/tags/list'), expect: NAME_INVALID },
  { family: 'path', name: '%5C', send: get('/v2/p%5Cq/tags/list'), expect: NAME_INVALID },
  { family: 'path', name: '%00', send: get('/v2/p%00/tags/list'), expect: NAME_INVALID },
  { family: 'path', name: 'an escaped letter (%61lice is alice to the registry)', send: get('/v2/%61lice/tags/list'), expect: NAME_INVALID },
  { family: 'path', name: 'an escaped route keyword (%6Danifests)', send: get('/v2/p/%6Danifests/latest'), expect: NAME_INVALID },
  { family: 'path', name: 'a % without two hex digits', send: get('/v2/p%zz/tags/list'), expect: NAME_INVALID },
  { family: 'path', name: '//', send: get('/v2//p/tags/list'), expect: NAME_INVALID },
  { family: 'path', name: 'a backslash', send: get('/v2/p\\q/tags/list'), expect: NAME_INVALID },
  { family: 'path', name: 'a /./ segment', send: get('/v2/p/./tags/list'), expect: NAME_INVALID },
  { family: 'path', name: 'a /../ segment', send: get('/v2/p/../q/tags/list'), expect: NAME_INVALID },
  { family: 'path', name: 'a trailing /..', send: get('/v2/p/tags/..'), expect: NAME_INVALID },
  { family: 'path', name: 'a fragment (http-proxy would cut it off)', send: get('/v2/p/tags/list#x'), expect: MALFORMED },
  { family: 'path', name: 'raw UTF-8 in the path', send: get('/v2/p\xc3\xa9/tags/list'), expect: MALFORMED },
  { family: 'path', name: 'absolute-form', send: get('https://127.0.0.1/v2/p/tags/list'), expect: MALFORMED },
  { family: 'path', name: 'authority-form', send: get('127.0.0.1:443'), expect: MALFORMED },
  { family: 'path', name: 'asterisk-form', send: `OPTIONS * HTTP/1.1\r\nHost: x\r\n${A}\r\n`, expect: MALFORMED },
  { family: 'path', name: 'a path outside /v2/', send: get('/V2/p/tags/list'), expect: { error: 404, code: 'UNSUPPORTED' } },
  { family: 'path', name: 'the root', send: get('/'), expect: { error: 404, code: 'UNSUPPORTED' } },
  { family: 'path', name: 'two from parameters', send: withBody('POST', '/v2/p/blobs/uploads/?mount=sha256:1&from=a&from=b', 'Content-Length: 0\r\n', ''), expect: MALFORMED },
  { family: 'path', name: 'two mount parameters', send: withBody('POST', '/v2/p/blobs/uploads/?mount=sha256:1&mount=sha256:2&from=a', 'Content-Length: 0\r\n', ''), expect: MALFORMED },
  { family: 'path', name: 'a ; in the query', send: withBody('POST', '/v2/p/blobs/uploads/?mount=sha256:1&from=a;from=b', 'Content-Length: 0\r\n', ''), expect: MALFORMED },
  { family: 'path', name: 'from that is no repository name', send: withBody('POST', '/v2/p/blobs/uploads/?mount=sha256:1&from=../b', 'Content-Length: 0\r\n', ''), expect: MALFORMED },
  {
    family: 'path', name: 'a mount from one repository passes, query byte for byte',
    send: withBody('POST', '/v2/p/blobs/uploads/?mount=sha256:1&from=team/base', 'Content-Length: 0\r\n', ''), expect: { ok: 200 }, reached: ['/v2/p/blobs/uploads/?mount=sha256:1&from=team/base'],
  },
  { family: 'path', name: 'an escaped colon in a digest passes byte for byte', send: get('/v2/p/manifests/sha256%3Aabc'), expect: { ok: 200 }, reached: ['/v2/p/manifests/sha256%3Aabc'] },
  { family: 'path', name: 'a name in upper case: outside the grammar, refused before any rule', send: get('/v2/UPPER/tags/list'), expect: { error: 400, code: 'NAME_INVALID' } },
  { family: 'path', name: '/v2 without its slash', send: get('/v2'), expect: { ok: 200 }, reached: ['/v2'] },
  { family: 'path', name: 'a path of 12,000 characters: a name over 255, refused', send: get(`/v2/${'a/'.repeat(6000)}tags/list`), expect: { error: 400, code: 'NAME_INVALID' } },
  { family: 'path', name: 'a name of 255 characters is still a name', send: get(`/v2/${'a/'.repeat(126)}b/tags/list`), expect: { ok: 200 }, reached: [`/v2/${'a/'.repeat(126)}b/tags/list`] },
  { family: 'path', name: 'a path longer than maxHeaderSize', send: get(`/v2/${'a/'.repeat(10_000)}tags/list`), expect: { error: 431, code: 'UNSUPPORTED' } },

  // ---- Client headers never reach the registry as sent -------------------------------------------------------
  {
    family: 'client headers', name: 'identity headers are stripped',
    send: get('/v2/h/identity/tags/list', ['Remote-User', 'X-Remote-User', 'X-Remote-Groups', 'X-Auth-User', 'X-Authenticated-User', 'X-User', 'X-Email', 'X-WebAuth-User', 'X-Auth-Request-User', 'X-Portcullis-User'].map((h) => `${h}: admin\r\n`).join('')),
    expect: { ok: 200 }, reached: ['/v2/h/identity/tags/list'],
    check: ({ recorded }) => assert.deepEqual(only(recorded).headers.filter(([, v]) => v === 'admin'), []),
  },
  {
    family: 'client headers', name: 'forwarding headers are replaced by the proxy\'s',
    send: get('/v2/h/forwarding/tags/list', 'Forwarded: for=6.6.6.6;host=evil\r\nX-Forwarded-For: 6.6.6.6\r\nX-Forwarded-Host: evil\r\nX-Forwarded-Proto: http\r\nX-Forwarded-Port: 80\r\nX-Forwarded-Prefix: /evil\r\nX-Real-IP: 6.6.6.6\r\n'),
    expect: { ok: 200 }, reached: ['/v2/h/forwarding/tags/list'],
    check: ({ recorded }) => {
      const r = only(recorded);
      assert.deepEqual(valuesOf(r, 'x-forwarded-host'), ['reg.example:5043']);
      assert.deepEqual(r.headers.filter(([n, v]) => n.startsWith('x-forwarded-') && !PROXY_SET.includes(n) && v !== ''), []);
    },
  },
  { family: 'client headers', name: 'hop-by-hop headers are stripped', send: get('/v2/h/hop/tags/list', 'Keep-Alive: timeout=999\r\nProxy-Connection: keep-alive\r\nTE: trailers\r\nTrailer: X-T\r\n'), expect: { ok: 200 }, reached: ['/v2/h/hop/tags/list'] },
  {
    family: 'client headers', name: 'a header Connection names is stripped', send: get('/v2/h/named/tags/list', 'Connection: X-Secret, close\r\nX-Secret: 1\r\nX-Kept: 1\r\n'),
    expect: { ok: 200 }, reached: ['/v2/h/named/tags/list'],
    check: ({ recorded }) => {
      const r = only(recorded);
      assert.deepEqual(valuesOf(r, 'x-secret'), []);
      assert.deepEqual(valuesOf(r, 'x-kept'), ['1']);
    },
  },
  { family: 'client headers', name: 'Connection: authorization: still authenticated, still not forwarded', send: get('/v2/h/conn-auth/tags/list', 'Connection: authorization\r\n'), expect: { ok: 200 }, reached: ['/v2/h/conn-auth/tags/list'] },
  {
    family: 'client headers', name: 'Connection naming Host and X-Forwarded-For removes neither', send: get('/v2/h/conn-host/tags/list', 'Connection: host, x-forwarded-for, x-real-ip\r\n'),
    expect: { ok: 200 }, reached: ['/v2/h/conn-host/tags/list'], check: ({ recorded }) => assert.deepEqual(valuesOf(only(recorded), 'host'), ['reg.example:5043']),
  },
  { family: 'client headers', name: 'Proxy-Authorization is not forwarded', send: get('/v2/h/proxy-auth/tags/list', `Proxy-${A}`), expect: { ok: 200 }, reached: ['/v2/h/proxy-auth/tags/list'] },
  {
    family: 'client headers', name: 'a latin1 header value passes byte for byte', send: get('/v2/h/latin1/tags/list', 'X-Note: caf\xe9\r\n'),
    expect: { ok: 200 }, reached: ['/v2/h/latin1/tags/list'], check: ({ recorded }) => assert.deepEqual(valuesOf(only(recorded), 'x-note'), ['caf\xe9']),
  },
  {
    family: 'client headers', name: 'a latin1 header value on a request with a body passes byte for byte', send: withBody('PUT', '/v2/h/latin1/manifests/x', 'X-Note: caf\xe9\r\nContent-Length: 2\r\n', '{}'),
    expect: { ok: 200 }, reached: ['/v2/h/latin1/manifests/x'], check: ({ recorded }) => assert.deepEqual(valuesOf(only(recorded), 'x-note'), ['caf\xe9']),
  },
  {
    family: 'client headers', name: 'past Node\'s count of headers, a second Host is dropped, not forwarded',
    send: get('/v2/h/many/tags/list', `${'a:b\r\n'.repeat(2000)}Host: evil\r\n`),
    expect: { ok: 200 }, reached: ['/v2/h/many/tags/list'], check: ({ recorded }) => assert.deepEqual(valuesOf(only(recorded), 'host'), ['reg.example:5043']),
  },

  // ---- A malicious or broken registry ------------------------------------------------------------------------
  {
    family: 'upstream', name: 'hop-by-hop and Connection-named response headers are dropped', send: get(evil('hop')), reached: [evil('hop')], expect: { ok: 200 },
    upstream: () => json('200 OK', '{}', 'Connection: x-secret, close\r\nX-Secret: 1\r\nKeep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\nTE: trailers\r\nTrailer: X-T\r\nUpgrade: h2c\r\nX-Fine: yes\r\n'),
    check: ({ responses }) => {
      const names = responses[0]!.headers.map(([n]) => n);
      for (const n of ['x-secret', 'keep-alive', 'proxy-connection', 'te', 'trailer', 'upgrade']) assert.ok(!names.includes(n), n);
      assert.equal(responseHeader(responses[0], 'x-fine'), 'yes');
      assert.equal(responseHeader(responses[0], 'connection'), 'keep-alive', 'the proxy decides the client connection');
    },
  },
  {
    family: 'upstream', name: 'Connection: content-length in a response keeps its framing', send: get(evil('conn-cl')), reached: [evil('conn-cl')], expect: { ok: 200 },
    upstream: () => json('200 OK', '{"a":1}', 'Connection: content-length\r\n'), check: ({ responses }) => assert.equal(responses[0]!.body, '{"a":1}'),
  },
  { family: 'upstream', name: 'a response with two different Content-Length headers', send: get(evil('two-cl')), reached: [evil('two-cl')], expect: UNAVAILABLE, upstream: () => 'HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}' },
  { family: 'upstream', name: 'a response with two equal Content-Length headers', send: get(evil('two-cl-same')), reached: [evil('two-cl-same')], expect: UNAVAILABLE, upstream: () => 'HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\n{}' },
  { family: 'upstream', name: 'Content-Length with Transfer-Encoding', send: get(evil('cl-te')), reached: [evil('cl-te')], expect: UNAVAILABLE, upstream: () => 'HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n' },
  { family: 'upstream', name: 'a negative Content-Length', send: get(evil('cl-neg')), reached: [evil('cl-neg')], expect: UNAVAILABLE, upstream: () => 'HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n' },
  {
    family: 'upstream', name: '100 Continue the client never asked for, then the answer', send: get(evil('100')), reached: [evil('100')], expect: { ok: 200 },
    upstream: () => `HTTP/1.1 100 Continue\r\n\r\n${json('200 OK', '{}')}`, check: ({ conv }) => assert.doesNotMatch(conv.received, /^HTTP\/1\.1 100/),
  },
  { family: 'upstream', name: '103 Early Hints, then the answer', send: get(evil('103')), reached: [evil('103')], expect: { ok: 200 }, upstream: () => `HTTP/1.1 103 Early Hints\r\nLink: </x>\r\n\r\n${json('200 OK', '{}')}` },
  { family: 'upstream', name: '101 Switching Protocols to a plain request', send: get(evil('101')), reached: [evil('101')], expect: UNAVAILABLE, upstream: () => 'HTTP/1.1 101 Switching Protocols\r\nUpgrade: foo\r\nConnection: upgrade\r\n\r\n' },
  { family: 'upstream', name: 'a status code of four digits', send: get(evil('status')), reached: [evil('status')], expect: UNAVAILABLE, upstream: () => 'HTTP/1.1 2000 OK\r\nContent-Length: 0\r\n\r\n' },
  { family: 'upstream', name: 'an answer that is not HTTP', send: get(evil('garbage')), reached: [evil('garbage')], expect: UNAVAILABLE, upstream: () => 'hello world\r\n\r\n' },
  { family: 'upstream', name: 'obs-fold in a response header', send: get(evil('fold')), reached: [evil('fold')], expect: UNAVAILABLE, upstream: () => 'HTTP/1.1 200 OK\r\nX-A: a\r\n b\r\nContent-Length: 2\r\n\r\n{}' },
  { family: 'upstream', name: 'bare LF in a response', send: get(evil('lf')), reached: [evil('lf')], expect: UNAVAILABLE, upstream: () => 'HTTP/1.1 200 OK\nContent-Length: 2\n\n{}' },
  { family: 'upstream', name: 'response headers over 16 KiB', send: get(evil('huge')), reached: [evil('huge')], expect: UNAVAILABLE, upstream: () => `HTTP/1.1 200 OK\r\nX-Big: ${'a'.repeat(40_000)}\r\nContent-Length: 0\r\n\r\n` },
  { family: 'upstream', name: 'a reset instead of an answer', send: get(evil('reset')), reached: [evil('reset')], expect: UNAVAILABLE, upstream: () => ({ afterMs: 0, bytes: '', close: 'destroy' }) },
  { family: 'upstream', name: 'a close instead of an answer', send: get(evil('fin')), reached: [evil('fin')], expect: UNAVAILABLE, upstream: () => ({ afterMs: 0, bytes: '', close: 'end' }) },
  { family: 'upstream', name: 'half a header block, then close', send: get(evil('half')), reached: [evil('half')], expect: UNAVAILABLE, upstream: () => ({ afterMs: 0, bytes: 'HTTP/1.1 200 OK\r\nContent-Le', close: 'end' }) },
  { family: 'upstream', name: 'silence past upstream.timeout', send: get(evil('silent')), reached: [evil('silent')], expect: { error: 504, code: 'UNAVAILABLE' }, upstream: () => null },
  {
    family: 'upstream', name: 'a Content-Length body cut short', send: get(evil('short')), reached: [evil('short')], expect: { closed: 'cut' },
    upstream: () => ({ afterMs: 0, bytes: 'HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789', close: 'end' }),
  },
  {
    family: 'upstream', name: 'a chunked body cut short', send: get(evil('short-chunked')), reached: [evil('short-chunked')], expect: { closed: 'cut' },
    upstream: () => ({ afterMs: 0, bytes: 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n', close: 'end' }),
  },
  {
    family: 'upstream', name: 'an invalid chunk size in the body', send: get(evil('bad-chunk')), reached: [evil('bad-chunk')], expect: { closed: 'silent' },
    upstream: () => 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n',
  },
  {
    family: 'upstream', name: 'a body framed by the close, closed: whole', send: get(evil('close-framed')), reached: [evil('close-framed')], expect: { ok: 200 },
    upstream: () => ({ afterMs: 0, bytes: 'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n{"a":1}', close: 'end' }), check: ({ responses }) => assert.equal(responses[0]!.body, '{"a":1}'),
  },
  {
    family: 'upstream', name: 'a body framed by the close, then silence past upstream.timeout: cut, never whole', send: get(evil('close-framed-stall')), reached: [evil('close-framed-stall')],
    expect: { closed: 'cut' }, upstream: () => 'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n{"a":1',
  },
  {
    family: 'upstream', name: 'a second answer in the same write is never anyone\'s', send: get(evil('extra')), reached: [evil('extra')], expect: { ok: 200 },
    upstream: () => json('200 OK', '{}') + json('200 OK', '{"target":"/v2/probe"}'),
  },
  { family: 'upstream', name: '204 with a body', send: get(evil('204')), reached: [evil('204')], expect: { ok: 204 }, upstream: () => 'HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\nhello' },
  {
    family: 'upstream', name: 'a Location on the registry\'s origin is rewritten, its query byte for byte', send: get(evil('location')), reached: [evil('location')], expect: { ok: 200 },
    upstream: () => json('200 OK', '{}', `Location: ${upstreamUrl}/v2/p/blobs/uploads/u?_state=a%2Fb%3D&x=1\r\n`),
    check: ({ responses }) => assert.equal(responseHeader(responses[0], 'location'), 'https://reg.example:5043/v2/p/blobs/uploads/u?_state=a%2Fb%3D&x=1'),
  },
  {
    family: 'upstream', name: 'a Location elsewhere passes untouched', send: get(evil('foreign')), reached: [evil('foreign')], expect: { ok: 200 },
    upstream: () => json('200 OK', '{}', 'Location: https://s3.example/bucket/x?X-Amz-Signature=a%2F\r\n'),
    check: ({ responses }) => assert.equal(responseHeader(responses[0], 'location'), 'https://s3.example/bucket/x?X-Amz-Signature=a%2F'),
  },
  {
    family: 'upstream', name: 'an early answer, then a malformed chunk: one answer, no second status line',
    send: [chunked('/v2/evil/early/blobs/uploads/u', '5\r\nhello\r\n'), { until: (s) => s.includes('\r\n\r\n') }, 'zz\r\n'],
    atHead: () => 'HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n',
    expect: { statuses: [202] },
  },

  // ---- TLS -----------------------------------------------------------------------------------------------------
  { family: 'tls', name: 'TLS 1.0', send: (f) => handshake(f, { minVersion: 'TLSv1', maxVersion: 'TLSv1', ciphers: 'DEFAULT:@SECLEVEL=0' }), expect: { refused: 'tls' } },
  { family: 'tls', name: 'TLS 1.1', send: (f) => handshake(f, { minVersion: 'TLSv1.1', maxVersion: 'TLSv1.1', ciphers: 'DEFAULT:@SECLEVEL=0' }), expect: { refused: 'tls' } },
  { family: 'tls', name: 'ALPN offering only h2', send: (f) => handshake(f, { ALPNProtocols: ['h2'] }), expect: { refused: 'tls' } },
  { family: 'tls', name: 'renegotiation (TLS 1.2)', send: renegotiation, expect: { refused: 'tls' } },
  { family: 'tls', name: 'TLS 1.2 is served', send: (f) => handshake(f, { maxVersion: 'TLSv1.2' }, get('/v2/t/tls12/tags/list')), expect: { ok: 200 }, reached: ['/v2/t/tls12/tags/list'] },
  { family: 'tls', name: 'plain HTTP on the TLS port', send: (f) => plainTcp(f, 'GET /v2/ HTTP/1.1\r\nHost: x\r\n\r\n'), expect: { closed: 'silent' } },
  {
    family: 'tls', name: 'a handshake that stalls is closed after headersTimeout', send: (f) => plainTcp(f, Buffer.from([0x16, 0x03, 0x01, 0x02, 0x00, 0x01])), expect: { closed: 'silent' },
    check: ({ conv }) => assert.ok(conv.ms >= HEADERS_TIMEOUT_MS - 50, `closed after ${Math.round(conv.ms)} ms`),
  },
  {
    family: 'tls', name: 'a connection that never says anything is closed after headersTimeout', send: (f) => plainTcp(f, ''), expect: { closed: 'silent' },
    check: ({ conv }) => assert.ok(conv.ms >= HEADERS_TIMEOUT_MS - 50, `closed after ${Math.round(conv.ms)} ms`),
  },

  // ---- Slow and greedy clients ------------------------------------------------------------------------------
  {
    family: 'slow', name: 'headers that never end: 408', send: `GET /v2/s/tags/list HTTP/1.1\r\nHost: x\r\n${A}`, expect: { error: 408, code: 'UNSUPPORTED' },
    check: ({ conv }) => assert.ok(conv.ms >= HEADERS_TIMEOUT_MS - 50, `answered after ${Math.round(conv.ms)} ms`),
  },
  {
    family: 'slow', name: 'a second request whose headers never end, after a served one', send: `${get('/v2/s/first/tags/list')}GET /v2/s/second/tags/list HTTP/1.1\r\nHost: x\r\n`,
    expect: { statuses: [200, 408] }, reached: ['/v2/s/first/tags/list'],
  },
  { family: 'slow', name: 'a flood of header bytes: 431', send: get('/v2/s/tags/list', `X-Flood: ${'a'.repeat(20_000)}\r\n`), expect: { error: 431, code: 'UNSUPPORTED' } },
  // Node counts names and values against maxHeaderSize, not the ": " and CRLF around them: tiny headers get
  // about twice the room (3000 of these, 24,000 bytes, pass), but not without bound.
  { family: 'slow', name: 'a flood of small headers: 431', send: get('/v2/s/tags/list', 'X-F: a\r\n'.repeat(10_000)), expect: { error: 431, code: 'UNSUPPORTED' } },
  {
    family: 'slow', name: 'a body that stops coming: 504 once the registry side is idle past upstream.timeout',
    send: withBody('PATCH', '/v2/s/blobs/uploads/trickle', 'Content-Length: 10\r\n', 'hello'), expect: { error: 504, code: 'UNAVAILABLE' }, linger: true,
  },
  {
    family: 'slow', name: 'three pipelined requests are answered in order', send: ['a', 'b', 'c'].map((x) => get(`/v2/s/pipe-${x}/tags/list`)).join(''),
    expect: { statuses: [200, 200, 200] }, reached: ['a', 'b', 'c'].map((x) => `/v2/s/pipe-${x}/tags/list`),
    check: ({ responses }) => assert.deepEqual(responses.map((r) => JSON.parse(r.body).target), ['a', 'b', 'c'].map((x) => `/v2/s/pipe-${x}/tags/list`)),
  },
  {
    family: 'slow', name: 'twenty pipelined requests are answered in order', send: Array.from({ length: 20 }, (_, i) => get(`/v2/s/pipe/${i}/tags/list`)).join(''),
    expect: { statuses: Array<number>(20).fill(200) }, reached: Array.from({ length: 20 }, (_, i) => `/v2/s/pipe/${i}/tags/list`),
    check: ({ responses }) => assert.deepEqual(responses.map((r) => JSON.parse(r.body).target), Array.from({ length: 20 }, (_, i) => `/v2/s/pipe/${i}/tags/list`)),
  },
  {
    family: 'slow', name: 'pipelined: with, without, with credentials', send: [get('/v2/s/one/tags/list'), anon('', '/v2/s/two/tags/list'), get('/v2/s/three/tags/list')].join(''),
    expect: { statuses: [200, 401, 200] }, reached: ['/v2/s/one/tags/list', '/v2/s/three/tags/list'],
  },
  {
    family: 'slow', name: 'pipelined after a refused request: nothing more is read', send: `GET /v2/s/x/tags/list HTTP/1.1\r\nHost: a\r\nHost: b\r\n${A}\r\n${get('/v2/s/after/tags/list')}`,
    expect: MALFORMED,
  },
];

// ---- Running the table -------------------------------------------------------------------------------------------

let upstream: RecordingUpstream;
let upstreamUrl: string;
let front: Front;
let current: Case | null = null;
const expectedTargets: string[] = [];

before(async () => {
  upstream = await startRecordingUpstream();
  upstreamUrl = upstream.url;
  upstream.respond = (req) => (current?.upstream && req.target.startsWith('/v2/evil/') ? current.upstream(req) : echoTarget(req));
  upstream.respondAtHead = (head) => (current?.atHead && head.target.startsWith('/v2/evil/') ? current.atHead(head) : null);
  // One pooled upstream connection: a poisoned connection would be the one every later request reuses.
  front = await startFront({
    upstream: `{ url: "${upstream.url}", maxSockets: 1, timeout: ${HEADERS_TIMEOUT_MS}ms }`,
    extraConfig: `limits: { maxBodySize: 1M, headersTimeout: ${HEADERS_TIMEOUT_MS}ms }`,
  });
});

after(async () => {
  await front?.close();
  await upstream?.close();
});

test('the table has at least 80 cases, every family represented, names unique', () => {
  assert.ok(CASES.length >= 80, `${CASES.length} cases`);
  assert.equal(new Set(CASES.map((c) => c.name)).size, CASES.length);
  for (const f of ['framing', 'auth', 'path', 'client headers', 'upstream', 'tls', 'slow'] as const) assert.ok(CASES.some((c) => c.family === f), f);
});

CASES.forEach((c, i) => {
  test(`${c.family}: ${c.name}`, async () => {
    current = c;
    const before = upstream.requests.length;
    let conv: Conversation;
    try {
      conv = await converse(c);
    } finally {
      current = null;
    }
    const responses = readResponses(conv.received, conv.closedByServer);
    const what = `${c.name}\nreceived: ${JSON.stringify(conv.received.slice(0, 600))}\nclosed: ${conv.closedByServer}, timed out: ${conv.timedOut}, handshake: ${conv.handshakeError}`;
    assertAnswer(c, conv, responses, what);

    // The proxy still serves, and its one pooled upstream connection still answers the right request.
    const probe = `/v2/probe/${i}/tags/list`;
    const next = await tlsConversation(front.port, [get(probe)], { ca: front.ca!, until: (s) => readResponses(s, false).some((r) => r.complete) });
    const [served] = readResponses(next.received, next.closedByServer);
    assert.equal(served?.status, 200, `still serving after: ${what}\nprobe: ${JSON.stringify(next.received.slice(0, 300))}`);
    assert.deepEqual(JSON.parse(served.body), { target: probe }, 'the probe got its own answer');

    // Exactly the requests the case sent with credentials reached the registry, targets byte for byte.
    const recorded = upstream.requests.slice(before);
    assert.deepEqual(recorded.map((r) => r.target), [...(c.reached ?? []), probe], `what reached the registry: ${what}`);
    expectedTargets.push(...(c.reached ?? []), probe);
    for (const r of recorded) assertForwardedClean(r);
    c.check?.({ conv, responses, recorded: recorded.slice(0, -1) });
  });
});

test('over the whole table: nothing else ever reached the registry, and the proxy never failed', () => {
  assert.deepEqual(upstream.requests.map((r) => r.target), expectedTargets);
  assert.deepEqual(front.logs.filter((l) => l.error === 'internal' || Number(l.level) >= 50), [], 'no 500, no error logged');
});

async function converse(c: Case): Promise<Conversation> {
  if (typeof c.send === 'function') return c.send(front);
  const steps = typeof c.send === 'string' ? [c.send] : c.send;
  const wanted = 'statuses' in c.expect ? c.expect.statuses.length : 'error' in c.expect || 'ok' in c.expect ? 1 : Infinity;
  return tlsConversation(front.port, steps, {
    ca: front.ca!,
    timeoutMs: c.timeoutMs ?? 5000,
    // Stop once the expected answers are whole, unless the last one says the connection closes: then wait for
    // the close too, so that anything written after it (a second status line) is seen.
    until: (s) => {
      const rs = readResponses(s, false);
      if (rs.length < wanted || !rs.slice(0, wanted).every((r) => r.complete)) return false;
      return c.linger === true || !/close/i.test(responseHeader(rs[wanted - 1], 'connection') ?? '');
    },
  });
}

function assertAnswer(c: Case, conv: Conversation, responses: ParsedResponse[], what: string): void {
  const e = c.expect;
  if ('refused' in e) {
    assert.notEqual(conv.handshakeError, null, `TLS refused: ${what}`);
    assert.deepEqual(responses, [], `no HTTP answer: ${what}`);
    return;
  }
  if ('closed' in e) {
    assert.ok(conv.closedByServer && !conv.timedOut, `closed by the proxy: ${what}`);
    assert.equal(conv.handshakeError, null, what);
    if (e.closed === 'silent') assert.equal(conv.received, '', `nothing sent: ${what}`);
    else assert.ok(responses.length === 1 && !responses[0]!.complete, `an answer begun and cut: ${what}`);
    return;
  }
  assert.equal(conv.timedOut, false, `not answered in time: ${what}`);
  const statuses = 'statuses' in e ? e.statuses : 'error' in e ? [e.error] : [e.ok];
  assert.deepEqual(responses.map((r) => r.status), statuses, `answers: ${what}`);
  assert.ok(responses.every((r) => r.complete), `every answer whole: ${what}`);
  for (const r of responses) {
    if (r.status < 200) continue;
    assert.equal(responseHeader(r, 'docker-distribution-api-version'), 'registry/2.0', what);
    if (r.status < 400) continue;
    // Every error is registry JSON, whoever made it.
    assert.match(responseHeader(r, 'content-type') ?? '', /^application\/json/, what);
    const body = JSON.parse(r.body) as { errors: Array<{ code: string }> };
    if ('error' in e) assert.equal(body.errors[0]?.code, e.code, what);
    if (r.status === 401) assert.match(responseHeader(r, 'www-authenticate') ?? '', /^Basic realm="/, what);
  }
  if (/close/i.test(responseHeader(responses.at(-1), 'connection') ?? '') && !c.linger) {
    assert.ok(conv.closedByServer, `closed after "Connection: close": ${what}`);
  }
}

/** What the proxy promises about every request it lets through. */
function assertForwardedClean(r: RecordedRequest): void {
  const at = `${r.method} ${r.target}`;
  assert.equal(valuesOf(r, 'host').length, 1, `one Host: ${at}`);
  for (const name of PROXY_SET) assert.equal(valuesOf(r, name).length, 1, `one ${name}: ${at}`);
  assert.deepEqual(valuesOf(r, 'x-forwarded-for'), ['127.0.0.1'], at);
  assert.deepEqual(valuesOf(r, 'x-real-ip'), ['127.0.0.1'], at);
  assert.deepEqual(valuesOf(r, 'x-forwarded-proto'), ['https'], at);
  assert.deepEqual(valuesOf(r, 'x-forwarded-host'), valuesOf(r, 'host'), at);
  assert.ok(valuesOf(r, 'content-length').length + valuesOf(r, 'transfer-encoding').length <= 1, `one framing header at most: ${at}`);
  assert.deepEqual(valuesOf(r, 'connection'), ['keep-alive'], `the proxy's own Connection: ${at}`);
  for (const name of NEVER_UPSTREAM) assert.equal(valuesOf(r, name).length, 0, `${name}: ${at}`);
  assert.deepEqual(r.headers.filter(([n]) => n.startsWith('x-auth-request-') || n.startsWith('x-portcullis-')), [], at);
}

// ---- Conversations of their own (TLS) ----------------------------------------------------------------------------

/** A TLS handshake with these client options, then `request` if it succeeds. */
function handshake(f: Front, options: ConnectionOptions, request?: string): Promise<Conversation> {
  return tlsConversation(f.port, request ? [request] : [], {
    ca: f.ca!,
    tls: options,
    until: (s) => readResponses(s, false).some((r) => r.complete),
  });
}

/** A TLS 1.2 session that asks to renegotiate, then sends a request. A refused renegotiation ends the connection. */
function renegotiation(f: Front): Promise<Conversation> {
  return new Promise((resolve) => {
    const started = performance.now();
    let received = '';
    let renegotiated = false;
    let refusal: string | null = null;
    let timedOut = false;
    const socket = tls.connect({ port: f.port, host: '127.0.0.1', ca: f.ca!, servername: 'localhost', maxVersion: 'TLSv1.2' }, () => {
      socket.renegotiate({}, (err) => {
        if (err) refusal ??= err.message;
        else {
          renegotiated = true;
          socket.write(get('/v2/t/renegotiated/tags/list'));
        }
      });
    });
    const timer = setTimeout(() => {
      timedOut = true;
      socket.destroy();
    }, 5000);
    socket.on('data', (d: Buffer) => (received += d.toString('latin1')));
    socket.on('error', (err) => (refusal ??= err.message));
    socket.on('close', () => {
      clearTimeout(timer);
      if (!renegotiated && !timedOut) refusal ??= 'connection closed during the renegotiation';
      resolve({ received, closedByServer: !timedOut, timedOut, handshakeError: refusal, ms: performance.now() - started });
    });
  });
}

/** Bytes over plain TCP to the TLS port; returns once the proxy closes the connection (or after 5 s). */
function plainTcp(f: Front, bytes: string | Buffer): Promise<Conversation> {
  return new Promise((resolve) => {
    const started = performance.now();
    let received = '';
    let timedOut = false;
    const socket = net.connect(f.port, '127.0.0.1', () => socket.write(bytes));
    const timer = setTimeout(() => {
      timedOut = true;
      socket.destroy();
    }, 5000);
    socket.on('data', (d: Buffer) => (received += d.toString('latin1')));
    socket.on('error', () => {});
    socket.on('close', () => {
      clearTimeout(timer);
      resolve({ received, closedByServer: !timedOut, timedOut, handshakeError: null, ms: performance.now() - started });
    });
  });
}

// ---- Reading answers -----------------------------------------------------------------------------------------

interface ParsedResponse {
  status: number;
  headers: Array<[string, string]>;
  body: string;
  /** The whole answer arrived (by its Content-Length, its last chunk, or, without either, the close). */
  complete: boolean;
}

/** The HTTP/1.1 answers in a byte stream, framed as a client would frame them. */
function readResponses(stream: string, closed: boolean): ParsedResponse[] {
  const out: ParsedResponse[] = [];
  let rest = stream;
  while (rest.length > 0) {
    const end = rest.indexOf('\r\n\r\n');
    if (end === -1) {
      out.push({ status: Number(/^HTTP\/1\.1 (\d{3})/.exec(rest)?.[1] ?? NaN), headers: [], body: '', complete: false });
      break;
    }
    const lines = rest.slice(0, end).split('\r\n');
    const status = Number(/^HTTP\/1\.[01] (\d{3})/.exec(lines[0] ?? '')?.[1] ?? NaN);
    const headers = lines.slice(1).map((l): [string, string] => [l.slice(0, l.indexOf(':')).toLowerCase(), l.slice(l.indexOf(':') + 1).trim()]);
    const get = (n: string): string | undefined => headers.find(([k]) => k === n)?.[1];
    rest = rest.slice(end + 4);
    if (status < 200 || status === 204 || status === 304) {
      out.push({ status, headers, body: '', complete: true });
      continue;
    }
    if (get('content-length') !== undefined) {
      const n = Number(get('content-length'));
      out.push({ status, headers, body: rest.slice(0, n), complete: rest.length >= n });
      rest = rest.slice(n);
      continue;
    }
    if (/chunked/i.test(get('transfer-encoding') ?? '')) {
      let body = '';
      let complete = false;
      for (;;) {
        const lineEnd = rest.indexOf('\r\n');
        if (lineEnd === -1) break;
        const size = parseInt(rest.slice(0, lineEnd), 16);
        if (!Number.isFinite(size)) break;
        if (size === 0) {
          const trailerEnd = rest.indexOf('\r\n\r\n', lineEnd);
          if (trailerEnd === -1) break;
          rest = rest.slice(trailerEnd + 4);
          complete = true;
          break;
        }
        if (rest.length < lineEnd + 2 + size + 2) break;
        body += rest.slice(lineEnd + 2, lineEnd + 2 + size);
        rest = rest.slice(lineEnd + 2 + size + 2);
      }
      out.push({ status, headers, body, complete });
      if (!complete) break;
      continue;
    }
    out.push({ status, headers, body: rest, complete: closed });
    break;
  }
  return out;
}
