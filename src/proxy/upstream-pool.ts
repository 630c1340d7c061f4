/**
 * Keep-alive connections to a plain-HTTP registry for the relay (relay.ts), read with `onread`: no http
 * module, no allocation per read. The rest (an https registry, the catalog transform, DELETE) keeps going
 * through http-proxy and its own http.Agent (upstream-agent.ts).
 *
 * A connection reads into whatever buffer its current reader hands out: `onread.buffer` as a function is
 * called after every read for the next one (Node's lib/internal/stream_base_commons.js, onStreamRead).
 * Between exchanges, and for response heads, it reads into one small buffer shared by every connection: a
 * reader copies out what it keeps before its callback returns, so sharing is safe on one thread.
 *
 * Pool rules:
 * - a connection goes back to the pool only when its reader says both messages were framed exactly and
 *   nothing followed them (release(conn, true)); every other end destroys it;
 * - idle connections are closed after `idleTimeoutMs`, well before a registry would close them, so a reused
 *   connection is not one the registry is closing at the same moment (nodejs/node#47130, the same rule as
 *   upstream-agent.ts);
 * - bytes or EOF on an idle connection destroy it: nothing is owed to us between exchanges;
 * - at most `maxSockets` connections exist; further acquires wait in FIFO order.
 */
import net from 'node:net';
import { UpstreamUnavailableError } from '../errors.js';

/** What reads a connection's bytes while it is lent out. */
export interface ConnectionReader {
  /** `n` bytes arrived at the start of `buf`. Return false to stop reading (conn.resume() restarts it). */
  onRead(n: number, buf: Buffer): boolean;
  /**
   * Where the next read lands: a buffer of the reader's that nothing else references, or null for the
   * shared buffer (onRead must then copy out what it keeps before returning).
   */
  nextBuffer(): Buffer | null;
  /** The registry closed its side (EOF). */
  onEnd(): void;
  /** The socket closed; `err` says why, if it failed. */
  onClose(err: Error | null): void;
}

export interface UpstreamPoolOptions {
  host: string;
  port: number;
  maxSockets: number;
  idleTimeoutMs: number;
  /** Connect timeout, ms; default 10 s. */
  connectTimeoutMs?: number;
}

/** The buffer shared by idle connections and by response heads (16 KiB: Node's own read size). */
const sharedReadBuffer = Buffer.allocUnsafeSlow(16 * 1024);

export class UpstreamConnection {
  readonly socket: net.Socket;
  #reader: ConnectionReader | null = null;
  #idleTimer: NodeJS.Timeout | null = null;

  constructor(socket: net.Socket) {
    this.socket = socket;
  }

  get closed(): boolean {
    return this.socket.destroyed;
  }

  attach(reader: ConnectionReader): void {
    this.#clearIdle();
    this.#reader = reader;
    this.socket.resume();
  }

  detach(): void {
    this.#reader = null;
  }

  pause(): void {
    this.socket.pause();
  }

  resume(): void {
    this.socket.resume();
  }

  destroy(): void {
    this.#clearIdle();
    this.socket.destroy();
  }

  /** @internal the onread callback */
  onRead(n: number, buf: Buffer): boolean {
    const reader = this.#reader;
    if (reader === null) {
      // Bytes nobody asked for: the stream is out of step with the exchanges on it.
      this.destroy();
      return false;
    }
    return reader.onRead(n, buf);
  }

  /** @internal the onread buffer generator */
  nextBuffer(): Buffer {
    return this.#reader?.nextBuffer() ?? sharedReadBuffer;
  }

  /** @internal */
  onEnd(): void {
    if (this.#reader) this.#reader.onEnd();
    else this.destroy();
  }

  /** @internal */
  onClose(err: Error | null): void {
    this.#clearIdle();
    const reader = this.#reader;
    this.#reader = null;
    reader?.onClose(err);
  }

  /** @internal */
  idleFor(ms: number, onExpire: () => void): void {
    this.#clearIdle();
    this.#idleTimer = setTimeout(onExpire, ms);
    this.#idleTimer.unref();
  }

  #clearIdle(): void {
    if (this.#idleTimer !== null) clearTimeout(this.#idleTimer);
    this.#idleTimer = null;
  }
}

interface Waiter {
  resolve(conn: UpstreamConnection): void;
  reject(err: Error): void;
}

export class UpstreamPool {
  readonly #options: UpstreamPoolOptions;
  /** Idle connections, most recently used last (LIFO: warm ones first, cold ones expire). */
  readonly #idle: UpstreamConnection[] = [];
  readonly #waiting: Waiter[] = [];
  #open = 0;
  #closed = false;

  constructor(options: UpstreamPoolOptions) {
    this.#options = options;
  }

  get openConnections(): number {
    return this.#open;
  }

  get idleConnections(): number {
    return this.#idle.length;
  }

  /** An idle connection, a new one, or the next one released once `maxSockets` are open. */
  acquire(): Promise<UpstreamConnection> {
    if (this.#closed) return Promise.reject(new UpstreamUnavailableError('upstream pool closed'));
    for (;;) {
      const conn = this.#idle.pop();
      if (conn === undefined) break;
      if (!conn.closed) return Promise.resolve(conn);
    }
    if (this.#open < this.#options.maxSockets) return this.#connect();
    return new Promise<UpstreamConnection>((resolve, reject) => this.#waiting.push({ resolve, reject }));
  }

  /**
   * Hand a connection back: `reusable` only when both messages were framed exactly, nothing followed, and
   * the registry allowed persistence. Otherwise it is destroyed.
   */
  release(conn: UpstreamConnection, reusable: boolean): void {
    conn.detach();
    if (!reusable || this.#closed || conn.closed) {
      conn.destroy();
      return;
    }
    const waiter = this.#waiting.shift();
    if (waiter) {
      waiter.resolve(conn);
      return;
    }
    conn.idleFor(this.#options.idleTimeoutMs, () => conn.destroy());
    this.#idle.push(conn);
  }

  close(): void {
    this.#closed = true;
    for (const c of this.#idle.splice(0)) c.destroy();
    for (const w of this.#waiting.splice(0)) w.reject(new UpstreamUnavailableError('upstream pool closed'));
  }

  #connect(): Promise<UpstreamConnection> {
    this.#open++;
    return new Promise<UpstreamConnection>((resolve, reject) => {
      let conn: UpstreamConnection | null = null;
      const socket = net.connect({
        host: this.#options.host,
        port: this.#options.port,
        noDelay: true,
        onread: {
          buffer: () => (conn ? conn.nextBuffer() : sharedReadBuffer),
          callback: (n: number, buf: Uint8Array) => (conn ? conn.onRead(n, buf as Buffer) : false),
        },
      });
      conn = new UpstreamConnection(socket);
      const c = conn;
      const timeout = this.#options.connectTimeoutMs ?? 10_000;
      const timer = setTimeout(() => socket.destroy(new UpstreamUnavailableError(`connect timeout after ${timeout} ms`)), timeout);
      let connected = false;
      socket.once('connect', () => {
        connected = true;
        clearTimeout(timer);
        resolve(c);
      });
      socket.on('end', () => c.onEnd());
      socket.on('error', () => {
        /* reported through 'close' */
      });
      socket.once('close', () => {
        clearTimeout(timer);
        this.#open--;
        const i = this.#idle.indexOf(c);
        if (i !== -1) this.#idle.splice(i, 1);
        const err = socket.errored ?? null;
        if (!connected) reject(err ?? new UpstreamUnavailableError('connection closed before it was established'));
        else c.onClose(err);
        this.#wakeWaiter();
      });
    });
  }

  /** A slot freed up: connect for the oldest waiter. */
  #wakeWaiter(): void {
    if (this.#closed || this.#open >= this.#options.maxSockets) return;
    const waiter = this.#waiting.shift();
    if (!waiter) return;
    this.#connect().then(waiter.resolve, waiter.reject);
  }
}
