/**
 * One order at a time per storage folder: `order.lock`, created with O_EXCL while an order runs.
 *
 * Why: two installations pointed at one `tls.acme.storage` (a shared volume, an old and a new container
 * overlapping in a rolling update) would otherwise both order at renewal time, spending the CA's rate
 * limits (Let's Encrypt: 5 duplicate certificates a week) and racing to write key.pem and cert.pem.
 * The one that finds the lock taken waits and then re-reads storage (manager.ts): the other's certificate
 * is usually there by then.
 *
 * Advisory and lease-based, so a crashed holder cannot block renewal for ever: the holder touches the file
 * every `heartbeatMs`, and a lock untouched for `staleMs` is removed by the next one to look. Taking over a
 * stale lock re-reads it first; the remaining window costs at most one extra order, never a torn file
 * (every write in storage is atomic).
 */
import { randomBytes } from 'node:crypto';
import { open, readFile, stat, unlink, utimes } from 'node:fs/promises';
import { hostname } from 'node:os';
import { hasErrno } from '../../errors.js';

export interface LockHolder {
  token: string;
  host: string;
  pid: number;
  since: string;
}

export type LockAttempt = { acquired: true; release(): Promise<void> } | { acquired: false; holder: LockHolder | null };

export interface OrderLockOptions {
  /** A lock not touched for this long is abandoned. Default 2 minutes. */
  staleMs?: number;
  /** How often the holder touches it. Default 20 s. */
  heartbeatMs?: number;
}

export class OrderLock {
  readonly #path: string;
  readonly #staleMs: number;
  readonly #heartbeatMs: number;

  constructor(path: string, opts: OrderLockOptions = {}) {
    this.#path = path;
    this.#staleMs = opts.staleMs ?? 120_000;
    this.#heartbeatMs = opts.heartbeatMs ?? 20_000;
  }

  async acquire(): Promise<LockAttempt> {
    const me: LockHolder = { token: randomBytes(12).toString('hex'), host: hostname(), pid: process.pid, since: new Date().toISOString() };
    // Two rounds: the second follows the removal of a stale lock.
    for (let round = 0; round < 2; round++) {
      try {
        const handle = await open(this.#path, 'wx', 0o600);
        try {
          await handle.writeFile(JSON.stringify(me) + '\n');
        } finally {
          await handle.close();
        }
        return { acquired: true, release: this.#hold(me) };
      } catch (err) {
        if (!hasErrno(err, 'EEXIST')) throw err;
      }
      const found = await this.#read();
      if (found === 'gone') continue;
      if (!found.stale) return { acquired: false, holder: found.holder };
      // Remove it only if it is still the abandoned one (not a fresh lock that replaced it meanwhile).
      const again = await this.#read();
      if (again !== 'gone' && again.holder?.token === found.holder?.token) await unlink(this.#path).catch(() => undefined);
    }
    const last = await this.#read();
    return { acquired: false, holder: last === 'gone' ? null : last.holder };
  }

  /** Touch the file while held; the returned release removes it if it is still ours. */
  #hold(me: LockHolder): () => Promise<void> {
    const heartbeat = setInterval(() => {
      const now = new Date();
      void utimes(this.#path, now, now).catch(() => undefined);
    }, this.#heartbeatMs);
    heartbeat.unref();
    let released = false;
    return async () => {
      if (released) return;
      released = true;
      clearInterval(heartbeat);
      const found = await this.#read();
      if (found !== 'gone' && found.holder?.token === me.token) await unlink(this.#path).catch(() => undefined);
    };
  }

  async #read(): Promise<'gone' | { holder: LockHolder | null; stale: boolean }> {
    try {
      const [text, st] = await Promise.all([readFile(this.#path, 'utf8'), stat(this.#path)]);
      return { holder: parseHolder(text), stale: Date.now() - st.mtimeMs > this.#staleMs };
    } catch (err) {
      if (hasErrno(err, 'ENOENT')) return 'gone';
      throw err;
    }
  }
}

function parseHolder(text: string): LockHolder | null {
  try {
    const v: unknown = JSON.parse(text);
    if (typeof v !== 'object' || v === null) return null;
    const o = v as Record<string, unknown>;
    if (typeof o['token'] !== 'string' || typeof o['host'] !== 'string' || typeof o['pid'] !== 'number' || typeof o['since'] !== 'string') return null;
    return { token: o['token'], host: o['host'], pid: o['pid'], since: o['since'] };
  } catch {
    // Empty or half-written (the holder died between create and write): only its age matters.
    return null;
  }
}
