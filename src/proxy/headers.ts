/**
 * Header rules between client, proxy and registry. Pure functions over header objects.
 */
import type { IncomingHttpHeaders } from 'node:http';

export const API_VERSION_HEADER = 'docker-distribution-api-version';
export const API_VERSION = 'registry/2.0';

/**
 * How a request body is delimited (RFC 9112 6.3). Decided once, from what Node's parser accepted, before any
 * header is rewritten, and then written into the forwarded request by the proxy itself: no client header can
 * change it on the way (a `Connection: content-length` once made the body go upstream unframed, where the
 * registry parsed it as a second, unauthenticated request).
 */
export type Framing = { readonly kind: 'none' } | { readonly kind: 'length'; readonly length: number } | { readonly kind: 'chunked' };

/**
 * The framing of a request, or why it cannot be forwarded. Node's parser (llhttp) has already refused what
 * RFC 9112 6.3 calls unrecoverable: Content-Length with Transfer-Encoding, differing or malformed lengths,
 * a coding list that does not end in `chunked`. What it lets through and we refuse: codings before `chunked`
 * (`gzip, chunked`), which the registry cannot decode and which a proxy must not silently drop (501, RFC 9112 6.1).
 */
export function requestFraming(headers: IncomingHttpHeaders): Framing | { problem: string } {
  const te = headers['transfer-encoding'];
  if (te !== undefined) {
    return te.trim().toLowerCase() === 'chunked' ? { kind: 'chunked' } : { problem: `unsupported transfer coding "${te}"` };
  }
  const cl = headers['content-length'];
  if (cl === undefined) return { kind: 'none' };
  if (!/^\d{1,15}$/.test(cl)) return { problem: 'invalid Content-Length' };
  return { kind: 'length', length: Number(cl) };
}

/**
 * Headers that must appear at most once. Node keeps the first of a duplicated Host or Authorization and
 * drops the rest silently, while another parser may keep the last: two readers of one request would then
 * disagree about where it goes or who sent it. RFC 9112 3.2: more than one Host is a 400.
 */
const SINGLETONS = new Set(['host', 'authorization', 'content-length', 'transfer-encoding']);

/** The first singleton header that occurs more than once in `rawHeaders` (name/value pairs), or null. */
export function duplicatedSingleton(rawHeaders: readonly string[]): string | null {
  const seen = new Set<string>();
  for (let i = 0; i < rawHeaders.length; i += 2) {
    const name = rawHeaders[i]!.toLowerCase();
    if (!SINGLETONS.has(name)) continue;
    if (seen.has(name)) return name;
    seen.add(name);
  }
  return null;
}

/**
 * Never copied from the client: hop-by-hop headers (RFC 9110 7.6.1) belong to the client connection (a
 * forwarded `Connection: close` would also close our pooled upstream socket); the framing headers and Host are
 * written by the proxy from `Framing` and the context; `Expect` we answer ourselves after authenticating.
 */
const NOT_FORWARDED = new Set([
  'connection', 'keep-alive', 'proxy-connection', 'te', 'trailer', 'upgrade',
  'transfer-encoding', 'content-length', 'host', 'expect',
]);

/**
 * Headers a client must not be able to set for the registry:
 * - forwarding headers: the registry builds its absolute URLs from `Forwarded`, then `X-Forwarded-Proto`/`-Host`
 *   used verbatim (distribution 2.8 `api/v2/urls.go`), so a forged or appended value ("https,https") sends the
 *   next PATCH to the wrong place. We drop them all and set ours once.
 * - credentials: the registry behind us does no auth, and must not log passwords.
 * - identity headers: what proxies commonly use to tell a backend who the user is. The registry ignores them
 *   today, but a client must never be able to speak for the proxy should it (or a hook behind it) ever read one.
 */
const CLIENT_SET = new Set([
  'forwarded', 'x-real-ip', 'authorization', 'proxy-authorization',
  'remote-user', 'x-remote-user', 'x-remote-group', 'x-remote-groups', 'x-auth-user', 'x-authenticated-user',
  'x-authenticated-groups', 'x-user', 'x-email', 'x-webauth-user',
]);
const CLIENT_SET_PREFIXES = ['x-forwarded-', 'x-auth-request-', 'x-portcullis-'];

export interface ForwardingContext {
  clientIp: string;
  /** The scheme the client used to reach us. */
  proto: 'http' | 'https';
  /** The Host header as the client sent it, port included (`$http_host`, not `$host`: docker-registry#545). */
  host: string;
}

/** Is this client header one that never reaches the registry as sent? */
export function isStrippedRequestHeader(name: string): boolean {
  return NOT_FORWARDED.has(name) || CLIENT_SET.has(name) || CLIENT_SET_PREFIXES.some((p) => name.startsWith(p));
}

/**
 * The headers to send upstream, built anew from the client's: end-to-end headers are copied, except those the
 * client names in `Connection` and those in the lists above; then the proxy writes the framing, Host and the
 * forwarding headers itself. Because those are written last from the proxy's own values, no `Connection` token
 * can remove or duplicate them.
 */
export function forwardHeaders(incoming: IncomingHttpHeaders, framing: Framing, ctx: ForwardingContext): IncomingHttpHeaders {
  const named = new Set(
    String(incoming.connection ?? '')
      .split(',')
      .map((t) => t.trim().toLowerCase())
      .filter((t) => t !== ''),
  );
  const out: IncomingHttpHeaders = {};
  for (const [name, value] of Object.entries(incoming)) {
    if (value === undefined || named.has(name) || isStrippedRequestHeader(name)) continue;
    out[name] = value;
  }
  out.host = ctx.host;
  if (framing.kind === 'length') out['content-length'] = String(framing.length);
  else if (framing.kind === 'chunked') out['transfer-encoding'] = 'chunked';
  out['x-forwarded-proto'] = ctx.proto;
  out['x-forwarded-host'] = ctx.host;
  out['x-forwarded-for'] = ctx.clientIp;
  out['x-real-ip'] = ctx.clientIp;
  return out;
}

/** Response headers that belong to the registry's connection to us, not to ours with the client. The framing
 * (Content-Length, Transfer-Encoding) stays: Node frames the client response from it. */
const RESPONSE_HOP_BY_HOP = ['keep-alive', 'proxy-connection', 'te', 'trailer', 'upgrade'];

/** Drops hop-by-hop headers from an upstream response, in place, and those its `Connection` names. */
export function dropResponseHopHeaders(headers: IncomingHttpHeaders): void {
  const named = String(headers.connection ?? '')
    .split(',')
    .map((t) => t.trim().toLowerCase())
    .filter((t) => t !== '' && t !== 'content-length' && t !== 'transfer-encoding');
  for (const name of [...RESPONSE_HOP_BY_HOP, ...named]) delete headers[name];
  delete headers.connection;
}

/**
 * The registry's response headers as the client gets them: a Location that points at the registry itself
 * rewritten to the origin the client used, and the API version header on every answer (the nginx recipe adds
 * it with `always`).
 */
export function rewriteResponseHeaders(headers: IncomingHttpHeaders, internalOrigins: readonly string[], clientOrigin: string): void {
  if (typeof headers.location === 'string') headers.location = rewriteLocation(headers.location, internalOrigins, clientOrigin);
  headers[API_VERSION_HEADER] ??= API_VERSION;
}

/**
 * The origin (scheme://host:port) of an absolute URL, with default ports made explicit so that
 * `http://reg` and `http://reg:80` compare equal. Null for relative references.
 */
export function originOf(url: string): string | null {
  const m = /^([a-z][a-z0-9+.-]*):\/\/([^/?#]*)/i.exec(url);
  if (!m) return null;
  const scheme = m[1]!.toLowerCase();
  let authority = m[2]!.toLowerCase();
  if (authority.includes('@')) return null; // userinfo: not something a registry emits; leave it alone
  if (!/:\d+$/.test(authority) || authority.endsWith(']')) {
    if (scheme === 'http') authority += ':80';
    else if (scheme === 'https') authority += ':443';
  }
  return `${scheme}://${authority}`;
}

/**
 * Rewrites a `Location` that points at the registry's internal address to the origin the client used.
 *
 * Applies to every status, 202 included: upload URLs come back on 202 from POST and PATCH, which
 * http-proxy's autoRewrite ignores (node-http-proxy#914). Locations to any other origin (S3/minio
 * pre-signed redirects, distribution#3139) and relative ones pass untouched. Only the origin prefix is
 * replaced; the path and the signed `_state` query stay byte for byte.
 *
 * Also fixes a Location on the client's own host but the wrong scheme (a registry that ignored
 * X-Forwarded-Proto answers http:// to an https client: distribution#2572).
 */
export function rewriteLocation(
  location: string,
  internalOrigins: readonly string[],
  clientOrigin: string,
): string {
  const origin = originOf(location);
  if (origin === null) return location;
  const prefixLength = /^[a-z][a-z0-9+.-]*:\/\/[^/?#]*/i.exec(location)![0].length;
  const rest = location.slice(prefixLength);
  // Compared in the same form: `upstream.url` arrives as a URL's origin, which leaves out a default port
  // (`https://registry.internal`), while `origin` spells it out (`https://registry.internal:443`).
  if (internalOrigins.some((o) => originOf(o) === origin)) return clientOrigin + rest;
  const client = originOf(clientOrigin);
  if (client !== null && origin !== client && hostOf(origin) === hostOf(client) && origin.startsWith('http://')) {
    return clientOrigin + rest;
  }
  return location;
}

function hostOf(origin: string): string {
  return origin.slice(origin.indexOf('://') + 3);
}

/** `https://` + Host as sent. Host is required in HTTP/1.1; without it, use the address we listen on. */
export function clientOriginOf(proto: 'http' | 'https', host: string | undefined, fallbackHost: string): string {
  return `${proto}://${host && isValidHost(host) ? host : fallbackHost}`;
}

/** A Host header we are willing to echo into Location: a name or IP literal with an optional port. */
export function isValidHost(host: string): boolean {
  return /^(?:\[[0-9a-f:.]+\]|[a-z0-9.-]+)(?::\d{1,5})?$/i.test(host);
}

/** The address in the form X-Forwarded-For expects: IPv4-mapped IPv6 shown as plain IPv4. */
export function clientIpOf(address: string | undefined): string {
  if (!address) return 'unknown';
  return address.startsWith('::ffff:') && address.includes('.') ? address.slice(7) : address;
}
