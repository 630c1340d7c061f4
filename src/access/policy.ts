/**
 * Authorization: may this identity do this to this repository? One decision per request, made after
 * authentication and before anything reaches the registry.
 *
 * The pipeline turns a refusal into the answer clients act on: `401` with the challenge for an anonymous
 * caller (docker and podman send credentials only after one), `403 DENIED` for a known one (docker stops
 * instead of retrying).
 */
import type { Identity } from '../auth/identity.js';
import type { Action, Route } from '../http/route.js';

export interface Decision {
  readonly allowed: boolean;
  /** Why, for the access log (never sent to the client). */
  readonly reason: string;
}

export interface Authorizer {
  /** The decision for a request. */
  authorize(identity: Identity, route: Route): Decision;
  /** May `identity` do `action` on `repository`? (a mount's source, each name of the catalog) */
  may(identity: Identity, action: Action, repository: string): Decision;
  /** Whether the catalog must be filtered per caller (false: every caller allowed to list sees it all). */
  readonly filtersCatalog: boolean;
}

/** Without access rules: every authenticated caller may do everything, nobody else anything. */
export const authenticatedOnly: Authorizer = {
  authorize: (identity) => signedIn(identity),
  may: (identity) => signedIn(identity),
  filtersCatalog: false,
};

function signedIn(identity: Identity): Decision {
  return identity.kind === 'anonymous' ? { allowed: false, reason: 'authentication required' } : { allowed: true, reason: 'signed in' };
}
