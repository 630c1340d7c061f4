/**
 * What a request needs, built from the config: the authenticator and the forwarder. Replaced as a whole
 * on reload, so one request never sees half of two configs; unchanged parts are carried over.
 */
import { readFileSync } from 'node:fs';
import { Authenticator } from '../auth/authenticator.js';
import type { Config } from '../config/schema.js';
import type { Logger } from '../ops/log.js';
import type { Metrics } from '../ops/metrics.js';
import { AuditLog } from '../ops/audit.js';
import { Forwarder } from '../proxy/forwarder.js';
import { authenticatedOnly } from '../access/policy.js';
import { AccessRules } from '../access/rules.js';
import type { Services } from '../http/pipeline.js';
import { Router } from '../http/router.js';

/**
 * The services for `config`. Parts whose settings did not change since `previous` are kept: an unchanged
 * Authenticator keeps its credential cache, an unchanged Forwarder its upstream connections.
 */
export async function buildServices(config: Config, previous: Services | null, logger: Logger, metrics: Metrics): Promise<Services> {
  const authenticator =
    previous && sameAuth(previous.config, config)
      ? previous.authenticator
      : await Authenticator.open({
          htpasswdPath: config.auth.htpasswd,
          cacheTtlMs: config.auth.cacheTtlMs,
          cacheSize: config.auth.cacheSize,
          throttle: {
            maxFailures: config.auth.maxFailures,
            maxFailuresPerAddress: config.auth.maxFailuresPerAddress,
            windowMs: config.auth.failureWindowMs,
          },
          logger,
          onReload: (result) => metrics.reloads.inc({ kind: 'htpasswd', result }),
        });
  const forwarder =
    previous && sameUpstream(previous.config, config)
      ? previous.forwarder
      : new Forwarder({
          upstream: config.upstream.url,
          ca: config.upstream.ca ? readFileSync(config.upstream.ca) : null,
          timeoutMs: config.upstream.timeoutMs,
          maxSockets: config.upstream.maxSockets,
          logger,
        });
  const authorizer = config.access ? new AccessRules(config.access) : authenticatedOnly;
  const audit = previous && previous.audit.file === config.audit.file ? previous.audit : new AuditLog(logger, config.audit.file);
  return { config, authenticator, authorizer, forwarder, router: new Router(), audit };
}

/**
 * The Authenticator depends on these settings only: a reload that changes anything else (the realm, say,
 * which only the challenge uses) keeps it, and with it the credential cache.
 */
function sameAuth(a: Config, b: Config): boolean {
  const key = (c: Config): string =>
    JSON.stringify([c.auth.htpasswd, c.auth.cacheTtlMs, c.auth.cacheSize, c.auth.maxFailures, c.auth.maxFailuresPerAddress, c.auth.failureWindowMs]);
  return key(a) === key(b);
}

function sameUpstream(a: Config, b: Config): boolean {
  return JSON.stringify(a.upstream) === JSON.stringify(b.upstream);
}

/** Close the replaced parts once requests that started with them have had time to finish. */
export function retire(old: Services, current: Services, afterMs: number): void {
  const authenticator = old.authenticator === current.authenticator ? null : old.authenticator;
  const forwarder = old.forwarder === current.forwarder ? null : old.forwarder;
  const audit = old.audit === current.audit ? null : old.audit;
  // The old authenticator stops following the file now (one change = one reload), but keeps answering
  // the checks already running.
  authenticator?.stopFollowing();
  setTimeout(() => {
    void authenticator?.close();
    forwarder?.close();
    void audit?.close();
  }, afterMs).unref();
}
