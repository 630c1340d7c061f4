/**
 * A strict parser for the head of an HTTP/1.1 response from the registry (status line and header section),
 * and the body framing it implies (RFC 9112 6.3). Pure: bytes in, a result out.
 *
 * Strict because this head decides how many bytes of a pooled connection belong to this response: a lenient
 * reading of a conflicting or malformed head is how response splitting and desynchronised pools happen.
 * Whatever it refuses is answered 502 and the connection closed, never pooled.
 */
import type { IncomingHttpHeaders } from 'node:http';

/** How the body after the head is delimited. */
export type BodyFraming =
  /** No body whatever the headers say: HEAD, 204, 304 (RFC 9112 6.3 rule 1). */
  | { kind: 'none' }
  /** Exactly `length` bytes (Content-Length, rule 6). */
  | { kind: 'length'; length: number }
  /** Transfer-Encoding: chunked (RFC 9112 7.1). */
  | { kind: 'chunked' }
  /** Until the registry closes (rule 8): the connection can never be reused. */
  | { kind: 'close' };

export interface ResponseHead {
  status: number;
  reason: string;
  /** Field lines in order (name, value, name, value...), hop-by-hop ones and those `Connection` names removed. */
  fields: string[];
  framing: BodyFraming;
  /** The registry lets another request follow on this connection after the body (RFC 9112 9.3). */
  reusable: boolean;
  /** Bytes the head took, its final empty line included. */
  length: number;
}

export type HeadResult =
  | { state: 'incomplete' }
  /** A 1xx interim response other than 101: skip `length` bytes and parse again (RFC 9110 15.2). */
  | { state: 'interim'; length: number }
  | { state: 'complete'; head: ResponseHead }
  /** `upgrade`: a 101 to a request that asked for no upgrade. */
  | { state: 'invalid'; reason: string; upgrade?: true };

export interface HeadOptions {
  /** The request was HEAD: the response has no body whatever it declares. */
  headRequest: boolean;
  /** Largest head accepted, in bytes. Default 16 KiB, Node's own limit for the general path. */
  maxBytes?: number;
  /** Most field lines accepted. Default 128. */
  maxFields?: number;
}

const CR = 0x0d;
const LF = 0x0a;

/** Hop-by-hop fields (RFC 9110 7.6.1): they describe the connection to us, not the representation. */
const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'te', 'trailer', 'transfer-encoding', 'upgrade']);
/** token (RFC 9110 5.6.2) */
const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
/** field-value: visible ASCII, obs-text, SP and HTAB; never CR, LF or NUL (RFC 9110 5.5). */
const FIELD_VALUE = /^[\t\x20-\x7e\x80-\xff]*$/;
const STATUS_LINE = /^HTTP\/1\.([01]) ([1-9]\d\d)(?: ([\t\x20-\x7e\x80-\xff]*))?$/;

/**
 * Parse the head at the start of `buf`, which holds everything received so far for this response (the
 * caller accumulates until the result is not 'incomplete').
 */
export function parseResponseHead(buf: Uint8Array, options: HeadOptions): HeadResult {
  const maxBytes = options.maxBytes ?? 16 * 1024;
  const maxFields = options.maxFields ?? 128;
  const limit = Math.min(buf.length, maxBytes);
  const end = headEnd(buf, limit);
  if (end === -1) {
    // A bare LF line end is refused, not waited on: RFC 9112 2.2 allows accepting it; we do not.
    if (hasBareLf(buf, limit)) return { state: 'invalid', reason: 'bare LF in the response head' };
    return buf.length >= maxBytes ? { state: 'invalid', reason: `response head over ${maxBytes} bytes` } : { state: 'incomplete' };
  }
  // latin1: one character per byte, so obs-text survives and indices are byte offsets.
  const lines = Buffer.from(buf.buffer, buf.byteOffset, end).toString('latin1').split('\r\n');
  lines.pop(); // the empty string after the last field line's CRLF
  for (const line of lines) if (line.includes('\n') || line.includes('\r')) return { state: 'invalid', reason: 'bare CR or LF in the response head' };

  const m = STATUS_LINE.exec(lines[0] ?? '');
  if (!m) return { state: 'invalid', reason: 'malformed status line' };
  const minor = m[1] === '1' ? 1 : 0;
  const status = Number(m[2]);
  const length = end + 2;
  if (status === 101) return { state: 'invalid', reason: '101 Switching Protocols to a plain request', upgrade: true };
  if (status < 200) {
    if (minor === 0) return { state: 'invalid', reason: 'a 1xx answer on HTTP/1.0' };
    return { state: 'interim', length };
  }
  if (lines.length - 1 > maxFields) return { state: 'invalid', reason: `more than ${maxFields} header fields` };

  const fields: string[] = [];
  let contentLength: number | null = null;
  let transferEncoding: string | null = null;
  const named: string[] = [];
  for (let i = 1; i < lines.length; i++) {
    const line = lines[i]!;
    // obs-fold: a proxy must reject or unfold it (RFC 9112 5.2); we reject.
    if (line.charCodeAt(0) === 0x20 || line.charCodeAt(0) === 0x09) return { state: 'invalid', reason: 'obsolete line folding' };
    const colon = line.indexOf(':');
    if (colon <= 0) return { state: 'invalid', reason: 'a header line without a field name' };
    const name = line.slice(0, colon);
    // No whitespace between name and colon (RFC 9112 5.1): the token rule covers it.
    if (!TOKEN.test(name)) return { state: 'invalid', reason: `invalid field name "${name.slice(0, 40)}"` };
    const value = trimOws(line.slice(colon + 1));
    if (!FIELD_VALUE.test(value)) return { state: 'invalid', reason: `invalid value of ${name}` };
    const lower = name.toLowerCase();
    if (lower === 'content-length') {
      // One field, one value, digits only. A repeated length ("42, 42", or two equal fields) is refused:
      // RFC 9110 8.6 allows either; a proxy that must close on any doubt about the length refuses.
      if (contentLength !== null) return { state: 'invalid', reason: 'more than one Content-Length' };
      if (!/^\d{1,15}$/.test(value)) return { state: 'invalid', reason: 'invalid Content-Length' };
      contentLength = Number(value);
    } else if (lower === 'transfer-encoding') {
      if (transferEncoding !== null) return { state: 'invalid', reason: 'more than one Transfer-Encoding' };
      transferEncoding = value.toLowerCase();
    } else if (lower === 'connection') {
      for (const t of value.split(',')) if (t.trim() !== '') named.push(t.trim().toLowerCase());
    }
    fields.push(name, value);
  }

  // Both framings at once is the classic smuggling shape (RFC 9112 6.3 rule 3: "ought to be handled as an
  // error"): refused.
  if (transferEncoding !== null && contentLength !== null) return { state: 'invalid', reason: 'both Transfer-Encoding and Content-Length' };
  if (transferEncoding !== null && minor === 0) return { state: 'invalid', reason: 'Transfer-Encoding on HTTP/1.0' };
  // `chunked` alone: other codings would need decoding we do not do, and a final coding other than chunked
  // means a body framed by the close (rule 4) that we will not guess at.
  if (transferEncoding !== null && transferEncoding !== 'chunked') {
    return { state: 'invalid', reason: `unsupported Transfer-Encoding "${transferEncoding.slice(0, 40)}"` };
  }

  let framing: BodyFraming;
  if (options.headRequest || status === 204 || status === 304) framing = { kind: 'none' };
  else if (transferEncoding === 'chunked') framing = { kind: 'chunked' };
  else if (contentLength !== null) framing = { kind: 'length', length: contentLength };
  else framing = { kind: 'close' };

  // Persistence (RFC 9112 9.3): HTTP/1.1 unless "close"; never HTTP/1.0 here.
  const reusable = minor === 1 && !named.includes('close') && framing.kind !== 'close';
  // Content-Length stays (for HEAD and 304 as the registry said it); a `Connection` token cannot remove it.
  const dropped = new Set([...HOP_BY_HOP, ...named.filter((t) => t !== 'content-length')]);
  const kept: string[] = [];
  for (let i = 0; i < fields.length; i += 2) {
    if (!dropped.has(fields[i]!.toLowerCase())) kept.push(fields[i]!, fields[i + 1]!);
  }
  return { state: 'complete', head: { status, reason: m[3] ?? '', fields: kept, framing, reusable, length } };
}

/**
 * Fields as Node's IncomingMessage presents them, so both forwarding paths hand the same headers on: names
 * lower-cased, a repeated field of these kept once (the first), Set-Cookie as a list, Cookie joined with
 * "; ", any other joined with ", " (lib/_http_incoming.js, matchKnownFields and _addHeaderLine).
 */
const FIRST_ONLY = new Set([
  'age', 'authorization', 'content-length', 'content-type', 'etag', 'expires', 'from', 'host', 'if-modified-since',
  'if-unmodified-since', 'last-modified', 'location', 'max-forwards', 'proxy-authorization', 'referer', 'retry-after',
  'server', 'user-agent',
]);

export function headersOf(fields: readonly string[]): IncomingHttpHeaders {
  const out: IncomingHttpHeaders = {};
  for (let i = 0; i < fields.length; i += 2) {
    const name = fields[i]!.toLowerCase();
    const value = fields[i + 1]!;
    const seen = out[name];
    if (name === 'set-cookie') (out['set-cookie'] ??= []).push(value);
    else if (seen === undefined) out[name] = value;
    else if (!FIRST_ONLY.has(name)) out[name] = `${String(seen)}${name === 'cookie' ? '; ' : ', '}${value}`;
  }
  return out;
}

/** Offset just past the last field line's CRLF (where the empty line starts), or -1 if not there yet. */
function headEnd(buf: Uint8Array, limit: number): number {
  let i = buf.indexOf(CR);
  while (i !== -1 && i + 3 < limit) {
    if (buf[i + 1] === LF && buf[i + 2] === CR && buf[i + 3] === LF) return i + 2;
    i = buf.indexOf(CR, i + 1);
  }
  return -1;
}

function hasBareLf(buf: Uint8Array, limit: number): boolean {
  for (let i = 0; i < limit; i++) if (buf[i] === LF && (i === 0 || buf[i - 1] !== CR)) return true;
  return false;
}

function trimOws(s: string): string {
  let a = 0;
  let b = s.length;
  while (a < b && (s.charCodeAt(a) === 0x20 || s.charCodeAt(a) === 0x09)) a++;
  while (b > a && (s.charCodeAt(b - 1) === 0x20 || s.charCodeAt(b - 1) === 0x09)) b--;
  return s.slice(a, b);
}
