/**
 * Who a request comes from, as every later step sees it: a user with a password, a machine with a client
 * certificate, or nobody in particular. Groups are those the source of the identity knows of (access rules
 * may add their own).
 */
export type Identity =
  | { readonly kind: 'anonymous' }
  | { readonly kind: 'user'; readonly name: string; readonly groups: readonly string[] }
  | { readonly kind: 'certificate'; readonly name: string; readonly groups: readonly string[] };

export const ANONYMOUS: Identity = Object.freeze({ kind: 'anonymous' });

/** The name for logs and rules, or null for anonymous. */
export function nameOf(identity: Identity): string | null {
  return identity.kind === 'anonymous' ? null : identity.name;
}
