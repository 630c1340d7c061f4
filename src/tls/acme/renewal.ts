/**
 * When to order: pure decisions, separately tested. Times are epoch milliseconds.
 */

/**
 * Renew once two thirds of the lifetime have passed: 60 days into a 90-day certificate, as Let's Encrypt
 * recommends, and proportionally for short-lived ones (a 6-day certificate renews after 4 days).
 */
export function renewalTime(notBefore: number, notAfter: number): number {
  return notBefore + Math.floor(((notAfter - notBefore) * 2) / 3);
}

export interface Backoff {
  /** Delay after the first failure. */
  minMs: number;
  /** No delay is longer than this, whatever the number of failures. */
  maxMs: number;
}

/**
 * Delay before retry number `attempt` (0 = after the first failure): exponential, capped at maxMs, then
 * "equal jitter" (a uniform pick in [d/2, d]) so that many proxies failing together (a CA outage) do not
 * come back in lockstep, while the delay still grows.
 */
export function retryDelay(attempt: number, b: Backoff, random: () => number = Math.random): number {
  const exp = Math.min(b.maxMs, b.minMs * 2 ** Math.min(attempt, 52));
  return Math.round(exp / 2 + (random() * exp) / 2);
}

/** What the manager needs to know about a stored certificate to decide. */
export interface CertificateFacts {
  directory: string;
  domains: readonly string[];
  notBefore: number;
  notAfter: number;
}

export type OrderReason = 'no certificate' | 'directory changed' | 'domains changed' | 'due for renewal';

/** Why a new order is needed now, or null when the stored certificate can serve until its renewal time. */
export function orderReason(
  stored: CertificateFacts | null,
  want: { directory: string; domains: readonly string[] },
  now: number,
): OrderReason | null {
  if (!stored) return 'no certificate';
  if (stored.directory !== want.directory) return 'directory changed';
  if (!sameNames(stored.domains, want.domains)) return 'domains changed';
  if (now >= renewalTime(stored.notBefore, stored.notAfter)) return 'due for renewal';
  return null;
}

function sameNames(a: readonly string[], b: readonly string[]): boolean {
  const x = [...new Set(a)].sort();
  const y = [...new Set(b)].sort();
  return x.length === y.length && x.every((v, i) => v === y[i]);
}

/**
 * setTimeout fires at once for delays above 2^31-1 ms (about 24.8 days) and a 90-day certificate renews
 * after 60: wake up at most this often and decide again.
 */
export const MAX_TIMER_MS = 2 ** 31 - 1;

/** The timer delay to wake up for `at`: never negative, never above MAX_TIMER_MS. */
export function timerDelay(at: number, now: number): number {
  return Math.min(Math.max(0, at - now), MAX_TIMER_MS);
}
