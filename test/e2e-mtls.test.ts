/**
 * Client certificates end to end (tls.clientCA), each real client with its own convention: curl --cert/--key,
 * skopeo's cert folder (client.cert + client.key), containerd's hosts.toml `client`, the docker CLI's
 * /etc/docker/certs.d/HOST:PORT. A required certificate gates the handshake; as an identity it is the user
 * for access rules (a robot needs no password); with and-password it is needed besides the password. The
 * client CA file is followed like the server certificate.
 */
import assert from 'node:assert/strict';
import { copyFileSync, existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { networkInterfaces } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { DOCKER_CERTS_D, dockerEnv, skopeoCopy } from './helpers/clients.js';
import { startContainerd, writeHostsDir } from './helpers/containerd.js';
import { buildOciImage, type OciImage } from './helpers/oci-image.js';
import { describeRun, makeTempDir, run, type RunResult } from './helpers/proc.js';
import { startPortcullis, type RunningPortcullis } from './helpers/portcullis.js';
import { startRegistry, type RunningRegistry } from './helpers/registry.js';
import { writeHtpasswd } from './helpers/stack.js';
import { makeTestCerts, signCert, type TestCerts } from './helpers/tls.js';
import { eventually } from './helpers/wait.js';

interface ClientCert {
  certFile: string;
  keyFile: string;
}

let registry: RunningRegistry;
let certs: TestCerts;
let stranger: TestCerts;
let robot: ClientCert;
let alice: ClientCert;
let outsider: ClientCert;
let htpasswd: string;
let image: OciImage;
/** A non-loopback address of this machine: the docker CLI ignores certs.d for 127.0.0.0/8. */
let hostIp: string;

before(async () => {
  hostIp = Object.values(networkInterfaces())
    .flat()
    .find((a) => a && a.family === 'IPv4' && !a.internal)?.address ?? '';
  assert.ok(hostIp, 'this machine needs a non-loopback IPv4 address for the docker CLI test');
  [registry, certs, stranger] = await Promise.all([
    startRegistry(),
    makeTestCerts({ san: ['DNS:localhost', 'IP:127.0.0.1', `IP:${hostIp}`] }),
    makeTestCerts(),
  ]);
  const client = (c: TestCerts, name: string): Promise<ClientCert> =>
    signCert({ dir: c.dir, caFile: c.caFile, caKeyFile: c.caKeyFile, name, cn: name, usage: 'clientAuth' }).then((r) => ({ certFile: r.leafFile, keyFile: r.keyFile }));
  [robot, alice, outsider] = await Promise.all([client(certs, 'robot'), client(certs, 'alice'), client(stranger, 'outsider')]);
  htpasswd = await writeHtpasswd(makeTempDir('portcullis-mtls-'), { alice: 'alice-pw' });
  image = await buildOciImage(makeTempDir('portcullis-mtls-img-'), { layers: 1, layerSize: 256 * 1024, tag: 'v1', seed: 'e2e-mtls' });
});

after(async () => {
  await registry?.close();
  certs?.cleanup();
  stranger?.cleanup();
});

function curl(url: string, opts: { cert?: ClientCert; user?: string } = {}): Promise<RunResult> {
  return run('curl', [
    '-sS', '-o', '/dev/null', '-w', '%{http_code}', '--cacert', certs.caFile,
    ...(opts.cert ? ['--cert', opts.cert.certFile, '--key', opts.cert.keyFile] : []),
    ...(opts.user ? ['-u', opts.user] : []),
    url,
  ]);
}

/** A skopeo cert folder: the CA, and the client pair under the names skopeo looks for. */
function certDir(cert: ClientCert | null): string {
  const dir = makeTempDir('portcullis-mtls-skopeo-');
  copyFileSync(certs.caFile, join(dir, 'ca.crt'));
  if (cert) {
    copyFileSync(cert.certFile, join(dir, 'client.cert'));
    copyFileSync(cert.keyFile, join(dir, 'client.key'));
  }
  return dir;
}

describe('tls.clientAuth: require, auth.clientCertificate: identity', () => {
  let proxy: RunningPortcullis;
  let clientCA: string;

  before(async () => {
    const dir = makeTempDir('portcullis-mtls-proxy-');
    clientCA = join(dir, 'client-ca.pem');
    copyFileSync(certs.caFile, clientCA);
    proxy = await startPortcullis({
      listen: '127.0.0.1:0',
      tls: { cert: certs.certFile, key: certs.keyFile, clientCA, clientAuth: 'require' },
      upstream: { url: registry.url },
      auth: { htpasswd, clientCertificate: 'identity' },
      access: { rules: [{ repositories: ['ci/**'], users: ['robot'], actions: ['*'] }, { repositories: ['ci/**'], users: ['alice'], actions: ['pull'] }] },
    });
  });
  after(() => proxy?.stop());

  test('curl: no certificate, or one from another CA, ends at the handshake; the robot\'s certificate is its login', async () => {
    const none = await curl(`${proxy.url}/v2/`);
    assert.notEqual(none.code, 0, describeRun('curl without a certificate', none));
    assert.match(none.stderr, /alert|certificate required|handshake/i, describeRun('curl without a certificate', none));
    const foreign = await curl(`${proxy.url}/v2/`, { cert: outsider });
    assert.notEqual(foreign.code, 0, describeRun('curl with a certificate of another CA', foreign));
    const ok = await curl(`${proxy.url}/v2/`, { cert: robot });
    assert.equal(ok.stdout, '200', describeRun('curl as robot, no password', ok));
    const aliceCatalog = await curl(`${proxy.url}/v2/ci/app/blobs/uploads/`, { cert: alice });
    assert.equal(aliceCatalog.stdout, '403', 'alice\'s certificate makes her alice: pull only');
  });

  test('skopeo pushes with client.cert/client.key and no credentials; the audit names the certificate', async () => {
    const push = await skopeoCopy(image.ref, `docker://${proxy.hostPort}/ci/app:v1`, { dest: { certDir: certDir(robot) } });
    assert.equal(push.code, 0, describeRun('skopeo push as robot', push));
    const audit = await proxy.waitForLog((l) => l['msg'] === 'audit' && (l['audit'] as Record<string, unknown>)['event'] === 'push');
    assert.deepEqual([(audit['audit'] as Record<string, unknown>)['user'], (audit['audit'] as Record<string, unknown>)['identity']], ['robot', 'certificate']);
    const noCert = await skopeoCopy(image.ref, `docker://${proxy.hostPort}/ci/app:v2`, { dest: { certDir: certDir(null) }, extraArgs: ['--retry-times', '0'] });
    assert.notEqual(noCert.code, 0, describeRun('skopeo push without a client certificate', noCert));
  });

  test('containerd pulls with the client certificate from hosts.toml', async () => {
    const ctrd = await startContainerd();
    try {
      const hostsDir = writeHostsDir(proxy.hostPort, { caFile: certs.caFile, clientCert: robot, parent: ctrd.dir });
      const pull = await ctrd.pull(`${proxy.hostPort}/ci/app:v1`, { hostsDir, unpack: false });
      assert.equal(pull.code, 0, describeRun('ctr pull with a client certificate', pull) + ctrd.output());
      assert.equal((await ctrd.image(`${proxy.hostPort}/ci/app:v1`))?.digest, image.manifestDigest);
      const without = writeHostsDir(proxy.hostPort, { caFile: certs.caFile, parent: ctrd.dir });
      const refused = await ctrd.pull(`${proxy.hostPort}/ci/app:v1`, { hostsDir: without, unpack: false });
      assert.notEqual(refused.code, 0, describeRun('ctr pull without a client certificate', refused));
    } finally {
      await ctrd.close();
    }
  });

  test('a new client CA file is followed: its certificates get in, the old CA\'s no longer do', async () => {
    writeFileSync(`${clientCA}.new`, readFileSync(stranger.caFile));
    rmSync(clientCA);
    copyFileSync(`${clientCA}.new`, clientCA);
    await eventually('the outsider\'s certificate is accepted', async () => (await curl(`${proxy.url}/v2/`, { cert: outsider })).code === 0, 15_000);
    assert.notEqual((await curl(`${proxy.url}/v2/`, { cert: robot })).code, 0, 'the replaced CA\'s certificates are refused');
    assert.ok(proxy.logs().some((l) => l['msg'] === 'certificate reloaded'));
  });
});

describe('tls.clientAuth: optional, auth.clientCertificate: and-password', () => {
  let proxy: RunningPortcullis;

  before(async () => {
    proxy = await startPortcullis({
      listen: '0.0.0.0:0',
      tls: { cert: certs.certFile, key: certs.keyFile, clientCA: certs.caFile, clientAuth: 'optional' },
      upstream: { url: registry.url },
      auth: { htpasswd, clientCertificate: 'and-password' },
    });
  });
  after(() => proxy?.stop());

  test('curl: the password alone or the certificate alone is 401, both are 200', async () => {
    const url = `${proxy.url}/v2/`;
    assert.equal((await curl(url, { user: 'alice:alice-pw' })).stdout, '401');
    assert.equal((await curl(url, { cert: alice })).stdout, '401');
    assert.equal((await curl(url, { cert: alice, user: 'alice:alice-pw' })).stdout, '200');
    assert.equal((await curl(url, { cert: alice, user: 'alice:wrong' })).stdout, '401');
  });

  test('docker login reads the client certificate from /etc/docker/certs.d/HOST:PORT', async () => {
    const hostPort = `${hostIp}:${proxy.port}`;
    const dir = join(DOCKER_CERTS_D, hostPort);
    assert.ok(!existsSync(dir), `${dir} already exists`);
    mkdirSync(dir, { recursive: true });
    const login = (): Promise<RunResult> => {
      const config = makeTempDir('portcullis-mtls-docker-');
      return run('docker', ['login', hostPort, '--username', 'alice', '--password-stdin'], { input: 'alice-pw\n', env: dockerEnv(config) });
    };
    try {
      copyFileSync(certs.caFile, join(dir, 'ca.crt'));
      const without = await login();
      assert.notEqual(without.code, 0, describeRun('docker login without a client certificate', without));
      assert.match(without.stderr, /unauthorized|401/i, describeRun('docker login without a client certificate', without));
      copyFileSync(alice.certFile, join(dir, 'client.cert'));
      copyFileSync(alice.keyFile, join(dir, 'client.key'));
      const withCert = await login();
      assert.equal(withCert.code, 0, describeRun('docker login with client.cert', withCert));
      assert.match(withCert.stdout, /Login Succeeded/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
