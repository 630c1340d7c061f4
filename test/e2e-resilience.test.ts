/**
 * End to end: the built proxy when things go wrong around it. The real registry stops and comes back on the
 * same port; clients abort downloads and uploads half way. The proxy must answer registry JSON while the
 * registry is away, recover by itself, release every registry connection an aborted client held (counted from
 * the kernel's socket table for the proxy's pid), log the aborts, and keep serving.
 * (An upstream that accepts and then stays silent needs a fake registry: forwarder.test.ts covers it.)
 */
import assert from 'node:assert/strict';
import { existsSync, statSync } from 'node:fs';
import { request as httpsRequest } from 'node:https';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { errorCodes, request, skopeoCopy, withDigest, type HttpResponse, type RequestOptions } from './helpers/clients.js';
import { buildOciImage, pseudoRandomBytes, readOciImage, sha256 } from './helpers/oci-image.js';
import { describeRun, makeTempDir, sleep } from './helpers/proc.js';
import { accessLines, type LogLine, type RunningPortcullis } from './helpers/portcullis.js';
import type { RunningRegistry } from './helpers/registry.js';
import { startStack, type Stack } from './helpers/stack.js';
import type { TestCerts } from './helpers/tls.js';
import { establishedTo } from './helpers/procstat.js';
import { eventually } from './helpers/wait.js';
import { basic } from './helpers/wire.js';

const USER = 'resilient';
const PASSWORD = 'still:standing';
const CREDS = `${USER}:${PASSWORD}`;
const KiB = 1024;
const MiB = 1024 * KiB;

let stack: Stack;
let certs: TestCerts;
let registry: RunningRegistry;
let proxy: RunningPortcullis;

before(async () => {
  stack = await startStack({ [USER]: PASSWORD });
  ({ certs, registry, proxy } = stack);
});

after(() => stack?.close());

function px(target: string, opts: RequestOptions = {}): Promise<HttpResponse> {
  return stack.request(target, opts);
}

/** Wait (up to 5 s) until the proxy (`pid`) holds at most `max` connections to the registry. */
function registryConnectionsAtMost(pid: number, max: number, when: string): Promise<true> {
  return eventually(`at most ${max} connections to the registry ${when}`, async () => {
    const n = establishedTo([pid], registry.port);
    assert.ok(n <= max, `${n} connections to the registry ${when}`);
    return true;
  }, 5000);
}

/** Monolithic upload straight to the registry (test setup, not under test). */
async function seedBlob(name: string, data: Buffer): Promise<string> {
  const digest = sha256(data);
  const start = await request(`${registry.url}/v2/${name}/blobs/uploads/`, { method: 'POST', body: Buffer.alloc(0) });
  assert.equal(start.status, 202, start.text());
  const put = await request(new URL(withDigest(String(start.headers.location), digest), registry.url), { method: 'PUT', body: data });
  assert.equal(put.status, 201, put.text());
  return digest;
}

describe('registry down and back', () => {
  test('registry stopped: authenticated requests get 502 UNAVAILABLE as registry JSON; the proxy keeps answering', async () => {
    const ok = await px('/v2/');
    assert.equal(ok.status, 200, ok.text());

    await registry.stop();
    try {
      for (const path of ['/v2/', '/v2/e2e/app/manifests/latest', '/v2/_catalog']) {
        const down = await px(path);
        assert.equal(down.status, 502, `${path}: ${down.text()}`);
        assert.equal(down.headers['docker-distribution-api-version'], 'registry/2.0');
        assert.match(String(down.headers['content-type']), /^application\/json/);
        assert.deepEqual(errorCodes(down), ['UNAVAILABLE']);
      }
      // An upload attempt with a body is answered too, not left hanging.
      const post = await px('/v2/e2e/app/blobs/uploads/', { method: 'POST', body: Buffer.alloc(0) });
      assert.equal(post.status, 502, post.text());
      const put = await px('/v2/e2e/app/blobs/uploads/x?digest=sha256:' + '0'.repeat(64), { method: 'PUT', body: pseudoRandomBytes('down', 256 * KiB) });
      assert.equal(put.status, 502, put.text());

      // Its own answers do not depend on the registry.
      const anon = await request(`${proxy.url}/v2/`, { ca: certs.ca });
      assert.equal(anon.status, 401);
      assert.deepEqual(errorCodes(anon), ['UNAUTHORIZED']);
      assert.equal(proxy.proc.exitCode, null, proxy.output());
      const logged = await proxy.waitForLog((l) => l['msg'] === 'request' && l['error'] === 'upstream_unavailable');
      assert.equal(logged['status'], 502);
    } finally {
      if (!registry.running()) await registry.restart();
    }
  });

  test('registry back on the same port: 200 again and a push works, without restarting the proxy', async () => {
    assert.ok(registry.running());
    const first = await px('/v2/');
    assert.equal(first.status, 200, first.text());
    const image = await buildOciImage(makeTempDir('portcullis-e2e-back-'), { layers: 2, layerSize: MiB, tag: 'v1', seed: 'e2e-back' });
    const push = await skopeoCopy(image.ref, `docker://${proxy.hostPort}/e2e/back:v1`, { dest: { certDir: certs.caDir, creds: CREDS } });
    assert.equal(push.code, 0, describeRun('skopeo copy after the registry came back', push));
    const direct = await request(`${registry.url}/v2/e2e/back/manifests/v1`, { headers: { accept: 'application/vnd.oci.image.manifest.v1+json' } });
    assert.equal(direct.status, 200);
    assert.equal(direct.headers['docker-content-digest'], image.manifestDigest);
  });
});

describe('clients that abort', () => {
  const BLOB = pseudoRandomBytes('e2e-resilience/big-blob', 8 * MiB);
  let digest: string;
  let pid: number;

  before(async () => {
    digest = await seedBlob('e2e/abort', BLOB);
    pid = proxy.proc.pid!;
    assert.ok(pid > 0);
  });

  test('30 downloads and 10 uploads aborted half way: every registry connection they held is released, aborts are logged, the proxy keeps serving', async () => {
    // Baseline: one normal download leaves at most its connection in the keep-alive pool.
    const normal = await px(`/v2/e2e/abort/blobs/${digest}`);
    assert.equal(normal.status, 200);
    const baseline = establishedTo([pid], registry.port);
    assert.ok(baseline <= 2, `baseline: ${baseline} connections to the registry`);

    // 30 downloads, held still after their first bytes (the rest of the 8 MiB still to come): the proxy holds
    // one registry connection for each, which the count sees. Then every client goes away at once.
    const downloads = await Promise.all(Array.from({ length: 30 }, () => startedDownload(`${proxy.url}/v2/e2e/abort/blobs/${digest}`)));
    const held = establishedTo([pid], registry.port);
    assert.ok(held >= 20, `only ${held} registry connections while 30 downloads were in flight: the count does not see them`);
    for (const d of downloads) {
      assert.ok(d.received > 0 && d.received < BLOB.length, `a download got ${d.received} bytes before its abort`);
      d.abort();
    }

    // 10 uploads: POST, then a chunked PATCH cut once the registry has received part of it.
    const uploads = Array.from({ length: 10 }, (_, i) => abortedUpload(`e2e/abort-up${i}`));
    const sent = await Promise.all(uploads);
    for (const s of sent) assert.ok(s > 0, 'an upload reached the registry with no bytes before its abort');

    await registryConnectionsAtMost(pid, Math.max(baseline, 2), `after 40 aborted requests (baseline ${baseline})`);

    // Each aborted request has its access-log line, marked aborted.
    const logged = async (what: string, pred: (l: LogLine) => boolean, n: number): Promise<number> =>
      eventually(`${n} ${what} in the access log`, async () => {
        const count = accessLines(proxy, pred).length;
        return count >= n ? count : null;
      }, 5000);
    const abortedGets = await logged('aborted downloads', (l) => l['method'] === 'GET' && l['operation'] === 'blob' && l['aborted'] === true, 30);
    assert.equal(abortedGets, 30, 'aborted downloads in the access log');
    const abortedPatches = await logged('aborted uploads', (l) => l['method'] === 'PATCH' && l['operation'] === 'upload' && l['aborted'] === true, 10);
    assert.equal(abortedPatches, 10, 'aborted uploads in the access log');
    for (const line of accessLines(proxy, (l) => l['method'] === 'GET' && l['aborted'] === true)) {
      assert.equal(line['user'], USER);
      assert.equal(line['status'], 200);
      assert.ok(typeof line['bytesOut'] === 'number' && line['bytesOut'] < BLOB.length, `an aborted download logged bytesOut ${String(line['bytesOut'])}`);
    }
    // Normal requests are not marked aborted.
    assert.ok(accessLines(proxy, (l) => l['method'] === 'GET' && l['status'] === 200 && l['aborted'] === false).length >= 1);

    // And the proxy still serves complete transfers.
    assert.equal(proxy.proc.exitCode, null, proxy.output());
    const again = await px(`/v2/e2e/abort/blobs/${digest}`);
    assert.equal(again.status, 200);
    assert.equal(sha256(again.body), digest);
  });

  test('a full pull and push through the proxy after the aborts', async () => {
    const image = await buildOciImage(makeTempDir('portcullis-e2e-after-'), { layers: 2, layerSize: 2 * MiB, tag: 'v1', seed: 'e2e-after-aborts' });
    const ref = `docker://${proxy.hostPort}/e2e/after-aborts:v1`;
    const push = await skopeoCopy(image.ref, ref, { dest: { certDir: certs.caDir, creds: CREDS } });
    assert.equal(push.code, 0, describeRun('skopeo copy (push)', push));
    const out = makeTempDir('portcullis-e2e-after-pull-');
    const pull = await skopeoCopy(ref, `oci:${out}:v1`, { src: { certDir: certs.caDir, creds: CREDS } });
    assert.equal(pull.code, 0, describeRun('skopeo copy (pull)', pull));
    const pulled = readOciImage(out, 'v1');
    assert.equal(pulled.manifestDigest, image.manifestDigest);
    assert.deepEqual(pulled.layerDigests, image.layerDigests);
    await registryConnectionsAtMost(pid, 8, 'after a push and a pull');
  });
});

/** GET through the proxy, paused once the first body bytes arrive; `abort()` destroys the client connection. */
function startedDownload(url: string): Promise<{ received: number; abort: () => void }> {
  return new Promise((resolve, reject) => {
    const req = httpsRequest(url, { ca: certs.ca, agent: false, headers: { authorization: basic(USER, PASSWORD) } }, (res) => {
      if (res.statusCode !== 200) {
        reject(new Error(`download answered ${res.statusCode}`));
        req.destroy();
        return;
      }
      res.once('data', (chunk: Buffer) => {
        res.pause();
        resolve({ received: chunk.length, abort: () => res.socket.destroy() });
      });
    });
    req.on('error', () => {
      /* our own destroy */
    });
    req.setTimeout(15_000, () => req.destroy(new Error('download did not start')));
    req.end();
  });
}

/**
 * POST an upload through the proxy, then a chunked PATCH that sends 256 KiB pieces until the registry's upload
 * file shows bytes arriving, and then destroys the connection mid-body. Resolves with the bytes the registry had.
 */
async function abortedUpload(name: string): Promise<number> {
  const start = await px(`/v2/${name}/blobs/uploads/`, { method: 'POST', body: Buffer.alloc(0) });
  assert.equal(start.status, 202, start.text());
  const location = String(start.headers.location);
  const uuid = String(start.headers['docker-upload-uuid']);
  const dataFile = join(registry.dataDir, 'docker', 'registry', 'v2', 'repositories', name, '_uploads', uuid, 'data');
  const stored = (): number => (existsSync(dataFile) ? statSync(dataFile).size : 0);
  return new Promise((resolve, reject) => {
    const req = httpsRequest(location, {
      method: 'PATCH',
      ca: certs.ca,
      agent: false,
      headers: { authorization: basic(USER, PASSWORD), 'content-type': 'application/octet-stream', 'transfer-encoding': 'chunked' },
    });
    req.on('response', (res) => {
      reject(new Error(`the PATCH was answered (${res.statusCode}) before the abort`));
      req.destroy();
    });
    req.on('error', () => {
      /* our own destroy */
    });
    const piece = pseudoRandomBytes(`e2e-resilience/${name}`, 256 * KiB);
    void (async () => {
      const deadline = Date.now() + 10_000;
      // Never more than 8 MiB: a body that large reaching the registry would mean the abort came too late.
      for (let i = 0; i < 32 && stored() === 0 && Date.now() < deadline; i++) {
        req.write(piece);
        await sleep(20);
      }
      const n = stored();
      req.destroy();
      resolve(n);
    })();
  });
}
