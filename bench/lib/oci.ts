/**
 * OCI image layouts for the skopeo step, written as streams: a 64 MiB layer never sits in memory, and a
 * 256 MiB image takes a couple of seconds, so every push can use an image of its own (no layer that the
 * registry or skopeo's blob cache already knows, no cross-repository mount).
 *
 * Each layer is a gzip stream (stored blocks, level 0: the content is random, compression would only cost
 * time) of a tar holding one file of random bytes. Skopeo copies such layers as they are.
 */
import { createHash, randomFillSync } from 'node:crypto';
import { createWriteStream, mkdirSync, renameSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { once } from 'node:events';
import { createGzip } from 'node:zlib';

const MiB = 1024 * 1024;
const MANIFEST = 'application/vnd.oci.image.manifest.v1+json';
const CONFIG = 'application/vnd.oci.image.config.v1+json';
const LAYER = 'application/vnd.oci.image.layer.v1.tar+gzip';

export interface BenchImage {
  /** "oci:DIR:TAG", for skopeo. */
  ref: string;
  /** Bytes of all blobs (layers, config, manifest): what a push or pull moves. */
  bytes: number;
}

export async function writeImage(dir: string, opts: { layers: number; layerSize: number; tag: string }): Promise<BenchImage> {
  const layout = resolve(dir);
  const blobs = join(layout, 'blobs', 'sha256');
  mkdirSync(blobs, { recursive: true });
  writeFileSync(join(layout, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));
  const layers: Array<{ digest: string; size: number; diffId: string }> = [];
  for (let i = 0; i < opts.layers; i++) layers.push(await writeLayer(blobs, i, opts.layerSize));

  const config = Buffer.from(
    JSON.stringify({
      architecture: 'amd64',
      os: 'linux',
      config: {},
      rootfs: { type: 'layers', diff_ids: layers.map((l) => l.diffId) },
    }),
  );
  const configDigest = writeBlob(blobs, config);
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: MANIFEST,
      config: { mediaType: CONFIG, digest: configDigest, size: config.length },
      layers: layers.map((l) => ({ mediaType: LAYER, digest: l.digest, size: l.size })),
    }),
  );
  const manifestDigest = writeBlob(blobs, manifest);
  writeFileSync(
    join(layout, 'index.json'),
    JSON.stringify({
      schemaVersion: 2,
      manifests: [{ mediaType: MANIFEST, digest: manifestDigest, size: manifest.length, annotations: { 'org.opencontainers.image.ref.name': opts.tag } }],
    }),
  );
  const bytes = layers.reduce((s, l) => s + l.size, 0) + config.length + manifest.length;
  return { ref: `oci:${layout}:${opts.tag}`, bytes };
}

function writeBlob(blobs: string, data: Buffer): string {
  const hex = createHash('sha256').update(data).digest('hex');
  writeFileSync(join(blobs, hex), data);
  return `sha256:${hex}`;
}

async function writeLayer(blobs: string, index: number, size: number): Promise<{ digest: string; size: number; diffId: string }> {
  const tmp = join(blobs, `.layer-${index}.tmp`);
  const tarHash = createHash('sha256');
  const gzHash = createHash('sha256');
  let gzBytes = 0;
  const gzip = createGzip({ level: 0 });
  const out = createWriteStream(tmp);
  gzip.on('data', (c: Buffer) => {
    gzHash.update(c);
    gzBytes += c.length;
  });
  gzip.pipe(out);
  const write = async (piece: Buffer): Promise<void> => {
    tarHash.update(piece);
    if (!gzip.write(piece)) await once(gzip, 'drain');
  };
  await write(tarHeader(`layer-${index}.bin`, size));
  for (let done = 0; done < size; ) {
    const n = Math.min(MiB, size - done);
    await write(randomFillSync(Buffer.allocUnsafe(n)));
    done += n;
  }
  await write(Buffer.alloc((512 - (size % 512)) % 512 + 1024)); // padding, then two zero blocks
  gzip.end();
  await once(out, 'close');
  const hex = gzHash.digest('hex');
  renameSync(tmp, join(blobs, hex));
  return { digest: `sha256:${hex}`, size: gzBytes, diffId: `sha256:${tarHash.digest('hex')}` };
}

/** POSIX ustar header for one regular file (mode 0644, root, fixed mtime). */
function tarHeader(name: string, size: number): Buffer {
  const h = Buffer.alloc(512, 0);
  const octal = (offset: number, length: number, value: number): void => {
    h.write(value.toString(8).padStart(length - 1, '0') + '\0', offset, length, 'ascii');
  };
  h.write(name, 0, 100, 'utf8');
  octal(100, 8, 0o644);
  octal(108, 8, 0);
  octal(116, 8, 0);
  octal(124, 12, size);
  octal(136, 12, 1_704_067_200);
  h.write('        ', 148, 8, 'ascii');
  h.write('0', 156, 1, 'ascii');
  h.write('ustar\0', 257, 6, 'ascii');
  h.write('00', 263, 2, 'ascii');
  let sum = 0;
  for (const b of h) sum += b;
  h.write(sum.toString(8).padStart(6, '0') + '\0 ', 148, 8, 'ascii');
  return h;
}
