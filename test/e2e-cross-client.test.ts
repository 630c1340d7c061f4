/**
 * End to end across clients: an image pushed through the proxy by one client and pulled through it by
 * another arrives intact. Each case compares three views of the same image: what the pushing client says
 * it pushed, the manifest digest the registry behind the proxy serves (asked directly), and what the pulling
 * client wrote to disk, re-hashed.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { after, before, test } from 'node:test';
import { makeBuildahStore, type BuildahStore } from './helpers/buildah.js';
import { request, skopeoCopy } from './helpers/clients.js';
import { startContainerd, writeHostsDir, type RunningContainerd } from './helpers/containerd.js';
import { buildOciImage, pseudoRandomBytes, readOciImage, sha256, type OciImage } from './helpers/oci-image.js';
import { describeRun, makeTempDir } from './helpers/proc.js';
import type { RunningPortcullis } from './helpers/portcullis.js';
import type { RunningRegistry } from './helpers/registry.js';
import { startStack, type Stack } from './helpers/stack.js';
import type { TestCerts } from './helpers/tls.js';

const USER = 'ci';
const PASSWORD = 'cross:client:secret';
const CREDS = `${USER}:${PASSWORD}`;
const MiB = 1024 * 1024;
const LAYER_SIZE = MiB;
const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';

interface Manifest {
  config: { digest: string; size: number };
  layers: Array<{ digest: string; size: number; mediaType: string }>;
}

let stack: Stack;
let certs: TestCerts;
let registry: RunningRegistry;
let proxy: RunningPortcullis;
let ctrd: RunningContainerd;
let hostsDir: string;
let store: BuildahStore;

before(async () => {
  stack = await startStack({ [USER]: PASSWORD });
  ({ certs, registry, proxy } = stack);
  ctrd = await startContainerd();
  hostsDir = writeHostsDir(proxy.hostPort, { caFile: certs.caFile, parent: ctrd.dir });
  store = makeBuildahStore();
});

after(async () => {
  await store?.close();
  await ctrd?.close();
  await stack?.close();
});

function newImage(seed: string, layers = 2): Promise<OciImage> {
  // A lowercase layout folder name: buildah names an image taken from a layout after its path.
  return buildOciImage(join(makeTempDir(`portcullis-e2e-${seed}-`), 'layout'), { layers, layerSize: LAYER_SIZE, tag: 'v1', seed });
}

/** The manifest as the registry behind the proxy serves it (not through the proxy), with its digest header checked. */
async function registryManifest(repo: string, tag: string): Promise<{ digest: string; bytes: Buffer; manifest: Manifest }> {
  const r = await request(`${registry.url}/v2/${repo}/manifests/${tag}`, { headers: { accept: OCI_MANIFEST } });
  assert.equal(r.status, 200, `${repo}:${tag}: ${r.text()}`);
  const digest = String(r.headers['docker-content-digest']);
  assert.equal(sha256(r.body), digest, `${repo}:${tag}: the registry's digest header does not match the manifest bytes`);
  return { digest, bytes: r.body, manifest: r.json() as Manifest };
}

/** sha256 of each layer's uncompressed tar, for layer blobs read by `read`. */
function diffIdsOf(manifest: Manifest, read: (digest: string, size: number) => Buffer): string[] {
  return manifest.layers.map((l) => {
    const blob = read(l.digest, l.size);
    return sha256(l.mediaType.endsWith('+gzip') ? gunzipSync(blob) : blob);
  });
}

test('skopeo push -> ctr pull: containerd stores the manifest and layers the registry holds, byte for byte', async () => {
  const image = await newImage('cross-skopeo');
  const push = await skopeoCopy(image.ref, `docker://${proxy.hostPort}/cross/skopeo:v1`, { dest: { certDir: certs.caDir, creds: CREDS } });
  assert.equal(push.code, 0, describeRun('skopeo push', push));
  const served = await registryManifest('cross/skopeo', 'v1');
  assert.equal(served.digest, image.manifestDigest);

  const ref = `${proxy.hostPort}/cross/skopeo:v1`;
  const pull = await ctrd.pull(ref, { hostsDir, user: USER, password: PASSWORD });
  assert.equal(pull.code, 0, describeRun('ctr images pull', pull));
  assert.equal((await ctrd.image(ref))?.digest, served.digest);
  // Re-hash every blob containerd wrote into its content store.
  assert.deepEqual(ctrd.readBlob(served.digest, served.bytes.length), served.bytes);
  ctrd.readBlob(served.manifest.config.digest, served.manifest.config.size);
  assert.deepEqual(diffIdsOf(served.manifest, (d, s) => ctrd.readBlob(d, s)), image.diffIds);
  assert.deepEqual(
    served.manifest.layers.map((l) => l.digest),
    image.layerDigests,
  );
});

test('ctr push -> buildah pull: buildah stores the manifest ctr pushed, its layers, and their files', async () => {
  const image = await newImage('cross-ctr');
  const name = `${proxy.hostPort}/cross/ctr`;
  const imported = await ctrd.importOci(image, name);
  assert.equal(imported.code, 0, describeRun('ctr images import', imported));
  const push = await ctrd.push(`${name}:v1`, { hostsDir, user: USER, password: PASSWORD });
  assert.equal(push.code, 0, describeRun('ctr images push', push));
  const served = await registryManifest('cross/ctr', 'v1');
  assert.equal(served.digest, image.manifestDigest, 'ctr pushes the imported manifest unchanged');

  const pull = await store.pull(`${name}:v1`, { certDir: certs.caDir, creds: CREDS });
  assert.equal(pull.code, 0, describeRun('buildah pull', pull));
  const stored = store.storedImage(`${name}:v1`);
  assert.equal(stored.digest, served.digest);
  assert.equal(stored.manifestDigest, served.digest, 'the manifest file in the buildah store does not hash to the served digest');
  assert.deepEqual(stored.layers.map((l) => l.compressedDigest), served.manifest.layers.map((l) => l.digest));
  assert.deepEqual(stored.layers.map((l) => l.diffDigest), image.diffIds);
  for (let i = 0; i < image.diffIds.length; i++) {
    const file = readFileSync(join(stored.rootfs, `layer-${i}.bin`));
    assert.equal(sha256(file), sha256(pseudoRandomBytes(`cross-ctr/layer/${i}`, LAYER_SIZE)), `layer-${i}.bin in ${stored.rootfs}`);
  }
});

test('buildah push -> skopeo pull: skopeo gets the digest buildah reported, and the same layer contents', async () => {
  const image = await newImage('cross-buildah');
  const imported = await store.importOci(image.layoutDir, image.tag);
  assert.equal(imported.code, 0, describeRun('buildah pull oci:', imported));
  const push = await store.push(imported.id!, `docker://${proxy.hostPort}/cross/buildah:v1`, { certDir: certs.caDir, creds: CREDS });
  assert.equal(push.code, 0, describeRun('buildah push', push));
  const served = await registryManifest('cross/buildah', 'v1');
  assert.equal(served.digest, push.digest, 'the registry serves another manifest than the one buildah reported');

  const out = makeTempDir('portcullis-e2e-cross-pulled-');
  const pull = await skopeoCopy(`docker://${proxy.hostPort}/cross/buildah:v1`, `oci:${out}:pulled`, { src: { certDir: certs.caDir, creds: CREDS } });
  assert.equal(pull.code, 0, describeRun('skopeo pull', pull));
  const pulled = readOciImage(out, 'pulled'); // re-hashes every blob skopeo wrote
  assert.equal(pulled.manifestDigest, served.digest);
  assert.deepEqual(pulled.manifestBytes, served.bytes);
  assert.deepEqual(pulled.layerDigests, served.manifest.layers.map((l) => l.digest));
  // buildah may have compressed the layers again; the tars inside are the ones that were built.
  assert.deepEqual(diffIdsOf(pulled.manifest as Manifest, (d) => readFileSync(join(out, 'blobs', ...d.split(':')))), image.diffIds);
  assert.equal(pulled.configDigest, image.configDigest);
});
