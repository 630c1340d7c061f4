/**
 * End to end: the registry protocol's upload and manifest shapes, sent raw through the built proxy to a real
 * registry: docker's chunked PATCH (no Content-Length), monolithic PUT, cross-repository mount, manifests by
 * tag and digest, tags/list and _catalog. Every Location the proxy hands back is followed as-is.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { chunkedBody, request, withDigest, type HttpResponse, type RequestOptions } from './helpers/clients.js';
import { pseudoRandomBytes, sha256 } from './helpers/oci-image.js';
import type { RunningPortcullis } from './helpers/portcullis.js';
import type { RunningRegistry } from './helpers/registry.js';
import { startStack, type Stack } from './helpers/stack.js';
import type { TestCerts } from './helpers/tls.js';

const USER = 'uploader';
const PASSWORD = 'up-load';
const MiB = 1024 * 1024;
const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';

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

/** Location of an answer, checked to point back at the proxy the client used. */
function locationOf(r: HttpResponse): string {
  const location = r.headers.location;
  assert.equal(typeof location, 'string', `no Location in ${r.status} answer: ${JSON.stringify(r.headers)}`);
  assert.ok(String(location).startsWith(`${proxy.url}/v2/`), `Location does not point at the proxy: ${location}`);
  return String(location);
}

async function startUpload(name: string): Promise<{ location: string; uuid: string; start: HttpResponse }> {
  const start = await px(`/v2/${name}/blobs/uploads/`, { method: 'POST', body: Buffer.alloc(0) });
  assert.equal(start.status, 202, start.text());
  const uuid = String(start.headers['docker-upload-uuid']);
  assert.match(uuid, /^[0-9a-f-]{36}$/);
  return { location: locationOf(start), uuid, start };
}

/** Monolithic upload (POST, then PUT ?digest= with the whole body). */
async function pushBlob(name: string, data: Buffer): Promise<string> {
  const digest = sha256(data);
  const { location } = await startUpload(name);
  const put = await px(withDigest(location, digest), { method: 'PUT', body: data, headers: { 'content-type': 'application/octet-stream' } });
  assert.equal(put.status, 201, put.text());
  assert.equal(put.headers['docker-content-digest'], digest);
  return digest;
}

describe('blob uploads', () => {
  test("docker's shape: POST, one chunked PATCH without Content-Length, empty PUT ?digest=", async () => {
    const data = pseudoRandomBytes('e2e-uploads/chunked', 5 * MiB + 12345);
    const digest = sha256(data);

    const { location, uuid, start } = await startUpload('e2e/chunked');
    assert.equal(start.headers.range, '0-0');
    assert.ok(location.includes(`/v2/e2e/chunked/blobs/uploads/${uuid}`), location);
    assert.match(location, /[?&]_state=/);
    assert.equal(start.headers['docker-distribution-api-version'], 'registry/2.0');

    const patch = await px(location, {
      method: 'PATCH',
      headers: { 'content-type': 'application/octet-stream' },
      body: chunkedBody(data, 256 * 1024),
    });
    assert.equal(patch.status, 202, patch.text());
    assert.equal(patch.headers.range, `0-${data.length - 1}`);
    assert.equal(patch.headers['docker-upload-uuid'], uuid);
    const next = locationOf(patch);

    const put = await px(withDigest(next, digest), { method: 'PUT', body: Buffer.alloc(0) });
    assert.equal(put.status, 201, put.text());
    assert.equal(put.headers['docker-content-digest'], digest);
    assert.equal(locationOf(put), `${proxy.url}/v2/e2e/chunked/blobs/${digest}`);

    const got = await px(`/v2/e2e/chunked/blobs/${digest}`);
    assert.equal(got.status, 200);
    assert.equal(got.body.length, data.length);
    assert.ok(got.body.equals(data), 'downloaded bytes differ from the uploaded ones');
    assert.equal(got.headers['docker-content-digest'], digest);

    const head = await px(`/v2/e2e/chunked/blobs/${digest}`, { method: 'HEAD' });
    assert.equal(head.status, 200);
    assert.equal(head.headers['content-length'], String(data.length));
    assert.equal(head.headers['docker-content-digest'], digest);
    assert.equal(head.body.length, 0);

    // The access log counted the bytes that went up in the PATCH.
    const patchLine = await proxy.waitForLog((l) => l['msg'] === 'request' && l['method'] === 'PATCH' && l['path'] === `/v2/e2e/chunked/blobs/uploads/${uuid}`);
    assert.equal(patchLine['bytesIn'], data.length);
    assert.equal(patchLine['status'], 202);
    assert.equal(patchLine['aborted'], false);
  });

  test('monolithic: POST, then PUT ?digest= with the whole body and Content-Length', async () => {
    const data = pseudoRandomBytes('e2e-uploads/monolithic', 3 * MiB);
    const digest = await pushBlob('e2e/mono', data);
    const head = await px(`/v2/e2e/mono/blobs/${digest}`, { method: 'HEAD' });
    assert.equal(head.status, 200);
    assert.equal(head.headers['content-length'], String(data.length));
    const direct = await request(`${registry.url}/v2/e2e/mono/blobs/${digest}`);
    assert.equal(direct.status, 200);
    assert.ok(direct.body.equals(data), 'the registry holds other bytes than were uploaded');
  });

  test('a PUT with a wrong digest is refused by the registry (400 DIGEST_INVALID) and passed through', async () => {
    const data = pseudoRandomBytes('e2e-uploads/bad-digest', 64 * 1024);
    const { location } = await startUpload('e2e/bad');
    const put = await px(withDigest(location, sha256('something else')), { method: 'PUT', body: data });
    assert.equal(put.status, 400, put.text());
    const codes = (put.json() as { errors: Array<{ code: string }> }).errors.map((e) => e.code);
    assert.deepEqual(codes, ['DIGEST_INVALID']);
  });

  test('cross-repository mount: POST ?mount=&from= answers 201 with the blob Location', async () => {
    const data = pseudoRandomBytes('e2e-uploads/mount', MiB);
    const digest = await pushBlob('e2e/mount-source', data);
    const mount = await px(`/v2/e2e/mount-target/blobs/uploads/?mount=${encodeURIComponent(digest)}&from=e2e/mount-source`, {
      method: 'POST',
      body: Buffer.alloc(0),
    });
    assert.equal(mount.status, 201, mount.text());
    assert.equal(mount.headers['docker-content-digest'], digest);
    assert.equal(locationOf(mount), `${proxy.url}/v2/e2e/mount-target/blobs/${digest}`);
    const got = await px(`/v2/e2e/mount-target/blobs/${digest}`);
    assert.equal(got.status, 200);
    assert.ok(got.body.equals(data));
  });
});

describe('manifests, tags and catalog', () => {
  const name = 'e2e/manifested';
  let manifestBytes: Buffer;
  let manifestDigest: string;

  before(async () => {
    const config = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: [] } }));
    const layer = pseudoRandomBytes('e2e-uploads/manifest-layer', 256 * 1024);
    const configDigest = await pushBlob(name, config);
    const layerDigest = await pushBlob(name, layer);
    manifestBytes = Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: OCI_MANIFEST,
        config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: configDigest, size: config.length },
        layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar', digest: layerDigest, size: layer.length }],
      }),
    );
    manifestDigest = sha256(manifestBytes);
  });

  test('PUT a manifest by tag: 201 with its digest and a Location on the proxy', async () => {
    const put = await px(`/v2/${name}/manifests/v1`, { method: 'PUT', headers: { 'content-type': OCI_MANIFEST }, body: manifestBytes });
    assert.equal(put.status, 201, put.text());
    assert.equal(put.headers['docker-content-digest'], manifestDigest);
    assert.equal(locationOf(put), `${proxy.url}/v2/${name}/manifests/${manifestDigest}`);
  });

  test('GET the manifest by tag and by digest: the same bytes; HEAD keeps length and digest', async () => {
    for (const reference of ['v1', manifestDigest]) {
      const got = await px(`/v2/${name}/manifests/${reference}`, { headers: { accept: OCI_MANIFEST } });
      assert.equal(got.status, 200, `${reference}: ${got.text()}`);
      assert.equal(got.headers['content-type'], OCI_MANIFEST);
      assert.equal(got.headers['docker-content-digest'], manifestDigest);
      assert.ok(got.body.equals(manifestBytes), `${reference}: other bytes came back`);
      const head = await px(`/v2/${name}/manifests/${reference}`, { method: 'HEAD', headers: { accept: OCI_MANIFEST } });
      assert.equal(head.status, 200);
      assert.equal(head.headers['content-length'], String(manifestBytes.length));
      assert.equal(head.headers['docker-content-digest'], manifestDigest);
    }
    const missing = await px(`/v2/${name}/manifests/nope`, { headers: { accept: OCI_MANIFEST } });
    assert.equal(missing.status, 404);
    assert.deepEqual((missing.json() as { errors: Array<{ code: string }> }).errors.map((e) => e.code), ['MANIFEST_UNKNOWN']);
  });

  test('tags/list and _catalog through the proxy', async () => {
    const put2 = await px(`/v2/${name}/manifests/v2`, { method: 'PUT', headers: { 'content-type': OCI_MANIFEST }, body: manifestBytes });
    assert.equal(put2.status, 201, put2.text());
    const tags = await px(`/v2/${name}/tags/list`);
    assert.equal(tags.status, 200, tags.text());
    const t = tags.json() as { name: string; tags: string[] };
    assert.equal(t.name, name);
    assert.deepEqual([...t.tags].sort(), ['v1', 'v2']);

    const catalog = await px('/v2/_catalog');
    assert.equal(catalog.status, 200, catalog.text());
    const repos = (catalog.json() as { repositories: string[] }).repositories;
    for (const r of [name, 'e2e/chunked', 'e2e/mono', 'e2e/mount-source', 'e2e/mount-target']) {
      assert.ok(repos.includes(r), `${r} missing from ${JSON.stringify(repos)}`);
    }
    // Pagination: the Link header's next page is relative (it passes untouched) and works through the proxy.
    const page = await px('/v2/_catalog?n=1');
    assert.equal(page.status, 200, page.text());
    assert.equal((page.json() as { repositories: string[] }).repositories.length, 1);
    const link = String(page.headers.link ?? '');
    const m = /^<([^>]+)>;\s*rel="next"$/.exec(link);
    assert.ok(m, `no next link: ${link}`);
    const next = await px(m[1]!);
    assert.equal(next.status, 200, next.text());
    assert.equal((next.json() as { repositories: string[] }).repositories.length, 1);
  });

  test('unauthenticated manifest and blob requests are refused by the proxy', async () => {
    const r = await request(`${proxy.url}/v2/${name}/manifests/v1`, { ca: certs.ca });
    assert.equal(r.status, 401);
    const up = await request(`${proxy.url}/v2/${name}/blobs/uploads/`, { ca: certs.ca, method: 'POST', body: Buffer.alloc(0) });
    assert.equal(up.status, 401);
  });
});

test('the registry refusing a big PATCH before reading it: the client gets that answer every time', async () => {
  // A PATCH to an upload the registry does not know is refused before its body is read. The proxy must
  // deliver the refusal and close gently; closing at once resets the connection under the answer.
  const { location } = await startUpload('e2e/refused');
  const unknown = location.replace(/uploads\/[0-9a-f-]{36}/, 'uploads/00000000-0000-4000-8000-000000000000');
  for (let attempt = 0; attempt < 5; attempt++) {
    const r = await px(unknown, { method: 'PATCH', body: chunkedBody(pseudoRandomBytes(`refused-${attempt}`, 16 * MiB), 256 * 1024) });
    assert.ok(r.status === 400 || r.status === 404, `attempt ${attempt}: status ${r.status}`);
    assert.match(r.text(), /BLOB_UPLOAD_(UNKNOWN|INVALID)/, `attempt ${attempt}`);
  }
});
