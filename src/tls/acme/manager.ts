/**
 * Keeps a certificate from an ACME CA in `tls.acme.storage` and hands each one to the server.
 *
 * - Start: a stored certificate that fits the config (same directory and domains) is served at once, and
 *   no order is placed before its renewal time: restarts do not spend the CA's rate limits.
 * - Renewal at two thirds of the lifetime (renewal.ts). The certificate being served keeps serving until
 *   the new one is stored; then `onCertificate` swaps it in for new handshakes (setSecureContext).
 * - A failed order is retried with capped, jittered exponential backoff, for as long as it takes.
 * - One order at a time per storage folder (lock.ts); before ordering, storage is read again, so a
 *   certificate another installation stored meanwhile is used instead of ordering a second one.
 *
 * The decisions are pure functions (renewal.ts); this class only sequences them with timers and I/O.
 */
import { EventEmitter } from 'node:events';
import type { AcmeConfig } from '../../config/schema.js';
import { UnusableAcmeStorage } from '../../errors.js';
import type { AcmeMetrics } from '../../ops/metrics.js';
import { loadCaCertificates } from '../material.js';
import { configureAcmeHttp, createAccountKey, orderCertificate, type AcmeLogger, type ChallengeSolver, type OrderOptions } from './client.js';
import { OrderLock, type OrderLockOptions } from './lock.js';
import { orderReason, renewalTime, retryDelay, timerDelay, type Backoff, type OrderReason } from './renewal.js';
import { AcmeStore, type StoredCertificate } from './store.js';

export type CertificateSource = 'storage' | 'order';

export interface AcmeManagerOptions {
  config: Pick<AcmeConfig, 'email' | 'domains' | 'directory' | 'storage' | 'ca'>;
  solver: ChallengeSolver;
  logger: AcmeLogger;
  /** Receives every certificate to serve: the stored one at start, then each new one. */
  onCertificate: (c: StoredCertificate, source: CertificateSource) => void;
  metrics?: AcmeMetrics;
  /** Backoff between failed orders. Default 1 minute doubling up to 3 hours. */
  retry?: Backoff;
  /** Status polling inside an order (client.ts). */
  pollMinMs?: number;
  /** Per-request timeout and library-level retries (client.ts). */
  http?: { timeoutMs?: number; retries?: number };
  /** The storage lock's lease (lock.ts). */
  lock?: OrderLockOptions;
  /** Replaceable for tests. */
  order?: (o: OrderOptions) => Promise<{ cert: string; key: string }>;
  now?: () => number;
  random?: () => number;
}

interface ManagerEvents {
  certificate: [c: StoredCertificate, source: CertificateSource];
  orderFailed: [err: Error, retryInMs: number];
  /** Another installation holds the storage lock; this one checks again after `retryInMs`. */
  lockBusy: [retryInMs: number];
}

export class AcmeManager extends EventEmitter<ManagerEvents> {
  readonly store: AcmeStore;
  readonly #o: AcmeManagerOptions;
  readonly #now: () => number;
  readonly #retry: Backoff;
  readonly #lock: OrderLock;
  #prepared: Promise<void> | null = null;
  #current: StoredCertificate | null = null;
  #timer: NodeJS.Timeout | null = null;
  #failures = 0;
  #running: Promise<void> | null = null;
  #releaseLock: (() => Promise<void>) | null = null;
  #stopped = false;

  constructor(o: AcmeManagerOptions) {
    super();
    this.#o = o;
    this.#now = o.now ?? Date.now;
    this.#retry = o.retry ?? { minMs: 60_000, maxMs: 3 * 3_600_000 };
    this.store = new AcmeStore(o.config.storage);
    this.#lock = new OrderLock(this.store.paths.lock, o.lock);
  }

  /** The certificate being served, null until the first one exists. */
  get current(): StoredCertificate | null {
    return this.#current;
  }

  /**
   * What must work before anything can be ordered: `ca` reads as PEM, and storage exists (0700). Throws a
   * PortcullisError naming the file. With workers the primary calls it before forking, so a broken setting
   * stops the start instead of leaving the workers on a placeholder.
   */
  prepare(): Promise<void> {
    this.#prepared ??= (async () => {
      const { config } = this.#o;
      const ca = config.ca ? loadCaCertificates(config.ca, 'tls.acme.ca') : null;
      configureAcmeHttp({ directory: config.directory, ca, ...this.#o.http });
      await this.store.prepare();
    })();
    return this.#prepared;
  }

  /**
   * Serve what storage has and plan the next order. Resolves without waiting for an order, so the TLS
   * port can listen first (tls-alpn-01 validates on it).
   */
  async start(): Promise<void> {
    const { config, logger } = this.#o;
    await this.prepare();
    const stored = await this.#readStored();
    const reason = orderReason(facts(stored), config, this.#now());
    if (stored && stored.notAfter.getTime() > this.#now()) {
      // Serve it even when due or made for other names: better than a placeholder while the order runs.
      this.#install(stored, 'storage');
    }
    if (reason) {
      logger.info({ reason, domains: config.domains, directory: config.directory }, 'acme: ordering a certificate');
      this.#schedule(this.#now(), reason);
    } else if (stored) {
      const at = renewalTime(stored.notBefore.getTime(), stored.notAfter.getTime());
      logger.info({ serial: stored.serial, validTo: stored.notAfter, renewAt: new Date(at) }, 'acme: serving the stored certificate');
      this.#schedule(at, 'due for renewal');
    }
  }

  /** Cancel timers; an order in flight finishes (and is stored) but nothing new starts. */
  async stop(): Promise<void> {
    this.#stopped = true;
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = null;
    // The lock goes now, not when the order ends: a shutdown does not wait for a CA that may take minutes,
    // and a lock left behind by an exiting process would hold back the next start until it goes stale.
    await this.#releaseLock?.().catch(() => undefined);
  }

  /** Resolves when no order is running (tests wait for a quiet manager with it). */
  async idle(): Promise<void> {
    await this.#running;
  }

  #schedule(at: number, reason: OrderReason | 'retry'): void {
    if (this.#stopped) return;
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = setTimeout(() => {
      this.#timer = null;
      // Long waits are cut into timer-sized pieces (renewal.ts MAX_TIMER_MS); decide again at each wake-up.
      if (this.#now() < at) return this.#schedule(at, reason);
      this.#running = this.#orderOnce(reason).finally(() => {
        this.#running = null;
      });
    }, timerDelay(at, this.#now()));
    this.#timer.unref();
  }

  async #orderOnce(reason: OrderReason | 'retry'): Promise<void> {
    const { config, logger } = this.#o;
    const lock = await this.#lock.acquire().catch((err: unknown) => err as Error);
    if (lock instanceof Error) return this.#failed(lock);
    if (!lock.acquired) {
      const delay = retryDelay(0, this.#retry, this.#o.random);
      logger.info({ holder: lock.holder, retryInMs: delay, lock: this.store.paths.lock }, 'acme: another installation is ordering for this storage; checking again later');
      this.emit('lockBusy', delay);
      return this.#schedule(this.#now() + delay, reason);
    }
    this.#releaseLock = lock.release;
    try {
      // Storage may have changed since the decision (another installation sharing it): order only if
      // what is there now still needs it.
      const stored = await this.#readStored();
      if (stored && orderReason(facts(stored), config, this.#now()) === null) {
        if (stored.serial !== this.#current?.serial) {
          logger.info({ serial: stored.serial, validTo: stored.notAfter }, 'acme: storage already has a fitting certificate; serving it');
          this.#install(stored, 'storage');
        }
        this.#failures = 0;
        return this.#schedule(renewalTime(stored.notBefore.getTime(), stored.notAfter.getTime()), 'due for renewal');
      }
      await this.#order(reason);
    } catch (err) {
      this.#failed(err as Error);
    } finally {
      this.#releaseLock = null;
      await lock.release().catch((err: unknown) => logger.warn({ err: (err as Error).message }, 'acme: could not remove the storage lock'));
    }
  }

  async #order(reason: OrderReason | 'retry'): Promise<void> {
    const { config, logger, metrics } = this.#o;
    const accountKey = await this.#accountKey();
    logger.info({ reason, domains: config.domains, attempt: this.#failures + 1 }, 'acme: order starting');
    const issued = await (this.#o.order ?? orderCertificate)({
      directory: config.directory,
      email: config.email,
      domains: config.domains,
      accountKey,
      solver: this.#o.solver,
      logger,
      ...(this.#o.pollMinMs === undefined ? {} : { pollMinMs: this.#o.pollMinMs }),
    });
    const stored = await this.store.writeCertificate({ ...issued, directory: config.directory, domains: config.domains });
    metrics?.orders.inc({ result: 'ok' });
    this.#failures = 0;
    const at = renewalTime(stored.notBefore.getTime(), stored.notAfter.getTime());
    logger.info({ serial: stored.serial, validTo: stored.notAfter, renewAt: new Date(at), storage: config.storage }, 'acme: certificate stored');
    this.#install(stored, 'order');
    this.#schedule(at, 'due for renewal');
  }

  #failed(err: Error): void {
    this.#o.metrics?.orders.inc({ result: 'error' });
    const delay = retryDelay(this.#failures, this.#retry, this.#o.random);
    this.#failures += 1;
    const current = this.#current;
    this.#o.logger.error(
      { err: err.message, failures: this.#failures, retryInMs: delay, serving: current?.serial ?? null, validTo: current?.notAfter ?? null },
      'acme: order failed; the current certificate keeps serving',
    );
    this.emit('orderFailed', err, delay);
    this.#schedule(this.#now() + delay, 'retry');
  }

  /** The stored certificate; null (logged) when the files are there but unusable, which means: order anew. */
  async #readStored(): Promise<StoredCertificate | null> {
    try {
      return await this.store.readCertificate();
    } catch (err) {
      if (!(err instanceof UnusableAcmeStorage)) throw err;
      this.#o.logger.warn({ err: err.message }, 'acme: stored certificate unusable; ordering a new one');
      return null;
    }
  }

  #install(c: StoredCertificate, source: CertificateSource): void {
    this.#current = c;
    try {
      this.#o.onCertificate(c, source);
    } catch (err) {
      this.#o.logger.error({ err: (err as Error).message, serial: c.serial }, 'acme: the new certificate could not be installed');
    }
    this.emit('certificate', c, source);
  }

  async #accountKey(): Promise<string> {
    const existing = await this.store.readAccountKey();
    if (existing) return existing;
    const key = await createAccountKey();
    await this.store.writeAccountKey(key);
    this.#o.logger.info({ file: this.store.paths.accountKey }, 'acme: new account key stored');
    return key;
  }
}

function facts(c: StoredCertificate | null): Parameters<typeof orderReason>[0] {
  return c && { directory: c.directory, domains: c.domains, notBefore: c.notBefore.getTime(), notAfter: c.notAfter.getTime() };
}
