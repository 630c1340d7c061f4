/**
 * End to end: Portcullis in front of a registry that already serves TLS itself (`http.tls`, as some guides
 * set it up), with a certificate from a private CA that the proxy is given as `upstream.ca`. The registry's
 * certificate names only 127.0.0.1, and the registry writes its own https origin into every Location
 * (`http.host`), so the proxy must rewrite them.
 *
 * Covered: a raw blob upload and a skopeo push and pull through the proxy, the catalog, Locations on the
 * proxy's origin, the registry's certificate checked against upstream.url's host (not the Host header
 * clients send, which the proxy forwards as it is); and with a wrong CA or a wrong name, a 502 in registry
 * JSON and a log line that says which certificate problem it was.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { errorCodes, request, skopeoCopy, skopeoInspect, withDigest, type HttpResponse, type RequestOptions } from './helpers/clients.js';
import { buildOciImage, pseudoRandomBytes, sha256 } from './helpers/oci-image.js';
import { accessLines, type RunningPortcullis } from './helpers/portcullis.js';
import { describeRun, freePort, makeTempDir } from './helpers/proc.js';
import type { RunningRegistry } from './helpers/registry.js';
import { startStack, type Stack } from './helpers/stack.js';
import { makeTestCerts, type TestCerts } from './helpers/tls.js';

const USER = 'tls-upstream';
const PASSWORD = 'over:tls:twice';
const CREDS = `${USER}:${PASSWORD}`;
const MiB = 1024 * 1024;

let stack: Stack;
let registry: RunningRegistry;
let proxy: RunningPortcullis;
/** The registry's own CA and certificate (SAN IP:127.0.0.1 only); the proxy trusts it through upstream.ca. */
let registryCerts: TestCerts;
/** A CA that did not sign the registry's certificate. */
let otherCa: TestCerts;

before(async () => {
  [registryCerts, otherCa] = await Promise.all([makeTestCerts({ san: ['IP:127.0.0.1'], cn: '127.0.0.1' }), makeTestCerts()]);
  const port = await freePort();
  stack = await startStack(
    { [USER]: PASSWORD },
    {
      // The registry presents its certificate followed by its CA, as a full chain usually is.
      registry: { port, host: `https://127.0.0.1:${port}`, tls: { certificate: registryCerts.certFile, key: registryCerts.keyFile } },
      proxy: { upstream: { ca: registryCerts.caFile } },
    },
  );
  ({ registry, proxy } = stack);
});

after(async () => {
  await stack?.close();
  registryCerts?.cleanup();
  otherCa?.cleanup();
});

const via = (to: RunningPortcullis, target: string, opts?: RequestOptions): Promise<HttpResponse> => stack.requestTo(to, target, opts);

describe('a registry serving TLS from a private CA, with upstream.ca', () => {
  test('the registry itself: https only, trusted with its CA alone, writing its own https origin into Locations', async () => {
    assert.match(registry.url, /^https:\/\/127\.0\.0\.1:\d+$/);
    const ping = await request(`${registry.url}/v2/`, { ca: registryCerts.ca });
    assert.equal(ping.status, 200, ping.text());
    await assert.rejects(request(`${registry.url}/v2/`, { ca: otherCa.ca }), /self-signed certificate in certificate chain/);
    const post = await request(`${registry.url}/v2/tls/direct/blobs/uploads/`, { method: 'POST', body: Buffer.alloc(0), ca: registryCerts.ca });
    assert.equal(post.status, 202, post.text());
    assert.ok(String(post.headers.location).startsWith(`${registry.url}/v2/tls/direct/blobs/uploads/`), String(post.headers.location));
  });

  test('a blob upload through the proxy: every Location on the proxy origin, followed, the blob stored', async () => {
    const blob = pseudoRandomBytes('e2e-upstream-tls', MiB + 123);
    const digest = sha256(blob);
    const post = await via(proxy, '/v2/tls/raw/blobs/uploads/', { method: 'POST', body: Buffer.alloc(0) });
    assert.equal(post.status, 202, post.text());
    const location = String(post.headers.location);
    assert.ok(location.startsWith(`${proxy.url}/v2/tls/raw/blobs/uploads/`), `Location not rewritten: ${location}`);

    const put = await via(proxy, withDigest(location, digest), { method: 'PUT', body: blob, headers: { 'content-type': 'application/octet-stream' } });
    assert.equal(put.status, 201, put.text());
    assert.equal(put.headers['docker-content-digest'], digest);
    assert.equal(String(put.headers.location), `${proxy.url}/v2/tls/raw/blobs/${digest}`);

    const head = await via(proxy, `/v2/tls/raw/blobs/${digest}`, { method: 'HEAD' });
    assert.equal(head.status, 200);
    assert.equal(Number(head.headers['content-length']), blob.length);
    const direct = await request(`${registry.url}/v2/tls/raw/blobs/${digest}`, { ca: registryCerts.ca });
    assert.equal(direct.status, 200);
    assert.ok(direct.body.equals(blob), 'the registry holds the bytes that were pushed');
  });

  test('skopeo pushes an image through the proxy and pulls it back, digests intact', async () => {
    const image = await buildOciImage(makeTempDir('portcullis-e2e-uptls-img-'), { layers: 2, layerSize: MiB, tag: 'v1', seed: 'e2e-upstream-tls' });
    const ref = `docker://${proxy.hostPort}/tls/app:v1`;
    const push = await skopeoCopy(image.ref, ref, { dest: { certDir: stack.certs.caDir, creds: CREDS } });
    assert.equal(push.code, 0, describeRun('skopeo copy (push)', push));
    const inspect = await skopeoInspect(ref, { raw: true, certDir: stack.certs.caDir, creds: CREDS });
    assert.equal(inspect.code, 0, describeRun('skopeo inspect', inspect));
    assert.equal(sha256(Buffer.from(inspect.stdout)), image.manifestDigest);
    const out = makeTempDir('portcullis-e2e-uptls-pull-');
    const pull = await skopeoCopy(ref, `oci:${out}:v1`, { src: { certDir: stack.certs.caDir, creds: CREDS } });
    assert.equal(pull.code, 0, describeRun('skopeo copy (pull)', pull));
  });

  test('the catalog through the proxy lists what was pushed', async () => {
    const r = await via(proxy, '/v2/_catalog');
    assert.equal(r.status, 200, r.text());
    const repos = (r.json() as { repositories: string[] }).repositories;
    for (const name of ['tls/app', 'tls/raw']) assert.ok(repos.includes(name), `${name} in ${JSON.stringify(repos)}`);
  });

  test("the registry's certificate is checked against upstream.url's host, not the Host clients send", async () => {
    // Clients reach the proxy as localhost; the registry's certificate names 127.0.0.1 only. The proxy forwards
    // Host as sent, and must still verify the registry as the address it connects to.
    const r = await via(proxy, '/v2/tls/raw/blobs/uploads/', { method: 'POST', body: Buffer.alloc(0), headers: { host: `localhost:${proxy.port}` } });
    assert.equal(r.status, 202, r.text());
    assert.ok(String(r.headers.location).startsWith(`https://localhost:${proxy.port}/v2/tls/raw/blobs/uploads/`), String(r.headers.location));
    assert.ok(!proxy.logs().some((l) => l['msg'] === 'upstream unavailable'), 'no refused registry certificate so far');
  });
});

describe('a registry certificate the proxy must refuse', () => {
  test('wrong upstream.ca: 502 UNAVAILABLE in registry JSON, and a log line naming the certificate problem', async () => {
    const wrong = await stack.startProxy({ upstream: { ca: otherCa.caFile } });
    const r = await via(wrong, '/v2/');
    assert.equal(r.status, 502, r.text());
    assert.match(String(r.headers['content-type']), /^application\/json/);
    assert.equal(r.headers['docker-distribution-api-version'], 'registry/2.0');
    assert.deepEqual(errorCodes(r), ['UNAVAILABLE']);
    const body = r.json() as { errors: Array<{ detail?: { reason?: string } }> };
    assert.equal(body.errors[0]!.detail?.reason, 'SELF_SIGNED_CERT_IN_CHAIN');

    const line = await wrong.waitForLog((l) => l['msg'] === 'upstream unavailable', 5000);
    assert.equal(line['err'], 'SELF_SIGNED_CERT_IN_CHAIN');
    assert.equal(line['upstream'], registry.url);
    assert.match(String(line['reason']), /^registry certificate refused: self-signed certificate in certificate chain$/);
    assert.match(String(line['hint']), /set upstream\.ca to the CA that signed it/);
    await wrong.waitForLog((l) => l['msg'] === 'request' && l['status'] === 502 && l['error'] === 'upstream_unavailable', 5000);
    // Nothing else is wrong: the same request through the proxy with the right CA passes.
    assert.equal((await via(proxy, '/v2/')).status, 200);
    assert.equal(accessLines(wrong, (l) => l['status'] === 200).length, 0);
  });

  test('upstream.url naming a host the certificate is not for: 502, and the log line says so', async () => {
    const misnamed = await stack.startProxy({ upstream: { url: registry.url.replace('127.0.0.1', 'localhost'), ca: registryCerts.caFile } });
    const r = await via(misnamed, '/v2/');
    assert.equal(r.status, 502, r.text());
    assert.deepEqual(errorCodes(r), ['UNAVAILABLE']);
    const line = await misnamed.waitForLog((l) => l['msg'] === 'upstream unavailable', 5000);
    assert.equal(line['err'], 'ERR_TLS_CERT_ALTNAME_INVALID');
    assert.match(String(line['reason']), /^registry certificate refused: Hostname\/IP does not match certificate's altnames/);
    assert.match(String(line['hint']), /does not name the host of upstream\.url/);
  });
});
