/**
 * The soak: the built proxy in front of the real registry under a steady mix of traffic for a set time, with
 * its resources sampled every few seconds. Used by `npm run soak` (minutes) and test/soak.test.ts (about 60 s).
 *
 * Traffic, each its own loop at a fixed pace (`rate` multiplies every pace):
 * - well-behaved (must see zero errors): pushes of fresh images and pulls of pushed ones (Node client, every
 *   digest checked, keep-alive pool); catalog and tag listings on a new TLS connection each time; a skopeo
 *   pull now and then (a real client, every blob re-hashed on disk);
 * - hostile or clumsy (each must get exactly the answer expected): wrong passwords for rotating user names
 *   (401, or 429 once throttled); downloads and uploads abandoned half way;
 * - operations: the htpasswd file replaced with a rotating user's new password, and the certificate renewed
 *   (a new key and chain from the same CA, renamed into place); each change must be applied (the reload
 *   counter moves, then the new password works and the old one does not; new handshakes present the new
 *   serial).
 *
 * Sampled: RSS, open descriptors and connections to the registry for the proxy's processes (/proc); heap
 * used, event-loop delay p99 and active handles from the proxy's /metrics. Growth is judged by a least-squares
 * slope over the second half of the run (the first half is warm-up: JIT, pools, caches filling), compared to a
 * bound per series: bound = max(floor, allowance / minutes in the fitted half). The allowance is the rise
 * the fitted line may show across that half (noise, a cache still filling); the floor is the steady growth
 * rate tolerated however long the run, so longer runs see smaller leaks. A descriptor or registry connection
 * leaked per abandoned request (about 50 a minute) exceeds its bound many times over in any run; a heap leak
 * of 1 KiB per request (about 1.3 MiB/min at the default pace) exceeds the 10-minute heap bound.
 */
import { X509Certificate } from 'node:crypto';
import { readFileSync, renameSync, writeFileSync } from 'node:fs';
import https from 'node:https';
import { join } from 'node:path';
import tls from 'node:tls';
import bcrypt from 'bcryptjs';
import { request, skopeoCopy } from '../helpers/clients.js';
import { pseudoRandomBytes, readOciImage, sha256 } from '../helpers/oci-image.js';
import { makeTempDir, removeTempDir } from '../helpers/proc.js';
import { startPortcullis, type RunningPortcullis } from '../helpers/portcullis.js';
import { sampleTree } from '../helpers/procstat.js';
import { metricSum } from '../helpers/prometheus.js';
import { memoryImage, RegistryClient, type MemoryImage } from '../helpers/registry-client.js';
import { startRegistry, type RunningRegistry } from '../helpers/registry.js';
import { leastSquares, MiB } from '../helpers/stats.js';
import { makeTestCerts, signCert, type TestCerts } from '../helpers/tls.js';
import { basic } from '../helpers/wire.js';

export interface SoakOptions {
  durationMs: number;
  sampleEveryMs: number;
  workers: number | 'auto';
  /** Multiplies the pace of every activity (1 = the default mix, about 15 requests/s). */
  rate: number;
  /** Progress lines (default: none). */
  log?: (line: string) => void;
  /** Growth bounds (default GROWTH_LIMITS). */
  limits?: Record<SeriesName, GrowthLimit>;
}

export interface Sample {
  /** Seconds since the traffic started. */
  t: number;
  rssMiB: number;
  heapMiB: number;
  loopP99Ms: number;
  fds: number;
  upstreamSockets: number;
  handles: number;
  inFlight: number;
}

export type SeriesName = 'rssMiB' | 'heapMiB' | 'loopP99Ms' | 'fds' | 'upstreamSockets' | 'handles';

export interface GrowthLimit {
  unit: string;
  /** Steady growth tolerated however long the run, per minute. */
  floorPerMin: number;
  /** Rise the fitted line may show across the fitted half (noise, a cache still filling). */
  allowance: number;
}

/**
 * How much a series may grow in a soak of minutes: see the file comment. Over 10 minutes (5 fitted) the bounds
 * are 1.6 MiB/min of RSS, 0.8 MiB/min of heap, 2 ms/min of event-loop p99 (it moves with whatever else the
 * machine runs) and 0.8/min of descriptors, registry connections and handles.
 */
export const GROWTH_LIMITS: Record<SeriesName, GrowthLimit> = {
  rssMiB: { unit: 'MiB', floorPerMin: 0.25, allowance: 8 },
  heapMiB: { unit: 'MiB', floorPerMin: 0.1, allowance: 4 },
  loopP99Ms: { unit: 'ms', floorPerMin: 0.5, allowance: 10 },
  fds: { unit: 'fds', floorPerMin: 0.1, allowance: 4 },
  upstreamSockets: { unit: 'sockets', floorPerMin: 0.1, allowance: 4 },
  handles: { unit: 'handles', floorPerMin: 0.1, allowance: 4 },
};

/**
 * For a run of about a minute (npm test): 30 s fitted are too few for the bounds above (the heap's sawtooth
 * alone gives its slope a standard error of about 5 MiB/min there), so the allowances are doubled. This
 * catches gross leaks only (about 30 MiB/min of RSS, 16 of heap, 16 descriptors a minute); `npm run soak`
 * is the real check.
 */
export const SHORT_RUN_LIMITS: Record<SeriesName, GrowthLimit> = Object.fromEntries(
  Object.entries(GROWTH_LIMITS).map(([k, v]) => [k, { ...v, allowance: 2 * v.allowance }]),
) as Record<SeriesName, GrowthLimit>;

export interface Slope {
  series: SeriesName;
  unit: string;
  /** Units per minute over the second half. */
  perMin: number;
  /** Standard error of perMin. */
  errorPerMin: number;
  boundPerMin: number;
  limit: GrowthLimit;
  first: number;
  last: number;
  pass: boolean;
}

export interface Activity {
  name: string;
  wellBehaved: boolean;
  /** Iterations that got the expected answers. */
  ok: number;
  /** Iterations that did not, with why (the first 20). */
  errors: string[];
  failures: number;
}

export interface SoakResult {
  options: Omit<SoakOptions, 'log' | 'limits'>;
  proxyProcesses: number;
  durationMs: number;
  samples: Sample[];
  slopes: Slope[];
  activities: Activity[];
  reloads: { htpasswdOk: number; htpasswdError: number; tlsOk: number; tlsError: number };
  requests: number;
  proxyExit: number;
  failures: string[];
  pass: boolean;
}

const GOOD = { user: 'builder', password: 'soak:steady:state' };
const REPOS = 6;

export async function runSoak(options: SoakOptions): Promise<SoakResult> {
  const log = options.log ?? ((): void => {});
  const [registry, certs] = await Promise.all([startRegistry(), makeTestCerts()]);
  let proxy: RunningPortcullis | null = null;
  const work = makeTempDir('portcullis-soak-');
  try {
    const goodLine = htpasswdLine(GOOD.user, GOOD.password);
    proxy = await startPortcullis(
      {
        listen: '127.0.0.1:0',
        workers: options.workers,
        tls: { cert: 'server.crt', key: 'server.key' },
        upstream: { url: registry.url },
        // All clients share 127.0.0.1: the per-address limit would soon block every new verification of the
        // well-behaved clients too (that is what it is for); the per-user limit stays at its default.
        auth: { htpasswd: 'htpasswd', maxFailuresPerAddress: 0 },
        metrics: { listen: '127.0.0.1:0' },
      },
      {
        files: { 'server.crt': certs.cert, 'server.key': certs.key, htpasswd: `${goodLine}\n${htpasswdLine('rotating', 'rotating-0')}\n` },
        readyTimeoutMs: 30_000,
      },
    );
    return await drive(options, log, registry, certs, proxy, goodLine, work);
  } finally {
    if (proxy) await proxy.stop();
    await registry.close();
    certs.cleanup();
    removeTempDir(work);
  }
}

async function drive(
  options: SoakOptions,
  log: (line: string) => void,
  registry: RunningRegistry,
  certs: TestCerts,
  proxy: RunningPortcullis,
  goodLine: string,
  work: string,
): Promise<SoakResult> {
  const metricsUrl = `${proxy.metricsUrl!}/metrics`;
  const scrape = async (): Promise<string> => (await request(metricsUrl, { timeoutMs: 10_000 })).text();
  const workerCount = (await scrapeProcesses(proxy)) - (options.workers === 1 ? 0 : 1);
  const client = new RegistryClient({ origin: proxy.url, ca: certs.ca, user: GOOD.user, password: GOOD.password, maxSockets: 6, timeoutMs: 60_000 });

  // Seed: one image per repository to pull from the start, and a 4 MiB blob to abandon downloads of.
  const pushed: Array<{ name: string; tag: string; digest: string }> = [];
  for (let r = 0; r < REPOS; r++) {
    const img = memoryImage(`soak/seed/${r}`, 2, 128 * 1024);
    await client.push(`soak/repo-${r}`, 'seed', img);
    pushed.push({ name: `soak/repo-${r}`, tag: 'seed', digest: img.manifestDigest });
  }
  const big = pseudoRandomBytes('soak/big', 4 * MiB);
  const bigDigest = sha256(big);
  await client.pushBlob('soak/big', { digest: bigDigest, data: big });

  const started = performance.now();
  const deadline = started + options.durationMs;
  const activities: Activity[] = [];
  const pace = (ms: number): number => ms / options.rate;
  const loop = (name: string, wellBehaved: boolean, everyMs: number, body: (i: number) => Promise<void>): Promise<void> => {
    const a: Activity = { name, wellBehaved, ok: 0, errors: [], failures: 0 };
    activities.push(a);
    return (async () => {
      for (let i = 0; performance.now() < deadline; i++) {
        const t = performance.now();
        try {
          await body(i);
          a.ok++;
        } catch (e) {
          a.failures++;
          if (a.errors.length < 20) a.errors.push(`${((performance.now() - started) / 1000).toFixed(1)}s: ${e instanceof Error ? e.message : String(e)}`);
        }
        const wait = Math.min(everyMs - (performance.now() - t), deadline - performance.now());
        if (wait > 0) await new Promise((r) => setTimeout(r, wait));
      }
    })();
  };

  const samples: Sample[] = [];
  const sampler = (async () => {
    while (performance.now() < deadline) {
      const t = performance.now();
      const text = await scrape();
      const tree = sampleTree(proxy.proc.pid!, registry.port);
      samples.push({
        t: (t - started) / 1000,
        rssMiB: tree.rss / MiB,
        heapMiB: metricSum(text, 'portcullis_nodejs_heap_size_used_bytes') / MiB,
        loopP99Ms: metricSum(text, 'portcullis_nodejs_eventloop_lag_p99_seconds') * 1000,
        fds: tree.fds,
        upstreamSockets: tree.upstream,
        handles: metricSum(text, 'portcullis_nodejs_active_handles_total'),
        inFlight: metricSum(text, 'portcullis_requests_in_flight'),
      });
      const s = samples[samples.length - 1]!;
      log(`${s.t.toFixed(0)}s rss ${s.rssMiB.toFixed(1)} MiB heap ${s.heapMiB.toFixed(1)} MiB loop p99 ${s.loopP99Ms.toFixed(1)} ms fds ${s.fds} upstream ${s.upstreamSockets} handles ${s.handles}`);
      const wait = Math.min(options.sampleEveryMs - (performance.now() - t), deadline - performance.now());
      if (wait > 0) await new Promise((r) => setTimeout(r, wait));
    }
  })();

  let pushes = 0;
  let currentPassword = 'rotating-0';
  let serial = new X509Certificate(certs.cert).serialNumber;
  await Promise.all([
    sampler,
    // Well-behaved.
    loop('push', true, pace(3000), async () => {
      const n = pushes++;
      const name = `soak/repo-${n % REPOS}`;
      const img: MemoryImage = memoryImage(`soak/push/${n}`, 2, 128 * 1024);
      await client.push(name, `t${n}`, img);
      pushed.push({ name, tag: `t${n}`, digest: img.manifestDigest });
    }),
    ...[0, 1].map((k) =>
      loop(`pull ${k + 1}`, true, pace(700), async () => {
        const p = pushed[Math.floor(Math.random() * pushed.length)]!;
        await client.pull(p.name, p.tag, p.digest);
      }),
    ),
    loop('catalog and tags (new connection each)', true, pace(1000), async (i) => {
      const auth = { user: GOOD.user, password: GOOD.password };
      const cat = await request(`${proxy.url}/v2/_catalog?n=100`, { ca: certs.ca, auth });
      if (cat.status !== 200) throw new Error(`catalog: ${cat.status} ${cat.text().slice(0, 200)}`);
      const repos = (cat.json() as { repositories: string[] }).repositories;
      if (!repos.includes('soak/repo-0')) throw new Error(`catalog without soak/repo-0: ${repos.join(',')}`);
      const tags = await request(`${proxy.url}/v2/soak/repo-${i % REPOS}/tags/list`, { ca: certs.ca, auth });
      if (tags.status !== 200) throw new Error(`tags: ${tags.status} ${tags.text().slice(0, 200)}`);
    }),
    loop('skopeo pull', true, pace(15_000), async () => {
      const p = pushed[Math.floor(Math.random() * pushed.length)]!;
      const out = join(work, `pull-${Date.now()}`);
      try {
        const r = await skopeoCopy(`docker://${proxy.hostPort}/${p.name}:${p.tag}`, `oci:${out}:x`, {
          src: { certDir: certs.caDir, creds: `${GOOD.user}:${GOOD.password}` },
          timeoutMs: 60_000,
        });
        if (r.code !== 0) throw new Error(`skopeo: exit ${r.code ?? r.signal}: ${r.stderr.trim().slice(-300)}`);
        const got = readOciImage(out, 'x');
        if (got.manifestDigest !== p.digest) throw new Error(`skopeo pulled ${got.manifestDigest}, pushed ${p.digest}`);
      } finally {
        removeTempDir(out);
      }
    }),
    // Hostile or clumsy.
    loop('wrong password', false, pace(500), async (i) => {
      const r = await request(`${proxy.url}/v2/`, { ca: certs.ca, auth: { user: `intruder-${i % 40}`, password: `guess-${i}` } });
      if (r.status !== 401 && r.status !== 429) throw new Error(`wrong password answered ${r.status}`);
    }),
    loop('aborted download', false, pace(2000), async () => {
      const got = await abandonedDownload(`${proxy.url}/v2/soak/big/blobs/${bigDigest}`, certs.ca);
      if (got <= 0 || got >= big.length) throw new Error(`abandoned download received ${got} bytes`);
    }),
    loop('aborted upload', false, pace(3000), async (i) => {
      await abandonedUpload(proxy.url, certs.ca, `soak/abandoned-${i % 4}`);
    }),
    // Operations.
    loop('htpasswd edit', false, pace(10_000), async (i) => {
      const before = logged(proxy, 'htpasswd reloaded');
      const old = currentPassword;
      currentPassword = `rotating-${i + 1}`;
      replaceByRename(join(proxy.dir, 'htpasswd'), `${goodLine}\n${htpasswdLine('rotating', currentPassword)}\n`);
      await until(`"htpasswd reloaded" from ${workerCount} process(es)`, 10_000, async () => logged(proxy, 'htpasswd reloaded') >= before + workerCount);
      const fresh = await request(`${proxy.url}/v2/`, { ca: certs.ca, auth: { user: 'rotating', password: currentPassword } });
      if (fresh.status !== 200) throw new Error(`new password answered ${fresh.status}`);
      const stale = await request(`${proxy.url}/v2/`, { ca: certs.ca, auth: { user: 'rotating', password: old } });
      if (stale.status !== 401) throw new Error(`old password answered ${stale.status}`);
    }),
    loop('certificate renewal', false, pace(20_000), async (i) => {
      const before = logged(proxy, 'certificate reloaded');
      const next = await signCert({ dir: work, caFile: certs.caFile, caKeyFile: certs.caKeyFile, name: `renewed-${i}` });
      replaceByRename(join(proxy.dir, 'server.key'), readFileSync(next.keyFile));
      replaceByRename(join(proxy.dir, 'server.crt'), readFileSync(next.chainFile));
      const want = new X509Certificate(readFileSync(next.leafFile)).serialNumber;
      await until(`"certificate reloaded" from ${workerCount} process(es)`, 10_000, async () => logged(proxy, 'certificate reloaded') >= before + workerCount);
      const seen = await handshakeSerial(proxy.port, certs.ca);
      if (seen !== want) throw new Error(`new handshake presents serial ${seen}, renewed ${want} (was ${serial})`);
      serial = want;
    }),
  ]);
  const durationMs = performance.now() - started;
  client.close();

  const text = await scrape();
  const reloads = {
    htpasswdOk: metricSum(text, 'portcullis_config_reloads_total', { kind: 'htpasswd', result: 'ok' }),
    htpasswdError: metricSum(text, 'portcullis_config_reloads_total', { kind: 'htpasswd', result: 'error' }),
    tlsOk: metricSum(text, 'portcullis_config_reloads_total', { kind: 'tls', result: 'ok' }),
    tlsError: metricSum(text, 'portcullis_config_reloads_total', { kind: 'tls', result: 'error' }),
  };
  const requests = metricSum(text, 'portcullis_requests_total');
  const processes = await scrapeProcesses(proxy);
  const proxyExit = await proxy.stop();

  const slopes = fitSlopes(samples, options.limits);
  const failures: string[] = [];
  for (const a of activities) {
    if (a.ok === 0) failures.push(`${a.name}: never completed once`);
    if (a.failures > 0) failures.push(`${a.name}: ${a.failures} failed: ${a.errors.slice(0, 3).join(' | ')}`);
  }
  for (const s of slopes) if (!s.pass) failures.push(`${s.series} grows ${s.perMin.toFixed(2)} ${s.unit}/min over the second half (bound ${s.boundPerMin.toFixed(2)})`);
  if (reloads.htpasswdError > 0 || reloads.tlsError > 0) {
    const why = proxy.logs().filter((l) => /reload refused/.test(String(l['msg']))).slice(0, 3).map((l) => `${String(l['msg'])}: ${String(l['err'])}`);
    failures.push(`reloads refused: ${JSON.stringify(reloads)}: ${why.join(' | ')}`);
  }
  if (proxyExit !== 0) failures.push(`the proxy exited ${proxyExit} on SIGTERM`);
  if (samples.length < 6) failures.push(`only ${samples.length} samples: too short to judge growth`);
  return {
    options: { durationMs: options.durationMs, sampleEveryMs: options.sampleEveryMs, workers: options.workers, rate: options.rate },
    proxyProcesses: processes,
    durationMs,
    samples,
    slopes,
    activities,
    reloads,
    requests,
    proxyExit,
    failures,
    pass: failures.length === 0,
  };
}

/** Least-squares slope per minute over the second half of the samples, against each series' bound. */
export function fitSlopes(samples: readonly Sample[], limits: Record<SeriesName, GrowthLimit> = GROWTH_LIMITS): Slope[] {
  if (samples.length < 4) return [];
  const end = samples[samples.length - 1]!.t;
  const half = samples.filter((s) => s.t >= end / 2);
  if (half.length < 3) return [];
  const minutes = (half[half.length - 1]!.t - half[0]!.t) / 60;
  return (Object.keys(limits) as SeriesName[]).map((series) => {
    const limit = limits[series];
    const line = leastSquares(half.map((s) => [s.t / 60, s[series]] as const));
    const boundPerMin = Math.max(limit.floorPerMin, limit.allowance / minutes);
    return {
      series,
      unit: limit.unit,
      perMin: line.slope,
      errorPerMin: line.slopeError,
      boundPerMin,
      limit,
      first: half[0]![series],
      last: half[half.length - 1]![series],
      pass: line.slope <= boundPerMin,
    };
  });
}

/** Log lines with this message so far (each worker logs its own reloads). */
function logged(proxy: RunningPortcullis, msg: string): number {
  return proxy.logs().filter((l) => l['msg'] === msg).length;
}

/** Processes in the proxy's tree (1, or the primary and its workers). */
async function scrapeProcesses(proxy: RunningPortcullis): Promise<number> {
  return sampleTree(proxy.proc.pid!, null).processes;
}

function htpasswdLine(user: string, password: string): string {
  return `${user}:${bcrypt.hashSync(password, 5).replace(/^\$2b\$/, '$2y$')}`;
}

/** Replace a file the way editors, `htpasswd` and certificate tools do: write next to it, rename over. */
function replaceByRename(path: string, content: string | Buffer): void {
  const tmp = `${path}.tmp-${process.pid}`;
  writeFileSync(tmp, content);
  renameSync(tmp, path);
}

async function until(what: string, timeoutMs: number, fn: () => Promise<boolean>): Promise<void> {
  const end = performance.now() + timeoutMs;
  while (!(await fn())) {
    if (performance.now() > end) throw new Error(`${what}: not within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

function handshakeSerial(port: number, ca: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = tls.connect({ host: '127.0.0.1', port, ca, servername: 'localhost' }, () => {
      const s = socket.getPeerCertificate().serialNumber;
      socket.end();
      resolve(s);
    });
    socket.once('error', reject);
    socket.setTimeout(10_000, () => socket.destroy(new Error('TLS handshake timed out')));
  });
}

/** GET a blob on a new connection and destroy it after the first chunk: the bytes received before. */
function abandonedDownload(url: string, ca: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = https.request(url, { ca, agent: false, headers: { authorization: basic(GOOD.user, GOOD.password) } }, (res) => {
      if (res.statusCode !== 200) {
        res.resume();
        reject(new Error(`download answered ${res.statusCode}`));
        return;
      }
      res.once('data', (c: Buffer) => {
        res.socket.destroy();
        resolve(c.length);
      });
    });
    req.on('error', () => {
      /* our own destroy; a real failure rejects through the timeout or the status */
    });
    req.setTimeout(15_000, () => {
      req.destroy();
      reject(new Error('download did not start within 15 s'));
    });
    req.end();
  });
}

/** POST an upload (202 expected), then a chunked PATCH destroyed after 192 KiB. */
async function abandonedUpload(origin: string, ca: string, name: string): Promise<void> {
  const start = await request(`${origin}/v2/${name}/blobs/uploads/`, { method: 'POST', ca, auth: GOOD, body: Buffer.alloc(0) });
  if (start.status !== 202) throw new Error(`upload start answered ${start.status}`);
  const location = new URL(String(start.headers.location), origin);
  await new Promise<void>((resolve, reject) => {
    const req = https.request(location, {
      method: 'PATCH',
      ca,
      agent: false,
      headers: { authorization: basic(GOOD.user, GOOD.password), 'content-type': 'application/octet-stream', 'transfer-encoding': 'chunked' },
    });
    req.on('response', (res) => {
      res.resume();
      req.destroy();
      reject(new Error(`the PATCH was answered (${res.statusCode}) before it was abandoned`));
    });
    req.on('error', () => {
      /* our own destroy */
    });
    const piece = pseudoRandomBytes(`soak/abandoned/${name}`, 64 * 1024);
    req.write(piece);
    req.write(piece);
    req.write(piece, () => {
      req.destroy();
      resolve();
    });
  });
}
