/**
 * The pooled raw path to a plain-HTTP registry: one exchange written and read by us over an UpstreamPool
 * connection, for the requests that carry the bytes (blob GET and HEAD, 206 ranges, manifests, pings, and the
 * POST, PATCH and PUT of pushes). The forwarder decides which requests take it (forwarder.ts); the plan and
 * the outcome are the same as on the general path, so the pipeline logs, counts and audits both alike.
 *
 * Why not Node's HTTP client here: it copies every body chunk out of the socket's read buffer (llhttp
 * on_body, Buffer::Copy) into a fresh ArrayBuffer, and passes it through Readable and Writable machinery
 * and http-proxy's pipe. V8 counts those buffers as external memory (node-flags.ts: the GC storm), and per
 * GiB that is ~16k allocations. Here the registry's socket reads straight into a few reused buffers
 * (`onread`), and each buffer goes to the client by reference and comes back when the write calls back.
 * Upload bodies arrive from Node's server in 16 KiB pieces (one per TLS record); they are counted, framed
 * and written to the registry once per turn of the event loop, as one writev.
 *
 * Buffer safety (test/relay.test.ts has a test for each rule):
 * - A read buffer is reused only after the write that carried it called back. res.write() corks the socket
 *   and queues the chunk by reference until the next tick (lib/_http_outgoing.js write_), a plain TCP socket
 *   may keep it queued in libuv until it is writable, and a pipelined response keeps it in outputData: only
 *   the callback proves it was consumed. (TLS copies it into the record layer at write time, but that is
 *   not relied on.)
 * - At most RING buffers per transfer: when none is free, reading stops, so a slow client holds the
 *   registry back instead of filling our memory, and reading resumes when a write calls back.
 * - An upload chunk is freed (detached, Node 22+) only in the callback of the last write of its batch:
 *   writes complete in order, so the registry's socket is done with every chunk of it. A chunk never written
 *   (a refused or abandoned body) is left to the GC.
 *
 * Framing and pooling (docs/security.md):
 * - The response head is parsed strictly (response-head.ts); a head refused is a 502 and the connection is
 *   destroyed. A body framed by chunks is decoded strictly (chunked-decoder.ts) and re-framed by Node.
 * - A connection goes back to the pool only after exactly Content-Length bytes (or the chunked terminator),
 *   nothing after them in the same read, and persistence allowed. A body framed by the close, a client that
 *   left, a timeout or an error destroys it.
 * - The registry dying or going idle mid-body cuts the client connection: a short body must show as an
 *   error, never as a whole answer. Before the response began, the proxy answers 502 or 504 itself.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { RegistryError, codeOf, type FramingError } from '../errors.js';
import { endAfterDrain, sendError } from '../http/reply.js';
import type { Logger } from '../ops/log.js';
import type { BodyLimit } from './body-limit.js';
import { ChunkedDecoder } from './chunked-decoder.js';
import type { ForwardError, ForwardPlan, UpstreamOutcome } from './forwarder.js';
import { headersOf, parseResponseHead, type BodyFraming, type ResponseHead } from './response-head.js';
import type { ConnectionReader, UpstreamConnection, UpstreamPool } from './upstream-pool.js';

export interface RelayContext {
  pool: UpstreamPool;
  /** Registry idle timeout (no bytes either way) while we wait on it, ms; 0 = none. */
  timeoutMs: number;
  logger: Logger;
  /** The registry's origin, for log lines. */
  origin: string;
}

/**
 * Read buffer size. Larger reads mean fewer syscalls, callbacks and TLS records per GiB (Node 24, one
 * download, CPU s/GiB: 64 KiB 1.61, 256 KiB 1.2-1.35, 512 KiB 1.07; nginx 2.2 in the same runs).
 */
export const READ_BUFFER_BYTES = 256 * 1024;
/** Buffers per transfer: the one being read into and up to RING - 1 queued to the client (1 MiB). */
export const RING = 4;
/** Free read buffers kept for the next transfers (4 MiB); more are left to the GC. */
const KEEP_FREE = 16;
const freeBuffers: Buffer[] = [];

function takeBuffer(): Buffer {
  return freeBuffers.pop() ?? Buffer.allocUnsafeSlow(READ_BUFFER_BYTES);
}

function giveBuffer(buf: Buffer): void {
  if (freeBuffers.length < KEEP_FREE) freeBuffers.push(buf);
}

/** Relay one exchange; resolves when the client's response has closed, whichever way. */
export function relay(req: IncomingMessage, res: ServerResponse, plan: ForwardPlan, outcome: UpstreamOutcome, ctx: RelayContext): Promise<void> {
  return new Promise<void>((resolve) => new Relay(req, res, plan, outcome, ctx, resolve).start());
}

/**
 * Upload body chunks are given back to the allocator as soon as the registry's socket has written them,
 * instead of when the garbage collector finds them: Node's parser hands each 16 KiB TLS record over in a
 * fresh ArrayBuffer of its own (node_http_parser.cc, on_body: Buffer::Copy), nothing but this relay keeps
 * it, and V8 would otherwise let tens of MiB of them wait for a collection (docs/benchmarks.md, "Memory").
 * `ArrayBuffer.prototype.transfer(0)` detaches a buffer and frees its memory at once; Node 22 and later have
 * it, Node 20 does not (there the GC frees them, as before).
 */
const canDetach = typeof (ArrayBuffer.prototype as { transfer?: unknown }).transfer === 'function';

function detachAll(chunks: readonly Buffer[]): void {
  for (const c of chunks) {
    const ab = c.buffer as ArrayBuffer & { transfer(length: number): ArrayBuffer };
    // Only a chunk that is its whole buffer is ours alone to free; a view into a shared one is left to the GC.
    if (c.byteOffset === 0 && ab.byteLength === c.byteLength) ab.transfer(0);
  }
}

/** Body bytes gathered before they are written upstream at once, without waiting for the next turn. */
const MAX_BATCH_BYTES = 256 * 1024;

const enum Phase {
  Connecting,
  Head,
  Body,
  Done,
}

const enum BodyState {
  None,
  Sending,
  Sent,
  Stopped,
}

class Relay implements ConnectionReader {
  readonly #req: IncomingMessage;
  readonly #res: ServerResponse;
  readonly #plan: ForwardPlan;
  readonly #outcome: UpstreamOutcome;
  readonly #ctx: RelayContext;
  readonly #started = performance.now();
  #phase = Phase.Connecting;
  #conn: UpstreamConnection | null = null;
  /** The request body's meter (null: no body), and where sending it stands. */
  readonly #body: BodyLimit | null;
  readonly #chunked: boolean;
  #bodyState = BodyState.None;
  /** Body chunks of this turn of the event loop, written upstream together (one writev, one chunk). */
  #batch: Buffer[] = [];
  #batchBytes = 0;
  #flushQueued = false;
  /** Head bytes received so far (the head may span reads). */
  #head: Buffer | null = null;
  #framing: BodyFraming = { kind: 'none' };
  #reusable = false;
  /** Body bytes still to come of a Content-Length response. */
  #remaining = 0;
  #decoder: ChunkedDecoder | null = null;
  // The transfer's read buffers: #target is where the next read lands, #free came back from the client.
  #target: Buffer | null = null;
  readonly #free: Buffer[] = [];
  #owned = 0;
  /** Reading stopped: no free buffer, or the client asked us to wait. */
  #paused = false;
  readonly #onTimeout = (): void => this.#timeout();
  readonly #onDrain = (): void => this.#resumeReading();
  readonly #onBodyData = (chunk: Buffer): void => this.#bodyData(chunk);
  readonly #onBodyEnd = (): void => this.#bodyEnd();
  readonly #onFlush = (): void => {
    this.#flushQueued = false;
    this.#flush();
  };
  readonly #onUpstreamDrain = (): void => {
    if (this.#bodyState === BodyState.Sending) this.#req.resume();
  };

  constructor(req: IncomingMessage, res: ServerResponse, plan: ForwardPlan, outcome: UpstreamOutcome, ctx: RelayContext, resolve: () => void) {
    this.#req = req;
    this.#res = res;
    this.#plan = plan;
    this.#outcome = outcome;
    this.#ctx = ctx;
    this.#body = plan.body;
    this.#chunked = req.headers['transfer-encoding'] === 'chunked';
    res.once('close', () => {
      // The client left, or we cut it: the connection is in an unknown state, never pool it.
      if (!res.writableFinished) this.#abandon();
      resolve();
    });
  }

  start(): void {
    this.#ctx.pool.acquire().then(
      (conn) => this.#send(conn),
      (err: unknown) => this.#fail('upstream_unavailable', err),
    );
  }

  #send(conn: UpstreamConnection): void {
    if (this.#phase !== Phase.Connecting || this.#res.destroyed) {
      // The client left while we waited for a connection: nothing was written on it.
      this.#ctx.pool.release(conn, !conn.closed);
      return;
    }
    this.#conn = conn;
    this.#phase = Phase.Head;
    conn.attach(this);
    if (this.#ctx.timeoutMs > 0) {
      conn.socket.setTimeout(this.#ctx.timeoutMs);
      conn.socket.on('timeout', this.#onTimeout);
    }
    conn.socket.write(requestHead(this.#req));
    if (this.#body !== null) {
      this.#bodyState = BodyState.Sending;
      conn.socket.on('drain', this.#onUpstreamDrain);
      this.#req.on('data', this.#onBodyData);
      this.#req.on('end', this.#onBodyEnd);
    }
  }

  // ---------------------------------------------------------------------------------- request body

  /**
   * A chunk of the client's body (a fresh copy Node's parser made: it may be held until written). Counted
   * and held to the limit first: a chunk that crosses it is not sent at all.
   */
  #bodyData(chunk: Buffer): void {
    if (this.#bodyState !== BodyState.Sending) return;
    const refused = this.#body!.admit(chunk.length);
    if (refused !== null) {
      this.#refuseBody(refused);
      return;
    }
    this.#batch.push(chunk);
    this.#batchBytes += chunk.length;
    // TLS hands the body over in 16 KiB records, several per read: written once per turn of the event loop
    // (setImmediate runs after this turn's reads), they cost one writev and, chunked, one chunk header.
    if (this.#batchBytes >= MAX_BATCH_BYTES) this.#flush();
    else if (!this.#flushQueued) {
      this.#flushQueued = true;
      setImmediate(this.#onFlush);
    }
  }

  #flush(): void {
    const conn = this.#conn;
    if (this.#batchBytes === 0 || conn === null || this.#bodyState !== BodyState.Sending) return;
    const socket = conn.socket;
    const batch = this.#batch;
    socket.cork();
    if (this.#chunked) socket.write(`${this.#batchBytes.toString(16)}\r\n`, 'latin1');
    const last = batch.length - 1;
    for (let i = 0; i < last; i++) socket.write(batch[i]!);
    // Writes complete in order: the last one's callback means the registry's socket is done with them all.
    if (canDetach) socket.write(batch[last]!, (err) => err || detachAll(batch));
    else socket.write(batch[last]!);
    if (this.#chunked) socket.write('\r\n', 'latin1');
    socket.uncork();
    this.#batch = [];
    this.#batchBytes = 0;
    // The registry reads slower than the client sends: hold the client back until the socket drains.
    if (socket.writableNeedDrain) this.#req.pause();
  }

  #bodyEnd(): void {
    if (this.#bodyState !== BodyState.Sending) return;
    const refused = this.#body!.ended();
    if (refused !== null) {
      this.#refuseBody(refused);
      return;
    }
    this.#flush();
    if (this.#chunked) this.#conn?.socket.write('0\r\n\r\n', 'latin1');
    this.#stopBody(BodyState.Sent);
  }

  /** Stop reading the client's body for the registry: it was sent whole, or will never be. */
  #stopBody(state: BodyState.Sent | BodyState.Stopped): void {
    if (this.#bodyState !== BodyState.Sending) return;
    this.#bodyState = state;
    this.#req.removeListener('data', this.#onBodyData);
    this.#req.removeListener('end', this.#onBodyEnd);
    this.#conn?.socket.removeListener('drain', this.#onUpstreamDrain);
    this.#batch = [];
    this.#batchBytes = 0;
  }

  /** Over the limit (413, nothing past it sent), or longer than declared (cut). */
  #refuseBody(refused: RegistryError | FramingError): void {
    this.#stopBody(BodyState.Stopped);
    if (refused instanceof RegistryError) this.#fail('body_too_large', refused.message, refused);
    else if (this.#phase === Phase.Body) this.#cut('bad_framing', refused.message);
    else this.#fail('bad_framing', refused.message, null);
  }

  // ------------------------------------------------------------------------------- ConnectionReader

  nextBuffer(): Buffer | null {
    // Body bytes of a Content-Length response land in this transfer's own buffers; the head, and chunked or
    // close-framed bodies, in the shared buffer, copied out before onRead returns.
    return this.#target;
  }

  onRead(n: number, buf: Buffer): boolean {
    if (this.#phase === Phase.Head) return this.#onHeadBytes(Buffer.from(buf.subarray(0, n)));
    if (this.#phase !== Phase.Body) return false;
    if (this.#framing.kind === 'length') {
      if (buf === this.#target) return this.#onLengthBody(buf.subarray(0, n), buf);
      return this.#onLengthBody(Buffer.from(buf.subarray(0, n)), null);
    }
    return this.#onCopiedBody(Buffer.from(buf.subarray(0, n)));
  }

  onEnd(): void {
    this.#upstreamGone(null);
  }

  onClose(err: Error | null): void {
    this.#upstreamGone(err);
  }

  // ------------------------------------------------------------------------------------------- head

  #onHeadBytes(bytes: Buffer): boolean {
    let head = this.#head === null ? bytes : Buffer.concat([this.#head, bytes]);
    for (;;) {
      const r = parseResponseHead(head, { headRequest: this.#req.method === 'HEAD' });
      if (r.state === 'incomplete') {
        this.#head = head;
        return true;
      }
      if (r.state === 'invalid') {
        this.#fail(r.upgrade ? 'upstream_upgrade' : 'upstream_protocol', r.reason);
        return false;
      }
      if (r.state === 'interim') {
        // 1xx: not forwarded (the registry is never sent Expect); parse what follows.
        head = head.subarray(r.length);
        if (head.length > 0) continue;
        this.#head = null;
        return true;
      }
      this.#head = null;
      return this.#beginResponse(r.head, head.subarray(r.head.length));
    }
  }

  #beginResponse(head: ResponseHead, rest: Buffer): boolean {
    const res = this.#res;
    const outcome = this.#outcome;
    outcome.status = head.status;
    outcome.ms = performance.now() - this.#started;
    const headers = headersOf(head.fields);
    const digest = headers['docker-content-digest'];
    if (typeof digest === 'string') outcome.digest = digest;
    this.#plan.responseHeaders(headers);
    // An answer before the whole body was sent (an early 401 or 413 to an upload): the registry will not read
    // the rest, so this connection ends with this answer, and the client's, if its body is still coming.
    const early = this.#bodyState === BodyState.Sending;
    this.#stopBody(BodyState.Stopped);
    const clientEarly = this.#body !== null && !this.#req.complete;
    headers.connection = clientEarly || !res.shouldKeepAlive ? 'close' : 'keep-alive';
    res.writeHead(head.status, head.reason, headers);
    this.#framing = head.framing;
    this.#reusable = head.reusable && !early;
    this.#phase = Phase.Body;
    switch (head.framing.kind) {
      case 'none':
        // Anything after a bodyless answer is out of step (a 204 with a body, a second answer).
        this.#finish(this.#reusable && rest.length === 0);
        return true;
      case 'length':
        this.#remaining = head.framing.length;
        if (this.#remaining === 0) {
          this.#finish(this.#reusable && rest.length === 0);
          return true;
        }
        if (rest.length > 0) return this.#onLengthBody(rest, null);
        this.#target = this.#takeRingBuffer();
        return true;
      case 'chunked':
        this.#decoder = new ChunkedDecoder();
        return rest.length > 0 ? this.#onCopiedBody(rest) : true;
      case 'close':
        return rest.length > 0 ? this.#onCopiedBody(rest) : true;
    }
  }

  // ------------------------------------------------------------------------------------------- body

  /**
   * Content-Length body bytes. `ring` is the transfer's buffer they were read into (they go out by
   * reference and it comes back when the write calls back), or null when `data` is a copy of our own.
   */
  #onLengthBody(data: Buffer, ring: Buffer | null): boolean {
    const take = Math.min(data.length, this.#remaining);
    this.#remaining -= take;
    if (ring !== null) this.#target = null;
    this.#write(take === data.length ? data : data.subarray(0, take), ring);
    if (this.#remaining === 0) {
      // Bytes after the body, on a connection asked nothing else: out of step, never reused.
      this.#finish(this.#reusable && take === data.length);
      return true;
    }
    if (ring === null) {
      // A copy (bytes that came with the head, or a read into the shared buffer): the next read goes into a
      // buffer of ours if one may be taken.
      if (this.#target === null && (this.#free.length > 0 || this.#owned < RING)) this.#target = this.#takeRingBuffer();
      return this.#waitForClient();
    }
    // Allowed: reading into `ring` was only possible with a buffer free or fewer than RING owned.
    this.#target = this.#takeRingBuffer();
    if (this.#free.length === 0 && this.#owned >= RING) {
      // After this read the next would have nowhere to go: wait for the client.
      this.#paused = true;
      return false;
    }
    return true;
  }

  /** Chunked or close-framed bodies (rare from a registry): bytes are copies, written as they come. */
  #onCopiedBody(bytes: Buffer): boolean {
    if (this.#decoder !== null) {
      const r = this.#decoder.push(bytes, (data) => this.#write(data, null));
      if (r.state === 'invalid') {
        this.#cut('upstream_protocol', `chunked body: ${r.reason}`);
        return false;
      }
      if (r.state === 'done') {
        this.#finish(this.#reusable && r.rest === 0);
        return true;
      }
    } else {
      this.#write(bytes, null);
    }
    return this.#waitForClient();
  }

  /** Copies go out without a callback; when the client's buffer is full, stop reading until it drains. */
  #waitForClient(): boolean {
    if (!this.#res.writableNeedDrain) return true;
    this.#paused = true;
    this.#res.once('drain', this.#onDrain);
    return false;
  }

  #write(data: Uint8Array, ring: Buffer | null): void {
    if (data.length === 0) {
      if (ring !== null) this.#free.push(ring);
      return;
    }
    this.#outcome.bytesOut += data.length;
    if (ring === null) this.#res.write(data);
    else this.#res.write(data, () => this.#returned(ring));
  }

  /** Only when a buffer is free or fewer than RING are owned (see the pause in #onLengthBody). */
  #takeRingBuffer(): Buffer {
    const buf = this.#free.pop();
    if (buf !== undefined) return buf;
    this.#owned++;
    return takeBuffer();
  }

  /** A write called back (done or failed): its buffer is no longer referenced by the client's socket. */
  #returned(buf: Buffer): void {
    if (this.#phase === Phase.Done) {
      giveBuffer(buf);
      return;
    }
    this.#free.push(buf);
    this.#resumeReading();
  }

  #resumeReading(): void {
    if (!this.#paused || this.#phase !== Phase.Body || this.#conn === null) return;
    this.#paused = false;
    this.#conn.resume();
  }

  // ---------------------------------------------------------------------------------------- endings

  /** The response was read whole: the client's response ends after what is queued. */
  #finish(reusable: boolean): void {
    this.#phase = Phase.Done;
    // A client still sending a body nobody reads gets the answer whole before its connection closes.
    if (this.#body !== null) endAfterDrain(this.#res);
    else this.#res.end();
    this.#release(reusable);
  }

  #release(reusable: boolean): void {
    this.#stopBody(BodyState.Stopped);
    const conn = this.#conn;
    this.#conn = null;
    this.#res.removeListener('drain', this.#onDrain);
    // Buffers not in flight go back now; those in flight when their writes call back.
    if (this.#target !== null) giveBuffer(this.#target);
    this.#target = null;
    for (const b of this.#free.splice(0)) giveBuffer(b);
    if (conn === null) return;
    conn.socket.removeListener('timeout', this.#onTimeout);
    conn.socket.setTimeout(0);
    this.#ctx.pool.release(conn, reusable);
  }

  #upstreamGone(err: Error | null): void {
    if (this.#phase === Phase.Head) {
      this.#fail('upstream_unavailable', err ?? 'upstream closed the connection before answering');
      return;
    }
    if (this.#phase !== Phase.Body) return;
    // EOF is the end of a body framed by the close.
    if (this.#framing.kind === 'close' && err === null) this.#finish(false);
    else this.#cut('upstream_unavailable', err ?? 'upstream closed the connection mid-body');
  }

  #timeout(): void {
    if (this.#paused && this.#phase === Phase.Body) {
      // Reading stopped because the client is slow: the registry is not idle, we are. Wait again.
      this.#conn?.socket.setTimeout(this.#ctx.timeoutMs);
      return;
    }
    const reason = `upstream idle for ${this.#ctx.timeoutMs} ms`;
    if (this.#phase === Phase.Body) this.#cut('upstream_timeout', reason);
    else this.#fail('upstream_timeout', reason);
  }

  /**
   * Before the response began: the proxy answers the client itself (`answer`, or the registry error that
   * fits `error`; null cuts the connection instead).
   */
  #fail(error: ForwardError, cause: unknown, answer?: RegistryError | null): void {
    if (this.#phase === Phase.Done) return;
    this.#phase = Phase.Done;
    this.#settle(error, cause);
    this.#release(false);
    if (this.#res.headersSent || answer === null) {
      this.#res.destroy();
      return;
    }
    sendError(this.#res, answer ?? answerFor(error, typeof cause === 'string' ? cause : codeOf(cause)));
  }

  /** After the response began: the only honest signal left is a broken client connection. */
  #cut(error: ForwardError, cause: unknown): void {
    if (this.#phase === Phase.Done) return;
    this.#phase = Phase.Done;
    this.#settle(error, cause);
    this.#release(false);
    this.#res.destroy();
  }

  #settle(error: ForwardError, cause: unknown): void {
    this.#outcome.error = error;
    this.#outcome.settled = true;
    const { logger, origin } = this.#ctx;
    const err = typeof cause === 'string' ? cause : codeOf(cause);
    if (error === 'body_too_large' || error === 'bad_framing') return; // the client's doing, in its log line
    if (error === 'upstream_upgrade') logger.warn({ status: 101 }, 'upstream switched protocols on a plain request');
    else if (error === 'upstream_protocol') logger.warn({ err, upstream: origin }, 'upstream answer refused');
    else logger.warn({ err, upstream: origin }, error === 'upstream_timeout' ? 'upstream timed out' : 'upstream unavailable');
  }

  /** The client's response closed unfinished. */
  #abandon(): void {
    if (this.#phase === Phase.Done && this.#conn === null) return;
    this.#phase = Phase.Done;
    this.#release(false);
  }
}

/** The registry error the client gets when the registry failed before its answer began. */
function answerFor(error: ForwardError, reason: string): RegistryError {
  switch (error) {
    case 'upstream_timeout':
      return new RegistryError('UNAVAILABLE', 'upstream registry did not answer in time', { status: 504 });
    case 'upstream_upgrade':
      return new RegistryError('UNAVAILABLE', 'upstream registry switched protocols on a plain request', { status: 502 });
    case 'upstream_protocol':
      return new RegistryError('UNAVAILABLE', 'upstream registry sent an answer the proxy does not read', { status: 502, detail: { reason } });
    default:
      return new RegistryError('UNAVAILABLE', 'upstream registry unavailable', { status: 502, detail: { reason } });
  }
}

/**
 * The request head for the registry. `req.headers` were made the registry's by the pipeline (headers.ts
 * forwardHeaders: hop-by-hop and client forwarding headers removed, framing, Host and ours set); values come
 * from Node's parser, which refuses CR, LF and NUL, or from us. Written as latin1, as Node's client does, so
 * obs-text passes byte for byte.
 */
function requestHead(req: IncomingMessage): Buffer {
  let head = `${req.method} ${req.url} HTTP/1.1\r\n`;
  for (const [name, value] of Object.entries(req.headers)) {
    if (value === undefined) continue;
    if (Array.isArray(value)) for (const v of value) head += `${name}: ${v}\r\n`;
    else head += `${name}: ${value}\r\n`;
  }
  // The proxy's own persistence wish, as Node's keep-alive agent states it on the general path.
  return Buffer.from(head + 'connection: keep-alive\r\n\r\n', 'latin1');
}
