/**
 * End to end with buildah: pull and push through the built proxy in front of a real registry, trusting
 * only the test CA (`--cert-dir`), credentials from `--creds` only, images kept in a throwaway vfs store
 * (see helpers/buildah.ts). What buildah stored is read back from disk and re-hashed.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { after, before, test } from 'node:test';
import { makeBuildahStore, type BuildahStore } from './helpers/buildah.js';
import { request, skopeoCopy } from './helpers/clients.js';
import { buildOciImage, pseudoRandomBytes, sha256, type OciImage } from './helpers/oci-image.js';
import { describeRun, makeTempDir } from './helpers/proc.js';
import type { LogLine, RunningPortcullis } from './helpers/portcullis.js';
import type { RunningRegistry } from './helpers/registry.js';
import { startStack, type Stack } from './helpers/stack.js';
import type { TestCerts } from './helpers/tls.js';
import { accessLogSince } from './helpers/wait.js';

const USER = 'builder';
const PASSWORD = 'build:ah:secret';
const CREDS = `${USER}:${PASSWORD}`;
const MiB = 1024 * 1024;
const LAYER_SIZE = 2 * MiB;
const SEED = 'e2e-buildah';
const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';

let stack: Stack;
let certs: TestCerts;
let registry: RunningRegistry;
let proxy: RunningPortcullis;
let store: BuildahStore;
let image: OciImage;
let ref: string;

before(async () => {
  stack = await startStack({ [USER]: PASSWORD });
  ({ certs, registry, proxy } = stack);
  store = makeBuildahStore();
  // The image buildah pulls: put there by skopeo through the proxy.
  image = await buildOciImage(makeTempDir('portcullis-e2e-buildah-img-'), { layers: 3, layerSize: LAYER_SIZE, tag: 'v1', seed: SEED });
  ref = `${proxy.hostPort}/e2e/buildah:v1`;
  const push = await skopeoCopy(image.ref, `docker://${ref}`, { dest: { certDir: certs.caDir, creds: CREDS } });
  assert.equal(push.code, 0, describeRun('skopeo push', push));
});

after(async () => {
  await store?.close();
  await stack?.close();
});

test('buildah pulls through the proxy with the test CA: its store holds the pushed manifest, layers and files', async () => {
  const from = proxy.logs().length;
  const pull = await store.pull(ref, { certDir: certs.caDir, creds: CREDS });
  assert.equal(pull.code, 0, describeRun('buildah pull', pull));

  const direct = await request(`${registry.url}/v2/e2e/buildah/manifests/v1`, { method: 'HEAD', headers: { accept: OCI_MANIFEST } });
  assert.equal(direct.headers['docker-content-digest'], image.manifestDigest);

  const stored = store.storedImage(ref);
  assert.equal(stored.digest, image.manifestDigest);
  assert.equal(stored.manifestDigest, image.manifestDigest, 'the manifest file in the store does not hash to its digest');
  assert.deepEqual(stored.manifestBytes, image.manifestBytes);
  assert.equal(`sha256:${stored.id}`, image.configDigest);
  assert.deepEqual(stored.layers.map((l) => l.compressedDigest), image.layerDigests);
  assert.deepEqual(stored.layers.map((l) => l.diffDigest), image.diffIds);
  for (let i = 0; i < image.layerDigests.length; i++) {
    const file = readFileSync(join(stored.rootfs, `layer-${i}.bin`));
    assert.equal(sha256(file), sha256(pseudoRandomBytes(`${SEED}/layer/${i}`, LAYER_SIZE)), `layer-${i}.bin in ${stored.rootfs}`);
  }

  const wanted = [...image.layerDigests, image.configDigest].map((d) => `/v2/e2e/buildah/blobs/${d}`);
  const paths = (lines: LogLine[]): string[] =>
    lines.filter((l) => l['user'] === USER && l['method'] === 'GET' && l['status'] === 200).map((l) => String(l['path']));
  const served = paths(await accessLogSince(proxy, from, (lines) => wanted.every((w) => paths(lines).includes(w))));
  for (const w of wanted) assert.ok(served.includes(w), `no GET of ${w} by ${USER} in the access log:\n${served.join('\n')}`);
});

test('without the CA, buildah refuses the proxy certificate', async () => {
  const pull = await store.pull(ref, { creds: CREDS });
  assert.notEqual(pull.code, 0, describeRun('buildah pull (no CA)', pull));
  assert.match(pull.stderr, /x509: certificate signed by unknown authority/, describeRun('buildah pull (no CA)', pull));
});

test('wrong password: buildah pull and push fail as unauthorized, and the registry gets nothing', async () => {
  const from = proxy.logs().length;
  const pull = await store.pull(`${proxy.hostPort}/e2e/buildah-denied:v1`, { certDir: certs.caDir, creds: `${USER}:wrong` });
  assert.notEqual(pull.code, 0, describeRun('buildah pull (wrong password)', pull));
  assert.match(pull.stderr, /reading manifest v1 in \S+\/e2e\/buildah-denied: unauthorized/, describeRun('buildah pull (wrong password)', pull));
  const denied = (l: LogLine): boolean => l['repository'] === 'e2e/buildah-denied';
  const refused = (await accessLogSince(proxy, from, (lines) => lines.some(denied))).filter(denied);
  assert.ok(refused.length > 0 && refused.every((l) => l['status'] === 401 && l['user'] === null), JSON.stringify(refused, null, 1));

  const local = await buildOciImage(join(makeTempDir('portcullis-e2e-buildah-denied-'), 'layout'), { layers: 1, layerSize: 256 * 1024, tag: 'v1', seed: `${SEED}-denied` });
  const imported = await store.importOci(local.layoutDir, local.tag);
  assert.equal(imported.code, 0, describeRun('buildah pull oci:', imported));
  const push = await store.push(imported.id!, `docker://${proxy.hostPort}/e2e/buildah-denied-push:v1`, { certDir: certs.caDir, creds: `nobody:${PASSWORD}` });
  assert.notEqual(push.code, 0, describeRun('buildah push (unknown user)', push));
  assert.match(push.stderr, /unauthorized|authentication required/, describeRun('buildah push (unknown user)', push));
  assert.equal(push.digest, undefined);
  const tags = await request(`${registry.url}/v2/e2e/buildah-denied-push/tags/list`);
  assert.equal(tags.status, 404, tags.text());
});

test('buildah pushes a local image through the proxy: the registry serves the digest buildah reports, with the same layer contents', async () => {
  // An image the registry has never seen, taken into the store from a local OCI layout (no network).
  const local = await buildOciImage(join(makeTempDir('portcullis-e2e-buildah-local-'), 'layout'), { layers: 2, layerSize: LAYER_SIZE, tag: 'v2', seed: `${SEED}-push` });
  const imported = await store.importOci(local.layoutDir, local.tag);
  assert.equal(imported.code, 0, describeRun('buildah pull oci:', imported));
  assert.equal(`sha256:${imported.id}`, local.configDigest, describeRun('buildah pull oci:', imported));

  const from = proxy.logs().length;
  const dest = `docker://${proxy.hostPort}/e2e/buildah-pushed:v2`;
  const push = await store.push(imported.id!, dest, { certDir: certs.caDir, creds: CREDS });
  assert.equal(push.code, 0, describeRun('buildah push', push));
  assert.match(push.digest ?? '', /^sha256:[0-9a-f]{64}$/);

  const manifest = await request(`${registry.url}/v2/e2e/buildah-pushed/manifests/v2`, { headers: { accept: OCI_MANIFEST } });
  assert.equal(manifest.status, 200, manifest.text());
  assert.equal(manifest.headers['docker-content-digest'], push.digest);
  assert.equal(sha256(manifest.body), push.digest);
  // buildah may compress the layers again (then the blob digests differ from the source), but what they
  // hold must be the same tars, and the config must be the one that was pushed.
  const m = manifest.json() as { config: { digest: string }; layers: Array<{ digest: string; mediaType: string }> };
  assert.equal(m.config.digest, local.configDigest);
  assert.equal(m.layers.length, local.diffIds.length);
  for (const [i, layer] of m.layers.entries()) {
    const blob = await request(`${registry.url}/v2/e2e/buildah-pushed/blobs/${layer.digest}`);
    assert.equal(blob.status, 200, `${layer.digest} missing in the registry`);
    assert.equal(sha256(blob.body), layer.digest);
    const tar = layer.mediaType.endsWith('+gzip') ? gunzipSync(blob.body) : blob.body;
    assert.equal(sha256(tar), local.diffIds[i], `layer ${i} content`);
  }

  const manifestPut = (l: LogLine): boolean => l['method'] === 'PUT' && l['operation'] === 'manifest' && l['status'] === 201;
  const all = await accessLogSince(proxy, from, (lines) => lines.some(manifestPut));
  assert.ok(all.some(manifestPut), `no manifest PUT in the access log:\n${JSON.stringify(all, null, 1)}`);
  const mine = all.filter((l) => l['repository'] === 'e2e/buildah-pushed' && l['status'] !== 401);
  assert.ok(mine.length > 0 && mine.every((l) => l['user'] === USER), JSON.stringify(mine, null, 1));
  const uploads = mine.filter((l) => l['method'] === 'PUT' && l['operation'] === 'upload' && l['status'] === 201);
  assert.equal(uploads.length, local.diffIds.length + 1, JSON.stringify(mine, null, 1));
});
