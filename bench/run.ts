/**
 * Side-by-side benchmark: Portcullis, the distribution project's nginx recipe and Caddy, all in front of
 * one real registry on this machine, in one run. Reports ratios: the machine is shared and noisy, so
 * absolute numbers move from run to run; the order between targets measured seconds apart much less.
 *
 *   npm run bench                            # full run (about 6 minutes on 2 cores)
 *   npm run bench -- --quick                 # smoke run: 64 MiB blobs, 3 s of wrk
 *   npm run bench -- --steps auth,download   # only some steps: auth, auth12, download, upload, memory, skopeo
 *   npm run bench -- --keep                  # keep the temp dir (configs, logs, registry data)
 *
 * Prints Markdown tables and writes bench/results/latest.json. Sends traffic to 127.0.0.1 only.
 * Type-check: npx tsc -p bench/tsconfig.json. What the numbers mean: docs/benchmarks.md.
 */
import { createHash, randomFillSync } from 'node:crypto';
import { chmodSync, createWriteStream, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { once } from 'node:events';
import { cpus, release, totalmem } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  api,
  chunkedPatch,
  download,
  firstRequestMs,
  putFile,
  skopeoPull,
  skopeoPush,
  startUpload,
  wrkGetV2,
  wrkWarmUp,
  type Access,
  type Transfer,
  type WrkResult,
} from './lib/clients.js';
import { writeImage } from './lib/oci.js';
import { installCleanupHandlers, keepTempDirs, makeTempDir, run, withDeadline } from './lib/proc.js';
import { cpuSeconds, memoryOf, mib, resetPeak, sampleRss } from './lib/procstat.js';
import { fmt, fmtRatio, median, ratio, table } from './lib/report.js';
import { checkLocalhost, ensureTools, makeCerts, makeCredentials } from './lib/setup.js';
import {
  startCaddy,
  startNginx,
  startNodePipe,
  startPortcullis,
  startRegistry,
  type ProxyInputs,
  type Target,
  type TargetId,
} from './lib/targets.js';

// ------------------------------------------------------------------------------------------- options

const STEPS = ['auth', 'auth12', 'download', 'upload', 'memory', 'skopeo'] as const;
type Step = (typeof STEPS)[number];

const MiB = 1024 * 1024;
const GiB = 1024 * MiB;
const argv = process.argv.slice(2);
const quick = argv.includes('--quick');
const keep = argv.includes('--keep');
const stepsIndex = argv.findIndex((a) => a === '--steps' || a.startsWith('--steps='));
const stepsValue = stepsIndex === -1 ? undefined : argv[stepsIndex]!.startsWith('--steps=') ? argv[stepsIndex]!.slice(8) : argv[stepsIndex + 1];
if (stepsIndex !== -1 && stepsValue === undefined) fail('--steps needs a list, e.g. --steps auth,download');
const steps = new Set<string>(stepsValue === undefined ? STEPS : stepsValue.split(',').map((s) => s.trim()));
for (const s of steps) if (!(STEPS as readonly string[]).includes(s)) fail(`unknown step "${s}" (steps: ${STEPS.join(', ')})`);
for (const [i, a] of argv.entries()) {
  const known = a === '--quick' || a === '--keep' || a === '--steps' || a.startsWith('--steps=') || (i === stepsIndex + 1 && argv[stepsIndex] === '--steps');
  if (!known) fail(`unknown argument ${a} (options: --quick, --keep, --steps LIST)`);
}
const has = (s: Step): boolean => steps.has(s);

const P = quick
  ? { wrkSeconds: 3, blobBytes: 64 * MiB, runs: 3, patchBytes: 256 * MiB, layers: 4, layerSize: 8 * MiB, skopeoRuns: 1 }
  : { wrkSeconds: 10, blobBytes: 512 * MiB, runs: 3, patchBytes: 2 * GiB, layers: 4, layerSize: 64 * MiB, skopeoRuns: 3 };
/** One hash for every target: cost 10 (htpasswd -B's default is 5, many guides use 10 or 12). */
const COST = 10;
const COST_HIGH = 12;
const CONNECTIONS = 32;

const RESULTS_DIR = fileURLToPath(new URL('./results/', import.meta.url));

function fail(message: string): never {
  process.stderr.write(`bench: ${message}\n`);
  process.exit(2);
}

const t0 = performance.now();
function log(line: string): void {
  const s = ((performance.now() - t0) / 1000).toFixed(0).padStart(4);
  process.stderr.write(`[${s}s] ${line}\n`);
}

/** Targets in a different order each run, so a slow moment of the machine does not always hit the same one. */
function rotated<T>(list: readonly T[], by: number): T[] {
  const k = by % list.length;
  return [...list.slice(k), ...list.slice(0, k)];
}

// ------------------------------------------------------------------------------------------- results

interface AuthRow extends WrkResult {
  /** A fresh connection's first authenticated GET /v2/ (TLS handshake + one password check), ms. */
  firstMs: number | null;
  /** CPU time of the target's processes per 1000 requests of the measured pass, ms. */
  cpuMsPer1k: number | null;
}
interface AuthResult {
  cost: number;
  seconds: number;
  connections: number;
  targets: Partial<Record<TargetId, AuthRow>>;
  /** Portcullis req/s ÷ the other's: above 1, Portcullis answers more. */
  ratios: { portcullisToNginx: number | null; portcullisToCaddy: number | null };
}
interface TransferSeries {
  /** Per run, in run order: 10^6 bytes per second as the client saw it. */
  mbps: number[];
  /** Per run: CPU seconds the target's processes used per GiB moved. */
  cpuPerGiB: number[];
  medianMbps: number | null;
  medianCpuPerGiB: number | null;
}
interface TransferResult {
  bytes: number;
  runs: number;
  targets: Partial<Record<TargetId, TransferSeries>>;
  /** Throughput ratios (Portcullis ÷ other: above 1, Portcullis is faster). */
  ratios: { portcullisToNginx: number | null; portcullisToCaddy: number | null; portcullisToNodePipe: number | null };
}
interface PatchMemory {
  beforeMiB: number;
  peakMiB: number;
  firstHalfPeakMiB: number;
  secondHalfPeakMiB: number;
  afterMiB: number;
  /** VmHWM after the upload; only meaningful when hwmReset (the kernel let us reset it before). */
  hwmMiB: number | null;
  mbps: number;
  cpuPerGiB: number;
}
interface MemoryResult {
  /** VmHWM when the step starts: the peak since the process started, over all steps before. */
  peakSinceStartMiB: Partial<Record<TargetId, number>>;
  patchBytes: number;
  patch: Partial<Record<TargetId, PatchMemory>>;
}
interface SkopeoResult {
  layers: number;
  layerSize: number;
  imageBytes: number;
  runs: number;
  push: Partial<Record<TargetId, { seconds: number[]; median: number | null }>>;
  pull: Partial<Record<TargetId, { seconds: number[]; median: number | null }>>;
  /** The other's seconds ÷ Portcullis's: above 1, Portcullis is faster. */
  ratios: { pushToNginx: number | null; pushToCaddy: number | null; pullToNginx: number | null; pullToCaddy: number | null };
}
interface Results {
  date: string;
  quick: boolean;
  machine: { cpus: number; model: string; memoryGiB: number; kernel: string; node: string };
  versions: Record<string, string>;
  auth: AuthResult | null;
  auth12: AuthResult | null;
  download: TransferResult | null;
  upload: TransferResult | null;
  memory: MemoryResult | null;
  skopeo: SkopeoResult | null;
  errors: string[];
  elapsedSeconds: number;
}

const results: Results = {
  date: new Date().toISOString(),
  quick,
  machine: {
    cpus: cpus().length,
    model: cpus()[0]?.model ?? 'unknown',
    memoryGiB: Math.round(totalmem() / GiB),
    kernel: release(),
    node: process.version,
  },
  versions: {},
  auth: null,
  auth12: null,
  download: null,
  upload: null,
  memory: null,
  skopeo: null,
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
  return {
    nginx: await first('nginx', ['-v'], /nginx\/(\S+)/),
    caddy: await first('caddy', ['version'], /^v?(\S+)/),
    registry: await first('docker-registry', ['--version'], /distribution (\S+)/),
    wrk: await first('wrk', ['--version'], /^wrk (\S+)/),
    curl: await first('curl', ['--version'], /^curl (\S+)/),
    skopeo: await first('skopeo', ['--version'], /version (\S+)/),
  };
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

// --------------------------------------------------------------------------------------------- steps

type Targets = Partial<Record<TargetId, Target>>;

function pick(targets: Targets, ids: readonly TargetId[]): Target[] {
  return ids.flatMap((id) => (targets[id] ? [targets[id]] : []));
}

async function stepAuth(list: readonly Target[], access: Access): Promise<AuthResult> {
  const out: AuthResult = {
    cost: access.creds.cost,
    seconds: P.wrkSeconds,
    connections: CONNECTIONS,
    targets: {},
    ratios: { portcullisToNginx: null, portcullisToCaddy: null },
  };
  for (const t of list) {
    try {
      const firstMs = t.auth ? await firstRequestMs(t, access) : null;
      await wrkWarmUp(t, access);
      const cpu0 = cpuSeconds(t.pids());
      const w = await wrkGetV2(t, access, P.wrkSeconds, CONNECTIONS);
      const cpu = cpuSeconds(t.pids()) - cpu0;
      const cpuMsPer1k = w.requests > 0 ? (cpu * 1000 * 1000) / w.requests : null;
      out.targets[t.id] = { ...w, firstMs, cpuMsPer1k };
      log(`  ${t.id}: ${fmt(w.rps)} req/s, p50 ${fmt(w.p50ms, 1)} ms, ${w.errors} errors${firstMs !== null ? `, first request ${fmt(firstMs)} ms` : ''}`);
    } catch (e) {
      note(`auth (cost ${access.creds.cost}) ${t.id}`, e);
    }
  }
  const rps = (id: TargetId): number | null => out.targets[id]?.rps ?? null;
  out.ratios = { portcullisToNginx: ratio(rps('portcullis'), rps('nginx')), portcullisToCaddy: ratio(rps('portcullis'), rps('caddy')) };
  return out;
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

const TRANSFER_TARGETS: TargetId[] = ['registry', 'portcullis', 'nginx', 'caddy', 'node-pipe'];

/** Measure one transfer: the client's rate and the target's CPU time. */
async function measured(t: Target, series: Partial<Record<TargetId, TransferSeries>>, work: () => Promise<Transfer>): Promise<Transfer> {
  const cpu0 = cpuSeconds(t.pids());
  const r = await work();
  const cpu = cpuSeconds(t.pids()) - cpu0;
  const s = (series[t.id] ??= { mbps: [], cpuPerGiB: [], medianMbps: null, medianCpuPerGiB: null });
  s.mbps.push(r.mbps);
  s.cpuPerGiB.push(cpu / (r.bytes / GiB));
  return r;
}

function finishTransfer(r: TransferResult): TransferResult {
  for (const s of Object.values(r.targets)) {
    s.medianMbps = median(s.mbps);
    s.medianCpuPerGiB = median(s.cpuPerGiB);
  }
  const m = (id: TargetId): number | null => r.targets[id]?.medianMbps ?? null;
  r.ratios = {
    portcullisToNginx: ratio(m('portcullis'), m('nginx')),
    portcullisToCaddy: ratio(m('portcullis'), m('caddy')),
    portcullisToNodePipe: ratio(m('portcullis'), m('node-pipe')),
  };
  return r;
}

function newTransfer(bytes: number): TransferResult {
  return { bytes, runs: P.runs, targets: {}, ratios: { portcullisToNginx: null, portcullisToCaddy: null, portcullisToNodePipe: null } };
}

async function stepDownload(targets: Targets, access: Access, blob: Blob): Promise<TransferResult> {
  const out = newTransfer(blob.size);
  const path = `/v2/bench/download/blobs/${blob.digest}`;
  await download(targets.registry!, access, path, blob.size); // page cache warm-up, not counted
  for (let i = 0; i < P.runs; i++) {
    for (const t of rotated(pick(targets, TRANSFER_TARGETS), i)) {
      try {
        const r = await measured(t, out.targets, () => download(t, access, path, blob.size));
        log(`  run ${i + 1} ${t.id}: ${fmt(r.mbps)} MB/s`);
      } catch (e) {
        note(`download ${t.id} run ${i + 1}`, e);
      }
    }
  }
  return finishTransfer(out);
}

/** Monolithic upload (POST, then PUT with the whole body and ?digest=). */
async function pushBlob(t: Target, access: Access, repo: string, blob: Blob): Promise<Transfer> {
  const url = await startUpload(t, access, repo);
  return putFile(t, access, url, blob.file, blob.digest, blob.size);
}

async function stepUpload(targets: Targets, access: Access, blob: Blob): Promise<TransferResult> {
  const out = newTransfer(blob.size);
  const repo = 'bench/upload';
  const registry = targets.registry!;
  for (let i = 0; i < P.runs; i++) {
    for (const t of rotated(pick(targets, TRANSFER_TARGETS), i)) {
      try {
        // Unlink the previous copy, so every run is a complete upload into the repository.
        await api(registry, access, 'DELETE', `/v2/${repo}/blobs/${blob.digest}`);
        const r = await measured(t, out.targets, () => pushBlob(t, access, repo, blob));
        log(`  run ${i + 1} ${t.id}: ${fmt(r.mbps)} MB/s`);
      } catch (e) {
        note(`upload ${t.id} run ${i + 1}`, e);
      }
    }
  }
  return finishTransfer(out);
}

async function stepMemory(targets: Targets, access: Access): Promise<MemoryResult> {
  const out: MemoryResult = { peakSinceStartMiB: {}, patchBytes: P.patchBytes, patch: {} };
  const list = pick(targets, ['portcullis', 'nginx', 'caddy']);
  for (const t of list) out.peakSinceStartMiB[t.id] = mib(memoryOf(t.pids()).hwmKiB);
  const registry = targets.registry!;
  for (const t of list) {
    let location: string | null = null;
    try {
      location = await startUpload(t, access, 'bench/stream');
      const before = memoryOf(t.pids());
      const hwmReset = resetPeak(t.pids());
      const cpu0 = cpuSeconds(t.pids());
      const sampler = sampleRss(() => t.pids());
      let transfer: Transfer | null = null;
      try {
        transfer = await chunkedPatch(t, access, location, P.patchBytes);
      } finally {
        const s = sampler.stop();
        const cpu = cpuSeconds(t.pids()) - cpu0;
        const after = memoryOf(t.pids());
        if (transfer) {
          const peak = hwmReset ? Math.max(s.peakKiB, after.hwmKiB) : s.peakKiB;
          out.patch[t.id] = {
            beforeMiB: mib(before.rssKiB),
            peakMiB: mib(peak),
            firstHalfPeakMiB: mib(s.firstHalfPeakKiB),
            secondHalfPeakMiB: mib(s.secondHalfPeakKiB),
            afterMiB: mib(after.rssKiB),
            hwmMiB: hwmReset ? mib(after.hwmKiB) : null,
            mbps: transfer.mbps,
            cpuPerGiB: cpu / (transfer.bytes / GiB),
          };
          log(
            `  ${t.id}: RSS ${mib(before.rssKiB)} MiB before, peak ${mib(s.firstHalfPeakKiB)} / ${mib(s.secondHalfPeakKiB)} MiB ` +
              `(first / second half), ${fmt(transfer.mbps)} MB/s`,
          );
        }
      }
    } catch (e) {
      note(`memory ${t.id}`, e);
    } finally {
      if (location !== null) {
        // Cancel the upload session on the registry itself: frees its disk space at once.
        const u = new URL(location);
        await api(registry, access, 'DELETE', u.pathname + u.search).catch(() => undefined);
      }
    }
  }
  return out;
}

async function stepSkopeo(targets: Targets, access: Access, workDir: string): Promise<SkopeoResult> {
  const out: SkopeoResult = {
    layers: P.layers,
    layerSize: P.layerSize,
    imageBytes: 0,
    runs: P.skopeoRuns,
    push: {},
    pull: {},
    ratios: { pushToNginx: null, pushToCaddy: null, pullToNginx: null, pullToCaddy: null },
  };
  for (let i = 0; i < P.skopeoRuns; i++) {
    for (const t of rotated(pick(targets, ['registry', 'portcullis', 'nginx', 'caddy']), i)) {
      // A new image every time: no layer the registry or skopeo's blob cache knows, nothing to mount.
      const src = join(workDir, `oci-src-${t.id}-${i}`);
      const dst = join(workDir, `oci-pull-${t.id}-${i}`);
      const name = `bench/skopeo-${t.id}-${i}:v1`;
      try {
        const img = await writeImage(src, { layers: P.layers, layerSize: P.layerSize, tag: 'v1' });
        out.imageBytes = img.bytes;
        const push = await skopeoPush(t, access, img.ref, name);
        (out.push[t.id] ??= { seconds: [], median: null }).seconds.push(push);
        const pull = await skopeoPull(t, access, name, dst, 'v1');
        (out.pull[t.id] ??= { seconds: [], median: null }).seconds.push(pull);
        log(`  run ${i + 1} ${t.id}: push ${fmt(push, 2)} s, pull ${fmt(pull, 2)} s`);
      } catch (e) {
        note(`skopeo ${t.id} run ${i + 1}`, e);
      } finally {
        rmSync(src, { recursive: true, force: true });
        rmSync(dst, { recursive: true, force: true });
      }
    }
  }
  for (const s of [...Object.values(out.push), ...Object.values(out.pull)]) s.median = median(s.seconds);
  const m = (side: 'push' | 'pull', id: TargetId): number | null => out[side][id]?.median ?? null;
  out.ratios = {
    pushToNginx: ratio(m('push', 'nginx'), m('push', 'portcullis')),
    pushToCaddy: ratio(m('push', 'caddy'), m('push', 'portcullis')),
    pullToNginx: ratio(m('pull', 'nginx'), m('pull', 'portcullis')),
    pullToCaddy: ratio(m('pull', 'caddy'), m('pull', 'portcullis')),
  };
  return out;
}

// ----------------------------------------------------------------------------------------- reporting

const LABEL: Record<TargetId, string> = {
  registry: 'registry alone (HTTP, no auth)',
  portcullis: 'Portcullis',
  nginx: 'nginx recipe',
  caddy: 'Caddy',
  'node-pipe': 'plain Node pipe (reference)',
};

function authTable(a: AuthResult): string {
  const rows = (['registry', 'portcullis', 'nginx', 'caddy'] as const).flatMap((id) => {
    const r = a.targets[id];
    if (!r) return [];
    return [[LABEL[id], fmt(r.rps), fmt(r.p50ms, 1), fmt(r.p99ms, 1), String(r.errors), fmt(r.cpuMsPer1k), r.firstMs === null ? '—' : fmt(r.firstMs)]];
  });
  return [
    `### Authenticated GET /v2/, bcrypt cost ${a.cost} (wrk, ${a.connections} connections, ${a.seconds} s)`,
    '',
    table(['target', 'req/s', 'p50 ms', 'p99 ms', 'errors', 'CPU ms / 1k req', 'first request ms'], rows),
    '',
    `req/s ratio: Portcullis / nginx **${fmtRatio(a.ratios.portcullisToNginx)}**, Portcullis / Caddy **${fmtRatio(a.ratios.portcullisToCaddy)}**`,
  ].join('\n');
}

function transferTable(title: string, r: TransferResult): string {
  const rows = TRANSFER_TARGETS.flatMap((id) => {
    const s = r.targets[id];
    return s ? [[LABEL[id], fmt(s.medianMbps), s.mbps.map((v) => fmt(v)).join(', '), fmt(s.medianCpuPerGiB, 2)]] : [];
  });
  return [
    `### ${title}, ${r.bytes / MiB} MiB, median of ${r.runs}`,
    '',
    table(['target', 'MB/s', 'runs (MB/s)', 'target CPU s / GiB'], rows),
    '',
    `MB/s ratio: Portcullis / nginx **${fmtRatio(r.ratios.portcullisToNginx)}**, Portcullis / Caddy **${fmtRatio(r.ratios.portcullisToCaddy)}**, ` +
      `Portcullis / plain Node pipe **${fmtRatio(r.ratios.portcullisToNodePipe)}**`,
  ].join('\n');
}

function memoryTable(m: MemoryResult): string {
  const rows = (['portcullis', 'nginx', 'caddy'] as const).flatMap((id) => {
    const p = m.patch[id];
    const since = m.peakSinceStartMiB[id];
    if (!p && since === undefined) return [];
    return [[
      LABEL[id] + (id === 'nginx' ? ' (master + worker)' : ''),
      fmt(since, 1),
      p ? fmt(p.beforeMiB, 1) : '—',
      p ? `${fmt(p.firstHalfPeakMiB, 1)} / ${fmt(p.secondHalfPeakMiB, 1)}` : '—',
      p ? fmt(p.afterMiB, 1) : '—',
      p ? fmt(p.mbps) : '—',
      p ? fmt(p.cpuPerGiB, 2) : '—',
    ]];
  });
  return [
    `### Memory: RSS in MiB, one ${m.patchBytes / MiB} MiB chunked PATCH`,
    '',
    table(['target', 'peak since start', 'before', 'peak, 1st / 2nd half', 'after', 'PATCH MB/s', 'CPU s / GiB'], rows),
  ].join('\n');
}

function skopeoTable(s: SkopeoResult): string {
  const rows = (['registry', 'portcullis', 'nginx', 'caddy'] as const).flatMap((id) => {
    const push = s.push[id];
    const pull = s.pull[id];
    if (!push && !pull) return [];
    return [[LABEL[id], fmt(push?.median, 2), fmt(pull?.median, 2)]];
  });
  return [
    `### skopeo copy, ${s.layers} layers × ${s.layerSize / MiB} MiB (${fmt(s.imageBytes / MiB)} MiB), seconds, median of ${s.runs}`,
    '',
    table(['target', 'push s', 'pull s'], rows),
    '',
    `Speed ratio (other's seconds / Portcullis's; above 1, Portcullis is faster): push vs nginx **${fmtRatio(s.ratios.pushToNginx)}**, ` +
      `vs Caddy **${fmtRatio(s.ratios.pushToCaddy)}**; pull vs nginx **${fmtRatio(s.ratios.pullToNginx)}**, vs Caddy **${fmtRatio(s.ratios.pullToCaddy)}**`,
  ].join('\n');
}

function report(): string {
  const m = results.machine;
  const v = results.versions;
  const parts = [
    `## Results, ${results.date.slice(0, 16).replace('T', ' ')} UTC${quick ? ' (--quick)' : ''}`,
    '',
    `${m.cpus} CPUs (${m.model}), ${m.memoryGiB} GiB, Linux ${m.kernel}, Node ${m.node}; nginx ${v['nginx'] ?? '?'}, Caddy ${v['caddy'] ?? '?'}, ` +
      `distribution ${v['registry'] ?? '?'}, wrk ${v['wrk'] ?? '?'}, curl ${v['curl'] ?? '?'}, skopeo ${v['skopeo'] ?? '?'}.`,
  ];
  if (results.auth) parts.push('', authTable(results.auth));
  if (results.auth12) parts.push('', authTable(results.auth12));
  if (results.download) parts.push('', transferTable('Blob download (GET, curl, HTTP/1.1)', results.download));
  if (results.upload) parts.push('', transferTable('Blob upload (POST + monolithic PUT, curl, HTTP/1.1)', results.upload));
  if (results.memory) parts.push('', memoryTable(results.memory));
  if (results.skopeo) parts.push('', skopeoTable(results.skopeo));
  if (results.errors.length > 0) parts.push('', '### Errors', '', ...results.errors.map((e) => `- ${e.split('\n')[0]}`));
  parts.push('', `Total time: ${fmt(results.elapsedSeconds)} s.`);
  return parts.join('\n');
}

// -------------------------------------------------------------------------------------------- main

async function startProxies(work: string, inputs: ProxyInputs, suffix: string): Promise<Targets> {
  const t: Targets = {};
  for (const [id, start] of [
    ['portcullis', startPortcullis],
    ['nginx', startNginx],
    ['caddy', startCaddy],
  ] as const) {
    try {
      t[id] = await start(join(work, `${id}${suffix}`), inputs);
    } catch (e) {
      note(`start ${id}`, e);
    }
  }
  return t;
}

async function main(): Promise<void> {
  installCleanupHandlers();
  keepTempDirs(keep);
  log(`Portcullis side-by-side benchmark${quick ? ' (--quick)' : ''}: ${[...steps].join(', ')}`);
  await ensureTools(log);
  await checkLocalhost();
  results.versions = await versions();

  const work = makeTempDir('portcullis-bench-');
  // nginx's workers run unprivileged: every folder on the way to the htpasswd file must be readable.
  chmodSync(work, 0o755);
  if (keep) log(`working folder (kept): ${work}`);
  const certs = await makeCerts(join(work, 'tls'));
  const creds = await makeCredentials(join(work, 'auth'), COST);
  const access: Access = { certs, creds };

  const targets: Targets = { registry: await startRegistry(join(work, 'registry')) };
  const inputs: ProxyInputs = { registry: targets.registry!, certs, creds };
  Object.assign(targets, await startProxies(work, inputs, ''));
  try {
    targets['node-pipe'] = await startNodePipe(inputs);
  } catch (e) {
    note('start node-pipe', e);
  }
  log(`started: ${Object.values(targets).map((t) => `${t.id} ${t.origin}`).join(', ')}`);

  const wrkBudget = (P.wrkSeconds + 20) * 4 * 1000 + 120_000;
  if (has('auth')) {
    results.auth = await step(`authenticated GET /v2/, bcrypt cost ${COST}`, wrkBudget, () =>
      stepAuth(pick(targets, ['registry', 'portcullis', 'nginx', 'caddy']), access),
    );
  }
  if (has('auth12')) {
    // A second set of proxies checking a cost-12 hash of the same password; stopped right after.
    results.auth12 = await step(`authenticated GET /v2/, bcrypt cost ${COST_HIGH}`, wrkBudget, async () => {
      const high = await makeCredentials(join(work, 'auth'), COST_HIGH, creds.password);
      const set = await startProxies(work, { ...inputs, creds: high }, `-cost${COST_HIGH}`);
      try {
        return await stepAuth(pick(set, ['portcullis', 'nginx', 'caddy']), { certs, creds: high });
      } finally {
        for (const t of Object.values(set)) await t.stop();
      }
    });
  }

  let blob: Blob | null = null;
  if (has('download') || has('upload')) {
    blob = await step(`random blob of ${P.blobBytes / MiB} MiB`, 180_000, async () => {
      const b = await makeBlobFile(join(work, 'blob.bin'), P.blobBytes);
      await pushBlob(targets.registry!, access, 'bench/download', b);
      return b;
    });
  }
  const transferBudget = P.runs * TRANSFER_TARGETS.length * 90_000;
  if (blob && has('download')) {
    const b = blob;
    results.download = await step('blob download', transferBudget, () => stepDownload(targets, access, b));
  }
  if (blob && has('upload')) {
    const b = blob;
    results.upload = await step('blob upload', transferBudget, () => stepUpload(targets, access, b));
  }
  if (blob) rmSync(blob.file, { force: true });

  if (has('memory')) {
    results.memory = await step(`memory, ${P.patchBytes / MiB} MiB chunked PATCH`, 3 * 300_000, () => stepMemory(targets, access));
  }
  if (has('skopeo')) {
    results.skopeo = await step('skopeo push/pull', P.skopeoRuns * 4 * 240_000, () => stepSkopeo(targets, access, work));
  }

  for (const t of Object.values(targets)) await t.stop();
  results.elapsedSeconds = Math.round((performance.now() - t0) / 1000);
  mkdirSync(RESULTS_DIR, { recursive: true });
  writeFileSync(join(RESULTS_DIR, 'latest.json'), JSON.stringify(results, null, 2) + '\n');
  process.stdout.write(`\n${report()}\n\n`);
  log(`wrote ${join(RESULTS_DIR, 'latest.json')}`);
  if (results.errors.length > 0) process.exitCode = 1;
}

main().catch((e: unknown) => {
  process.stderr.write(`bench: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
  process.exitCode = 1;
});
