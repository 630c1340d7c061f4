/**
 * The command line, run as an operator does (`node dist/cli/main.js ...`): check-config (effective config with
 * defaults and environment overrides; errors naming file, line and key), serve refusing a bad config,
 * the plain-HTTP warning, --help and unknown commands.
 */
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import bcrypt from 'bcryptjs';
import { parse } from 'yaml';
import { request } from './helpers/clients.js';
import { runCli, startPortcullis, type RunningPortcullis } from './helpers/portcullis.js';
import { describeRun, makeTempDir, removeTempDir } from './helpers/proc.js';
import { startRegistry, type RunningRegistry } from './helpers/registry.js';
import { makeTestCerts, type TestCerts } from './helpers/tls.js';

const T = { timeout: 60_000 };

let certs: TestCerts;
let other: TestCerts;
let dir: string;

/** Write `name` into the temp dir (next to the certificate and htpasswd), return its path. */
function file(name: string, content: string): string {
  const path = join(dir, name);
  writeFileSync(path, content);
  return path;
}

before(async () => {
  [certs, other] = await Promise.all([makeTestCerts(), makeTestCerts()]);
  dir = makeTempDir('portcullis-cli-');
  file('server.crt', certs.cert);
  file('server.key', certs.key);
  file('other.key', other.key);
  file('htpasswd', `alice:${bcrypt.hashSync('alice-pw', 4).replace(/^\$2b\$/, '$2y$')}\nbob:${bcrypt.hashSync('bob-pw', 4)}\n`);
});

after(() => {
  certs?.cleanup();
  other?.cleanup();
  if (dir) removeTempDir(dir);
});

const MINIMAL = `tls: { cert: server.crt, key: server.key }
upstream: { url: "http://127.0.0.1:5000" }
auth: { htpasswd: htpasswd }
`;

describe('check-config', () => {
  test('prints the effective config with every default applied, and exits 0', T, async () => {
    const config = file('minimal.yaml', MINIMAL);
    const r = await runCli(['check-config', config]);
    assert.equal(r.code, 0, describeRun('check-config', r));
    assert.match(r.stdout, /^# .*minimal\.yaml: OK \(2 users in .*htpasswd\)$/m);
    const printed = parse(r.stdout) as Record<string, unknown>;
    assert.deepEqual(printed, {
      listen: '0.0.0.0:5043',
      tls: { cert: join(dir, 'server.crt'), key: join(dir, 'server.key'), minVersion: 'TLSv1.2' },
      upstream: { url: 'http://127.0.0.1:5000', timeout: '5m', maxSockets: 1024 },
      auth: {
        htpasswd: join(dir, 'htpasswd'),
        realm: 'Registry Realm',
        cacheTtl: '5m',
        cacheSize: 1000,
        maxFailures: 10,
        maxFailuresPerAddress: 100,
        failureWindow: '1m',
        clientCertificate: 'none',
      },
      limits: { maxBodySize: 0, headersTimeout: '30s', keepAliveTimeout: '75s', maxHeaderSize: '16K' },
      log: { level: 'info' },
      workers: 1,
      shutdown: { gracePeriod: '30s' },
    });
    // What it prints is itself a valid config: it can be saved and used.
    const saved = file('effective.yaml', r.stdout);
    assert.equal((await runCli(['check-config', saved])).code, 0);
    assert.equal(r.stderr, '');
  });

  test('the file is found relative to the working directory, the paths in it relative to the file', T, async () => {
    file('relative.yaml', MINIMAL);
    const r = await runCli(['check-config', 'relative.yaml'], { cwd: dir });
    assert.equal(r.code, 0, describeRun('check-config', r));
    assert.equal((parse(r.stdout) as { auth: { htpasswd: string } }).auth.htpasswd, join(dir, 'htpasswd'));
  });

  test('a typo key: exit 1, naming file:line and the key', T, async () => {
    const config = file('typo.yaml', `${MINIMAL}limits:\n  maxBodySize: 1G\n  maxBodysize: 2G\n`);
    const r = await runCli(['check-config', config]);
    assert.equal(r.code, 1, describeRun('check-config', r));
    assert.match(r.stderr, new RegExp(`${escape(config)}:6: limits\\.maxBodysize: unknown key`));
    assert.equal(r.stdout, '');
  });

  test('a bad value: exit 1, naming file:line, the key and the value', T, async () => {
    const config = file('badvalue.yaml', `${MINIMAL}shutdown:\n  gracePeriod: soon\n`);
    const r = await runCli(['check-config', config]);
    assert.equal(r.code, 1, describeRun('check-config', r));
    assert.match(r.stderr, new RegExp(`${escape(config)}:5: shutdown\\.gracePeriod: "soon" is not a duration`));
  });

  test('a key that does not match the certificate: exit 1, naming the files', T, async () => {
    const config = file('mismatch.yaml', MINIMAL.replace('key: server.key', 'key: other.key'));
    const r = await runCli(['check-config', config]);
    assert.equal(r.code, 1, describeRun('check-config', r));
    assert.match(r.stderr, new RegExp(`${escape(join(dir, 'other.key'))} does not match the certificate in ${escape(join(dir, 'server.crt'))}`));
  });

  test('a broken htpasswd: exit 1, naming the file and line', T, async () => {
    const htpasswd = file('bad-htpasswd', 'alice:$2y$04$abcdefghijklmnopqrstuuUVmQ4Ar7uZ0F6s8qC4Qh0k7Q6C3X4u.\nmallory:hunter2-in-clear\n');
    const config = file('badhtpasswd.yaml', MINIMAL.replace('htpasswd: htpasswd', 'htpasswd: bad-htpasswd'));
    const r = await runCli(['check-config', config]);
    assert.equal(r.code, 1, describeRun('check-config', r));
    assert.match(r.stderr, new RegExp(`${escape(htpasswd)} line 2: user "mallory": unsupported hash scheme`));
    assert.doesNotMatch(r.stderr, /hunter2/, 'the hash (here a password) is not echoed');
  });

  test('environment overrides show in the printed config', T, async () => {
    const config = file('env.yaml', MINIMAL);
    const realmFile = file('realm.secret', 'Secret Realm\n');
    const r = await runCli(['check-config', config], {
      env: {
        PORTCULLIS_LIMITS_MAX_BODY_SIZE: '2G',
        PORTCULLIS_WORKERS: '3',
        PORTCULLIS_METRICS_LISTEN: '127.0.0.1:9099',
        PORTCULLIS_AUTH_REALM_FILE: realmFile,
      },
    });
    assert.equal(r.code, 0, describeRun('check-config', r));
    const printed = parse(r.stdout) as { limits: { maxBodySize: string }; workers: number; metrics: { listen: string }; auth: { realm: string } };
    assert.equal(printed.limits.maxBodySize, '2G');
    assert.equal(printed.workers, 3);
    assert.equal(printed.metrics.listen, '127.0.0.1:9099');
    assert.equal(printed.auth.realm, 'Secret Realm');
  });

  test('a bad environment override: exit 1, naming the variable', T, async () => {
    const config = file('env-bad.yaml', MINIMAL);
    const r = await runCli(['check-config', config], { env: { PORTCULLIS_LIMITS_MAX_BODY_SIZE: 'lots' } });
    assert.equal(r.code, 1, describeRun('check-config', r));
    assert.match(r.stderr, /PORTCULLIS_LIMITS_MAX_BODY_SIZE: limits\.maxBodySize: "lots" is not a size/);
  });

  test('a missing file: exit 1, naming it', T, async () => {
    const r = await runCli(['check-config', join(dir, 'nope.yaml')]);
    assert.equal(r.code, 1, describeRun('check-config', r));
    assert.match(r.stderr, /nope\.yaml: cannot read config/);
  });
});

describe('serve', () => {
  let registry: RunningRegistry;
  const proxies: RunningPortcullis[] = [];
  before(async () => {
    registry = await startRegistry();
  });
  after(async () => {
    for (const p of proxies) await p.stop();
    await registry?.close();
  });

  test('a bad config: non-zero exit with the reason on stderr, nothing listening', T, async () => {
    const config = file('serve-typo.yaml', `${MINIMAL.replace('5000', String(registry.port))}listen: "127.0.0.1:0"\nlimits: { maxBodysize: 1G }\n`);
    const r = await runCli(['serve', '--config', config], { timeoutMs: 20_000 });
    assert.equal(r.timedOut, false, 'serve gave up instead of running');
    assert.notEqual(r.code, 0, describeRun('serve', r));
    assert.match(r.stderr, new RegExp(`^portcullis: ${escape(config)}:5: limits\\.maxBodysize: unknown key$`, 'm'));
    assert.doesNotMatch(r.stdout, /"msg":"listening"/);
  });

  test('a key that does not match the certificate: non-zero exit naming the files', T, async () => {
    const config = file('serve-mismatch.yaml', `${MINIMAL.replace('key: server.key', 'key: other.key')}listen: "127.0.0.1:0"\n`);
    const r = await runCli(['serve', '--config', config], { timeoutMs: 20_000 });
    assert.equal(r.timedOut, false);
    assert.notEqual(r.code, 0, describeRun('serve', r));
    assert.match(r.stderr, new RegExp(`${escape(join(dir, 'other.key'))} does not match the certificate`));
    assert.doesNotMatch(r.stdout, /"msg":"listening"/);
  });

  test('a missing htpasswd file: non-zero exit naming it', T, async () => {
    const config = file('serve-nohtpasswd.yaml', `${MINIMAL.replace('htpasswd: htpasswd', 'htpasswd: missing-htpasswd')}listen: "127.0.0.1:0"\n`);
    const r = await runCli(['serve', '--config', config], { timeoutMs: 20_000 });
    assert.equal(r.timedOut, false);
    assert.notEqual(r.code, 0, describeRun('serve', r));
    assert.match(r.stderr, new RegExp(`${escape(join(dir, 'missing-htpasswd'))}: no such file`));
  });

  test('tls: false starts, serving plain HTTP, with a loud warning', T, async () => {
    const proxy = await startPortcullis(
      { listen: '127.0.0.1:0', tls: false, upstream: { url: registry.url }, auth: { htpasswd: join(dir, 'htpasswd') } },
      {},
    );
    proxies.push(proxy);
    assert.match(proxy.url, /^http:\/\//);
    const warning = proxy.logs().find((l) => /TLS IS DISABLED/.test(String(l['msg'])));
    assert.ok(warning, proxy.output());
    assert.equal(warning['level'], 40, 'logged as a warning');
    assert.match(String(warning['msg']), /clear text/);
    const r = await request(`${proxy.url}/v2/`, { auth: { user: 'alice', password: 'alice-pw' } });
    assert.equal(r.status, 200);
    assert.equal(await proxy.stop(), 0);
  });

  test('without TLS disabled there is no such warning', T, async () => {
    const proxy = await startPortcullis(
      { listen: '127.0.0.1:0', tls: { cert: join(dir, 'server.crt'), key: join(dir, 'server.key') }, upstream: { url: registry.url }, auth: { htpasswd: join(dir, 'htpasswd') } },
      {},
    );
    proxies.push(proxy);
    assert.ok(!proxy.logs().some((l) => /TLS IS DISABLED/.test(String(l['msg']))));
    assert.equal(await proxy.stop(), 0);
  });
});

describe('commands', () => {
  test('--help lists the commands and exits 0', T, async () => {
    for (const flag of ['--help', 'help', '-h']) {
      const r = await runCli([flag]);
      assert.equal(r.code, 0, describeRun(flag, r));
      for (const command of ['serve', 'check-config', 'htpasswd', 'certs', 'version']) {
        assert.match(r.stdout, new RegExp(`^\\s+${command}\\b`, 'm'), `${flag} lists ${command}`);
      }
    }
  });

  test('an unknown command exits 2 with the usage on stderr', T, async () => {
    const r = await runCli(['frobnicate']);
    assert.equal(r.code, 2, describeRun('frobnicate', r));
    assert.match(r.stderr, /unknown command "frobnicate"/);
    assert.match(r.stderr, /Usage: portcullis/);
    assert.equal(r.stdout, '');
    const none = await runCli([]);
    assert.equal(none.code, 2, describeRun('(no command)', none));
    assert.match(none.stderr, /Usage: portcullis/);
  });

  test('version prints the package version', T, async () => {
    const r = await runCli(['version']);
    assert.equal(r.code, 0);
    assert.match(r.stdout, /^portcullis \d+\.\d+\.\d+\n$/);
  });
});

function escape(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}
