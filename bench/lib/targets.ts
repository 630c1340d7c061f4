/**
 * The things under test, each on its own free port in front of the same registry:
 * - registry: distribution 2.8 itself, plain HTTP, no auth (the ceiling);
 * - portcullis: the built proxy (dist/cli/main.js), as an operator runs it (the GC flags of its Node major
 *   on the command line, as the Dockerfile does), one process or `workers: auto`; with --node on another
 *   Node binary, with --baseline from another checkout's build;
 * - nginx: the distribution project's recipe (anchors/nginx.conf.template), one worker or `auto`;
 * - caddy: Caddy 2.6 with basicauth + reverse_proxy (anchors/Caddyfile.template);
 * - node-pipe: a dozen lines of plain Node (https server piping to http.request), no auth. Not a product:
 *   it shows what Node's own HTTP client and server manage on this machine.
 * Every proxy can be started afresh for each measured run (a fresh process per run: GC behaviour and JIT
 * state differ between processes).
 */
import { execFileSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { request as httpRequest } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { gcFlagsFor } from '../../src/runtime/node-flags.js';
import { freePort, groupPids, sleep, startService, tail, type Service } from './proc.js';
import type { Certs, Credentials } from './setup.js';

export const REPO_ROOT = fileURLToPath(new URL('../../', import.meta.url));
const ANCHORS = fileURLToPath(new URL('../anchors/', import.meta.url));
const NODE_PIPE = fileURLToPath(new URL('../node-pipe.ts', import.meta.url));

export type TargetKind = 'registry' | 'portcullis' | 'nginx' | 'caddy' | 'node-pipe';
/** `portcullis`, `portcullis-node24`, `portcullis-base`, `portcullis-auto`, `nginx-auto`... */
export type TargetId = string;

/** Garbage collections of a Node target so far: full mark-compacts and scavenges. */
export interface GcCounts {
  major: number;
  minor: number;
}

export interface Target {
  id: TargetId;
  kind: TargetKind;
  /** What clients use: http://127.0.0.1:PORT for the registry, https://localhost:PORT for the others. */
  origin: string;
  port: number;
  /** "localhost:PORT" / "127.0.0.1:PORT", for image references. */
  hostPort: string;
  tls: boolean;
  /** Asks for credentials. */
  auth: boolean;
  service: Service;
  /** Live pids of the target (all processes of its group). */
  pids(): number[];
  /** GC counts so far (summed over workers), or null for a target that is not a Node process we can ask. */
  gc(): Promise<GcCounts | null>;
  stop(): Promise<void>;
}

function target(id: TargetId, kind: TargetKind, port: number, tls: boolean, auth: boolean, service: Service, gc: () => Promise<GcCounts | null> = async () => null): Target {
  const host = tls ? 'localhost' : '127.0.0.1';
  return {
    id,
    kind,
    origin: `${tls ? 'https' : 'http'}://${host}:${port}`,
    port,
    hostPort: `${host}:${port}`,
    tls,
    auth,
    service,
    pids: () => groupPids(service.pgid),
    gc,
    stop: () => service.stop(),
  };
}

/** GET a small plain-HTTP document from 127.0.0.1. */
function fetchLocal(port: number, path: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const req = httpRequest({ host: '127.0.0.1', port, path, agent: false, timeout: 10_000 }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (s: string) => (body += s));
      res.once('end', () => resolve(body));
      res.once('error', reject);
    });
    req.once('timeout', () => req.destroy(new Error(`GET ${path}: timeout`)));
    req.once('error', reject);
    req.end();
  });
}

/**
 * portcullis_gc_total from the proxy's metrics listener (the primary sums its workers'). A build from before
 * that counter (--baseline) has only prom-client's histogram, which misses GCs that come in bursts.
 */
async function portcullisGc(metricsPort: number): Promise<GcCounts> {
  const text = await fetchLocal(metricsPort, '/metrics');
  const count = (name: string, kind: string): number | null => {
    const m = new RegExp(`^${name}\\{kind="${kind}"\\} (\\S+)$`, 'm').exec(text);
    return m ? Number(m[1]) : null;
  };
  const exact = count('portcullis_gc_total', 'major');
  if (exact !== null) return { major: exact, minor: count('portcullis_gc_total', 'minor') ?? NaN };
  return { major: count('portcullis_nodejs_gc_duration_seconds_count', 'major') ?? NaN, minor: count('portcullis_nodejs_gc_duration_seconds_count', 'minor') ?? NaN };
}

/** The major version of a Node binary. */
export function nodeMajorOf(bin: string): number {
  return Number(execFileSync(bin, ['-p', 'process.versions.node.split(".")[0]'], { encoding: 'utf8' }).trim());
}

/** Status of GET /v2/ on 127.0.0.1:port (Host and SNI localhost for TLS), or 0 if nothing answers. */
export function probe(port: number, tls: boolean, ca: Buffer | null): Promise<number> {
  return new Promise((resolve) => {
    const options = {
      host: '127.0.0.1',
      port,
      path: '/v2/',
      method: 'GET',
      agent: false as const,
      timeout: 2000,
      headers: { host: `${tls ? 'localhost' : '127.0.0.1'}:${port}` },
      ...(tls ? { servername: 'localhost', ca: ca ?? undefined } : {}),
    };
    const req = (tls ? httpsRequest : httpRequest)(options, (res) => {
      res.resume();
      resolve(res.statusCode ?? 0);
    });
    req.once('timeout', () => req.destroy());
    req.once('error', () => resolve(0));
    req.end();
  });
}

interface Launch {
  id: TargetId;
  kind: TargetKind;
  tls: boolean;
  auth: boolean;
  /** Status GET /v2/ answers once it is ready (401 behind auth). */
  readyStatus: number;
  ca: Buffer | null;
  start(port: number): Service;
  /** Extra text for a start-up failure (e.g. nginx's error log). */
  diagnostics?: () => string;
  gc?: () => Promise<GcCounts | null>;
}

/** Start on a free port and wait until /v2/ answers as expected; another port if that one was taken meanwhile. */
async function launch(l: Launch, readyMs = 20_000): Promise<Target> {
  let lastError = '';
  for (let attempt = 0; attempt < 4; attempt++) {
    const port = await freePort();
    const service = l.start(port);
    let exited = false;
    void service.exited.then(() => {
      exited = true;
    });
    const deadline = Date.now() + readyMs;
    let status = 0;
    while (!exited && Date.now() < deadline) {
      status = await probe(port, l.tls, l.ca);
      if (status === l.readyStatus) return target(l.id, l.kind, port, l.tls, l.auth, service, l.gc);
      await sleep(100);
    }
    await service.stop(2000);
    const extra = l.diagnostics?.() ?? '';
    lastError = `${l.id} ${exited ? 'exited' : `not ready (GET /v2/ -> ${status})`} on port ${port}\n${tail(service.output() + extra, 3000)}`;
    if (!/address already in use|bind/i.test(lastError)) break;
  }
  throw new Error(lastError);
}

function writeDir(dir: string): string {
  mkdirSync(dir, { recursive: true });
  chmodSync(dir, 0o755);
  return dir;
}

export async function startRegistry(dir: string): Promise<Target> {
  writeDir(dir);
  const data = writeDir(join(dir, 'data'));
  const configFile = join(dir, 'config.yml');
  return launch({
    id: 'registry',
    kind: 'registry',
    tls: false,
    auth: false,
    readyStatus: 200,
    ca: null,
    start: (port) => {
      // JSON is YAML.
      const config = {
        version: 0.1,
        log: { level: 'warn', accesslog: { disabled: true } },
        storage: { filesystem: { rootdirectory: data }, delete: { enabled: true }, maintenance: { uploadpurging: { enabled: false } } },
        http: { addr: `127.0.0.1:${port}`, secret: 'portcullis-bench-http-secret' },
      };
      writeFileSync(configFile, JSON.stringify(config, null, 2));
      return startService('docker-registry', ['serve', configFile]);
    },
  });
}

export interface ProxyInputs {
  registry: Target;
  certs: Certs;
  creds: Credentials;
}

export interface PortcullisOptions {
  id: TargetId;
  /** Node binary; default the one running the bench. */
  node?: string;
  /** Checkout whose dist/cli/main.js to run; default this one. */
  root?: string;
  workers?: number | 'auto';
}

/** The built proxy, access log off (log level warn), a metrics listener for its GC counts. */
export async function startPortcullis(dir: string, { registry, certs, creds }: ProxyInputs, opts: PortcullisOptions): Promise<Target> {
  const cli = join(opts.root ?? REPO_ROOT, 'dist', 'cli', 'main.js');
  if (!existsSync(cli)) throw new Error(`${cli} is missing: run "npm run build" there (npm run bench builds this checkout)`);
  const node = opts.node ?? process.execPath;
  writeDir(dir);
  const configFile = join(dir, 'proxy.yaml');
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('PORTCULLIS_')) env[k] = v;
  let metricsPort = 0;
  return launch({
    id: opts.id,
    kind: 'portcullis',
    tls: true,
    auth: true,
    readyStatus: 401,
    ca: readFileSync(certs.caFile),
    start: (port) => {
      metricsPort = port + 1 <= 65535 ? port + 1 : port - 1;
      const config = {
        listen: `127.0.0.1:${port}`,
        tls: { cert: certs.certFile, key: certs.keyFile },
        upstream: { url: registry.origin },
        auth: { htpasswd: creds.htpasswdFile, realm: 'Registry Realm' },
        limits: { maxBodySize: 0 },
        metrics: { listen: `127.0.0.1:${metricsPort}` },
        log: { level: 'warn' },
        workers: opts.workers ?? 1,
      };
      writeFileSync(configFile, JSON.stringify(config, null, 2));
      // As the Dockerfile runs it: the GC flags of this Node major on the command line.
      return startService(node, [...gcFlagsFor(nodeMajorOf(node)), cli, 'serve', '--config', configFile], { cwd: dir, env });
    },
    gc: () => portcullisGc(metricsPort),
  });
}

function fill(template: string, values: Record<string, string>): string {
  let text = readFileSync(join(ANCHORS, template), 'utf8');
  for (const [k, v] of Object.entries(values)) text = text.split(`@${k}@`).join(v);
  const left = /@[A-Z_0-9]+@/.exec(text);
  if (left) throw new Error(`${template}: placeholder ${left[0]} not filled`);
  return text;
}

/**
 * The distribution project's nginx recipe, verbatim but for the placeholders; with `workers: 'auto'` the
 * one change the parallel step makes to it (worker_processes auto: one worker per core).
 */
export async function startNginx(dir: string, { registry, certs, creds }: ProxyInputs, opts: { id?: TargetId; workers?: 1 | 'auto' } = {}): Promise<Target> {
  writeDir(dir);
  const configFile = join(dir, 'nginx.conf');
  return launch({
    id: opts.id ?? 'nginx',
    kind: 'nginx',
    tls: true,
    auth: true,
    readyStatus: 401,
    ca: readFileSync(certs.caFile),
    start: (port) => {
      const text = fill('nginx.conf.template', {
        PORT: String(port),
        UPSTREAM: registry.hostPort,
        CERT: certs.certFile,
        KEY: certs.keyFile,
        HTPASSWD: creds.htpasswdFile,
        DIR: dir,
      });
      if (opts.workers === 'auto' && !text.includes('worker_processes 1;')) throw new Error('nginx.conf.template: no "worker_processes 1;" to make auto');
      writeFileSync(configFile, opts.workers === 'auto' ? text.replace('worker_processes 1;', 'worker_processes auto;') : text);
      // -e: the error log before the config is read (default /var/log/nginx/error.log).
      return startService('nginx', ['-c', configFile, '-e', join(dir, 'error.log')]);
    },
    diagnostics: () => {
      const log = join(dir, 'error.log');
      return existsSync(log) ? `\n--- error.log ---\n${readFileSync(log, 'utf8')}` : '';
    },
  });
}

/** Caddy with the anchor Caddyfile; its state folders are kept in the temp dir. */
export async function startCaddy(dir: string, { registry, certs, creds }: ProxyInputs): Promise<Target> {
  writeDir(dir);
  const configFile = join(dir, 'Caddyfile');
  const env = { ...process.env, XDG_DATA_HOME: join(dir, 'data'), XDG_CONFIG_HOME: join(dir, 'config') };
  return launch({
    id: 'caddy',
    kind: 'caddy',
    tls: true,
    auth: true,
    readyStatus: 401,
    ca: readFileSync(certs.caFile),
    start: (port) => {
      writeFileSync(
        configFile,
        fill('Caddyfile.template', {
          PORT: String(port),
          UPSTREAM: registry.hostPort,
          CERT: certs.certFile,
          KEY: certs.keyFile,
          HASH_B64: Buffer.from(creds.hash).toString('base64'),
        }),
      );
      return startService('caddy', ['run', '--config', configFile, '--adapter', 'caddyfile'], { env, cwd: dir });
    },
  });
}

/** The plain-Node reference pipe (no auth, no GC flags: plain Node). Its GC counts at /__gc. */
export async function startNodePipe({ registry, certs }: Omit<ProxyInputs, 'creds'>): Promise<Target> {
  let pipePort = 0;
  return launch({
    id: 'node-pipe',
    kind: 'node-pipe',
    gc: async () => JSON.parse(await fetchLocal(pipePort + 1, '/__gc')) as GcCounts,
    tls: true,
    auth: false,
    readyStatus: 200,
    ca: readFileSync(certs.caFile),
    start: (port) => {
      pipePort = port;
      return startService(process.execPath, ['--import', 'tsx', NODE_PIPE, String(port), String(registry.port), certs.certFile, certs.keyFile], {
        cwd: REPO_ROOT,
      });
    },
  });
}
