/**
 * The soak, short: about 60 s of the steady mix `npm run soak` runs for minutes (pushes, pulls, catalog and
 * tag listings, skopeo, wrong passwords, abandoned downloads and uploads, htpasswd edits, certificate
 * renewals) through the built proxy in front of the real registry. Well-behaved clients must see no error,
 * every change must be applied, and no sampled series (RSS, heap, event-loop delay, descriptors, registry
 * connections, handles) may grow past its bound over the second half. What runs and how it is judged:
 * test/reliability/soak-engine.ts. SOAK_SECONDS sets the length (default 60).
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { fitSlopes, runSoak, SHORT_RUN_LIMITS, type Sample } from './reliability/soak-engine.js';

const SECONDS = Number(process.env['SOAK_SECONDS'] ?? 60);

test('the growth judge: flat noise passes, a leak of one descriptor per second fails, warm-up is ignored', () => {
  // 60 s sampled every 2 s: what the soak below records. Noise as large as the real heap's sawtooth.
  const noise = (i: number): number => ((i * 7919) % 13) - 6;
  const sample = (i: number, leak: number): Sample => ({
    t: i * 2,
    rssMiB: 130 + noise(i) / 2 + (i < 10 ? 30 - 3 * i : 0), // falls during warm-up: never judged
    heapMiB: 28 + noise(i),
    loopP99Ms: 14 + noise(i) / 3,
    fds: 32 + Math.round(noise(i) / 3) + Math.floor(leak * i * 2),
    upstreamSockets: 3 + Math.round(noise(i) / 4),
    handles: 9 + Math.round(noise(i) / 4),
    inFlight: 1,
  });
  const flat = fitSlopes(Array.from({ length: 31 }, (_, i) => sample(i, 0)), SHORT_RUN_LIMITS);
  assert.deepEqual(flat.filter((s) => !s.pass).map((s) => s.series), []);
  const leaking = fitSlopes(Array.from({ length: 31 }, (_, i) => sample(i, 1)), SHORT_RUN_LIMITS);
  assert.deepEqual(leaking.filter((s) => !s.pass).map((s) => s.series), ['fds']);
  const fds = leaking.find((s) => s.series === 'fds')!;
  assert.ok(Math.abs(fds.perMin - 60) < 5, `fitted ${fds.perMin}/min for a leak of 60/min`);
});

test(`soak, ${SECONDS} s: no error for well-behaved clients, every change applied, nothing grows`, { timeout: (SECONDS + 120) * 1000 }, async () => {
  const result = await runSoak({ durationMs: SECONDS * 1000, sampleEveryMs: 2000, workers: 1, rate: 1, limits: SHORT_RUN_LIMITS });
  const summary = JSON.stringify({ activities: result.activities, slopes: result.slopes, reloads: result.reloads }, null, 1);
  assert.deepEqual(result.failures, [], summary);

  for (const a of result.activities) {
    assert.ok(a.ok > 0, `${a.name} never completed`);
    assert.equal(a.failures, 0, `${a.name}: ${a.errors.join(' | ')}`);
  }
  const done = (name: string): number => result.activities.find((a) => a.name === name)?.ok ?? 0;
  // Each edit and renewal was applied (the engine checks the new password and certificate after each).
  assert.ok(result.reloads.htpasswdOk >= done('htpasswd edit'), JSON.stringify(result.reloads));
  assert.ok(result.reloads.tlsOk >= done('certificate renewal'), JSON.stringify(result.reloads));
  assert.deepEqual([result.reloads.htpasswdError, result.reloads.tlsError], [0, 0]);
  assert.ok(result.samples.length >= SECONDS / 2 - 3, `${result.samples.length} samples`);
  assert.equal(result.slopes.length, 6);
  for (const s of result.slopes) assert.ok(s.perMin <= s.boundPerMin, `${s.series}: ${s.perMin.toFixed(2)} ${s.unit}/min > ${s.boundPerMin.toFixed(2)}`);
  assert.equal(result.proxyExit, 0);
});
