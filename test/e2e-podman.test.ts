/**
 * End to end with podman, the other daemonless client: login (right, wrong, password with colons), pull
 * and push through the built proxy in front of a real registry, trusting only the test CA. podman keeps
 * its images in a throwaway storage root so the machine's own storage is never touched.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { request, skopeoCopy } from './helpers/clients.js';
import { buildOciImage, type OciImage } from './helpers/oci-image.js';
import { describeRun, makeTempDir, run, type RunResult } from './helpers/proc.js';
import type { RunningPortcullis } from './helpers/portcullis.js';
import type { RunningRegistry } from './helpers/registry.js';
import { startStack, type Stack } from './helpers/stack.js';
import type { TestCerts } from './helpers/tls.js';

const USER = 'podder';
const PASSWORD = 'pod:man:pass';
const MiB = 1024 * 1024;

let stack: Stack;
let certs: TestCerts;
let registry: RunningRegistry;
let proxy: RunningPortcullis;
let image: OciImage;
let storage: string;
let authFile: string;

before(async () => {
  stack = await startStack({ [USER]: PASSWORD });
  ({ certs, registry, proxy } = stack);
  storage = makeTempDir('portcullis-e2e-podman-storage-');
  authFile = join(storage, 'auth.json');
  // The image podman will pull: put there by skopeo through the proxy.
  image = await buildOciImage(makeTempDir('portcullis-e2e-podman-img-'), { layers: 2, layerSize: 2 * MiB, tag: 'v1', seed: 'e2e-podman' });
  const push = await skopeoCopy(image.ref, `docker://${proxy.hostPort}/e2e/podman:v1`, { dest: { certDir: certs.caDir, creds: `${USER}:${PASSWORD}` } });
  assert.equal(push.code, 0, describeRun('skopeo push', push));
});

after(async () => {
  await run('podman', [...storageArgs(), 'system', 'reset', '--force'], { timeoutMs: 60_000 }).catch(() => undefined);
  await stack?.close();
});

function storageArgs(): string[] {
  return ['--root', join(storage, 'root'), '--runroot', join(storage, 'run'), '--storage-driver', 'vfs', '--cgroup-manager', 'cgroupfs', '--events-backend', 'none'];
}

function podman(args: string[], input?: string): Promise<RunResult> {
  return run('podman', [...storageArgs(), ...args], { timeoutMs: 120_000, ...(input === undefined ? {} : { input }) });
}

test('podman login: right password (with colons) succeeds, wrong password fails', async () => {
  const ok = await podman(['login', '--cert-dir', certs.caDir, '--authfile', authFile, '-u', USER, '--password-stdin', proxy.hostPort], PASSWORD);
  assert.equal(ok.code, 0, describeRun('podman login', ok));
  assert.match(ok.stdout, /Login Succeeded/);
  const bad = await podman(['login', '--cert-dir', certs.caDir, '--authfile', join(storage, 'bad.json'), '-u', USER, '--password-stdin', proxy.hostPort], 'wrong');
  assert.notEqual(bad.code, 0);
  assert.match(bad.stderr, /invalid username\/password|unauthorized/i);
});

test('podman pulls through the proxy and pushes the image back under a new name', async () => {
  const pull = await podman(['pull', '--cert-dir', certs.caDir, '--authfile', authFile, `${proxy.hostPort}/e2e/podman:v1`]);
  assert.equal(pull.code, 0, describeRun('podman pull', pull));
  const pushed = await podman(['push', '--cert-dir', certs.caDir, '--authfile', authFile, `${proxy.hostPort}/e2e/podman:v1`, `docker://${proxy.hostPort}/e2e/podman-copy:v2`]);
  assert.equal(pushed.code, 0, describeRun('podman push', pushed));
  // The registry behind has the copy, with the same layers as the original.
  const manifest = await request(`${registry.url}/v2/e2e/podman-copy/manifests/v2`, {
    headers: { accept: 'application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json' },
  });
  assert.equal(manifest.status, 200, manifest.text());
  const layers = (manifest.json() as { layers: Array<{ size: number }> }).layers;
  assert.equal(layers.length, image.layerDigests.length);
});
