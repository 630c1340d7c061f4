/**
 * The end-to-end helpers, proven against the real registry and real clients, without the proxy:
 * if one of these fails, an end-to-end failure says nothing about Portcullis.
 */
import assert from 'node:assert/strict';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { startBasicAuthServer, type BasicAuthServer } from './helpers/basic-auth-server.js';
import { chunkedBody, dockerLogin, DOCKER_CERTS_D, request, skopeoCopy, skopeoInspect } from './helpers/clients.js';
import { buildOciImage, readOciImage, sha256, tarWithOneFile, type OciImage } from './helpers/oci-image.js';
import { describeRun, freePort, makeTempDir, run } from './helpers/proc.js';
import { startRegistry, type RunningRegistry } from './helpers/registry.js';
import { makeTestCerts, type TestCerts } from './helpers/tls.js';
import { basic } from './helpers/wire.js';

const LAYER = 1024 * 1024;

describe('OCI image builder', () => {
  test('the tar is a valid archive holding one file with the content', async () => {
    const content = Buffer.from('hello portcullis\n');
    const dir = makeTempDir();
    const file = join(dir, 'one.tar');
    writeFileSync(file, tarWithOneFile('layer-0.bin', content));
    const r = await run('tar', ['-tvf', file]);
    assert.equal(r.code, 0, describeRun('tar -tvf', r));
    assert.match(r.stdout, /-rw-r--r-- root\/root\s+17 2024-01-01 \d\d:\d\d layer-0\.bin/);
    const x = await run('tar', ['-xOf', file, 'layer-0.bin']);
    assert.equal(x.stdout, content.toString());
  });

  test('same seed gives the same digests, another seed gives other ones', async () => {
    const a = await buildOciImage(makeTempDir(), { layers: 2, layerSize: 4096, tag: 't' });
    const b = await buildOciImage(makeTempDir(), { layers: 2, layerSize: 4096, tag: 't' });
    const c = await buildOciImage(makeTempDir(), { layers: 2, layerSize: 4096, tag: 't', seed: 'other' });
    assert.equal(a.manifestDigest, b.manifestDigest);
    assert.deepEqual(a.layerDigests, b.layerDigests);
    assert.notEqual(a.manifestDigest, c.manifestDigest);
    assert.equal(new Set([...a.layerDigests, ...c.layerDigests]).size, 4);
    assert.notEqual(a.layerDigests[0], a.layerDigests[1]);
  });

  test('skopeo accepts the layout, with the right digests, diff_ids and platform', async () => {
    const img = await buildOciImage(makeTempDir(), { layers: 3, layerSize: 64 * 1024, tag: 'v1' });
    assert.equal(img.ref, `oci:${img.layoutDir}:v1`);
    const r = await skopeoInspect(img.ref);
    assert.equal(r.code, 0, describeRun('skopeo inspect', r));
    const info = r.json as { Digest: string; Layers: string[]; Architecture: string; Os: string };
    assert.equal(info.Digest, img.manifestDigest);
    assert.deepEqual(info.Layers, img.layerDigests);
    assert.equal(info.Architecture, 'amd64');
    assert.equal(info.Os, 'linux');

    const raw = await skopeoInspect(img.ref, { raw: true });
    assert.equal(raw.code, 0, describeRun('skopeo inspect --raw', raw));
    assert.equal(sha256(raw.stdout), img.manifestDigest);

    const cfg = await skopeoInspect(img.ref, { config: true });
    assert.equal(cfg.code, 0, describeRun('skopeo inspect --config', cfg));
    const config = cfg.json as { rootfs: { diff_ids: string[] } };
    assert.deepEqual(config.rootfs.diff_ids, img.diffIds);
    const rawConfig = await skopeoInspect(img.ref, { config: true, raw: true });
    assert.equal(rawConfig.code, 0, describeRun('skopeo inspect --config --raw', rawConfig));
    assert.equal(sha256(rawConfig.stdout), img.configDigest);
  });

  test('a second tag in the same layout keeps the first one', async () => {
    const dir = makeTempDir();
    const one = await buildOciImage(dir, { layers: 1, layerSize: 1024, tag: 'one' });
    const two = await buildOciImage(dir, { layers: 1, layerSize: 1024, tag: 'two', seed: 'two' });
    assert.equal(readOciImage(dir, 'one').manifestDigest, one.manifestDigest);
    assert.equal(readOciImage(dir, 'two').manifestDigest, two.manifestDigest);
    assert.throws(() => readOciImage(dir, 'three'), /no manifest tagged "three"/);
  });
});

describe('real registry', () => {
  let registry: RunningRegistry;
  let image: OciImage;

  before(async () => {
    registry = await startRegistry();
    image = await buildOciImage(makeTempDir(), { layers: 3, layerSize: LAYER, tag: '1' });
  });
  after(async () => {
    await registry.close();
  });

  test('answers /v2/ with the distribution API header', async () => {
    const r = await request(`${registry.url}/v2/`);
    assert.equal(r.status, 200);
    assert.equal(r.headers['docker-distribution-api-version'], 'registry/2.0');
    assert.match(registry.url, /^http:\/\/127\.0\.0\.1:\d+$/);
    assert.ok(existsSync(registry.dataDir));
  });

  test('skopeo push and pull round-trip keeps the manifest and layer digests', async () => {
    const ref = `docker://${registry.hostPort}/demo/app:1`;
    const push = await skopeoCopy(image.ref, ref, { tlsVerify: false });
    assert.equal(push.code, 0, describeRun('skopeo copy (push)', push));

    const inspect = await skopeoInspect(ref, { tlsVerify: false });
    assert.equal(inspect.code, 0, describeRun('skopeo inspect', inspect));
    assert.equal((inspect.json as { Digest: string }).Digest, image.manifestDigest);

    const outDir = makeTempDir();
    const pull = await skopeoCopy(ref, `oci:${outDir}:pulled`, { tlsVerify: false });
    assert.equal(pull.code, 0, describeRun('skopeo copy (pull)', pull));
    const pulled = readOciImage(outDir, 'pulled'); // also re-hashes every blob
    assert.equal(pulled.manifestDigest, image.manifestDigest);
    assert.deepEqual(pulled.manifestBytes, image.manifestBytes);
    assert.deepEqual(pulled.layerDigests, image.layerDigests);
    assert.equal(pulled.configDigest, image.configDigest);
  });

  test('the registry serves the blob bytes whose digest it was pushed with', async () => {
    const digest = image.layerDigests[1]!;
    const r = await request(`${registry.url}/v2/demo/app/blobs/${digest}`);
    assert.equal(r.status, 200);
    assert.equal(sha256(r.body), digest);
    assert.equal(r.body.length, image.layerSizes[1]);
  });

  test('a chunked PATCH upload without Content-Length works (docker client shape)', async () => {
    const data = Buffer.from('x'.repeat(200_000));
    const digest = sha256(data);
    const start = await request(`${registry.url}/v2/demo/chunked/blobs/uploads/`, { method: 'POST', body: Buffer.alloc(0) });
    assert.equal(start.status, 202);
    const location = new URL(String(start.headers.location), registry.url);
    const patch = await request(location, {
      method: 'PATCH',
      headers: { 'content-type': 'application/octet-stream' },
      body: chunkedBody(data, 16 * 1024),
    });
    assert.equal(patch.status, 202, patch.text());
    assert.equal(patch.headers.range, `0-${data.length - 1}`);
    const put = new URL(String(patch.headers.location), registry.url);
    put.searchParams.set('digest', digest);
    const done = await request(put, { method: 'PUT', body: Buffer.alloc(0) });
    assert.equal(done.status, 201, done.text());
    assert.equal(done.headers['docker-content-digest'], digest);
    const head = await request(`${registry.url}/v2/demo/chunked/blobs/${digest}`, { method: 'HEAD' });
    assert.equal(head.status, 200);
    assert.equal(head.headers['content-length'], String(data.length));
  });

  test('stop makes it unreachable; restart brings it back on the same port with the data', async () => {
    const port = registry.port;
    await registry.stop();
    assert.equal(registry.running(), false);
    await assert.rejects(request(`${registry.url}/v2/`, { timeoutMs: 2000 }), /ECONNREFUSED/);

    await registry.restart();
    assert.equal(registry.running(), true);
    assert.equal(registry.port, port);
    const inspect = await skopeoInspect(`docker://${registry.hostPort}/demo/app:1`, { tlsVerify: false });
    assert.equal(inspect.code, 0, describeRun('skopeo inspect after restart', inspect));
    assert.equal((inspect.json as { Digest: string }).Digest, image.manifestDigest);
  });
});

describe('registry with http.host', () => {
  let registry: RunningRegistry;
  let internal: string;
  before(async () => {
    internal = `http://127.0.0.1:${await freePort()}`;
    registry = await startRegistry({ host: internal });
  });
  after(async () => {
    await registry.close();
  });

  test('POST /v2/<name>/blobs/uploads/ answers with an absolute Location on the configured host', async () => {
    const r = await request(`${registry.url}/v2/demo/blobs/uploads/`, { method: 'POST', body: Buffer.alloc(0) });
    assert.equal(r.status, 202);
    const location = String(r.headers.location);
    assert.ok(location.startsWith(`${internal}/v2/demo/blobs/uploads/`), location);
    assert.notEqual(internal, registry.url);
    assert.match(String(r.headers['docker-upload-uuid']), /^[0-9a-f-]{36}$/);
  });

  test('without http.host the Location follows the request Host header', async () => {
    const plain = await startRegistry();
    try {
      const r = await request(`${plain.url}/v2/demo/blobs/uploads/`, {
        method: 'POST',
        headers: { host: 'registry.example:5043' },
        body: Buffer.alloc(0),
      });
      assert.equal(r.status, 202);
      assert.ok(String(r.headers.location).startsWith('http://registry.example:5043/v2/demo/blobs/uploads/'), String(r.headers.location));
    } finally {
      await plain.close();
    }
  });
});

describe('TLS certificates and docker login (daemonless)', () => {
  let certs: TestCerts;
  let server: BasicAuthServer;
  before(async () => {
    certs = await makeTestCerts();
    server = await startBasicAuthServer({ cert: certs.cert, key: certs.key, user: 'alice', password: 's3cret' });
  });
  after(async () => {
    await server.close();
    certs.cleanup();
  });

  test('the server certificate verifies against the CA, for 127.0.0.1 and localhost', async () => {
    const v = await run('openssl', ['verify', '-CAfile', certs.caFile, certs.leafFile]);
    assert.equal(v.code, 0, describeRun('openssl verify', v));
    const r = await request(`${server.url}/v2/`, { caFile: certs.caFile, auth: { user: 'alice', password: 's3cret' } });
    assert.equal(r.status, 200);
    const byName = await request(`https://localhost:${server.port}/v2/`, { ca: certs.ca });
    assert.equal(byName.status, 401);
    assert.equal(byName.headers['www-authenticate'], 'Basic realm="x"');
    await assert.rejects(request(`${server.url}/v2/`), /self-signed certificate in certificate chain|unable to get local issuer/);
    const other = await makeTestCerts();
    await assert.rejects(request(`${server.url}/v2/`, { ca: other.ca }), /self-signed certificate in certificate chain|unable to get local issuer/);
    other.cleanup();
  });

  test('the CA folder works for skopeo (TLS verified) and a missing CA fails', async () => {
    const before = server.requests.length;
    const ok = await skopeoInspect(`docker://${server.hostPort}/demo/app:1`, { certDir: certs.caDir, creds: 'alice:s3cret' });
    // The stub answers 200 "{}" to any authenticated path, which is no manifest, so skopeo fails AFTER TLS and
    // auth: what proves the CA folder works is that the authenticated manifest request reached the server.
    assert.doesNotMatch(ok.stderr, /x509|certificate/i, describeRun('skopeo inspect with CA', ok));
    const seen = server.requests.slice(before);
    assert.ok(
      seen.some((q) => q.url === '/v2/demo/app/manifests/1' && q.authorization === basic('alice', 's3cret')),
      JSON.stringify(seen),
    );
    const bad = await skopeoInspect(`docker://${server.hostPort}/demo/app:1`, { creds: 'alice:s3cret' });
    assert.notEqual(bad.code, 0);
    assert.match(bad.stderr, /x509: certificate signed by unknown authority/, describeRun('skopeo inspect without CA', bad));
  });

  test('right password: "Login Succeeded", credentials stored, CA installed only during the call', async () => {
    const caPath = join(DOCKER_CERTS_D, server.hostPort, 'ca.crt');
    const before = server.requests.length;
    const r = await dockerLogin(server.hostPort, 'alice', 's3cret', { caFile: certs.caFile });
    try {
      assert.equal(r.code, 0, describeRun('docker login', r));
      assert.match(r.stdout, /Login Succeeded/);
      assert.equal(r.auths[server.hostPort]?.auth, Buffer.from('alice:s3cret').toString('base64'));
      assert.equal(readFileSync(caPath, 'utf8'), certs.ca);
      const seen = server.requests.slice(before);
      assert.ok(seen.some((q) => q.authorization === basic('alice', 's3cret')));
      assert.ok(seen.every((q) => q.method === 'GET' && q.url === '/v2/'));
      assert.match(seen[0]?.userAgent ?? '', /^Docker-Client\//);
    } finally {
      r.cleanup();
    }
    assert.equal(existsSync(caPath), false);
    assert.equal(existsSync(r.dockerConfig), false);
  });

  test('wrong password: non-zero exit, nothing stored', async () => {
    const r = await dockerLogin(server.hostPort, 'alice', 'wrong', { caFile: certs.caFile });
    try {
      assert.notEqual(r.code, 0, describeRun('docker login (wrong password)', r));
      assert.doesNotMatch(r.stdout, /Login Succeeded/);
      assert.match(r.stderr, /401 Unauthorized/);
      assert.deepEqual(r.auths, {});
    } finally {
      r.cleanup();
    }
  });
});
