/**
 * One error catalogue for the whole product.
 *
 * Two kinds of errors live here:
 * - `RegistryError`s go on the wire. Their body is the distribution error envelope
 *   `{"errors":[{"code","message","detail"}]}` (distribution `registry/api/errcode`), because docker,
 *   containerd and containers/image parse only that shape, and only when the Content-Type is JSON.
 *   An HTML error page shows up in docker as "invalid character '<'" and is retried (harbor#15823).
 * - `PortcullisError`s stay inside the process (config, certificates, CLI). Each has a stable `code`
 *   so tests and operators can match on it instead of on a message.
 */

/** Registry error codes we emit, with the status the distribution spec pairs them with. */
export const REGISTRY_ERRORS = {
  UNAUTHORIZED: 401,
  DENIED: 403,
  NAME_INVALID: 400,
  UNSUPPORTED: 405,
  SIZE_INVALID: 400,
  TOOMANYREQUESTS: 429,
  UNAVAILABLE: 503,
  UNKNOWN: 500,
} as const;

export type RegistryErrorCode = keyof typeof REGISTRY_ERRORS;

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

/** Stable codes for errors that never reach the wire. */
export type PortcullisErrorCode =
  | 'PCL_ERR_CONFIG'
  | 'PCL_ERR_CONFIG_IO'
  | 'PCL_ERR_TLS'
  | 'PCL_ERR_HTPASSWD'
  | 'PCL_ERR_USAGE';

export class PortcullisError extends Error {
  readonly code: PortcullisErrorCode;

  constructor(code: PortcullisErrorCode, message: string, opts: { cause?: unknown } = {}) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = 'PortcullisError';
    this.code = code;
  }
}

/** Is `err` a Node system error with this errno code (ECONNREFUSED, ENOENT, ...)? */
export function hasErrno(err: unknown, ...codes: string[]): boolean {
  return typeof err === 'object' && err !== null && 'code' in err && codes.includes(String(err.code));
}
