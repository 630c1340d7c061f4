/**
 * One certificate order, step by step, over the acme-client library (RFC 8555 section 7.4): account,
 * order, one challenge per pending authorization, finalize with a fresh key, download. Each step is
 * logged, so an operator can see where an order stopped.
 *
 * acme-client keeps its HTTP settings in one module-wide axios instance; configureAcmeHttp sets them for
 * the process (one ACME directory per process is all the proxy needs).
 */
import https from 'node:https';
import { Client, axios as acmeAxios, crypto as acmeCrypto, type Authorization } from 'acme-client';
import type { AcmeChallengeType } from '../../config/schema.js';
import { AcmeError } from '../../errors.js';

/** The slice of a pino logger the ACME modules use. */
export interface AcmeLogger {
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
  error(obj: object, msg: string): void;
  debug(obj: object, msg: string): void;
}

/** Publishes and withdraws the answer to one challenge type. */
export interface ChallengeSolver {
  readonly type: AcmeChallengeType;
  present(domain: string, token: string, keyAuthorization: string): Promise<void>;
  remove(domain: string, token: string): Promise<void>;
}

export interface AcmeHttpSettings {
  /** The directory URL; `ca` applies to its origin only. */
  directory: string;
  /** PEM CA certificate(s) to trust for the directory, on top of the system ones; null for public CAs. */
  ca: string | null;
  /** Per request. A CA that stops answering must not hang an order forever. Default 30 s. */
  timeoutMs?: number;
  /** Retries inside the library for 429/5xx/network errors (waits Retry-After or 5 s * attempt). Default 2. */
  retries?: number;
}

const agents = new Map<string, https.Agent>();
let interceptorInstalled = false;

/** Set acme-client's process-wide HTTP behaviour. Call before ordering; calling again replaces the settings. */
export function configureAcmeHttp(s: AcmeHttpSettings): void {
  const origin = new URL(s.directory).origin;
  for (const agent of agents.values()) agent.destroy();
  agents.clear();
  if (s.ca) agents.set(origin, new https.Agent({ ca: s.ca, keepAlive: true, maxSockets: 4 }));
  if (!interceptorInstalled) {
    interceptorInstalled = true;
    acmeAxios.interceptors.request.use((config) => {
      const agent = config.url ? agents.get(new URL(config.url).origin) : undefined;
      if (agent) config.httpsAgent = agent;
      return config;
    });
    // acme-client's response interceptor dereferences `error.response` once its retries are over, so a
    // refused connection or a timeout surfaces as "Cannot read properties of undefined (reading 'config')".
    // This one runs first (axios documents `handlers` as public) and turns a response-less failure into a
    // plain Error naming the request; without `config` on it, acme-client passes it through untouched, and
    // the manager's backoff does the retrying.
    const handlers = (acmeAxios.interceptors.response as { handlers?: unknown[] }).handlers;
    if (Array.isArray(handlers)) {
      handlers.unshift({ fulfilled: null, rejected: describeNetworkFailure, synchronous: false, runWhen: null });
    }
  }
  acmeAxios.defaults.timeout = s.timeoutMs ?? 30_000;
  const settings = (acmeAxios.defaults as { acmeSettings?: Record<string, number> }).acmeSettings;
  if (settings) settings['retryMaxAttempts'] = s.retries ?? 2;
}

function describeNetworkFailure(error: unknown): never {
  if (typeof error === 'object' && error !== null && 'config' in error && !('response' in error && error.response)) {
    const e = error as { message?: string; code?: string; config?: { method?: string; url?: string } };
    const what = [e.code, e.message].filter((x) => x).join(': ') || 'no response';
    throw new AcmeError(`${(e.config?.method ?? 'request').toUpperCase()} ${e.config?.url ?? ''}: ${what}`, { cause: error });
  }
  throw error;
}

export interface OrderOptions {
  directory: string;
  email: string;
  domains: readonly string[];
  accountKey: string;
  solver: ChallengeSolver;
  logger: AcmeLogger;
  /** Status polling: first wait, doubling up to 30 s, for this many attempts. Defaults 1 s and 10. */
  pollMinMs?: number;
  pollAttempts?: number;
}

/** Run one order to the end. Resolves with the PEM chain and its new key; rejects with the CA's reason. */
export async function orderCertificate(o: OrderOptions): Promise<{ cert: string; key: string }> {
  const log = o.logger;
  const ctx = { directory: o.directory, domains: o.domains };
  // A new Client per order: it caches the account URL, which a CA that lost its state (a test CA restarted,
  // a staging reset) no longer knows. newAccount with the same key is idempotent (RFC 8555 section 7.3.1).
  const client = new Client({
    directoryUrl: o.directory,
    accountKey: o.accountKey,
    backoffMin: o.pollMinMs ?? 1000,
    backoffMax: 30_000,
    backoffAttempts: o.pollAttempts ?? 10,
  });
  await client.createAccount({ termsOfServiceAgreed: true, contact: [`mailto:${o.email}`] });
  log.info({ ...ctx, account: client.getAccountUrl() }, 'acme: account ready');

  const order = await client.createOrder({ identifiers: o.domains.map((value) => ({ type: 'dns', value })) });
  log.info({ ...ctx, order: order.url, status: order.status }, 'acme: order created');

  const authorizations = await client.getAuthorizations(order);
  // One at a time: a failed authorization stops the order; the CA's answer for it is the useful error.
  for (const authz of authorizations) await authorize(client, authz, o.solver, log);

  const [key, csr] = await acmeCrypto.createCsr({ commonName: o.domains[0] ?? '', altNames: [...o.domains] }, await acmeCrypto.createPrivateEcdsaKey('P-256'));
  const finalized = await client.finalizeOrder(order, csr);
  log.info({ ...ctx, order: order.url, status: finalized.status }, 'acme: order finalized');
  const cert = await client.getCertificate(finalized);
  log.info({ ...ctx, order: order.url }, 'acme: certificate downloaded');
  return { cert, key: key.toString() };
}

async function authorize(client: Client, authz: Authorization, solver: ChallengeSolver, log: AcmeLogger): Promise<void> {
  const domain = authz.identifier.value;
  if (authz.status === 'valid') {
    // RFC 8555 section 7.1.3: a CA may reuse a valid authorization; there is nothing to prove then.
    log.info({ domain, authorization: authz.url }, 'acme: authorization already valid');
    return;
  }
  const challenge = authz.challenges.find((c) => (c.type as string) === solver.type);
  if (!challenge) {
    const offered = authz.challenges.map((c) => c.type).join(', ');
    throw new AcmeError(`the CA offers no ${solver.type} challenge for ${domain} (offered: ${offered || 'none'})`);
  }
  const keyAuthorization = await client.getChallengeKeyAuthorization(challenge);
  await solver.present(domain, challenge.token, keyAuthorization);
  let submitted = false;
  try {
    log.info({ domain, challenge: solver.type, url: challenge.url }, 'acme: challenge ready, asking the CA to validate');
    await client.completeChallenge(challenge);
    submitted = true;
    await client.waitForValidStatus(challenge);
    log.info({ domain, challenge: solver.type }, 'acme: challenge valid');
  } catch (err) {
    if (!submitted) {
      // Leave no pending authorization behind (it counts against the CA's limits).
      await client.deactivateAuthorization(authz).catch(() => undefined);
    }
    throw new AcmeError(`${solver.type} validation of ${domain} failed: ${(err as Error).message}`, { cause: err });
  } finally {
    await solver.remove(domain, challenge.token).catch((err: unknown) => {
      log.warn({ domain, err: (err as Error).message }, 'acme: could not withdraw the challenge answer');
    });
  }
}

/** A new ACME account key (ECDSA P-256, ES256 signatures). */
export async function createAccountKey(): Promise<string> {
  return (await acmeCrypto.createPrivateEcdsaKey('P-256')).toString();
}
