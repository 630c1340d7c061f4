/**
 * Credentials that passed verification recently, so a `docker push` of forty layers costs one bcrypt and not
 * forty. Bounded LRU with a TTL; failures are never stored.
 *
 * No password is kept: the key is HMAC-SHA256 under a secret drawn at start-up, so a heap dump shows neither
 * passwords nor anything that can be tested offline without the secret. The stored hash is part of the key,
 * so a user whose htpasswd line changes (new password, removed) misses the cache by construction.
 *
 * Concurrent verifications of the same key are coalesced: docker pushes layers in parallel, each request with
 * the same header, and all of them arrive before the first bcrypt has finished.
 */
import { createHmac, randomBytes } from 'node:crypto';

export interface CredentialCacheOptions {
  /** How long a verified credential is trusted; 0 disables storing (coalescing still works). */
  ttlMs: number;
  /** Most credentials kept; the least recently used goes first. 0 disables storing. */
  maxEntries: number;
  /** Milliseconds from any fixed origin; monotonic by default. Tests inject their own. */
  now?: () => number;
  /** HMAC key; random per process by default. */
  secret?: Buffer;
}

interface CachedCredential {
  readonly user: string;
  readonly expiresAt: number;
}

/** How a result came about: `verified` ran the verifier, `joined` waited for another caller's run. */
export type VerificationSource = 'cache' | 'verified' | 'joined';

export class CredentialCache {
  private readonly entries = new Map<string, CachedCredential>();
  private readonly inFlight = new Map<string, Promise<boolean>>();
  private readonly ttlMs: number;
  private readonly maxEntries: number;
  private readonly now: () => number;
  private readonly secret: Buffer;

  constructor(opts: CredentialCacheOptions) {
    this.ttlMs = Math.max(0, opts.ttlMs);
    this.maxEntries = Math.max(0, Math.floor(opts.maxEntries));
    this.now = opts.now ?? (() => performance.now());
    this.secret = opts.secret ?? randomBytes(32);
  }

  /**
   * The cache key of a credential checked against `storedHash`. Each part is length-prefixed, so no choice
   * of user and password (which may contain any byte, NUL included) can produce another triple's input.
   */
  keyFor(user: string, password: string, storedHash: string): string {
    const h = createHmac('sha256', this.secret);
    for (const part of [user, password, storedHash]) {
      const bytes = Buffer.from(part, 'utf8');
      const len = Buffer.alloc(4);
      len.writeUInt32BE(bytes.length);
      h.update(len).update(bytes);
    }
    return h.digest('base64');
  }

  /** The user a key was verified for, if still fresh; refreshes its LRU position. */
  get(key: string, user: string): string | null {
    const hit = this.entries.get(key);
    if (!hit) return null;
    if (hit.expiresAt <= this.now() || hit.user !== user) {
      this.entries.delete(key);
      return null;
    }
    // A Map iterates in insertion order: re-inserting moves the key to the young end.
    this.entries.delete(key);
    this.entries.set(key, hit);
    return hit.user;
  }

  /** Remember a verified credential. */
  set(key: string, user: string): void {
    if (this.ttlMs === 0 || this.maxEntries === 0) return;
    this.entries.delete(key);
    this.entries.set(key, { user, expiresAt: this.now() + this.ttlMs });
    while (this.entries.size > this.maxEntries) {
      const oldest = this.entries.keys().next().value;
      if (oldest === undefined) break;
      this.entries.delete(oldest);
    }
  }

  /**
   * A cached answer, else the answer of a verification already running for this key, else run `verify` and
   * store a success. Rejections of `verify` reach every waiting caller and are not stored.
   */
  async getOrVerify(key: string, user: string, verify: () => Promise<boolean>): Promise<{ ok: boolean; source: VerificationSource }> {
    if (this.get(key, user) !== null) return { ok: true, source: 'cache' };
    const running = this.inFlight.get(key);
    if (running) return { ok: await running, source: 'joined' };
    // `verify` starts on a later microtask, after `run` is registered, so even a synchronous throw cannot
    // leave a settled promise behind in `inFlight`.
    const run = Promise.resolve()
      .then(verify)
      .then((ok) => {
        if (ok) this.set(key, user);
        return ok;
      })
      .finally(() => this.inFlight.delete(key));
    this.inFlight.set(key, run);
    return { ok: await run, source: 'verified' };
  }

  /** Forget everything (for a reload that must not trust earlier verifications). */
  clear(): void {
    this.entries.clear();
  }

  get size(): number {
    return this.entries.size;
  }

  /** Verifications running now. */
  get pending(): number {
    return this.inFlight.size;
  }
}
