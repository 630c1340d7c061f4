/**
 * The things under test, each on its own free port in front of the same registry:
 * - registry: distribution 2.8 itself, plain HTTP, no auth (the ceiling);
 * - portcullis: the built proxy (dist/cli/main.js), one process, as an operator runs it;
 * - nginx: the distribution project's recipe (anchors/nginx.conf.template), one worker;
 * - caddy: Caddy 2.6 with basicauth + reverse_proxy (anchors/Caddyfile.template);
 * - node-pipe: a dozen lines of plain Node (https server piping to http.request), no auth. Not a product:
 *   it shows what Node itself manages on this machine, so a gap to nginx can be split into "Node" and "us".
 */
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

export type TargetId = 'registry' | 'portcullis' | 'nginx' | 'caddy' | 'node-pipe';

export interface Target {
  id: TargetId;
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
  stop(): Promise<void>;
}

function target(id: TargetId, port: number, tls: boolean, auth: boolean, service: Service): Target {
  const host = tls ? 'localhost' : '127.0.0.1';
  return {
    id,
    origin: `${tls ? 'https' : 'http'}://${host}:${port}`,
    port,
    hostPort: `${host}:${port}`,
    tls,
    auth,
    service,
    pids: () => groupPids(service.pgid),
    stop: () => service.stop(),
  };
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
  tls: boolean;
  auth: boolean;
  /** Status GET /v2/ answers once it is ready (401 behind auth). */
  readyStatus: number;
  ca: Buffer | null;
  start(port: number): Service;
  /** Extra text for a start-up failure (e.g. nginx's error log). */
  diagnostics?: () => string;
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
      if (status === l.readyStatus) return target(l.id, port, l.tls, l.auth, service);
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

/** The built proxy, one process, access log off (log level warn). */
export async function startPortcullis(dir: string, { registry, certs, creds }: ProxyInputs): Promise<Target> {
  const cli = join(REPO_ROOT, 'dist', 'cli', 'main.js');
  if (!existsSync(cli)) throw new Error(`${cli} is missing: run "npm run build" (npm run bench does)`);
  writeDir(dir);
  const configFile = join(dir, 'proxy.yaml');
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('PORTCULLIS_')) env[k] = v;
  return launch({
    id: 'portcullis',
    tls: true,
    auth: true,
    readyStatus: 401,
    ca: readFileSync(certs.caFile),
    start: (port) => {
      const config = {
        listen: `127.0.0.1:${port}`,
        tls: { cert: certs.certFile, key: certs.keyFile },
        upstream: { url: registry.origin },
        auth: { htpasswd: creds.htpasswdFile, realm: 'Registry Realm' },
        limits: { maxBodySize: 0 },
        log: { level: 'warn' },
      };
      writeFileSync(configFile, JSON.stringify(config, null, 2));
      // As the Dockerfile runs it: the GC flags of this Node major on the command line.
      return startService(process.execPath, [...gcFlagsFor(), cli, 'serve', '--config', configFile], { cwd: dir, env });
    },
  });
}

function fill(template: string, values: Record<string, string>): string {
  let text = readFileSync(join(ANCHORS, template), 'utf8');
  for (const [k, v] of Object.entries(values)) text = text.split(`@${k}@`).join(v);
  const left = /@[A-Z_0-9]+@/.exec(text);
  if (left) throw new Error(`${template}: placeholder ${left[0]} not filled`);
  return text;
}

/** The distribution project's nginx recipe, verbatim but for the placeholders. */
export async function startNginx(dir: string, { registry, certs, creds }: ProxyInputs): Promise<Target> {
  writeDir(dir);
  const configFile = join(dir, 'nginx.conf');
  return launch({
    id: 'nginx',
    tls: true,
    auth: true,
    readyStatus: 401,
    ca: readFileSync(certs.caFile),
    start: (port) => {
      writeFileSync(
        configFile,
        fill('nginx.conf.template', {
          PORT: String(port),
          UPSTREAM: registry.hostPort,
          CERT: certs.certFile,
          KEY: certs.keyFile,
          HTPASSWD: creds.htpasswdFile,
          DIR: dir,
        }),
      );
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

/** The plain-Node reference pipe (no auth). */
export async function startNodePipe({ registry, certs }: Omit<ProxyInputs, 'creds'>): Promise<Target> {
  return launch({
    id: 'node-pipe',
    tls: true,
    auth: false,
    readyStatus: 200,
    ca: readFileSync(certs.caFile),
    start: (port) =>
      startService(process.execPath, ['--import', 'tsx', NODE_PIPE, String(port), String(registry.port), certs.certFile, certs.keyFile], {
        cwd: REPO_ROOT,
      }),
  });
}
