/**
 * Access rules end to end, against the real registry with real clients: anonymous pulls of public
 * repositories (skopeo with no credentials, containerd's ctr) without breaking `docker login`, a read-only
 * user, personal namespaces, a mount from a repository the caller may not read, the catalog filtered per
 * caller with its paging, and the audit trail of it all.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { dockerLogin, request, skopeoCopy, skopeoInspect } from './helpers/clients.js';
import { startContainerd, writeHostsDir, type RunningContainerd } from './helpers/containerd.js';
import { buildOciImage, type OciImage } from './helpers/oci-image.js';
import { describeRun, makeTempDir } from './helpers/proc.js';
import { startStack, type Stack } from './helpers/stack.js';
import { eventually } from './helpers/wait.js';

const USERS = { admin: 'admin-pw', alice: 'alice-pw', bob: 'bob-pw' };
const creds = (u: keyof typeof USERS): string => `${u}:${USERS[u]}`;

let stack: Stack;
let image: OciImage;
let other: OciImage;
let auditFile: string;

before(async () => {
  auditFile = join(makeTempDir('portcullis-e2e-audit-'), 'audit.jsonl');
  stack = await startStack(USERS, {
    proxy: {
      access: {
        groups: { devs: ['alice'] },
        rules: [
          { repositories: ['public/**'], anonymous: true, actions: ['pull'] },
          { repositories: ['users/${user}/**'], users: ['*'], actions: ['*'] },
          { repositories: ['team/**'], groups: ['devs'], actions: ['pull', 'push'] },
          { repositories: ['team/**'], users: ['bob'], actions: ['pull'] },
          { repositories: ['**'], users: ['admin'], actions: ['*'] },
        ],
      },
      audit: { file: auditFile },
    },
  });
  image = await buildOciImage(makeTempDir('portcullis-e2e-access-img-'), { layers: 2, layerSize: 256 * 1024, tag: 'v1', seed: 'e2e-access' });
  other = await buildOciImage(makeTempDir('portcullis-e2e-access-img2-'), { layers: 1, layerSize: 128 * 1024, tag: 'v1', seed: 'e2e-access-secret' });
  // The admin fills the registry: public, team, secret.
  for (const [img, repo] of [[image, 'public/base'], [image, 'team/app'], [other, 'secret/db']] as const) {
    const push = await skopeoCopy(img.ref, `docker://${stack.proxy.hostPort}/${repo}:v1`, { dest: { certDir: stack.certs.caDir, creds: creds('admin') } });
    assert.equal(push.code, 0, describeRun(`admin pushes ${repo}`, push));
  }
});

after(() => stack?.close());

const ref = (repo: string): string => `docker://${stack.proxy.hostPort}/${repo}:v1`;

test('docker login still works: the anonymous ping gets its 401 challenge, the login its 200', async () => {
  const ping = await request(`${stack.proxy.url}/v2/`, { ca: stack.certs.ca });
  assert.equal(ping.status, 401);
  assert.match(String(ping.headers['www-authenticate']), /^Basic realm=/);
  const login = await dockerLogin(stack.proxy.hostPort, 'bob', USERS.bob, { caFile: stack.certs.caFile });
  try {
    assert.equal(login.code, 0, describeRun('docker login', login));
    assert.match(login.stdout, /Login Succeeded/);
  } finally {
    login.cleanup();
  }
});

test('skopeo with no credentials pulls a public image, and is refused a team image', async () => {
  const dest = makeTempDir('portcullis-e2e-anon-pull-');
  const pull = await skopeoCopy(ref('public/base'), `oci:${dest}:v1`, { src: { certDir: stack.certs.caDir }, extraArgs: ['--src-no-creds'] });
  assert.equal(pull.code, 0, describeRun('skopeo copy --src-no-creds public/base', pull));
  const denied = await skopeoInspect(ref('team/app'), { certDir: stack.certs.caDir, extraArgs: ['--no-creds'] });
  assert.notEqual(denied.code, 0);
  assert.match(denied.stderr, /unauthorized|authentication required/i, describeRun('skopeo inspect --no-creds team/app', denied));
});

test('containerd pulls a public image anonymously, and gets 401 for a team image', async () => {
  const ctrd: RunningContainerd = await startContainerd();
  try {
    const hostsDir = writeHostsDir(stack.proxy.hostPort, { caFile: stack.certs.caFile, parent: ctrd.dir });
    const pull = await ctrd.pull(`${stack.proxy.hostPort}/public/base:v1`, { hostsDir, unpack: false });
    assert.equal(pull.code, 0, describeRun('ctr pull public/base (anonymous)', pull) + ctrd.output());
    assert.equal((await ctrd.image(`${stack.proxy.hostPort}/public/base:v1`))?.digest, image.manifestDigest);
    const denied = await ctrd.pull(`${stack.proxy.hostPort}/team/app:v1`, { hostsDir, unpack: false });
    assert.notEqual(denied.code, 0);
    assert.match(denied.stderr, /401 Unauthorized/, describeRun('ctr pull team/app (anonymous)', denied));
  } finally {
    await ctrd.close();
  }
});

test('a read-only user pulls but cannot push; a developer pushes', async () => {
  const dest = makeTempDir('portcullis-e2e-bob-pull-');
  const pull = await skopeoCopy(ref('team/app'), `oci:${dest}:v1`, { src: { certDir: stack.certs.caDir, creds: creds('bob') } });
  assert.equal(pull.code, 0, describeRun('bob pulls team/app', pull));
  const push = await skopeoCopy(other.ref, ref('team/bobs'), { dest: { certDir: stack.certs.caDir, creds: creds('bob') }, extraArgs: ['--retry-times', '0'] });
  assert.notEqual(push.code, 0);
  assert.match(push.stderr, /denied/i, describeRun('bob pushes team/bobs', push));
  const alice = await skopeoCopy(other.ref, ref('team/alices'), { dest: { certDir: stack.certs.caDir, creds: creds('alice') } });
  assert.equal(alice.code, 0, describeRun('alice pushes team/alices', alice));
});

test('personal namespaces: each user writes their own, and only their own', async () => {
  const own = await skopeoCopy(other.ref, ref('users/bob/tool'), { dest: { certDir: stack.certs.caDir, creds: creds('bob') } });
  assert.equal(own.code, 0, describeRun('bob pushes users/bob/tool', own));
  const theirs = await skopeoCopy(other.ref, ref('users/alice/tool'), { dest: { certDir: stack.certs.caDir, creds: creds('bob') }, extraArgs: ['--retry-times', '0'] });
  assert.notEqual(theirs.code, 0);
  // skopeo first asks whether the blobs are already there (a pull): refused before any write is attempted.
  assert.match(theirs.stderr, /denied|403 \(Forbidden\)/i, describeRun('bob pushes users/alice/tool', theirs));
});

test('a mount from a repository the caller may not read becomes an ordinary upload; the admin\'s mount links', async () => {
  const digest = other.layerDigests[0]!;
  const target = `/v2/team/mounted/blobs/uploads/?mount=${digest}&from=secret/db`;
  const alice = await stack.request(target, { method: 'POST', auth: { user: 'alice', password: USERS.alice } });
  assert.equal(alice.status, 202, 'the registry started an upload instead of mounting the secret blob');
  const blob = await request(`${stack.registry.url}/v2/team/mounted/blobs/${digest}`, { method: 'HEAD' });
  assert.equal(blob.status, 404, 'the secret layer is not linked into team/mounted');
  const admin = await stack.request(target, { method: 'POST', auth: { user: 'admin', password: USERS.admin } });
  assert.equal(admin.status, 201, 'the admin may read secret/db: the mount happens');
});

test('the catalog lists what each caller may pull, page by page with the Link header', async () => {
  const walk = async (auth: { user: string; password: string } | undefined): Promise<{ names: string[]; pages: number[] }> => {
    const names: string[] = [];
    const pages: number[] = [];
    let path: string | null = '/v2/_catalog?n=1';
    while (path !== null) {
      const r = await request(`${stack.proxy.url}${path}`, { ca: stack.certs.ca, ...(auth ? { auth } : {}) });
      assert.equal(r.status, 200, `${path}: ${r.text()}`);
      const page = (r.json() as { repositories: string[] }).repositories;
      pages.push(page.length);
      names.push(...page);
      const link = r.headers['link'];
      path = typeof link === 'string' ? /<([^>]+)>/.exec(link)![1]! : null;
    }
    return { names, pages };
  };
  const bob = await walk({ user: 'bob', password: USERS.bob });
  // team/mounted exists since the mount test started an upload there.
  assert.deepEqual(bob.names, ['public/base', 'team/alices', 'team/app', 'team/mounted', 'users/bob/tool']);
  assert.ok(bob.pages.every((n) => n === 1), `pages of ${bob.pages.join(',')}: one name each, never empty`);
  assert.deepEqual((await walk(undefined)).names, ['public/base'], 'anonymous callers see the public repositories');
  const everything = (await request(`${stack.registry.url}/v2/_catalog`)).json() as { repositories: string[] };
  assert.ok(everything.repositories.includes('secret/db'), 'the registry itself has more');
});

test('the audit trail names who pushed, who was refused, and never a password', async () => {
  const events = await eventually('audit events for the refused pushes', async () => {
    const lines = readFileSync(auditFile, 'utf8').trim().split('\n').filter(Boolean).map((l) => JSON.parse(l) as Record<string, unknown>);
    return lines.some((e) => e['event'] === 'denied' && e['repository'] === 'team/bobs') ? lines : null;
  });
  const pushes = events.filter((e) => e['event'] === 'push' && e['result'] === 'ok').map((e) => `${String(e['user'])} ${String(e['repository'])}:${String(e['reference'])}`);
  for (const p of ['admin public/base:v1', 'admin team/app:v1', 'admin secret/db:v1', 'alice team/alices:v1', 'bob users/bob/tool:v1']) assert.ok(pushes.includes(p), `${p} in ${pushes.join(', ')}`);
  const denied = events.filter((e) => e['event'] === 'denied').map((e) => `${String(e['user'])} ${String(e['repository'])}`);
  assert.ok(denied.includes('bob team/bobs'), denied.join(', '));
  const push = events.find((e) => e['event'] === 'push' && e['repository'] === 'team/alices')!;
  assert.match(String(push['digest']), /^sha256:[0-9a-f]{64}$/, 'the manifest digest the registry answered');
  const text = readFileSync(auditFile, 'utf8');
  for (const pw of Object.values(USERS)) assert.ok(!text.includes(pw));
});
