/**
 * Wire-level test parts: an upstream that records exactly the bytes it receives and parses them the way a
 * strict HTTP/1.1 server (Go's net/http, which registry:2 runs on) would, and a client that writes raw
 * bytes over TLS and reads back raw bytes. What the tests assert on is bytes, not what a library made of them.
 */
import net, { type AddressInfo } from 'node:net';
import tls from 'node:tls';

export interface RecordedRequest {
  /** Which upstream connection carried it (1, 2, ...): a reused pooled connection keeps its id. */
  conn: number;
  method: string;
  target: string;
  /** Header lines in order, names lower-cased, values as received. */
  headers: Array<[string, string]>;
  body: Buffer;
}

/**
 * One write of an answer: `bytes` after `afterMs`, then, with `close`, the connection ended (`end`: FIN after
 * the bytes) or reset (`destroy`), as a registry that dies mid-answer would.
 */
export interface AnswerPart {
  afterMs: number;
  bytes: string | Buffer;
  close?: 'end' | 'destroy';
}

/**
 * The raw response to send for a request, or null to send nothing (a stalled upstream). `{ afterMs, bytes }`
 * sends it later, a list of parts sends them one after the other; answers on one connection still go out in
 * request order, as HTTP/1.1 requires.
 */
export type Responder = (req: RecordedRequest) => string | Buffer | null | AnswerPart | AnswerPart[];

/** 200 with a JSON body naming the request target, so a client can tell whose answer it got. */
export const echoTarget: Responder = (req) => {
  const body = JSON.stringify({ target: req.target });
  return `HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`;
};

export interface RecordingUpstream {
  url: string;
  port: number;
  /** Every request parsed so far, in arrival order. */
  readonly requests: RecordedRequest[];
  /** Raw bytes received on each connection, by connection id. */
  readonly raw: Map<number, Buffer>;
  /** Connections accepted so far. */
  connections(): number;
  /** Connections still open. */
  open(): number;
  /** The value of a header of a recorded request (first occurrence), or undefined. */
  header(req: RecordedRequest, name: string): string | undefined;
  respond: Responder;
  /**
   * Answers a request as soon as its head arrived, before its body (a registry refusing an upload early).
   * Return null to wait for the body and `respond` as usual.
   */
  respondAtHead: ((head: Omit<RecordedRequest, 'body'>) => string | null) | null;
  close(): Promise<void>;
}

/**
 * A raw TCP upstream. It frames request bodies by Content-Length or chunked coding, nothing else (no
 * body otherwise, as RFC 9112 6.3 says for requests), so bytes sent past a request's framing are parsed as
 * the next request: exactly how a smuggled request would reach the registry.
 */
export async function startRecordingUpstream(respond: Responder = echoTarget): Promise<RecordingUpstream> {
  const requests: RecordedRequest[] = [];
  const raw = new Map<number, Buffer>();
  const sockets = new Set<net.Socket>();
  let ids = 0;
  const server = net.createServer((socket) => {
    const conn = ++ids;
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => {});
    let pending = Buffer.alloc(0);
    let answeredAtHead = false;
    let writes = Promise.resolve();
    const answerInOrder = (answer: ReturnType<Responder>): void => {
      if (answer === null) return;
      const parts = typeof answer === 'string' || Buffer.isBuffer(answer) ? [{ afterMs: 0, bytes: answer }] : Array.isArray(answer) ? answer : [answer];
      for (const { afterMs, bytes, close } of parts) {
        writes = writes.then(async () => {
          if (afterMs > 0) await new Promise((r) => setTimeout(r, afterMs));
          if (socket.destroyed) return;
          // Reset only once the bytes are handed to the kernel: destroy() discards what is still buffered.
          await new Promise<void>((r) => socket.write(bytes, () => r()));
          if (close === 'end') socket.end();
          if (close === 'destroy') socket.destroy();
        });
      }
    };
    socket.on('data', (chunk: Buffer) => {
      raw.set(conn, Buffer.concat([raw.get(conn) ?? Buffer.alloc(0), chunk]));
      pending = Buffer.concat([pending, chunk]);
      for (;;) {
        const parsed = parseRequest(pending);
        if (parsed === 'incomplete') {
          const head = answeredAtHead || upstream.respondAtHead === null ? null : parseHead(pending);
          if (head !== null) {
            const early = upstream.respondAtHead!({ conn, ...head });
            if (early !== null) {
              answeredAtHead = true;
              answerInOrder(early);
            }
          }
          return;
        }
        if (parsed === 'invalid') {
          socket.end('HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n');
          return;
        }
        pending = pending.subarray(parsed.consumed);
        const req: RecordedRequest = { conn, ...parsed.request };
        requests.push(req);
        if (answeredAtHead) {
          answeredAtHead = false;
          continue;
        }
        answerInOrder(upstream.respond(req));
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  const upstream: RecordingUpstream = {
    url: `http://127.0.0.1:${port}`,
    port,
    requests,
    raw,
    connections: () => ids,
    open: () => sockets.size,
    header: (req, name) => req.headers.find(([n]) => n === name.toLowerCase())?.[1],
    respond,
    respondAtHead: null,
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
  return upstream;
}

type Parsed = { consumed: number; request: Omit<RecordedRequest, 'conn'> } | 'incomplete' | 'invalid';

function parseHead(buf: Buffer): { method: string; target: string; headers: Array<[string, string]>; end: number } | null {
  const end = buf.indexOf('\r\n\r\n');
  if (end === -1) return null;
  const lines = buf.subarray(0, end).toString('latin1').split('\r\n');
  const m = /^([A-Z]+) (\S+) HTTP\/1\.[01]$/.exec(lines[0] ?? '');
  if (!m) return null;
  const headers: Array<[string, string]> = [];
  for (const line of lines.slice(1)) {
    const colon = line.indexOf(':');
    if (colon <= 0) return null;
    headers.push([line.slice(0, colon).toLowerCase(), line.slice(colon + 1).trim()]);
  }
  return { method: m[1]!, target: m[2]!, headers, end };
}

function parseRequest(buf: Buffer): Parsed {
  if (buf.indexOf('\r\n\r\n') === -1) return 'incomplete';
  const head = parseHead(buf);
  if (head === null) return 'invalid';
  const { headers, end } = head;
  const get = (n: string): string[] => headers.filter(([k]) => k === n).map(([, v]) => v);
  const lengths = get('content-length');
  const codings = get('transfer-encoding');
  let offset = end + 4;
  let body: Buffer;
  if (codings.length > 0) {
    if (lengths.length > 0 || codings.join(',').trim().toLowerCase() !== 'chunked') return 'invalid';
    const parts: Buffer[] = [];
    for (;;) {
      const lineEnd = buf.indexOf('\r\n', offset);
      if (lineEnd === -1) return 'incomplete';
      const size = parseInt(buf.subarray(offset, lineEnd).toString('latin1').split(';')[0]!, 16);
      if (!Number.isFinite(size)) return 'invalid';
      const dataStart = lineEnd + 2;
      if (size === 0) {
        const trailerEnd = buf.indexOf('\r\n', dataStart);
        if (trailerEnd === -1) return 'incomplete';
        offset = trailerEnd + 2;
        break;
      }
      if (buf.length < dataStart + size + 2) return 'incomplete';
      parts.push(buf.subarray(dataStart, dataStart + size));
      offset = dataStart + size + 2;
    }
    body = Buffer.concat(parts);
  } else if (lengths.length > 0) {
    if (new Set(lengths).size !== 1 || !/^\d+$/.test(lengths[0]!)) return 'invalid';
    const n = Number(lengths[0]);
    if (buf.length < offset + n) return 'incomplete';
    body = buf.subarray(offset, offset + n);
    offset += n;
  } else {
    body = Buffer.alloc(0);
  }
  return { consumed: offset, request: { method: head.method, target: head.target, headers, body: Buffer.from(body) } };
}

export interface RawExchangeOptions {
  /** CA to trust (PEM). */
  ca: string | Buffer;
  /** Stop reading once this holds for what arrived (default: wait for the server to close). */
  until?: (received: string) => boolean;
  /** Give up after this long and return what arrived (default 5 s). */
  timeoutMs?: number;
}

/**
 * Connect over TLS, write `bytes` as they are, return everything the server sent (latin1) once `until` holds,
 * the server closed, or the timeout passed.
 */
export function tlsExchange(port: number, bytes: string | Buffer, opts: RawExchangeOptions): Promise<string> {
  return new Promise((resolve, reject) => {
    let received = '';
    let done = false;
    const socket = tls.connect({ port, host: '127.0.0.1', ca: opts.ca, servername: 'localhost', ALPNProtocols: ['http/1.1'] }, () => {
      socket.write(bytes);
    });
    const finish = (): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      socket.destroy();
      resolve(received);
    };
    const timer = setTimeout(finish, opts.timeoutMs ?? 5000);
    socket.on('data', (d: Buffer) => {
      received += d.toString('latin1');
      if (opts.until?.(received)) finish();
    });
    socket.on('error', (err) => {
      if (done) return;
      if (received !== '') finish();
      else {
        done = true;
        clearTimeout(timer);
        reject(err);
      }
    });
    socket.on('close', finish);
  });
}

export interface RawResponse {
  status: number;
  headers: Array<[string, string]>;
  body: string;
}

/** Split a byte stream of HTTP/1.1 responses framed by Content-Length (what our proxy's answers use). */
export function parseResponses(stream: string): RawResponse[] {
  const out: RawResponse[] = [];
  let rest = stream;
  while (rest.length > 0) {
    const end = rest.indexOf('\r\n\r\n');
    if (end === -1) break;
    const lines = rest.slice(0, end).split('\r\n');
    const status = Number(/^HTTP\/1\.[01] (\d{3})/.exec(lines[0] ?? '')?.[1] ?? NaN);
    const headers = lines.slice(1).map((l): [string, string] => [l.slice(0, l.indexOf(':')).toLowerCase(), l.slice(l.indexOf(':') + 1).trim()]);
    const length = Number(headers.find(([n]) => n === 'content-length')?.[1] ?? 0);
    out.push({ status, headers, body: rest.slice(end + 4, end + 4 + length) });
    rest = rest.slice(end + 4 + length);
  }
  return out;
}

/** `Authorization: Basic ...` value for a user and password. */
export function basic(user: string, password: string): string {
  return `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}`;
}

/** One step of a conversation: bytes to write (a string is written as latin1, one byte per character), or a
 * condition on what has arrived to wait for first. */
export type Step = string | Buffer | { until: (received: string) => boolean };

export interface ConversationOptions {
  /** CA to trust (PEM). */
  ca: string | Buffer;
  /** After the last step, stop once this holds (default: wait for the server to close). */
  until?: (received: string) => boolean;
  /** Give up after this long and return what arrived (default 5 s). */
  timeoutMs?: number;
  /** TLS options for the client (versions, ALPN), over the defaults. */
  tls?: tls.ConnectionOptions;
}

export interface Conversation {
  /** Everything the server sent (latin1). */
  received: string;
  /** The server ended or reset the connection (as opposed to `until` holding, or the timeout). */
  closedByServer: boolean;
  timedOut: boolean;
  /** The TLS handshake failed (its error message), or null. */
  handshakeError: string | null;
  ms: number;
}

/**
 * Like tlsExchange, in steps: write, wait until something arrived, write more. Reports how the conversation
 * ended, so a test can tell a server that closed from one that merely stopped talking.
 */
export function tlsConversation(port: number, steps: readonly Step[], opts: ConversationOptions): Promise<Conversation> {
  return new Promise((resolve) => {
    const started = performance.now();
    let received = '';
    let done = false;
    let secured = false;
    let waiting: ((received: string) => boolean) | null = null;
    let next = 0;
    const socket = tls.connect(
      { port, host: '127.0.0.1', ca: opts.ca, servername: 'localhost', ALPNProtocols: ['http/1.1'], ...opts.tls },
      () => {
        secured = true;
        advance();
      },
    );
    const finish = (how: { closedByServer?: boolean; timedOut?: boolean; handshakeError?: string }): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      socket.destroy();
      resolve({
        received,
        closedByServer: how.closedByServer ?? false,
        timedOut: how.timedOut ?? false,
        handshakeError: how.handshakeError ?? null,
        ms: performance.now() - started,
      });
    };
    const advance = (): void => {
      while (!done && waiting === null) {
        const step = steps[next++];
        if (step === undefined) {
          waiting = opts.until ?? (() => false);
        } else if (typeof step === 'string' || Buffer.isBuffer(step)) {
          socket.write(typeof step === 'string' ? Buffer.from(step, 'latin1') : step);
          continue;
        } else {
          waiting = step.until;
        }
        if (waiting(received)) {
          if (next > steps.length) return finish({});
          waiting = null;
        }
      }
    };
    const timer = setTimeout(() => finish({ timedOut: true }), opts.timeoutMs ?? 5000);
    socket.on('data', (d: Buffer) => {
      received += d.toString('latin1');
      if (waiting?.(received)) {
        if (next > steps.length) return finish({});
        waiting = null;
        advance();
      }
    });
    socket.on('error', (err) => {
      if (!secured) finish({ closedByServer: true, handshakeError: err.message });
      else finish({ closedByServer: true });
    });
    socket.on('end', () => finish({ closedByServer: true }));
    socket.on('close', () => finish({ closedByServer: true }));
  });
}
