/**
 * The authentication step of the pipeline: from everything the request carries that says who sent it
 * (today the Basic credentials; the TLS client certificate is in the context for the step that reads it),
 * an identity, or a refusal.
 *
 * An anonymous request is not refused here: whether anonymous may do what it asks is the authorization
 * step's call. Refused here are only requests whose credentials are wrong, unreadable or, from this address,
 * too many.
 */
import type { PeerCertificate } from 'node:tls';
import type { AuthOutcome, Authenticator } from './authenticator.js';
import { ANONYMOUS, type Identity } from './identity.js';

export interface RequestCredentials {
  /** The Authorization header as sent. */
  authorization: string | undefined;
  clientIp: string;
  /** The verified TLS client certificate, if the connection presented one. Read on demand: most requests need not. */
  peerCertificate: () => PeerCertificate | null;
}

export type Authentication =
  | { readonly kind: 'identified'; readonly outcome: AuthOutcome; readonly identity: Identity; readonly reason?: string }
  | { readonly kind: 'refused'; readonly outcome: 'failed' | 'malformed'; readonly reason: string }
  | { readonly kind: 'refused'; readonly outcome: 'throttled'; readonly reason: string; readonly retryAfterMs: number };

export async function authenticate(authenticator: Authenticator, credentials: RequestCredentials): Promise<Authentication> {
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
