/**
 * `workers: 2` against the real registry: two worker processes serve the same port, the primary's
 * /metrics is the sum over them, SIGHUP reaches every worker, SIGTERM stops them all and exits 0.
 */
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { after, before, describe, test } from 'node:test';
import { parse, stringify } from 'yaml';
import { request } from './helpers/clients.js';
import type { LogLine, RunningPortcullis } from './helpers/portcullis.js';
import { startRegistry, type RunningRegistry } from './helpers/registry.js';
import { startStack, type Stack } from './helpers/stack.js';
import type { TestCerts } from './helpers/tls.js';
import { eventually } from './helpers/wait.js';
import { metricSum } from './helpers/prometheus.js';

const T = { timeout: 90_000 };
const USER = { user: 'alice', password: 'alice-pw' };

// ------------------------------------------------------------------------------------------ local helpers



function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

// ------------------------------------------------------------------------------------------------ setup

let stack: Stack;
let registry: RunningRegistry;
let certs: TestCerts;
let proxy: RunningPortcullis;

before(async () => {
  stack = await startStack(
    { [USER.user]: USER.password },
    { proxy: { auth: { realm: 'Workers Realm' }, metrics: { listen: '127.0.0.1:0' }, workers: 2 }, start: { readyTimeoutMs: 30_000 } },
  );
  ({ registry, certs, proxy } = stack);
});

after(async () => {
  // Workers are the proxy's children: if the primary had to be killed, do not leave them behind.
  const workers = new Set((proxy?.logs() ?? []).filter((l) => l['msg'] === 'worker listening').map((l) => Number(l['pid'])));
  await proxy?.stop('SIGKILL');
  for (const pid of workers) if (alive(pid)) process.kill(pid, 'SIGKILL');
  await stack?.close();
});

/** Rewrite the running proxy.yaml with another realm (and upstream), for a SIGHUP. */
function rewriteConfig(realm: string, upstream?: { url: string }): void {
  const current = parse(readFileSync(proxy.configFile, 'utf8')) as Record<string, Record<string, unknown>>;
  writeFileSync(proxy.configFile, stringify({ ...current, auth: { ...current['auth'], realm }, ...(upstream ? { upstream } : {}) }));
}

// ------------------------------------------------------------------------------------------------ tests

describe('workers: 2', () => {
  let workerPids: number[] = [];
  let requestsMade = 0;

  test('two worker processes, other than the primary, serve the same port', T, async () => {
    await eventually('two "worker listening" lines', async () => proxy.logs().filter((l) => l['msg'] === 'worker listening').length === 2);
    const listening = proxy.logs().filter((l) => l['msg'] === 'worker listening');
    workerPids = listening.map((l) => Number(l['pid']));
    assert.equal(new Set(workerPids).size, 2);
    assert.ok(!workerPids.includes(proxy.proc.pid!), 'the primary does not serve requests itself');
    for (const l of listening) assert.equal(new URL(String(l['url'])).port, String(proxy.port), 'every worker on the one port');

    const n = 40;
    for (let i = 0; i < n; i++) {
      // A new connection each time (request() uses no agent), so the primary hands them out across workers.
      const r = await request(`${proxy.url}/v2/`, { ca: certs.ca, auth: USER });
      assert.equal(r.status, 200);
    }
    requestsMade += n;
    const access = await eventually('40 access-log lines', async () => {
      const lines = proxy.logs().filter((l) => l['msg'] === 'request' && l['path'] === '/v2/' && l['status'] === 200);
      return lines.length >= n ? lines : null;
    });
    const served = new Set(access.map((l) => Number(l['pid'])));
    assert.deepEqual([...served].sort(), [...workerPids].sort(), 'both workers served requests, nobody else did');
  });

  test("the primary's /metrics is the sum over the workers", T, async () => {
    // A few more, and one 401, so the sum has more than one label set.
    for (let i = 0; i < 5; i++) assert.equal((await request(`${proxy.url}/v2/`, { ca: certs.ca, auth: USER })).status, 200);
    assert.equal((await request(`${proxy.url}/v2/`, { ca: certs.ca })).status, 401);
    requestsMade += 6;
    const text = await eventually(`requests_total sums to ${requestsMade}`, async () => {
      const r = await request(`${proxy.metricsUrl!}/metrics`);
      return r.status === 200 && metricSum(r.text(), 'portcullis_requests_total') === requestsMade ? r.text() : null;
    });
    assert.match(text, /^portcullis_requests_total\{[^}]*status_class="4xx"[^}]*\} 1$/m);
    // Every worker's accesses count: the per-worker access logs add up to the same total.
    const perWorker = workerPids.map((pid) => proxy.logs().filter((l) => l['msg'] === 'request' && Number(l['pid']) === pid).length);
    assert.ok(perWorker.every((c) => c > 0), JSON.stringify(perWorker));
    assert.equal(metricSum(text, 'portcullis_auth_total'), requestsMade);
    assert.ok(metricSum(text, 'portcullis_process_cpu_user_seconds_total') > 0, 'worker process metrics are there');
    const health = await request(`${proxy.metricsUrl!}/healthz`);
    assert.equal(health.status, 200);
    assert.equal((await request(`${proxy.metricsUrl!}/readyz`)).status, 200);
  });

  test('SIGHUP on the primary reaches every worker', T, async () => {
    const from = proxy.logs().length;
    rewriteConfig('Reloaded Workers Realm');
    proxy.proc.kill('SIGHUP');
    const reloaded = await eventually('both workers log "config reloaded"', async () => {
      const pids = new Set(proxy.logs().slice(from).filter((l: LogLine) => l['msg'] === 'config reloaded').map((l) => Number(l['pid'])));
      return pids.size === 2 ? pids : null;
    });
    assert.deepEqual([...reloaded].sort(), [...workerPids].sort());
    const start = proxy.logs().length;
    for (let i = 0; i < 20; i++) {
      // /v2/_catalog rather than the /v2/ ping: its 401 is logged at info, with the worker's pid.
      const r = await request(`${proxy.url}/v2/_catalog`, { ca: certs.ca });
      assert.equal(r.status, 401);
      assert.equal(r.headers['www-authenticate'], 'Basic realm="Reloaded Workers Realm"');
      requestsMade += 1;
    }
    const answered = await eventually('20 access-log lines', async () => {
      const lines = proxy.logs().slice(start).filter((l) => l['msg'] === 'request' && l['path'] === '/v2/_catalog');
      return lines.length >= 20 ? lines : null;
    });
    assert.deepEqual([...new Set(answered.map((l) => Number(l['pid'])))].sort(), [...workerPids].sort(), 'both workers answered with the new realm');
    assert.equal(proxy.proc.exitCode, null, 'the primary is still running');
    for (const pid of workerPids) assert.ok(alive(pid), `worker ${pid} still running (reloaded, not restarted)`);
  });

  test("after SIGHUP moves the upstream, the primary's /readyz checks the new registry", T, async () => {
    const moved = await startRegistry();
    try {
      const from = proxy.logs().length;
      rewriteConfig('Reloaded Workers Realm', { url: moved.url });
      proxy.proc.kill('SIGHUP');
      await eventually('both workers reload', async () =>
        new Set(proxy.logs().slice(from).filter((l) => l['msg'] === 'config reloaded').map((l) => Number(l['pid']))).size === 2);
      await registry.stop(); // the old registry goes away; the new one is up
      try {
        for (let i = 0; i < 4; i++) {
          const r = await request(`${proxy.url}/v2/_catalog`, { ca: certs.ca, auth: USER });
          assert.equal(r.status, 200, 'the workers forward to the new registry');
          requestsMade += 1;
        }
        await eventually('/readyz 200 with the new registry up', async () => (await request(`${proxy.metricsUrl!}/readyz`)).status === 200);
        await moved.stop();
        await eventually('/readyz 503 with the new registry down', async () => (await request(`${proxy.metricsUrl!}/readyz`)).status === 503);
      } finally {
        await registry.restart();
      }
    } finally {
      await moved.close();
    }
  });

  test('SIGTERM stops every worker and the primary exits 0', T, async () => {
    const code = await proxy.stop('SIGTERM', 30_000);
    assert.equal(code, 0, proxy.output());
    await eventually('every worker process is gone', async () => workerPids.every((pid) => !alive(pid)));
    assert.ok(!proxy.logs().some((l) => l['msg'] === 'worker exited; starting a new one'), 'no worker was replaced during the stop');
    assert.equal(proxy.logs().filter((l) => l['msg'] === 'stopped').length, 3, 'two workers and the primary logged "stopped"');
  });
});
