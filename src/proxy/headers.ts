/**
 * Header rules between client, proxy and registry. Pure functions over header objects.
 */
import type { IncomingHttpHeaders } from 'node:http';

export const API_VERSION_HEADER = 'docker-distribution-api-version';
export const API_VERSION = 'registry/2.0';

/**
 * Headers a client must not be able to set for the registry: the registry builds its absolute URLs from
 * `Forwarded`, then `X-Forwarded-Proto`/`-Host` used verbatim (distribution 2.8 `api/v2/urls.go`), so a forged
 * or appended value ("https,https") sends the next PATCH to the wrong place. We drop them all and set ours once.
 */
const CLIENT_FORWARDING_HEADERS = ['forwarded', 'x-real-ip'];

const HOP_BY_HOP = ['connection', 'keep-alive', 'proxy-connection', 'te', 'trailer', 'upgrade'];

/** The client's credentials stay here: the registry behind us does no auth, and must not log passwords. */
const PRIVATE_HEADERS = ['authorization', 'proxy-authorization'];

export interface ForwardingContext {
  clientIp: string;
  /** The scheme the client used to reach us. */
  proto: 'http' | 'https';
  /** The Host header as the client sent it, port included (`$http_host`, not `$host`: docker-registry#545). */
  host: string;
}

/**
 * Rewrites request headers in place before forwarding. In place, because http-proxy copies `req.headers`
 * and skips its `proxyReq` hook when `Expect` is present (node-http-proxy#1447).
 */
export function prepareForwardHeaders(headers: IncomingHttpHeaders, ctx: ForwardingContext): void {
  // Hop-by-hop headers (RFC 9110 7.6.1) belong to the client connection; a forwarded `Connection: close`
  // would also close our pooled upstream socket. Transfer-Encoding stays: it frames the body we stream on.
  const named = String(headers.connection ?? '')
    .split(',')
    .map((t) => t.trim().toLowerCase())
    .filter((t) => t !== '' && t !== 'transfer-encoding');
  for (const name of [...HOP_BY_HOP, ...named]) delete headers[name];
  for (const name of Object.keys(headers)) {
    if (name.startsWith('x-forwarded-') || CLIENT_FORWARDING_HEADERS.includes(name) || PRIVATE_HEADERS.includes(name)) {
      delete headers[name];
    }
  }
  // We answer `Expect: 100-continue` ourselves after authenticating; the registry must not see it again.
  delete headers.expect;
  headers['x-forwarded-proto'] = ctx.proto;
  headers['x-forwarded-host'] = ctx.host;
  headers['x-forwarded-for'] = ctx.clientIp;
  headers['x-real-ip'] = ctx.clientIp;
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
  if (internalOrigins.includes(origin)) return clientOrigin + rest;
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
