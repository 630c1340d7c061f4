/**
 * A real CNCF distribution 2.8 registry (`docker-registry serve`, the same code as the registry:2 image)
 * on 127.0.0.1, plain HTTP (or HTTPS with `tls`), no auth (unless asked), filesystem storage in a temp dir.
 *
 * Config keys that matter here (distribution 2.8):
 * - `http.host`: when set, every Location the registry builds is absolute with THIS origin. Without it the
 *   registry still builds ABSOLUTE Locations, from the request's Host header (or X-Forwarded-Proto /
 *   X-Forwarded-Host when present) — a proxy has to forward those or rewrite Locations.
 * - `http.relativeurls: true` makes Locations relative instead.
 * - `log.accesslog.disabled: true` silences the per-request access log, which is written regardless of
 *   `log.level`.
 * - `storage.delete.enabled: true` is needed for DELETE of manifests/blobs (otherwise 405 UNSUPPORTED).
 * - `http.secret` signs the `_state` of upload URLs; fixed so uploads survive a restart.
 * The registry exits at once on SIGTERM (no drain by default).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { request as httpRequest, type IncomingMessage } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { join } from 'node:path';
import { freePort, makeTempDir, removeTempDir, sleep, TailBuffer, terminate, track } from './proc.js';

export { freePort } from './proc.js';

export const REGISTRY_BIN = process.env['PORTCULLIS_TEST_REGISTRY_BIN'] ?? 'docker-registry';

export interface RegistryOptions {
  /** Value for `http.host`, e.g. "http://127.0.0.1:PORT": the registry then builds absolute Locations with it. */
  host?: string;
  /** Listen port (default: a free one). */
  port?: number;
  /** `http.relativeurls`: Locations without scheme and host. Default false, as in registry:2. */
  relativeUrls?: boolean;
  /** `auth.htpasswd.path`: the registry itself asks for Basic credentials (realm "test") from this file. */
  htpasswd?: string;
  /** Time allowed for `GET /v2/` to answer 200 (401 with `htpasswd`) after the spawn. Default 15 s. */
  readyTimeoutMs?: number;
  /** `storage.filesystem.rootdirectory` (e.g. a small tmpfs); created if missing, never removed. Default: in the temp dir. */
  dataDir?: string;
  /** `http.tls`: the registry serves HTTPS itself with this certificate (chain) and key, as some guides set it up. */
  tls?: { certificate: string; key: string };
}

export interface RunningRegistry {
  /** "http://127.0.0.1:PORT" (https:// with `tls`; no trailing slash). */
  url: string;
  port: number;
  /** "127.0.0.1:PORT", the form image references use. */
  hostPort: string;
  /** storage.filesystem.rootdirectory. Survives stop()/restart(); removed by close() or at process exit. */
  dataDir: string;
  /** The generated config file. */
  configFile: string;
  /** SIGTERM, then SIGKILL after 5 s. Keeps the data. Idempotent. */
  stop(): Promise<void>;
  /** Start again on the SAME port with the same data and config (stopping first if it runs). */
  restart(): Promise<void>;
  /** stop() and delete the temp dir (config + data). */
  close(): Promise<void>;
  /** Everything the registry wrote on stdout/stderr across all its runs (last 256 KiB). */
  output(): string;
  /** Whether the process is running now. */
  running(): boolean;
  /** Send a signal to the running process (SIGKILL mid-transfer, SIGSTOP/SIGCONT); false when none runs. */
  signal(sig: NodeJS.Signals): boolean;
}

export async function startRegistry(opts: RegistryOptions = {}): Promise<RunningRegistry> {
  const dir = makeTempDir('portcullis-registry-');
  const dataDir = opts.dataDir ?? join(dir, 'data');
  mkdirSync(dataDir, { recursive: true });
  const configFile = join(dir, 'config.yml');
  const out = new TailBuffer();
  const readyTimeoutMs = opts.readyTimeoutMs ?? 15_000;
  const readyStatus = opts.htpasswd === undefined ? 200 : 401;
  const scheme = opts.tls === undefined ? 'http' : 'https';

  let port = opts.port ?? (await freePort());
  let child: ChildProcess | null = null;

  const writeConfig = (): void => {
    // JSON is YAML: no quoting questions for paths or hosts.
    const config = {
      version: 0.1,
      log: { level: 'warn', accesslog: { disabled: true } },
      storage: {
        filesystem: { rootdirectory: dataDir },
        delete: { enabled: true },
        maintenance: { uploadpurging: { enabled: false } },
      },
      http: {
        addr: `127.0.0.1:${port}`,
        secret: 'portcullis-test-http-secret',
        ...(opts.host !== undefined ? { host: opts.host } : {}),
        ...(opts.relativeUrls !== undefined ? { relativeurls: opts.relativeUrls } : {}),
        ...(opts.tls !== undefined ? { tls: { certificate: opts.tls.certificate, key: opts.tls.key } } : {}),
      },
      ...(opts.htpasswd !== undefined ? { auth: { htpasswd: { realm: 'test', path: opts.htpasswd } } } : {}),
    };
    writeFileSync(configFile, JSON.stringify(config, null, 2) + '\n');
  };

  /** Spawn and wait for 200 on /v2/. Rejects with the registry output if it exits or never gets ready. */
  const launch = async (): Promise<void> => {
    const proc = spawn(REGISTRY_BIN, ['serve', configFile], { stdio: ['ignore', 'pipe', 'pipe'] });
    track(proc);
    child = proc;
    proc.stdout?.on('data', (b: Buffer) => out.push(b));
    proc.stderr?.on('data', (b: Buffer) => out.push(b));
    const state: { exited: string | null } = { exited: null };
    proc.once('error', (e) => {
      state.exited = `cannot start ${REGISTRY_BIN}: ${e.message}`;
    });
    proc.once('exit', (code, signal) => {
      state.exited = `registry exited (${code ?? signal}) before it was ready`;
    });
    const deadline = Date.now() + readyTimeoutMs;
    for (;;) {
      if (state.exited !== null) throw new Error(`${state.exited}\n--- registry output ---\n${out.toString()}`);
      if ((await probe(`${scheme}://127.0.0.1:${port}/v2/`)) === readyStatus) return;
      if (Date.now() > deadline) {
        await terminate(proc, 'SIGKILL');
        throw new Error(`registry not ready on port ${port} after ${readyTimeoutMs} ms\n--- registry output ---\n${out.toString()}`);
      }
      await sleep(50);
    }
  };

  const isAddrInUse = (e: unknown): boolean => e instanceof Error && /address already in use/i.test(e.message);

  const killed = new WeakSet<ChildProcess>();
  const stop = async (): Promise<void> => {
    const c = child;
    child = null;
    if (c) await terminate(c, 'SIGTERM', 5000);
  };

  // First start: if someone took the free port in between, pick another (only when the caller did not fix it).
  for (let attempt = 0; ; attempt++) {
    writeConfig();
    try {
      await launch();
      break;
    } catch (e) {
      await stop();
      if (opts.port === undefined && attempt < 5 && isAddrInUse(e)) {
        port = await freePort();
        continue;
      }
      removeTempDir(dir);
      throw e;
    }
  }

  return {
    url: `${scheme}://127.0.0.1:${port}`,
    port,
    hostPort: `127.0.0.1:${port}`,
    dataDir,
    configFile,
    stop,
    async restart() {
      await stop();
      // The port must stay the same; if a test left something on it for a moment, retry for a few seconds.
      for (let attempt = 0; ; attempt++) {
        try {
          await launch();
          return;
        } catch (e) {
          await stop();
          if (attempt < 20 && isAddrInUse(e)) {
            await sleep(250);
            continue;
          }
          throw e;
        }
      }
    },
    async close() {
      await stop();
      removeTempDir(dir);
    },
    output: () => out.toString(),
    // A SIGKILLed child counts as gone at once: its 'exit' may not have been seen yet (a busy machine), and
    // a caller asking whether to restart it must not be told it still runs.
    running: () => child !== null && child.exitCode === null && child.signalCode === null && !killed.has(child),
    signal: (sig) => {
      const c: ChildProcess | null = child;
      if (c === null || c.exitCode !== null || c.signalCode !== null || killed.has(c)) return false;
      const sent = c.kill(sig);
      if (sent && sig === 'SIGKILL') killed.add(c);
      return sent;
    },
  };
}

/** Status of a GET, or 0 when nothing answers. Readiness only: an https registry's certificate is not checked here. */
function probe(url: string): Promise<number> {
  return new Promise((resolve) => {
    const onResponse = (res: IncomingMessage): void => {
      res.resume();
      resolve(res.statusCode ?? 0);
    };
    const req = url.startsWith('https:')
      ? httpsRequest(url, { agent: false, timeout: 1000, rejectUnauthorized: false }, onResponse)
      : httpRequest(url, { agent: false, timeout: 1000 }, onResponse);
    req.once('timeout', () => req.destroy());
    req.once('error', () => resolve(0));
    req.end();
  });
}
