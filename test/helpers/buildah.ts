/**
 * buildah, the daemonless image builder, with its image store in a temp folder: the `vfs` storage driver
 * (plain directories: no overlay mount, nothing to unmount, works anywhere as root) under
 * `--root DIR/root --runroot DIR/runroot`.
 *
 * Isolation: every run gets its own auth file (REGISTRY_AUTH_FILE, empty: credentials only come from
 * `creds`), registries.conf (no search registries, no mirrors), storage.conf, containers.conf (empty),
 * signature policy (accept anything: the tests check digests themselves) and TMPDIR, all in the same
 * folder, so the machine's /etc/containers and ~/.config never change what a test sees. One thing cannot be
 * moved for root: containers/image's blob-info cache (/var/lib/containers/cache/blob-info-cache-v1.boltdb,
 * shared with skopeo and podman). It only remembers where blobs were seen, so at worst a push mounts a blob
 * the registry already has instead of uploading it.
 *
 * Certificates: `certDir` is a folder read like /etc/containers/certs.d/HOST:PORT: every `*.crt` is a CA
 * (added to the system roots), and `NAME.cert` + `NAME.key` is a client certificate offered when the server
 * asks for one (a `.key` without its `.cert`, or the reverse, is an error). `TestCerts.caDir` holds only `ca.crt`.
 */
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { sha256 } from './oci-image.js';
import { makeTempDir, removeTempDir, run, type RunResult } from './proc.js';

export const BUILDAH_BIN = process.env['PORTCULLIS_TEST_BUILDAH_BIN'] ?? 'buildah';

export interface BuildahRegistryOptions {
  /** `--cert-dir`: a folder with `*.crt` CAs (and optional `NAME.cert`/`NAME.key` client pairs). */
  certDir?: string;
  /** `--creds USER:PASSWORD`. */
  creds?: string;
  /** `--tls-verify`. Default: buildah's default (verify; https only). */
  tlsVerify?: boolean;
  /** `--retry` (buildah's own default is 3 with a 2 s delay). Default 0: a failure shows at once. */
  retry?: number;
  /** Extra arguments before the image references. */
  extraArgs?: string[];
  /** Default 90 s. */
  timeoutMs?: number;
}

export interface BuildahPullOptions extends BuildahRegistryOptions {
  /** `--policy`. Default "always": pull even when the store has the image, so every call reaches the registry. */
  policy?: 'always' | 'missing' | 'never' | 'newer';
}

export interface BuildahPushResult extends RunResult {
  /** The manifest digest buildah wrote with `--digestfile` (undefined when the push failed). */
  digest: string | undefined;
}

export interface StoredLayer {
  id: string;
  /** Digest of the blob as it was pulled (containers/storage's `compressed-diff-digest`). */
  compressedDigest: string | undefined;
  /** Digest of the uncompressed tar (`diff-digest`, the config's diff_id). */
  diffDigest: string;
  /** The layer's directory: with vfs, the complete root filesystem up to and including this layer. */
  dir: string;
}

export interface StoredImage {
  /** Image ID (the config digest without "sha256:"). */
  id: string;
  names: string[];
  /** The manifest digest containers/storage recorded for the image. */
  digest: string;
  /** The manifest file in the store, re-hashed: equals `digest` unless the store is corrupt. */
  manifestBytes: Buffer;
  manifestDigest: string;
  /** Layers bottom to top. */
  layers: StoredLayer[];
  /** Root filesystem of the image (the top layer's directory). */
  rootfs: string;
}

export interface BuildahStore {
  dir: string;
  root: string;
  runroot: string;
  authFile: string;
  /** `buildah --storage-driver vfs --root ... --runroot ... ARGS` in the isolated environment. */
  buildah(args: readonly string[], timeoutMs?: number): Promise<RunResult>;
  /** `buildah pull REF` (REF like HOST:PORT/repo:tag, or another transport such as docker://...). */
  pull(ref: string, opts?: BuildahPullOptions): Promise<RunResult>;
  /**
   * Take an image from a local OCI layout into the store (`buildah pull oci:...`, no network). Returns the
   * image ID to push from. buildah names such an image after the layout's path, which must be lowercase, so
   * the layout is given relative to its parent folder: the name becomes localhost/BASENAME.
   */
  importOci(layoutDir: string, tag: string): Promise<RunResult & { id: string | undefined }>;
  /** `buildah push --digestfile F IMAGE DEST` (DEST like docker://HOST:PORT/repo:tag). */
  push(image: string, dest: string, opts?: BuildahRegistryOptions): Promise<BuildahPushResult>;
  /** What the store holds for an image name or ID, read from containers/storage's files on disk (vfs layout). */
  storedImage(nameOrId: string): StoredImage;
  /** Remove the folder. */
  close(): Promise<void>;
}

export function makeBuildahStore(): BuildahStore {
  const dir = makeTempDir('portcullis-buildah-');
  const root = join(dir, 'root');
  const runroot = join(dir, 'runroot');
  const tmp = join(dir, 'tmp');
  mkdirSync(tmp);
  const authFile = join(dir, 'auth.json');
  writeFileSync(authFile, '{"auths":{}}\n');
  const registriesConf = join(dir, 'registries.conf');
  writeFileSync(registriesConf, 'unqualified-search-registries = []\n');
  const storageConf = join(dir, 'storage.conf');
  writeFileSync(storageConf, `[storage]\ndriver = "vfs"\nrunroot = ${JSON.stringify(runroot)}\ngraphroot = ${JSON.stringify(root)}\n`);
  const containersConf = join(dir, 'containers.conf');
  writeFileSync(containersConf, '');
  const policyFile = join(dir, 'policy.json');
  writeFileSync(policyFile, '{"default":[{"type":"insecureAcceptAnything"}]}\n');

  const env: NodeJS.ProcessEnv = {
    ...process.env,
    REGISTRY_AUTH_FILE: authFile,
    CONTAINERS_REGISTRIES_CONF: registriesConf,
    CONTAINERS_STORAGE_CONF: storageConf,
    CONTAINERS_CONF: containersConf,
    TMPDIR: tmp,
  };
  delete env['BUILDAH_FORMAT'];
  delete env['BUILDAH_ISOLATION'];
  delete env['STORAGE_DRIVER'];
  delete env['STORAGE_OPTS'];

  const buildah = (args: readonly string[], timeoutMs = 60_000, cwd?: string): Promise<RunResult> =>
    run(BUILDAH_BIN, ['--storage-driver', 'vfs', '--root', root, '--runroot', runroot, '--registries-conf', registriesConf, ...args], {
      timeoutMs,
      env,
      ...(cwd !== undefined ? { cwd } : {}),
    });

  const registryArgs = (o: BuildahRegistryOptions): string[] => {
    const args = ['--signature-policy', policyFile, '--retry', String(o.retry ?? 0)];
    if (o.certDir !== undefined) args.push('--cert-dir', o.certDir);
    if (o.creds !== undefined) args.push('--creds', o.creds);
    if (o.tlsVerify !== undefined) args.push(`--tls-verify=${o.tlsVerify}`);
    return [...args, ...(o.extraArgs ?? [])];
  };

  let pushes = 0;

  return {
    dir,
    root,
    runroot,
    authFile,
    buildah,
    pull: (ref, o = {}) => buildah(['pull', '--policy', o.policy ?? 'always', ...registryArgs(o), ref], o.timeoutMs ?? 90_000),
    async importOci(layoutDir, tag) {
      const name = basename(layoutDir);
      if (name !== name.toLowerCase()) throw new Error(`importOci: "${name}" must be lowercase (it becomes the image name)`);
      const r = await buildah(['pull', '--policy', 'always', '--signature-policy', policyFile, `oci:${name}:${tag}`], 60_000, dirname(layoutDir));
      const id = r.code === 0 ? /^([0-9a-f]{64})$/m.exec(r.stdout)?.[1] : undefined;
      return { ...r, id };
    },
    async push(image, dest, o = {}) {
      const digestFile = join(dir, `push-${++pushes}.digest`);
      const r = await buildah(['push', '--digestfile', digestFile, ...registryArgs(o), image, dest], o.timeoutMs ?? 90_000);
      const digest = r.code === 0 && existsSync(digestFile) ? readFileSync(digestFile, 'utf8').trim() : undefined;
      return { ...r, digest };
    },
    storedImage: (nameOrId) => readStoredImage(root, nameOrId),
    async close() {
      removeTempDir(dir);
    },
  };
}

interface ImagesJsonEntry {
  id: string;
  digest?: string;
  names?: string[];
  layer?: string;
}

interface LayersJsonEntry {
  id: string;
  parent?: string;
  'compressed-diff-digest'?: string;
  'diff-digest'?: string;
}

/**
 * containers/storage keeps its metadata in JSON files: vfs-images/images.json (image ID, names, manifest
 * digest, top layer), vfs-layers/layers.json (per layer: parent, compressed and uncompressed digests), the
 * manifest as vfs-images/ID/manifest, and each layer's files in vfs/dir/LAYER-ID.
 */
function readStoredImage(root: string, nameOrId: string): StoredImage {
  const images = JSON.parse(readFileSync(join(root, 'vfs-images', 'images.json'), 'utf8')) as ImagesJsonEntry[];
  const wanted = nameOrId.replace(/^sha256:/, '');
  const img = images.find((i) => i.id === wanted || (i.names ?? []).includes(nameOrId));
  if (!img) throw new Error(`no image "${nameOrId}" in ${root} (have: ${images.map((i) => `${i.id.slice(0, 12)} ${(i.names ?? []).join(',')}`).join('; ')})`);
  if (img.digest === undefined || img.layer === undefined) throw new Error(`image ${img.id} has no digest or layer: ${JSON.stringify(img)}`);
  const layersJson = JSON.parse(readFileSync(join(root, 'vfs-layers', 'layers.json'), 'utf8')) as LayersJsonEntry[];
  const byId = new Map(layersJson.map((l) => [l.id, l]));
  const layers: StoredLayer[] = [];
  for (let id: string | undefined = img.layer; id !== undefined && id !== ''; ) {
    const l = byId.get(id);
    if (!l) throw new Error(`layer ${id} of image ${img.id} missing from layers.json`);
    if (l['diff-digest'] === undefined) throw new Error(`layer ${id} has no diff-digest`);
    layers.unshift({ id, compressedDigest: l['compressed-diff-digest'], diffDigest: l['diff-digest'], dir: join(root, 'vfs', 'dir', id) });
    id = l.parent;
  }
  const manifestBytes = readFileSync(join(root, 'vfs-images', img.id, 'manifest'));
  return {
    id: img.id,
    names: img.names ?? [],
    digest: img.digest,
    manifestBytes,
    manifestDigest: sha256(manifestBytes),
    layers,
    rootfs: layers.length > 0 ? layers[layers.length - 1]!.dir : '',
  };
}

