/**
 * End to end: an htpasswd file made for nginx, served as it is by the built proxy in front of a real
 * registry. Its lines come from the tools people use for nginx: Apache's `htpasswd -m` ($apr1$),
 * `openssl passwd -5/-6` (SHA-crypt) and crypt(3) through Python ($1$, and $6$ with explicit rounds).
 * Each user logs in with docker and a wrong password is refused; a verified credential is not verified again.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { appendFileSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { dockerLogin, errorCodes, request, skopeoCopy } from './helpers/clients.js';
import { buildOciImage } from './helpers/oci-image.js';
import { describeRun, makeTempDir, run } from './helpers/proc.js';
import { runCli, startPortcullis, type RunningPortcullis } from './helpers/portcullis.js';
import { metric } from './helpers/prometheus.js';
import { startRegistry, type RunningRegistry } from './helpers/registry.js';
import { makeTestCerts, type TestCerts } from './helpers/tls.js';

const T = { timeout: 120_000 };

/** user -> [password, how its line was made, the prefix that line must have] */
const USERS: Record<string, readonly [password: string, madeBy: string, prefix: RegExp]> = {
  apache: ['apache-pw', 'htpasswd -m', /^\$apr1\$/],
  opensslsha256: ['sha:256 pw', 'openssl passwd -5', /^\$5\$[^$]{16}\$/],
  opensslsha512: ['sha-512-pw', 'openssl passwd -6', /^\$6\$[^$]{16}\$/],
  pythonmd5: ['md5 wörd', 'crypt.METHOD_MD5', /^\$1\$/],
  pythonsha512: ['rounds-pw', 'crypt.METHOD_SHA512, rounds=20000', /^\$6\$rounds=20000\$/],
};

let certs: TestCerts;
let registry: RunningRegistry;
let proxy: RunningPortcullis;
let htpasswd: string;
let config: string;

function tool(cmd: string, args: string[], input: string): string {
  const r = spawnSync(cmd, args, { encoding: 'utf8', input });
  assert.equal(r.status, 0, `${cmd}: ${r.stderr}`);
  return r.stdout.trim();
}

/** The hash line for `user`, made by the tool named in USERS. */
function hashFor(user: string): string {
  const [password, madeBy] = USERS[user]!;
  const python = (method: string, rounds: string): string =>
    tool(
      'python3',
      ['-W', 'ignore', '-c', `import crypt, sys; print(crypt.crypt(sys.stdin.readline().rstrip("\\n"), crypt.mksalt(crypt.METHOD_${method}, rounds=${rounds})))`],
      `${password}\n`,
    );
  switch (madeBy) {
    case 'openssl passwd -5':
      return tool('openssl', ['passwd', '-5', '-stdin'], `${password}\n`);
    case 'openssl passwd -6':
      return tool('openssl', ['passwd', '-6', '-stdin'], `${password}\n`);
    case 'crypt.METHOD_MD5':
      return python('MD5', 'None');
    default:
      return python('SHA512', '20000');
  }
}

before(async () => {
  certs = await makeTestCerts();
  registry = await startRegistry();
  const dir = makeTempDir('portcullis-e2e-schemes-');
  htpasswd = join(dir, 'htpasswd');
  const apache = await run('htpasswd', ['-cbm', htpasswd, 'apache', USERS['apache']![0]]);
  assert.equal(apache.code, 0, describeRun('htpasswd -cbm', apache));
  for (const user of Object.keys(USERS).filter((u) => u !== 'apache')) appendFileSync(htpasswd, `${user}:${hashFor(user)}\n`);

  const settings = {
    listen: '127.0.0.1:0',
    tls: { cert: certs.certFile, key: certs.keyFile },
    upstream: { url: registry.url },
    // Every client is 127.0.0.1: keep the throttle out of the way of the wrong-password checks.
    auth: { htpasswd, maxFailures: 1000, maxFailuresPerAddress: 0 },
    metrics: { listen: '127.0.0.1:0' },
  };
  config = join(dir, 'proxy.yaml');
  writeFileSync(config, JSON.stringify(settings)); // JSON is YAML
  proxy = await startPortcullis(settings);
});

after(async () => {
  await proxy?.stop();
  await registry?.close();
  certs?.cleanup();
});

async function authCount(outcome: string): Promise<number> {
  const r = await request(`${proxy.metricsUrl!}/metrics`);
  return metric(r.text(), 'portcullis_auth_total', { outcome });
}

describe('an htpasswd file made for nginx', () => {
  test('the lines are what the tools write', () => {
    const lines = new Map(
      readFileSync(htpasswd, 'utf8')
        .trim()
        .split('\n')
        .map((l) => [l.slice(0, l.indexOf(':')), l.slice(l.indexOf(':') + 1)] as const),
    );
    for (const [user, [, madeBy, prefix]] of Object.entries(USERS)) assert.match(lines.get(user) ?? '', prefix, `${user} (${madeBy})`);
  });

  test('check-config accepts it and warns about the weak hashes', T, async () => {
    const r = await runCli(['check-config', config]);
    assert.equal(r.code, 0, describeRun('check-config', r));
    assert.match(r.stdout, /: OK \(5 users in /);
    assert.equal(
      r.stderr,
      `portcullis: warning: ${htpasswd}: 2 users have weak password hashes ($apr1$: 1, $1$: 1; unsalted or fast to guess); re-set each with bcrypt: portcullis htpasswd add FILE USER\n`,
    );
  });

  test('the proxy loads it and logs the same warning', T, async () => {
    const warning = await proxy.waitForLog((l) => l['level'] === 40 && /weak password hashes/.test(String(l['msg'])));
    assert.equal(warning['users'], 2);
    assert.match(String(warning['msg']), /portcullis htpasswd add/);
    assert.ok(proxy.logs().some((l) => l['msg'] === 'htpasswd loaded' && l['users'] === 5));
  });

  for (const [user, [password, madeBy]] of Object.entries(USERS)) {
    test(`${user} (${madeBy}): docker login works, a wrong password fails, the credential is checked once`, T, async () => {
      const r = await dockerLogin(proxy.hostPort, user, password, { caFile: certs.caFile });
      try {
        assert.equal(r.code, 0, describeRun(`docker login ${user}`, r));
        assert.match(r.stdout, /Login Succeeded/);
      } finally {
        r.cleanup();
      }
      const wrong = await request(`${proxy.url}/v2/`, { ca: certs.ca, auth: { user, password: `${password}x` } });
      assert.equal(wrong.status, 401);
      assert.deepEqual(errorCodes(wrong), ['UNAUTHORIZED']);

      // docker login verified it; the next request is answered from the cache, with no second check.
      const [ok, cached] = [await authCount('ok'), await authCount('cached')];
      const again = await request(`${proxy.url}/v2/`, { ca: certs.ca, auth: { user, password } });
      assert.equal(again.status, 200, again.text());
      assert.equal(await authCount('ok'), ok, 'no second verification');
      assert.equal(await authCount('cached'), cached + 1);
    });
  }

  test('a push as a SHA-crypt user: every request after the first is answered from the cache', T, async () => {
    const image = await buildOciImage(makeTempDir('portcullis-e2e-schemes-img-'), { layers: 2, layerSize: 64 * 1024, tag: 'v1', seed: 'e2e-schemes' });
    const [ok, cached] = [await authCount('ok'), await authCount('cached')];
    const push = await skopeoCopy(image.ref, `docker://${proxy.hostPort}/nginx-users/app:v1`, {
      dest: { certDir: certs.caDir, creds: `pythonsha512:${USERS['pythonsha512']![0]}` },
    });
    assert.equal(push.code, 0, describeRun('skopeo copy', push));
    assert.equal(await authCount('ok'), ok, 'verified by the earlier login: no check during the push');
    assert.ok((await authCount('cached')) - cached >= 5, 'the push made many authenticated requests');
  });
});
