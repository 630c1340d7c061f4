/**
 * The `Authorization: Basic` header (RFC 7617). Pure: a header in, a verdict out, never a throw, so a hostile
 * header can only ever cost a 401.
 */
import { userNameProblem } from './htpasswd.js';

export type BasicAuthorization =
  | { kind: 'none' }
  | { kind: 'anonymous' }
  | { kind: 'malformed'; reason: string }
  | { kind: 'credentials'; user: string; password: string };

/** Longer headers are refused unread: a user name and a 72-byte password fit many times over. */
export const MAX_AUTHORIZATION_LENGTH = 8 * 1024;

// Standard alphabet with padding, as Go's net/http Request.BasicAuth (base64.StdEncoding) requires.
const BASE64_RE = /^[A-Za-z0-9+/]+={0,2}$/;
const utf8 = new TextDecoder('utf-8', { fatal: true });

export function parseBasicAuthorization(header: string | undefined): BasicAuthorization {
  if (header === undefined) return { kind: 'none' };
  if (header.length > MAX_AUTHORIZATION_LENGTH) return malformed(`longer than ${MAX_AUTHORIZATION_LENGTH} characters`);
  // Scheme names are case-insensitive (RFC 9110 section 11.1); one or more spaces before the token68.
  // Only spaces and tabs are white space here (RFC 9110 OWS, as Go trims header values): `trim()` would also
  // strip U+00A0 (a latin1 0xA0 byte) and pass a token Go's BasicAuth refuses.
  const value = header.replace(/^[ \t]+|[ \t]+$/g, '');
  const space = value.indexOf(' ');
  const scheme = space === -1 ? value : value.slice(0, space);
  if (scheme.toLowerCase() !== 'basic') {
    return malformed(/^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,20}$/.test(scheme) ? `unsupported scheme "${scheme}"` : 'not "Basic <base64>"');
  }
  const token = space === -1 ? '' : value.slice(space + 1).replace(/^ +/, '');
  if (token === '') return malformed('no credentials after "Basic"');
  if (!BASE64_RE.test(token) || token.length % 4 !== 0) return malformed('credentials are not valid base64');
  let decoded: string;
  try {
    decoded = utf8.decode(Buffer.from(token, 'base64'));
  } catch {
    return malformed('credentials are not UTF-8');
  }
  const colon = decoded.indexOf(':');
  if (colon === -1) return malformed('credentials have no ":" between user and password');
  const user = decoded.slice(0, colon);
  const password = decoded.slice(colon + 1); // the password may itself contain colons (RFC 7617 section 2)
  // containers/image sends `Basic Og==` (":" alone) when it has no credentials for the registry.
  if (user === '' && password === '') return { kind: 'anonymous' };
  const problem = userNameProblem(user);
  if (problem) return malformed(problem);
  return { kind: 'credentials', user, password };
}

function malformed(reason: string): BasicAuthorization {
  return { kind: 'malformed', reason };
}
