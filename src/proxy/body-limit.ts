/**
 * Counts a request body as it streams to the registry, stops it at the size limit, and holds it to its
 * declared length.
 *
 * A chunk that would cross the limit is not passed on: the registry never receives a byte past the limit,
 * so an upload cut here cannot be completed with a partial blob (the caller also aborts the upstream
 * request). `limit` 0 means unlimited; the stream still counts bytes for the access log.
 *
 * With a declared Content-Length, exactly that many bytes may go upstream: Node's parser frames the body by
 * the same length, so this never trips on its own; it is the last line that keeps a forwarded body from ever
 * spilling past its framing into what the registry would read as the next request.
 */
import { Transform, type TransformCallback } from 'node:stream';
import { FramingError, RegistryError } from '../errors.js';
import { formatSize } from '../config/units.js';

export class BodyLimit extends Transform {
  bytes = 0;
  readonly limit: number;
  readonly #declared: number | null;

  /** `declared`: the Content-Length the body was framed with, or null for a chunked body. */
  constructor(limit: number, declared: number | null = null) {
    super();
    this.limit = limit;
    this.#declared = declared;
  }

  /**
   * Counts `n` more bytes of the body: null when they may go on, else the error that cuts the body there
   * (nothing of a chunk that crosses the limit may reach the registry). The raw path (relay.ts) calls this
   * directly; the general path streams the body through the Transform below.
   */
  admit(n: number): RegistryError | FramingError | null {
    this.bytes += n;
    if (this.limit > 0 && this.bytes > this.limit) return bodyTooLarge(this.limit);
    if (this.#declared !== null && this.bytes > this.#declared) {
      return new FramingError(`request body longer than its Content-Length of ${this.#declared}`);
    }
    return null;
  }

  /** At the end of the body: null when it was as long as declared. */
  ended(): FramingError | null {
    if (this.#declared !== null && this.bytes !== this.#declared) {
      return new FramingError(`request body of ${this.bytes} bytes, declared ${this.#declared}`);
    }
    return null;
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    const refused = this.admit(chunk.length);
    if (refused) callback(refused);
    else callback(null, chunk);
  }

  override _flush(callback: TransformCallback): void {
    callback(this.ended());
  }
}

/** 413 with code DENIED: docker prints "denied: ..." and stops, instead of retrying a push that cannot fit. */
export function bodyTooLarge(limit: number): RegistryError {
  return new RegistryError('DENIED', `request body exceeds the proxy's limit of ${formatSize(limit)} (limits.maxBodySize)`, {
    status: 413,
    detail: { limit },
  });
}
