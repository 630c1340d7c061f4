/**
 * One error catalogue for the whole product. Every error the code raises is one of the classes below, with a
 * stable code from the catalogues here; `test/errors.test.ts` fails when a code is raised but not catalogued,
 * or catalogued but not in the README's error table (fastify keeps its Errors.md honest the same way).
 *
 * Two kinds:
 * - `RegistryError`s go on the wire. Their body is the distribution error envelope
 *   `{"errors":[{"code","message","detail"}]}` (distribution `registry/api/errcode`), because docker,
 *   containerd and containers/image parse only that shape, and only when the Content-Type is JSON.
 *   An HTML error page shows up in docker as "invalid character '<'" and is retried (harbor#15823).
 * - `PortcullisError`s stay inside the process (config, certificates, CLI, the exchange with the registry).
 *   Each has a stable `code` so tests and operators can match on it instead of on a message.
 */

/** Registry error codes we emit, with the status the distribution spec pairs them with. */
export const REGISTRY_ERRORS = {
  UNAUTHORIZED: 401,
  DENIED: 403,
  NAME_INVALID: 400,
  UNSUPPORTED: 405,
  TOOMANYREQUESTS: 429,
  UNAVAILABLE: 503,
  UNKNOWN: 500,
} as const;

export type RegistryErrorCode = keyof typeof REGISTRY_ERRORS;

/** Codes of errors that never reach the wire, and what each means. */
export const PORTCULLIS_ERRORS = {
  PCL_ERR_CONFIG: 'proxy.yaml or an environment override is invalid (the message names file, line and key)',
  PCL_ERR_CONFIG_IO: 'proxy.yaml, or a file a PORTCULLIS_*_FILE variable names, cannot be read',
  PCL_ERR_TLS: 'a certificate, key or CA cannot be read, parsed or paired',
  PCL_ERR_HTPASSWD: 'the htpasswd file cannot be read, is too large, or has a bad line (named)',
  PCL_ERR_USAGE: 'a command was called with wrong arguments',
  PCL_ERR_PROMPT: 'a password could not be read from the terminal or standard input',
  PCL_ERR_UPSTREAM_TIMEOUT: 'the registry sent and read nothing for upstream.timeout (answered 504, or the stream cut)',
  PCL_ERR_UPSTREAM_UNAVAILABLE: 'the registry could not be reached, or closed or reset the connection (answered 502, or the stream cut)',
  PCL_ERR_UPSTREAM_PROTOCOL: 'the registry answered outside the strict HTTP/1.1 rules the proxy reads by (answered 502, or the stream cut)',
  PCL_ERR_FRAMING: 'a request body did not match its declared length (the exchange is cut)',
  PCL_ERR_DEPENDENCY: 'a library lacks something the proxy relies on (refused at start-up)',
  PCL_ERR_ACME: 'a certificate order failed (with the reason the CA gave), or tls.acme.storage cannot be used',
  PCL_ERR_LISTEN: 'an address in listen or metrics.listen cannot be bound (in use, not permitted, not on this machine)',
  PCL_ERR_EXISTS: 'init would overwrite a file that exists (named); nothing was written',
} as const;

export type PortcullisErrorCode = keyof typeof PORTCULLIS_ERRORS;

export interface RegistryErrorBody {
  errors: Array<{ code: RegistryErrorCode; message: string; detail?: unknown }>;
}

/** An error answered to the client as registry JSON. `status` may differ from the code's default
 * (413 carries DENIED so docker stops instead of retrying; a dead upstream is 502 UNAVAILABLE). */
export class RegistryError extends Error {
  readonly code: RegistryErrorCode;
  readonly status: number;
  readonly detail: unknown;
  readonly headers: Readonly<Record<string, string>>;

  constructor(
    code: RegistryErrorCode,
    message: string,
    opts: { status?: number; detail?: unknown; headers?: Record<string, string> } = {},
  ) {
    super(message);
    this.name = 'RegistryError';
    this.code = code;
    this.status = opts.status ?? REGISTRY_ERRORS[code];
    this.detail = opts.detail;
    this.headers = opts.headers ?? {};
  }

  body(): RegistryErrorBody {
    const entry: RegistryErrorBody['errors'][number] = { code: this.code, message: this.message };
    if (this.detail !== undefined) entry.detail = this.detail;
    return { errors: [entry] };
  }
}

export class PortcullisError extends Error {
  readonly code: PortcullisErrorCode;

  constructor(code: PortcullisErrorCode, message: string, opts: { cause?: unknown } = {}) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = 'PortcullisError';
    this.code = code;
  }
}

/** The registry was idle past `upstream.timeout`: told apart from a reset so it is answered 504, not 502. */
export class UpstreamTimeoutError extends PortcullisError {
  constructor(message: string) {
    super('PCL_ERR_UPSTREAM_TIMEOUT', message);
  }
}

/** The registry could not be reached, or went away during an exchange (refused, reset, closed). */
export class UpstreamUnavailableError extends PortcullisError {
  constructor(message: string) {
    super('PCL_ERR_UPSTREAM_UNAVAILABLE', message);
  }
}

/**
 * The registry answered something the proxy will not read: a response head or body framing outside the strict
 * rules of proxy/response-head.ts and proxy/chunked-decoder.ts. Its connection is closed, never reused.
 */
export class UpstreamProtocolError extends PortcullisError {
  constructor(message: string) {
    super('PCL_ERR_UPSTREAM_PROTOCOL', message);
  }
}

/** A request body did not match its framing: the exchange is cut, never answered as if it were whole. */
export class FramingError extends PortcullisError {
  constructor(message: string) {
    super('PCL_ERR_FRAMING', message);
  }
}

/**
 * tls.acme: an order that failed (CA unreachable, validation refused: the CA's reason is in the message) or
 * storage that cannot be used. An order failure is retried with backoff while the current certificate serves.
 */
export class AcmeError extends PortcullisError {
  constructor(message: string, opts: { cause?: unknown } = {}) {
    super('PCL_ERR_ACME', message, opts);
    this.name = 'AcmeError';
  }
}

/** Stored ACME files that are there but unusable (incomplete, not PEM, key and certificate apart): order anew. */
export class UnusableAcmeStorage extends AcmeError {
  constructor(message: string) {
    super(message);
    this.name = 'UnusableAcmeStorage';
  }
}

/** Is `err` a Node system error with this errno code (ECONNREFUSED, ENOENT, ...)? */
export function hasErrno(err: unknown, ...codes: string[]): boolean {
  return typeof err === 'object' && err !== null && 'code' in err && codes.includes(String(err.code));
}

/** A short, stable word for any error, for logs: its code when it has one, else its message. */
export function codeOf(err: unknown): string {
  if (typeof err === 'object' && err !== null && 'code' in err && typeof err.code === 'string') return err.code;
  return err instanceof Error ? err.message : String(err);
}
