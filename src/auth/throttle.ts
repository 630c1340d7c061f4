/**
 * Failed-login throttle per client address.
 *
 * After `maxFailures` failed verifications from one address within `windowMs` of the first, further attempts
 * from it that the credential cache cannot answer are refused without running bcrypt until the window ends.
 * Cached good credentials still pass (auth.ts asks the cache first), so a brute force from a build host does
 * not break that host's own `docker compose pull`. A success does not reset the count: otherwise one valid
 * account would let an attacker guess others' passwords without limit.
 *
 * IPv6 clients are counted per /64, the smallest block a site is usually given: otherwise one host could
 * rotate through 2^64 addresses. Memory is bounded by `maxTracked`.
 */
import { isIPv4, isIPv6 } from 'node:net';

export interface ThrottleOptions {
  /** Failures allowed per window; 0 disables the throttle. */
  maxFailures: number;
  windowMs: number;
  /** Most addresses tracked at once; past it the oldest window is forgotten. */
  maxTracked?: number;
  /** Milliseconds from any fixed origin; monotonic by default. */
  now?: () => number;
}

export const DEFAULT_THROTTLE = { maxFailures: 10, windowMs: 60_000 } as const;
const DEFAULT_MAX_TRACKED = 10_000;

interface Window {
  failures: number;
  readonly endsAt: number;
}

export class FailureThrottle {
  // Insertion order = window start order, and all windows are equally long, so the first entries are always
  // the first to expire: sweeping from the front finds every expired one.
  private readonly windows = new Map<string, Window>();
  private readonly maxFailures: number;
  private readonly windowMs: number;
  private readonly maxTracked: number;
  private readonly now: () => number;

  constructor(opts: ThrottleOptions) {
    this.maxFailures = Math.max(0, Math.floor(opts.maxFailures));
    this.windowMs = Math.max(0, opts.windowMs);
    this.maxTracked = Math.max(1, opts.maxTracked ?? DEFAULT_MAX_TRACKED);
    this.now = opts.now ?? (() => performance.now());
  }

  /** Must attempts from this address be refused right now? */
  isThrottled(ip: string): boolean {
    if (this.maxFailures === 0) return false;
    const w = this.windows.get(throttleKey(ip));
    return w !== undefined && w.endsAt > this.now() && w.failures >= this.maxFailures;
  }

  /** Milliseconds until this address may try again (0 if it may now). */
  retryAfterMs(ip: string): number {
    if (!this.isThrottled(ip)) return 0;
    return Math.max(0, this.windows.get(throttleKey(ip))!.endsAt - this.now());
  }

  recordFailure(ip: string): void {
    if (this.maxFailures === 0) return;
    const key = throttleKey(ip);
    const now = this.now();
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

  /** Addresses (or /64s) tracked now. */
  get tracked(): number {
    return this.windows.size;
  }

  private sweep(now: number): void {
    for (const [key, w] of this.windows) {
      if (w.endsAt > now) break;
      this.windows.delete(key);
    }
  }
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
