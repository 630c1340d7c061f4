/**
 * Who is this request? A thin class over pure parts: basic-auth.ts reads the header, htpasswd.ts the file,
 * credential-cache.ts remembers good credentials, throttle.ts counts failures, bcrypt-pool.ts does the slow
 * work (bcrypt, crypt.ts' schemes) off the main thread. This file adds the I/O: loading the htpasswd file
 * and reloading it on change.
 *
 * Reloads follow the file with watch.ts (folder watch plus stat poll: files are replaced by rename). A file
 * that fails to parse is refused whole and the last good one stays in force; it is retried once it changes.
 */
import { randomBytes } from 'node:crypto';
import { parseBasicAuthorization } from './basic.js';
import { BcryptPool } from './bcrypt-pool.js';
import { CredentialCache } from './credential-cache.js';
import { PortcullisError, RegistryError } from '../errors.js';
import { loadHtpasswdFile, type LoadedHtpasswd } from './htpasswd-file.js';
import { dummyEntry, verifyPassword, weakHashes, type HtpasswdEntry, type HtpasswdFile, type SlowCheck } from './htpasswd.js';
import type { Logger } from '../ops/log.js';
import { DEFAULT_THROTTLE, FailureThrottle } from './throttle.js';
import { FileWatcher } from '../runtime/watch.js';

/**
 * - ok: verified now; cached: answered without a password check (cache hit, or joined a check already running)
 * - failed: unknown user or wrong password; throttled: refused without checking (too many failures for this
 *   user from this address, or from this address, or too many checks queued); anonymous: no credentials;
 *   malformed: an unreadable header.
 */
export type AuthOutcome = 'ok' | 'cached' | 'failed' | 'throttled' | 'anonymous' | 'malformed';

/** `user` is the authenticated user for ok and cached; `reason` is for the log only, never for the client (it
 * would tell which user names exist). */
export type AuthResult =
  | { outcome: 'ok' | 'cached'; user: string; reason?: string }
  | { outcome: Exclude<AuthOutcome, 'ok' | 'cached' | 'throttled'>; user: null; reason?: string }
  | { outcome: 'throttled'; user: null; reason?: string; /** Until the window that blocks this attempt ends. */ retryAfterMs: number };

export interface AuthenticatorOptions {
  htpasswdPath: string;
  cacheTtlMs: number;
  cacheSize: number;
  logger: Logger;
  /** Failures allowed per (user, address) and per address in each window; default 10 and 100 per 60 s.
   * 0 disables that count (throttle.ts). */
  throttle?: { maxFailures: number; maxFailuresPerAddress: number; windowMs: number };
  /** Called after each reload attempt (not the initial load). */
  onReload?: (result: 'ok' | 'error', err?: Error) => void;
  /** Follow changes to the file; default true. */
  watch?: boolean;
}


/** How long to tell a client to wait when every password worker is busy with a queue behind it. */
const QUEUE_FULL_RETRY_MS = 1000;

export class Authenticator {
  private readonly path: string;
  private readonly logger: Logger;
  private readonly onReload: AuthenticatorOptions['onReload'];
  private readonly cache: CredentialCache;
  private readonly throttle: FailureThrottle;
  private readonly pool: BcryptPool;
  private entries: HtpasswdFile;
  private dummy: Pick<HtpasswdEntry, 'hash' | 'scheme'>;
  private reloadChain: Promise<boolean> = Promise.resolve(true);
  private watcher: FileWatcher | null = null;
  private closed = false;
  private verificationCount = 0;

  private constructor(opts: AuthenticatorOptions, users: HtpasswdFile) {
    this.path = opts.htpasswdPath;
    this.logger = opts.logger;
    this.onReload = opts.onReload;
    this.cache = new CredentialCache({ ttlMs: opts.cacheTtlMs, maxEntries: opts.cacheSize });
    this.throttle = new FailureThrottle(opts.throttle ?? DEFAULT_THROTTLE);
    // One password thread per process: `workers: N` scales it with the processes, and a second thread per
    // process would only compete with the streams for the same cores.
    this.pool = new BcryptPool({ size: 1 });
    this.entries = users;
    this.dummy = dummyEntry(users, randomBytes);
  }

  /** Load the file and start following it. Throws PortcullisError(PCL_ERR_HTPASSWD) if it is missing or bad. */
  static async open(opts: AuthenticatorOptions): Promise<Authenticator> {
    // The watcher starts first so a change made while we read is not missed: it is remembered until the
    // authenticator exists, then reloaded (at worst the same content is read twice).
    let auth: Authenticator | null = null;
    let changedWhileLoading = false;
    const onChange = (): void => {
      if (auth) void auth.reload();
      else changedWhileLoading = true;
    };
    const watcher = opts.watch === false ? null : new FileWatcher([opts.htpasswdPath], onChange);
    let loaded: LoadedHtpasswd;
    try {
      loaded = await loadHtpasswdFile(opts.htpasswdPath);
    } catch (err) {
      watcher?.close();
      throw err;
    }
    auth = new Authenticator(opts, loaded.users);
    auth.watcher = watcher;
    auth.logLoaded('htpasswd loaded', loaded);
    if (changedWhileLoading) void auth.reload();
    return auth;
  }

  async authenticate(authorization: string | undefined, clientIp: string): Promise<AuthResult> {
    const parsed = parseBasicAuthorization(authorization);
    if (parsed.kind === 'none') return { outcome: 'anonymous', user: null, reason: 'no Authorization header' };
    if (parsed.kind === 'anonymous') return { outcome: 'anonymous', user: null, reason: 'empty credentials' };
    if (parsed.kind === 'malformed') return { outcome: 'malformed', user: null, reason: parsed.reason };

    const { user, password } = parsed;
    const entry = this.entries.get(user);
    // An unknown user is checked against a dummy hash of the file's most common scheme and cost: as long as a
    // typical user's wrong password, so no timing oracle.
    const target: Pick<HtpasswdEntry, 'hash' | 'scheme'> = entry ?? this.dummy;
    const key = this.cache.keyFor(user, password, target.hash);
    // Good cached credentials pass even from a throttled address (a brute force must not block a build host).
    if (entry && this.cache.get(key, user) !== null) return { outcome: 'cached', user };
    const blocked = this.throttled(user, clientIp);
    if (blocked) return blocked;
    // Asked again when the check's turn in the worker queue comes: a flood of guesses queues many checks
    // before the first failures are counted, and those arriving past the limit must not all be run.
    const slowCheck: SlowCheck = (p, h, kind) =>
      this.pool.compare(p, h, kind, () => (this.throttle.check(user, clientIp) ? new RegistryError('TOOMANYREQUESTS', 'too many failed logins') : null));
    let result: Awaited<ReturnType<CredentialCache['getOrVerify']>>;
    try {
      result = await this.cache.getOrVerify(key, user, async () => {
        const ok = await verifyPassword(password, target, slowCheck);
        this.verificationCount++;
        return ok && entry !== undefined;
      });
    } catch (err) {
      if (err instanceof RegistryError && err.code === 'TOOMANYREQUESTS') {
        return this.throttled(user, clientIp) ?? { outcome: 'throttled', user: null, reason: 'too many password checks queued', retryAfterMs: QUEUE_FULL_RETRY_MS };
      }
      throw err; // RegistryError UNAVAILABLE: verification itself broke, not the client's fault
    }
    if (result.ok) return { outcome: result.source === 'verified' ? 'ok' : 'cached', user };
    // Requests that joined one verification are one guess, not many. An unknown name counts like a known one.
    if (result.source === 'verified') this.throttle.recordFailure(user, clientIp);
    return { outcome: 'failed', user: null, reason: entry ? 'wrong password' : 'unknown user' };
  }

  /** The throttled answer for this user and address, or null while they may still be checked. */
  private throttled(user: string, clientIp: string): AuthResult | null {
    const blocked = this.throttle.check(user, clientIp);
    if (!blocked) return null;
    const reason = blocked.scope === 'user' ? 'too many failed logins for this user from this address' : 'too many failed logins from this address';
    return { outcome: 'throttled', user: null, reason, retryAfterMs: blocked.retryAfterMs };
  }

  /** Re-read the file now. A missing or bad file is logged (naming file and line) and the last good one kept. */
  reload(): Promise<boolean> {
    const next = this.reloadChain.then(() => this.reloadNow());
    this.reloadChain = next;
    return next;
  }

  /** Users in force. */
  get users(): number {
    return this.entries.size;
  }

  /** Password checks run (any scheme); cache hits and joined requests do not count. */
  get verifications(): number {
    return this.verificationCount;
  }

  /** Stop following the file but keep answering: for an authenticator replaced on reload whose
   * in-flight checks must still finish. */
  stopFollowing(): void {
    this.watcher?.close();
    this.watcher = null;
  }

  /** Stop following the file and terminate the workers. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.watcher?.close();
    this.watcher = null;
    await this.pool.close();
  }

  private async reloadNow(): Promise<boolean> {
    if (this.closed) return false;
    try {
      const loaded = await loadHtpasswdFile(this.path);
      this.entries = loaded.users;
      this.dummy = dummyEntry(loaded.users, randomBytes);
      this.logLoaded('htpasswd reloaded', loaded);
      this.onReload?.('ok');
      return true;
    } catch (err) {
      const error = err instanceof Error ? err : new PortcullisError('PCL_ERR_HTPASSWD', String(err));
      this.logger.error({ file: this.path, users: this.entries.size, err: error.message }, 'htpasswd reload refused, keeping the last good file');
      this.onReload?.('error', error);
      return false;
    }
  }

  private logLoaded(msg: string, loaded: LoadedHtpasswd): void {
    this.logger.info({ file: this.path, users: this.entries.size, bytes: loaded.bytes, parsedOn: loaded.parsedOn }, msg);
    const weak = weakHashes(this.entries);
    if (weak) this.logger.warn({ file: this.path, users: weak.users }, `htpasswd: ${weak.message}`);
  }
}
