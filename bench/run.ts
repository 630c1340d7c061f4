/**
 * Side-by-side benchmark: Portcullis, the distribution project's nginx recipe and Caddy, all in front of
 * one real registry on this machine, in one run. Reports ratios: the machine is shared and noisy, so
 * absolute numbers move from run to run; the order between targets measured seconds apart much less.
 *
 *   npm run bench                            # full run (about 25 minutes on 2 cores)
 *   npm run bench -- --quick                 # smoke run: 64 MiB blobs, 3 s of load, 1 run
 *   npm run bench -- --steps auth,download   # some steps only (list below)
 *   npm run bench -- --node PATH             # also Portcullis on another Node binary (repeatable)
 *   npm run bench -- --baseline DIR          # also Portcullis built in another checkout (before/after)
 *   npm run bench -- --runs 5                # fresh processes per target in the transfer steps
 *   npm run bench -- --keep                  # keep the temp dir (configs, logs, registry data)
 *
 * Steps: auth, auth12, manifest, latency, download, upload, parallel, flood, memory, skopeo.
 * Prints Markdown tables, a table of the goals, and writes bench/results/latest.json and
 * bench/results/ratios.svg. Sends traffic to 127.0.0.1 only. What the numbers mean: docs/benchmarks.md.
 */
import { createHash, randomFillSync } from 'node:crypto';
import { chmodSync, createWriteStream, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { once } from 'node:events';
import { request as httpRequest } from 'node:http';
import { cpus, release, totalmem } from 'node:os';
import { basename, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ratioChart, type ChartBar } from './lib/chart.js';
import {
  api,
  chunkedPatch,
  download,
  firstRequestMs,
  loadgen,
  putFile,
  startLoadgen,
  skopeoPull,
  skopeoPush,
  startUpload,
  wrkGetV2,
  wrkWarmUp,
  type Access,
  type Transfer,
} from './lib/clients.js';
import { writeImage } from './lib/oci.js';
import { installCleanupHandlers, keepTempDirs, makeTempDir, run, sleep, withDeadline } from './lib/proc.js';
import { cpuSeconds, memoryOf, mib, sampleRss } from './lib/procstat.js';
import { fmt, fmtRatio, median, ratio, table } from './lib/report.js';
import { checkLocalhost, ensureTools, makeCerts, makeCredentials } from './lib/setup.js';
import {
  nodeMajorOf,
  startCaddy,
  startNginx,
  startNodePipe,
  startPortcullis,
  startRegistry,
  type GcCounts,
  type ProxyInputs,
  type Target,
  type TargetId,
  type TargetKind,
} from './lib/targets.js';

// ------------------------------------------------------------------------------------------- options

const STEPS = ['auth', 'auth12', 'manifest', 'latency', 'download', 'upload', 'parallel', 'flood', 'memory', 'skopeo'] as const;
type Step = (typeof STEPS)[number];

const MiB = 1024 * 1024;
const GiB = 1024 * MiB;

function fail(message: string): never {
  process.stderr.write(`bench: ${message}\n`);
  process.exit(2);
}

interface Options {
  quick: boolean;
  keep: boolean;
  steps: Set<string>;
  nodes: string[];
  baselines: string[];
  runs: number | null;
}

function parseArgs(argv: readonly string[]): Options {
  const o: Options = { quick: false, keep: false, steps: new Set(STEPS), nodes: [], baselines: [], runs: null };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const [name, inline] = a.includes('=') ? [a.slice(0, a.indexOf('=')), a.slice(a.indexOf('=') + 1)] : [a, undefined];
    const value = (): string => {
      const v = inline ?? argv[++i];
      if (v === undefined) fail(`${name} needs a value`);
      return v;
    };
    if (name === '--quick') o.quick = true;
    else if (name === '--keep') o.keep = true;
    else if (name === '--steps') o.steps = new Set(value().split(',').map((s) => s.trim()));
    else if (name === '--node') o.nodes.push(resolve(value()));
    else if (name === '--baseline') o.baselines.push(resolve(value()));
    else if (name === '--runs') o.runs = Number(value());
    else fail(`unknown argument ${a} (options: --quick, --keep, --steps LIST, --node PATH, --baseline DIR, --runs N)`);
  }
  for (const s of o.steps) if (!(STEPS as readonly string[]).includes(s)) fail(`unknown step "${s}" (steps: ${STEPS.join(', ')})`);
  if (o.runs !== null && !(o.runs >= 1)) fail('--runs needs a number of at least 1');
  return o;
}

const opts = parseArgs(process.argv.slice(2));
const quick = opts.quick;
const has = (s: Step): boolean => opts.steps.has(s);

const P = quick
  ? { loadSeconds: 3, latencySeconds: 2, blobBytes: 64 * MiB, runs: 1, patchBytes: 256 * MiB, layers: 4, layerSize: 8 * MiB, skopeoRuns: 1 }
  : { loadSeconds: 10, latencySeconds: 5, blobBytes: 512 * MiB, runs: 3, patchBytes: 2 * GiB, layers: 4, layerSize: 64 * MiB, skopeoRuns: 3 };
const RUNS = opts.runs ?? P.runs;
/** One hash for every target: cost 10 (htpasswd -B's default is 5, many guides use 10 or 12). */
const COST = 10;
const COST_HIGH = 12;
const CONNECTIONS = 32;
/** Warm-up before a measured transfer in a fresh process: this much of the blob, as a 206. */
const WARM_UP_BYTES = 64 * MiB;
const FLOOD_RATE = 50;
/** Downloads measured alone and under the flood (the flood runs for as long as they take). */
const FLOOD_DOWNLOADS = 2;

const RESULTS_DIR = fileURLToPath(new URL('./results/', import.meta.url));

const t0 = performance.now();
function log(line: string): void {
  const s = ((performance.now() - t0) / 1000).toFixed(0).padStart(5);
  process.stderr.write(`[${s}s] ${line}\n`);
}

/** Targets in a different order each run, so a slow moment of the machine does not always hit the same one. */
function rotated<T>(list: readonly T[], by: number): T[] {
  if (list.length === 0) return [];
  const k = by % list.length;
  return [...list.slice(k), ...list.slice(0, k)];
}

// ------------------------------------------------------------------------------------------- targets

/** How to start a target afresh. */
interface Spec {
  id: TargetId;
  kind: TargetKind;
  label: string;
  start(): Promise<Target>;
}

interface World {
  work: string;
  access: Access;
  inputs: ProxyInputs;
  registry: Target;
  /** Portcullis one process: this build, then --node, then --baseline. */
  portcullis: Spec[];
  /** The same with workers: auto. */
  portcullisAuto: Spec[];
  nginx: Spec;
  nginxAuto: Spec;
  caddy: Spec;
  nodePipe: Spec;
  registrySpec: Spec;
}

let starts = 0;
function specs(work: string, inputs: ProxyInputs, creds = inputs.creds): Omit<World, 'work' | 'access' | 'inputs' | 'registry' | 'registrySpec'> {
  const inp = { ...inputs, creds };
  const dir = (id: string): string => join(work, `${id}-${++starts}`);
  const variants: Array<{ id: string; label: string; node?: string; root?: string }> = [
    { id: 'portcullis', label: `Portcullis (Node ${process.versions.node.split('.')[0]})` },
    ...opts.nodes.map((node) => ({ id: `portcullis-node${nodeMajorOf(node)}`, label: `Portcullis (Node ${nodeMajorOf(node)})`, node })),
    ...opts.baselines.map((root, i) => ({ id: `portcullis-base${i || ''}`, label: `Portcullis baseline (${basename(root)})`, root })),
  ];
  const portcullis = (auto: boolean): Spec[] =>
    variants.map((v) => ({
      id: auto ? `${v.id}-auto` : v.id,
      kind: 'portcullis' as const,
      label: auto ? `${v.label}, workers: auto` : v.label,
      start: () =>
        startPortcullis(dir(v.id), inp, { id: auto ? `${v.id}-auto` : v.id, ...(v.node ? { node: v.node } : {}), ...(v.root ? { root: v.root } : {}), workers: auto ? 'auto' : 1 }),
    }));
  return {
    portcullis: portcullis(false),
    portcullisAuto: portcullis(true),
    nginx: { id: 'nginx', kind: 'nginx', label: 'nginx recipe', start: () => startNginx(dir('nginx'), inp) },
    nginxAuto: { id: 'nginx-auto', kind: 'nginx', label: 'nginx recipe, worker_processes auto', start: () => startNginx(dir('nginx'), inp, { id: 'nginx-auto', workers: 'auto' }) },
    caddy: { id: 'caddy', kind: 'caddy', label: 'Caddy', start: () => startCaddy(dir('caddy'), inp) },
    nodePipe: { id: 'node-pipe', kind: 'node-pipe', label: 'plain Node pipe (reference: Node\'s http client and server, no auth, no flags)', start: () => startNodePipe(inp) },
  };
}

/** Start a fresh process of `spec`, run `work` with it, stop it. The shared registry is never restarted. */
async function fresh<T>(w: World, spec: Spec, work: (t: Target) => Promise<T>): Promise<T> {
  if (spec.kind === 'registry') return work(w.registry);
  const t = await spec.start();
  try {
    await sleep(200);
    return await work(t);
  } finally {
    await t.stop();
  }
}

// ------------------------------------------------------------------------------------------- results

interface Row {
  id: TargetId;
  label: string;
}
interface LoadRow extends Row {
  rps: number;
  p50ms: number | null;
  p99ms: number | null;
  errors: number;
  cpuMsPer1k: number | null;
  firstMs?: number | null;
}
interface LoadResult {
  title: string;
  rows: LoadRow[];
}
interface LatencyRow extends Row {
  getP50ms: number | null;
  headP50ms: number | null;
}
interface TransferRow extends Row {
  /** Per run, in run order: 10^6 bytes per second as the client saw it. */
  mbps: number[];
  /** Per run: CPU seconds of the target's processes per GiB moved. */
  cpuPerGiB: number[];
  /** Per run: full GCs (mark-compact) and scavenges during the measured transfer; null for non-Node targets. */
  fullGcs: Array<number | null>;
  scavenges: Array<number | null>;
  medianMbps: number | null;
  medianCpuPerGiB: number | null;
}
interface TransferResult {
  title: string;
  bytes: number;
  rows: TransferRow[];
}
interface FloodRow extends Row {
  quietMbps: number[];
  floodMbps: number[];
  /** Median of flood ÷ quiet per run. */
  kept: number | null;
  floodAnswers: Record<string, number>;
  floodRps: number[];
  /** Runs whose downloads under the flood did not finish in time: their MB/s is an upper bound. */
  cutRuns: number;
}
interface MemoryRow extends Row {
  idleMiB: number;
  afterPatchPeakMiB: number;
  sessionPeakMiB: number;
  patchMbps: number;
  patchCpuPerGiB: number;
  downloadMbps: number;
  fullGcs: number | null;
}
interface SkopeoRow extends Row {
  push: number[];
  pull: number[];
}
interface Goal {
  goal: string;
  measured: string;
  met: boolean | null;
}
interface Results {
  date: string;
  quick: boolean;
  runs: number;
  machine: { cpus: number; model: string; memoryGiB: number; kernel: string; node: string; loadAverage: number[] };
  versions: Record<string, string>;
  load: LoadResult[];
  latency: LatencyRow[] | null;
  transfers: TransferResult[];
  flood: FloodRow[] | null;
  memory: { patchBytes: number; downloadBytes: number; rows: MemoryRow[] } | null;
  skopeo: { layers: number; layerSize: number; rows: SkopeoRow[] } | null;
  goals: Goal[];
  errors: string[];
  elapsedSeconds: number;
}

const results: Results = {
  date: new Date().toISOString(),
  quick,
  runs: RUNS,
  machine: { cpus: cpus().length, model: cpus()[0]?.model ?? 'unknown', memoryGiB: Math.round(totalmem() / GiB), kernel: release(), node: process.version, loadAverage: [] },
  versions: {},
  load: [],
  latency: null,
  transfers: [],
  flood: null,
  memory: null,
  skopeo: null,
  goals: [],
  errors: [],
  elapsedSeconds: 0,
};

async function versions(): Promise<Record<string, string>> {
  const first = async (cmd: string, args: string[], re?: RegExp): Promise<string> => {
    const r = await run(cmd, args, { timeoutMs: 10_000 }).catch(() => null);
    if (!r) return 'unknown';
    const text = (r.stdout + r.stderr).trim();
    const m = re?.exec(text);
    return m?.[1] ?? text.split('\n')[0]?.trim() ?? 'unknown';
  };
  const out: Record<string, string> = {
    nginx: await first('nginx', ['-v'], /nginx\/(\S+)/),
    caddy: await first('caddy', ['version'], /^v?(\S+)/),
    registry: await first('docker-registry', ['--version'], /distribution (\S+)/),
    wrk: await first('wrk', ['--version'], /^wrk (\S+)/),
    curl: await first('curl', ['--version'], /^curl (\S+)/),
    skopeo: await first('skopeo', ['--version'], /version (\S+)/),
  };
  for (const n of opts.nodes) out[`node ${n}`] = await first(n, ['--version']);
  return out;
}

function note(what: string, e: unknown): void {
  const message = e instanceof Error ? e.message : String(e);
  results.errors.push(`${what}: ${message}`);
  log(`  FAILED ${what}: ${message.split('\n')[0]}`);
}

/** Run one step within a time bound; a failure is recorded and the run goes on. */
async function step<T>(name: string, ms: number, work: () => Promise<T>): Promise<T | null> {
  log(name);
  try {
    return await withDeadline(name, ms, work());
  } catch (e) {
    note(name, e);
    return null;
  }
}

async function gcOf(t: Target): Promise<GcCounts | null> {
  try {
    return await t.gc();
  } catch {
    return null;
  }
}

// --------------------------------------------------------------------------------------------- steps

const BLOB_REPO = 'bench/download';

/** Authenticated GET /v2/ (wrk) or manifest HEAD (loadgen), 32 connections: req/s and CPU per request. */
async function stepLoad(w: World, list: readonly Spec[], title: string, what: 'ping' | 'manifest', access: Access): Promise<LoadResult> {
  const out: LoadResult = { title, rows: [] };
  for (const spec of list) {
    try {
      await fresh(w, spec, async (t) => {
        const firstMs = what === 'ping' && t.auth ? await firstRequestMs(t, access) : null;
        if (what === 'ping') await wrkWarmUp(t, access);
        else await loadgen(t, access, { method: 'HEAD', path: MANIFEST_PATH, headers: MANIFEST_ACCEPT, seconds: 2, connections: 4 });
        const cpu0 = cpuSeconds(t.pids());
        const r =
          what === 'ping'
            ? await wrkGetV2(t, access, P.loadSeconds, CONNECTIONS).then((x) => ({ ...x, rps: x.rps }))
            : await loadgen(t, access, { method: 'HEAD', path: MANIFEST_PATH, headers: MANIFEST_ACCEPT, seconds: P.loadSeconds, connections: CONNECTIONS }).then((x) => ({
                requests: x.requests,
                rps: x.rps,
                p50ms: x.p50ms,
                p99ms: x.p99ms,
                errors: x.errors + Object.entries(x.statuses).filter(([s]) => s !== '200').reduce((n, [, c]) => n + c, 0),
              }));
        const cpu = cpuSeconds(t.pids()) - cpu0;
        out.rows.push({ id: spec.id, label: spec.label, rps: r.rps, p50ms: r.p50ms, p99ms: r.p99ms, errors: r.errors, cpuMsPer1k: r.requests > 0 ? (cpu * 1e6) / r.requests : null, firstMs });
        log(`  ${spec.id}: ${fmt(r.rps)} req/s, p50 ${fmt(r.p50ms, 2)} ms, CPU ${fmt(r.requests > 0 ? (cpu * 1e6) / r.requests : null)} ms/1k, ${r.errors} errors`);
      });
    } catch (e) {
      note(`${title} ${spec.id}`, e);
    }
  }
  return out;
}

/** One connection, one request at a time: the p50 latency each target adds to the registry's own. */
async function stepLatency(w: World, list: readonly Spec[]): Promise<LatencyRow[]> {
  const rows: LatencyRow[] = [];
  for (const spec of list) {
    try {
      await fresh(w, spec, async (t) => {
        await loadgen(t, w.access, { method: 'GET', path: '/v2/', seconds: 1, connections: 1 });
        const get = await wrkGetV2(t, w.access, P.latencySeconds, 1, 1);
        const head = await loadgen(t, w.access, { method: 'HEAD', path: MANIFEST_PATH, headers: MANIFEST_ACCEPT, seconds: P.latencySeconds, connections: 1 });
        rows.push({ id: spec.id, label: spec.label, getP50ms: get.p50ms, headP50ms: head.p50ms });
        log(`  ${spec.id}: GET /v2/ p50 ${fmt(get.p50ms, 3)} ms, HEAD manifest p50 ${fmt(head.p50ms, 3)} ms`);
      });
    } catch (e) {
      note(`latency ${spec.id}`, e);
    }
  }
  return rows;
}

interface Blob {
  file: string;
  digest: string;
  size: number;
}

/** A file of random bytes, written in 1 MiB pieces (never held whole), and its sha256. */
async function makeBlobFile(file: string, size: number): Promise<Blob> {
  const hash = createHash('sha256');
  const out = createWriteStream(file);
  for (let written = 0; written < size; ) {
    const piece = randomFillSync(Buffer.allocUnsafe(Math.min(MiB, size - written)));
    hash.update(piece);
    if (!out.write(piece)) await once(out, 'drain');
    written += piece.length;
  }
  out.end();
  await once(out, 'close');
  return { file, digest: `sha256:${hash.digest('hex')}`, size };
}

function newRow(spec: Spec): TransferRow {
  return { id: spec.id, label: spec.label, mbps: [], cpuPerGiB: [], fullGcs: [], scavenges: [], medianMbps: null, medianCpuPerGiB: null };
}

/** One measured transfer: the client's rate, the target's CPU time and GC counts. */
async function measured(t: Target, row: TransferRow, work: () => Promise<Transfer | Transfer[]>): Promise<Transfer> {
  const gc0 = await gcOf(t);
  const cpu0 = cpuSeconds(t.pids());
  const started = performance.now();
  const r = await work();
  const seconds = (performance.now() - started) / 1000;
  const cpu = cpuSeconds(t.pids()) - cpu0;
  await sleep(100); // GC entries reach the observers asynchronously
  const gc1 = await gcOf(t);
  // Several parallel transfers: the aggregate rate over the wall time of all of them.
  const all = Array.isArray(r) ? r : [r];
  const bytes = all.reduce((n, x) => n + x.bytes, 0);
  const transfer: Transfer = Array.isArray(r) ? { bytes, seconds, mbps: bytes / seconds / 1e6 } : r;
  row.mbps.push(transfer.mbps);
  row.cpuPerGiB.push(cpu / (bytes / GiB));
  row.fullGcs.push(gc0 && gc1 ? gc1.major - gc0.major : null);
  row.scavenges.push(gc0 && gc1 ? gc1.minor - gc0.minor : null);
  return transfer;
}

function finish(r: TransferResult): TransferResult {
  for (const row of r.rows) {
    row.medianMbps = median(row.mbps);
    row.medianCpuPerGiB = median(row.cpuPerGiB);
  }
  return r;
}

/** Transfers of every target, `RUNS` fresh processes each, in a rotated order; warm-up before each. */
async function transferStep(
  w: World,
  title: string,
  bytes: number,
  list: readonly Spec[],
  warmUp: (t: Target) => Promise<unknown>,
  work: (t: Target) => Promise<Transfer | Transfer[]>,
): Promise<TransferResult> {
  const out: TransferResult = { title, bytes, rows: list.map(newRow) };
  for (let i = 0; i < RUNS; i++) {
    for (const spec of rotated(list, i)) {
      const row = out.rows.find((r) => r.id === spec.id)!;
      try {
        await fresh(w, spec, async (t) => {
          await warmUp(t);
          const r = await measured(t, row, () => work(t));
          log(`  ${title}, run ${i + 1}, ${spec.id}: ${fmt(r.mbps)} MB/s, ${fmt(row.cpuPerGiB.at(-1), 2)} CPU s/GiB, GC ${row.fullGcs.at(-1) ?? '—'} full / ${row.scavenges.at(-1) ?? '—'} scavenges`);
        });
      } catch (e) {
        note(`${title} ${spec.id} run ${i + 1}`, e);
      }
    }
  }
  return finish(out);
}

const warmDownload = (w: World, blob: Blob) => (t: Target) =>
  download(t, w.access, `/v2/${BLOB_REPO}/blobs/${blob.digest}`, blob.size, [0, Math.min(WARM_UP_BYTES, blob.size) - 1]);

async function stepDownload(w: World, blob: Blob): Promise<TransferResult> {
  const list = [w.registrySpec, ...w.portcullis, w.nginx, w.caddy, w.nodePipe];
  const path = `/v2/${BLOB_REPO}/blobs/${blob.digest}`;
  return transferStep(w, 'Blob download (GET, curl, HTTP/1.1)', blob.size, list, warmDownload(w, blob), (t) => download(t, w.access, path, blob.size));
}

/** Monolithic upload (POST, then PUT with the whole body and ?digest=). */
async function pushBlob(t: Target, access: Access, repo: string, blob: Blob): Promise<Transfer> {
  const url = await startUpload(t, access, repo);
  return putFile(t, access, url, blob.file, blob.digest, blob.size);
}

async function stepUpload(w: World, blob: Blob): Promise<TransferResult[]> {
  const list = [w.registrySpec, ...w.portcullis, w.nginx, w.caddy, w.nodePipe];
  const repo = 'bench/upload';
  const warmUp = async (t: Target): Promise<void> => {
    const url = await startUpload(t, w.access, 'bench/warm-up');
    await chunkedPatch(t, w.access, url, WARM_UP_BYTES);
    await cancelUpload(w, url);
  };
  const put = await transferStep(w, 'Blob upload (POST + monolithic PUT, curl, HTTP/1.1)', blob.size, list, warmUp, async (t) => {
    // Unlink the previous copy, so every run is a complete upload into the repository.
    await api(w.registry, w.access, 'DELETE', `/v2/${repo}/blobs/${blob.digest}`);
    return pushBlob(t, w.access, repo, blob);
  });
  let session: string | null = null;
  const patch = await transferStep(
    w,
    'Blob upload (chunked PATCH, curl, HTTP/1.1)',
    blob.size,
    list,
    async (t) => {
      await warmUp(t);
      session = await startUpload(t, w.access, repo);
    },
    async (t) => {
      try {
        return await chunkedPatch(t, w.access, session!, blob.size);
      } finally {
        await cancelUpload(w, session!);
      }
    },
  );
  return [put, patch];
}

/** Cancel an upload session on the registry itself: frees its disk space at once. */
async function cancelUpload(w: World, location: string): Promise<void> {
  const u = new URL(location);
  await api(w.registry, w.access, 'DELETE', u.pathname + u.search).catch(() => undefined);
}

async function stepParallel(w: World, blob: Blob, n: number): Promise<TransferResult> {
  const list = [...w.portcullisAuto, w.nginxAuto, w.caddy];
  const path = `/v2/${BLOB_REPO}/blobs/${blob.digest}`;
  return transferStep(
    w,
    `${n} parallel downloads (curl), all cores`,
    n * blob.size,
    list,
    (t) => Promise.all(Array.from({ length: n }, () => warmDownload(w, blob)(t))),
    (t) => Promise.all(Array.from({ length: n }, () => download(t, w.access, path, blob.size))),
  );
}

/**
 * Downloads alone, then the same downloads while a brute force sends 50 requests per second, each with the
 * right user name and a new wrong password.
 */
async function stepFlood(w: World, blob: Blob): Promise<FloodRow[]> {
  const list = [...w.portcullis, w.nginx, w.caddy];
  const path = `/v2/${BLOB_REPO}/blobs/${blob.digest}`;
  const rows: FloodRow[] = list.map((s) => ({ id: s.id, label: s.label, quietMbps: [], floodMbps: [], kept: null, floodAnswers: {}, floodRps: [], cutRuns: 0 }));
  const bytes = FLOOD_DOWNLOADS * blob.size;
  /** The downloads, given up once `limitMs` has passed in all (then null). */
  const twice = async (t: Target, limitMs = 300_000): Promise<Transfer | null> => {
    const started = performance.now();
    for (let k = 0; k < FLOOD_DOWNLOADS; k++) {
      const left = limitMs - (performance.now() - started);
      if (left <= 0) return null;
      try {
        await download(t, w.access, path, blob.size, undefined, left);
      } catch (e) {
        if (performance.now() - started >= limitMs - 100) return null;
        throw e;
      }
    }
    const seconds = (performance.now() - started) / 1000;
    return { bytes, seconds, mbps: bytes / seconds / 1e6 };
  };
  for (let i = 0; i < RUNS; i++) {
    for (const spec of rotated(list, i)) {
      const row = rows.find((r) => r.id === spec.id)!;
      try {
        await fresh(w, spec, async (t) => {
          await warmDownload(w, blob)(t);
          const quiet = await twice(t);
          if (quiet === null) throw new Error(`${spec.id}: the downloads alone did not finish in 300 s`);
          // A target that collapses under the flood (nginx checks every password in its one worker) would
          // take many minutes: it is given ten times its quiet time, and its MB/s is then an upper bound.
          const limitMs = Math.max(30_000, 10 * quiet.seconds * 1000);
          const flood = startLoadgen(t, w.access, { method: 'GET', path: '/v2/', seconds: 600, rate: FLOOD_RATE, wrongPasswordsFor: w.access.creds.user });
          let loud: Transfer | null;
          try {
            await sleep(1000);
            loud = await twice(t, limitMs);
          } finally {
            const f = await flood.stop();
            row.floodRps.push(f.rps);
            for (const [s, c] of Object.entries(f.statuses)) row.floodAnswers[s] = (row.floodAnswers[s] ?? 0) + c;
            log(`  flood, run ${i + 1}, ${spec.id}: ${fmt(f.rps)} wrong passwords/s answered (${JSON.stringify(f.statuses)})`);
          }
          if (loud === null) row.cutRuns++;
          const loudMbps = loud?.mbps ?? bytes / (limitMs / 1000) / 1e6;
          row.quietMbps.push(quiet.mbps);
          row.floodMbps.push(loudMbps);
          log(`  flood, run ${i + 1}, ${spec.id}: ${fmt(quiet.mbps)} MB/s alone, ${loud === null ? 'under ' : ''}${fmt(loudMbps)} MB/s under the flood${loud === null ? ` (not done after ${fmt(limitMs / 1000)} s)` : ''}`);
        });
      } catch (e) {
        note(`flood ${spec.id} run ${i + 1}`, e);
      }
    }
  }
  for (const r of rows) r.kept = median(r.floodMbps.map((v, k) => v / r.quietMbps[k]!));
  return rows;
}

/** One fresh process through a 2 GiB chunked PATCH and 2 GiB of downloads: its peak RSS over the session. */
async function stepMemory(w: World, blob: Blob): Promise<NonNullable<Results['memory']>> {
  const list = [...w.portcullis, w.nginx, w.caddy];
  const rows: MemoryRow[] = [];
  const downloads = Math.max(1, Math.round((2 * GiB) / blob.size));
  const path = `/v2/${BLOB_REPO}/blobs/${blob.digest}`;
  for (const spec of list) {
    try {
      await fresh(w, spec, async (t) => {
        const idle = memoryOf(t.pids());
        await api(t, w.access, 'GET', '/v2/');
        const gc0 = await gcOf(t);
        const location = await startUpload(t, w.access, 'bench/stream');
        const cpu0 = cpuSeconds(t.pids());
        const sampler = sampleRss(() => t.pids());
        let patch: Transfer;
        try {
          patch = await chunkedPatch(t, w.access, location, P.patchBytes);
        } finally {
          sampler.stop();
          await cancelUpload(w, location);
        }
        const patchCpu = cpuSeconds(t.pids()) - cpu0;
        const afterPatch = memoryOf(t.pids());
        const started = performance.now();
        for (let i = 0; i < downloads; i++) await download(t, w.access, path, blob.size);
        const dlSeconds = (performance.now() - started) / 1000;
        await sleep(100);
        const gc1 = await gcOf(t);
        const end = memoryOf(t.pids());
        rows.push({
          id: spec.id,
          label: spec.label,
          idleMiB: mib(idle.rssKiB),
          afterPatchPeakMiB: mib(afterPatch.hwmKiB),
          sessionPeakMiB: mib(end.hwmKiB),
          patchMbps: patch.mbps,
          patchCpuPerGiB: patchCpu / (patch.bytes / GiB),
          downloadMbps: (downloads * blob.size) / dlSeconds / 1e6,
          fullGcs: gc0 && gc1 ? gc1.major - gc0.major : null,
        });
        log(`  ${spec.id}: RSS ${mib(idle.rssKiB)} MiB idle, peak ${mib(afterPatch.hwmKiB)} MiB after the PATCH, ${mib(end.hwmKiB)} MiB over the session`);
      });
    } catch (e) {
      note(`memory ${spec.id}`, e);
    }
  }
  return { patchBytes: P.patchBytes, downloadBytes: downloads * blob.size, rows };
}

async function stepSkopeo(w: World): Promise<NonNullable<Results['skopeo']>> {
  const list = [w.registrySpec, ...w.portcullis, w.nginx, w.caddy];
  const rows: SkopeoRow[] = list.map((s) => ({ id: s.id, label: s.label, push: [], pull: [] }));
  for (let i = 0; i < P.skopeoRuns; i++) {
    for (const spec of rotated(list, i)) {
      const row = rows.find((r) => r.id === spec.id)!;
      // A new image every time: no layer the registry or skopeo's blob cache knows, nothing to mount.
      const src = join(w.work, `oci-src-${spec.id}-${i}`);
      const dst = join(w.work, `oci-pull-${spec.id}-${i}`);
      const name = `bench/skopeo-${spec.id}-${i}:v1`;
      try {
        await fresh(w, spec, async (t) => {
          const img = await writeImage(src, { layers: P.layers, layerSize: P.layerSize, tag: 'v1' });
          row.push.push(await skopeoPush(t, w.access, img.ref, name));
          row.pull.push(await skopeoPull(t, w.access, name, dst, 'v1'));
          log(`  run ${i + 1} ${spec.id}: push ${fmt(row.push.at(-1), 2)} s, pull ${fmt(row.pull.at(-1), 2)} s`);
        });
      } catch (e) {
        note(`skopeo ${spec.id} run ${i + 1}`, e);
      } finally {
        rmSync(src, { recursive: true, force: true });
        rmSync(dst, { recursive: true, force: true });
      }
    }
  }
  return { layers: P.layers, layerSize: P.layerSize, rows };
}

// ---------------------------------------------------------------------------------------- a manifest

const MANIFEST_PATH = `/v2/${BLOB_REPO}/manifests/latest`;
const MANIFEST_TYPE = 'application/vnd.docker.distribution.manifest.v2+json';
const MANIFEST_ACCEPT = { Accept: MANIFEST_TYPE };

/** PUT a body to the registry itself (plain HTTP). */
function registryPut(w: World, path: string, body: Buffer, contentType: string): Promise<number> {
  return new Promise((resolvePut, reject) => {
    const req = httpRequest(
      { host: '127.0.0.1', port: w.registry.port, method: 'PUT', path, agent: false, headers: { 'content-type': contentType, 'content-length': body.length } },
      (res) => {
        res.resume();
        res.once('end', () => resolvePut(res.statusCode ?? 0));
      },
    );
    req.once('error', reject);
    req.end(body);
  });
}

/** A manifest for the blob (and a small config), so HEAD /v2/.../manifests/latest has something to answer. */
async function pushManifest(w: World, blob: Blob): Promise<void> {
  const config = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: [blob.digest] } }));
  const configDigest = `sha256:${createHash('sha256').update(config).digest('hex')}`;
  const start = await api(w.registry, w.access, 'POST', `/v2/${BLOB_REPO}/blobs/uploads/`);
  const loc = new URL(String(start.headers.location), w.registry.origin);
  loc.searchParams.set('digest', configDigest);
  if ((await registryPut(w, loc.pathname + loc.search, config, 'application/octet-stream')) !== 201) throw new Error('config upload failed');
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: MANIFEST_TYPE,
      config: { mediaType: 'application/vnd.docker.container.image.v1+json', size: config.length, digest: configDigest },
      layers: [{ mediaType: 'application/vnd.docker.image.rootfs.diff.tar.gzip', size: blob.size, digest: blob.digest }],
    }),
  );
  if ((await registryPut(w, MANIFEST_PATH, manifest, MANIFEST_TYPE)) !== 201) throw new Error('manifest upload failed');
}

// ----------------------------------------------------------------------------------------- reporting

const loadTable = (r: LoadResult, base: string): string => {
  const baseRow = r.rows.find((x) => x.id === base);
  const rows = r.rows.map((x) => [
    x.label,
    fmt(x.rps),
    fmt(x.p50ms, 2),
    fmt(x.p99ms, 1),
    String(x.errors),
    fmt(x.cpuMsPer1k),
    x.firstMs === undefined || x.firstMs === null ? '—' : fmt(x.firstMs),
    x.id === base || x.id === 'registry' ? '—' : fmtRatio(ratio(x.rps, baseRow?.rps)),
    x.id === base || x.id === 'registry' ? '—' : fmtRatio(ratio(x.cpuMsPer1k, baseRow?.cpuMsPer1k)),
  ]);
  return [
    `### ${r.title}`,
    '',
    table(['target', 'req/s', 'p50 ms', 'p99 ms', 'errors', 'CPU ms / 1k req', 'first request ms', 'req/s ÷ Caddy', 'CPU/req ÷ Caddy'], rows),
  ].join('\n');
};

const gcCell = (v: Array<number | null>): string => (v.every((x) => x === null) ? '—' : v.map((x) => (x === null ? '?' : String(x))).join(', '));

function transferTable(r: TransferResult, base: string, extra: 'registry' | null = null): string {
  const b = r.rows.find((x) => x.id === base);
  const reg = r.rows.find((x) => x.id === 'registry');
  const rows = r.rows.map((x) => {
    const cells = [
      x.label,
      fmt(x.medianMbps),
      x.mbps.map((v) => fmt(v)).join(', '),
      fmt(x.medianCpuPerGiB, 2),
      gcCell(x.fullGcs),
      gcCell(x.scavenges),
      x.id === base || x.id === 'registry' ? '—' : fmtRatio(ratio(x.medianMbps, b?.medianMbps)),
      x.id === base || x.id === 'registry' ? '—' : fmtRatio(ratio(x.medianCpuPerGiB, b?.medianCpuPerGiB)),
    ];
    if (extra === 'registry') cells.push(x.id.startsWith('portcullis') || x.id.startsWith('nginx') || x.id === 'caddy' ? fmtRatio(ratio(x.medianMbps, reg?.medianMbps)) : '—');
    return cells;
  });
  const baseName = base.startsWith('nginx-auto') ? 'nginx (auto)' : 'nginx';
  const headers = ['target', 'MB/s', 'runs (MB/s)', 'CPU s / GiB', 'full GCs per run', 'scavenges per run', `MB/s ÷ ${baseName}`, `CPU ÷ ${baseName}`];
  if (extra === 'registry') headers.push('MB/s ÷ registry');
  return [`### ${r.title}, ${fmt(r.bytes / MiB)} MiB, median of ${RUNS} fresh processes`, '', table(headers, rows)].join('\n');
}

function latencyTable(rows: LatencyRow[]): string {
  const reg = rows.find((r) => r.id === 'registry');
  const add = (v: number | null, b: number | null | undefined): string => (v === null || b === null || b === undefined ? '—' : fmt(v - b, 2));
  return [
    `### One connection, one request at a time: p50 latency (ms), and what each adds to the registry's`,
    '',
    table(
      ['target', 'GET /v2/ p50', 'added', 'HEAD manifest p50', 'added'],
      rows.map((r) => [r.label, fmt(r.getP50ms, 3), r.id === 'registry' ? '—' : add(r.getP50ms, reg?.getP50ms), fmt(r.headP50ms, 3), r.id === 'registry' ? '—' : add(r.headP50ms, reg?.headP50ms)]),
    ),
  ].join('\n');
}

function floodTable(rows: FloodRow[]): string {
  return [
    `### ${FLOOD_DOWNLOADS} downloads alone, and under ${FLOOD_RATE} wrong passwords per second (MB/s, median of ${RUNS})`,
    '',
    table(
      ['target', 'alone', 'under the flood', 'kept', 'runs cut at 10× its quiet time', 'flood req/s answered', 'flood answers'],
      rows.map((r) => [
        r.label,
        fmt(median(r.quietMbps)),
        fmt(median(r.floodMbps)),
        fmtRatio(r.kept),
        String(r.cutRuns),
        fmt(median(r.floodRps)),
        Object.entries(r.floodAnswers).map(([s, c]) => `${s}: ${c}`).join(', '),
      ]),
    ),
  ].join('\n');
}

function memoryTable(m: NonNullable<Results['memory']>): string {
  return [
    `### Memory of one fresh process: RSS in MiB through a ${fmt(m.patchBytes / MiB)} MiB chunked PATCH, then ${fmt(m.downloadBytes / MiB)} MiB of downloads`,
    '',
    table(
      ['target', 'idle', 'peak after the PATCH', 'peak over the session', 'PATCH MB/s', 'PATCH CPU s / GiB', 'download MB/s', 'full GCs'],
      m.rows.map((r) => [
        r.label + (r.id.startsWith('nginx') ? ' (master + worker)' : ''),
        fmt(r.idleMiB, 1),
        fmt(r.afterPatchPeakMiB, 1),
        fmt(r.sessionPeakMiB, 1),
        fmt(r.patchMbps),
        fmt(r.patchCpuPerGiB, 2),
        fmt(r.downloadMbps),
        r.fullGcs === null ? '—' : String(r.fullGcs),
      ]),
    ),
  ].join('\n');
}

function skopeoTable(s: NonNullable<Results['skopeo']>): string {
  return [
    `### skopeo copy, ${s.layers} layers × ${fmt(s.layerSize / MiB)} MiB, seconds, median of ${P.skopeoRuns}`,
    '',
    table(['target', 'push s', 'pull s'], s.rows.map((r) => [r.label, fmt(median(r.push), 2), fmt(median(r.pull), 2)])),
  ].join('\n');
}

/** The issue's goals, each from this run's figures. */
function goals(): Goal[] {
  const out: Goal[] = [];
  const tr = (prefix: string): TransferResult | undefined => results.transfers.find((t) => t.title.startsWith(prefix));
  const row = (t: TransferResult | undefined, id: string): TransferRow | undefined => t?.rows.find((r) => r.id === id);
  const ids = ['portcullis', ...opts.nodes.map((n) => `portcullis-node${nodeMajorOf(n)}`)];
  const gcs = results.transfers.flatMap((t) => t.rows.filter((r) => ids.includes(r.id) || ids.some((i) => r.id === `${i}-auto`)).flatMap((r) => r.fullGcs.map((g) => (g === null ? null : g / (t.bytes / (512 * MiB))))));
  const known = gcs.filter((g): g is number => g !== null);
  if (known.length > 0) out.push({ goal: 'no full-GC storm (full GCs per 512 MiB, every transfer, every major)', measured: `at most ${fmt(Math.max(...known), 1)}`, met: Math.max(...known) < 2 });
  for (const id of ids) {
    const dl = tr('Blob download');
    const p = row(dl, id);
    const n = row(dl, 'nginx');
    if (p && n) {
      const r = ratio(p.medianMbps, n.medianMbps);
      out.push({ goal: `${id}: single download ≥ 1.0× nginx MB/s`, measured: `${fmtRatio(r)} (CPU ${fmt(p.medianCpuPerGiB, 2)} vs ${fmt(n.medianCpuPerGiB, 2)} s/GiB)`, met: r === null ? null : r >= 1 });
    }
    for (const [prefix, what] of [['Blob upload (POST', 'PUT'], ['Blob upload (chunked', 'PATCH']] as const) {
      const up = tr(prefix);
      const pu = row(up, id);
      const nu = row(up, 'nginx');
      const reg = row(up, 'registry');
      if (pu && nu) {
        const c = ratio(pu.medianCpuPerGiB, nu.medianCpuPerGiB);
        out.push({ goal: `${id}: ${what} upload CPU per GiB ≤ 1.2× nginx`, measured: `${fmtRatio(c)} (${fmt(pu.medianCpuPerGiB, 2)} vs ${fmt(nu.medianCpuPerGiB, 2)})`, met: c === null ? null : c <= 1.2 });
      }
      if (pu && reg) {
        const m = ratio(pu.medianMbps, reg.medianMbps);
        out.push({ goal: `${id}: ${what} MB/s ≥ 0.95× the registry alone`, measured: fmtRatio(m), met: m === null ? null : m >= 0.95 });
      }
    }
    for (const n of [2, 8]) {
      const par = tr(`${n} parallel`);
      const pp = row(par, `${id}-auto`);
      const na = row(par, 'nginx-auto');
      if (pp && na) {
        const r = ratio(pp.medianMbps, na.medianMbps);
        out.push({ goal: `${id}, workers: auto: ${n} parallel downloads ≥ 1.0× nginx (auto)`, measured: `${fmtRatio(r)} (CPU ${fmt(pp.medianCpuPerGiB, 2)} vs ${fmt(na.medianCpuPerGiB, 2)} s/GiB)`, met: r === null ? null : r >= 1 });
      }
    }
    for (const l of results.load.filter((x) => x.title.includes('cost 10') || x.title.includes('manifest'))) {
      const c = l.rows.find((r) => r.id === 'caddy');
      for (const v of [id, `${id}-auto`]) {
        const p = l.rows.find((r) => r.id === v);
        if (!p || !c) continue;
        const rate = ratio(p.rps, c.rps);
        const cpu = ratio(p.cpuMsPer1k, c.cpuMsPer1k);
        out.push({
          goal: `${v}: ${l.title.includes('manifest') ? 'manifest HEAD' : 'GET /v2/'} ≥ Caddy's rate, ≤ its CPU per request`,
          measured: `rate ${fmtRatio(rate)}, CPU ${fmtRatio(cpu)}`,
          met: rate === null || cpu === null ? null : rate >= 1 && cpu <= 1,
        });
      }
    }
    const lat = results.latency;
    const reg = lat?.find((r) => r.id === 'registry');
    const pl = lat?.find((r) => r.id === id);
    if (reg && pl && pl.getP50ms !== null && reg.getP50ms !== null && pl.headP50ms !== null && reg.headP50ms !== null) {
      const added = Math.max(pl.getP50ms - reg.getP50ms, pl.headP50ms - reg.headP50ms);
      out.push({ goal: `${id}: added p50 latency at one connection < 1 ms`, measured: `${fmt(pl.getP50ms - reg.getP50ms, 2)} ms (GET /v2/), ${fmt(pl.headP50ms - reg.headP50ms, 2)} ms (HEAD)`, met: added < 1 });
    }
    const mem = results.memory?.rows.find((r) => r.id === id);
    if (mem) out.push({ goal: `${id}: peak RSS < 100 MiB through ${fmt(results.memory!.patchBytes / GiB)} GiB up and ${fmt(results.memory!.downloadBytes / GiB)} GiB down`, measured: `${fmt(mem.sessionPeakMiB, 1)} MiB`, met: mem.sessionPeakMiB < 100 });
    const fl = results.flood?.find((r) => r.id === id);
    if (fl) out.push({ goal: `${id}: download under ${FLOOD_RATE} wrong passwords/s keeps ≥ 0.8× its throughput`, measured: fmtRatio(fl.kept), met: fl.kept === null ? null : fl.kept >= 0.8 });
  }
  return out;
}

function chartBars(): ChartBar[] {
  const bars: ChartBar[] = [];
  const tr = (prefix: string): TransferResult | undefined => results.transfers.find((t) => t.title.startsWith(prefix));
  const ids = ['portcullis', ...opts.nodes.map((n) => `portcullis-node${nodeMajorOf(n)}`)];
  for (const id of ids) {
    const tag = id === 'portcullis' ? `Node ${process.versions.node.split('.')[0]}` : id.replace('portcullis-node', 'Node ');
    const pair = (t: TransferResult | undefined, a: string, b: string): [TransferRow | undefined, TransferRow | undefined] => [t?.rows.find((r) => r.id === a), t?.rows.find((r) => r.id === b)];
    const [dl, dn] = pair(tr('Blob download'), id, 'nginx');
    if (dl && dn) {
      bars.push({ label: `${tag}: download MB/s ÷ nginx`, value: ratio(dl.medianMbps, dn.medianMbps), goal: 1 });
      bars.push({ label: `${tag}: download, nginx CPU ÷ ours`, value: ratio(dn.medianCpuPerGiB, dl.medianCpuPerGiB), goal: null });
    }
    for (const [prefix, what] of [['Blob upload (POST', 'PUT'], ['Blob upload (chunked', 'PATCH']] as const) {
      const [u, un] = pair(tr(prefix), id, 'nginx');
      const [, reg] = pair(tr(prefix), id, 'registry');
      if (u && reg) bars.push({ label: `${tag}: ${what} MB/s ÷ registry alone`, value: ratio(u.medianMbps, reg.medianMbps), goal: 0.95 });
      if (u && un) bars.push({ label: `${tag}: ${what}, nginx CPU ÷ ours`, value: ratio(un.medianCpuPerGiB, u.medianCpuPerGiB), goal: 1 / 1.2 });
    }
    for (const n of [2, 8]) {
      const [pp, na] = pair(tr(`${n} parallel`), `${id}-auto`, 'nginx-auto');
      if (pp && na) bars.push({ label: `${tag}: ${n} parallel MB/s ÷ nginx (auto)`, value: ratio(pp.medianMbps, na.medianMbps), goal: 1 });
    }
    for (const l of results.load.filter((x) => x.title.includes('cost 10') || x.title.includes('manifest'))) {
      const c = l.rows.find((r) => r.id === 'caddy');
      const what = l.title.includes('manifest') ? 'HEAD manifest' : 'GET /v2/';
      for (const v of [id, `${id}-auto`]) {
        const p = l.rows.find((r) => r.id === v);
        if (!p || !c) continue;
        const w = v.endsWith('-auto') ? ', auto' : '';
        bars.push({ label: `${tag}${w}: ${what} req/s ÷ Caddy`, value: ratio(p.rps, c.rps), goal: 1 });
        bars.push({ label: `${tag}${w}: ${what}, Caddy CPU ÷ ours`, value: ratio(c.cpuMsPer1k, p.cpuMsPer1k), goal: 1 });
      }
    }
    const mem = results.memory?.rows.find((r) => r.id === id);
    if (mem) bars.push({ label: `${tag}: 100 MiB ÷ peak RSS`, value: 100 / mem.sessionPeakMiB, goal: 1 });
    const fl = results.flood?.find((r) => r.id === id);
    if (fl) bars.push({ label: `${tag}: throughput kept under the flood`, value: fl.kept, goal: 0.8 });
  }
  return bars;
}

function report(): string {
  const m = results.machine;
  const v = results.versions;
  const parts = [
    `## Results, ${results.date.slice(0, 16).replace('T', ' ')} UTC${quick ? ' (--quick)' : ''}`,
    '',
    `${m.cpus} CPUs (${m.model}), ${m.memoryGiB} GiB, Linux ${m.kernel}, Node ${m.node}${opts.nodes.length ? ` and ${opts.nodes.map((n) => `Node ${nodeMajorOf(n)}`).join(', ')}` : ''}; ` +
      `nginx ${v['nginx'] ?? '?'}, Caddy ${v['caddy'] ?? '?'}, distribution ${v['registry'] ?? '?'}, wrk ${v['wrk'] ?? '?'}, curl ${v['curl'] ?? '?'}, skopeo ${v['skopeo'] ?? '?'}. ` +
      `Load average at the start ${m.loadAverage.map((x) => x.toFixed(1)).join(', ')}.`,
  ];
  if (results.goals.length > 0) {
    parts.push('', '### Goals', '', table(['goal', 'measured', 'met'], results.goals.map((g) => [g.goal, g.measured, g.met === null ? '—' : g.met ? 'yes' : '**no**'])));
  }
  for (const l of results.load) parts.push('', loadTable(l, 'caddy'));
  if (results.latency) parts.push('', latencyTable(results.latency));
  for (const t of results.transfers) {
    parts.push('', transferTable(t, t.title.includes('parallel') ? 'nginx-auto' : 'nginx', t.title.startsWith('Blob upload') ? 'registry' : null));
  }
  if (results.flood) parts.push('', floodTable(results.flood));
  if (results.memory) parts.push('', memoryTable(results.memory));
  if (results.skopeo) parts.push('', skopeoTable(results.skopeo));
  if (results.errors.length > 0) parts.push('', '### Errors', '', ...results.errors.map((e) => `- ${e.split('\n')[0]}`));
  parts.push('', `Total time: ${fmt(results.elapsedSeconds)} s.`);
  return parts.join('\n');
}

// -------------------------------------------------------------------------------------------- main

async function main(): Promise<void> {
  installCleanupHandlers();
  keepTempDirs(opts.keep);
  log(`Portcullis side-by-side benchmark${quick ? ' (--quick)' : ''}: ${[...opts.steps].join(', ')}; ${RUNS} fresh process(es) per target and transfer`);
  await ensureTools(log);
  await checkLocalhost();
  results.versions = await versions();
  results.machine.loadAverage = (await import('node:os')).loadavg();

  const work = makeTempDir('portcullis-bench-');
  // nginx's workers run unprivileged: every folder on the way to the htpasswd file must be readable.
  chmodSync(work, 0o755);
  if (opts.keep) log(`working folder (kept): ${work}`);
  const certs = await makeCerts(join(work, 'tls'));
  const creds = await makeCredentials(join(work, 'auth'), COST);
  const access: Access = { certs, creds };
  const registry = await startRegistry(join(work, 'registry'));
  const inputs: ProxyInputs = { registry, certs, creds };
  const w: World = {
    work,
    access,
    inputs,
    registry,
    registrySpec: { id: 'registry', kind: 'registry', label: 'registry alone (HTTP, no auth)', start: async () => registry },
    ...specs(work, inputs),
  };
  log(`registry ${registry.origin}`);

  const blob = await step(`random blob of ${P.blobBytes / MiB} MiB, and a manifest`, 180_000, async () => {
    const b = await makeBlobFile(join(work, 'blob.bin'), P.blobBytes);
    await pushBlob(registry, access, BLOB_REPO, b);
    await pushManifest(w, b);
    return b;
  });

  const loadBudget = (n: number): number => n * (P.loadSeconds + 30) * 1000 + 120_000;
  const loadList = [w.registrySpec, ...w.portcullis, ...w.portcullisAuto, w.nginx, w.caddy];
  if (has('auth')) {
    const r = await step(`authenticated GET /v2/, bcrypt cost ${COST}`, loadBudget(loadList.length), () =>
      stepLoad(w, loadList, `Authenticated GET /v2/, bcrypt cost ${COST} (wrk, ${CONNECTIONS} connections, ${P.loadSeconds} s)`, 'ping', access),
    );
    if (r) results.load.push(r);
  }
  if (has('auth12')) {
    // The same proxies checking a cost-12 hash of the same password.
    const r = await step(`authenticated GET /v2/, bcrypt cost ${COST_HIGH}`, loadBudget(loadList.length), async () => {
      const high = await makeCredentials(join(work, 'auth'), COST_HIGH, creds.password);
      const s = specs(work, inputs, high);
      return stepLoad(w, [...s.portcullis, s.nginx, s.caddy], `Authenticated GET /v2/, bcrypt cost ${COST_HIGH} (wrk, ${CONNECTIONS} connections, ${P.loadSeconds} s)`, 'ping', { certs, creds: high });
    });
    if (r) results.load.push(r);
  }
  if (blob && has('manifest')) {
    const r = await step('authenticated manifest HEAD', loadBudget(loadList.length), () =>
      stepLoad(w, loadList, `Authenticated manifest HEAD (loadgen, ${CONNECTIONS} connections, ${P.loadSeconds} s)`, 'manifest', access),
    );
    if (r) results.load.push(r);
  }
  if (blob && has('latency')) {
    results.latency = await step('latency at one connection', loadBudget(loadList.length), () => stepLatency(w, [w.registrySpec, ...w.portcullis, w.nginx, w.caddy]));
  }
  const transferBudget = (targets: number, transfers = 1): number => RUNS * targets * transfers * 150_000 + 60_000;
  if (blob && has('download')) {
    const r = await step('blob download', transferBudget(4 + w.portcullis.length), () => stepDownload(w, blob));
    if (r) results.transfers.push(r);
  }
  if (blob && has('upload')) {
    const r = await step('blob upload', transferBudget(4 + w.portcullis.length, 2), () => stepUpload(w, blob));
    if (r) results.transfers.push(...r);
  }
  if (blob && has('parallel')) {
    for (const n of [2, 8]) {
      const r = await step(`${n} parallel downloads`, transferBudget(2 + w.portcullis.length, n), () => stepParallel(w, blob, n));
      if (r) results.transfers.push(r);
    }
  }
  if (blob && has('flood')) {
    results.flood = await step('download under a wrong-password flood', transferBudget(2 + w.portcullis.length, 3), () => stepFlood(w, blob));
  }
  if (blob && has('memory')) {
    results.memory = await step('memory', (2 + w.portcullis.length) * 600_000, () => stepMemory(w, blob));
  }
  if (has('skopeo')) {
    results.skopeo = await step('skopeo push/pull', P.skopeoRuns * (3 + w.portcullis.length) * 240_000, () => stepSkopeo(w));
  }
  if (blob) rmSync(blob.file, { force: true });
  await registry.stop();

  results.goals = goals();
  results.elapsedSeconds = Math.round((performance.now() - t0) / 1000);
  mkdirSync(RESULTS_DIR, { recursive: true });
  writeFileSync(join(RESULTS_DIR, 'latest.json'), JSON.stringify(results, null, 2) + '\n');
  const bars = chartBars();
  if (bars.length > 0) writeFileSync(join(RESULTS_DIR, 'ratios.svg'), ratioChart(`Portcullis against nginx, Caddy and the registry, ${results.date.slice(0, 10)}`, bars));
  process.stdout.write(`\n${report()}\n\n`);
  log(`wrote ${join(RESULTS_DIR, 'latest.json')}${bars.length > 0 ? ' and ratios.svg' : ''}`);
  if (results.errors.length > 0) process.exitCode = 1;
}

main().catch((e: unknown) => {
  process.stderr.write(`bench: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
  process.exitCode = 1;
});
