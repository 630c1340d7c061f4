/**
 * End to end: logging in through the built proxy (`dist/cli/main.js serve`) in front of a real registry.
 * The real `docker login` (daemonless), htpasswd files written by Apache's `htpasswd` and by
 * `portcullis htpasswd add`, and raw requests for the challenge and hostile Authorization headers.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { basicAuth, dockerLogin, errorCodes, request, type HttpResponse } from './helpers/clients.js';
import { describeRun, makeTempDir, run } from './helpers/proc.js';
import { accessLines, runCli, startPortcullis, type RunningPortcullis } from './helpers/portcullis.js';
import { startRegistry, type RunningRegistry } from './helpers/registry.js';
import { makeTestCerts, type TestCerts } from './helpers/tls.js';

const REALM = 'E2E Login Realm';
const ALICE = { user: 'alice', password: 'correct horse' };
const COLON = { user: 'colon', password: 'pa:ss:word' };
const TOOL = { user: 'tooluser', password: 'made-by-portcullis' };

/** Every test sends its credentials from 127.0.0.1: keep the brute-force throttle out of the way. */
const MAX_FAILURES = 1000;

let certs: TestCerts;
let registry: RunningRegistry;
let proxy: RunningPortcullis;

before(async () => {
  certs = await makeTestCerts();
  registry = await startRegistry();
  const dir = makeTempDir('portcullis-e2e-login-');
  const htpasswd = join(dir, 'htpasswd');
  // Apache's tool writes the file ($2y$ bcrypt, low cost to keep the suite fast) ...
  const first = await run('htpasswd', ['-Bbc', '-C', '5', htpasswd, ALICE.user, ALICE.password]);
  assert.equal(first.code, 0, describeRun('htpasswd -Bbc', first));
  const second = await run('htpasswd', ['-Bb', '-C', '5', htpasswd, COLON.user, COLON.password]);
  assert.equal(second.code, 0, describeRun('htpasswd -Bb', second));
  // ... and our own command adds a user to the same file.
  const add = await runCli(['htpasswd', 'add', htpasswd, TOOL.user, '--password-stdin', '--cost', '5'], { input: `${TOOL.password}\n` });
  assert.equal(add.code, 0, describeRun('portcullis htpasswd add', add));

  proxy = await startPortcullis({
    listen: '127.0.0.1:0',
    tls: { cert: certs.certFile, key: certs.keyFile },
    upstream: { url: registry.url },
    auth: { htpasswd, realm: REALM, maxFailures: MAX_FAILURES, maxFailuresPerAddress: 0 },
    log: { level: 'debug' },
  });
});

after(async () => {
  await proxy?.stop();
  await registry?.close();
  certs?.cleanup();
});

function get(path: string, headers: Record<string, string> = {}): Promise<HttpResponse> {
  return request(`${proxy.url}${path}`, { ca: certs.ca, headers });
}

async function expectProxyAlive(): Promise<void> {
  assert.equal(proxy.proc.exitCode, null, `proxy exited\n${proxy.output()}`);
  const ok = await get('/v2/', { authorization: basicAuth(ALICE.user, ALICE.password) });
  assert.equal(ok.status, 200, ok.text());
}

describe('docker login through the proxy', () => {
  test('right password: "Login Succeeded", exit 0, credentials stored', async () => {
    const r = await dockerLogin(proxy.hostPort, ALICE.user, ALICE.password, { caFile: certs.caFile });
    try {
      assert.equal(r.code, 0, describeRun('docker login', r));
      assert.match(r.stdout, /Login Succeeded/);
      assert.equal(r.auths[proxy.hostPort]?.auth, Buffer.from(`${ALICE.user}:${ALICE.password}`).toString('base64'));
    } finally {
      r.cleanup();
    }
    // The proxy (not something else on the port) authenticated alice on the ping.
    await proxy.waitForLog((l) => l['msg'] === 'request' && l['user'] === ALICE.user && l['operation'] === 'ping' && l['status'] === 200);
  });

  test('wrong password: non-zero exit, nothing stored, the proxy answered 401', async () => {
    const seen = new Set(accessLines(proxy, () => true).map((l) => l['reqId']));
    const r = await dockerLogin(proxy.hostPort, ALICE.user, 'not the password', { caFile: certs.caFile });
    try {
      assert.notEqual(r.code, 0, describeRun('docker login (wrong password)', r));
      assert.doesNotMatch(r.stdout, /Login Succeeded/);
      assert.match(r.stderr, /401 Unauthorized/, describeRun('docker login (wrong password)', r));
      assert.deepEqual(r.auths, {});
    } finally {
      r.cleanup();
    }
    // The access log line may arrive just after docker exits: wait for it.
    await proxy.waitForLog(
      (l) => l['msg'] === 'request' && !seen.has(l['reqId']) && l['status'] === 401 && l['operation'] === 'ping' && l['user'] === null,
      5000,
      'a 401 on /v2/ for the wrong password',
    );
    assert.equal(proxy.proc.exitCode, null);
  });

  test('a password containing colons logs in', async () => {
    const r = await dockerLogin(proxy.hostPort, COLON.user, COLON.password, { caFile: certs.caFile });
    try {
      assert.equal(r.code, 0, describeRun('docker login (colon password)', r));
      assert.match(r.stdout, /Login Succeeded/);
    } finally {
      r.cleanup();
    }
    // Only the whole password works: the part before the first colon is not enough.
    const partial = await get('/v2/', { authorization: basicAuth(COLON.user, 'pa') });
    assert.equal(partial.status, 401);
  });

  test('a user added by `portcullis htpasswd add` logs in', async () => {
    const r = await dockerLogin(proxy.hostPort, TOOL.user, TOOL.password, { caFile: certs.caFile });
    try {
      assert.equal(r.code, 0, describeRun('docker login (portcullis htpasswd user)', r));
      assert.match(r.stdout, /Login Succeeded/);
    } finally {
      r.cleanup();
    }
  });
});

describe('GET /v2/ through the proxy', () => {
  test('without credentials: 401 with the Basic challenge, the API version header and registry JSON', async () => {
    const r = await get('/v2/');
    assert.equal(r.status, 401, r.text());
    assert.equal(r.headers['www-authenticate'], `Basic realm="${REALM}"`);
    assert.equal(r.headers['docker-distribution-api-version'], 'registry/2.0');
    assert.match(String(r.headers['content-type']), /^application\/json/);
    assert.deepEqual(errorCodes(r), ['UNAUTHORIZED']);
  });

  test('containers/image\'s empty credentials (Basic Og==) count as anonymous: 401 with the challenge', async () => {
    const r = await get('/v2/', { authorization: 'Basic Og==' });
    assert.equal(r.status, 401, r.text());
    assert.equal(r.headers['www-authenticate'], `Basic realm="${REALM}"`);
    assert.deepEqual(errorCodes(r), ['UNAUTHORIZED']);
  });

  test('with credentials: 200 from the registry for every user in the file', async () => {
    for (const u of [ALICE, COLON, TOOL]) {
      const r = await get('/v2/', { authorization: basicAuth(u.user, u.password) });
      assert.equal(r.status, 200, `${u.user}: ${r.text()}`);
      assert.equal(r.headers['docker-distribution-api-version'], 'registry/2.0');
      assert.equal(r.text().trim(), '{}');
    }
  });

  test('unknown user and wrong password: 401 with the challenge', async () => {
    for (const auth of [basicAuth('nobody', 'x'), basicAuth(ALICE.user, 'wrong')]) {
      const r = await get('/v2/', { authorization: auth });
      assert.equal(r.status, 401, r.text());
      assert.equal(r.headers['www-authenticate'], `Basic realm="${REALM}"`);
      assert.deepEqual(errorCodes(r), ['UNAUTHORIZED']);
    }
  });

  test('malformed Authorization headers get 400/401 with registry JSON, never 500, and the proxy keeps serving', async () => {
    const cases: Array<[string, string]> = [
      ['bad base64', 'Basic !!!not*base64!!!'],
      ['base64 of wrong length', 'Basic YWxpY2U6cGFzc3dvcmQ'],
      ['no colon', `Basic ${Buffer.from('alicewithoutcolon').toString('base64')}`],
      ['not UTF-8', `Basic ${Buffer.from([0xff, 0xfe, 0x3a, 0x41]).toString('base64')}`],
      ['scheme only', 'Basic'],
      ['other scheme', 'Bearer abc.def.ghi'],
      ['9 KB', `Basic ${Buffer.from(`alice:${'x'.repeat(7000)}`).toString('base64')}`],
      ['9 KB of padding', `Basic ${'A'.repeat(9 * 1024)}`],
    ];
    for (const [name, header] of cases) {
      const r = await get('/v2/', { authorization: header });
      assert.ok(r.status === 400 || r.status === 401, `${name}: status ${r.status} ${r.text()}`);
      assert.equal(r.headers['docker-distribution-api-version'], 'registry/2.0', name);
      const codes = errorCodes(r);
      assert.ok(codes.length > 0 && !codes.includes('UNKNOWN'), `${name}: ${r.text()}`);
    }
    // Also on a repository path (not just the ping), and the proxy is still up and answering.
    const onBlob = await get('/v2/demo/app/blobs/sha256:' + '0'.repeat(64), { authorization: 'Basic %%%' });
    assert.ok(onBlob.status === 400 || onBlob.status === 401, `${onBlob.status} ${onBlob.text()}`);
    await expectProxyAlive();
    assert.equal(accessLines(proxy, (l) => typeof l['status'] === 'number' && (l['status'] as number) >= 500).length, 0, proxy.output());
  });
});
