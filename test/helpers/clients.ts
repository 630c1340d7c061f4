import assert from 'node:assert/strict';
/**
 * Thin wrappers around the real registry clients (skopeo, docker CLI) and a raw HTTP(S) request helper.
 * Every call has a timeout and returns the captured stdout/stderr instead of throwing on failure, so a test
 * can assert on the exit code and print the output when it is not what it expected.
 *
 * Isolation: no wrapper reads or writes the user's credentials. skopeo gets REGISTRY_AUTH_FILE pointing at an
 * empty auth file in a temp dir; docker gets a temp DOCKER_CONFIG.
 */
import { existsSync, mkdirSync, readFileSync, rmdirSync, rmSync, writeFileSync } from 'node:fs';
import {
  request as httpRequest,
  type Agent as HttpAgent,
  type IncomingHttpHeaders,
  type IncomingMessage,
  type OutgoingHttpHeaders,
} from 'node:http';
import { request as httpsRequest, type Agent as HttpsAgent } from 'node:https';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { makeTempDir, removeTempDir, run, type RunResult } from './proc.js';
import { basic } from './wire.js';

export type { RunResult } from './proc.js';

// ---------------------------------------------------------------------------------------------- skopeo

let skopeoAuthFile: string | null = null;

/** Environment for skopeo: an empty auth file, so stored credentials on the machine never leak into a test. */
function skopeoEnv(): NodeJS.ProcessEnv {
  if (skopeoAuthFile === null) {
    const dir = makeTempDir('portcullis-skopeo-');
    skopeoAuthFile = join(dir, 'auth.json');
    writeFileSync(skopeoAuthFile, '{"auths":{}}\n');
  }
  return { ...process.env, REGISTRY_AUTH_FILE: skopeoAuthFile };
}

export interface SkopeoTransportOptions {
  /**
   * A FOLDER containing `ca.crt` (skopeo reads every `*.crt` in it as a CA, and every `X.key` needs an `X.cert`).
   * Use `TestCerts.caDir`. Passed as `--src-cert-dir`/`--dest-cert-dir`/`--cert-dir`.
   */
  certDir?: string;
  /** "user:password" (`--src-creds`/`--dest-creds`/`--creds`). */
  creds?: string;
  /**
   * `--*-tls-verify`. false = do not verify certificates AND allow plain http:// (skopeo tries https first,
   * then falls back to http). Needed for the bare registry, which speaks plain HTTP. Default: skopeo's
   * default (verify; https only).
   */
  tlsVerify?: boolean;
}

export interface SkopeoCopyOptions extends SkopeoTransportOptions {
  /** Overrides for the source side only (the plain options apply to both sides). */
  src?: SkopeoTransportOptions;
  /** Overrides for the destination side only. */
  dest?: SkopeoTransportOptions;
  /** Extra arguments placed before SRC DEST (e.g. ["--all"], ["--format", "v2s2"], ["--retry-times", "2"]). */
  extraArgs?: string[];
  /** Default 120 s. */
  timeoutMs?: number;
}

/**
 * `skopeo copy [opts] SRC DEST`. The common options (certDir, creds, tlsVerify) go to whichever side is a
 * `docker://` reference; `src`/`dest` override per side. Other transports (oci:, dir:) get no such flags.
 */
export async function skopeoCopy(src: string, dest: string, opts: SkopeoCopyOptions = {}): Promise<RunResult> {
  const args = ['copy', ...(opts.extraArgs ?? [])];
  if (src.startsWith('docker://')) args.push(...transportArgs('src', { ...pick(opts), ...opts.src }));
  if (dest.startsWith('docker://')) args.push(...transportArgs('dest', { ...pick(opts), ...opts.dest }));
  args.push(src, dest);
  return run('skopeo', args, { timeoutMs: opts.timeoutMs ?? 120_000, env: skopeoEnv() });
}

export interface SkopeoInspectOptions extends SkopeoTransportOptions {
  /** `--raw`: print the manifest exactly as served (its digest is the manifest digest). */
  raw?: boolean;
  /** `--config`: print the image config instead. */
  config?: boolean;
  extraArgs?: string[];
  /** Default 60 s. */
  timeoutMs?: number;
}

export interface SkopeoInspectResult extends RunResult {
  /** stdout parsed as JSON when the command succeeded and printed JSON; otherwise undefined. */
  json: unknown;
}

/** `skopeo inspect [opts] REF` (REF like `docker://127.0.0.1:PORT/demo/app:1` or `oci:DIR:TAG`). */
export async function skopeoInspect(ref: string, opts: SkopeoInspectOptions = {}): Promise<SkopeoInspectResult> {
  const args = ['inspect', ...(opts.extraArgs ?? [])];
  if (opts.raw) args.push('--raw');
  if (opts.config) args.push('--config');
  if (ref.startsWith('docker://')) args.push(...transportArgs('', pick(opts)));
  args.push(ref);
  const r = await run('skopeo', args, { timeoutMs: opts.timeoutMs ?? 60_000, env: skopeoEnv() });
  let json: unknown = undefined;
  if (r.code === 0) {
    try {
      json = JSON.parse(r.stdout);
    } catch {
      json = undefined;
    }
  }
  return { ...r, json };
}

/** `skopeo delete [opts] docker://REF` (the registry must have storage.delete.enabled). */
export async function skopeoDelete(ref: string, opts: SkopeoTransportOptions & { timeoutMs?: number } = {}): Promise<RunResult> {
  return run('skopeo', ['delete', ...transportArgs('', pick(opts)), ref], { timeoutMs: opts.timeoutMs ?? 60_000, env: skopeoEnv() });
}

function pick(o: SkopeoTransportOptions): SkopeoTransportOptions {
  const out: SkopeoTransportOptions = {};
  if (o.certDir !== undefined) out.certDir = o.certDir;
  if (o.creds !== undefined) out.creds = o.creds;
  if (o.tlsVerify !== undefined) out.tlsVerify = o.tlsVerify;
  return out;
}

/** side '' gives the un-prefixed flags of `inspect`/`delete` (--cert-dir, --creds, --tls-verify). */
function transportArgs(side: 'src' | 'dest' | '', o: SkopeoTransportOptions): string[] {
  const p = side === '' ? '--' : `--${side}-`;
  const args: string[] = [];
  if (o.certDir !== undefined) args.push(`${p}cert-dir`, o.certDir);
  if (o.creds !== undefined) args.push(`${p}creds`, o.creds);
  if (o.tlsVerify !== undefined) args.push(`${p}tls-verify=${o.tlsVerify}`);
  return args;
}

// ---------------------------------------------------------------------------------------------- docker

export interface DockerLoginOptions {
  /** CA to install as /etc/docker/certs.d/HOST:PORT/ca.crt for the duration of the login. */
  caFile?: string;
  /** Reuse a DOCKER_CONFIG dir (e.g. from an earlier login); default: a fresh temp dir. */
  dockerConfig?: string;
  /** Default 60 s. */
  timeoutMs?: number;
}

export interface DockerLoginResult extends RunResult {
  /** The DOCKER_CONFIG dir used; config.json in it holds the stored credentials after a success. */
  dockerConfig: string;
  /** `auths` of DOCKER_CONFIG/config.json after the command ({} when nothing was stored). */
  auths: Record<string, { auth?: string }>;
  /** Remove the certs.d entry this call created (and the temp DOCKER_CONFIG if this call created it). Idempotent. */
  cleanup(): void;
}

export const DOCKER_CERTS_D = '/etc/docker/certs.d';

/**
 * `docker login HOST:PORT -u USER --password-stdin`, without a Docker daemon.
 *
 * How this works daemonless (docker CLI 28): the CLI first asks the daemon to log in, and when it cannot
 * CONNECT to the daemon it logs in itself from the client side. To make sure we always take that path (and
 * never talk to a daemon that a developer happens to run), DOCKER_HOST points at a socket that does not exist.
 * Nothing else is needed: no flag, no daemon.json.
 *
 * Caveat for tests: the CLI treats every registry whose host resolves to 127.0.0.0/8 (127.0.0.1, localhost) as
 * an "insecure registry" (the built-in insecure CIDR). For such hosts it does NOT verify the TLS certificate
 * (a login succeeds even with no ca.crt installed), and after a failure on https:// it retries the same port
 * over plain http:// ("trying next endpoint"), so a wrong password ends with the http attempt's error (e.g.
 * `Get "http://127.0.0.1:PORT/v2/": EOF`, or a 400 from a TLS server answering plaintext) while the
 * 401 Unauthorized from https:// only appears in the info lines on stderr. The ca.crt is installed anyway
 * (it is what a real client host needs) but a loopback login test cannot prove certificate trust; use
 * skopeo or `request` with `ca` for that.
 */
export async function dockerLogin(hostPort: string, user: string, password: string, opts: DockerLoginOptions = {}): Promise<DockerLoginResult> {
  const ownConfig = opts.dockerConfig === undefined;
  const dockerConfig = opts.dockerConfig ?? makeTempDir('portcullis-docker-');
  const certsDir = join(DOCKER_CERTS_D, hostPort);
  let createdDir = false;
  let createdFile = false;
  if (opts.caFile !== undefined) {
    const target = join(certsDir, 'ca.crt');
    if (existsSync(target)) {
      throw new Error(`${target} already exists (another login in progress, or a leftover): refusing to overwrite it`);
    }
    if (!existsSync(certsDir)) {
      mkdirSync(certsDir, { recursive: true });
      createdDir = true;
    }
    writeFileSync(target, readFileSync(opts.caFile));
    createdFile = true;
  }
  let cleaned = false;
  const cleanup = (): void => {
    if (cleaned) return;
    cleaned = true;
    if (createdFile) rmSync(join(certsDir, 'ca.crt'), { force: true });
    if (createdDir) {
      try {
        rmdirSync(certsDir);
      } catch {
        /* someone put something else there: leave it */
      }
    }
    if (ownConfig) removeTempDir(dockerConfig);
  };
  try {
    const r = await run('docker', ['login', hostPort, '--username', user, '--password-stdin'], {
      input: `${password}\n`,
      timeoutMs: opts.timeoutMs ?? 60_000,
      env: dockerEnv(dockerConfig),
    });
    return { ...r, dockerConfig, auths: readAuths(dockerConfig), cleanup };
  } catch (e) {
    cleanup();
    throw e;
  }
}

/** Environment for the docker CLI: temp config, and a daemon socket that does not exist (see dockerLogin). */
export function dockerEnv(dockerConfig: string): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env, DOCKER_CONFIG: dockerConfig, DOCKER_HOST: `unix://${join(dockerConfig, 'no-daemon.sock')}` };
  delete env['DOCKER_CONTEXT'];
  delete env['DOCKER_TLS_VERIFY'];
  delete env['DOCKER_CERT_PATH'];
  return env;
}

function readAuths(dockerConfig: string): Record<string, { auth?: string }> {
  const file = join(dockerConfig, 'config.json');
  if (!existsSync(file)) return {};
  const parsed = JSON.parse(readFileSync(file, 'utf8')) as { auths?: Record<string, { auth?: string }> };
  return parsed.auths ?? {};
}

// ---------------------------------------------------------------------------------------------- raw HTTP

export interface RequestOptions {
  method?: string;
  headers?: OutgoingHttpHeaders;
  /**
   * Buffer/string: sent with Content-Length (unless you set one yourself).
   * Readable: streamed with `Transfer-Encoding: chunked` and no Content-Length (docker's PATCH shape),
   * unless you set Content-Length in `headers`.
   */
  body?: Buffer | string | Readable;
  /** CA(s) to trust for https:// (PEM contents, not a path; see `caFile`). */
  ca?: string | Buffer | Array<string | Buffer>;
  /** Path of a PEM CA file to trust for https://. */
  caFile?: string;
  /** Default true. false accepts any certificate. */
  rejectUnauthorized?: boolean;
  /** TLS SNI name (default: the URL host when it is a name). */
  servername?: string;
  /** Adds `Authorization: Basic ...`. */
  auth?: { user: string; password: string };
  /** Whole-request deadline. Default 30 s. Rejects with an Error on expiry. */
  timeoutMs?: number;
  /** Default: no agent (a fresh connection per request, closed after). Pass one to test keep-alive. */
  agent?: HttpAgent | HttpsAgent;
}

export interface HttpResponse {
  status: number;
  headers: IncomingHttpHeaders;
  /** Raw header list as received (names with their original case, repeated headers kept). */
  rawHeaders: string[];
  body: Buffer;
  text(): string;
  json(): unknown;
}

/** Append `digest=` to an upload URL without re-encoding its existing query (the signed `_state`): the closing PUT. */
export function withDigest(location: string, digest: string): string {
  return `${location}${location.includes('?') ? '&' : '?'}digest=${encodeURIComponent(digest)}`;
}

/** One HTTP(S) request with node's http/https (not fetch: it allows chunked bodies, custom CAs and any header). */
export function request(url: string | URL, opts: RequestOptions = {}): Promise<HttpResponse> {
  const u = typeof url === 'string' ? new URL(url) : url;
  const isHttps = u.protocol === 'https:';
  const headers: OutgoingHttpHeaders = { ...opts.headers };
  const hasHeader = (name: string): boolean => Object.keys(headers).some((k) => k.toLowerCase() === name);
  if (opts.auth) headers['authorization'] = basic(opts.auth.user, opts.auth.password);
  const body = typeof opts.body === 'string' ? Buffer.from(opts.body) : opts.body;
  if (Buffer.isBuffer(body) && !hasHeader('content-length') && !hasHeader('transfer-encoding')) {
    headers['content-length'] = body.length;
  }
  const ca = opts.caFile !== undefined ? readFileSync(opts.caFile) : opts.ca;
  const timeoutMs = opts.timeoutMs ?? 30_000;
  const method = opts.method ?? 'GET';

  return new Promise((resolve, reject) => {
    let done = false;
    let gotResponse = false;
    let timer: NodeJS.Timeout | undefined;
    const fail = (err: Error): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      req.destroy();
      reject(err);
    };
    const onResponse = (res: IncomingMessage): void => {
      gotResponse = true;
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('error', fail);
      res.on('close', () => {
        if (!res.complete) fail(new Error(`${method} ${u.href}: connection closed in the middle of the response`));
      });
      res.on('end', () => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        const data = Buffer.concat(chunks);
        resolve({
          status: res.statusCode ?? 0,
          headers: res.headers,
          rawHeaders: res.rawHeaders,
          body: data,
          text: () => data.toString('utf8'),
          json: (): unknown => JSON.parse(data.toString('utf8')),
        });
      });
    };
    const common = { method, headers, agent: opts.agent ?? false };
    const req = isHttps
      ? httpsRequest(
          u,
          {
            ...common,
            ...(ca !== undefined ? { ca } : {}),
            ...(opts.servername !== undefined ? { servername: opts.servername } : {}),
            rejectUnauthorized: opts.rejectUnauthorized ?? true,
          },
          onResponse,
        )
      : httpRequest(u, common, onResponse);
    timer = setTimeout(() => fail(new Error(`${method} ${u.href}: no complete response after ${timeoutMs} ms`)), timeoutMs);
    // A server may answer early (401, 413) and close while the body is still being sent: the write then fails
    // (EPIPE/ECONNRESET) but the response already received is what the test wants, so keep reading it.
    req.on('error', (e: Error) => {
      if (!gotResponse) fail(e);
    });
    if (body === undefined) req.end();
    else if (Buffer.isBuffer(body)) req.end(body);
    else {
      body.on('error', (e: Error) => fail(e));
      body.pipe(req);
    }
  });
}

/** A Readable that yields `buf` in `chunkSize` pieces (forces chunked transfer encoding in `request`). */
export function chunkedBody(buf: Buffer, chunkSize = 64 * 1024): Readable {
  let offset = 0;
  return new Readable({
    read() {
      if (offset >= buf.length) {
        this.push(null);
        return;
      }
      const end = Math.min(offset + chunkSize, buf.length);
      this.push(buf.subarray(offset, end));
      offset = end;
    },
  });
}

/** The `code`s of a registry error body (`{"errors":[{"code":...}]}`); fails if the body is not that shape. */
export function errorCodes(r: HttpResponse): string[] {
  const body = r.json() as { errors?: Array<{ code?: unknown }> };
  assert.ok(Array.isArray(body.errors), `not registry error JSON: ${r.text()}`);
  return body.errors.map((e) => String(e.code));
}
