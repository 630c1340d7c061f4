/**
 * Reads the server name (SNI) and the offered ALPN protocols out of a TLS ClientHello, without a TLS stack.
 *
 * Why: a tls-alpn-01 validation must get the challenge certificate only when the ClientHello offers ALPN
 * `acme-tls/1` for the challenged name (RFC 8737 section 3). Node's SNICallback cannot see ALPN, and with
 * TLS 1.2 OpenSSL selects the certificate before it calls ALPNCallback, so the choice has to be made on
 * the raw bytes, before the connection is handed to TLS.
 *
 * Layouts: TLS record (RFC 8446 section 5.1), ClientHello (RFC 8446 section 4.1.2), server_name
 * (RFC 6066 section 3), application_layer_protocol_negotiation (RFC 7301 section 3.1).
 */

export interface ClientHello {
  /** The host_name of server_name, lower-cased; null without SNI. */
  serverName: string | null;
  /** ALPN protocol names offered, in the client's order. */
  alpn: string[];
}

export type ParseResult =
  | { kind: 'hello'; hello: ClientHello }
  /** Not enough bytes yet: read more and call again with everything so far. */
  | { kind: 'incomplete' }
  /** Not a TLS ClientHello (plain HTTP to the TLS port, garbage): let TLS deal with it. */
  | { kind: 'other' };

const RECORD_HANDSHAKE = 22;
const HANDSHAKE_CLIENT_HELLO = 1;
const EXT_SERVER_NAME = 0;
const EXT_ALPN = 16;
/** A ClientHello bigger than this is not worth buffering (post-quantum key shares make them ~2 KiB). */
export const MAX_CLIENT_HELLO = 64 * 1024;

/** Parse the ClientHello from the first bytes of a connection (possibly spread over several records). */
export function parseClientHello(data: Buffer): ParseResult {
  // Reassemble the handshake layer: a ClientHello may be fragmented across records (RFC 8446 section 5.1).
  const fragments: Buffer[] = [];
  let handshakeBytes = 0;
  let needed = -1;
  let offset = 0;
  for (;;) {
    if (data.length < offset + 5) return { kind: 'incomplete' };
    if (data[offset] !== RECORD_HANDSHAKE || data[offset + 1] !== 3) return { kind: 'other' };
    const length = data.readUInt16BE(offset + 3);
    if (data.length < offset + 5 + length) return { kind: 'incomplete' };
    const fragment = data.subarray(offset + 5, offset + 5 + length);
    fragments.push(fragment);
    handshakeBytes += fragment.length;
    offset += 5 + length;
    if (needed < 0 && handshakeBytes >= 4) {
      const head = Buffer.concat(fragments);
      if (head[0] !== HANDSHAKE_CLIENT_HELLO) return { kind: 'other' };
      needed = 4 + head.readUIntBE(1, 3);
      if (needed > MAX_CLIENT_HELLO) return { kind: 'other' };
    }
    if (needed >= 0 && handshakeBytes >= needed) break;
  }
  const body = Buffer.concat(fragments).subarray(4, needed);
  const r = new Reader(body);
  const hello = readBody(r);
  // A length that points past its container: not a ClientHello we can trust, let TLS refuse it.
  return r.overrun ? { kind: 'other' } : { kind: 'hello', hello };
}

function readBody(r: Reader): ClientHello {
  r.skip(2 + 32); // legacy_version, random
  r.skip(r.u8()); // legacy_session_id
  r.skip(r.u16()); // cipher_suites
  r.skip(r.u8()); // legacy_compression_methods
  const hello: ClientHello = { serverName: null, alpn: [] };
  if (r.done()) return hello; // no extensions at all (only in ancient clients)
  const extensions = r.sub(r.u16());
  while (!extensions.done()) {
    const type = extensions.u16();
    const ext = extensions.sub(extensions.u16());
    if (type === EXT_SERVER_NAME) {
      const list = ext.sub(ext.u16());
      while (!list.done()) {
        const nameType = list.u8();
        const name = list.take(list.u16());
        if (nameType === 0) hello.serverName = name.toString('latin1').toLowerCase();
      }
    } else if (type === EXT_ALPN) {
      const list = ext.sub(ext.u16());
      while (!list.done()) hello.alpn.push(list.take(list.u8()).toString('latin1'));
    }
  }
  return hello;
}

/**
 * Bounds-checked big-endian reads over one length-prefixed block. Reading past the end yields zeros and
 * empty slices and marks the whole tree as overrun (the loops above then end), so a malformed hello is
 * told apart without exceptions.
 */
class Reader {
  #pos = 0;
  readonly #state: { overrun: boolean };

  constructor(
    private readonly buf: Buffer,
    state: { overrun: boolean } = { overrun: false },
  ) {
    this.#state = state;
  }

  get overrun(): boolean {
    return this.#state.overrun;
  }

  done(): boolean {
    return this.#pos >= this.buf.length;
  }

  u8(): number {
    const b = this.take(1);
    return b.length === 1 ? b.readUInt8(0) : 0;
  }

  u16(): number {
    const b = this.take(2);
    return b.length === 2 ? b.readUInt16BE(0) : 0;
  }

  skip(n: number): void {
    this.take(n);
  }

  /** A reader over the next `n` bytes, sharing the overrun mark. */
  sub(n: number): Reader {
    return new Reader(this.take(n), this.#state);
  }

  take(n: number): Buffer {
    if (this.#pos + n > this.buf.length) {
      this.#state.overrun = true;
      this.#pos = this.buf.length;
      return Buffer.alloc(0);
    }
    const out = this.buf.subarray(this.#pos, this.#pos + n);
    this.#pos += n;
    return out;
  }
}
