/**
 * The schema of proxy.yaml and the resolved `Config` the rest of the program reads.
 *
 * The zod schema is the single source of truth for keys, types and defaults (README "Configuration"):
 * strict objects, so a typo such as `maxBodysize` is an error rather than a silently ignored key.
 * `resolveConfig` turns the parsed file into absolute paths and plain units (bytes, milliseconds).
 */
import { availableParallelism } from 'node:os';
import { dirname, isAbsolute, resolve } from 'node:path';
import { z } from 'zod';
import { accessProblems, type AccessSpec } from '../access/rules.js';
import { parseDuration, parseHostPort, parseSize } from './units.js';

const size = z.union([z.string(), z.number()]).transform((v, ctx) => {
  const bytes = parseSize(v);
  if (bytes === null) ctx.addIssue({ code: 'custom', message: `"${v}" is not a size (examples: 0, 512M, 1G)` });
  return bytes ?? 0;
});

const duration = z.union([z.string(), z.number()]).transform((v, ctx) => {
  const ms = parseDuration(v);
  if (ms === null) ctx.addIssue({ code: 'custom', message: `"${v}" is not a duration (examples: 30s, 5m, 500ms)` });
  return ms ?? 0;
});

const hostPort = z.string().transform((v, ctx) => {
  const hp = parseHostPort(v);
  if (hp === null) ctx.addIssue({ code: 'custom', message: `"${v}" is not host:port (example: 0.0.0.0:5043)` });
  return hp ?? { host: '', port: 0 };
});

const httpUrl = z.string().transform((v, ctx) => {
  let url: URL | null = null;
  try {
    url = new URL(v);
  } catch {
    /* reported below */
  }
  if (!url || (url.protocol !== 'http:' && url.protocol !== 'https:') || url.pathname !== '/' || url.search) {
    ctx.addIssue({ code: 'custom', message: `"${v}" must be an http:// or https:// origin without a path` });
  }
  return url ?? new URL('http://invalid');
});

const workers = z
  .union([z.literal('auto'), z.number().int().min(1).max(256)], { error: 'must be "auto" or a number from 1 to 256' })
  .transform((v) =>
  v === 'auto' ? availableParallelism() : v,
);

/** The file's schema. Defaults here are the documented defaults (README "Configuration reference"). */
export const configSchema = z.strictObject({
  listen: hostPort.prefault('0.0.0.0:5043'),
  tls: z.union([
    z.literal(false),
    z.strictObject({
      cert: z.string().min(1),
      key: z.string().min(1),
      minVersion: z.enum(['TLSv1.2', 'TLSv1.3']).prefault('TLSv1.2'),
      /** CA certificates (PEM) that client certificates must chain to; asks every client for one. */
      clientCA: z.string().min(1).optional(),
      /** require: no verified client certificate, no handshake. optional: the certificate is asked for and
       * verified, and used when present (auth.clientCertificate). */
      clientAuth: z.enum(['require', 'optional']).prefault('require'),
    }),
  ], { error: 'must be a mapping with cert and key, or false for plain HTTP' }),
  upstream: z.strictObject({
    url: httpUrl,
    ca: z.string().min(1).optional(),
    /** Other origins the registry may use in absolute Locations (its `http.host`, if not the url above). */
    aliases: z.array(httpUrl).prefault([]),
    /** Upstream idle timeout: no bytes either way for this long -> 504 (or a cut stream). Long, because the
     * final `PUT ?digest=` of a big layer may take minutes (a 60 s limit broke pushes: traefik#10741). */
    timeout: duration.prefault('5m'),
    /** Most sockets kept open to the upstream (the keep-alive pool). */
    maxSockets: z.number().int().min(1).max(10_000).prefault(128),
  }),
  auth: z.strictObject({
    htpasswd: z.string().min(1),
    realm: z
      .string()
      .regex(/^[^"\\\r\n]*$/, 'must not contain quotes, backslashes or newlines')
      .prefault('Registry Realm'),
    cacheTtl: duration.prefault('5m'),
    cacheSize: z.number().int().min(0).max(1_000_000).prefault(1000),
    maxFailures: z.number().int().min(0).prefault(10),
    /** Failures from one address over all user names (password spraying); higher than maxFailures, so one
     * user's wrong password does not lock out the others behind a shared address (NAT). 0 disables it. */
    maxFailuresPerAddress: z.number().int().min(0).prefault(100),
    failureWindow: duration.prefault('60s'),
    /** What a verified client certificate (tls.clientCA) means: nothing beyond the handshake (none), the
     * caller is its subject's CN (identity), or it is required besides a valid password (and-password). */
    clientCertificate: z.enum(['none', 'identity', 'and-password']).prefault('none'),
  }),
  limits: z
    .strictObject({
      maxBodySize: size.prefault(0),
      headersTimeout: duration.prefault('30s'),
      keepAliveTimeout: duration.prefault('75s'),
      maxHeaderSize: size.prefault('16K'),
    })
    .prefault({ maxBodySize: 0, headersTimeout: '30s', keepAliveTimeout: '75s', maxHeaderSize: '16K' }),
  metrics: z.strictObject({ listen: hostPort }).optional(),
  log: z
    .strictObject({ level: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).prefault('info') })
    .prefault({ level: 'info' }),
  access: z
    .strictObject({
      groups: z.record(z.string().min(1), z.array(z.string().min(1))).prefault({}),
      rules: z
        .array(
          z.strictObject({
            repositories: z.array(z.string()).min(1),
            users: z.array(z.string().min(1)).optional(),
            groups: z.array(z.string().min(1)).optional(),
            anonymous: z.boolean().optional(),
            actions: z.array(z.enum(['pull', 'push', 'delete', '*'])),
          }),
        )
        .min(1),
    })
    .superRefine((spec, ctx) => {
      for (const p of accessProblems(spec)) ctx.addIssue({ code: 'custom', path: p.path, message: p.message });
    })
    .optional(),
  audit: z.strictObject({ file: z.string().min(1).optional() }).optional(),
  workers: workers.prefault(1),
  shutdown: z.strictObject({ gracePeriod: duration.prefault('30s') }).prefault({ gracePeriod: '30s' }),
}).superRefine((c, ctx) => {
  if (c.auth.clientCertificate !== 'none' && (c.tls === false || c.tls.clientCA === undefined)) {
    ctx.addIssue({ code: 'custom', path: ['auth', 'clientCertificate'], message: `"${c.auth.clientCertificate}" needs tls.clientCA to verify certificates` });
  }
});

export type Parsed = z.output<typeof configSchema>;

/** The resolved configuration the rest of the program reads. All paths absolute, all units in bytes/ms. */
export interface Config {
  /** Absolute path of the file this came from (reloads re-read it). */
  readonly file: string;
  readonly listen: { host: string; port: number };
  readonly tls: {
    cert: string;
    key: string;
    minVersion: 'TLSv1.2' | 'TLSv1.3';
    /** Absolute path of the client CA bundle, or null: no client certificates asked for. */
    clientCA: string | null;
    clientAuth: 'require' | 'optional';
  } | null;
  readonly upstream: { url: URL; aliases: string[]; ca: string | null; timeoutMs: number; maxSockets: number };
  readonly auth: {
    htpasswd: string;
    realm: string;
    cacheTtlMs: number;
    cacheSize: number;
    maxFailures: number;
    maxFailuresPerAddress: number;
    failureWindowMs: number;
    clientCertificate: 'none' | 'identity' | 'and-password';
  };
  /** Per-repository rules, or null: every signed-in caller may do everything (and nobody else anything). */
  readonly access: AccessSpec | null;
  readonly audit: { file: string | null };
  readonly limits: { maxBodySize: number; headersTimeoutMs: number; keepAliveTimeoutMs: number; maxHeaderSize: number };
  readonly metrics: { host: string; port: number } | null;
  readonly log: { level: Parsed['log']['level'] };
  readonly workers: number;
  readonly shutdown: { gracePeriodMs: number };
}

export function resolveConfig(p: Parsed, file: string): Config {
  const base = dirname(file);
  const abs = (x: string): string => (isAbsolute(x) ? x : resolve(base, x));
  return {
    file,
    listen: p.listen,
    tls:
      p.tls === false
        ? null
        : {
            cert: abs(p.tls.cert),
            key: abs(p.tls.key),
            minVersion: p.tls.minVersion,
            clientCA: p.tls.clientCA === undefined ? null : abs(p.tls.clientCA),
            clientAuth: p.tls.clientAuth,
          },
    upstream: {
      url: p.upstream.url,
      aliases: p.upstream.aliases.map((u) => u.origin),
      ca: p.upstream.ca === undefined ? null : abs(p.upstream.ca),
      timeoutMs: p.upstream.timeout,
      maxSockets: p.upstream.maxSockets,
    },
    auth: {
      htpasswd: abs(p.auth.htpasswd),
      realm: p.auth.realm,
      cacheTtlMs: p.auth.cacheTtl,
      cacheSize: p.auth.cacheSize,
      maxFailures: p.auth.maxFailures,
      maxFailuresPerAddress: p.auth.maxFailuresPerAddress,
      failureWindowMs: p.auth.failureWindow,
      clientCertificate: p.auth.clientCertificate,
    },
    access: p.access ?? null,
    audit: { file: p.audit?.file === undefined ? null : abs(p.audit.file) },
    limits: {
      maxBodySize: p.limits.maxBodySize,
      headersTimeoutMs: p.limits.headersTimeout,
      keepAliveTimeoutMs: p.limits.keepAliveTimeout,
      maxHeaderSize: p.limits.maxHeaderSize,
    },
    metrics: p.metrics ? p.metrics.listen : null,
    log: p.log,
    workers: p.workers,
    shutdown: { gracePeriodMs: p.shutdown.gracePeriod },
  };
}

