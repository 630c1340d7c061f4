/**
 * The effective configuration in the file's own terms (defaults and environment applied, paths absolute,
 * secrets redacted): what `check-config` prints and a reload logs. It loads back as a proxy.yaml.
 */
import type { AcmeConfig, Config } from './schema.js';
import { formatDuration, formatSize } from './units.js';

export function effectiveConfig(c: Config): Record<string, unknown> {
  const url = new URL(c.upstream.url.href);
  if (url.username || url.password) {
    url.username = 'redacted';
    url.password = '';
  }
  const size = (n: number): string | number => (formatSize(n).endsWith('bytes') ? n : formatSize(n));
  return {
    listen: hostPort(c.listen),
    tls: c.tls
      ? {
          ...(c.tls.acme ? { acme: effectiveAcme(c.tls.acme) } : { cert: c.tls.cert, key: c.tls.key }),
          minVersion: c.tls.minVersion,
          ...(c.tls.clientCA ? { clientCA: c.tls.clientCA, clientAuth: c.tls.clientAuth } : {}),
        }
      : false,
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
      maxFailuresPerAddress: c.auth.maxFailuresPerAddress,
      failureWindow: formatDuration(c.auth.failureWindowMs),
      clientCertificate: c.auth.clientCertificate,
    },
    ...(c.access ? { access: c.access } : {}),
    ...(c.audit.file ? { audit: { file: c.audit.file } } : {}),
    limits: {
      maxBodySize: size(c.limits.maxBodySize),
      headersTimeout: formatDuration(c.limits.headersTimeoutMs),
      keepAliveTimeout: formatDuration(c.limits.keepAliveTimeoutMs),
      maxHeaderSize: size(c.limits.maxHeaderSize),
    },
    ...(c.metrics ? { metrics: { listen: hostPort(c.metrics) } } : {}),
    log: c.log,
    workers: c.workers,
    shutdown: { gracePeriod: formatDuration(c.shutdown.gracePeriodMs) },
  };
}

/** `tls.acme` in the file's terms (the served cert and key are implied by `storage`). */
function effectiveAcme(a: AcmeConfig): Record<string, unknown> {
  return {
    email: a.email,
    domains: [...a.domains],
    directory: a.directory,
    challenge: a.challenge,
    storage: a.storage,
    ...(a.ca ? { ca: a.ca } : {}),
    ...(a.httpListen ? { httpListen: hostPort(a.httpListen) } : {}),
    httpsPort: a.httpsPort,
  };
}

function hostPort(hp: { host: string; port: number }): string {
  return `${hp.host.includes(':') ? `[${hp.host}]` : hp.host}:${hp.port}`;
}
