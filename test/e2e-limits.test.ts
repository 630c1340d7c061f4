/**
 * End to end: `limits.maxBodySize` on the built proxy in front of a real registry. A declared Content-Length
 * over the limit is refused before anything reaches the registry; a chunked body is cut at the limit and the
 * registry never stores more than the limit; a real client (skopeo) gets an error it reports and stops, and a
 * client still sending its body when the 413 is written must be able to read it (no reset under it).
 * The registry's own view (its upload-status endpoint and the upload's data file) is the judge.
 */
import assert from 'node:assert/strict';
import { existsSync, statSync } from 'node:fs';
import { request as httpsRequest } from 'node:https';
import { connect as netConnect } from 'node:net';
import { connect as tlsConnect, type TLSSocket } from 'node:tls';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { request, skopeoCopy, withDigest, type HttpResponse, type RequestOptions } from './helpers/clients.js';
import { buildOciImage, pseudoRandomBytes, sha256 } from './helpers/oci-image.js';
import { describeRun, makeTempDir } from './helpers/proc.js';
import type { RunningPortcullis } from './helpers/portcullis.js';
import type { RunningRegistry } from './helpers/registry.js';
import { startStack, type Stack } from './helpers/stack.js';
import type { TestCerts } from './helpers/tls.js';
import { basic } from './helpers/wire.js';

const USER = 'limited';
const PASSWORD = 'small-bodies';
const KiB = 1024;
const MiB = 1024 * KiB;
const LIMIT = MiB;

let stack: Stack;
let certs: TestCerts;
let registry: RunningRegistry;
let proxy: RunningPortcullis;

before(async () => {
  stack = await startStack({ [USER]: PASSWORD }, { proxy: { limits: { maxBodySize: '1M' } } });
  ({ certs, registry, proxy } = stack);
});

after(() => stack?.close());

function px(target: string, opts: RequestOptions = {}): Promise<HttpResponse> {
  return stack.request(target, opts);
}

function pathAndQuery(url: string): string {
  const u = /^https?:\/\/[^/]*(.*)$/.exec(url);
  assert.ok(u, url);
  return u[1]!;
}

async function startUpload(name: string): Promise<{ location: string; uuid: string }> {
  const r = await px(`/v2/${name}/blobs/uploads/`, { method: 'POST', body: Buffer.alloc(0) });
  assert.equal(r.status, 202, r.text());
  const location = String(r.headers.location);
  assert.ok(location.startsWith(`${proxy.url}/`), location);
  return { location, uuid: String(r.headers['docker-upload-uuid']) };
}

/** Bytes the registry holds for an unfinished upload (filesystem driver layout), or null when it is gone. */
function storedUploadBytes(name: string, uuid: string): number | null {
  const file = join(registry.dataDir, 'docker', 'registry', 'v2', 'repositories', name, '_uploads', uuid, 'data');
  return existsSync(file) ? statSync(file).size : null;
}

function assertDenied(r: HttpResponse): void {
  assert.equal(r.status, 413, r.text());
  assert.equal(r.headers['docker-distribution-api-version'], 'registry/2.0');
  assert.match(String(r.headers['content-type']), /^application\/json/);
  const body = r.json() as { errors: Array<{ code: string; message: string; detail?: { limit?: unknown } }> };
  assert.equal(body.errors.length, 1);
  assert.equal(body.errors[0]!.code, 'DENIED');
  // The message names the limit (its value and the setting), so the user knows what to change.
  assert.match(body.errors[0]!.message, /\b1(?:\.0)? ?(?:Mi?B?|MiB)\b|1048576/, body.errors[0]!.message);
  assert.match(body.errors[0]!.message, /maxBodySize/);
  assert.equal(body.errors[0]!.detail?.limit, LIMIT);
}

/** Sends only the headers of a request that declares a body, and returns the answer (the body is never sent). */
function headersOnly(url: string, method: string, contentLength: number): Promise<{ status: number; body: Buffer; headers: Record<string, unknown> }> {
  return new Promise((resolve, reject) => {
    const req = httpsRequest(
      url,
      {
        method,
        ca: certs.ca,
        agent: false,
        headers: {
          authorization: basic(USER, PASSWORD),
          'content-length': String(contentLength),
          'content-type': 'application/octet-stream',
        },
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks), headers: res.headers });
          req.destroy();
        });
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    req.setTimeout(10_000, () => req.destroy(new Error('no answer to the headers within 10 s')));
    req.flushHeaders();
  });
}

/**
 * A chunked PATCH that sends its body piece by piece, letting the answer in between, and stops sending as soon
 * as the answer arrives (a polite client: it never writes into a connection that has already been answered).
 */
function chunkedUntilAnswered(url: string, data: Buffer): Promise<HttpResponse> {
  return new Promise((resolve, reject) => {
    let answered = false;
    const req = httpsRequest(
      url,
      {
        method: 'PATCH',
        ca: certs.ca,
        agent: false,
        headers: {
          authorization: basic(USER, PASSWORD),
          'content-type': 'application/octet-stream',
          'transfer-encoding': 'chunked',
        },
      },
      (res) => {
        answered = true;
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('error', reject);
        res.on('end', () => {
          const body = Buffer.concat(chunks);
          resolve({
            status: res.statusCode ?? 0,
            headers: res.headers,
            rawHeaders: res.rawHeaders,
            body,
            text: () => body.toString('utf8'),
            json: (): unknown => JSON.parse(body.toString('utf8')),
          });
          req.destroy();
        });
      },
    );
    req.on('error', (e) => {
      if (!answered) reject(e);
    });
    req.setTimeout(20_000, () => req.destroy(new Error('no answer within 20 s')));
    void (async () => {
      for (let offset = 0; offset < data.length && !answered && !req.destroyed; offset += 64 * KiB) {
        req.write(data.subarray(offset, offset + 64 * KiB));
        await new Promise((r) => setTimeout(r, 1));
      }
      if (!answered && !req.destroyed) req.end();
    })();
  });
}

interface WholeRequestResult {
  /** The write error that ended the upload early (EPIPE, ECONNRESET), or null when every byte was sent. */
  writeError: string | null;
  bytesWritten: number;
  /** Status line and headers of the answer (as much as arrived). */
  head: string;
  body: string;
}

function drainOrClose(socket: TLSSocket): Promise<void> {
  return new Promise((resolve) => {
    const done = (): void => {
      socket.off('drain', done);
      socket.off('close', done);
      resolve();
    };
    socket.on('drain', done);
    socket.on('close', done);
  });
}

/**
 * Raw HTTP/1.1 over TLS: headers, then the whole body as fast as the connection takes it (Content-Length or
 * chunked), reading the answer meanwhile; resolves once the server closed the connection or 10 s passed.
 */
function sendWholeRequest(url: string, method: string, data: Buffer, chunked: boolean): Promise<WholeRequestResult> {
  const u = new URL(url);
  return new Promise((resolve) => {
    const received: Buffer[] = [];
    let writeError: string | null = null;
    let bytesWritten = 0;
    let settled = false;
    // Half-open allowed: like Go's client, keep sending after the server's FIN (it may still be reading).
    const tcp = netConnect({ host: u.hostname, port: Number(u.port), allowHalfOpen: true });
    const socket = tlsConnect({ socket: tcp, ca: certs.ca, servername: 'localhost' });
    const finish = (): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.destroy();
      const text = Buffer.concat(received).toString('utf8');
      const split = text.indexOf('\r\n\r\n');
      resolve({ writeError, bytesWritten, head: split === -1 ? text : text.slice(0, split), body: split === -1 ? '' : text.slice(split + 4) });
    };
    const timer = setTimeout(finish, 10_000);
    socket.on('data', (c: Buffer) => received.push(c));
    socket.on('error', (e: NodeJS.ErrnoException) => {
      writeError ??= e.code ?? e.message;
      finish();
    });
    socket.on('close', finish);
    socket.once('secureConnect', () => {
      const head = [
        `${method} ${u.pathname}${u.search} HTTP/1.1`,
        `Host: ${u.host}`,
        `Authorization: ${basic(USER, PASSWORD)}`,
        'Content-Type: application/octet-stream',
        chunked ? 'Transfer-Encoding: chunked' : `Content-Length: ${data.length}`,
        '',
        '',
      ].join('\r\n');
      socket.write(head);
      void (async () => {
        const piece = 64 * KiB;
        for (let offset = 0; offset < data.length && !socket.destroyed; offset += piece) {
          const part = data.subarray(offset, offset + piece);
          const ok = socket.write(chunked ? Buffer.concat([Buffer.from(`${part.length.toString(16)}\r\n`), part, Buffer.from('\r\n')]) : part);
          bytesWritten += part.length;
          if (!ok) await drainOrClose(socket);
        }
        if (!socket.destroyed && chunked) socket.write('0\r\n\r\n');
        // Everything was handed over: wait for the answer (the server may keep the connection open).
        const poll = setInterval(() => {
          if (settled) clearInterval(poll);
          else if (/\r\n\r\n[\s\S]*\}/.test(Buffer.concat(received).toString('utf8'))) {
            clearInterval(poll);
            finish();
          }
        }, 20);
      })();
    });
  });
}

test('monolithic PUT declaring 2 MiB: 413 DENIED naming the limit, and the registry got nothing', async () => {
  const data = pseudoRandomBytes('e2e-limits/monolithic', 2 * MiB);
  const digest = sha256(data);
  const { location, uuid } = await startUpload('e2e/mono');

  // The proxy answers on the declared length alone: no body byte needs to be sent.
  const early = await headersOnly(withDigest(location, digest), 'PUT', data.length);
  assert.equal(early.status, 413, early.body.toString());
  assert.equal((JSON.parse(early.body.toString()) as { errors: Array<{ code: string }> }).errors[0]!.code, 'DENIED');

  // And with the body actually sent, the client still reads the 413.
  const put = await px(withDigest(location, digest), { method: 'PUT', body: data });
  assertDenied(put);

  // The registry still has the upload at offset 0 (its own state check passes) and no data.
  const status = await request(`${registry.url}${pathAndQuery(location)}`);
  assert.equal(status.status, 204, status.text());
  assert.equal(status.headers.range, '0-0');
  assert.equal(storedUploadBytes('e2e/mono', uuid), 0);
  const blob = await request(`${registry.url}/v2/e2e/mono/blobs/${digest}`, { method: 'HEAD' });
  assert.equal(blob.status, 404);

  const line = await proxy.waitForLog((l) => l['msg'] === 'request' && l['method'] === 'PUT' && l['status'] === 413);
  assert.equal(line['error'], 'body_too_large');
  assert.equal(line['upstreamStatus'], null);
});

test('a body within the limit passes (monolithic PUT of 512 KiB)', async () => {
  const data = pseudoRandomBytes('e2e-limits/small', 512 * KiB);
  const digest = sha256(data);
  const { location } = await startUpload('e2e/small');
  const put = await px(withDigest(location, digest), { method: 'PUT', body: data });
  assert.equal(put.status, 201, put.text());
  assert.equal(put.headers['docker-content-digest'], digest);
});

test('chunked PATCH of 3 MiB: 413 DENIED, and the registry holds at most the limit', async () => {
  const data = pseudoRandomBytes('e2e-limits/chunked', 3 * MiB);
  const { location, uuid } = await startUpload('e2e/chunked');
  const patch = await chunkedUntilAnswered(location, data);
  assertDenied(patch);

  const line = await proxy.waitForLog((l) => l['msg'] === 'request' && l['method'] === 'PATCH' && l['path'] === `/v2/e2e/chunked/blobs/uploads/${uuid}`);
  assert.equal(line['status'], 413);
  assert.equal(line['error'], 'body_too_large');
  assert.ok(typeof line['bytesIn'] === 'number' && line['bytesIn'] > LIMIT, `bytesIn ${String(line['bytesIn'])}: the cut happens once the limit is crossed`);

  // The registry's upload is either gone, or holds no more than the limit.
  const stored = storedUploadBytes('e2e/chunked', uuid);
  assert.ok(stored === null || stored <= LIMIT, `the registry stored ${stored} bytes, over the ${LIMIT}-byte limit`);
  const status = await request(`${registry.url}${pathAndQuery(location)}`);
  if (stored === 0) {
    assert.equal(status.status, 204, status.text());
    assert.equal(status.headers.range, '0-0');
  } else {
    // Data arrived although the signed state says offset 0 (or the upload is gone): the registry refuses it.
    assert.ok(status.status === 400 || status.status === 404, `${status.status} ${status.text()}`);
  }
  // Whatever arrived, it cannot be completed into a blob.
  const put = await request(`${registry.url}${withDigest(pathAndQuery(location), sha256(data))}`, { method: 'PUT', body: Buffer.alloc(0) });
  assert.notEqual(put.status, 201, put.text());
});

test('a client that sends its whole body before reading still gets the 413: no reset while it sends (16 MiB, declared and chunked)', async () => {
  // HTTP/1.1 lets a client send its whole request before it reads the answer, and Go's net/http (docker,
  // skopeo, containerd) writes the body while the answer arrives, reporting a write error ("broken pipe")
  // instead of the answer when the connection is reset under it, and then retrying the push. RFC 9112
  // section 9.6: a server that answers before reading the body closes in stages (half-close, keep reading)
  // so that its last response is not erased by a reset.
  const data = pseudoRandomBytes('e2e-limits/whole-body', 16 * MiB);
  const digest = sha256(data);
  for (const shape of ['declared', 'chunked'] as const) {
    const { location } = await startUpload(`e2e/whole-${shape}`);
    const target = shape === 'declared' ? withDigest(location, digest) : location;
    const r = await sendWholeRequest(target, shape === 'declared' ? 'PUT' : 'PATCH', data, shape === 'chunked');
    const sent = r.writeError === null && r.bytesWritten === data.length;
    assert.ok(sent, `${shape}: the connection was closed under the client while it was still sending its body (${r.writeError ?? 'closed'} after ${r.bytesWritten} of ${data.length} bytes); answer read: ${r.head.split('\r\n')[0] || '(none)'}`);
    assert.match(r.head, /^HTTP\/1\.1 413 /, `${shape}: ${r.head}`);
    const body = JSON.parse(r.body) as { errors: Array<{ code: string }> };
    assert.equal(body.errors[0]!.code, 'DENIED', `${shape}: ${r.body}`);
  }
  assert.equal(proxy.proc.exitCode, null);
});

test('skopeo: an image with a 2 MiB layer is refused with 413/denied; a small image pushes through the same proxy', async () => {
  const creds = `${USER}:${PASSWORD}`;
  const big = await buildOciImage(makeTempDir('portcullis-e2e-big-'), { layers: 1, layerSize: 2 * MiB, tag: 'big', seed: 'e2e-limits-big' });
  const refused = await skopeoCopy(big.ref, `docker://${proxy.hostPort}/e2e/big:v1`, {
    dest: { certDir: certs.caDir, creds },
    extraArgs: ['--retry-times', '0'],
  });
  assert.notEqual(refused.code, 0, describeRun('skopeo copy (2 MiB layer)', refused));
  assert.match(refused.stderr, /413|denied/i, describeRun('skopeo copy (2 MiB layer)', refused));
  const tags = await request(`${registry.url}/v2/e2e/big/tags/list`);
  assert.equal(tags.status, 404, tags.text());
  const layer = await request(`${registry.url}/v2/e2e/big/blobs/${big.layerDigests[0]!}`, { method: 'HEAD' });
  assert.equal(layer.status, 404);

  const small = await buildOciImage(makeTempDir('portcullis-e2e-small-'), { layers: 2, layerSize: 256 * KiB, tag: 'small', seed: 'e2e-limits-small' });
  const ok = await skopeoCopy(small.ref, `docker://${proxy.hostPort}/e2e/small-image:v1`, { dest: { certDir: certs.caDir, creds } });
  assert.equal(ok.code, 0, describeRun('skopeo copy (small image)', ok));
  const manifest = await request(`${registry.url}/v2/e2e/small-image/manifests/v1`, {
    headers: { accept: 'application/vnd.oci.image.manifest.v1+json' },
  });
  assert.equal(manifest.status, 200);
  assert.equal(manifest.headers['docker-content-digest'], small.manifestDigest);
});
