/**
 * A small HTTP/1.1 load generator over TLS, for what wrk cannot do: HEAD requests (wrk's parser waits for
 * the body a HEAD answer's Content-Length announces) and an open-loop rate of requests (the wrong-password
 * flood). Raw sockets and a minimal response reader, so its own cost per request stays small; it runs in a
 * process of its own and prints one JSON line.
 *
 *   node --import tsx bench/lib/loadgen.ts '{"port":..., "method":"HEAD", "path":"/v2/...", "headers":{...},
 *     "ca":"FILE", "connections":32, "seconds":10}'            closed loop: each connection sends the next
 *                                                              request when the answer is whole
 *   ... '{..., "rate":50, "seconds":20}'                       open loop: `rate` requests per second
 *   ... '{..., "wrongPasswordsFor":"alice"}'                   each request with its own wrong password
 *
 * SIGTERM ends it early (the requests in flight are awaited). Output, on stdout:
 * { requests, seconds, rps, p50ms, p99ms, statuses: { "200": n, ... }, errors }
 */
import { readFileSync } from 'node:fs';
import net from 'node:net';
import tls from 'node:tls';

interface Options {
  port: number;
  method: string;
  path: string;
  headers: Record<string, string>;
  /** CA file for TLS; absent: plain HTTP (the registry alone). */
  ca?: string;
  connections?: number;
  rate?: number;
  seconds: number;
  /** Send this user name with a new wrong password on every request (a brute force). */
  wrongPasswordsFor?: string;
}

const opts = JSON.parse(process.argv[2] ?? '{}') as Options;
const ca = opts.ca === undefined ? null : readFileSync(opts.ca);
const fixed = `${opts.method} ${opts.path} HTTP/1.1\r\nHost: ${ca ? 'localhost' : '127.0.0.1'}:${opts.port}\r\n${Object.entries(opts.headers)
  .map(([k, v]) => `${k}: ${v}\r\n`)
  .join('')}`;
const staticHead = Buffer.from(`${fixed}\r\n`, 'latin1');
let guesses = 0;
function head(): Buffer {
  if (opts.wrongPasswordsFor === undefined) return staticHead;
  const credentials = Buffer.from(`${opts.wrongPasswordsFor}:guess-${process.pid}-${guesses++}`).toString('base64');
  return Buffer.from(`${fixed}Authorization: Basic ${credentials}\r\n\r\n`, 'latin1');
}
const latencies: number[] = [];
const statuses: Record<string, number> = {};
let errors = 0;
const started = performance.now();
let deadline = started + opts.seconds * 1000;
process.once('SIGTERM', () => {
  deadline = 0;
});

/** One keep-alive connection; `send` resolves with the status when the answer is whole (0 on error). */
class Connection {
  readonly #socket: net.Socket;
  #pending: Buffer = Buffer.alloc(0);
  #resolve: ((status: number) => void) | null = null;
  #closed = false;
  readonly ready: Promise<boolean>;

  constructor() {
    this.#socket = ca
      ? tls.connect({ host: '127.0.0.1', port: opts.port, servername: 'localhost', ca, ALPNProtocols: ['http/1.1'] })
      : net.connect({ host: '127.0.0.1', port: opts.port, noDelay: true });
    this.ready = new Promise((resolve) => {
      this.#socket.once(ca ? 'secureConnect' : 'connect', () => resolve(true));
      this.#socket.once('error', () => resolve(false));
    });
    this.#socket.on('data', (b: Buffer) => this.#onData(b));
    this.#socket.on('error', () => {});
    this.#socket.on('close', () => {
      this.#closed = true;
      this.#settle(0);
    });
  }

  get closed(): boolean {
    return this.#closed;
  }

  send(): Promise<number> {
    return new Promise((resolve) => {
      this.#resolve = resolve;
      this.#socket.write(head());
    });
  }

  close(): void {
    this.#socket.destroy();
  }

  #onData(b: Buffer): void {
    this.#pending = this.#pending.length === 0 ? b : Buffer.concat([this.#pending, b]);
    const end = this.#pending.indexOf('\r\n\r\n');
    if (end === -1) return;
    const text = this.#pending.subarray(0, end).toString('latin1');
    const status = Number(/^HTTP\/1\.[01] (\d{3})/.exec(text)?.[1] ?? 0);
    const length = opts.method === 'HEAD' ? 0 : Number(/\r\ncontent-length:\s*(\d+)/i.exec(text)?.[1] ?? 0);
    if (this.#pending.length < end + 4 + length) return;
    this.#pending = this.#pending.subarray(end + 4 + length);
    if (/\r\nconnection:\s*close/i.test(text)) this.close();
    this.#settle(status);
  }

  #settle(status: number): void {
    const resolve = this.#resolve;
    this.#resolve = null;
    resolve?.(status);
  }
}

async function timed(conn: Connection): Promise<void> {
  const t0 = performance.now();
  const status = await conn.send();
  if (status === 0) {
    errors++;
    return;
  }
  latencies.push(performance.now() - t0);
  statuses[status] = (statuses[status] ?? 0) + 1;
}

async function closedLoop(): Promise<void> {
  await Promise.all(
    Array.from({ length: opts.connections ?? 32 }, async () => {
      let conn: Connection | null = null;
      while (performance.now() < deadline) {
        if (conn === null || conn.closed) {
          conn = new Connection();
          if (!(await conn.ready)) {
            errors++;
            conn = null;
            continue;
          }
        }
        await timed(conn);
      }
      conn?.close();
    }),
  );
}

async function openLoop(rate: number): Promise<void> {
  const idle: Connection[] = [];
  const running: Array<Promise<void>> = [];
  const one = async (): Promise<void> => {
    let conn = idle.pop();
    if (conn === undefined || conn.closed) {
      conn = new Connection();
      if (!(await conn.ready)) {
        errors++;
        return;
      }
    }
    await timed(conn);
    if (!conn.closed) idle.push(conn);
  };
  for (let i = 0; performance.now() < deadline; i++) {
    const due = started + (i * 1000) / rate;
    const wait = due - performance.now();
    if (wait > 0) await new Promise((r) => setTimeout(r, wait));
    if (performance.now() >= deadline) break;
    running.push(one());
  }
  await Promise.all(running);
  for (const c of idle) c.close();
}

function percentile(sorted: number[], p: number): number | null {
  if (sorted.length === 0) return null;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

await (opts.rate !== undefined ? openLoop(opts.rate) : closedLoop());
const seconds = (performance.now() - started) / 1000;
const sorted = latencies.sort((a, b) => a - b);
process.stdout.write(
  `${JSON.stringify({ requests: latencies.length, seconds, rps: latencies.length / seconds, p50ms: percentile(sorted, 50), p99ms: percentile(sorted, 99), statuses, errors })}\n`,
);
