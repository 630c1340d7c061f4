/**
 * Soak: a steady mix of traffic, reloads and abuse through the built proxy for a set time, with its resources
 * sampled; passes when well-behaved clients saw no error and no sampled series grows faster than its bound
 * over the second half (least-squares slope). What runs and how it is judged: soak-engine.ts.
 *
 *   npm run soak -- --minutes 10
 *   npm run soak -- --minutes 30 --workers auto --rate 2 --sample-every 5
 *
 * Prints Markdown tables and writes them, with every sample, to test/reliability/results/ (not committed).
 * Exit 1 when it does not pass.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { fixed, markdownTable } from '../helpers/stats.js';
import { exitOnSignals, parseFlags } from './args.js';
import { runSoak, type SoakResult } from './soak-engine.js';

const flags = parseFlags(
  process.argv.slice(2),
  {
    minutes: { default: 10, help: 'how long the traffic runs' },
    'sample-every': { default: 5, help: 'seconds between samples' },
    workers: { default: '1', help: '`workers` setting of the proxy: a number or auto' },
    rate: { default: 1, help: 'multiplies the pace of every activity' },
    quiet: { default: false, help: 'no progress line per sample' },
    out: { default: '', help: 'results file (default test/reliability/results/soak-<time>.md)' },
  },
  'npm run soak -- [flags]',
);
exitOnSignals();

const workers = flags.workers === 'auto' ? 'auto' : Number(flags.workers);
if (workers !== 'auto' && !(Number.isInteger(workers) && workers >= 1)) {
  process.stderr.write(`--workers must be a number >= 1 or auto, not "${flags.workers}"\n`);
  process.exit(2);
}
if (flags.rate <= 0) {
  process.stderr.write('--rate must be above 0\n');
  process.exit(2);
}

const result = await runSoak({
  durationMs: flags.minutes * 60_000,
  sampleEveryMs: flags['sample-every'] * 1000,
  workers,
  rate: flags.rate,
  ...(flags.quiet ? {} : { log: (line: string) => process.stdout.write(`${line}\n`) }),
});
const report = render(result);
process.stdout.write(`\n${report}\n`);
const dir = fileURLToPath(new URL('./results/', import.meta.url));
mkdirSync(dir, { recursive: true });
const stamp = new Date().toISOString().replace(/[:.]/g, '-');
const file = flags.out !== '' ? flags.out : join(dir, `soak-${stamp}.md`);
writeFileSync(file, `${report}\n\n## Samples\n\n${samplesTable(result)}\n`);
writeFileSync(join(dir, 'soak-latest.md'), `${report}\n\n## Samples\n\n${samplesTable(result)}\n`);
process.stdout.write(`\nwritten to ${file}\n`);
if (!result.pass) {
  process.stderr.write(`SOAK FAILED:\n${result.failures.map((f) => `- ${f}`).join('\n')}\n`);
  process.exitCode = 1;
}

function render(r: SoakResult): string {
  const minutes = r.durationMs / 60_000;
  return [
    `## Soak (${new Date().toISOString()}): ${r.pass ? 'PASS' : 'FAIL'}`,
    '',
    `${fixed(minutes, 1)} min, workers ${String(r.options.workers)} (${r.proxyProcesses} proxy process(es)), rate x${r.options.rate}, ` +
      `a sample every ${fixed(r.options.sampleEveryMs / 1000)} s (${r.samples.length} samples); ${r.requests} requests answered by the proxy ` +
      `(${fixed(r.requests / (r.durationMs / 1000), 1)}/s). Reloads: htpasswd ${r.reloads.htpasswdOk} ok / ${r.reloads.htpasswdError} refused, ` +
      `certificate ${r.reloads.tlsOk} ok / ${r.reloads.tlsError} refused. Machine: ${cpus().length} cores, load average at the end ` +
      `${loadavg().map((l) => l.toFixed(2)).join(' ')}.`,
    '',
    markdownTable(
      ['activity', 'kind', 'completed', 'failed'],
      r.activities.map((a) => [a.name, a.wellBehaved ? 'well-behaved' : 'hostile / operations', a.ok, a.failures]),
    ),
    '',
    'Growth over the second half (least-squares slope; bound = max(floor, allowance / minutes fitted)):',
    '',
    markdownTable(
      ['series', 'first', 'last', 'slope /min', '± (1 s.e.)', 'bound /min', 'floor /min', 'allowance', 'verdict'],
      r.slopes.map((s) => [
        `${s.series} (${s.unit})`,
        fixed(s.first, 1),
        fixed(s.last, 1),
        fixed(s.perMin, 3),
        fixed(s.errorPerMin, 3),
        fixed(s.boundPerMin, 2),
        s.limit.floorPerMin,
        s.limit.allowance,
        s.pass ? 'ok' : 'GROWS',
      ]),
    ),
    ...(r.failures.length > 0 ? ['', 'Failures:', '', ...r.failures.map((f) => `- ${f}`)] : []),
  ].join('\n');
}

function samplesTable(r: SoakResult): string {
  return markdownTable(
    ['t s', 'RSS MiB', 'heap MiB', 'loop p99 ms', 'fds', 'upstream sockets', 'handles', 'in flight'],
    r.samples.map((s) => [fixed(s.t), fixed(s.rssMiB, 1), fixed(s.heapMiB, 1), fixed(s.loopP99Ms, 1), s.fds, s.upstreamSockets, s.handles, s.inFlight]),
  );
}
