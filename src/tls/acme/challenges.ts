/**
 * The challenge responses currently published, one store per challenge type. The ACME client fills them
 * while an order is pending; the listeners (http-challenge.ts, tls-alpn.ts) answer from them.
 */
import { createSecureContext, type SecureContext } from 'node:tls';

/** http-01: token -> key authorization (RFC 8555 section 8.3). */
export class HttpChallenges {
  readonly #byToken = new Map<string, string>();

  set(token: string, keyAuthorization: string): void {
    this.#byToken.set(token, keyAuthorization);
  }

  delete(token: string): void {
    this.#byToken.delete(token);
  }

  get(token: string): string | undefined {
    return this.#byToken.get(token);
  }

  get size(): number {
    return this.#byToken.size;
  }
}

/** A tls-alpn-01 challenge certificate (RFC 8737 section 3), PEM. */
export interface AlpnCertificate {
  cert: string;
  key: string;
}

/** tls-alpn-01: domain -> the secure context presenting its challenge certificate. */
export class TlsAlpnChallenges {
  readonly #byName = new Map<string, SecureContext>();

  set(domain: string, pem: AlpnCertificate): void {
    this.#byName.set(domain.toLowerCase(), createSecureContext({ cert: pem.cert, key: pem.key }));
  }

  delete(domain: string): void {
    this.#byName.delete(domain.toLowerCase());
  }

  context(domain: string): SecureContext | undefined {
    return this.#byName.get(domain.toLowerCase());
  }

  get size(): number {
    return this.#byName.size;
  }
}
