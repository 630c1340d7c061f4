/**
 * containerd, the runtime Kubernetes nodes pull images with, driven by its own CLI `ctr`.
 *
 * `startContainerd` runs a private daemon: root, state, sockets and a generated config.toml all live in one
 * temp folder, so the machine's own containerd (if any) and /var/lib/containerd are never touched. Only what
 * pulling and pushing need is loaded: the content store, the bolt metadata store, the `native` snapshotter
 * (plain directories, so unpacking needs no special filesystem and leaves no mount behind) and the gRPC
 * services in front of them. The CRI plugin, the other snapshotters and everything that runs containers
 * (runtimes, tasks, cgroups monitor, restart manager) are disabled, so the daemon never starts a shim; the
 * `opt` plugin is disabled because it would create /opt/containerd.
 *
 * Registry trust is client-side in containerd: `ctr --hosts-dir DIR` reads `DIR/HOST:PORT/hosts.toml`
 * (`writeHostsDir`). Conventions verified with containerd 1.6:
 * - `server = "https://HOST:PORT"` must be explicit for a loopback registry: without it ctr talks plain
 *   http to 127.0.0.1/localhost and skips verification. For the same reason the Docker-style layout (a
 *   `HOST:PORT/` folder with `ca.crt`, `client.cert`, `client.key` and no hosts.toml, which ctr also reads)
 *   only works for non-loopback registries.
 * - The root-level `ca`/`client` keys configure that server. containerd before 1.7.x/2.0 rejects a
 *   hosts.toml that has no `host` table ("invalid `host` tree", containerd#10027) and silently falls back
 *   to defaults, so an empty `[host]` table is written too. Adding the same URL as a `[host."https://..."]`
 *   entry instead would make it a mirror tried before the server: every 401 would then be tried twice.
 * - Client certificates: `client = [["/path/client.crt", "/path/client.key"]]` (a single string is a PEM
 *   holding both). Relative paths are relative to the hosts.toml folder.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { readBlob, type OciImage } from './oci-image.js';
import { describeRun, makeTempDir, removeTempDir, run, sleep, TailBuffer, terminate, track, type RunResult } from './proc.js';

export const CONTAINERD_BIN = process.env['PORTCULLIS_TEST_CONTAINERD_BIN'] ?? 'containerd';
export const CTR_BIN = process.env['PORTCULLIS_TEST_CTR_BIN'] ?? 'ctr';

/** Plugins a pull/push-only daemon does not need (containerd 1.6 plugin IDs; unknown IDs are ignored). */
export const DISABLED_PLUGINS = [
  'io.containerd.grpc.v1.cri',
  'io.containerd.internal.v1.opt',
  'io.containerd.internal.v1.restart',
  'io.containerd.internal.v1.tracing',
  'io.containerd.snapshotter.v1.aufs',
  'io.containerd.snapshotter.v1.btrfs',
  'io.containerd.snapshotter.v1.devmapper',
  'io.containerd.snapshotter.v1.overlayfs',
  'io.containerd.snapshotter.v1.zfs',
  'io.containerd.runtime.v1.linux',
  'io.containerd.runtime.v2.task',
  'io.containerd.monitor.v1.cgroups',
  'io.containerd.service.v1.tasks-service',
  'io.containerd.grpc.v1.tasks',
] as const;

/** The only snapshotter left enabled. */
export const SNAPSHOTTER = 'native';

export interface ContainerdOptions {
  /** Namespace every `ctr` call uses. Default "portcullis-test". */
  namespace?: string;
  /** Time allowed for the daemon to answer `ctr version`. Default 20 s. */
  readyTimeoutMs?: number;
  /** `--log-level` of the daemon. Default "info" (its output is kept for failure messages). */
  logLevel?: string;
}

export interface CtrRegistryOptions {
  /** Folder for `--hosts-dir` (from `writeHostsDir`). Without it ctr uses its defaults (plain http for loopback). */
  hostsDir?: string;
  /** `--user USER:PASSWORD` (ctr splits at the first colon, so the password may contain colons). */
  user?: string;
  password?: string;
  /** Extra arguments before the reference. */
  extraArgs?: string[];
  /** Default 90 s. */
  timeoutMs?: number;
}

export interface CtrPullOptions extends CtrRegistryOptions {
  /** false: `ctr content fetch` (content only, no snapshot). Default true: `ctr images pull` unpacked with the native snapshotter. */
  unpack?: boolean;
}

export interface ImageRecord {
  name: string;
  mediaType: string;
  /** Digest of the manifest (or index) the image name points at. */
  digest: string;
}

export interface RunningContainerd {
  /** The temp folder holding everything below. */
  dir: string;
  root: string;
  state: string;
  /** gRPC socket (`ctr --address`). */
  address: string;
  configFile: string;
  namespace: string;
  /** `ctr --address ADDRESS --namespace NAMESPACE ARGS`. */
  ctr(args: readonly string[], timeoutMs?: number): Promise<RunResult>;
  /** `ctr images pull` (or `ctr content fetch` with `unpack: false`) of a full reference (HOST:PORT/repo:tag). */
  pull(ref: string, opts?: CtrPullOptions): Promise<RunResult>;
  /** `ctr images push REF [LOCAL]`: pushes the local image `local` (default: `ref` itself) to `ref`. */
  push(ref: string, opts?: CtrRegistryOptions & { local?: string }): Promise<RunResult>;
  /**
   * `ctr images import --base-name NAME` of an OCI layout (tarred first): the layout's tag becomes NAME:TAG.
   * Not unpacked (a push needs the content only).
   */
  importOci(image: Pick<OciImage, 'layoutDir'>, baseName: string): Promise<RunResult>;
  /** The image records (`ctr images ls`). */
  images(): Promise<ImageRecord[]>;
  /** The record of one image name, or undefined when containerd does not have it. */
  image(name: string): Promise<ImageRecord | undefined>;
  /** Path of a blob in the content store. */
  blobPath(digest: string): string;
  /** A blob from the content store, re-hashed (throws if it is missing, the wrong size, or does not match its digest). */
  readBlob(digest: string, size?: number): Buffer;
  /**
   * The unpacked root filesystem of an image (by its chain ID, printed by `ctr images pull --print-chainid`
   * or computed): a view snapshot of the native snapshotter, i.e. a plain directory inside the daemon's folder.
   */
  rootfs(chainId: string): Promise<string>;
  /** Daemon output (last 256 KiB). */
  output(): string;
  running(): boolean;
  /** SIGTERM (SIGKILL after 10 s), then end any process still naming this daemon's folder and unmount leftovers. Idempotent. */
  stop(): Promise<void>;
  /** stop() and remove the folder. */
  close(): Promise<void>;
}

/** config.toml for a private, pull/push-only daemon under `dir`. */
export function containerdConfig(dir: string): { text: string; root: string; state: string; address: string } {
  const root = join(dir, 'root');
  const state = join(dir, 'state');
  const address = join(dir, 'containerd.sock');
  const q = (s: string): string => JSON.stringify(s); // a TOML basic string is a JSON string for these paths
  const text = [
    'version = 2',
    `root = ${q(root)}`,
    `state = ${q(state)}`,
    `disabled_plugins = [${DISABLED_PLUGINS.map(q).join(', ')}]`,
    '',
    '[grpc]',
    `  address = ${q(address)}`,
    '',
    '[ttrpc]',
    `  address = ${q(join(dir, 'containerd-ttrpc.sock'))}`,
    '',
    '[debug]',
    '  address = ""',
    '',
    '[metrics]',
    '  address = ""',
    '',
  ].join('\n');
  return { text, root, state, address };
}

export async function startContainerd(opts: ContainerdOptions = {}): Promise<RunningContainerd> {
  // Short prefix: unix socket paths are limited to 107 bytes.
  const dir = makeTempDir('portcullis-ctrd-');
  const { text, root, state, address } = containerdConfig(dir);
  const configFile = join(dir, 'config.toml');
  writeFileSync(configFile, text);
  const namespace = opts.namespace ?? 'portcullis-test';
  const readyTimeoutMs = opts.readyTimeoutMs ?? 20_000;
  const out = new TailBuffer();
  let views = 0;

  const proc: ChildProcess = spawn(CONTAINERD_BIN, ['--config', configFile, '--log-level', opts.logLevel ?? 'info'], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: ctrEnv(),
  });
  track(proc);
  proc.stdout?.on('data', (b: Buffer) => out.push(b));
  proc.stderr?.on('data', (b: Buffer) => out.push(b));
  const status: { exited: string | null } = { exited: null };
  proc.once('error', (e) => {
    status.exited = `cannot start ${CONTAINERD_BIN}: ${e.message}`;
  });
  proc.once('exit', (code, signal) => {
    status.exited = `containerd exited (${code ?? signal})`;
  });

  const ctr = (args: readonly string[], timeoutMs = 60_000): Promise<RunResult> =>
    run(CTR_BIN, ['--address', address, '--namespace', namespace, ...args], { timeoutMs, env: ctrEnv() });

  let stopped: Promise<void> | null = null;
  const stop = (): Promise<void> => {
    stopped ??= (async () => {
      await terminate(proc, 'SIGTERM', 10_000);
      killLeftovers(dir);
      await unmountUnder(dir);
    })();
    return stopped;
  };

  // Ready when the socket answers `ctr version` (the socket file appears a little before the services do).
  try {
    const deadline = Date.now() + readyTimeoutMs;
    let last: RunResult | null = null;
    for (;;) {
      if (status.exited !== null) throw new Error(`${status.exited} before it was ready\n--- containerd output ---\n${out.toString()}`);
      if (existsSync(address)) {
        last = await run(CTR_BIN, ['--address', address, '--connect-timeout', '2s', 'version'], { timeoutMs: 10_000, env: ctrEnv() });
        if (last.code === 0) break;
      }
      if (Date.now() > deadline) {
        throw new Error(
          `containerd not ready on ${address} after ${readyTimeoutMs} ms\n` +
            (last ? describeRun('ctr version', last) + '\n' : '') +
            `--- containerd output ---\n${out.toString()}`,
        );
      }
      await sleep(50);
    }
  } catch (e) {
    await stop();
    removeTempDir(dir);
    throw e;
  }

  const registryArgs = (o: CtrRegistryOptions): string[] => {
    const args: string[] = [];
    if (o.hostsDir !== undefined) args.push('--hosts-dir', o.hostsDir);
    if (o.user !== undefined) args.push('--user', o.password === undefined ? o.user : `${o.user}:${o.password}`);
    return [...args, ...(o.extraArgs ?? [])];
  };

  const images = async (): Promise<ImageRecord[]> => {
    const r = await ctr(['images', 'ls']);
    if (r.code !== 0) throw new Error(describeRun('ctr images ls', r));
    // Columns: REF TYPE DIGEST SIZE PLATFORMS LABELS (names contain no spaces).
    return r.stdout
      .split('\n')
      .slice(1)
      .map((line) => line.trim().split(/\s+/))
      .filter((cols) => cols.length >= 3 && /^sha256:[0-9a-f]{64}$/.test(cols[2]!))
      .map((cols) => ({ name: cols[0]!, mediaType: cols[1]!, digest: cols[2]! }));
  };

  const contentDir = join(root, 'io.containerd.content.v1.content');

  return {
    dir,
    root,
    state,
    address,
    configFile,
    namespace,
    ctr,
    pull: (ref, o = {}) => {
      const cmd = o.unpack === false ? ['content', 'fetch'] : ['images', 'pull', '--snapshotter', SNAPSHOTTER];
      return ctr([...cmd, ...registryArgs(o), ref], o.timeoutMs ?? 90_000);
    },
    push: (ref, o = {}) => ctr(['images', 'push', ...registryArgs(o), ref, ...(o.local !== undefined ? [o.local] : [])], o.timeoutMs ?? 90_000),
    async importOci(image, baseName) {
      const tarFile = join(dir, `import-${Date.now()}-${Math.random().toString(36).slice(2)}.tar`);
      const tar = await run('tar', ['-C', image.layoutDir, '-cf', tarFile, '.'], { timeoutMs: 60_000 });
      if (tar.code !== 0) return tar;
      return ctr(['images', 'import', '--no-unpack', '--base-name', baseName, tarFile], 90_000);
    },
    images,
    image: async (name) => (await images()).find((i) => i.name === name),
    blobPath: (digest) => join(contentDir, 'blobs', ...digest.split(':')),
    // The content store has the same blobs/ALG/HEX layout as an OCI layout.
    readBlob: (digest, size) => readBlob(contentDir, digest, size),
    async rootfs(chainId) {
      const key = `portcullis-view-${++views}-${chainId.replace(/^sha256:/, '').slice(0, 12)}`;
      const view = await ctr(['snapshots', '--snapshotter', SNAPSHOTTER, 'view', key, chainId]);
      if (view.code !== 0) throw new Error(describeRun('ctr snapshots view', view));
      // Prints e.g. "mount -t bind /ROOT/io.containerd.snapshotter.v1.native/snapshots/4 /target -o rbind,ro".
      const mounts = await ctr(['snapshots', '--snapshotter', SNAPSHOTTER, 'mounts', '/target', key]);
      const m = /-t bind (\S+) \/target/.exec(mounts.stdout);
      if (mounts.code !== 0 || !m) throw new Error(describeRun('ctr snapshots mounts', mounts));
      return m[1]!;
    },
    output: () => out.toString(),
    running: () => proc.exitCode === null && proc.signalCode === null,
    stop,
    async close() {
      await stop();
      removeTempDir(dir);
    },
  };
}

export interface HostsDirOptions {
  /** CA certificate to trust for this registry (`ca = "..."`). Without it, only the system roots are trusted. */
  caFile?: string;
  /**
   * Client certificate and key offered in the TLS handshake when the server asks for one
   * (`client = [["CERT", "KEY"]]`). containerd sends it only if the server's list of acceptable CAs names its
   * issuer (or the server sends no list).
   */
  clientCert?: { certFile: string; keyFile: string };
  /** `skip_verify = true`: accept any server certificate. */
  skipVerify?: boolean;
  /** Folder to create the hosts dir in (default: a new temp folder). */
  parent?: string;
}

/**
 * A folder for `ctr --hosts-dir` holding `HOST:PORT/hosts.toml` for one https registry. Returns the folder
 * (what `--hosts-dir` takes), not the hosts.toml path.
 */
export function writeHostsDir(hostPort: string, opts: HostsDirOptions = {}): string {
  const hostsDir = opts.parent !== undefined ? join(opts.parent, `hosts-${Date.now()}-${Math.random().toString(36).slice(2)}`) : makeTempDir('portcullis-ctr-hosts-');
  const hostDir = join(hostsDir, hostPort);
  mkdirSync(hostDir, { recursive: true });
  writeFileSync(join(hostDir, 'hosts.toml'), hostsToml(hostPort, opts));
  return hostsDir;
}

/** The hosts.toml text written by writeHostsDir. */
export function hostsToml(hostPort: string, opts: Omit<HostsDirOptions, 'parent'> = {}): string {
  const q = (s: string): string => JSON.stringify(s);
  const lines = [`server = ${q(`https://${hostPort}`)}`, 'capabilities = ["pull", "resolve", "push"]'];
  if (opts.caFile !== undefined) lines.push(`ca = ${q(opts.caFile)}`);
  if (opts.clientCert !== undefined) lines.push(`client = [[${q(opts.clientCert.certFile)}, ${q(opts.clientCert.keyFile)}]]`);
  if (opts.skipVerify) lines.push('skip_verify = true');
  // containerd 1.6 refuses a file without a `host` table ("invalid `host` tree"); an empty one adds no mirror.
  lines.push('', '[host]', '');
  return lines.join('\n');
}

/** Environment for containerd and ctr: no inherited CONTAINERD_* defaults (address, namespace, snapshotter). */
function ctrEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('CONTAINERD_')) env[k] = v;
  return env;
}

/**
 * SIGKILL any process whose command line names `dir` (a shim the daemon started). With the runtime plugins
 * disabled there should be none; this is the guarantee that nothing outlives the test.
 */
function killLeftovers(dir: string): void {
  let pids: string[];
  try {
    pids = readdirSync('/proc').filter((p) => /^\d+$/.test(p));
  } catch {
    return;
  }
  for (const pid of pids) {
    if (Number(pid) === process.pid) continue;
    let cmdline: string;
    try {
      cmdline = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
    } catch {
      continue;
    }
    if (cmdline.split('\0').some((arg) => arg.includes(dir))) {
      try {
        process.kill(Number(pid), 'SIGKILL');
      } catch {
        /* already gone */
      }
    }
  }
}

/** Unmount anything still mounted under `dir` (deepest first): a daemon killed in the middle of an unpack. */
async function unmountUnder(dir: string): Promise<void> {
  let mountinfo: string;
  try {
    mountinfo = readFileSync('/proc/self/mountinfo', 'utf8');
  } catch {
    return;
  }
  const points = mountinfo
    .split('\n')
    .map((l) => l.split(' ')[4])
    .filter((p): p is string => p !== undefined && (p === dir || p.startsWith(`${dir}/`)))
    .sort((a, b) => b.length - a.length);
  for (const p of points) await run('umount', ['-l', p], { timeoutMs: 10_000 }).catch(() => undefined);
}
