/**
 * Build OCI image layouts on disk (no daemon, no network), for `skopeo copy oci:DIR:TAG docker://...`.
 *
 * Each layer is a gzip'd tar holding one regular file of pseudo-random bytes. The bytes come from
 * AES-256-CTR keyed by the seed, so the same (seed, layer index, size) always gives the same layer and the
 * same digests; different seeds give unrelated images. Random bytes do not compress, so a layer's blob is
 * about `layerSize` bytes on the wire.
 */
import { createCipheriv, createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { gzipSync } from 'node:zlib';

export const MEDIA_TYPE_OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';
export const MEDIA_TYPE_OCI_INDEX = 'application/vnd.oci.image.index.v1+json';
export const MEDIA_TYPE_OCI_CONFIG = 'application/vnd.oci.image.config.v1+json';
export const MEDIA_TYPE_OCI_LAYER_GZIP = 'application/vnd.oci.image.layer.v1.tar+gzip';
const REF_NAME = 'org.opencontainers.image.ref.name';

export interface BuildOciImageOptions {
  /** Number of layers (0 is allowed: a config-only image). */
  layers: number;
  /** Bytes of content per layer (before tar/gzip). Default 1 MiB. */
  layerSize?: number;
  /** Tag in index.json (`org.opencontainers.image.ref.name`). Default "latest". */
  tag?: string;
  /** Seed for the content. Default "portcullis". Use a different seed for an image that shares no blob. */
  seed?: string;
}

export interface OciImage {
  /** Absolute path of the layout. */
  layoutDir: string;
  /** "oci:DIR:TAG", for skopeo. */
  ref: string;
  tag: string;
  manifestDigest: string;
  manifestSize: number;
  /** The exact manifest bytes (the digest is over these). */
  manifestBytes: Buffer;
  /** Digests of the compressed layer blobs, in manifest order. */
  layerDigests: string[];
  layerSizes: number[];
  /** sha256 of the uncompressed tars (rootfs.diff_ids in the config). */
  diffIds: string[];
  configDigest: string;
  configSize: number;
}

/**
 * Write an image into the OCI layout at `dir` (created if needed). If `dir` already holds a layout, the
 * image is added to its index.json (an entry with the same tag is replaced), so one layout can carry several
 * tags. The function is synchronous work behind a Promise: a few MiB take milliseconds.
 */
export async function buildOciImage(dir: string, opts: BuildOciImageOptions): Promise<OciImage> {
  const layoutDir = resolve(dir);
  const tag = opts.tag ?? 'latest';
  const seed = opts.seed ?? 'portcullis';
  const layerSize = opts.layerSize ?? 1024 * 1024;
  if (!Number.isInteger(opts.layers) || opts.layers < 0) throw new Error(`layers must be an integer >= 0, got ${opts.layers}`);
  if (!Number.isInteger(layerSize) || layerSize < 0) throw new Error(`layerSize must be an integer >= 0, got ${layerSize}`);
  if (!/^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$/.test(tag)) throw new Error(`"${tag}" is not a valid tag`);

  mkdirSync(join(layoutDir, 'blobs', 'sha256'), { recursive: true });
  writeFileSync(join(layoutDir, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));

  const layerDigests: string[] = [];
  const layerSizes: number[] = [];
  const diffIds: string[] = [];
  for (let i = 0; i < opts.layers; i++) {
    const content = pseudoRandomBytes(`${seed}/layer/${i}`, layerSize);
    const tar = tarWithOneFile(`layer-${i}.bin`, content);
    diffIds.push(sha256(tar));
    const gz = gzipSync(tar, { level: 1 });
    layerDigests.push(writeBlob(layoutDir, gz));
    layerSizes.push(gz.length);
  }

  const config = {
    created: '2024-01-01T00:00:00Z',
    architecture: 'amd64',
    os: 'linux',
    config: { Env: ['PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'], Labels: { 'org.example.seed': seed } },
    rootfs: { type: 'layers', diff_ids: diffIds },
    history: diffIds.map((_, i) => ({ created: '2024-01-01T00:00:00Z', created_by: `portcullis test layer ${i}` })),
  };
  const configBytes = Buffer.from(JSON.stringify(config));
  const configDigest = writeBlob(layoutDir, configBytes);

  const manifest = {
    schemaVersion: 2,
    mediaType: MEDIA_TYPE_OCI_MANIFEST,
    config: { mediaType: MEDIA_TYPE_OCI_CONFIG, digest: configDigest, size: configBytes.length },
    layers: layerDigests.map((digest, i) => ({ mediaType: MEDIA_TYPE_OCI_LAYER_GZIP, digest, size: layerSizes[i]! })),
  };
  const manifestBytes = Buffer.from(JSON.stringify(manifest));
  const manifestDigest = writeBlob(layoutDir, manifestBytes);

  const indexFile = join(layoutDir, 'index.json');
  const index = existsSync(indexFile) ? readIndex(indexFile) : { schemaVersion: 2, mediaType: MEDIA_TYPE_OCI_INDEX, manifests: [] };
  index.manifests = index.manifests.filter((m) => m.annotations?.[REF_NAME] !== tag);
  index.manifests.push({
    mediaType: MEDIA_TYPE_OCI_MANIFEST,
    digest: manifestDigest,
    size: manifestBytes.length,
    annotations: { [REF_NAME]: tag },
  });
  writeFileSync(indexFile, JSON.stringify(index));

  return {
    layoutDir,
    ref: `oci:${layoutDir}:${tag}`,
    tag,
    manifestDigest,
    manifestSize: manifestBytes.length,
    manifestBytes,
    layerDigests,
    layerSizes,
    diffIds,
    configDigest,
    configSize: configBytes.length,
  };
}

interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
  annotations?: Record<string, string>;
}

interface OciIndex {
  schemaVersion: number;
  mediaType?: string;
  manifests: Descriptor[];
}

interface OciManifest {
  schemaVersion: number;
  mediaType?: string;
  config: Descriptor;
  layers: Descriptor[];
}

function readIndex(file: string): OciIndex {
  const parsed: unknown = JSON.parse(readFileSync(file, 'utf8'));
  if (typeof parsed !== 'object' || parsed === null || !Array.isArray((parsed as { manifests?: unknown }).manifests)) {
    throw new Error(`${file}: not an OCI index`);
  }
  return parsed as OciIndex;
}

export interface ReadOciImage {
  manifestDigest: string;
  manifestBytes: Buffer;
  manifest: OciManifest;
  configDigest: string;
  layerDigests: string[];
}

/**
 * Read an image back from an OCI layout (e.g. one written by `skopeo copy docker://... oci:DIR:TAG`).
 * Every blob the manifest names is read and its sha256 checked against its name, so a truncated or
 * corrupted blob fails here.
 */
export function readOciImage(dir: string, tag = 'latest'): ReadOciImage {
  const layoutDir = resolve(dir);
  const index = readIndex(join(layoutDir, 'index.json'));
  const entry = index.manifests.find((m) => m.annotations?.[REF_NAME] === tag);
  if (!entry) throw new Error(`${layoutDir}: no manifest tagged "${tag}" in index.json`);
  const manifestBytes = readBlob(layoutDir, entry.digest, entry.size);
  const manifest = JSON.parse(manifestBytes.toString('utf8')) as OciManifest;
  readBlob(layoutDir, manifest.config.digest, manifest.config.size);
  for (const l of manifest.layers) readBlob(layoutDir, l.digest, l.size);
  return {
    manifestDigest: entry.digest,
    manifestBytes,
    manifest,
    configDigest: manifest.config.digest,
    layerDigests: manifest.layers.map((l) => l.digest),
  };
}

/** A blob's bytes, after checking its size and that its sha256 matches its digest. */
export function readBlob(layoutDir: string, digest: string, size?: number): Buffer {
  const m = /^sha256:([0-9a-f]{64})$/.exec(digest);
  if (!m) throw new Error(`unsupported digest ${digest}`);
  const bytes = readFileSync(join(layoutDir, 'blobs', 'sha256', m[1]!));
  if (size !== undefined && bytes.length !== size) throw new Error(`blob ${digest}: ${bytes.length} bytes, descriptor says ${size}`);
  const actual = sha256(bytes);
  if (actual !== digest) throw new Error(`blob ${digest}: content hashes to ${actual}`);
  return bytes;
}

/** Path of a blob inside a layout. */
export function blobPath(layoutDir: string, digest: string): string {
  return join(resolve(layoutDir), 'blobs', ...digest.split(':'));
}

export function sha256(data: Buffer | string): string {
  return `sha256:${createHash('sha256').update(data).digest('hex')}`;
}

function writeBlob(layoutDir: string, data: Buffer): string {
  const digest = sha256(data);
  writeFileSync(blobPath(layoutDir, digest), data);
  return digest;
}

/** `size` deterministic pseudo-random bytes for a seed string (AES-256-CTR keystream). */
export function pseudoRandomBytes(seed: string, size: number): Buffer {
  const key = createHash('sha256').update(`key:${seed}`).digest();
  const iv = createHash('sha256').update(`iv:${seed}`).digest().subarray(0, 16);
  const cipher = createCipheriv('aes-256-ctr', key, iv);
  return Buffer.concat([cipher.update(Buffer.alloc(size)), cipher.final()]);
}

/** A POSIX ustar archive with one regular file (mode 0644, root-owned, fixed mtime), ended by two zero blocks. */
export function tarWithOneFile(name: string, content: Buffer): Buffer {
  if (Buffer.byteLength(name) > 100) throw new Error('tar name longer than 100 bytes');
  const header = Buffer.alloc(512, 0);
  const field = (offset: number, length: number, value: string): void => {
    header.write(value, offset, length, 'utf8');
  };
  const octal = (offset: number, length: number, value: number): void => {
    // length-1 octal digits followed by NUL.
    field(offset, length, value.toString(8).padStart(length - 1, '0') + '\0');
  };
  field(0, 100, name);
  octal(100, 8, 0o644); // mode
  octal(108, 8, 0); // uid
  octal(116, 8, 0); // gid
  octal(124, 12, content.length); // size (< 8 GiB)
  octal(136, 12, 1_704_067_200); // mtime 2024-01-01
  field(148, 8, '        '); // checksum counts as spaces while summing
  field(156, 1, '0'); // regular file
  field(257, 6, 'ustar\0');
  field(263, 2, '00');
  field(265, 32, 'root');
  field(297, 32, 'root');
  let sum = 0;
  for (const b of header) sum += b;
  field(148, 8, sum.toString(8).padStart(6, '0') + '\0 ');
  const pad = (512 - (content.length % 512)) % 512;
  return Buffer.concat([header, content, Buffer.alloc(pad), Buffer.alloc(1024)]);
}
