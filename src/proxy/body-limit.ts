/**
 * Counts a request body as it streams and stops it at the limit.
 *
 * A chunk that would cross the limit is not passed on: the registry never receives a byte past the limit,
 * so an upload cut here cannot be completed with a partial blob (the caller also aborts the upstream
 * request). `limit` 0 means unlimited; the stream still counts bytes for the access log.
 */
import { Transform, type TransformCallback } from 'node:stream';
import { RegistryError } from '../errors.js';
import { formatSize } from '../config/units.js';

export class BodyLimit extends Transform {
  bytes = 0;
  readonly limit: number;

  constructor(limit: number) {
    super();
    this.limit = limit;
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    this.bytes += chunk.length;
    if (this.limit > 0 && this.bytes > this.limit) {
      callback(bodyTooLarge(this.limit));
      return;
    }
    callback(null, chunk);
  }
}

/** 413 with code DENIED: docker prints "denied: ..." and stops, instead of retrying a push that cannot fit. */
export function bodyTooLarge(limit: number): RegistryError {
  return new RegistryError('DENIED', `request body exceeds the proxy's limit of ${formatSize(limit)} (limits.maxBodySize)`, {
    status: 413,
    detail: { limit },
  });
}
