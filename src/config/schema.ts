/**
 * The schema of proxy.yaml and the resolved `Config` the rest of the program reads.
 *
 * The zod schema is the single source of truth for keys, types and defaults (README "Configuration"):
 * strict objects, so a typo such as `maxBodysize` is an error rather than a silently ignored key.
 * `resolveConfig` turns the parsed file into absolute paths and plain units (bytes, milliseconds).
 */
import { isIP } from 'node:net';
import { availableParallelism } from 'node:os';
import { dirname, isAbsolute, resolve } from 'node:path';
import { z } from 'zod';
import { accessProblems, type AccessSpec } from '../access/rules.js';
import { storageLayout } from '../tls/acme/layout.js';
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

export const LETSENCRYPT_PRODUCTION = 'https://acme-v02.api.letsencrypt.org/directory';

export const ACME_CHALLENGES = ['tls-alpn-01', 'http-01'] as const;
export type AcmeChallengeType = (typeof ACME_CHALLENGES)[number];

/** RFC 1123 labels. No wildcards: they need dns-01 (RFC 8555 section 7.1.3), which is not offered. */
const DNS_NAME = /^(?=.{1,253}$)(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$/;

const domain = z.string().transform((v, ctx) => {
  const name = v.trim().toLowerCase();
  if (name.startsWith('*.')) {
    ctx.addIssue({ code: 'custom', message: `"${v}": wildcard names need the dns-01 challenge, which is not supported` });
  } else if (isIP(name) !== 0) {
    ctx.addIssue({ code: 'custom', message: `"${v}" is an IP address; list DNS names` });
  } else if (!DNS_NAME.test(name)) {
    ctx.addIssue({ code: 'custom', message: `"${v}" is not a DNS name (example: registry.example.com)` });
  }
  return name;
});

const acmeDirectory = z.string().transform((v, ctx) => {
  let url: URL | null = null;
  try {
    url = new URL(v);
  } catch {
    /* reported below */
  }
  // RFC 8555 section 6.1: ACME runs over HTTPS only.
  if (!url || url.protocol !== 'https:') ctx.addIssue({ code: 'custom', message: `"${v}" must be an https:// URL of an ACME directory` });
  return url?.href ?? '';
});

/** `tls.acme`: certificates from an ACME CA (Let's Encrypt, step-ca, ...) instead of `tls.cert`/`tls.key`. */
const acme = z
  .strictObject({
    /** Account contact (RFC 8555 section 7.3). */
    email: z.email({ error: 'must be an email address' }),
    domains: z
      .array(domain)
      .min(1, 'must list at least one domain')
      .refine((d) => new Set(d).size === d.length, 'lists a domain twice'),
    directory: acmeDirectory.prefault(LETSENCRYPT_PRODUCTION),
    challenge: z.enum(ACME_CHALLENGES, { error: `must be one of ${ACME_CHALLENGES.join(', ')}` }).prefault('tls-alpn-01'),
    /** Account key and certificates; on a volume, so a restart does not order again. */
    storage: z.string().min(1),
    /** CA certificate(s) trusted for the directory's TLS (a private ACME server). */
    ca: z.string().min(1).optional(),
    /** Plain-HTTP listener: http-01 answers and a redirect to https. Required for http-01. */
    httpListen: hostPort.optional(),
    /** The port clients reach the TLS listener on, for those redirects: the published port, not `listen`'s
     * (behind `443:5043` the proxy listens on 5043 and clients use 443). */
    httpsPort: z.number().int().min(1).max(65535).prefault(443),
  })
  .superRefine((v, ctx) => {
    if (v.challenge === 'http-01' && v.httpListen === undefined) {
      ctx.addIssue({ code: 'custom', path: ['httpListen'], message: 'is required with challenge: http-01 (example: ":80")' });
    }
  });

const workers = z
  .union([z.literal('auto'), z.number().int().min(1).max(256)], { error: 'must be "auto" or a number from 1 to 256' })
  .transform((v) =>
  v === 'auto' ? availableParallelism() : v,
);

/** The file's schema. Defaults here are the documented defaults (README "Configuration reference"). */
export const configSchema = z.strictObject({
  listen: hostPort.prefault('0.0.0.0:5043'),
  // One object with a refinement rather than a third union branch: with two object branches a missing
  // tls.acme.email would be reported against the cert/key branch as "tls.cert: is required".
  tls: z.union([
    z.literal(false),
    z
      .strictObject({
        cert: z.string().min(1).optional(),
        key: z.string().min(1).optional(),
        acme: acme.optional(),
        minVersion: z.enum(['TLSv1.2', 'TLSv1.3']).prefault('TLSv1.2'),
        /** CA certificates (PEM) that client certificates must chain to; asks every client for one. */
        clientCA: z.string().min(1).optional(),
        /** require: no verified client certificate, no handshake. optional: the certificate is asked for and
         * verified, and used when present (auth.clientCertificate). */
        clientAuth: z.enum(['require', 'optional']).prefault('require'),
      })
      .superRefine((v, ctx) => {
        if (v.acme && (v.cert !== undefined || v.key !== undefined)) {
          ctx.addIssue({ code: 'custom', path: ['acme'], message: 'cannot be combined with cert and key: use one or the other' });
        } else if (!v.acme) {
          if (v.cert === undefined) ctx.addIssue({ code: 'custom', path: ['cert'], message: 'is required (or tls.acme)' });
          if (v.key === undefined) ctx.addIssue({ code: 'custom', path: ['key'], message: 'is required (or tls.acme)' });
        }
      }),
  ], { error: 'must be a mapping with cert and key, or false for plain HTTP (or a mapping with acme)' }),
  upstream: z.strictObject({
    url: httpUrl,
    ca: z.string().min(1).optional(),
    /** Other origins the registry may use in absolute Locations (its `http.host`, if not the url above). */
    aliases: z.array(httpUrl).prefault([]),
    /** Upstream idle timeout: no bytes either way for this long -> 504 (or a cut stream). Long, because the
     * final `PUT ?digest=` of a big layer may take minutes (a 60 s limit broke pushes: traefik#10741). */
    timeout: duration.prefault('5m'),
    /** Most connections open to the upstream at once, per pool. One exchange holds one for its whole length
     * (HTTP/1.1), and beyond the limit requests wait in line for one: 100 docker clients pulling at once run
     * 300 layer downloads (3 each), so the default leaves room above that rather than queue manifests behind
     * multi-gigabyte layers. */
    maxSockets: z.number().int().min(1).max(10_000).prefault(1024),
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

/** `tls.acme` resolved: paths absolute. */
export interface AcmeConfig {
  readonly email: string;
  readonly domains: readonly string[];
  readonly directory: string;
  readonly challenge: AcmeChallengeType;
  readonly storage: string;
  readonly ca: string | null;
  readonly httpListen: { host: string; port: number } | null;
  readonly httpsPort: number;
}

/** The resolved configuration the rest of the program reads. All paths absolute, all units in bytes/ms. */
export interface Config {
  /** Absolute path of the file this came from (reloads re-read it). */
  readonly file: string;
  readonly listen: { host: string; port: number };
  /** With `acme`, cert and key are the files the ACME manager keeps in its storage folder. */
  readonly tls: {
    cert: string;
    key: string;
    minVersion: 'TLSv1.2' | 'TLSv1.3';
    /** Absolute path of the client CA bundle, or null: no client certificates asked for. */
    clientCA: string | null;
    clientAuth: 'require' | 'optional';
    acme?: AcmeConfig;
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
    tls: resolveTls(p.tls, abs),
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


function resolveTls(t: Parsed['tls'], abs: (x: string) => string): Config['tls'] {
  if (t === false) return null;
  const clients = { clientCA: t.clientCA === undefined ? null : abs(t.clientCA), clientAuth: t.clientAuth };
  if (t.acme) {
    const a = t.acme;
    const acme: AcmeConfig = {
      email: a.email,
      domains: a.domains,
      directory: a.directory,
      challenge: a.challenge,
      storage: abs(a.storage),
      ca: a.ca === undefined ? null : abs(a.ca),
      httpListen: a.httpListen ?? null,
      httpsPort: a.httpsPort,
    };
    // The served pair is the one in storage, so loading, watching and reloading work as for any cert/key.
    const files = storageLayout(acme.storage);
    return { cert: files.cert, key: files.key, minVersion: t.minVersion, ...clients, acme };
  }
  // The refinement above guarantees cert and key without acme.
  return { cert: abs(t.cert ?? ''), key: abs(t.key ?? ''), minVersion: t.minVersion, ...clients };
}
