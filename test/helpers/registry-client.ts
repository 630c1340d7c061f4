/**
 * A small registry client in Node that speaks the distribution API the way docker does, for load and soak runs
 * where hundreds of client processes would measure the clients rather than the proxy:
 *
 * - push: per blob `HEAD` (skip if present), `POST /blobs/uploads/`, a chunked `PATCH` to the Location, then
 *   `PUT ?digest=`; then `PUT /manifests/TAG`. Every digest the registry answers is compared with ours.
 * - pull: `GET /manifests/TAG`, whose bytes are hashed and compared with the expected digest and with
 *   Docker-Content-Digest; then every blob it names is streamed and re-hashed, and its size checked.
 *
 * Every request is timed by operation (`onTiming`), over one keep-alive pool trusting only the given CA.
 */
import { createHash } from 'node:crypto';
import https from 'node:https';
import type { IncomingHttpHeaders, IncomingMessage, OutgoingHttpHeaders } from 'node:http';
import { gzipSync } from 'node:zlib';
import {
  MEDIA_TYPE_OCI_CONFIG,
  MEDIA_TYPE_OCI_LAYER_GZIP,
  MEDIA_TYPE_OCI_MANIFEST,
  pseudoRandomBytes,
  sha256,
  tarWithOneFile,
} from './oci-image.js';
import { basic } from './wire.js';

export type Operation =
  | 'blob-head'
  | 'upload-start'
  | 'upload-patch'
  | 'upload-finish'
  | 'manifest-put'
  | 'manifest-get'
  | 'blob-get'
  | 'catalog'
  | 'tags'
  | 'ping';

export interface RegistryClientOptions {
  /** The proxy's origin, e.g. "https://127.0.0.1:43123". */
  origin: string;
  /** PEM of the CA to trust (and nothing else). */
  ca: string | Buffer;
  user: string;
  password: string;
  /** Keep-alive pool size. Default 4. */
  maxSockets?: number;
  /** Whole-request deadline. Default 60 s. */
  timeoutMs?: number;
  /** Called once per finished request with its operation and duration. */
  onTiming?: (op: Operation, ms: number) => void;
}

/** The registry (or the proxy) answered something else than the protocol asks for. */
export class ProtocolError extends Error {
  constructor(
    readonly op: Operation,
    readonly status: number,
    message: string,
  ) {
    super(`${op}: ${message}`);
    this.name = 'ProtocolError';
  }
}

/** Bytes received do not hash to the digest they were asked for, or have another size. */
export class IntegrityError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'IntegrityError';
  }
}

export interface Blob {
  digest: string;
  data: Buffer;
}

/** An OCI image in memory: its manifest and every blob it names (config first). */
export interface MemoryImage {
  manifestBytes: Buffer;
  manifestDigest: string;
  mediaType: string;
  blobs: Blob[];
}

/**
 * A distinct image per seed: `layers` gzip'd tars of `layerSize` pseudo-random bytes each, and a config.
 * Same seed, same digests (like buildOciImage, without the disk).
 */
export function memoryImage(seed: string, layers: number, layerSize: number): MemoryImage {
  const layerBlobs: Blob[] = [];
  const diffIds: string[] = [];
  for (let i = 0; i < layers; i++) {
    const tar = tarWithOneFile(`layer-${i}.bin`, pseudoRandomBytes(`${seed}/layer/${i}`, layerSize));
    diffIds.push(sha256(tar));
    const gz = gzipSync(tar, { level: 1 });
    layerBlobs.push({ digest: sha256(gz), data: gz });
  }
  const config = Buffer.from(
    JSON.stringify({
      created: '2024-01-01T00:00:00Z',
      architecture: 'amd64',
      os: 'linux',
      config: { Labels: { 'org.example.seed': seed } },
      rootfs: { type: 'layers', diff_ids: diffIds },
    }),
  );
  const configBlob = { digest: sha256(config), data: config };
  const manifestBytes = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: MEDIA_TYPE_OCI_MANIFEST,
      config: { mediaType: MEDIA_TYPE_OCI_CONFIG, digest: configBlob.digest, size: config.length },
      layers: layerBlobs.map((b) => ({ mediaType: MEDIA_TYPE_OCI_LAYER_GZIP, digest: b.digest, size: b.data.length })),
    }),
  );
  return { manifestBytes, manifestDigest: sha256(manifestBytes), mediaType: MEDIA_TYPE_OCI_MANIFEST, blobs: [configBlob, ...layerBlobs] };
}

interface Answer {
  status: number;
  headers: IncomingHttpHeaders;
  body: Buffer;
}

const MANIFEST_ACCEPT = [
  MEDIA_TYPE_OCI_MANIFEST,
  'application/vnd.oci.image.index.v1+json',
  'application/vnd.docker.distribution.manifest.v2+json',
  'application/vnd.docker.distribution.manifest.list.v2+json',
].join(', ');

export class RegistryClient {
  readonly agent: https.Agent;
  readonly #o: RegistryClientOptions;
  readonly #auth: string;
  /** Digests checked so far (manifests and blobs, pushed or pulled). */
  verified = 0;

  constructor(options: RegistryClientOptions) {
    this.#o = options;
    this.#auth = basic(options.user, options.password);
    this.agent = new https.Agent({ keepAlive: true, maxSockets: options.maxSockets ?? 4, ca: options.ca });
  }

  close(): void {
    this.agent.destroy();
  }

  /** `GET /v2/`: 200 expected. */
  async ping(): Promise<void> {
    const r = await this.#send('ping', 'GET', '/v2/');
    this.#expect('ping', r, [200]);
  }

  /** Repository names of one catalog page. */
  async catalog(n = 100): Promise<string[]> {
    const r = await this.#send('catalog', 'GET', `/v2/_catalog?n=${n}`);
    this.#expect('catalog', r, [200]);
    const body = JSON.parse(r.body.toString('utf8')) as { repositories?: unknown };
    if (!Array.isArray(body.repositories)) throw new ProtocolError('catalog', r.status, `no repositories list: ${r.body.toString('utf8').slice(0, 200)}`);
    return body.repositories.map(String);
  }

  async tags(name: string): Promise<string[]> {
    const r = await this.#send('tags', 'GET', `/v2/${name}/tags/list`);
    this.#expect('tags', r, [200]);
    const body = JSON.parse(r.body.toString('utf8')) as { tags?: unknown };
    if (!Array.isArray(body.tags)) throw new ProtocolError('tags', r.status, `no tags list: ${r.body.toString('utf8').slice(0, 200)}`);
    return body.tags.map(String);
  }

  /** Push every blob the registry lacks, then the manifest under `tag`; every digest answered is checked. */
  async push(name: string, tag: string, image: MemoryImage): Promise<void> {
    for (const blob of image.blobs) {
      const head = await this.#send('blob-head', 'HEAD', `/v2/${name}/blobs/${blob.digest}`);
      this.#expect('blob-head', head, [200, 404]);
      if (head.status === 200) continue;
      await this.pushBlob(name, blob);
    }
    const put = await this.#send('manifest-put', 'PUT', `/v2/${name}/manifests/${tag}`, {
      headers: { 'content-type': image.mediaType },
      body: image.manifestBytes,
    });
    this.#expect('manifest-put', put, [201]);
    this.#sameDigest('manifest-put', put, image.manifestDigest);
  }

  /** POST, one chunked PATCH of the whole blob, PUT ?digest=. */
  async pushBlob(name: string, blob: Blob): Promise<void> {
    const start = await this.#send('upload-start', 'POST', `/v2/${name}/blobs/uploads/`, { body: Buffer.alloc(0) });
    this.#expect('upload-start', start, [202]);
    const patch = await this.#send('upload-patch', 'PATCH', this.#location('upload-start', start), {
      headers: { 'content-type': 'application/octet-stream' },
      chunks: split(blob.data, 64 * 1024),
    });
    this.#expect('upload-patch', patch, [202]);
    if (patch.headers.range !== `0-${blob.data.length - 1}`) {
      throw new ProtocolError('upload-patch', patch.status, `Range ${String(patch.headers.range)} after ${blob.data.length} bytes`);
    }
    const url = new URL(this.#location('upload-patch', patch));
    url.searchParams.set('digest', blob.digest);
    const put = await this.#send('upload-finish', 'PUT', url.href, { body: Buffer.alloc(0) });
    this.#expect('upload-finish', put, [201]);
    this.#sameDigest('upload-finish', put, blob.digest);
  }

  /**
   * Pull `name:tag`: the manifest's bytes must hash to `expected` (when given) and to its Docker-Content-Digest;
   * each blob is streamed, re-hashed and size-checked. Returns the manifest digest and the blob bytes read.
   */
  async pull(name: string, tag: string, expected?: string): Promise<{ manifestDigest: string; blobs: number; bytes: number }> {
    const m = await this.#send('manifest-get', 'GET', `/v2/${name}/manifests/${tag}`, { headers: { accept: MANIFEST_ACCEPT } });
    this.#expect('manifest-get', m, [200]);
    const digest = sha256(m.body);
    if (expected !== undefined && digest !== expected) throw new IntegrityError(`${name}:${tag}: manifest hashes to ${digest}, expected ${expected}`);
    this.#sameDigest('manifest-get', m, digest);
    const manifest = JSON.parse(m.body.toString('utf8')) as { config?: { digest: string; size: number }; layers?: Array<{ digest: string; size: number }> };
    if (!manifest.config || !Array.isArray(manifest.layers)) throw new ProtocolError('manifest-get', m.status, 'not an image manifest');
    let bytes = 0;
    const blobs = [manifest.config, ...manifest.layers];
    for (const b of blobs) bytes += await this.pullBlob(name, b.digest, b.size);
    return { manifestDigest: digest, blobs: blobs.length, bytes };
  }

  /** GET a blob, hashing it as it streams; throws unless it has exactly `size` bytes hashing to `digest`. */
  pullBlob(name: string, digest: string, size: number): Promise<number> {
    return new Promise((resolve, reject) => {
      const started = performance.now();
      const req = https.request(`${this.#o.origin}/v2/${name}/blobs/${digest}`, { agent: this.agent, headers: { authorization: this.#auth } }, (res) => {
        if (res.statusCode !== 200) {
          drain(res).then((body) => reject(new ProtocolError('blob-get', res.statusCode ?? 0, `${digest}: ${res.statusCode} ${body.toString('utf8').slice(0, 300)}`)), reject);
          return;
        }
        const hash = createHash('sha256');
        let n = 0;
        res.on('data', (c: Buffer) => {
          hash.update(c);
          n += c.length;
        });
        res.once('error', reject);
        res.once('close', () => {
          if (!res.complete) reject(new IntegrityError(`${digest}: connection closed after ${n} of ${size} bytes`));
        });
        res.once('end', () => {
          this.#o.onTiming?.('blob-get', performance.now() - started);
          const got = `sha256:${hash.digest('hex')}`;
          if (n !== size) return reject(new IntegrityError(`${digest}: ${n} bytes, descriptor says ${size}`));
          if (got !== digest) return reject(new IntegrityError(`${digest}: content hashes to ${got}`));
          this.verified++;
          resolve(n);
        });
      });
      req.setTimeout(this.#o.timeoutMs ?? 60_000, () => req.destroy(new ProtocolError('blob-get', 0, `${digest}: no progress for ${this.#o.timeoutMs ?? 60_000} ms`)));
      req.once('error', reject);
      req.end();
    });
  }

  #location(op: Operation, r: Answer): string {
    const loc = r.headers.location;
    if (typeof loc !== 'string' || loc === '') throw new ProtocolError(op, r.status, 'no Location');
    return new URL(loc, this.#o.origin).href;
  }

  #expect(op: Operation, r: Answer, statuses: number[]): void {
    if (!statuses.includes(r.status)) throw new ProtocolError(op, r.status, `status ${r.status}: ${r.body.toString('utf8').slice(0, 300)}`);
  }

  #sameDigest(op: Operation, r: Answer, digest: string): void {
    const answered = r.headers['docker-content-digest'];
    if (answered !== digest) throw new IntegrityError(`${op}: Docker-Content-Digest ${String(answered)}, expected ${digest}`);
    this.verified++;
  }

  #send(op: Operation, method: string, target: string, o: { headers?: OutgoingHttpHeaders; body?: Buffer; chunks?: Buffer[] } = {}): Promise<Answer> {
    const url = target.startsWith('https://') ? target : `${this.#o.origin}${target}`;
    const headers: OutgoingHttpHeaders = { authorization: this.#auth, ...o.headers };
    if (o.body !== undefined) headers['content-length'] = o.body.length;
    const timeoutMs = this.#o.timeoutMs ?? 60_000;
    return new Promise((resolve, reject) => {
      const started = performance.now();
      const req = https.request(url, { method, agent: this.agent, headers }, (res) => {
        drain(res).then((body) => {
          this.#o.onTiming?.(op, performance.now() - started);
          resolve({ status: res.statusCode ?? 0, headers: res.headers, body });
        }, reject);
      });
      req.setTimeout(timeoutMs, () => req.destroy(new ProtocolError(op, 0, `${method} ${url}: no progress for ${timeoutMs} ms`)));
      req.once('error', reject);
      if (o.chunks) {
        void (async () => {
          for (const c of o.chunks!) {
            if (!req.write(c)) await new Promise<void>((r) => req.once('drain', () => r()));
          }
          req.end();
        })();
      } else req.end(o.body);
    });
  }
}

/** The whole body; rejects when the connection closes before the end of the response. */
function drain(res: IncomingMessage): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    res.on('data', (c: Buffer) => chunks.push(c));
    res.once('error', reject);
    res.once('close', () => {
      if (!res.complete) reject(new IntegrityError(`${res.statusCode} response cut after ${chunks.reduce((a, c) => a + c.length, 0)} bytes`));
    });
    res.once('end', () => resolve(Buffer.concat(chunks)));
  });
}

function split(data: Buffer, size: number): Buffer[] {
  const out: Buffer[] = [];
  for (let i = 0; i < data.length; i += size) out.push(data.subarray(i, Math.min(data.length, i + size)));
  return out;
}
