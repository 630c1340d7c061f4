/**
 * End to end: a multi-layer image pushed and pulled with skopeo through the built proxy in front of a real
 * registry, with the proxy's certificate verified against the test CA (only the CA is given to skopeo).
 * Every digest that comes back is re-hashed from the bytes on disk.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { request, skopeoCopy, skopeoInspect } from './helpers/clients.js';
import { buildOciImage, readOciImage, sha256, type OciImage } from './helpers/oci-image.js';
import { describeRun, makeTempDir } from './helpers/proc.js';
import type { RunningPortcullis } from './helpers/portcullis.js';
import type { RunningRegistry } from './helpers/registry.js';
import { startStack, type Stack } from './helpers/stack.js';
import type { TestCerts } from './helpers/tls.js';

const USER = 'pusher';
const PASSWORD = 'push:pull:secret';
const CREDS = `${USER}:${PASSWORD}`;
const MiB = 1024 * 1024;

let stack: Stack;
let certs: TestCerts;
let registry: RunningRegistry;
let proxy: RunningPortcullis;
let image: OciImage;
let ref: string;

before(async () => {
  stack = await startStack({ [USER]: PASSWORD });
  ({ certs, registry, proxy } = stack);
  image = await buildOciImage(makeTempDir('portcullis-e2e-img-'), { layers: 4, layerSize: 3 * MiB, tag: 'v1', seed: 'e2e-push-pull' });
  ref = `docker://${proxy.hostPort}/e2e/app:v1`;
});

after(() => stack?.close());

test('skopeo pushes a 4-layer image through the proxy, verifying its certificate with the CA alone', async () => {
  const push = await skopeoCopy(image.ref, ref, { dest: { certDir: certs.caDir, creds: CREDS } });
  assert.equal(push.code, 0, describeRun('skopeo copy (push through proxy)', push));

  // The registry behind holds exactly what was pushed (asked directly, not through the proxy).
  const direct = await request(`${registry.url}/v2/e2e/app/manifests/v1`, {
    headers: { accept: 'application/vnd.oci.image.manifest.v1+json' },
  });
  assert.equal(direct.status, 200, direct.text());
  assert.equal(direct.headers['docker-content-digest'], image.manifestDigest);
  assert.deepEqual(direct.body, image.manifestBytes);
  for (const digest of image.layerDigests) {
    const head = await request(`${registry.url}/v2/e2e/app/blobs/${digest}`, { method: 'HEAD' });
    assert.equal(head.status, 200, `layer ${digest} missing in the registry`);
  }
  // And the proxy logged the uploads under the authenticated user (the manifest PUT is the last request).
  await proxy.waitForLog((l) => l['msg'] === 'request' && l['method'] === 'PUT' && l['operation'] === 'manifest' && l['status'] === 201, 5000);
  const uploads = proxy.logs().filter((l) => l['msg'] === 'request' && l['operation'] === 'upload' && l['user'] === USER);
  assert.ok(uploads.length >= image.layerDigests.length, `only ${uploads.length} upload requests logged`);
});

test('skopeo inspect through the proxy shows the pushed digest and layers', async () => {
  const r = await skopeoInspect(ref, { certDir: certs.caDir, creds: CREDS });
  assert.equal(r.code, 0, describeRun('skopeo inspect', r));
  const info = r.json as { Digest: string; Layers: string[] };
  assert.equal(info.Digest, image.manifestDigest);
  assert.deepEqual(info.Layers, image.layerDigests);

  const raw = await skopeoInspect(ref, { certDir: certs.caDir, creds: CREDS, raw: true });
  assert.equal(raw.code, 0, describeRun('skopeo inspect --raw', raw));
  assert.equal(sha256(raw.stdout), image.manifestDigest);
});

test('skopeo pulls it back through the proxy: manifest, config and every layer re-hash to the source digests', async () => {
  const out = makeTempDir('portcullis-e2e-pulled-');
  const pull = await skopeoCopy(ref, `oci:${out}:pulled`, { src: { certDir: certs.caDir, creds: CREDS } });
  assert.equal(pull.code, 0, describeRun('skopeo copy (pull through proxy)', pull));
  const pulled = readOciImage(out, 'pulled'); // re-hashes every blob and checks its size
  assert.equal(pulled.manifestDigest, image.manifestDigest);
  assert.deepEqual(pulled.manifestBytes, image.manifestBytes);
  assert.equal(pulled.configDigest, image.configDigest);
  assert.deepEqual(pulled.layerDigests, image.layerDigests);
  assert.equal(pulled.layerDigests.length, 4);
});

test('without the CA, skopeo refuses the proxy certificate', async () => {
  const r = await skopeoInspect(ref, { creds: CREDS });
  assert.notEqual(r.code, 0, describeRun('skopeo inspect without CA', r));
  assert.match(r.stderr, /x509|certificate/i, describeRun('skopeo inspect without CA', r));
});

test('wrong credentials: pull and push both fail with 401, nothing is written', async () => {
  const out = makeTempDir('portcullis-e2e-denied-');
  const pull = await skopeoCopy(ref, `oci:${out}:pulled`, { src: { certDir: certs.caDir, creds: `${USER}:wrong` } });
  assert.notEqual(pull.code, 0, describeRun('skopeo copy (pull, wrong password)', pull));
  assert.match(pull.stderr, /401|unauthorized|authentication required/i, describeRun('skopeo copy (pull, wrong password)', pull));
  assert.throws(() => readOciImage(out, 'pulled'));

  const push = await skopeoCopy(image.ref, `docker://${proxy.hostPort}/e2e/denied:v1`, {
    dest: { certDir: certs.caDir, creds: `nobody:${PASSWORD}` },
  });
  assert.notEqual(push.code, 0, describeRun('skopeo copy (push, unknown user)', push));
  assert.match(push.stderr, /401|unauthorized|authentication required/i, describeRun('skopeo copy (push, unknown user)', push));
  const direct = await request(`${registry.url}/v2/e2e/denied/tags/list`);
  assert.equal(direct.status, 404, direct.text());
});
