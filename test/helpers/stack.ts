/**
 * The end-to-end set-up most suites share: test certificates, a real registry, an htpasswd file written
 * by Apache's own tool, and the built proxy in front, plus an authenticated request function.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { request, type HttpResponse, type RequestOptions } from './clients.js';
import { describeRun, makeTempDir, run } from './proc.js';
import { startPortcullis, type RunningPortcullis, type StartPortcullisOptions } from './portcullis.js';
import { startRegistry, type RegistryOptions, type RunningRegistry } from './registry.js';
import { makeTestCerts, type TestCerts } from './tls.js';

export interface Stack {
  certs: TestCerts;
  registry: RunningRegistry;
  proxy: RunningPortcullis;
  htpasswd: string;
  /** A request to the proxy (a path, or an absolute URL such as a Location), trusting only the test CA and
   * authenticated as the first user. */
  request(target: string, opts?: RequestOptions): Promise<HttpResponse>;
  /** The same request to another proxy of this stack (one startProxy gave). */
  requestTo(proxy: RunningPortcullis, target: string, opts?: RequestOptions): Promise<HttpResponse>;
  /** Another proxy over the same registry, certificate and htpasswd (`extra` as for `proxy`); close() stops it. */
  startProxy(extra?: Record<string, unknown>, start?: StartPortcullisOptions): Promise<RunningPortcullis>;
  close(): Promise<void>;
}

export interface StackOptions {
  /** Added to the proxy's config; `upstream` and `auth` are merged with the stack's own, key by key. */
  proxy?: Record<string, unknown>;
  registry?: RegistryOptions;
  /** How the proxy process is started (e.g. a longer readyTimeoutMs). */
  start?: StartPortcullisOptions;
  /** Runs once the htpasswd file is written, before the proxy reads it (e.g. another tool adds a user). */
  beforeProxy?: (htpasswd: string) => Promise<void>;
}

/** An htpasswd file made by `htpasswd -B` (cost 5 keeps the suite fast), as operators make them. */
export async function writeHtpasswd(dir: string, users: Record<string, string>): Promise<string> {
  const file = join(dir, 'htpasswd');
  let first = true;
  for (const [user, password] of Object.entries(users)) {
    const r = await run('htpasswd', [first ? '-Bbc' : '-Bb', '-C', '5', file, user, password]);
    assert.equal(r.code, 0, describeRun('htpasswd', r));
    first = false;
  }
  return file;
}

export async function startStack(users: Record<string, string>, opts: StackOptions = {}): Promise<Stack> {
  const [certs, registry, htpasswd] = await Promise.all([
    makeTestCerts(),
    startRegistry(opts.registry),
    writeHtpasswd(makeTempDir('portcullis-e2e-'), users),
  ]);
  await opts.beforeProxy?.(htpasswd);
  const proxies: RunningPortcullis[] = [];
  const startProxy = async (extra: Record<string, unknown> = {}, start: StartPortcullisOptions = {}): Promise<RunningPortcullis> => {
    const proxy = await startPortcullis(
      {
        listen: '127.0.0.1:0',
        tls: { cert: certs.certFile, key: certs.keyFile },
        ...extra,
        upstream: { url: registry.url, ...((extra['upstream'] as object | undefined) ?? {}) },
        // Every test connects from 127.0.0.1: keep the brute-force throttle out of the way unless asked.
        auth: { htpasswd, maxFailures: 1000, maxFailuresPerAddress: 0, ...((extra['auth'] as object | undefined) ?? {}) },
      },
      start,
    );
    proxies.push(proxy);
    return proxy;
  };
  const proxy = await startProxy(opts.proxy, opts.start);
  const [user, password] = Object.entries(users)[0]!;
  const requestTo = (to: RunningPortcullis, target: string, o: RequestOptions = {}): Promise<HttpResponse> =>
    request(/^https?:\/\//.test(target) ? target : `${to.url}${target}`, { ca: certs.ca, auth: { user, password }, ...o });
  return {
    certs,
    registry,
    proxy,
    htpasswd,
    request: (target, o) => requestTo(proxy, target, o),
    requestTo,
    startProxy,
    close: async () => {
      for (const p of proxies) await p.stop();
      await registry.close();
      certs.cleanup();
    },
  };
}
