/**
 * Authorization: may this identity do this to this repository? One decision per request, made after
 * authentication and before anything reaches the registry.
 *
 * The pipeline turns a refusal into the answer clients act on: `401` with the challenge for an anonymous
 * caller (docker and podman send credentials only after one), `403 DENIED` for a known one (docker stops
 * instead of retrying).
 */
import type { Identity } from '../auth/identity.js';
import type { Route } from '../http/route.js';

export interface Decision {
  readonly allowed: boolean;
  /** Why, for the access log (never sent to the client). */
  readonly reason: string;
}

export interface Authorizer {
  authorize(identity: Identity, route: Route): Decision;
}

/** Without access rules: every authenticated caller may do everything, nobody else anything. */
export const authenticatedOnly: Authorizer = {
  authorize: (identity) =>
    identity.kind === 'anonymous' ? { allowed: false, reason: 'authentication required' } : { allowed: true, reason: 'authenticated' },
};
