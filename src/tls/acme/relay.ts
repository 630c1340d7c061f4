/**
 * tls-alpn-01 with `workers: N`: the primary orders (one ACME client per installation), but the
 * validation connection lands on whichever worker the kernel picks. So the primary publishes each
 * challenge certificate to every worker over the cluster IPC channel and waits until all of them
 * acknowledge it before it asks the CA to validate (RFC 8555 section 7.5.1: respond only when ready).
 * A worker started while a challenge is pending (a crash restart) gets the current ones when it comes online.
 *
 * http-01 needs none of this: the primary itself runs the plain-HTTP listener.
 */
import { AcmeError } from '../../errors.js';
import type { AlpnCertificate, TlsAlpnChallenges } from './challenges.js';
import type { AlpnPublisher } from './solvers.js';

const SET = 'portcullis:acme-alpn-set';
const DELETE = 'portcullis:acme-alpn-delete';
const ACK = 'portcullis:acme-alpn-ack';

type RelayMessage =
  | { type: typeof SET; id: number; domain: string; cert: string; key: string }
  | { type: typeof DELETE; id: number; domain: string }
  | { type: typeof ACK; id: number };

/** What the relay needs of a cluster Worker (node:cluster's Worker has it). */
export interface WorkerLike {
  readonly id: number;
  send(message: RelayMessage): boolean;
  isConnected(): boolean;
  on(event: 'message', listener: (message: unknown) => void): unknown;
  off(event: 'message', listener: (message: unknown) => void): unknown;
}

export class WorkerAlpnRelay implements AlpnPublisher {
  readonly #workers: () => WorkerLike[];
  readonly #ackTimeoutMs: number;
  readonly #pending = new Map<string, AlpnCertificate>();
  #nextId = 1;

  constructor(workers: () => WorkerLike[], opts: { ackTimeoutMs?: number } = {}) {
    this.#workers = workers;
    this.#ackTimeoutMs = opts.ackTimeoutMs ?? 10_000;
  }

  /** Publish to every connected worker; resolves once all acknowledged, rejects naming the silent ones. */
  async set(domain: string, pem: AlpnCertificate): Promise<void> {
    this.#pending.set(domain, pem);
    await this.#broadcast((id) => ({ type: SET, id, domain, cert: pem.cert, key: pem.key }));
  }

  async delete(domain: string): Promise<void> {
    this.#pending.delete(domain);
    await this.#broadcast((id) => ({ type: DELETE, id, domain }));
  }

  /** Call from cluster.on('online'): a new worker gets the challenges pending now. */
  welcome(worker: WorkerLike): void {
    for (const [domain, pem] of this.#pending) worker.send({ type: SET, id: this.#nextId++, domain, cert: pem.cert, key: pem.key });
  }

  async #broadcast(make: (id: number) => RelayMessage): Promise<void> {
    const workers = this.#workers().filter((w) => w.isConnected());
    const results = await Promise.allSettled(workers.map((w) => this.#sendAndWait(w, make(this.#nextId++))));
    const silent = workers.filter((_w, i) => results[i]?.status === 'rejected').map((w) => w.id);
    if (silent.length > 0) throw new AcmeError(`workers ${silent.join(', ')} did not take the tls-alpn-01 challenge within ${this.#ackTimeoutMs} ms`);
  }

  #sendAndWait(worker: WorkerLike, message: RelayMessage): Promise<void> {
    return new Promise((resolve, reject) => {
      const onMessage = (m: unknown): void => {
        if (isRelayMessage(m) && m.type === ACK && m.id === message.id) done(null);
      };
      const done = (err: Error | null): void => {
        clearTimeout(timer);
        worker.off('message', onMessage);
        if (err) reject(err);
        else resolve();
      };
      const timer = setTimeout(() => done(new AcmeError('timeout')), this.#ackTimeoutMs);
      worker.on('message', onMessage);
      if (!worker.send(message)) done(new AcmeError('channel closed'));
    });
  }
}

/** What a worker needs of its IPC channel (`process` in a cluster worker). */
export interface PrimaryChannel {
  on(event: 'message', listener: (message: unknown) => void): unknown;
  off(event: 'message', listener: (message: unknown) => void): unknown;
  send?: ((message: RelayMessage) => boolean) | undefined;
}

/** Worker side: apply the primary's challenges to this worker's TlsAlpnChallenges and acknowledge. */
export function followAlpnRelay(challenges: TlsAlpnChallenges, channel: PrimaryChannel): () => void {
  const onMessage = (m: unknown): void => {
    if (!isRelayMessage(m)) return;
    if (m.type === SET) challenges.set(m.domain, { cert: m.cert, key: m.key });
    else if (m.type === DELETE) challenges.delete(m.domain);
    else return;
    channel.send?.({ type: ACK, id: m.id });
  };
  channel.on('message', onMessage);
  return () => channel.off('message', onMessage);
}

function isRelayMessage(m: unknown): m is RelayMessage {
  if (typeof m !== 'object' || m === null || !('type' in m) || !('id' in m)) return false;
  return (m.type === SET || m.type === DELETE || m.type === ACK) && typeof m.id === 'number';
}
