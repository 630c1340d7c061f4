/**
 * Strict incremental decoder for a `Transfer-Encoding: chunked` response body (RFC 9112 7.1).
 *
 * Feeds on whatever slices the socket delivers and hands out the data parts as sub-slices of the input
 * (no copy: the caller decides whether to copy). Knows exactly where the message ends, so the bytes after
 * it (if any) can be told apart and the connection is only reused when the framing was exact.
 *
 * Refused: chunk sizes that are not hex digits or longer than 13 of them (2^52), anything but an extension
 * after the size, a missing CRLF after the data, bare LF, control characters in an extension, chunk-size lines
 * or trailer sections larger than a small bound. Extensions are skipped (RFC 9112 7.1.1:
 * a recipient must ignore unrecognised ones); trailer fields are discarded (RFC 9112 7.1.2: a recipient
 * may discard them; they are not forwarded).
 */

export type ChunkResult =
  /** All of the input was used; the message goes on. */
  | { state: 'more' }
  /** The terminating chunk and trailer section were read; `rest` bytes of the input follow the message. */
  | { state: 'done'; rest: number }
  | { state: 'invalid'; reason: string };

const CR = 0x0d;
const LF = 0x0a;
/** Bound on one chunk-size line (size, extensions) and on the trailer section. */
const MAX_LINE = 4096;
const MAX_TRAILERS = 16 * 1024;

const enum S {
  Size,
  SizeLf,
  Data,
  DataCr,
  DataLf,
  Trailer,
  TrailerLf,
  Done,
}

export class ChunkedDecoder {
  #state = S.Size;
  #size = 0;
  #sizeDigits = 0;
  /** After the size: 0 nothing yet, 1 whitespace (BWS) that must lead to ';', 2 inside the extension. */
  #extension = 0;
  #lineBytes = 0;
  #remaining = 0;
  #trailerBytes = 0;
  /** Bytes of the current trailer line (0 = at the start of a line). */
  #trailerLine = 0;

  get done(): boolean {
    return this.#state === S.Done;
  }

  /**
   * Decode `input`; `onData` gets each run of body bytes as a sub-slice of `input`, synchronously.
   */
  push(input: Uint8Array, onData: (data: Uint8Array) => void): ChunkResult {
    let i = 0;
    const n = input.length;
    while (i < n) {
      switch (this.#state) {
        case S.Size: {
          const c = input[i++]!;
          if (++this.#lineBytes > MAX_LINE) return invalid('chunk size line too long');
          if (c === CR) {
            if (this.#sizeDigits === 0) return invalid('missing chunk size');
            if (this.#extension === 1) return invalid('white space after the chunk size without an extension');
            this.#state = S.SizeLf;
          } else if (this.#extension === 2) {
            // The extension is skipped (RFC 9112 7.1.1), but it holds no control characters.
            if (c < 0x20 ? c !== 0x09 : c === 0x7f) return invalid('control character in a chunk extension');
          } else if (c === 0x3b /* ; */) {
            if (this.#sizeDigits === 0) return invalid('missing chunk size');
            this.#extension = 2;
          } else if (c === 0x20 || c === 0x09) {
            // BWS before ';' (RFC 9112 7.1.1)
            if (this.#sizeDigits === 0) return invalid('missing chunk size');
            this.#extension = 1;
          } else if (this.#extension === 1) {
            return invalid('white space after the chunk size without an extension');
          } else {
            const d = hexValue(c);
            if (d < 0) return invalid('invalid chunk size');
            if (++this.#sizeDigits > 13) return invalid('chunk size too large'); // 16^13 = 2^52
            this.#size = this.#size * 16 + d;
          }
          break;
        }
        case S.SizeLf: {
          if (input[i++] !== LF) return invalid('chunk size line not ended by CRLF');
          this.#lineBytes = 0;
          this.#extension = 0;
          this.#sizeDigits = 0;
          if (this.#size === 0) {
            this.#state = S.Trailer;
            this.#trailerLine = 0;
          } else {
            this.#remaining = this.#size;
            this.#state = S.Data;
          }
          this.#size = 0;
          break;
        }
        case S.Data: {
          const take = Math.min(this.#remaining, n - i);
          onData(input.subarray(i, i + take));
          i += take;
          this.#remaining -= take;
          if (this.#remaining === 0) this.#state = S.DataCr;
          break;
        }
        case S.DataCr:
          if (input[i++] !== CR) return invalid('chunk data not followed by CRLF');
          this.#state = S.DataLf;
          break;
        case S.DataLf:
          if (input[i++] !== LF) return invalid('chunk data not followed by CRLF');
          this.#state = S.Size;
          break;
        case S.Trailer: {
          const c = input[i++]!;
          if (++this.#trailerBytes > MAX_TRAILERS) return invalid('trailer section too large');
          if (c === CR) this.#state = S.TrailerLf;
          else if (c === LF) return invalid('bare LF in trailer section');
          else this.#trailerLine++;
          break;
        }
        case S.TrailerLf: {
          if (input[i++] !== LF) return invalid('trailer line not ended by CRLF');
          if (this.#trailerLine === 0) {
            this.#state = S.Done;
            return { state: 'done', rest: n - i };
          }
          this.#trailerLine = 0;
          this.#state = S.Trailer;
          break;
        }
        case S.Done:
          return { state: 'done', rest: n - i };
      }
    }
    return { state: 'more' };
  }
}

function hexValue(c: number): number {
  if (c >= 0x30 && c <= 0x39) return c - 0x30;
  if (c >= 0x61 && c <= 0x66) return c - 0x57;
  if (c >= 0x41 && c <= 0x46) return c - 0x37;
  return -1;
}

function invalid(reason: string): ChunkResult {
  return { state: 'invalid', reason };
}
