/**
 * Failed-login throttle, counted twice: per (user name, client address), and per client address.
 *
 * - After `maxFailures` failed verifications of one user name from one address within `windowMs` of the
 *   first, further attempts for that name from that address are refused without a password check until the
 *   window ends. Only that name waits: the other users behind the same address (a CI host's NAT, an office)
 *   keep logging in, so one job with a stale password does not lock out every other job on the host.
 * - After `maxFailuresPerAddress` failures from one address, whatever the user names, every attempt from it
 *   waits. This is the limit for password spraying: a guess or two for each of many names, which the first
 *   count never sees. It is meant to be well above `maxFailures`.
 *
 * Unknown user names are counted on both, exactly like known ones. Counting them per address only would
 * make the answer itself an oracle: a name still answered 401 after `maxFailures` wrong guesses would be
 * one that does not exist. Counted per name too, a typo'd name in a CI job also waits alone.
 *
 * Cached good credentials still pass (authenticator.ts asks the cache first), so a brute force from a build
 * host does not break that host's own `docker compose pull`. A success resets neither count: otherwise one
 * valid account would let an attacker guess others' passwords without limit.
 *
 * IPv6 clients are counted per /64, the smallest block a site is usually given: otherwise one host could
 * rotate through 2^64 addresses. Memory is bounded: each count tracks at most `maxTracked` keys, in maps of
 * their own, so a flood of (name, address) pairs cannot push out the per-address counts.
 */
import { isIPv4, isIPv6 } from 'node:net';

export interface ThrottleOptions {
  /** Failures allowed per (user name, address) per window; 0 disables this count. */
  maxFailures: number;
  /** Failures allowed per address, over all user names, per window; 0 disables this count. */
  maxFailuresPerAddress: number;
  windowMs: number;
  /** Most keys tracked at once by each count; past it the oldest window is forgotten. */
  maxTracked?: number;
  /** Milliseconds from any fixed origin; monotonic by default. */
  now?: () => number;
}

/** Why attempts are refused now, and for how long: until every window that blocks them has ended. */
export interface ThrottleBlock {
  /** `address` when the address as a whole is blocked (whatever the user name), else `user`. */
  readonly scope: 'user' | 'address';
  readonly retryAfterMs: number;
}

export const DEFAULT_THROTTLE = { maxFailures: 10, maxFailuresPerAddress: 100, windowMs: 60_000 } as const;
const DEFAULT_MAX_TRACKED = 10_000;

export class FailureThrottle {
  private readonly perUser: WindowCounts;
  private readonly perAddress: WindowCounts;
  private readonly now: () => number;

  constructor(opts: ThrottleOptions) {
    const maxTracked = Math.max(1, opts.maxTracked ?? DEFAULT_MAX_TRACKED);
    const windowMs = Math.max(0, opts.windowMs);
    this.perUser = new WindowCounts(opts.maxFailures, windowMs, maxTracked);
    this.perAddress = new WindowCounts(opts.maxFailuresPerAddress, windowMs, maxTracked);
    this.now = opts.now ?? (() => performance.now());
  }

  /** Must attempts for `user` from `ip` be refused right now? null if they may be checked. */
  check(user: string, ip: string): ThrottleBlock | null {
    const now = this.now();
    const address = throttleKey(ip);
    const byAddress = this.perAddress.blockedFor(address, now);
    const byUser = this.perUser.blockedFor(pairKey(user, address), now);
    if (byAddress === 0 && byUser === 0) return null;
    return { scope: byAddress > 0 ? 'address' : 'user', retryAfterMs: Math.max(byAddress, byUser) };
  }

  /** A verification of `user` from `ip` failed (wrong password or unknown name). */
  recordFailure(user: string, ip: string): void {
    const now = this.now();
    const address = throttleKey(ip);
    this.perAddress.record(address, now);
    this.perUser.record(pairKey(user, address), now);
  }

  /** (user name, address) pairs tracked now. */
  get trackedPairs(): number {
    return this.perUser.size;
  }

  /** Addresses (or /64s) tracked now. */
  get trackedAddresses(): number {
    return this.perAddress.size;
  }
}

interface Window {
  failures: number;
  readonly endsAt: number;
}

/** Failures per key in fixed windows that start at a key's first failure. */
class WindowCounts {
  // Insertion order = window start order, and all windows are equally long, so the first entries are always
  // the first to expire: sweeping from the front finds every expired one.
  private readonly windows = new Map<string, Window>();
  private readonly limit: number;
  private readonly windowMs: number;
  private readonly maxTracked: number;

  constructor(limit: number, windowMs: number, maxTracked: number) {
    this.limit = Math.max(0, Math.floor(limit));
    this.windowMs = windowMs;
    this.maxTracked = maxTracked;
  }

  /** Milliseconds until `key` may try again; 0 if it may now. */
  blockedFor(key: string, now: number): number {
    if (this.limit === 0) return 0;
    const w = this.windows.get(key);
    return w !== undefined && w.endsAt > now && w.failures >= this.limit ? w.endsAt - now : 0;
  }

  record(key: string, now: number): void {
    if (this.limit === 0) return;
    const w = this.windows.get(key);
    if (w && w.endsAt > now) {
      w.failures++;
      return;
    }
    this.windows.delete(key);
    this.sweep(now);
    while (this.windows.size >= this.maxTracked) {
      const oldest = this.windows.keys().next().value;
      if (oldest === undefined) break;
      this.windows.delete(oldest);
    }
    this.windows.set(key, { failures: 1, endsAt: now + this.windowMs });
  }

  get size(): number {
    return this.windows.size;
  }

  private sweep(now: number): void {
    for (const [key, w] of this.windows) {
      if (w.endsAt > now) break;
      this.windows.delete(key);
    }
  }
}

/** User names hold no control characters (basic.ts refuses them), so a NUL cannot make two pairs collide. */
function pairKey(user: string, address: string): string {
  return `${address}\u0000${user}`;
}

/**
 * The address a failure is counted against: IPv4 as is (also when written IPv4-mapped, `::ffff:10.0.0.1`,
 * as a dual-stack socket reports it), IPv6 as its /64 prefix. Anything else is used verbatim.
 */
export function throttleKey(ip: string): string {
  const bare = ip.replace(/%.*$/, ''); // a zone index (fe80::1%eth0) names our interface, not the client
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(bare);
  if (mapped && isIPv4(mapped[1]!)) return mapped[1]!;
  if (!isIPv6(bare)) return ip;
  const groups = expandIPv6(bare);
  return `${groups.slice(0, 4).map((g) => g.toString(16)).join(':')}::/64`;
}

/** The eight 16-bit groups of a valid IPv6 address. */
function expandIPv6(ip: string): number[] {
  let text = ip;
  const v4 = /(\d+)\.(\d+)\.(\d+)\.(\d+)$/.exec(text);
  if (v4) {
    const [a, b, c, d] = v4.slice(1).map(Number) as [number, number, number, number];
    text = `${text.slice(0, v4.index)}${((a << 8) | b).toString(16)}:${((c << 8) | d).toString(16)}`;
  }
  const [head, tail] = text.includes('::') ? (text.split('::') as [string, string]) : [text, null];
  const parse = (s: string): number[] => (s === '' ? [] : s.split(':').map((g) => parseInt(g, 16)));
  const left = parse(head);
  if (tail === null) return left;
  const right = parse(tail);
  return [...left, ...new Array<number>(8 - left.length - right.length).fill(0), ...right];
}
