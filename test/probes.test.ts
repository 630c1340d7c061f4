/**
 * The metrics listener against the real registry: /healthz (the process is up), /readyz (the registry
 * answers: 503 while it is down, 200 again once it is back), and /metrics with the portcullis_ metrics an
 * operator alerts on, Node's process metrics, and no user or repository name in any label.
 */
import assert from 'node:assert/strict';
import tls from 'node:tls';
import { after, before, describe, test } from 'node:test';
import { request } from './helpers/clients.js';
import { sha256 } from './helpers/oci-image.js';
import type { RunningPortcullis } from './helpers/portcullis.js';
import { run } from './helpers/proc.js';
import type { RunningRegistry } from './helpers/registry.js';
import { startStack, type Stack } from './helpers/stack.js';
import { makeTestCerts, type TestCerts } from './helpers/tls.js';
import { eventually } from './helpers/wait.js';
import { metricSum, samples } from './helpers/prometheus.js';

const T = { timeout: 60_000 };
// Names that must never show up in metrics (they belong in the access log only).
const USER = { user: 'probeuser-zq7', password: 'probe-pw' };
/** Used only by the /metrics test, so its first login is a real bcrypt check (auth outcome ok). */
const FRESH = { user: 'probeuser-fresh', password: 'fresh-pw' };
const REPO = 'secretteam-x4/hidden-app-k9';

// ------------------------------------------------------------------------------------------------ setup

let stack: Stack;
let registry: RunningRegistry;
let certs: TestCerts;
let proxy: RunningPortcullis;

before(async () => {
  stack = await startStack(
    { [USER.user]: USER.password, [FRESH.user]: FRESH.password },
    { proxy: { upstream: { timeout: '10s' }, metrics: { listen: '127.0.0.1:0' } } },
  );
  ({ registry, certs, proxy } = stack);
});

after(() => stack?.close());

const metricsText = async (): Promise<string> => {
  const r = await request(`${proxy.metricsUrl!}/metrics`);
  assert.equal(r.status, 200);
  assert.match(String(r.headers['content-type']), /^text\/plain/);
  return r.text();
};

// ------------------------------------------------------------------------------------------------ tests

describe('probes', () => {
  test('/healthz answers 200', T, async () => {
    const r = await request(`${proxy.metricsUrl!}/healthz`);
    assert.equal(r.status, 200);
    assert.equal((await request(`${proxy.metricsUrl!}/nothing-here`)).status, 404);
  });

  test('/readyz follows the registry: 200 up, 503 down, 200 once back', T, async () => {
    assert.equal((await request(`${proxy.metricsUrl!}/readyz`)).status, 200);
    await registry.stop();
    try {
      await eventually('/readyz 503 with the registry stopped', async () => (await request(`${proxy.metricsUrl!}/readyz`)).status === 503);
      // The proxy itself stays healthy, and answers registry JSON for a request it cannot forward.
      assert.equal((await request(`${proxy.metricsUrl!}/healthz`)).status, 200);
      const r = await request(`${proxy.url}/v2/${REPO}/tags/list`, { ca: certs.ca, auth: USER });
      assert.equal(r.status, 502);
      assert.equal((r.json() as { errors: Array<{ code: string }> }).errors[0]!.code, 'UNAVAILABLE');
    } finally {
      await registry.restart();
    }
    await eventually('/readyz 200 after the restart', async () => (await request(`${proxy.metricsUrl!}/readyz`)).status === 200);
  });
});

describe('/metrics', () => {
  test('carries the portcullis_ metrics, with what happened counted', T, async () => {
    const before = await metricsText();

    // auth: ok (bcrypt), then cached, then failed.
    assert.equal((await request(`${proxy.url}/v2/`, { ca: certs.ca, auth: FRESH })).status, 200);
    assert.equal((await request(`${proxy.url}/v2/`, { ca: certs.ca, auth: FRESH })).status, 200);
    assert.equal((await request(`${proxy.url}/v2/`, { ca: certs.ca, auth: { user: USER.user, password: 'wrong' } })).status, 401);

    // bytes in and out: a small blob pushed and read back, in a repository whose name must not leak.
    const blob = Buffer.from('probe blob '.repeat(100));
    const start = await request(`${proxy.url}/v2/${REPO}/blobs/uploads/`, { method: 'POST', ca: certs.ca, auth: USER, body: Buffer.alloc(0) });
    assert.equal(start.status, 202);
    const put = new URL(String(start.headers.location), proxy.url);
    put.searchParams.set('digest', sha256(blob));
    const done = await request(put, { method: 'PUT', ca: certs.ca, auth: USER, body: blob, headers: { 'content-type': 'application/octet-stream' } });
    assert.equal(done.status, 201, done.text());
    const got = await request(`${proxy.url}/v2/${REPO}/blobs/${sha256(blob)}`, { ca: certs.ca, auth: USER });
    assert.equal(got.status, 200);
    assert.deepEqual(got.body, blob);

    // A TLS handshake error: a client that trusts another CA refuses the certificate during the handshake.
    const other = await makeTestCerts();
    try {
      const s = await run('openssl', ['s_client', '-connect', `127.0.0.1:${proxy.port}`, '-servername', 'localhost', '-CAfile', other.caFile, '-verify_return_error'], {
        timeoutMs: 15_000,
        input: '',
      });
      assert.notEqual(s.code, 0, 'openssl refused the certificate');
    } finally {
      other.cleanup();
    }
    // And a Node client that does not trust the CA (it aborts the handshake with an alert too).
    await new Promise<void>((resolve) => {
      const socket = tls.connect({ host: '127.0.0.1', port: proxy.port, servername: 'localhost' });
      socket.once('error', () => resolve());
      socket.once('secureConnect', () => {
        socket.destroy();
        resolve();
      });
    });

    // An upstream error: the registry is down for one request.
    await registry.stop();
    try {
      assert.equal((await request(`${proxy.url}/v2/${REPO}/tags/list`, { ca: certs.ca, auth: USER })).status, 502);
    } finally {
      await registry.restart();
    }

    const text = await eventually('the counts arrive', async () => {
      const t = await metricsText();
      return metricSum(t, 'portcullis_upstream_errors_total', { kind: 'unavailable' }) > metricSum(before, 'portcullis_upstream_errors_total', { kind: 'unavailable' })
        ? t
        : null;
    });

    const delta = (name: string, labels: Record<string, string> = {}): number => metricSum(text, name, labels) - metricSum(before, name, labels);
    // Every request above, answered by the proxy or the registry (the ping 401 included).
    assert.ok(delta('portcullis_requests_total') >= 7, `requests_total grew by ${delta('portcullis_requests_total')}`);
    assert.equal(delta('portcullis_requests_total', { method: 'PUT', operation: 'upload', status_class: '2xx' }), 1);
    assert.equal(delta('portcullis_requests_total', { method: 'GET', operation: 'blob', status_class: '2xx' }), 1);
    assert.equal(delta('portcullis_requests_total', { status_class: '5xx' }), 1);
    assert.ok(delta('portcullis_request_duration_seconds_count') >= 7);
    assert.ok(metricSum(text, 'portcullis_request_duration_seconds_bucket', { le: '+Inf' }) >= 7);
    assert.ok(delta('portcullis_request_duration_seconds_sum') > 0);
    assert.ok(delta('portcullis_bytes_total', { direction: 'in' }) >= blob.length);
    assert.ok(delta('portcullis_bytes_total', { direction: 'out' }) >= blob.length);
    assert.equal(delta('portcullis_auth_total', { outcome: 'ok' }), 1);
    assert.ok(delta('portcullis_auth_total', { outcome: 'cached' }) >= 1);
    assert.equal(delta('portcullis_auth_total', { outcome: 'failed' }), 1);
    assert.equal(delta('portcullis_upstream_errors_total', { kind: 'unavailable' }), 1);
    assert.equal(delta('portcullis_tls_handshake_errors_total'), 2, 'both refused handshakes are counted');
    assert.match(text, /^# TYPE portcullis_requests_in_flight gauge$/m);
    assert.equal(metricSum(text, 'portcullis_requests_in_flight'), 0, 'nothing in flight now');
    assert.match(text, /^# TYPE portcullis_config_reloads_total counter$/m);
    assert.match(text, /^# TYPE portcullis_upstream_response_seconds histogram$/m);
    assert.match(text, /^# TYPE portcullis_client_aborts_total counter$/m);
    // Node's process metrics, with the same prefix.
    assert.ok(metricSum(text, 'portcullis_process_cpu_user_seconds_total') > 0);
    assert.ok(metricSum(text, 'portcullis_process_resident_memory_bytes') > 0);
    assert.match(text, /^portcullis_nodejs_heap_size_used_bytes \d/m);

    // Labels stay low-cardinality: no user, no repository, no path.
    for (const s of samples(text)) {
      for (const [k, v] of Object.entries(s.labels)) {
        assert.ok(!['user', 'repository', 'repo', 'path', 'name'].includes(k), `label ${k} on ${s.name}`);
        assert.ok(!v.includes('probeuser') && !v.includes('secretteam') && !v.includes('hidden-app') && !v.includes('/'), `${s.name}{${k}="${v}"}`);
      }
    }
    assert.doesNotMatch(text, /probeuser|secretteam|hidden-app/);
  });
});
