/**
 * The effective configuration in the file's own terms (defaults and environment applied, paths absolute,
 * secrets redacted): what `check-config` prints and a reload logs. It loads back as a proxy.yaml.
 */
import type { Config } from './schema.js';
import { formatDuration, formatSize } from './units.js';

export function effectiveConfig(c: Config): Record<string, unknown> {
  const url = new URL(c.upstream.url.href);
  if (url.username || url.password) {
    url.username = 'redacted';
    url.password = '';
  }
  const size = (n: number): string | number => (formatSize(n).endsWith('bytes') ? n : formatSize(n));
  return {
    listen: `${c.listen.host.includes(':') ? `[${c.listen.host}]` : c.listen.host}:${c.listen.port}`,
    tls: c.tls
      ? {
          cert: c.tls.cert,
          key: c.tls.key,
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
    ...(c.metrics ? { metrics: { listen: `${c.metrics.host.includes(':') ? `[${c.metrics.host}]` : c.metrics.host}:${c.metrics.port}` } } : {}),
    log: c.log,
    workers: c.workers,
    shutdown: { gracePeriod: formatDuration(c.shutdown.gracePeriodMs) },
  };
}
