/**
 * End to end: the defaults a registry needs, on the repository's proxy.yaml as shipped (which is what
 * `portcullis init` writes), in front of a real registry; only the addresses come from the environment.
 *
 * - A layer declared over 1 GiB is passed to the registry, not refused: CUDA and ML images push
 *   multi-gigabyte layers. The same request with `maxBodySize: 1G` is refused at once, so the check can fail.
 * - An upload that trickles for longer than every timeout the proxy has, with bytes always moving, completes:
 *   the timeouts are about silence (headers not arriving, a registry idle), none caps a transfer's total time.
 */
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { request as httpsRequest } from 'node:https';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { after, before, test } from 'node:test';
import { request, type HttpResponse, type RequestOptions } from './helpers/clients.js';
import { pseudoRandomBytes, sha256 } from './helpers/oci-image.js';
import { REPO_ROOT, startPortcullis, type RunningPortcullis } from './helpers/portcullis.js';
import { makeTempDir, sleep } from './helpers/proc.js';
import { startRegistry, type RunningRegistry } from './helpers/registry.js';
import { writeHtpasswd } from './helpers/stack.js';
import { makeTestCerts, type TestCerts } from './helpers/tls.js';
import { basic } from './helpers/wire.js';

const USER = 'big';
const PASSWORD = 'layers:of:gigabytes';
const KiB = 1024;
const MiB = 1024 * KiB;
const GiB = 1024 * MiB;

let certs: TestCerts;
let registry: RunningRegistry;
let dir: string;
const proxies: RunningPortcullis[] = [];

before(async () => {
  [certs, registry] = await Promise.all([makeTestCerts(), startRegistry()]);
  dir = makeTempDir('portcullis-defaults-');
  mkdirSync(join(dir, 'certs'));
  writeFileSync(join(dir, 'certs/server.crt'), certs.cert);
  writeFileSync(join(dir, 'certs/server.key'), certs.key);
  mkdirSync(join(dir, 'auth'));
  await writeHtpasswd(join(dir, 'auth'), { [USER]: PASSWORD });
});

after(async () => {
  for (const p of proxies) await p.stop();
  await registry?.close();
  certs?.cleanup();
});

/** The shipped proxy.yaml, with the addresses of this machine and `env` on top. */
async function shippedProxy(env: Record<string, string> = {}): Promise<RunningPortcullis> {
  const proxy = await startPortcullis(readFileSync(join(REPO_ROOT, 'proxy.yaml'), 'utf8'), {
    dir,
    env: { PORTCULLIS_LISTEN: '127.0.0.1:0', PORTCULLIS_UPSTREAM_URL: registry.url, PORTCULLIS_METRICS_LISTEN: '127.0.0.1:0', ...env },
  });
  proxies.push(proxy);
  return proxy;
}

function via(proxy: RunningPortcullis, target: string, opts: RequestOptions = {}): Promise<HttpResponse> {
  const url = target.startsWith('https://') ? target : `${proxy.url}${target}`;
  return request(url, { ca: certs.ca, auth: { user: USER, password: PASSWORD }, ...opts });
}

async function startUpload(proxy: RunningPortcullis, name: string): Promise<{ location: string; uuid: string }> {
  const r = await via(proxy, `/v2/${name}/blobs/uploads/`, { method: 'POST', body: Buffer.alloc(0) });
  assert.equal(r.status, 202, r.text());
  return { location: String(r.headers.location), uuid: String(r.headers['docker-upload-uuid']) };
}

/** Bytes the registry holds for an unfinished upload (filesystem driver layout), or 0 before there are any. */
function storedUploadBytes(name: string, uuid: string): number {
  const file = join(registry.dataDir, 'docker', 'registry', 'v2', 'repositories', name, '_uploads', uuid, 'data');
  return existsSync(file) ? statSync(file).size : 0;
}

/** The registry's file writer keeps up to a few KiB buffered: all but this much counts as all there. */
const WRITE_BUFFER = 64 * KiB;

/**
 * A monolithic PUT declaring `declared` bytes, of which `send` are sent. Resolves with the status of an answer
 * that arrived, or null when none did and the registry had stored `send` bytes (but for its write buffer);
 * the request is then abandoned.
 */
function declareHuge(url: string, declared: number, send: Buffer, stored: () => number): Promise<number | null> {
  return new Promise((resolve, reject) => {
    let settled = false;
    const settle = (v: number | null): void => {
      if (settled) return;
      settled = true;
      clearInterval(poll);
      clearTimeout(deadline);
      req.destroy();
      resolve(v);
    };
    const req = httpsRequest(
      url,
      {
        method: 'PUT',
        ca: certs.ca,
        agent: false,
        headers: { authorization: basic(USER, PASSWORD), 'content-length': String(declared), 'content-type': 'application/octet-stream' },
      },
      (res) => {
        res.resume();
        settle(res.statusCode ?? 0);
      },
    );
    req.on('error', (e) => {
      if (!settled) reject(e);
    });
    req.write(send);
    const poll = setInterval(() => {
      if (stored() >= send.length - WRITE_BUFFER) settle(null);
    }, 20);
    const deadline = setTimeout(() => {
      settled = true;
      clearInterval(poll);
      req.destroy();
      reject(new Error(`no answer, and the registry stored ${stored()} of ${send.length} bytes after 20 s`));
    }, 20_000);
  });
}

test('a layer declared at 2 GiB streams to the registry; with maxBodySize: 1G the same request is refused', async () => {
  const proxy = await shippedProxy();
  const sent = pseudoRandomBytes('e2e-defaults-huge', 4 * MiB);
  const upload = await startUpload(proxy, 'defaults/huge');
  const fakeDigest = `sha256:${'0'.repeat(64)}`;
  const answer = await declareHuge(`${upload.location}&digest=${fakeDigest}`, 2 * GiB, sent, () => storedUploadBytes('defaults/huge', upload.uuid));
  assert.equal(answer, null, `the proxy answered ${answer} to a 2 GiB layer instead of passing it on`);
  assert.ok(storedUploadBytes('defaults/huge', upload.uuid) >= sent.length - WRITE_BUFFER, 'the bytes reached the registry');

  const capped = await shippedProxy({ PORTCULLIS_LIMITS_MAX_BODY_SIZE: '1G' });
  const again = await startUpload(capped, 'defaults/capped');
  const refused = await declareHuge(`${again.location}&digest=${fakeDigest}`, 2 * GiB, sent, () => storedUploadBytes('defaults/capped', again.uuid));
  assert.equal(refused, 413, 'a 1G cap refuses the same request');
});

test('an upload that trickles for longer than every timeout, bytes always moving, completes', { timeout: 60_000 }, async () => {
  // Every timeout a second or two; the body takes five seconds, a piece every half second.
  const proxy = await shippedProxy({
    PORTCULLIS_LIMITS_HEADERS_TIMEOUT: '1s',
    PORTCULLIS_LIMITS_KEEP_ALIVE_TIMEOUT: '1s',
    PORTCULLIS_UPSTREAM_TIMEOUT: '2s',
  });
  const pieces = Array.from({ length: 10 }, (_, i) => pseudoRandomBytes(`e2e-defaults-trickle-${i}`, 16 * KiB));
  const blob = Buffer.concat(pieces);
  const upload = await startUpload(proxy, 'defaults/trickle');
  const started = Date.now();
  const body = Readable.from(
    (async function* () {
      for (const piece of pieces) {
        yield piece;
        await sleep(500);
      }
    })(),
  );
  const patch = await via(proxy, upload.location, { method: 'PATCH', body, headers: { 'content-type': 'application/octet-stream' }, timeoutMs: 30_000 });
  const elapsed = Date.now() - started;
  assert.equal(patch.status, 202, patch.text());
  assert.ok(elapsed >= 4500, `the upload took ${elapsed} ms, longer than every timeout`);
  assert.equal(patch.headers.range, `0-${blob.length - 1}`);
  const done = await via(proxy, `${String(patch.headers.location)}&digest=${sha256(blob)}`, { method: 'PUT', body: Buffer.alloc(0) });
  assert.equal(done.status, 201, done.text());
  const back = await via(proxy, `/v2/defaults/trickle/blobs/${sha256(blob)}`);
  assert.equal(back.status, 200);
  assert.ok(back.body.equals(blob));
});
