/**
 * End to end: `Location` rewriting with a real registry that writes its own internal address into every
 * Location (`http.host`), behind the built proxy on a non-standard port. The rewritten Location must point at
 * the origin the client used, keep the path and the signed `_state` byte for byte, and be followable
 * (PATCH, PUT) — and a full skopeo push must work through it. A second registry advertises a name that
 * differs from `upstream.url`; only `upstream.aliases` makes the proxy recognise it.
 */
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { after, before, describe, test } from 'node:test';
import { chunkedBody, request, skopeoCopy, skopeoInspect, withDigest, type HttpResponse, type RequestOptions } from './helpers/clients.js';
import { buildOciImage, pseudoRandomBytes, readOciImage, sha256 } from './helpers/oci-image.js';
import { describeRun, freePort, makeTempDir } from './helpers/proc.js';
import type { RunningPortcullis } from './helpers/portcullis.js';
import type { RunningRegistry } from './helpers/registry.js';
import { startStack, type Stack } from './helpers/stack.js';

const USER = 'locator';
const PASSWORD = 'where:am:i';
const MiB = 1024 * 1024;
const CREDS = `${USER}:${PASSWORD}`;
const ALIAS_ORIGIN = 'http://registry.internal:5000';

/** The stack of the describe running now (each has its own registry); `via` and skopeo trust its CA. */
let stack: Stack;

const via = (to: RunningPortcullis, target: string, opts?: RequestOptions): Promise<HttpResponse> => stack.requestTo(to, target, opts);

/** Path and query of an absolute URL, exactly as written (no URL parsing, so no re-encoding). */
function pathAndQuery(url: string): string {
  const m = /^[a-z][a-z0-9+.-]*:\/\/[^/?#]*(.*)$/i.exec(url);
  assert.ok(m, `not an absolute URL: ${url}`);
  return m[1]!;
}

function stateOf(url: string): string {
  const m = /[?&]_state=([^&]*)/.exec(url);
  assert.ok(m, `no _state in ${url}`);
  return m[1]!;
}

interface UploadState {
  Name: string;
  UUID: string;
  Offset: number;
  StartedAt: string;
}

/**
 * Checks that the query of an upload URL is exactly `_state=` + what distribution 2.8 writes
 * (`registry/handlers/hmac.go`: base64url(HMAC-SHA256(http.secret, json) + json), query-escaped), with an
 * HMAC that verifies under the registry's secret. Any changed byte fails. Returns the decoded state.
 */
function verifyState(registry: RunningRegistry, url: string): UploadState {
  const query = url.slice(url.indexOf('?') + 1);
  const raw = decodeURIComponent(stateOf(url));
  const packed = Buffer.from(raw, 'base64url');
  const mac = packed.subarray(0, 32);
  const payload = packed.subarray(32);
  const secret = (JSON.parse(readFileSync(registry.configFile, 'utf8')) as { http: { secret: string } }).http.secret;
  const expected = createHmac('sha256', secret).update(payload).digest();
  assert.ok(mac.equals(expected), `_state HMAC does not verify: ${url}`);
  const b64 = packed.toString('base64url');
  const padded = b64 + '='.repeat((4 - (b64.length % 4)) % 4);
  assert.equal(query, `_state=${padded.replaceAll('=', '%3D')}`, 'query is not the registry\'s encoding of its _state');
  return JSON.parse(payload.toString('utf8')) as UploadState;
}

describe('registry with http.host = its internal address, proxy on a non-standard port', () => {
  let registry: RunningRegistry;
  let proxy: RunningPortcullis;
  let internal: string;

  before(async () => {
    const regPort = await freePort();
    internal = `http://127.0.0.1:${regPort}`;
    stack = await startStack({ [USER]: PASSWORD }, { registry: { port: regPort, host: internal } });
    ({ registry, proxy } = stack);
    assert.notEqual(proxy.port, 443);
    assert.notEqual(proxy.port, registry.port);
  });

  after(() => stack?.close());

  test('the registry itself answers with its internal origin (the problem being solved)', async () => {
    const direct = await request(`${registry.url}/v2/e2e/loc/blobs/uploads/`, {
      method: 'POST',
      headers: { 'x-forwarded-proto': 'https', 'x-forwarded-host': `127.0.0.1:${proxy.port}` },
      body: Buffer.alloc(0),
    });
    assert.equal(direct.status, 202);
    assert.ok(String(direct.headers.location).startsWith(`${internal}/v2/e2e/loc/blobs/uploads/`), String(direct.headers.location));
  });

  test('POST through the proxy: Location on the proxy origin, path and _state as the registry wrote them', async () => {
    const r = await via(proxy, '/v2/e2e/loc/blobs/uploads/', { method: 'POST', body: Buffer.alloc(0) });
    assert.equal(r.status, 202, r.text());
    const location = String(r.headers.location);
    const uuid = String(r.headers['docker-upload-uuid']);
    assert.ok(location.startsWith(`https://127.0.0.1:${proxy.port}/v2/e2e/loc/blobs/uploads/${uuid}?`), location);
    assert.equal(r.headers.range, '0-0');

    // The registry wrote this _state: its HMAC (keyed with the registry's http.secret) still verifies, it names
    // this upload at offset 0, and the query is exactly the registry's encoding of it, byte for byte.
    const state = verifyState(registry, location);
    assert.deepEqual({ name: state.Name, uuid: state.UUID, offset: state.Offset }, { name: 'e2e/loc', uuid, offset: 0 });
    // A direct POST to the registry gives a Location of the same shape on the internal origin.
    const direct = await request(`${registry.url}/v2/e2e/loc/blobs/uploads/`, { method: 'POST', body: Buffer.alloc(0) });
    assert.equal(direct.status, 202);
    const directLocation = String(direct.headers.location);
    const shape = (path: string): string => path.replace(/[0-9a-f-]{36}\?_state=[A-Za-z0-9_-]+(?:%3D)*$/, 'UUID?_state=STATE');
    assert.ok(directLocation.startsWith(`${internal}/`), directLocation);
    assert.equal(shape(pathAndQuery(location)), '/v2/e2e/loc/blobs/uploads/UUID?_state=STATE');
    assert.equal(shape(pathAndQuery(directLocation)), shape(pathAndQuery(location)));
    verifyState(registry, directLocation);
    // And the registry accepts the rewritten Location's path and query as they are.
    const status = await request(`${registry.url}${pathAndQuery(location)}`);
    assert.equal(status.status, 204, status.text());
    assert.equal(status.headers.range, '0-0');
  });

  test('with Host localhost:PORT the Location uses https://localhost:PORT', async () => {
    const r = await via(proxy, '/v2/e2e/loc/blobs/uploads/', {
      method: 'POST',
      headers: { host: `localhost:${proxy.port}` },
      servername: 'localhost',
      body: Buffer.alloc(0),
    });
    assert.equal(r.status, 202, r.text());
    const location = String(r.headers.location);
    assert.ok(location.startsWith(`https://localhost:${proxy.port}/v2/e2e/loc/blobs/uploads/`), location);
    assert.match(location, /[?&]_state=/);
  });

  test('PATCH (chunked) and PUT follow the rewritten Locations and complete the blob', async () => {
    const data = pseudoRandomBytes('e2e-location/blob', 2 * MiB + 7);
    const digest = sha256(data);
    const start = await via(proxy, '/v2/e2e/loc/blobs/uploads/', { method: 'POST', body: Buffer.alloc(0) });
    assert.equal(start.status, 202, start.text());
    const first = String(start.headers.location);
    assert.ok(first.startsWith(`${proxy.url}/`), first);

    const patch = await via(proxy, first, { method: 'PATCH', headers: { 'content-type': 'application/octet-stream' }, body: chunkedBody(data) });
    assert.equal(patch.status, 202, patch.text());
    assert.equal(patch.headers.range, `0-${data.length - 1}`);
    const second = String(patch.headers.location);
    assert.ok(second.startsWith(`${proxy.url}/v2/e2e/loc/blobs/uploads/`), second);
    assert.notEqual(stateOf(second), stateOf(first), 'the state after the PATCH records the new offset');

    const put = await via(proxy, withDigest(second, digest), { method: 'PUT', body: Buffer.alloc(0) });
    assert.equal(put.status, 201, put.text());
    assert.equal(put.headers['docker-content-digest'], digest);
    assert.equal(String(put.headers.location), `${proxy.url}/v2/e2e/loc/blobs/${digest}`);

    const got = await request(`${registry.url}/v2/e2e/loc/blobs/${digest}`);
    assert.equal(got.status, 200);
    assert.ok(got.body.equals(data));
  });

  test('a full skopeo push and pull work through it', async () => {
    const image = await buildOciImage(makeTempDir('portcullis-e2e-loc-img-'), { layers: 3, layerSize: MiB, tag: 'v1', seed: 'e2e-location' });
    const ref = `docker://${proxy.hostPort}/e2e/located:v1`;
    const push = await skopeoCopy(image.ref, ref, { dest: { certDir: stack.certs.caDir, creds: CREDS } });
    assert.equal(push.code, 0, describeRun('skopeo copy (push)', push));
    const inspect = await skopeoInspect(ref, { certDir: stack.certs.caDir, creds: CREDS });
    assert.equal(inspect.code, 0, describeRun('skopeo inspect', inspect));
    assert.equal((inspect.json as { Digest: string }).Digest, image.manifestDigest);
    const out = makeTempDir('portcullis-e2e-loc-pull-');
    const pull = await skopeoCopy(ref, `oci:${out}:v1`, { src: { certDir: stack.certs.caDir, creds: CREDS } });
    assert.equal(pull.code, 0, describeRun('skopeo copy (pull)', pull));
    assert.deepEqual(readOciImage(out, 'v1').layerDigests, image.layerDigests);
  });
});

describe('registry whose http.host differs from upstream.url', () => {
  let registry: RunningRegistry;
  let aliased: RunningPortcullis;
  let plain: RunningPortcullis;

  before(async () => {
    stack = await startStack({ [USER]: PASSWORD }, { registry: { host: ALIAS_ORIGIN }, proxy: { upstream: { aliases: [ALIAS_ORIGIN] } } });
    ({ registry, proxy: aliased } = stack);
    plain = await stack.startProxy();
  });

  after(() => stack?.close());

  test('without the alias, a Location to the unknown origin passes untouched', async () => {
    const r = await via(plain, '/v2/e2e/alias/blobs/uploads/', { method: 'POST', body: Buffer.alloc(0) });
    assert.equal(r.status, 202, r.text());
    assert.ok(String(r.headers.location).startsWith(`${ALIAS_ORIGIN}/v2/e2e/alias/blobs/uploads/`), String(r.headers.location));
  });

  test('with upstream.aliases the Location is rewritten to the proxy, _state intact, and the upload completes', async () => {
    const data = pseudoRandomBytes('e2e-location/alias', MiB + 3);
    const digest = sha256(data);
    const start = await via(aliased, '/v2/e2e/alias/blobs/uploads/', { method: 'POST', body: Buffer.alloc(0) });
    assert.equal(start.status, 202, start.text());
    const location = String(start.headers.location);
    assert.ok(location.startsWith(`https://127.0.0.1:${aliased.port}/v2/e2e/alias/blobs/uploads/`), location);

    // The _state is the registry's, byte for byte, and the registry accepts the rewritten path and query.
    const state = verifyState(registry, location);
    assert.equal(state.UUID, String(start.headers['docker-upload-uuid']));
    const status = await request(`${registry.url}${pathAndQuery(location)}`);
    assert.equal(status.status, 204, status.text());
    assert.ok(String(status.headers.location).startsWith(`${ALIAS_ORIGIN}/v2/e2e/alias/blobs/uploads/${state.UUID}?_state=`));

    const patch = await via(aliased, location, { method: 'PATCH', body: chunkedBody(data) });
    assert.equal(patch.status, 202, patch.text());
    const next = String(patch.headers.location);
    assert.ok(next.startsWith(`${aliased.url}/`), next);
    const put = await via(aliased, withDigest(next, digest), { method: 'PUT', body: Buffer.alloc(0) });
    assert.equal(put.status, 201, put.text());
    assert.equal(String(put.headers.location), `${aliased.url}/v2/e2e/alias/blobs/${digest}`);

    const image = await buildOciImage(makeTempDir('portcullis-e2e-alias-img-'), { layers: 2, layerSize: MiB, tag: 'v1', seed: 'e2e-alias' });
    const push = await skopeoCopy(image.ref, `docker://${aliased.hostPort}/e2e/aliased:v1`, {
      dest: { certDir: stack.certs.caDir, creds: CREDS },
    });
    assert.equal(push.code, 0, describeRun('skopeo copy (push via alias)', push));
  });
});
