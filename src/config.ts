/**
 * proxy.yaml: parse, validate, apply environment overrides, resolve.
 *
 * Rules that shape this module:
 * - Every error names where the bad value came from: `FILE:LINE: key.path: problem`, or the environment
 *   variable that set it. Unknown keys are errors, so a typo (`maxBodysize`) cannot pass silently.
 * - Every key can be overridden from the environment: `PORTCULLIS_` + the key path in upper snake case
 *   (`upstream.url` -> `PORTCULLIS_UPSTREAM_URL`, `limits.maxBodySize` -> `PORTCULLIS_LIMITS_MAX_BODY_SIZE`).
 *   The value is read as a YAML scalar (so `2`, `false`, `1G` mean what they do in the file).
 *   `PORTCULLIS_<KEY>_FILE` reads the value from a file instead (Docker/Kubernetes secrets).
 * - Paths are relative to the folder of the config file, so the same proxy.yaml works from any cwd.
 */
import { readFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { dirname, isAbsolute, resolve } from 'node:path';
import { LineCounter, Document, isMap, isScalar, parse as parseYamlScalar, parseDocument, type Node } from 'yaml';
import { z } from 'zod';
import { PortcullisError } from './errors.js';
import { formatDuration, formatSize, parseDuration, parseHostPort, parseSize } from './units.js';

export const ENV_PREFIX = 'PORTCULLIS_';

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
    failureWindow: duration.prefault('60s'),
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
  workers: workers.prefault(1),
  shutdown: z.strictObject({ gracePeriod: duration.prefault('30s') }).prefault({ gracePeriod: '30s' }),
});

type Parsed = z.output<typeof configSchema>;

/** The resolved configuration the rest of the program reads. All paths absolute, all units in bytes/ms. */
export interface Config {
  /** Absolute path of the file this came from (reloads re-read it). */
  readonly file: string;
  readonly listen: { host: string; port: number };
  readonly tls: { cert: string; key: string; minVersion: 'TLSv1.2' | 'TLSv1.3' } | null;
  readonly upstream: { url: URL; aliases: string[]; ca: string | null; timeoutMs: number; maxSockets: number };
  readonly auth: {
    htpasswd: string;
    realm: string;
    cacheTtlMs: number;
    cacheSize: number;
    maxFailures: number;
    failureWindowMs: number;
  };
  readonly limits: { maxBodySize: number; headersTimeoutMs: number; keepAliveTimeoutMs: number; maxHeaderSize: number };
  readonly metrics: { host: string; port: number } | null;
  readonly log: { level: Parsed['log']['level'] };
  readonly workers: number;
  readonly shutdown: { gracePeriodMs: number };
}

/** Read, validate and resolve a config file. Throws PortcullisError (PCL_ERR_CONFIG*) with a located message. */
export function loadConfig(file: string, env: NodeJS.ProcessEnv = process.env): Config {
  const path = resolve(file);
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new PortcullisError('PCL_ERR_CONFIG_IO', `${file}: cannot read config: ${(err as Error).message}`, {
      cause: err,
    });
  }
  return parseConfig(text, path, env);
}

/** Pure core of loadConfig: `file` is used for messages and to resolve relative paths. */
export function parseConfig(text: string, file: string, env: NodeJS.ProcessEnv = {}): Config {
  const lineCounter = new LineCounter();
  const doc = parseDocument(text, { lineCounter, prettyErrors: false, uniqueKeys: true });
  if (doc.errors.length > 0) {
    const e = doc.errors[0]!;
    const line = e.linePos?.[0].line ?? lineCounter.linePos(e.pos[0]).line;
    throw new PortcullisError('PCL_ERR_CONFIG', `${file}:${line}: invalid YAML: ${firstLine(e.message)}`);
  }
  if (doc.contents !== null && !isMap(doc.contents)) {
    throw new PortcullisError('PCL_ERR_CONFIG', `${file}:1: the config must be a mapping of keys (listen, tls, ...)`);
  }
  const envSources = applyEnvOverrides(doc, env);

  const result = configSchema.safeParse(doc.toJS() ?? {});
  if (!result.success) {
    const messages = flattenIssues(result.error.issues).map((issue) => {
      const keyPath = issue.path.map(String);
      if (issue.code === 'unrecognized_keys') {
        return issue.keys
          .map((k) => `${where(doc, lineCounter, file, envSources, [...keyPath, k])}${[...keyPath, k].join('.')}: unknown key`)
          .join('\n');
      }
      const missing = issue.code === 'invalid_type' && issue.input === undefined;
      return `${where(doc, lineCounter, file, envSources, keyPath)}${keyPath.join('.') || '(top level)'}: ${missing ? 'is required' : issue.message}`;
    });
    throw new PortcullisError('PCL_ERR_CONFIG', messages.join('\n'));
  }
  return resolveConfig(result.data, file);
}

function resolveConfig(p: Parsed, file: string): Config {
  const base = dirname(file);
  const abs = (x: string): string => (isAbsolute(x) ? x : resolve(base, x));
  return {
    file,
    listen: p.listen,
    tls: p.tls === false ? null : { cert: abs(p.tls.cert), key: abs(p.tls.key), minVersion: p.tls.minVersion },
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
      failureWindowMs: p.auth.failureWindow,
    },
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

/** `limits.maxBodySize` -> `PORTCULLIS_LIMITS_MAX_BODY_SIZE`. */
export function envName(keyPath: readonly string[]): string {
  return ENV_PREFIX + keyPath.map((k) => k.replace(/([a-z0-9])([A-Z])/g, '$1_$2').toUpperCase()).join('_');
}

/** Every leaf key path of the schema, for env overrides and docs. */
export function configKeyPaths(): string[][] {
  const out: string[][] = [];
  const walk = (schema: z.ZodType, path: string[]): void => {
    const inner = unwrap(schema);
    if (inner instanceof z.ZodObject) {
      for (const [k, v] of Object.entries(inner.shape as Record<string, z.ZodType>)) walk(v, [...path, k]);
      return;
    }
    if (inner instanceof z.ZodUnion) {
      const objects = (inner.options as z.ZodType[]).map(unwrap).filter((o) => o instanceof z.ZodObject);
      if (objects.length > 0) {
        out.push(path); // the whole value (tls: false)
        for (const o of objects) walk(o, path);
        return;
      }
    }
    out.push(path);
  };
  walk(configSchema, []);
  return out;
}

function unwrap(schema: z.ZodType): z.ZodType {
  let s: z.ZodType = schema;
  for (;;) {
    if (s instanceof z.ZodDefault || s instanceof z.ZodPrefault || s instanceof z.ZodOptional) s = s.unwrap() as z.ZodType;
    else if (s instanceof z.ZodPipe) s = s.in as z.ZodType;
    else return s;
  }
}

/** Writes env overrides into the document; returns key path -> env var name, for error messages. */
function applyEnvOverrides(doc: Document, env: NodeJS.ProcessEnv): Map<string, string> {
  const sources = new Map<string, string>();
  for (const path of configKeyPaths()) {
    const name = envName(path);
    let raw = env[name];
    let source = name;
    const fileVar = env[`${name}_FILE`];
    if (raw === undefined && fileVar !== undefined) {
      try {
        raw = readFileSync(fileVar, 'utf8').replace(/\r?\n$/, '');
      } catch (err) {
        throw new PortcullisError('PCL_ERR_CONFIG_IO', `${name}_FILE: cannot read ${fileVar}: ${(err as Error).message}`);
      }
      source = `${name}_FILE`;
    }
    if (raw === undefined) continue;
    let value: unknown = raw;
    try {
      value = parseYamlScalar(raw);
    } catch {
      /* not YAML: keep the string as is */
    }
    if (value === null) value = raw;
    if (doc.contents === null) doc.contents = doc.createNode({}) as never;
    doc.setIn(path, value);
    sources.set(path.join('.'), source);
  }
  return sources;
}

function where(doc: Document, lc: LineCounter, file: string, envSources: Map<string, string>, path: string[]): string {
  for (let n = path.length; n >= 0; n--) {
    const env = envSources.get(path.slice(0, n).join('.'));
    if (env) return `${env}: `;
  }
  for (let n = path.length; n > 0; n--) {
    const line = lineOf(doc, lc, path.slice(0, n), n === path.length);
    if (line !== null) return `${file}:${line}: `;
  }
  return `${file}: `;
}

/** The line of a key (for unknown keys and missing values) or of its value. */
function lineOf(doc: Document, lc: LineCounter, path: string[], wantKey: boolean): number | null {
  const parent = path.length > 1 ? doc.getIn(path.slice(0, -1), true) : doc.contents;
  if (isMap(parent)) {
    const pair = parent.items.find((it) => isScalar(it.key) && String(it.key.value) === path[path.length - 1]);
    const node = (wantKey ? pair?.key : (pair?.value ?? pair?.key)) as Node | undefined;
    if (node?.range) return lc.linePos(node.range[0]).line;
  }
  return null;
}

/**
 * A union (`tls: false | {cert, key}`) fails as one vague "Invalid input". Report instead the issues of the
 * branch that got furthest: the one whose issues are not a type mismatch at the union itself.
 */
function flattenIssues(issues: readonly z.core.$ZodIssue[], prefix: PropertyKey[] = []): z.core.$ZodIssue[] {
  return issues.flatMap((issue) => {
    const path = [...prefix, ...issue.path];
    if (issue.code !== 'invalid_union' || issue.errors.length === 0) return [{ ...issue, path }];
    const deeper = issue.errors.find((branch) => branch.some((i) => i.path.length > 0 || i.code === 'custom'));
    if (!deeper) return [{ ...issue, path }];
    return flattenIssues(deeper, path);
  });
}

function firstLine(s: string): string {
  return s.split('\n')[0] ?? s;
}

/**
 * The effective config in the file's own terms (defaults and environment applied, paths absolute, secrets
 * redacted): what `check-config` prints and a reload logs. It loads back as a proxy.yaml.
 */
export function effectiveConfig(c: Config): Record<string, unknown> {
  const url = new URL(c.upstream.url.href);
  if (url.username || url.password) {
    url.username = 'redacted';
    url.password = '';
  }
  const size = (n: number): string | number => (formatSize(n).endsWith('bytes') ? n : formatSize(n));
  return {
    listen: `${c.listen.host.includes(':') ? `[${c.listen.host}]` : c.listen.host}:${c.listen.port}`,
    tls: c.tls ?? false,
    upstream: {
      url: url.origin === 'null' ? url.href : url.href.replace(/\/$/, ''),
      ...(c.upstream.aliases.length > 0 ? { aliases: c.upstream.aliases } : {}),
      ...(c.upstream.ca ? { ca: c.upstream.ca } : {}),
      timeout: formatDuration(c.upstream.timeoutMs),
      maxSockets: c.upstream.maxSockets,
    },
    auth: {
      htpasswd: c.auth.htpasswd,
      realm: c.auth.realm,
      cacheTtl: formatDuration(c.auth.cacheTtlMs),
      cacheSize: c.auth.cacheSize,
      maxFailures: c.auth.maxFailures,
      failureWindow: formatDuration(c.auth.failureWindowMs),
    },
    limits: {
      maxBodySize: size(c.limits.maxBodySize),
      headersTimeout: formatDuration(c.limits.headersTimeoutMs),
      keepAliveTimeout: formatDuration(c.limits.keepAliveTimeoutMs),
      maxHeaderSize: size(c.limits.maxHeaderSize),
    },
    ...(c.metrics ? { metrics: { listen: `${c.metrics.host.includes(':') ? `[${c.metrics.host}]` : c.metrics.host}:${c.metrics.port}` } } : {}),
    log: c.log,
    workers: c.workers,
    shutdown: { gracePeriod: formatDuration(c.shutdown.gracePeriodMs) },
  };
}
