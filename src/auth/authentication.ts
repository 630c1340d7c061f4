/**
 * The authentication step of the pipeline: from everything the request carries that says who sent it (the
 * Basic credentials, the verified TLS client certificate), an identity, or a refusal.
 *
 * What a verified client certificate means is `auth.clientCertificate`:
 * - `none`: nothing beyond the handshake (with `tls.clientAuth: require` only machines holding one get in at
 *   all, as registry:2's `clientcas` does); the caller is who their password says.
 * - `identity`: the certificate's subject CN is the caller (a CI robot needs no password); a request without
 *   one falls back to its Basic credentials.
 * - `and-password`: a verified certificate AND a valid password, the password naming the caller (the
 *   certificate says which machine, the password which person).
 *
 * An anonymous request is not refused here: whether anonymous may do what it asks is the authorization
 * step's call. Refused here are only credentials that are wrong, unreadable or, from this address, too many.
 */
import type { PeerCertificate } from 'node:tls';
import type { Config } from '../config/schema.js';
import type { AuthOutcome, Authenticator } from './authenticator.js';
import { ANONYMOUS, type Identity } from './identity.js';

export interface RequestCredentials {
  /** The Authorization header as sent. */
  authorization: string | undefined;
  clientIp: string;
  /** The verified TLS client certificate, if the connection presented one. Read on demand: most requests need not. */
  peerCertificate: () => PeerCertificate | null;
}

/** How the caller was identified, for the auth metric: the password outcomes, or by certificate. */
export type AuthenticationOutcome = AuthOutcome | 'certificate';

export type Authentication =
  | { readonly kind: 'identified'; readonly outcome: AuthenticationOutcome; readonly identity: Identity; readonly reason?: string }
  | { readonly kind: 'refused'; readonly outcome: 'failed' | 'malformed'; readonly reason: string }
  | { readonly kind: 'refused'; readonly outcome: 'throttled'; readonly reason: string; readonly retryAfterMs: number };

export async function authenticate(
  authenticator: Authenticator,
  credentials: RequestCredentials,
  certificates: Config['auth']['clientCertificate'] = 'none',
): Promise<Authentication> {
  if (certificates === 'identity') {
    const name = commonName(credentials.peerCertificate());
    if (name !== null) return { kind: 'identified', outcome: 'certificate', identity: { kind: 'certificate', name, groups: [] } };
  }
  const password = await byPassword(authenticator, credentials);
  if (certificates === 'and-password' && password.kind === 'identified' && password.identity.kind === 'user') {
    if (commonName(credentials.peerCertificate()) === null) {
      return { kind: 'refused', outcome: 'failed', reason: 'no verified client certificate' };
    }
  }
  return password;
}

async function byPassword(authenticator: Authenticator, credentials: RequestCredentials): Promise<Authentication> {
  const r = await authenticator.authenticate(credentials.authorization, credentials.clientIp);
  switch (r.outcome) {
    case 'ok':
    case 'cached':
      return { kind: 'identified', outcome: r.outcome, identity: { kind: 'user', name: r.user, groups: [] } };
    case 'anonymous':
      return { kind: 'identified', outcome: r.outcome, identity: ANONYMOUS, reason: r.reason ?? 'no credentials' };
    case 'throttled':
      return { kind: 'refused', outcome: r.outcome, reason: r.reason ?? r.outcome, retryAfterMs: r.retryAfterMs };
    default:
      return { kind: 'refused', outcome: r.outcome, reason: r.reason ?? r.outcome };
  }
}

/** The subject CN of a verified certificate, when it has exactly one usable CN. */
export function commonName(cert: PeerCertificate | null): string | null {
  const cn: unknown = cert?.subject?.CN;
  if (typeof cn !== 'string' || cn === '' || /[\u0000-\u001f\u007f]/.test(cn)) return null;
  return cn;
}
