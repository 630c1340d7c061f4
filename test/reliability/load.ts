/**
 * Load with integrity: concurrent pushes of distinct images, then concurrent pulls spread over them, through
 * the built proxy in front of the real registry, once per `workers` setting. Every digest is verified: what a
 * push stored is read back from the registry itself (manifest digest, every blob's size), and every pull
 * re-hashes every blob it received. The run fails (exit 1) on any error or mismatch.
 *
 *   npm run load                                  # 20 pushes, 100 pulls, workers 1 then auto, skopeo
 *   npm run load -- --pushes 8 --pulls 40         # smaller
 *   npm run load -- --client node                 # the Node client (re-hashes as it streams; per-request timings)
 *   npm run load -- --workers 1,2,4 --layers 3 --layer-size 4M
 *
 * Prints a Markdown table and writes it to test/reliability/results/ (not committed).
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { availableParallelism, cpus, loadavg } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { request, skopeoCopy } from '../helpers/clients.js';
import { buildOciImage, readOciImage, type OciImage } from '../helpers/oci-image.js';
import { makeTempDir, removeTempDir } from '../helpers/proc.js';
import { accessLines, startPortcullis, type RunningPortcullis } from '../helpers/portcullis.js';
import { treeSampler, type TreePeaks } from '../helpers/procstat.js';
import { metricSum } from '../helpers/prometheus.js';
import { memoryImage, RegistryClient, type MemoryImage, type Operation } from '../helpers/registry-client.js';
import { startRegistry, type RunningRegistry } from '../helpers/registry.js';
import { writeHtpasswd } from '../helpers/stack.js';
import { fixed, markdownTable, MiB, percentile } from '../helpers/stats.js';
import { makeTestCerts, type TestCerts } from '../helpers/tls.js';
import { exitOnSignals, parseFlags, parseSize } from './args.js';

const flags = parseFlags(
  process.argv.slice(2),
  {
    pushes: { default: 20, help: 'concurrent pushes, one distinct image each' },
    pulls: { default: 100, help: 'concurrent pulls, spread round-robin over the pushed images' },
    layers: { default: 2, help: 'layers per image' },
    'layer-size': { default: '1M', help: 'bytes per layer before gzip (random, so about the same after)' },
    workers: { default: '1,auto', help: 'comma-separated `workers` settings, one run each' },
    client: { default: 'skopeo', help: 'skopeo (one process per push or pull) or node (one pooled client per operation)' },
    out: { default: '', help: 'results file (default test/reliability/results/load-<time>.md)' },
  },
  'npm run load -- [flags]',
);
exitOnSignals();

const USER = 'loader';
const PASSWORD = 'load:with:integrity';
const layerSize = parseSize(flags['layer-size']);
if (flags.client !== 'skopeo' && flags.client !== 'node') {
  process.stderr.write(`--client must be skopeo or node, not "${flags.client}"\n`);
  process.exit(2);
}
const settings = flags.workers.split(',').map((s) => s.trim()).filter((s) => s !== '');

interface Phase {
  name: 'push' | 'pull';
  ms: number[];
  errors: string[];
  wallMs: number;
}

interface RunResult {
  workers: string;
  processes: number;
  phases: Phase[];
  requestMs: Map<Operation, number[]>;
  verified: number;
  peaks: TreePeaks;
  proxy5xx: number;
  mismatches: string[];
}

async function main(): Promise<void> {
  const started = Date.now();
  const [registry, certs] = await Promise.all([startRegistry(), makeTestCerts()]);
  const htpasswd = await writeHtpasswd(makeTempDir('portcullis-load-'), { [USER]: PASSWORD });
  const results: RunResult[] = [];
  try {
    for (const w of settings) results.push(await runOnce(w, registry, certs, htpasswd));
  } finally {
    await registry.close();
    certs.cleanup();
  }
  const report = render(results, Date.now() - started);
  process.stdout.write(`\n${report}\n`);
  const dir = fileURLToPath(new URL('./results/', import.meta.url));
  mkdirSync(dir, { recursive: true });
  const file = flags.out !== '' ? flags.out : join(dir, `load-${new Date().toISOString().replace(/[:.]/g, '-')}.md`);
  writeFileSync(file, `${report}\n`);
  writeFileSync(join(dir, 'load-latest.md'), `${report}\n`);
  process.stdout.write(`\nwritten to ${file}\n`);
  const failed = results.some((r) => r.phases.some((p) => p.errors.length > 0) || r.mismatches.length > 0 || r.proxy5xx > 0);
  if (failed) {
    for (const r of results) {
      for (const p of r.phases) for (const e of p.errors.slice(0, 10)) process.stderr.write(`workers ${r.workers} ${p.name}: ${e}\n`);
      for (const m of r.mismatches.slice(0, 10)) process.stderr.write(`workers ${r.workers}: ${m}\n`);
    }
    process.stderr.write('LOAD FAILED: errors or digest mismatches above\n');
    process.exitCode = 1;
  }
}

async function runOnce(workers: string, registry: RunningRegistry, certs: TestCerts, htpasswd: string): Promise<RunResult> {
  const tag = `w${workers}`;
  process.stdout.write(`workers ${workers}: building ${flags.pushes} images of ${flags.layers} x ${fixed(layerSize / MiB, 2)} MiB\n`);
  const work = makeTempDir('portcullis-load-images-');
  const images: Array<{ name: string; oci: OciImage | null; mem: MemoryImage | null; manifestDigest: string }> = [];
  for (let i = 0; i < flags.pushes; i++) {
    const seed = `load/${tag}/${i}/${process.pid}`;
    const name = `load/${tag}/img-${i}`;
    if (flags.client === 'skopeo') {
      const oci = await buildOciImage(join(work, `img-${i}`), { layers: flags.layers, layerSize, tag: 'v1', seed });
      images.push({ name, oci, mem: null, manifestDigest: oci.manifestDigest });
    } else {
      const mem = memoryImage(seed, flags.layers, layerSize);
      images.push({ name, oci: null, mem, manifestDigest: mem.manifestDigest });
    }
  }

  const proxy = await startPortcullis(
    {
      listen: '127.0.0.1:0',
      workers: workers === 'auto' ? 'auto' : Number(workers),
      tls: { cert: certs.certFile, key: certs.keyFile },
      upstream: { url: registry.url },
      // Every client connects from 127.0.0.1 with the right password: the throttle has nothing to do here.
      auth: { htpasswd, maxFailures: 0, maxFailuresPerAddress: 0 },
      metrics: { listen: '127.0.0.1:0' },
    },
    { readyTimeoutMs: 30_000 },
  );
  const requestMs = new Map<Operation, number[]>();
  const onTiming = (op: Operation, ms: number): void => {
    const list = requestMs.get(op) ?? [];
    list.push(ms);
    requestMs.set(op, list);
  };
  let verified = 0;
  const mismatches: string[] = [];
  const sampler = treeSampler(proxy.proc.pid!, registry.port);
  try {
    // Pushes, all at once.
    process.stdout.write(`workers ${workers}: ${flags.pushes} concurrent pushes\n`);
    const push = await phase('push', images.map((img) => async () => {
      if (img.oci) {
        const r = await skopeoCopy(img.oci.ref, `docker://${proxy.hostPort}/${img.name}:v1`, {
          dest: { certDir: certs.caDir, creds: `${USER}:${PASSWORD}` },
          timeoutMs: 300_000,
        });
        if (r.code !== 0) throw new Error(`skopeo push ${img.name}: exit ${r.code ?? r.signal}: ${r.stderr.trim().split('\n').slice(-3).join(' | ')}`);
      } else {
        const client = nodeClient(proxy, certs, onTiming);
        try {
          await client.push(img.name, 'v1', img.mem!);
          verified += client.verified;
        } finally {
          client.close();
        }
      }
    }));

    // What the registry itself stored: the manifest digest under the tag, and every blob at its size.
    for (const img of images) verified += await verifyStored(registry, img.name, img.manifestDigest, mismatches);

    // Pulls, all at once, round-robin over the images.
    process.stdout.write(`workers ${workers}: ${flags.pulls} concurrent pulls\n`);
    const pull = await phase('pull', Array.from({ length: flags.pulls }, (_, i) => async () => {
      const img = images[i % images.length]!;
      if (img.oci) {
        const out = makeTempDir('portcullis-load-pull-');
        try {
          const r = await skopeoCopy(`docker://${proxy.hostPort}/${img.name}:v1`, `oci:${out}:v1`, {
            src: { certDir: certs.caDir, creds: `${USER}:${PASSWORD}` },
            timeoutMs: 300_000,
          });
          if (r.code !== 0) throw new Error(`skopeo pull ${img.name}: exit ${r.code ?? r.signal}: ${r.stderr.trim().split('\n').slice(-3).join(' | ')}`);
          // Re-hashes the manifest and every blob written to disk.
          const pulled = readOciImage(out, 'v1');
          verified += 2 + pulled.layerDigests.length;
          if (pulled.manifestDigest !== img.manifestDigest) mismatches.push(`pull ${i} of ${img.name}: manifest ${pulled.manifestDigest}, pushed ${img.manifestDigest}`);
        } finally {
          removeTempDir(out);
        }
      } else {
        const client = nodeClient(proxy, certs, onTiming);
        try {
          await client.pull(img.name, 'v1', img.manifestDigest);
          verified += client.verified;
        } finally {
          client.close();
        }
      }
    }));

    const peaks = sampler.stop();
    const metrics = await request(`${proxy.metricsUrl!}/metrics`);
    const proxy5xx = metricSum(metrics.text(), 'portcullis_requests_total', { status_class: '5xx' });
    const loggedErrors = accessLines(proxy, (l) => Number(l['status']) >= 500 || (l['error'] !== null && l['error'] !== undefined));
    for (const l of loggedErrors.slice(0, 10)) mismatches.push(`proxy logged ${String(l['status'])} ${String(l['error'])} for ${String(l['method'])} ${String(l['path'])}`);
    return { workers, processes: peaks.processes, phases: [push, pull], requestMs, verified, peaks, proxy5xx, mismatches };
  } finally {
    sampler.stop();
    const code = await proxy.stop();
    if (code !== 0) mismatches.push(`proxy exited ${code} on SIGTERM`);
    removeTempDir(work);
  }
}

function nodeClient(proxy: RunningPortcullis, certs: TestCerts, onTiming: (op: Operation, ms: number) => void): RegistryClient {
  return new RegistryClient({ origin: proxy.url, ca: certs.ca, user: USER, password: PASSWORD, maxSockets: 4, timeoutMs: 120_000, onTiming });
}

async function phase(name: Phase['name'], jobs: Array<() => Promise<void>>): Promise<Phase> {
  const ms: number[] = [];
  const errors: string[] = [];
  const started = performance.now();
  await Promise.all(
    jobs.map(async (job) => {
      const t = performance.now();
      try {
        await job();
        ms.push(performance.now() - t);
      } catch (e) {
        errors.push(e instanceof Error ? e.message : String(e));
      }
    }),
  );
  return { name, ms, errors, wallMs: performance.now() - started };
}

/** Count of digests confirmed at the registry itself (bypassing the proxy); mismatches are recorded. */
async function verifyStored(registry: RunningRegistry, name: string, manifestDigest: string, mismatches: string[]): Promise<number> {
  const m = await request(`${registry.url}/v2/${name}/manifests/v1`, { headers: { accept: 'application/vnd.oci.image.manifest.v1+json' } });
  if (m.status !== 200 || m.headers['docker-content-digest'] !== manifestDigest) {
    mismatches.push(`${name}: registry has ${m.status} ${String(m.headers['docker-content-digest'])}, pushed ${manifestDigest}`);
    return 0;
  }
  let n = 1;
  const manifest = m.json() as { config: { digest: string; size: number }; layers: Array<{ digest: string; size: number }> };
  for (const b of [manifest.config, ...manifest.layers]) {
    const h = await request(`${registry.url}/v2/${name}/blobs/${b.digest}`, { method: 'HEAD' });
    if (h.status !== 200 || Number(h.headers['content-length']) !== b.size) mismatches.push(`${name}: blob ${b.digest} is ${h.status}, ${String(h.headers['content-length'])} bytes`);
    else n++;
  }
  return n;
}

function render(results: RunResult[], totalMs: number): string {
  const client = flags.client === 'skopeo' ? 'skopeo copy, one process each' : 'Node client, one pool each';
  const head = [
    `## Load with integrity (${new Date().toISOString()})`,
    '',
    `${flags.pushes} concurrent pushes of distinct images (${flags.layers} layers x ${fixed(layerSize / MiB, 2)} MiB), then ${flags.pulls} concurrent pulls ` +
      `round-robin over them; client: ${client}. Machine: ${cpus().length} cores (${cpus()[0]?.model ?? '?'}), ` +
      `availableParallelism ${availableParallelism()}, load average at the end ${loadavg().map((l) => l.toFixed(2)).join(' ')}. Total ${fixed(totalMs / 1000, 1)} s.`,
    '',
  ];
  const ops = results.flatMap((r) =>
    r.phases.map((p) => [
      r.workers,
      p.name,
      p.ms.length + p.errors.length,
      p.errors.length,
      fixed(percentile(p.ms, 50)),
      fixed(percentile(p.ms, 99)),
      fixed(Math.max(0, ...p.ms)),
      fixed(p.wallMs / 1000, 1),
    ]),
  );
  const table1 = markdownTable(['workers', 'operation', 'n', 'errors', 'p50 ms', 'p99 ms', 'max ms', 'phase wall s'], ops);
  const table2 = markdownTable(
    ['workers', 'proxy processes', 'digests verified', 'mismatches', 'proxy 5xx', 'peak RSS MiB (sum)', 'max VmHWM MiB (one process)', 'peak fds (sum)', 'peak upstream sockets'],
    results.map((r) => [
      r.workers,
      r.processes,
      r.verified,
      r.mismatches.length,
      r.proxy5xx,
      fixed(r.peaks.peakRss / MiB, 1),
      fixed(r.peaks.maxHwm / MiB, 1),
      r.peaks.peakFds,
      r.peaks.peakUpstream,
    ]),
  );
  const parts = [...head, table1, '', table2];
  const requestRows = results.flatMap((r) =>
    [...r.requestMs.entries()].map(([op, list]) => [r.workers, op, list.length, fixed(percentile(list, 50), 1), fixed(percentile(list, 99), 1)]),
  );
  if (requestRows.length > 0) parts.push('', 'Per request (Node client):', '', markdownTable(['workers', 'request', 'n', 'p50 ms', 'p99 ms'], requestRows));
  return parts.join('\n');
}

await main();
