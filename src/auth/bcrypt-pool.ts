/**
 * Password checks on worker threads: bcrypt, and the crypt(3) schemes of crypt.ts (MD5-crypt, SHA-crypt).
 *
 * bcryptjs is plain JavaScript: one comparison at cost 12 holds a thread for about a quarter of a second,
 * and SHA-crypt at high rounds as long or longer. On the main thread, a flood of wrong passwords would stall
 * every other client's streaming transfer; here it only queues behind other checks.
 *
 * The worker is an eval'd CommonJS script that loads bcryptjs from the path we resolve, so it runs the same
 * from `dist/` and under tsx; it imports the (ESM) crypt module on its first crypt job, so a bcrypt-only
 * file never loads it. Each worker does one job at a time; jobs wait here, bounded. A worker that dies is
 * replaced, and its job is tried once more on the replacement before the caller gets an error.
 */
import { createRequire } from 'node:module';
import { Worker } from 'node:worker_threads';
import { RegistryError } from '../errors.js';
import type { CheckKind } from './htpasswd.js';
import { siblingModule, workerImport } from './htpasswd-file.js';

export interface BcryptPoolOptions {
  /** Worker threads; default 1. */
  size?: number;
  /** Jobs waiting for a worker; past it `compare` fails at once with TOOMANYREQUESTS. Default 256. */
  maxPending?: number;
  /** Module with bcryptjs' `compareSync`; the installed bcryptjs by default (tests load stand-ins). */
  bcryptjsPath?: string;
  /** Module with crypt.ts' `verifyCrypt`; crypt.ts by default. */
  cryptModule?: URL;
}

function workerSource(cryptModule: URL): string {
  return `
'use strict';
const { parentPort, workerData } = require('node:worker_threads');
const bcrypt = require(workerData.bcryptjs);
const describe = (err) => String((err && err.message) || err);
let crypt = null;
parentPort.on('message', (job) => {
  const reply = (ok, error) => parentPort.postMessage({ id: job.id, ok, error });
  if (job.kind === 'crypt') {
    crypt = crypt || ${workerImport(cryptModule)};
    crypt.then((m) => reply(m.verifyCrypt(job.password, job.hash), null)).catch((err) => reply(false, describe(err)));
    return;
  }
  let ok = false;
  let error = null;
  try {
    ok = bcrypt.compareSync(job.password, job.hash);
  } catch (err) {
    error = describe(err);
  }
  reply(ok, error);
});
parentPort.postMessage({ ready: true });
`;
}

interface Job {
  readonly id: number;
  readonly password: string;
  readonly hash: string;
  readonly kind: CheckKind;
  readonly admit: (() => RegistryError | null) | undefined;
  readonly resolve: (ok: boolean) => void;
  readonly reject: (err: Error) => void;
  tries: number;
}

interface Slot {
  worker: Worker;
  job: Job | null;
  ready: boolean;
}

type Reply = { ready: true } | { id: number; ok: boolean; error: string | null };

export class BcryptPool {
  private readonly size: number;
  private readonly maxPending: number;
  private readonly bcryptjsPath: string;
  private readonly source: string;
  private readonly slots: Array<Slot | null>;
  private readonly queue: Job[] = [];
  private nextId = 1;
  private closed = false;
  private completedCount = 0;

  constructor(opts: BcryptPoolOptions = {}) {
    this.size = Math.max(1, Math.floor(opts.size ?? 1));
    this.maxPending = Math.max(0, Math.floor(opts.maxPending ?? 256));
    this.bcryptjsPath = opts.bcryptjsPath ?? createRequire(import.meta.url).resolve('bcryptjs');
    this.source = workerSource(opts.cryptModule ?? siblingModule('crypt', import.meta.url));
    this.slots = Array.from({ length: this.size }, () => null);
    for (let i = 0; i < this.size; i++) this.slots[i] = this.spawn(i);
  }

  /**
   * Does `password` match `hash`, a bcrypt hash or (kind `crypt`) one of crypt.ts'? Rejects with
   * RegistryError: TOOMANYREQUESTS when the queue is full, UNAVAILABLE when the pool is closed or the check
   * could not run, or `admit`'s error: asked again when the check's turn comes, so a check queued behind a
   * flood is not run once the caller's failures have since been throttled.
   */
  compare(password: string, hash: string, kind: CheckKind = 'bcrypt', admit?: () => RegistryError | null): Promise<boolean> {
    if (this.closed) return Promise.reject(new RegistryError('UNAVAILABLE', 'password verification is shutting down'));
    if (this.queue.length >= this.maxPending && !this.slots.some((s) => s !== null && s.job === null)) {
      return Promise.reject(
        new RegistryError('TOOMANYREQUESTS', 'too many password checks waiting', { headers: { 'Retry-After': '1' } }),
      );
    }
    return new Promise<boolean>((resolve, reject) => {
      this.queue.push({ id: this.nextId++, password, hash, kind, admit, resolve, reject, tries: 0 });
      this.dispatch();
    });
  }

  /** Jobs waiting for a worker (not counting those running). */
  get pending(): number {
    return this.queue.length;
  }

  /** Checks finished since the pool started. */
  get completed(): number {
    return this.completedCount;
  }

  /** Terminate the workers; waiting and running jobs are rejected. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    const gone = new RegistryError('UNAVAILABLE', 'password verification is shutting down');
    for (const job of this.queue.splice(0)) job.reject(gone);
    const terminations: Array<Promise<number>> = [];
    for (let i = 0; i < this.slots.length; i++) {
      const slot = this.slots[i];
      this.slots[i] = null;
      if (!slot) continue;
      slot.job?.reject(gone);
      slot.job = null;
      slot.worker.removeAllListeners();
      slot.worker.on('error', () => {}); // a late error during termination has nobody left to tell
      terminations.push(slot.worker.terminate());
    }
    await Promise.all(terminations);
  }

  private spawn(index: number): Slot {
    const worker = new Worker(this.source, { eval: true, workerData: { bcryptjs: this.bcryptjsPath } });
    const slot: Slot = { worker, job: null, ready: false };
    worker.unref(); // ref'd only while it has a job: an idle pool must not keep a finished process alive
    worker.on('message', (reply: Reply) => this.onReply(slot, reply));
    worker.on('error', () => {}); // followed by 'exit', handled there
    worker.on('exit', () => this.onExit(index, slot));
    return slot;
  }

  private onReply(slot: Slot, reply: Reply): void {
    if ('ready' in reply) {
      slot.ready = true;
      return;
    }
    const job = slot.job;
    if (!job || job.id !== reply.id) return;
    slot.job = null;
    slot.worker.unref();
    this.completedCount++;
    if (reply.error !== null) job.reject(new RegistryError('UNAVAILABLE', `password verification failed: ${reply.error}`));
    else job.resolve(reply.ok);
    // The next job starts once the caller has acted on this result (a failure it records may throttle the
    // jobs queued behind: their `admit` is asked at dispatch), i.e. after the microtasks it queued.
    setImmediate(() => this.dispatch());
  }

  private onExit(index: number, slot: Slot): void {
    if (this.closed || this.slots[index] !== slot) return;
    this.slots[index] = null;
    const job = slot.job;
    if (job) {
      // Once more on a fresh worker; a job that kills two workers is not tried a third time.
      if (job.tries < 2) this.queue.unshift(job);
      else job.reject(new RegistryError('UNAVAILABLE', 'password verification worker stopped'));
    }
    if (!slot.ready) {
      // It died before loading bcryptjs: a replacement would die the same way. Fail what waits now and
      // try a new worker only when the next job arrives.
      const err = new RegistryError('UNAVAILABLE', 'password verification worker could not start');
      for (const waiting of this.queue.splice(0)) waiting.reject(err);
      return;
    }
    this.dispatch();
  }

  private dispatch(): void {
    for (let i = 0; i < this.slots.length && this.queue.length > 0; i++) {
      let slot = this.slots[i] ?? null;
      if (slot === null) {
        slot = this.spawn(i);
        this.slots[i] = slot;
      }
      if (slot.job !== null) continue;
      const job = this.queue.shift()!;
      const refused = job.tries === 0 ? (job.admit?.() ?? null) : null;
      if (refused !== null) {
        job.reject(refused);
        i--; // this slot is still free for the next job
        continue;
      }
      job.tries++;
      slot.job = job;
      slot.worker.ref();
      slot.worker.postMessage({ id: job.id, password: job.password, hash: job.hash, kind: job.kind });
    }
  }
}
