/**
 * Fault drills with the real registry and the built proxy: what a client sees, and that the proxy survives,
 * when things around it break.
 *
 * - The registry SIGKILLed mid-push and mid-pull: the client gets a clear error (a 502 UNAVAILABLE in registry
 *   JSON, or a download cut short and never presented as complete), the proxy stays up, and once the registry
 *   is started again the next push and pull work without touching the proxy.
 * - The registry SIGSTOPped: 504 within `upstream.timeout`; a download in progress is cut after that idle
 *   time; the proxy's own answers do not wait; SIGCONT and it serves again.
 * - The registry restarted (SIGTERM or SIGKILL, then started on the same port): the pool recovers with no
 *   failed request. Precisely: with the pool holding idle connections to the old process, every request sent
 *   once the new process answers on its port succeeds at its first attempt (clients here retry nothing), and
 *   the proxy logs no upstream error after the restart: no pooled connection of the old process is ever used.
 * - The registry's disk full (an 8 MiB tmpfs): the registry's own error reaches the client as the registry
 *   sent it, the proxy serves every other request, and pushes work again once space is freed.
 * - The htpasswd file, the certificate or the key removed or replaced by garbage while running: the last good
 *   one keeps serving, each refused reload is logged naming the file and counted in the metrics.
 * - Start-up: the port in use, the metrics port in use, an unreadable key: a one-line message naming the
 *   cause on stderr and exit 1, with one process or with workers.
 */
import assert from 'node:assert/strict';
import { spawn, execFileSync } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { chmodSync, existsSync, readdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import https from 'node:https';
import net from 'node:net';
import { join } from 'node:path';
import tls from 'node:tls';
import { after, before, describe, test } from 'node:test';
import bcrypt from 'bcryptjs';
import { stringify } from 'yaml';
import { errorCodes, request, skopeoCopy, type HttpResponse, type RequestOptions } from './helpers/clients.js';
import { buildOciImage, pseudoRandomBytes, readOciImage, sha256 } from './helpers/oci-image.js';
import { describeRun, makeTempDir, removeTempDir, track, TailBuffer } from './helpers/proc.js';
import { CLI, startPortcullis, type LogLine, type RunningPortcullis } from './helpers/portcullis.js';
import { processTree, establishedTo } from './helpers/procstat.js';
import { metric } from './helpers/prometheus.js';
import { startRegistry, type RunningRegistry } from './helpers/registry.js';
import { startStack, type Stack } from './helpers/stack.js';
import type { TestCerts } from './helpers/tls.js';
import { eventually, waitForNewLog } from './helpers/wait.js';
import { basic } from './helpers/wire.js';

const T = { timeout: 120_000 };
const USER = 'driller';
const PASSWORD = 'fault:tolerant';
const CREDS = `${USER}:${PASSWORD}`;
const KiB = 1024;
const MiB = 1024 * KiB;

let stack: Stack;
let certs: TestCerts;
let registry: RunningRegistry;
let proxy: RunningPortcullis;

before(async () => {
  stack = await startStack({ [USER]: PASSWORD, other: 'other-pw' }, { proxy: { metrics: { listen: '127.0.0.1:0' } } });
  ({ certs, registry, proxy } = stack);
});

after(async () => {
  registry?.signal('SIGCONT');
  await stack?.close();
});

function px(target: string, opts: RequestOptions = {}, via: RunningPortcullis = proxy): Promise<HttpResponse> {
  return request(target.startsWith('https://') ? target : `${via.url}${target}`, { ca: certs.ca, auth: { user: USER, password: PASSWORD }, ...opts });
}

async function metricsOf(p: RunningPortcullis): Promise<string> {
  const r = await request(`${p.metricsUrl!}/metrics`);
  assert.equal(r.status, 200);
  return r.text();
}

/** Monolithic upload straight to the registry (set-up, not under test). */
async function seedBlob(name: string, data: Buffer): Promise<string> {
  const digest = sha256(data);
  const start = await request(`${registry.url}/v2/${name}/blobs/uploads/`, { method: 'POST', body: Buffer.alloc(0) });
  assert.equal(start.status, 202, start.text());
  const put = new URL(String(start.headers.location), registry.url);
  put.searchParams.set('digest', digest);
  const done = await request(put, { method: 'PUT', body: data });
  assert.equal(done.status, 201, done.text());
  return digest;
}

/** Start the registry again if a test left it stopped or dead. */
async function registryBack(): Promise<void> {
  registry.signal('SIGCONT');
  if (!registry.running()) await registry.restart();
}

async function pushAndPullBack(via: RunningPortcullis, repo: string, seed: string): Promise<void> {
  const image = await buildOciImage(makeTempDir('portcullis-faults-img-'), { layers: 2, layerSize: 512 * KiB, tag: 'v1', seed });
  const ref = `docker://${via.hostPort}/${repo}:v1`;
  const push = await skopeoCopy(image.ref, ref, { dest: { certDir: certs.caDir, creds: CREDS } });
  assert.equal(push.code, 0, describeRun('skopeo push', push));
  const out = makeTempDir('portcullis-faults-pull-');
  const pull = await skopeoCopy(ref, `oci:${out}:v1`, { src: { certDir: certs.caDir, creds: CREDS } });
  assert.equal(pull.code, 0, describeRun('skopeo pull', pull));
  const pulled = readOciImage(out, 'v1'); // re-hashes every blob
  assert.equal(pulled.manifestDigest, image.manifestDigest);
  assert.deepEqual(pulled.layerDigests, image.layerDigests);
}

function assertUnavailable(r: HttpResponse, status: number, what: string): void {
  assert.equal(r.status, status, `${what}: ${r.status} ${r.text()}`);
  assert.match(String(r.headers['content-type']), /^application\/json/, what);
  assert.equal(r.headers['docker-distribution-api-version'], 'registry/2.0', what);
  assert.deepEqual(errorCodes(r), ['UNAVAILABLE'], what);
}

// ------------------------------------------------------------------------------------------- SIGKILL

describe('registry killed (SIGKILL)', () => {
  test('mid-push with skopeo: a clear 502 error, the proxy stays up, the next push works after a restart', T, async () => {
    const repo = 'faults/killed-push';
    const image = await buildOciImage(makeTempDir('portcullis-faults-kill-'), { layers: 2, layerSize: 16 * MiB, tag: 'v1', seed: 'faults/killed-push' });
    const uploads = join(registry.dataDir, 'docker', 'registry', 'v2', 'repositories', repo, '_uploads');
    const from = proxy.logs().length;
    const push = skopeoCopy(image.ref, `docker://${proxy.hostPort}/${repo}:v1`, { dest: { certDir: certs.caDir, creds: CREDS } });
    try {
      // The push is under way once the registry has opened an upload session: freeze it there, so the kill
      // lands while a request of the push is in flight (not before it started, not after it ended).
      // Polled every few milliseconds: the whole push takes a fraction of a second.
      for (const end = performance.now() + 30_000; !(existsSync(uploads) && readdirSync(uploads).length > 0); ) {
        assert.ok(performance.now() < end, 'the registry never opened an upload session');
        await new Promise((r) => setTimeout(r, 2));
      }
      assert.ok(registry.signal('SIGSTOP'));
      await eventually('a request of the push in flight at the proxy', async () => metric(await metricsOf(proxy), 'portcullis_requests_in_flight') >= 1);
      assert.ok(registry.signal('SIGKILL'));
      const r = await push;
      assert.notEqual(r.code, 0, describeRun('skopeo push while the registry died', r));
      assert.match(r.stderr, /502 \(Bad Gateway\)|502 Bad Gateway|upstream registry unavailable/, describeRun('skopeo names the 502', r));
      assert.equal(proxy.proc.exitCode, null, proxy.output());
      await waitForNewLog(proxy, from, 'the exchange the kill cut', (l) => l['msg'] === 'request' && l['error'] === 'upstream_unavailable' && l['status'] === 502);
      // While it is down, everything that needs the registry is a 502 in registry JSON; the proxy's own answers are not.
      assertUnavailable(await px('/v2/'), 502, 'GET /v2/ while the registry is down');
      assert.equal((await request(`${proxy.url}/v2/`, { ca: certs.ca })).status, 401);
      assert.equal((await request(`${proxy.metricsUrl!}/readyz`)).status, 503);
    } finally {
      await push;
      await registryBack();
    }
    assert.equal((await request(`${proxy.metricsUrl!}/readyz`)).status, 200);
    const again = await skopeoCopy(image.ref, `docker://${proxy.hostPort}/${repo}:v1`, { dest: { certDir: certs.caDir, creds: CREDS } });
    assert.equal(again.code, 0, describeRun('skopeo push after the restart', again));
    const stored = await request(`${registry.url}/v2/${repo}/manifests/v1`, { headers: { accept: 'application/vnd.oci.image.manifest.v1+json' } });
    assert.equal(stored.headers['docker-content-digest'], image.manifestDigest);
  });

  test('mid-upload body: the PATCH streaming into the registry is answered 502 UNAVAILABLE, not left hanging', T, async () => {
    const name = 'faults/killed-patch';
    const start = await px(`/v2/${name}/blobs/uploads/`, { method: 'POST', body: Buffer.alloc(0) });
    assert.equal(start.status, 202, start.text());
    const uuid = String(start.headers['docker-upload-uuid']);
    const dataFile = join(registry.dataDir, 'docker', 'registry', 'v2', 'repositories', name, '_uploads', uuid, 'data');
    try {
      const answer = await new Promise<{ status: number; headers: Record<string, unknown>; body: string; sentAfterKill: number }>((resolve, reject) => {
        const req = https.request(new URL(String(start.headers.location), proxy.url), {
          method: 'PATCH',
          ca: certs.ca,
          agent: false,
          headers: { authorization: basic(USER, PASSWORD), 'content-type': 'application/octet-stream', 'transfer-encoding': 'chunked' },
        });
        let killed = false;
        let sentAfterKill = 0;
        let answered = false;
        req.on('response', (res) => {
          answered = true;
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks).toString('utf8'), sentAfterKill }));
          req.end();
        });
        req.on('error', (e) => {
          if (!answered) reject(e);
        });
        const piece = pseudoRandomBytes('faults/killed-patch', 256 * KiB);
        void (async () => {
          // Send until the registry has stored part of the body, kill it, and keep sending (a client does not
          // know): the answer must come anyway. At most 64 pieces (16 MiB).
          for (let i = 0; i < 64 && !answered; i++) {
            req.write(piece);
            if (killed) sentAfterKill++;
            if (!killed && existsSync(dataFile) && statSync(dataFile).size > 0) {
              killed = registry.signal('SIGKILL');
            }
            await new Promise((r) => setTimeout(r, killed ? 50 : 20));
          }
          if (!answered) reject(new Error(`no answer after 64 pieces (killed: ${killed})`));
        })();
      });
      assert.equal(answer.status, 502, answer.body);
      assert.match(String(answer.headers['content-type']), /^application\/json/);
      assert.deepEqual((JSON.parse(answer.body) as { errors: Array<{ code: string }> }).errors.map((e) => e.code), ['UNAVAILABLE']);
      assert.equal(answer.headers['connection'], 'close', 'the unread rest of the body ends this connection');
      assert.equal(proxy.proc.exitCode, null, proxy.output());
    } finally {
      await registryBack();
    }
    await pushAndPullBack(proxy, 'faults/after-patch-kill', 'faults/after-patch-kill');
  });

  test('mid-pull: the download is cut short and never looks complete; after a restart the same pull succeeds', T, async () => {
    // Larger than every buffer between the registry and the client (sockets, TLS), so part of it is still in
    // the registry when it dies.
    const blob = pseudoRandomBytes('faults/killed-pull', 64 * MiB);
    const digest = await seedBlob('faults/killed-pull', blob);
    const from = proxy.logs().length;
    const outcome = await new Promise<{ status: number; received: number; complete: boolean; declared: number }>((resolve, reject) => {
      const req = https.request(`${proxy.url}/v2/faults/killed-pull/blobs/${digest}`, { ca: certs.ca, agent: false, headers: { authorization: basic(USER, PASSWORD) } }, (res) => {
        let received = 0;
        const declared = Number(res.headers['content-length']);
        const finish = (): void => resolve({ status: res.statusCode ?? 0, received, complete: res.complete, declared });
        if (res.statusCode !== 200) {
          res.resume();
          reject(new Error(`download answered ${res.statusCode}`));
          return;
        }
        res.once('data', (c: Buffer) => {
          received += c.length;
          // Hold the download still, kill the registry, then read on.
          res.pause();
          if (!registry.signal('SIGKILL')) reject(new Error('no registry to kill'));
          setTimeout(() => {
            res.on('data', (d: Buffer) => (received += d.length));
            res.resume();
          }, 200);
        });
        res.once('end', finish);
        res.once('close', finish);
        res.once('error', () => finish());
      });
      req.on('error', (e) => reject(e));
      req.setTimeout(30_000, () => req.destroy(new Error('the cut download neither ended nor closed within 30 s')));
      req.end();
    });
    try {
      assert.equal(outcome.status, 200);
      assert.equal(outcome.declared, blob.length);
      assert.equal(outcome.complete, false, 'a cut download must not look complete');
      assert.ok(outcome.received < blob.length, `received ${outcome.received} of ${blob.length}`);
      assert.equal(proxy.proc.exitCode, null, proxy.output());
      const line = await waitForNewLog(proxy, from, 'access line of the cut download', (l) => l['msg'] === 'request' && l['method'] === 'GET' && String(l['path']).includes(digest));
      assert.ok(Number(line['bytesOut']) < blob.length, JSON.stringify(line));
    } finally {
      await registryBack();
    }
    const whole = await px(`/v2/faults/killed-pull/blobs/${digest}`, { timeoutMs: 60_000 });
    assert.equal(whole.status, 200);
    assert.equal(sha256(whole.body), digest);
    await pushAndPullBack(proxy, 'faults/after-pull-kill', 'faults/after-pull-kill');
  });
});

// ------------------------------------------------------------------------------------------- SIGSTOP

describe('registry stopped (SIGSTOP)', () => {
  const TIMEOUT_MS = 2000;
  let quick: RunningPortcullis;
  before(async () => {
    quick = await stack.startProxy({ upstream: { timeout: `${TIMEOUT_MS}ms` }, metrics: { listen: '127.0.0.1:0' } });
  });

  test('requests get 504 within upstream.timeout; the proxy answers its own at once; SIGCONT and it serves again', T, async () => {
    assert.equal((await px('/v2/', {}, quick)).status, 200);
    const before = metric(await metricsOf(quick), 'portcullis_upstream_errors_total', { kind: 'timeout' });
    assert.ok(registry.signal('SIGSTOP'));
    try {
      for (const path of ['/v2/', '/v2/faults/anything/manifests/latest', '/v2/_catalog']) {
        const t = performance.now();
        const r = await px(path, { timeoutMs: 15_000 }, quick);
        const ms = performance.now() - t;
        assertUnavailable(r, 504, path);
        assert.ok(ms >= TIMEOUT_MS - 100 && ms < TIMEOUT_MS + 3000, `${path}: 504 after ${Math.round(ms)} ms, upstream.timeout ${TIMEOUT_MS} ms`);
      }
      // What the proxy answers itself does not wait for the registry.
      const t = performance.now();
      const anon = await request(`${quick.url}/v2/`, { ca: certs.ca });
      assert.equal(anon.status, 401);
      assert.ok(performance.now() - t < TIMEOUT_MS, `the 401 challenge took ${Math.round(performance.now() - t)} ms: it waited for the registry`);
      const wrong = await request(`${quick.url}/v2/`, { ca: certs.ca, auth: { user: USER, password: 'wrong' } });
      assert.equal(wrong.status, 401);
      assert.equal(metric(await metricsOf(quick), 'portcullis_upstream_errors_total', { kind: 'timeout' }), before + 3);
      assert.equal(quick.proc.exitCode, null, quick.output());
    } finally {
      registry.signal('SIGCONT');
    }
    // The first request after SIGCONT succeeds: no retry.
    const back = await px('/v2/', {}, quick);
    assert.equal(back.status, 200, back.text());
    await pushAndPullBack(quick, 'faults/after-stop', 'faults/after-stop');
  });

  test('a download in progress is cut once the registry has been silent for upstream.timeout', T, async () => {
    const blob = pseudoRandomBytes('faults/stopped-pull', 64 * MiB);
    const digest = await seedBlob('faults/stopped-pull', blob);
    let stoppedAt = 0;
    try {
      const outcome = await new Promise<{ received: number; complete: boolean; endedAfterStopMs: number }>((resolve, reject) => {
        const req = https.request(`${quick.url}/v2/faults/stopped-pull/blobs/${digest}`, { ca: certs.ca, agent: false, headers: { authorization: basic(USER, PASSWORD) } }, (res) => {
          if (res.statusCode !== 200) {
            res.resume();
            reject(new Error(`download answered ${res.statusCode}`));
            return;
          }
          let received = 0;
          let done = false;
          const finish = (): void => {
            if (done) return;
            done = true;
            resolve({ received, complete: res.complete, endedAfterStopMs: performance.now() - stoppedAt });
          };
          res.on('data', (c: Buffer) => {
            received += c.length;
            if (stoppedAt === 0 && registry.signal('SIGSTOP')) stoppedAt = performance.now();
          });
          res.once('end', finish);
          res.once('close', finish);
          res.once('error', finish);
        });
        req.on('error', reject);
        req.setTimeout(30_000, () => req.destroy(new Error('the stalled download was not cut within 30 s')));
        req.end();
      });
      assert.equal(outcome.complete, false, 'a download cut by the timeout must not look complete');
      assert.ok(outcome.received < blob.length);
      assert.ok(outcome.endedAfterStopMs >= TIMEOUT_MS - 100 && outcome.endedAfterStopMs < TIMEOUT_MS + 5000, `cut ${Math.round(outcome.endedAfterStopMs)} ms after SIGSTOP`);
    } finally {
      registry.signal('SIGCONT');
    }
    const whole = await px(`/v2/faults/stopped-pull/blobs/${digest}`, { timeoutMs: 60_000 }, quick);
    assert.equal(whole.status, 200);
    assert.equal(sha256(whole.body), digest);
  });
});

// ------------------------------------------------------------------------------------------- restart

describe('registry restarted: the upstream pool recovers', () => {
  const small = pseudoRandomBytes('faults/pool', 256 * KiB);
  let digest: string;
  let manifestRef: string;
  let workers2: RunningPortcullis;

  before(async () => {
    digest = await seedBlob('faults/pool', small);
    const image = await buildOciImage(makeTempDir('portcullis-faults-pool-'), { layers: 1, layerSize: 64 * KiB, tag: 'v1', seed: 'faults/pool' });
    const push = await skopeoCopy(image.ref, `docker://${registry.hostPort}/faults/pool:v1`, { dest: { tlsVerify: false } });
    assert.equal(push.code, 0, describeRun('seed push', push));
    manifestRef = image.manifestDigest;
    workers2 = await stack.startProxy({ workers: 2 }, { readyTimeoutMs: 30_000 });
  });

  /** N requests at once through `via`, each on a new client connection, no retries. */
  async function burst(via: RunningPortcullis, n: number): Promise<HttpResponse[]> {
    return Promise.all(
      Array.from({ length: n }, (_, i) => {
        switch (i % 3) {
          case 0:
            return px('/v2/', {}, via);
          case 1:
            return px(`/v2/faults/pool/blobs/${digest}`, {}, via);
          default:
            return px(`/v2/faults/pool/manifests/v1`, { method: 'HEAD', headers: { accept: 'application/vnd.oci.image.manifest.v1+json' } }, via);
        }
      }),
    );
  }

  function check(responses: HttpResponse[], what: string): void {
    responses.forEach((r, i) => {
      assert.equal(r.status, 200, `${what}: request ${i} answered ${r.status} ${r.text()}`);
      if (i % 3 === 1) assert.equal(sha256(r.body), digest, `${what}: request ${i} body`);
      if (i % 3 === 2) assert.equal(r.headers['docker-content-digest'], manifestRef, `${what}: request ${i}`);
    });
  }

  for (const how of ['SIGTERM', 'SIGKILL'] as const) {
    for (const workers of [1, 2]) {
      test(`${how}, workers ${workers}: every request after the registry is back succeeds at once`, T, async () => {
        const via = workers === 1 ? proxy : workers2;
        for (let round = 0; round < 3; round++) {
          // Warm the pool: concurrent requests leave that many idle keep-alive connections behind.
          check(await burst(via, 24), `warm-up, round ${round}`);
          const pooled = establishedTo(processTree(via.proc.pid!), registry.port);
          assert.ok(pooled >= 4, `only ${pooled} pooled connections to the registry before the restart: the drill would prove nothing`);
          if (how === 'SIGKILL') assert.ok(registry.signal('SIGKILL'));
          await registry.restart(); // SIGTERM (or reaps the killed one), start on the same port, wait for GET /v2/ at the registry
          const from = via.logs().length;
          check(await burst(via, 24), `${how} round ${round}, first requests after the registry is back`);
          check(await burst(via, 24), `${how} round ${round}, second burst`);
          const failed = via.logs().slice(from).filter((l) => l['msg'] === 'request' && (Number(l['status']) >= 500 || l['error'] != null));
          assert.deepEqual(failed, [], 'upstream errors after the registry was back');
          const stale = via.logs().slice(from).filter((l) => l['msg'] === 'upstream unavailable');
          assert.deepEqual(stale, [], 'a stale pooled connection was used');
        }
      });
    }
  }
});

// ------------------------------------------------------------------------------------------- disk full

describe('registry disk full', () => {
  let mount: string | null = null;
  let mountError = '';
  let full: RunningRegistry;
  let fullProxy: RunningPortcullis;

  before(async () => {
    const dir = makeTempDir('portcullis-faults-tmpfs-');
    try {
      execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=8m,mode=0755', 'tmpfs', dir], { stdio: 'pipe' });
      mount = dir;
    } catch (e) {
      mountError = e instanceof Error ? e.message : String(e);
      return;
    }
    full = await startRegistry({ dataDir: join(mount, 'data') });
    fullProxy = await stack.startProxy({ upstream: { url: full.url } });
  });

  after(async () => {
    await fullProxy?.stop();
    await full?.close();
    if (mount) execFileSync('umount', [mount]);
  });

  test('the registry error reaches the client, the proxy serves everything else, pushes work once space is back', T, async (t) => {
    if (mount === null) {
      t.skip(`cannot mount a tmpfs here (needs root or CAP_SYS_ADMIN): ${mountError}`);
      return;
    }
    // Something to serve while the disk is full.
    await pushAndPullBack(fullProxy, 'faults/before-full', 'faults/before-full');

    // 3 x 4 MiB does not fit in what is left of 8 MiB.
    const big = await buildOciImage(makeTempDir('portcullis-faults-big-'), { layers: 3, layerSize: 4 * MiB, tag: 'v1', seed: 'faults/full' });
    const from = fullProxy.logs().length;
    const push = await skopeoCopy(big.ref, `docker://${fullProxy.hostPort}/faults/full:v1`, { dest: { certDir: certs.caDir, creds: CREDS } });
    assert.notEqual(push.code, 0, describeRun('skopeo push onto a full disk', push));
    assert.match(push.stderr, /500 Internal Server Error/, describeRun('skopeo names the registry error', push));
    // The registry's own answer, passed through: not the proxy's 502.
    const refused = fullProxy.logs().slice(from).filter((l) => l['msg'] === 'request' && l['status'] === 500);
    assert.ok(refused.length >= 1, 'the 500 is in the access log');
    for (const l of refused) {
      assert.equal(l['upstreamStatus'], 500, JSON.stringify(l));
      assert.equal(l['error'], null, JSON.stringify(l));
    }

    // A raw upload shows what the registry said: registry JSON naming the cause.
    const start = await px('/v2/faults/full-raw/blobs/uploads/', { method: 'POST', body: Buffer.alloc(0) }, fullProxy);
    let answer = start;
    if (start.status === 202) {
      const data = pseudoRandomBytes('faults/full-raw', 4 * MiB);
      const put = new URL(String(start.headers.location), fullProxy.url);
      put.searchParams.set('digest', sha256(data));
      answer = await px(put.href, { method: 'PUT', body: data }, fullProxy);
    }
    assert.equal(answer.status, 500, answer.text());
    assert.equal(answer.headers['docker-distribution-api-version'], 'registry/2.0');
    const body = answer.json() as { errors: Array<{ code: string; detail?: unknown }> };
    assert.equal(body.errors[0]?.code, 'UNKNOWN');
    // distribution 2.8 puts the Go error in the detail as it is: errno 28 is ENOSPC, "no space left on device".
    assert.match(JSON.stringify(body.errors[0]?.detail), /"Op":"write".*"Err":28\b/);

    // Everything else is still served.
    assert.equal(fullProxy.proc.exitCode, null, fullProxy.output());
    assert.equal((await px('/v2/', {}, fullProxy)).status, 200);
    const catalog = await px('/v2/_catalog', {}, fullProxy);
    assert.equal(catalog.status, 200);
    assert.ok((catalog.json() as { repositories: string[] }).repositories.includes('faults/before-full'));
    const out = makeTempDir('portcullis-faults-full-pull-');
    const pull = await skopeoCopy(`docker://${fullProxy.hostPort}/faults/before-full:v1`, `oci:${out}:v1`, { src: { certDir: certs.caDir, creds: CREDS } });
    assert.equal(pull.code, 0, describeRun('skopeo pull while the disk is full', pull));
    readOciImage(out, 'v1');

    // Space back (the refused pushes' upload sessions and blobs removed): the same proxy, unchanged, pushes again.
    const v2 = join(mount, 'data', 'docker', 'registry', 'v2');
    for (const repo of ['full', 'full-raw']) rmSync(join(v2, 'repositories', 'faults', repo), { recursive: true, force: true });
    for (const d of [big.configDigest, ...big.layerDigests]) {
      const hex = d.slice('sha256:'.length);
      rmSync(join(v2, 'blobs', 'sha256', hex.slice(0, 2), hex), { recursive: true, force: true });
    }
    await pushAndPullBack(fullProxy, 'faults/after-full', 'faults/after-full');
  });
});

// ------------------------------------------------------------------------------------------- files

function htpasswdLine(user: string, password: string): string {
  return `${user}:${bcrypt.hashSync(password, 4).replace(/^\$2b\$/, '$2y$')}`;
}

function replaceByRename(path: string, content: string | Buffer): void {
  const tmp = `${path}.tmp-${process.pid}`;
  writeFileSync(tmp, content);
  renameSync(tmp, path);
}

function handshakeSerial(port: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = tls.connect({ host: '127.0.0.1', port, ca: certs.ca, servername: 'localhost' }, () => {
      const serial = socket.getPeerCertificate().serialNumber.toUpperCase();
      socket.end();
      resolve(serial);
    });
    socket.once('error', reject);
    socket.setTimeout(5000, () => socket.destroy(new Error('TLS handshake timed out')));
  });
}

const GARBAGE = Buffer.from([0x00, 0x9f, 0x92, 0x96, 0x0a, 0xff, 0xfe, 0x3a, 0x01, 0x02, 0x0a, 0x7f, 0x45, 0x4c, 0x46]);

for (const workers of [1, 2]) {
  describe(`files broken at run time, workers ${workers}`, () => {
    let p: RunningPortcullis;
    let htpasswd: string;
    let certFile: string;
    let keyFile: string;
    const serving = (): string => new X509Certificate(certs.cert).serialNumber.toUpperCase();
    const status = async (user: string, password: string): Promise<number> =>
      (await request(`${p.url}/v2/`, { ca: certs.ca, auth: { user, password } })).status;
    const reloads = async (kind: string, result: string): Promise<number> =>
      metric(await metricsOf(p), 'portcullis_config_reloads_total', { kind, result });
    /** One log line per serving process: each worker reloads (and refuses) on its own. */
    const fromEach = async (from: number, what: string, test: (l: LogLine) => boolean): Promise<LogLine[]> =>
      eventually(`${workers} x ${what}`, async () => {
        const lines = p.logs().slice(from).filter(test);
        return lines.length >= workers ? lines : null;
      });

    before(async () => {
      p = await startPortcullis(
        {
          listen: '127.0.0.1:0',
          workers,
          tls: { cert: 'server.crt', key: 'server.key' },
          upstream: { url: registry.url },
          auth: { htpasswd: 'htpasswd', maxFailures: 0 },
          metrics: { listen: '127.0.0.1:0' },
        },
        {
          files: { 'server.crt': certs.cert, 'server.key': certs.key, htpasswd: `${htpasswdLine('alice', 'alice-pw')}\n${htpasswdLine('bob', 'bob-pw')}\n` },
          readyTimeoutMs: 30_000,
        },
      );
      htpasswd = join(p.dir, 'htpasswd');
      certFile = join(p.dir, 'server.crt');
      keyFile = join(p.dir, 'server.key');
    });
    after(async () => {
      await p?.stop();
    });

    test('htpasswd removed, then garbage: the last good users keep working, each refusal logged and counted', T, async () => {
      const good = readFileSync(htpasswd);
      assert.equal(await status('alice', 'alice-pw'), 200); // alice is cached from here on; bob is not
      const errors = await reloads('htpasswd', 'error');

      let from = p.logs().length;
      rmSync(htpasswd);
      const missing = await fromEach(from, 'htpasswd reload refused (removed)', (l) => /htpasswd reload refused/.test(String(l['msg'])));
      for (const l of missing) {
        assert.equal(l['level'], 50);
        assert.equal(l['file'], htpasswd);
        assert.match(String(l['err']), /ENOENT|no such file/i);
      }
      await eventually('refusals counted', async () => (await reloads('htpasswd', 'error')) === errors + workers);
      // bob was never verified: he passes because the last good file is in force, not because of a cache.
      assert.equal(await status('bob', 'bob-pw'), 200);
      assert.equal(await status('alice', 'alice-pw'), 200);
      assert.equal(await status('alice', 'wrong'), 401);

      from = p.logs().length;
      replaceByRename(htpasswd, GARBAGE);
      const garbage = await fromEach(from, 'htpasswd reload refused (garbage)', (l) => /htpasswd reload refused/.test(String(l['msg'])));
      for (const l of garbage) assert.match(String(l['err']), new RegExp(`line 1: `));
      await eventually('refusals counted', async () => (await reloads('htpasswd', 'error')) === errors + 2 * workers);
      assert.equal(await status('bob', 'bob-pw'), 200);

      from = p.logs().length;
      replaceByRename(htpasswd, good);
      await fromEach(from, 'htpasswd reloaded', (l) => l['msg'] === 'htpasswd reloaded');
      assert.equal(await status('bob', 'bob-pw'), 200);
      assert.equal(p.proc.exitCode, null);
    });

    test('certificate removed, garbage, then a garbage key: the served certificate stays, each refusal logged and counted', T, async () => {
      const cert = readFileSync(certFile);
      const key = readFileSync(keyFile);
      const errors = await reloads('tls', 'error');
      const refusal = (l: LogLine): boolean => /certificate reload refused/.test(String(l['msg']));

      let from = p.logs().length;
      rmSync(certFile);
      for (const l of await fromEach(from, 'certificate reload refused (removed)', refusal)) {
        assert.equal(l['level'], 50);
        assert.match(String(l['err']), new RegExp(`^${escape(certFile)}: cannot read certificate: ENOENT`));
      }
      assert.equal(await handshakeSerial(p.port), serving());
      assert.equal(await status('alice', 'alice-pw'), 200);

      from = p.logs().length;
      writeFileSync(certFile, GARBAGE);
      for (const l of await fromEach(from, 'certificate reload refused (garbage)', refusal)) {
        assert.match(String(l['err']), new RegExp(`^${escape(certFile)}: not a PEM certificate`));
      }
      assert.equal(await handshakeSerial(p.port), serving());

      from = p.logs().length;
      replaceByRename(keyFile, GARBAGE);
      replaceByRename(certFile, cert);
      // The two renames usually land in one reload; if a reload saw only the first, it is refused too (and counted).
      for (const l of await fromEach(from, 'certificate reload refused (garbage key)', (l) => refusal(l) && String(l['err']).startsWith(keyFile))) {
        assert.match(String(l['err']), new RegExp(`^${escape(keyFile)}: not a PEM private key`));
      }
      assert.equal(await handshakeSerial(p.port), serving());
      assert.equal(await status('alice', 'alice-pw'), 200);
      await eventually('refusals counted', async () => (await reloads('tls', 'error')) >= errors + 3 * workers);

      from = p.logs().length;
      replaceByRename(keyFile, key);
      await fromEach(from, 'certificate reloaded', (l) => l['msg'] === 'certificate reloaded');
      assert.equal(await handshakeSerial(p.port), serving());
      assert.equal(p.proc.exitCode, null);
    });
  });
}

function escape(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

// ------------------------------------------------------------------------------------------- start-up

describe('start-up failures: a clear message and a non-zero exit', () => {
  let dir: string;
  let blocker: net.Server;
  let busyPort: number;

  before(async () => {
    dir = makeTempDir('portcullis-faults-start-');
    chmodSync(dir, 0o755); // an unprivileged proxy (below) must reach the files
    writeFileSync(join(dir, 'server.crt'), certs.cert);
    writeFileSync(join(dir, 'server.key'), certs.key);
    writeFileSync(join(dir, 'htpasswd'), `${htpasswdLine('alice', 'alice-pw')}\n`);
    blocker = net.createServer();
    await new Promise<void>((resolve) => blocker.listen(0, '127.0.0.1', resolve));
    busyPort = (blocker.address() as net.AddressInfo).port;
  });
  after(async () => {
    await new Promise<void>((resolve) => blocker.close(() => resolve()));
    removeTempDir(dir);
  });

  /** `serve` with this config; resolves with the exit code and output, or fails if still running after 20 s. */
  function serve(name: string, config: Record<string, unknown>, asNobody = false): Promise<{ code: number | null; signal: NodeJS.Signals | null; stderr: string; stdout: string }> {
    const file = join(dir, `${name}.yaml`);
    writeFileSync(file, stringify({ tls: { cert: 'server.crt', key: 'server.key' }, upstream: { url: registry.url }, auth: { htpasswd: 'htpasswd' }, ...config }));
    const env: NodeJS.ProcessEnv = {};
    for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('PORTCULLIS_')) env[k] = v;
    const unprivileged = asNobody && process.getuid?.() === 0;
    const child = spawn(process.execPath, [CLI, 'serve', '--config', file], { cwd: dir, env, stdio: ['ignore', 'pipe', 'pipe'], ...(unprivileged ? { uid: 65534, gid: 65534 } : {}) });
    track(child);
    const out = new TailBuffer();
    const err = new TailBuffer();
    child.stdout.on('data', (b: Buffer) => out.push(b));
    child.stderr.on('data', (b: Buffer) => err.push(b));
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        child.kill('SIGKILL');
        reject(new Error(`${name}: still running 20 s after the start (it should have exited)\n--- stdout ---\n${out.toString()}\n--- stderr ---\n${err.toString()}`));
      }, 20_000);
      child.once('close', (code, signal) => {
        clearTimeout(timer);
        resolve({ code, signal, stdout: out.toString(), stderr: err.toString() });
      });
    });
  }

  function assertOneLine(r: { stderr: string }, pattern: RegExp, what: string): void {
    const lines = r.stderr.trim().split('\n');
    assert.ok(lines.some((l) => pattern.test(l)), `${what}: stderr does not name the cause:\n${r.stderr}`);
    assert.ok(!/^\s+at /m.test(r.stderr), `${what}: a stack trace instead of a message:\n${r.stderr}`);
  }

  for (const workers of [1, 2]) {
    test(`the port in use, workers ${workers}`, T, async () => {
      const r = await serve(`busy-${workers}`, { listen: `127.0.0.1:${busyPort}`, workers });
      assert.equal(r.code, 1, `exit ${r.code ?? r.signal}\n${r.stderr}`);
      assertOneLine(r, new RegExp(`cannot listen on 127\\.0\\.0\\.1:${busyPort}: address already in use`), 'port in use');
    });

    test(`the metrics port in use, workers ${workers}`, T, async () => {
      const r = await serve(`busy-metrics-${workers}`, { listen: '127.0.0.1:0', workers, metrics: { listen: `127.0.0.1:${busyPort}` } });
      assert.equal(r.code, 1, `exit ${r.code ?? r.signal}\n${r.stderr}`);
      assertOneLine(r, new RegExp(`cannot listen on 127\\.0\\.0\\.1:${busyPort} \\(metrics\\.listen\\): address already in use`), 'metrics port in use');
    });

    test(`an unreadable key, workers ${workers}`, T, async () => {
      const key = join(dir, `unreadable-${workers}.key`);
      writeFileSync(key, certs.key);
      chmodSync(key, 0o000);
      const r = await serve(`unreadable-${workers}`, { listen: '127.0.0.1:0', workers, tls: { cert: 'server.crt', key: `unreadable-${workers}.key` } }, true);
      assert.equal(r.code, 1, `exit ${r.code ?? r.signal}\n${r.stderr}`);
      assertOneLine(r, new RegExp(`${escape(key)}: cannot read private key: EACCES: permission denied`), 'unreadable key');
    });
  }
});
