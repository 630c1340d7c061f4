/**
 * Who is this request? A thin class over pure parts: basic-auth.ts reads the header, htpasswd.ts the file,
 * credential-cache.ts remembers good credentials, throttle.ts counts failures, bcrypt-pool.ts does the slow
 * work off the main thread. This file adds the I/O: loading the htpasswd file and reloading it on change.
 *
 * Reloads: editors and `htpasswd` replace the file by rename, and Kubernetes swaps a symlinked directory, so
 * we watch the parent DIRECTORY and compare the file's stat (device, inode, size, mtime, ctime) to the one we
 * loaded. fs.watch misses events on some bind mounts and network filesystems, so a stat poll every 2 s backs
 * it up. A file that fails to parse is refused whole and the last good one stays in force.
 */
import { watch, type FSWatcher } from 'node:fs';
import { open, stat } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { dirname } from 'node:path';
import { parseBasicAuthorization } from './basic-auth.js';
import { BcryptPool } from './bcrypt-pool.js';
import { CredentialCache } from './credential-cache.js';
import { PortcullisError, RegistryError, hasErrno } from './errors.js';
import { bcryptCost, DEFAULT_BCRYPT_COST, dummyBcryptHash, parseHtpasswd, verifyPassword, type HtpasswdEntry, type HtpasswdFile } from './htpasswd.js';
import type { Logger } from './log.js';
import { DEFAULT_THROTTLE, FailureThrottle } from './throttle.js';

/**
 * - ok: verified now; cached: answered without bcrypt (cache hit, or joined a verification already running)
 * - failed: unknown user or wrong password; throttled: refused without checking (too many failures from this
 *   address, or too many checks queued); anonymous: no credentials; malformed: an unreadable header.
 */
export type AuthOutcome = 'ok' | 'cached' | 'failed' | 'throttled' | 'anonymous' | 'malformed';

export interface AuthResult {
  outcome: AuthOutcome;
  /** The authenticated user for ok and cached; null otherwise. */
  user: string | null;
  /** For the log only, never for the client (it would tell which user names exist). */
  reason?: string;
}

export interface AuthenticatorOptions {
  htpasswdPath: string;
  cacheTtlMs: number;
  cacheSize: number;
  logger: Logger;
  /** Worker threads for bcrypt; default 1. */
  bcryptWorkers?: number;
  /** Default 10 failures per 60 s; maxFailures 0 disables it. */
  throttle?: { maxFailures: number; windowMs: number };
  /** Called after each reload attempt (not the initial load). */
  onReload?: (result: 'ok' | 'error', err?: Error) => void;
  /** Follow changes to the file; default true. */
  watch?: boolean;
}

const POLL_MS = 2_000;
const DEBOUNCE_MS = 200;

interface Loaded {
  users: HtpasswdFile;
  identity: string;
}

export class Authenticator {
  private readonly path: string;
  private readonly logger: Logger;
  private readonly onReload: AuthenticatorOptions['onReload'];
  private readonly cache: CredentialCache;
  private readonly throttle: FailureThrottle;
  private readonly pool: BcryptPool;
  private readonly compareBcrypt: (password: string, hash: string) => Promise<boolean>;
  private entries: HtpasswdFile;
  private dummyHash: string;
  /** Stat identity of the last file we tried to load, good or not: the poll reloads only when it changes. */
  private seenIdentity: string;
  private reloadChain: Promise<boolean> = Promise.resolve(true);
  private checking = false;
  private watcher: FSWatcher | null = null;
  private pollTimer: NodeJS.Timeout | null = null;
  private debounceTimer: NodeJS.Timeout | null = null;
  private closed = false;
  private verificationCount = 0;

  private constructor(opts: AuthenticatorOptions, loaded: Loaded) {
    this.path = opts.htpasswdPath;
    this.logger = opts.logger;
    this.onReload = opts.onReload;
    this.cache = new CredentialCache({ ttlMs: opts.cacheTtlMs, maxEntries: opts.cacheSize });
    this.throttle = new FailureThrottle(opts.throttle ?? DEFAULT_THROTTLE);
    this.pool = new BcryptPool({ size: opts.bcryptWorkers ?? 1 });
    this.compareBcrypt = (password, hash) => this.pool.compare(password, hash);
    this.entries = loaded.users;
    this.dummyHash = dummyFor(loaded.users);
    this.seenIdentity = loaded.identity;
  }

  /** Load the file and start following it. Throws PortcullisError(PCL_ERR_HTPASSWD) if it is missing or bad. */
  static async open(opts: AuthenticatorOptions): Promise<Authenticator> {
    const loaded = await loadHtpasswd(opts.htpasswdPath);
    const auth = new Authenticator(opts, loaded);
    auth.logLoaded('htpasswd loaded');
    if (opts.watch !== false) auth.follow();
    return auth;
  }

  async authenticate(authorization: string | undefined, clientIp: string): Promise<AuthResult> {
    const parsed = parseBasicAuthorization(authorization);
    if (parsed.kind === 'none') return { outcome: 'anonymous', user: null, reason: 'no Authorization header' };
    if (parsed.kind === 'anonymous') return { outcome: 'anonymous', user: null, reason: 'empty credentials' };
    if (parsed.kind === 'malformed') return { outcome: 'malformed', user: null, reason: parsed.reason };

    const { user, password } = parsed;
    const entry = this.entries.get(user);
    // An unknown user is checked against a dummy hash: same cost as a wrong password, so no timing oracle.
    const target: Pick<HtpasswdEntry, 'hash' | 'scheme'> = entry ?? { hash: this.dummyHash, scheme: 'bcrypt' };
    const key = this.cache.keyFor(user, password, target.hash);
    // Good cached credentials pass even from a throttled address (a brute force must not block a build host).
    if (entry && this.cache.get(key, user) !== null) return { outcome: 'cached', user };
    if (this.throttle.isThrottled(clientIp)) {
      return { outcome: 'throttled', user: null, reason: 'too many failed logins from this address' };
    }
    let result: Awaited<ReturnType<CredentialCache['getOrVerify']>>;
    try {
      result = await this.cache.getOrVerify(key, user, async () => {
        this.verificationCount++;
        const ok = await verifyPassword(password, target, this.compareBcrypt);
        return ok && entry !== undefined;
      });
    } catch (err) {
      if (err instanceof RegistryError && err.code === 'TOOMANYREQUESTS') {
        return { outcome: 'throttled', user: null, reason: 'too many password checks queued' };
      }
      throw err; // RegistryError UNAVAILABLE: verification itself broke, not the client's fault
    }
    if (result.ok) return { outcome: result.source === 'verified' ? 'ok' : 'cached', user };
    // Requests that joined one verification are one guess, not many.
    if (result.source === 'verified') this.throttle.recordFailure(clientIp);
    return { outcome: 'failed', user: null, reason: entry ? 'wrong password' : 'unknown user' };
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

  /** Password checks run (bcrypt or {SHA}); cache hits and joined requests do not count. */
  get verifications(): number {
    return this.verificationCount;
  }

  /** Stop following the file and terminate the workers. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.watcher?.close();
    this.watcher = null;
    if (this.pollTimer) clearInterval(this.pollTimer);
    if (this.debounceTimer) clearTimeout(this.debounceTimer);
    await this.pool.close();
  }

  private async reloadNow(): Promise<boolean> {
    if (this.closed) return false;
    try {
      const loaded = await loadHtpasswd(this.path, (identity) => {
        this.seenIdentity = identity; // also when the content is refused: retry only once it changes again
      });
      this.entries = loaded.users;
      this.dummyHash = dummyFor(loaded.users);
      this.logLoaded('htpasswd reloaded');
      this.onReload?.('ok');
      return true;
    } catch (err) {
      const error = err instanceof Error ? err : new Error(String(err));
      this.logger.error({ file: this.path, users: this.entries.size, err: error.message }, 'htpasswd reload refused, keeping the last good file');
      this.onReload?.('error', error);
      return false;
    }
  }

  private follow(): void {
    try {
      this.watcher = watch(dirname(this.path), { persistent: false }, () => this.schedule());
      this.watcher.on('error', (err) => {
        this.logger.warn({ file: this.path, err: err.message }, 'cannot watch the htpasswd folder; polling only');
        this.watcher?.close();
        this.watcher = null;
      });
    } catch (err) {
      this.logger.warn({ file: this.path, err: (err as Error).message }, 'cannot watch the htpasswd folder; polling only');
    }
    this.pollTimer = setInterval(() => void this.check(), POLL_MS);
    this.pollTimer.unref();
  }

  /** Several events arrive per save (write, chmod, rename): act once, after they settle. */
  private schedule(): void {
    if (this.closed) return;
    if (this.debounceTimer) clearTimeout(this.debounceTimer);
    this.debounceTimer = setTimeout(() => void this.check(), DEBOUNCE_MS);
    this.debounceTimer.unref();
  }

  /** Reload if the file is not the one we last looked at. Stat calls are cheap; parsing happens only on change. */
  private async check(): Promise<void> {
    if (this.closed || this.checking) return;
    this.checking = true;
    try {
      let identity: string;
      try {
        identity = identityOf(await stat(this.path));
      } catch (err) {
        identity = hasErrno(err, 'ENOENT', 'ENOTDIR') ? 'missing' : `error:${String(err)}`;
      }
      if (identity !== this.seenIdentity) await this.reload();
    } finally {
      this.checking = false;
    }
  }

  private logLoaded(msg: string): void {
    this.logger.info({ file: this.path, users: this.entries.size }, msg);
    let sha = 0;
    for (const e of this.entries.values()) if (e.scheme === 'sha1') sha++;
    if (sha > 0) {
      this.logger.warn({ file: this.path, users: sha }, 'htpasswd has unsalted {SHA} hashes; re-set them with bcrypt: portcullis htpasswd add');
    }
  }
}

interface StatLike {
  dev: number;
  ino: number;
  size: number;
  mtimeMs: number;
  ctimeMs: number;
}

function identityOf(s: StatLike): string {
  return `${s.dev}:${s.ino}:${s.size}:${s.mtimeMs}:${s.ctimeMs}`;
}

/**
 * Read and parse the file. The stat comes from the same descriptor as the content, so the identity we record
 * is that of the bytes we parsed even if the file is replaced meanwhile. `seen` gets the identity (or
 * "missing") before parsing, so a refused file is remembered too.
 */
async function loadHtpasswd(path: string, seen: (identity: string) => void = () => {}): Promise<Loaded> {
  let text: string;
  let identity: string;
  try {
    const handle = await open(path, 'r');
    try {
      identity = identityOf(await handle.stat());
      text = await handle.readFile('utf8');
    } finally {
      await handle.close();
    }
  } catch (err) {
    seen(hasErrno(err, 'ENOENT', 'ENOTDIR') ? 'missing' : `error:${String(err)}`);
    const why = hasErrno(err, 'ENOENT') ? 'no such file' : hasErrno(err, 'EACCES') ? 'permission denied' : err instanceof Error ? err.message : String(err);
    throw new PortcullisError('PCL_ERR_HTPASSWD', `cannot read htpasswd file ${path}: ${why}`, { cause: err });
  }
  seen(identity);
  return { users: parseHtpasswd(text, path), identity };
}

/** The dummy hash gets the cost most users have, so an unknown user takes as long as a typical one. */
function dummyFor(users: HtpasswdFile): string {
  const counts = new Map<number, number>();
  for (const e of users.values()) if (e.scheme === 'bcrypt') counts.set(bcryptCost(e.hash), (counts.get(bcryptCost(e.hash)) ?? 0) + 1);
  let cost = DEFAULT_BCRYPT_COST;
  let best = 0;
  for (const [c, n] of counts) {
    if (n > best || (n === best && c > cost)) {
      cost = c;
      best = n;
    }
  }
  return dummyBcryptHash(cost, randomBytes);
}
