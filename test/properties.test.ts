/**
 * Properties of the parsers an attacker reaches first, checked on generated input (fast-check): the Basic header,
 * the htpasswd file, request targets, Location rewriting and the headers sent to the registry.
 *
 * `npm test` runs FUZZ_RUNS cases per property (default 200, a few seconds in all); `npm run fuzz` runs many more.
 * A failure prints the smallest input found and the seed to replay it with (`fc.assert` does both).
 */
import assert from 'node:assert/strict';
import type { IncomingHttpHeaders } from 'node:http';
import { IncomingMessage } from 'node:http';
import { Socket } from 'node:net';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { MAX_AUTHORIZATION_LENGTH, parseBasicAuthorization } from '../src/auth/basic.ts';
import {
  formatHtpasswdLine,
  lineUser,
  parseHtpasswd,
  removeHtpasswdUser,
  scanHtpasswd,
  setHtpasswdUser,
  userNameProblem,
} from '../src/auth/htpasswd.ts';
import { PortcullisError } from '../src/errors.ts';
import { classify, isAmbiguousPath, queryProblem, splitTarget } from '../src/http/route.ts';
import { forwardHeaders, isStrippedRequestHeader, originOf, rewriteLocation, type Framing } from '../src/proxy/headers.ts';

const RUNS = Number(process.env.FUZZ_RUNS ?? 200);
const params = { numRuns: RUNS };

/** Strings of every kind: ASCII, any code point, latin1 bytes as a header value arrives. */
const anyString = fc.oneof(fc.string(), fc.string({ unit: 'binary' }), fc.string({ unit: fc.integer({ min: 0, max: 255 }).map((c) => String.fromCharCode(c)) }));
/** Strings that survive UTF-8 both ways (no lone surrogates), as credentials do. */
const utf8String = (o: { minLength?: number; maxLength: number }): fc.Arbitrary<string> =>
  fc.string({ unit: 'binary', ...o }).filter((s) => Buffer.from(s).toString() === s);
const b64 = (s: string | Uint8Array): string => Buffer.from(s).toString('base64');

// ---- Authorization: Basic -----------------------------------------------------------------------------------

/**
 * Go's net/http Request.BasicAuth, which registry:2 and most Go clients use, as a model: the header value as Go
 * sees it (spaces and tabs trimmed by textproto), then `Basic ` in any ASCII case, then base64.StdEncoding of
 * `user:password`, split at the first colon. Stricter than Go where it is simpler (Go also skips CR and LF
 * inside the base64), which only makes the property below demand more.
 */
function goBasicAuth(header: string): { user: string; password: string } | null {
  const auth = header.replace(/^[ \t]+|[ \t]+$/g, '');
  if (!/^basic $/i.test(auth.slice(0, 6))) return null;
  const token = auth.slice(6);
  if (!/^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/.test(token)) return null;
  const cs = Buffer.from(token, 'base64').toString('utf8');
  const colon = cs.indexOf(':');
  return colon === -1 ? null : { user: cs.slice(0, colon), password: cs.slice(colon + 1) };
}

/** Authorization values near the valid ones: schemes, space runs, tokens with a character changed, white space. */
const authorizationLike = fc
  .tuple(
    fc.constantFrom('', ' ', '\t', '\xa0', '\ufeff'),
    fc.constantFrom('Basic', 'basic', 'BASIC', 'bAsIc', 'Bearer', 'Basicx', 'Basİc', 'Digest', ''),
    fc.constantFrom(' ', '  ', '\t', '', ' \t', '\xa0'),
    fc.oneof(
      fc.tuple(utf8String({ maxLength: 12 }), utf8String({ maxLength: 20 })).map(([u, p]) => b64(`${u}:${p}`)),
      fc.uint8Array({ maxLength: 24 }).map((b) => b64(b)),
      fc.stringMatching(/^[A-Za-z0-9+/=_\-. :]{0,24}$/),
    ),
    fc.nat(30),
    fc.constantFrom('', '=', ' ', '\t', '\r', '\n', '\xa0', '-', '_', ':', '\0', '\u2028'),
    fc.constantFrom('', ' ', '\t', '\xa0', '\u3000'),
  )
  .map(([lead, scheme, gap, token, at, insert, trail]) => {
    const i = Math.min(at, token.length);
    return `${lead}${scheme}${gap}${token.slice(0, i)}${insert}${token.slice(i)}${trail}`;
  });

describe('Basic header (src/auth/basic.ts)', () => {
  it('never throws, whatever the header', () => {
    fc.assert(
      fc.property(fc.oneof(anyString, authorizationLike), (header) => {
        const r = parseBasicAuthorization(header);
        assert.ok(['anonymous', 'malformed', 'credentials'].includes(r.kind));
      }),
      params,
    );
  });

  it('round-trips user:password for every valid user and password, with any scheme case and space run', () => {
    const user = utf8String({ minLength: 1, maxLength: 40 }).filter((u) => userNameProblem(u) === null);
    fc.assert(
      fc.property(user, utf8String({ maxLength: 80 }), fc.constantFrom('Basic', 'basic', 'BASIC'), fc.integer({ min: 1, max: 4 }), fc.constantFrom('', ' ', '\t'), (u, p, scheme, spaces, ows) => {
        const header = `${ows}${scheme}${' '.repeat(spaces)}${b64(`${u}:${p}`)}${ows}`;
        assert.deepEqual(parseBasicAuthorization(header), { kind: 'credentials', user: u, password: p });
      }),
      params,
    );
  });

  it('accepts nothing Go\'s BasicAuth refuses, and reads what it accepts as Go does', () => {
    fc.assert(
      fc.property(fc.oneof(authorizationLike, anyString), (header) => {
        const ours = parseBasicAuthorization(header);
        if (ours.kind !== 'credentials' && ours.kind !== 'anonymous') return;
        // The one difference RFC 9110 11.4 allows (1*SP after the scheme): Go wants exactly one space.
        const go = goBasicAuth(header.replace(/^([ \t]*[A-Za-z]+) +/, '$1 '));
        assert.ok(go !== null, `accepted here, refused by Go: ${JSON.stringify(header)}`);
        if (ours.kind === 'credentials') assert.deepEqual(go, { user: ours.user, password: ours.password });
        else assert.deepEqual(go, { user: '', password: '' });
      }),
      params,
    );
  });

  it('refuses, without reading it, anything longer than MAX_AUTHORIZATION_LENGTH', () => {
    fc.assert(
      fc.property(fc.string({ minLength: MAX_AUTHORIZATION_LENGTH + 1, maxLength: MAX_AUTHORIZATION_LENGTH + 64 }), (tail) => {
        assert.equal(parseBasicAuthorization(`Basic ${tail}`).kind, 'malformed');
      }),
      { numRuns: Math.min(RUNS, 50) },
    );
  });
});

// ---- htpasswd -----------------------------------------------------------------------------------------------

const BCRYPT_ALPHABET = './ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789'.split('');
const bcryptHash = fc
  .tuple(fc.constantFrom('a', 'b', 'y'), fc.integer({ min: 4, max: 31 }), fc.array(fc.constantFrom(...BCRYPT_ALPHABET), { minLength: 53, maxLength: 53 }))
  .map(([minor, cost, tail]) => `$2${minor}$${String(cost).padStart(2, '0')}$${tail.join('')}`);
const shaHash = fc.uint8Array({ minLength: 20, maxLength: 20 }).map((b) => `{SHA}${b64(b)}`);
const validHash = fc.oneof(bcryptHash, shaHash);
const validUser = fc.oneof(
  fc.constantFrom('alice', 'bob', 'carol', 'j\u00fcrgen', 'a b', 'bob '),
  utf8String({ minLength: 1, maxLength: 20 }).filter((u) => userNameProblem(u) === null),
);
/** One line of a file, without its newline: entries (also as a tool might space them), comments, junk. */
const htpasswdLine = fc.oneof(
  fc.tuple(validUser, validHash).map(([u, h]) => `${u}:${h}`),
  fc.tuple(validUser, validHash, fc.constantFrom(' ', '\t', '  '), fc.constantFrom('', ' ', '\r', ' \r')).map(([u, h, lead, trail]) => `${lead}${u}:${h}${trail}`),
  fc.tuple(validUser, fc.constantFrom('$apr1$abc$def', '$1$x$y', 'plaintext', 'abcdefghijklm', '{SSHA}x', '$2y$99$short', '')).map(([u, h]) => `${u}:${h}`),
  fc.string().map((s) => `#${s.replace(/\n/g, '')}`),
  fc.constantFrom('', ' ', '\t', '\r'),
  anyString.map((s) => s.replace(/\n/g, '')),
);
const htpasswdText = fc.oneof(
  fc.tuple(fc.array(htpasswdLine, { maxLength: 12 }), fc.boolean()).map(([lines, newline]) => lines.join('\n') + (newline && lines.length > 0 ? '\n' : '')),
  anyString,
);

describe('htpasswd file (src/auth/htpasswd.ts)', () => {
  it('scan never throws and keeps every line as written; parse throws only PCL_ERR_HTPASSWD', () => {
    fc.assert(
      fc.property(htpasswdText, (text) => {
        const lines = scanHtpasswd(text);
        const joined = lines.map((l) => l.text).join('\n');
        assert.equal(text.endsWith('\n') ? `${joined}\n` : joined, text);
        try {
          parseHtpasswd(text);
        } catch (err) {
          assert.ok(err instanceof PortcullisError && err.code === 'PCL_ERR_HTPASSWD', String(err));
        }
      }),
      params,
    );
  });

  it('every accepted line round-trips through formatHtpasswdLine', () => {
    fc.assert(
      fc.property(htpasswdText, (text) => {
        for (const l of scanHtpasswd(text)) {
          if (l.kind !== 'entry') continue;
          const line = formatHtpasswdLine(l.user, l.hash);
          assert.equal(line, l.text.trim());
          const [again] = scanHtpasswd(line);
          assert.deepEqual(again, { kind: 'entry', text: line, line: 1, user: l.user, hash: l.hash, scheme: l.scheme });
        }
      }),
      params,
    );
  });

  it('a line formatHtpasswdLine writes reads back as the same user and hash', () => {
    const anyUser = fc.oneof(validUser, utf8String({ minLength: 1, maxLength: 12 }), fc.constantFrom(' bob', '\tbob', '#bob', '\u00a0bob', '\ufeffbob'));
    fc.assert(
      fc.property(anyUser, validHash, (user, hash) => {
        let line: string;
        try {
          line = formatHtpasswdLine(user, hash);
        } catch (err) {
          assert.ok(err instanceof PortcullisError && err.code === 'PCL_ERR_HTPASSWD');
          return;
        }
        const lines = scanHtpasswd(`${line}\n`);
        assert.equal(lines.length, 1);
        assert.equal(lines[0]!.kind, 'entry', `${JSON.stringify(line)} reads back as ${lines[0]!.kind}`);
        assert.equal(lineUser(lines[0]!), user);
        assert.equal(lines[0]!.kind === 'entry' ? lines[0]!.hash : null, hash);
      }),
      params,
    );
  });

  it('setting a user changes that user\'s lines only; every other line stays byte for byte', () => {
    fc.assert(
      fc.property(htpasswdText, validUser, validHash, (text, user, hash) => {
        const before = scanHtpasswd(text);
        const { text: out, added } = setHtpasswdUser(text, user, hash);
        const after = scanHtpasswd(out);
        const others = (ls: ReturnType<typeof scanHtpasswd>): string[] => ls.filter((l) => lineUser(l) !== user).map((l) => l.text);
        assert.deepEqual(others(after), others(before));
        const mine = after.filter((l) => lineUser(l) === user);
        assert.deepEqual(mine.map((l) => l.text), [formatHtpasswdLine(user, hash)]);
        assert.equal(added, !before.some((l) => lineUser(l) === user));
        // Replaced where the user's first line was.
        const first = before.findIndex((l) => lineUser(l) === user);
        if (first !== -1) assert.equal(after.findIndex((l) => lineUser(l) === user), before.slice(0, first).filter((l) => lineUser(l) !== user).length);
      }),
      params,
    );
  });

  it('removing a user removes that user\'s lines only; every other line stays byte for byte', () => {
    fc.assert(
      fc.property(htpasswdText, validUser, (text, user) => {
        const before = scanHtpasswd(text);
        const { text: out, removed } = removeHtpasswdUser(text, user);
        const after = scanHtpasswd(out);
        assert.deepEqual(after.map((l) => l.text), before.filter((l) => lineUser(l) !== user).map((l) => l.text));
        assert.equal(removed, before.some((l) => lineUser(l) === user));
      }),
      params,
    );
  });
});

// ---- Request targets ------------------------------------------------------------------------------------------

/** The distribution name grammar (reference/regexp.go), written out as a scanner rather than a regex. */
function isDistributionName(name: string): boolean {
  if (name.length === 0 || name.length > 255) return false;
  const alnum = (c: string | undefined): boolean => c !== undefined && /^[a-z0-9]$/.test(c);
  return name.split('/').every((component) => {
    let i = 0;
    const run = (): boolean => {
      const start = i;
      while (alnum(component[i])) i++;
      return i > start;
    };
    if (!run()) return false;
    while (i < component.length) {
      if (component.startsWith('__', i)) i += 2;
      else if (component[i] === '.' || component[i] === '_') i += 1;
      else if (component[i] === '-') while (component[i] === '-') i++;
      else return false;
      if (!run()) return false;
    }
    return true;
  });
}

/** Go's url.PathUnescape, as the registry's router sees the path: null where Go refuses the escape. */
function goUnescape(path: string): string | null {
  if (/%(?![0-9A-Fa-f]{2})/.test(path)) return null;
  return path.replace(/%([0-9A-Fa-f]{2})/g, (_, hex: string) => String.fromCharCode(parseInt(hex, 16)));
}

/** gorilla/mux cleanPath: Go's path.Clean, keeping a trailing slash. The registry redirects a path it changes. */
function muxClean(p: string): string {
  if (p === '') return '/';
  const path = p.startsWith('/') ? p : `/${p}`;
  const out: string[] = [];
  for (const segment of path.split('/')) {
    if (segment === '' || segment === '.') continue;
    if (segment === '..') out.pop();
    else out.push(segment);
  }
  const cleaned = `/${out.join('/')}`;
  return path.endsWith('/') && cleaned !== '/' ? `${cleaned}/` : cleaned;
}

const escape = fc.tuple(fc.integer({ min: 0, max: 255 }), fc.boolean()).map(([b, upper]) => {
  const hex = b.toString(16).padStart(2, '0');
  return `%${upper ? hex.toUpperCase() : hex}`;
});
const pathPiece = fc.oneof(
  fc.constantFrom('/', '/', '/', 'v2', 'tags', 'list', 'manifests', 'blobs', 'uploads', '_catalog', '.', '..', 'a', 'team', 'app', 'latest', 'sha256:abc', '\\', '%', '%z', '-', '_', '__'),
  escape,
  fc.stringMatching(/^[a-z0-9._-]{1,8}$/),
  fc.string({ maxLength: 4 }),
);
const target = fc.tuple(fc.constantFrom('/v2/', '/v2/', '/v2', '/', ''), fc.array(pathPiece, { maxLength: 10 })).map(([prefix, pieces]) => prefix + pieces.join(''));
const method = fc.constantFrom('GET', 'HEAD', 'PUT', 'POST', 'PATCH', 'DELETE', 'OPTIONS');
const componentArb = fc.stringMatching(/^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$/);
const registryPath = fc
  .tuple(
    fc.array(fc.oneof(componentArb, fc.stringMatching(/^[a-zA-Z0-9._-]{0,6}$/)), { minLength: 1, maxLength: 4 }),
    fc.constantFrom('/tags/list', '/manifests/latest', '/manifests/sha256:abc', '/blobs/sha256:abc', '/blobs/uploads/', '/blobs/uploads/uuid-1'),
  )
  .map(([components, suffix]) => ({ name: components.join('/'), path: `/v2/${components.join('/')}${suffix}` }));

describe('request targets (src/http/route.ts)', () => {
  it('classify never throws, and any repository it names matches the distribution grammar', () => {
    fc.assert(
      fc.property(fc.oneof(method, anyString), fc.oneof(target, anyString), fc.option(anyString), (m, t, q) => {
        const route = classify(m, t, q);
        if (route.repository !== null) assert.ok(isDistributionName(route.repository), route.repository);
      }),
      params,
    );
  });

  it('every registry path with a valid name is classified with exactly that name', () => {
    fc.assert(
      fc.property(method, registryPath, (m, { name, path }) => {
        const route = classify(m, path);
        assert.equal(route.repository, isDistributionName(name) ? name : null, path);
      }),
      params,
    );
  });

  it('a mount source that passes queryProblem is a repository name', () => {
    const query = fc.array(fc.tuple(fc.constantFrom('mount', 'from', 'digest', '_state'), fc.oneof(componentArb, anyString)), { maxLength: 4 })
      .map((pairs) => pairs.map(([k, v]) => `${k}=${encodeURIComponent(v)}`).join('&'));
    fc.assert(
      fc.property(registryPath, fc.oneof(query, anyString), ({ path }, q) => {
        if (queryProblem(q) !== null) return;
        const route = classify('POST', path, q);
        if (route.mountFrom !== null) assert.ok(isDistributionName(route.mountFrom), route.mountFrom);
      }),
      params,
    );
  });

  it('a path isAmbiguousPath lets through is one the registry reads as the same route: decoding and cleaning change nothing that matters', () => {
    fc.assert(
      fc.property(method, target, (m, t) => {
        const { path } = splitTarget(t);
        if (isAmbiguousPath(path)) return;
        if (!path.startsWith('/')) return; // refused before: the target must be a path
        assert.equal(muxClean(path), path, `dot segments or // survived: ${path}`);
        const decoded = goUnescape(path);
        assert.notEqual(decoded, null, `Go cannot decode ${path}`);
        assert.equal(muxClean(decoded!), decoded, `the registry would clean ${decoded}`);
        assert.deepEqual(classify(m, decoded!), classify(m, path), `the registry reads ${path} as ${decoded}`);
      }),
      params,
    );
  });

  it('any path that dot-segment removal or decoding an unreserved escape would change is refused', () => {
    fc.assert(
      fc.property(target, (t) => {
        const { path } = splitTarget(t);
        if (!path.startsWith('/')) return;
        const cleaned = muxClean(path) !== path;
        const unreserved = /%(?:[46][1-9a-f]|[57][0-9a]|3[0-9]|2[def]|5[cf]|7e|00)/i.test(path) || goUnescape(path) === null;
        if (cleaned || unreserved) assert.ok(isAmbiguousPath(path), path);
      }),
      params,
    );
  });
});

// ---- Location ---------------------------------------------------------------------------------------------------

const host = fc.constantFrom('127.0.0.1', 'registry', 'reg.internal', '[::1]', '10.0.0.5');
const scheme = fc.constantFrom('http', 'https');
const port = fc.option(fc.oneof(fc.constantFrom(80, 443, 5000), fc.integer({ min: 1, max: 65535 })), { nil: undefined });
/** An origin as the configuration holds it: a URL's `.origin`, which drops a default port. */
const configOrigin = fc.tuple(scheme, host, port).map(([s, h, p]) => new URL(`${s}://${h}${p === undefined ? '' : `:${p}`}`).origin);
/** The same origin as a registry may write it: any case, a default port spelled out or left out. */
function spellings(origin: string): fc.Arbitrary<string> {
  const [s, authority] = origin.split('://') as [string, string];
  const forms = /:\d+$/.test(authority) ? [authority] : [authority, `${authority}:${s === 'http' ? 80 : 443}`];
  return fc.tuple(fc.constantFrom(s, s.toUpperCase()), fc.constantFrom(...forms), fc.boolean()).map(([a, b, upper]) => `${a}://${upper ? b.toUpperCase() : b}`);
}
const locationRest = fc.oneof(fc.constant(''), fc.tuple(fc.constantFrom('/', '?', '#'), anyString).map(([a, b]) => a + b));
const clientOrigin = fc.constantFrom('https://reg.example:5043', 'https://reg.example', 'https://10.1.2.3:443', 'http://localhost:5043');

describe('Location rewriting (src/proxy/headers.ts rewriteLocation)', () => {
  it('a Location on an internal origin, however spelled: only the origin changes, the rest byte for byte', () => {
    const internalAndSpelling = fc
      .tuple(fc.array(configOrigin, { minLength: 1, maxLength: 3 }), fc.nat())
      .chain(([internal, pick]) => spellings(internal[pick % internal.length]!).map((spelled) => ({ internal, spelled })));
    fc.assert(
      fc.property(internalAndSpelling, clientOrigin, locationRest, ({ internal, spelled }, client, rest) => {
        assert.equal(rewriteLocation(spelled + rest, internal, client), client + rest);
      }),
      params,
    );
  });

  it('any other Location is untouched, or has only its origin replaced by the client\'s', () => {
    fc.assert(
      fc.property(fc.array(configOrigin, { maxLength: 3 }), clientOrigin, fc.oneof(anyString, fc.tuple(scheme, fc.constantFrom('s3.example', 'bucket.s3.amazonaws.com', 'reg.example', 'localhost'), port, locationRest).map(([s, h, p, r]) => `${s}://${h}${p === undefined ? '' : `:${p}`}${r}`)), (internal, client, location) => {
        const out = rewriteLocation(location, internal, client);
        if (out === location) return;
        const origin = originOf(location);
        assert.notEqual(origin, null, 'a relative Location is never rewritten');
        const prefix = /^[a-z][a-z0-9+.-]*:\/\/[^/?#]*/i.exec(location)![0];
        assert.equal(out, client + location.slice(prefix.length), 'only the origin changes');
        const internalHit = internal.some((o) => originOf(o) === origin);
        const sameHostPlainHttp = origin!.startsWith('http://') && origin!.slice(7) === originOf(client)!.replace(/^https?:\/\//, '');
        assert.ok(internalHit || sameHostPlainHttp, `${location} is neither internal nor the client's host over http`);
      }),
      params,
    );
  });

  it('regression: a registry on a default port (https://registry.internal) is rewritten', () => {
    const internal = [new URL('https://registry.internal').origin];
    assert.equal(rewriteLocation('https://registry.internal/v2/a/blobs/uploads/u?_state=x', internal, 'https://r:5043'), 'https://r:5043/v2/a/blobs/uploads/u?_state=x');
    assert.equal(rewriteLocation('https://registry.internal:443/v2/', internal, 'https://r:5043'), 'https://r:5043/v2/');
  });
});

// ---- Headers sent to the registry ---------------------------------------------------------------------------

/** The headers Node makes of a raw header list (its folding of duplicates included). */
function nodeHeaders(raw: Array<[string, string]>): IncomingHttpHeaders {
  const message = new IncomingMessage(new Socket());
  const flat = raw.flat();
  (message as unknown as { _addHeaderLines(headers: string[], n: number): void })._addHeaderLines(flat, flat.length);
  return message.headers;
}

const INTERESTING = [
  'Host', 'HOST', 'host', 'Connection', 'connection', 'Content-Length', 'Transfer-Encoding', 'Authorization', 'Proxy-Authorization',
  'X-Forwarded-For', 'X-Forwarded-Proto', 'X-Forwarded-Host', 'X-Forwarded-Port', 'X-Forwarded-User', 'Forwarded', 'X-Real-IP',
  'Keep-Alive', 'TE', 'Trailer', 'Upgrade', 'Proxy-Connection', 'Expect', 'Remote-User', 'X-Remote-User', 'X-Remote-Groups',
  'X-Auth-User', 'X-Authenticated-User', 'X-Authenticated-Groups', 'X-User', 'X-Email', 'X-WebAuth-User', 'X-Auth-Request-Email',
  'X-Portcullis-Identity', 'Set-Cookie', 'Cookie', 'Accept', 'User-Agent', 'Content-Type', 'X-Custom', '__proto__', 'constructor', 'toString',
];
const headerName = fc.oneof(fc.constantFrom(...INTERESTING), fc.stringMatching(/^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,16}$/));
const connectionValue = fc.array(fc.tuple(fc.oneof(headerName, fc.constant('')), fc.constantFrom('', ' ', '  ', '\t')), { maxLength: 6 })
  .map((tokens) => tokens.map(([t, s]) => `${s}${t}${s}`).join(','));
const headerList = fc.array(
  fc.oneof(
    fc.tuple(headerName, fc.stringMatching(/^[\x20-\x7e\x80-\xff\t]{0,20}$/)),
    fc.tuple(fc.constantFrom('Connection', 'connection'), connectionValue),
  ),
  { maxLength: 24 },
);
const framing: fc.Arbitrary<Framing> = fc.oneof(
  fc.constant({ kind: 'none' } as const),
  fc.constant({ kind: 'chunked' } as const),
  fc.nat({ max: 2 ** 40 }).map((length) => ({ kind: 'length', length }) as const),
);
const context = fc.record({
  clientIp: fc.constantFrom('127.0.0.1', '10.1.2.3', '::1', '2001:db8::1'),
  proto: fc.constantFrom('http' as const, 'https' as const),
  host: fc.constantFrom('reg.example:5043', 'localhost', '127.0.0.1:0'),
});
const PROXY_SET = ['x-forwarded-for', 'x-forwarded-proto', 'x-forwarded-host', 'x-real-ip'];
const HOP_BY_HOP = ['connection', 'keep-alive', 'proxy-connection', 'te', 'trailer', 'upgrade', 'expect'];
const CREDENTIAL_OR_IDENTITY = [
  'authorization', 'proxy-authorization', 'forwarded', 'x-real-ip', 'remote-user', 'x-remote-user', 'x-remote-group', 'x-remote-groups',
  'x-auth-user', 'x-authenticated-user', 'x-authenticated-groups', 'x-user', 'x-email', 'x-webauth-user',
];

describe('headers sent to the registry (src/proxy/headers.ts forwardHeaders)', () => {
  it('for any client headers: one Host, the framing as decided, the proxy\'s headers once, no hop-by-hop, credential or identity header', () => {
    fc.assert(
      fc.property(headerList, framing, context, (raw, f, ctx) => {
        const incoming = nodeHeaders(raw);
        const snapshot = structuredClone(incoming);
        const out = forwardHeaders(incoming, f, ctx);
        assert.deepEqual(incoming, snapshot, 'the client headers are left as they were');

        const names = Object.keys(out);
        assert.ok(names.every((n) => n === n.toLowerCase()), 'names in lower case');
        assert.equal(names.filter((n) => n === 'host').length, 1);
        assert.equal(out.host, ctx.host);

        if (f.kind === 'length') assert.equal(out['content-length'], String(f.length));
        else assert.ok(!Object.hasOwn(out, 'content-length'));
        if (f.kind === 'chunked') assert.equal(out['transfer-encoding'], 'chunked');
        else assert.ok(!Object.hasOwn(out, 'transfer-encoding'), 'never both framing headers');

        assert.equal(out['x-forwarded-for'], ctx.clientIp);
        assert.equal(out['x-real-ip'], ctx.clientIp);
        assert.equal(out['x-forwarded-proto'], ctx.proto);
        assert.equal(out['x-forwarded-host'], ctx.host);

        // Own properties: a token such as `__proto__` must not be read through the prototype.
        for (const name of HOP_BY_HOP) assert.ok(!Object.hasOwn(out, name), name);
        const named = String(incoming.connection ?? '').split(',').map((t) => t.trim().toLowerCase()).filter((t) => t !== '');
        const ours = new Set(['host', 'content-length', 'transfer-encoding', ...PROXY_SET]);
        for (const name of named) if (!ours.has(name)) assert.ok(!Object.hasOwn(out, name), `named in Connection: ${name}`);
        for (const name of names) {
          if (ours.has(name)) continue;
          assert.ok(!isStrippedRequestHeader(name), `${name} is never forwarded`);
          // The table in docs/security.md, restated.
          assert.ok(!CREDENTIAL_OR_IDENTITY.includes(name) && !/^(?:x-forwarded-|x-auth-request-|x-portcullis-)/.test(name), name);
          // Everything else is the client's, unchanged.
          assert.deepEqual(out[name], incoming[name], name);
        }
        // And every end-to-end header the client sent arrives.
        for (const [name, value] of Object.entries(incoming)) {
          if (value === undefined || ours.has(name) || named.includes(name) || isStrippedRequestHeader(name)) continue;
          assert.deepEqual(out[name], value, `${name} kept`);
        }
      }),
      params,
    );
  });
});
