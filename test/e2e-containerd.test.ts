/**
 * End to end with containerd's `ctr`, the pull path of Kubernetes nodes: pull (unpacked) and push through
 * the built proxy in front of a real registry, trusting the test CA through hosts.toml, with the right and
 * a wrong password. containerd runs as a private daemon in a temp folder (see helpers/containerd.ts).
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { createServer, type Server } from 'node:https';
import type { TLSSocket } from 'node:tls';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { request, skopeoCopy } from './helpers/clients.js';
import { startContainerd, writeHostsDir, type RunningContainerd } from './helpers/containerd.js';
import { buildOciImage, pseudoRandomBytes, sha256, type OciImage } from './helpers/oci-image.js';
import { describeRun, makeTempDir } from './helpers/proc.js';
import type { LogLine, RunningPortcullis } from './helpers/portcullis.js';
import type { RunningRegistry } from './helpers/registry.js';
import { startStack, type Stack } from './helpers/stack.js';
import { signCert, type TestCerts } from './helpers/tls.js';
import { accessLogSince } from './helpers/wait.js';

const USER = 'kubelet';
const PASSWORD = 'node:pull:secret';
const MiB = 1024 * 1024;
const LAYER_SIZE = 2 * MiB;
const SEED = 'e2e-containerd';

let stack: Stack;
let certs: TestCerts;
let registry: RunningRegistry;
let proxy: RunningPortcullis;
let ctrd: RunningContainerd;
let hostsDir: string;
let image: OciImage;
let ref: string;

before(async () => {
  stack = await startStack({ [USER]: PASSWORD });
  ({ certs, registry, proxy } = stack);
  ctrd = await startContainerd();
  hostsDir = writeHostsDir(proxy.hostPort, { caFile: certs.caFile, parent: ctrd.dir });
  // The image ctr pulls: put there by skopeo through the proxy.
  image = await buildOciImage(makeTempDir('portcullis-e2e-ctr-img-'), { layers: 3, layerSize: LAYER_SIZE, tag: 'v1', seed: SEED });
  ref = `${proxy.hostPort}/e2e/ctr:v1`;
  const push = await skopeoCopy(image.ref, `docker://${ref}`, { dest: { certDir: certs.caDir, creds: `${USER}:${PASSWORD}` } });
  assert.equal(push.code, 0, describeRun('skopeo push', push));
});

after(async () => {
  await ctrd?.close();
  await stack?.close();
});

test('ctr pulls and unpacks through the proxy, trusting the CA from hosts.toml; what it stored re-hashes to the pushed digests', async () => {
  const from = proxy.logs().length;
  const pull = await ctrd.pull(ref, { hostsDir, user: USER, password: PASSWORD, extraArgs: ['--print-chainid'] });
  const what = describeRun('ctr images pull', pull) + `\n--- containerd output ---\n${ctrd.output()}`;
  assert.equal(pull.code, 0, what);

  // The image record points at the manifest digest the registry serves.
  const direct = await request(`${registry.url}/v2/e2e/ctr/manifests/v1`, {
    method: 'HEAD',
    headers: { accept: 'application/vnd.oci.image.manifest.v1+json' },
  });
  assert.equal(direct.headers['docker-content-digest'], image.manifestDigest);
  const record = await ctrd.image(ref);
  assert.equal(record?.digest, image.manifestDigest, what);

  // Every blob in containerd's content store hashes to its name and matches what was pushed.
  assert.deepEqual(ctrd.readBlob(image.manifestDigest, image.manifestSize), image.manifestBytes);
  ctrd.readBlob(image.configDigest, image.configSize);
  image.layerDigests.forEach((d, i) => ctrd.readBlob(d, image.layerSizes[i]));

  // And the unpacked root filesystem holds every layer's file, byte for byte.
  const chainId = /image chain ID: (sha256:[0-9a-f]{64})/.exec(pull.stdout)?.[1];
  assert.ok(chainId, what);
  const rootfs = await ctrd.rootfs(chainId);
  for (let i = 0; i < image.layerDigests.length; i++) {
    const file = readFileSync(join(rootfs, `layer-${i}.bin`));
    assert.equal(sha256(file), sha256(pseudoRandomBytes(`${SEED}/layer/${i}`, LAYER_SIZE)), `layer-${i}.bin in ${rootfs}`);
  }

  // The proxy served the manifest and every layer to the authenticated user.
  const wanted = [...image.layerDigests, image.configDigest].map((d) => `/v2/e2e/ctr/blobs/${d}`);
  const byUser = (lines: LogLine[]): LogLine[] => lines.filter((l) => l['user'] === USER && l['method'] === 'GET' && l['status'] === 200);
  const served = byUser(await accessLogSince(proxy, from, (lines) => wanted.every((w) => byUser(lines).some((l) => l['path'] === w))));
  const paths = served.map((l) => String(l['path']));
  for (const d of [...image.layerDigests, image.configDigest]) {
    assert.ok(paths.includes(`/v2/e2e/ctr/blobs/${d}`), `no GET of ${d} by ${USER} in the access log:\n${paths.join('\n')}`);
  }
  assert.ok(served.some((l) => l['operation'] === 'manifest'), `no manifest GET by ${USER}:\n${paths.join('\n')}`);
});

test('without the CA in hosts.toml, ctr refuses the proxy certificate', async () => {
  const untrusting = writeHostsDir(proxy.hostPort, { parent: ctrd.dir });
  const pull = await ctrd.pull(ref, { hostsDir: untrusting, user: USER, password: PASSWORD });
  assert.notEqual(pull.code, 0, describeRun('ctr images pull (no CA)', pull));
  assert.match(pull.stderr, /x509: certificate signed by unknown authority/, describeRun('ctr images pull (no CA)', pull));
});

test('wrong password: ctr pull fails with 401 Unauthorized, and the proxy logs the refusal', async () => {
  const from = proxy.logs().length;
  const pull = await ctrd.pull(`${proxy.hostPort}/e2e/ctr-denied:v1`, { hostsDir, user: USER, password: 'wrong' });
  const what = describeRun('ctr images pull (wrong password)', pull);
  assert.notEqual(pull.code, 0, what);
  assert.match(pull.stderr, /failed to resolve reference .*: pulling from host \S+ failed with status code \[manifests v1\]: 401 Unauthorized/, what);

  const lines = (await accessLogSince(proxy, from, (ls) => ls.some((l) => l['repository'] === 'e2e/ctr-denied'))).filter((l) => l['repository'] === 'e2e/ctr-denied');
  assert.ok(lines.length > 0, `no access-log line for the refused pull\n${proxy.output()}`);
  assert.ok(lines.every((l) => l['status'] === 401 && l['user'] === null && l['upstreamStatus'] === null), JSON.stringify(lines, null, 1));
});

test('ctr pushes an imported image through the proxy: the registry holds the same manifest and every layer, uploaded by the user', async () => {
  const pushed = await buildOciImage(makeTempDir('portcullis-e2e-ctr-push-'), { layers: 2, layerSize: LAYER_SIZE, tag: 'v2', seed: `${SEED}-push` });
  const name = `${proxy.hostPort}/e2e/ctr-pushed`;
  const imported = await ctrd.importOci(pushed, name);
  assert.equal(imported.code, 0, describeRun('ctr images import', imported));
  assert.equal((await ctrd.image(`${name}:v2`))?.digest, pushed.manifestDigest);

  const from = proxy.logs().length;
  const push = await ctrd.push(`${name}:v2`, { hostsDir, user: USER, password: PASSWORD });
  assert.equal(push.code, 0, describeRun('ctr images push', push) + `\n--- containerd output ---\n${ctrd.output()}`);

  const manifest = await request(`${registry.url}/v2/e2e/ctr-pushed/manifests/v2`, { headers: { accept: 'application/vnd.oci.image.manifest.v1+json' } });
  assert.equal(manifest.status, 200, manifest.text());
  assert.equal(manifest.headers['docker-content-digest'], pushed.manifestDigest);
  assert.deepEqual(manifest.body, pushed.manifestBytes);
  for (const d of [...pushed.layerDigests, pushed.configDigest]) {
    const blob = await request(`${registry.url}/v2/e2e/ctr-pushed/blobs/${d}`);
    assert.equal(blob.status, 200, `${d} missing in the registry`);
    assert.equal(sha256(blob.body), d);
  }

  // Each blob was really uploaded (not mounted), by the authenticated user, and the manifest PUT came last.
  const manifestPut = (l: LogLine): boolean => l['method'] === 'PUT' && l['operation'] === 'manifest' && l['status'] === 201;
  const mine = (await accessLogSince(proxy, from, (lines) => lines.some(manifestPut))).filter((l) => l['repository'] === 'e2e/ctr-pushed' && l['status'] !== 401);
  assert.ok(mine.length > 0 && mine.every((l) => l['user'] === USER), JSON.stringify(mine, null, 1));
  const finished = mine.filter((l) => l['method'] === 'PUT' && l['operation'] === 'upload' && l['status'] === 201);
  assert.equal(finished.length, pushed.layerDigests.length + 1, JSON.stringify(mine, null, 1));
  assert.ok(mine.some(manifestPut), JSON.stringify(mine, null, 1));
});

test('wrong password: ctr push fails with 401 Unauthorized, and the registry gets nothing', async () => {
  const local = await buildOciImage(makeTempDir('portcullis-e2e-ctr-denied-'), { layers: 1, layerSize: 256 * 1024, tag: 'v1', seed: `${SEED}-denied` });
  const name = `${proxy.hostPort}/e2e/ctr-denied-push:v1`;
  const imported = await ctrd.importOci(local, `${proxy.hostPort}/e2e/ctr-denied-push`);
  assert.equal(imported.code, 0, describeRun('ctr images import', imported));
  const push = await ctrd.push(name, { hostsDir, user: USER, password: 'wrong' });
  const what = describeRun('ctr images push (wrong password)', push);
  assert.notEqual(push.code, 0, what);
  assert.match(push.stderr, /401 Unauthorized/, what);
  const tags = await request(`${registry.url}/v2/e2e/ctr-denied-push/tags/list`);
  assert.equal(tags.status, 404, tags.text());
});

test('hosts.toml client certificates reach the TLS handshake of a server that asks for one', async () => {
  // Portcullis does not check client certificates yet: this checks the helper's convention against a bare
  // TLS server that records what it was offered.
  const client = await signCert({ dir: certs.dir, caFile: certs.caFile, caKeyFile: certs.caKeyFile, name: 'ctr-client', cn: 'ctr-client', usage: 'clientAuth' });
  const offered: string[] = [];
  const server: Server = createServer({ cert: certs.cert, key: certs.key, ca: certs.ca, requestCert: true, rejectUnauthorized: false }, (req, res) => {
    const socket = req.socket as TLSSocket;
    offered.push(socket.authorized ? String(socket.getPeerCertificate().subject?.CN) : `unauthorized: ${String(socket.authorizationError)}`);
    res.writeHead(404, { 'content-type': 'application/json', 'docker-distribution-api-version': 'registry/2.0' });
    res.end('{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}');
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  try {
    const address = server.address();
    assert.ok(address !== null && typeof address === 'object');
    const hostPort = `127.0.0.1:${address.port}`;
    const withCert = writeHostsDir(hostPort, { caFile: certs.caFile, clientCert: { certFile: client.leafFile, keyFile: client.keyFile }, parent: ctrd.dir });
    const pull = await ctrd.pull(`${hostPort}/e2e/mtls:v1`, { hostsDir: withCert, unpack: false });
    assert.match(pull.stderr, /not found/, describeRun('ctr content fetch (client certificate)', pull));
    assert.ok(offered.length > 0 && offered.every((cn) => cn === 'ctr-client'), `offered: ${JSON.stringify(offered)}`);

    offered.length = 0;
    const without = writeHostsDir(hostPort, { caFile: certs.caFile, parent: ctrd.dir });
    const anon = await ctrd.pull(`${hostPort}/e2e/mtls:v1`, { hostsDir: without, unpack: false });
    assert.match(anon.stderr, /not found/, describeRun('ctr content fetch (no client certificate)', anon));
    assert.ok(offered.length > 0 && offered.every((cn) => cn.startsWith('unauthorized')), `offered: ${JSON.stringify(offered)}`);
  } finally {
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }
});
