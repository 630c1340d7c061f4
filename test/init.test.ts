/**
 * `portcullis init`: from an empty folder to a registry `docker compose up -d` starts.
 *
 * First the texts (src/cli/init-files.ts), including that the repository's own proxy.yaml and
 * docker-compose.yml are what init renders, so the two never drift apart. Then the built command as an
 * operator runs it: into a new folder; `docker-compose config` with the generated .env; `check-config` on the
 * generated proxy.yaml; `serve` with it in front of a real registry and `docker login` with the printed
 * password; a second init refusing and changing nothing; --acme, --password-stdin and the usage errors.
 */
import assert from 'node:assert/strict';
import { createPrivateKey, X509Certificate } from 'node:crypto';
import { existsSync, lstatSync, mkdirSync, readdirSync, readFileSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { parse as parseYaml } from 'yaml';
import {
  DEFAULT_IMAGE,
  INIT_PATHS,
  initPlan,
  initTargets,
  renderCompose,
  renderEnv,
  renderProxyYaml,
  type InitInput,
} from '../src/cli/init-files.ts';
import { parseConfig } from '../src/config/load.ts';
import { dockerLogin, request } from './helpers/clients.js';
import { REPO_ROOT, runCli, startPortcullis, type RunningPortcullis } from './helpers/portcullis.js';
import { describeRun, makeTempDir, run, type RunResult } from './helpers/proc.js';
import { startRegistry, type RunningRegistry } from './helpers/registry.js';

const T = { timeout: 120_000 };
const UID = process.getuid?.() ?? 1000;
const GID = process.getgid?.() ?? 1000;
const PASSWORD_LINE = /^Password of "admin" \(shown this once; only its bcrypt hash is stored\):\n {2}(\S+)$/m;

const read = (path: string): string => readFileSync(path, 'utf8');
const mode = (path: string): number => statSync(path).mode & 0o777;

type Obj = Record<string, unknown>;
function obj(v: unknown, what: string): Obj {
  assert.ok(typeof v === 'object' && v !== null && !Array.isArray(v), `${what} must be a mapping, got ${JSON.stringify(v)}`);
  return v as Obj;
}

/** Every file under `dir` (relative path -> content and mode), to prove a refusal changed nothing. */
function snapshot(dir: string): Map<string, { content: string; mode: number; mtimeMs: number }> {
  const out = new Map<string, { content: string; mode: number; mtimeMs: number }>();
  const walk = (d: string): void => {
    for (const name of readdirSync(d)) {
      const path = join(d, name);
      const st = lstatSync(path);
      if (st.isDirectory()) {
        out.set(`${relative(dir, path)}/`, { content: '', mode: st.mode & 0o777, mtimeMs: st.mtimeMs });
        walk(path);
      } else {
        out.set(relative(dir, path), { content: st.isSymbolicLink() ? '' : read(path), mode: st.mode & 0o777, mtimeMs: st.mtimeMs });
      }
    }
  };
  walk(dir);
  return out;
}

/** `docker-compose -f FILE --env-file ENV config`, parsed; with only PATH and HOME from this environment. */
async function composeConfig(file: string, envFile: string): Promise<{ r: RunResult; doc: Obj | null }> {
  const env = { PATH: process.env['PATH'] ?? '/usr/bin:/bin', HOME: process.env['HOME'] ?? '/tmp' };
  const r = await run('docker-compose', ['-f', file, '--env-file', envFile, 'config'], { env });
  return { r, doc: r.code === 0 ? obj(parseYaml(r.stdout), 'compose config') : null };
}

function init(args: string[], input?: string): Promise<RunResult> {
  return runCli(['init', ...args], { timeoutMs: 60_000, ...(input !== undefined ? { input } : {}) });
}

// ------------------------------------------------------------------------------------------ the texts

describe('the files init writes', () => {
  const FILES_INPUT: InitInput = {
    image: DEFAULT_IMAGE,
    secret: 'ab'.repeat(32),
    uid: 1234,
    gid: 999,
    htpasswd: 'admin:$2y$12$abcdefghijklmnopqrstuuP6d3Hk5J8o3Zl1Xxxxxxxxxxxxxxxxxx\n',
    tls: { kind: 'files', caCert: 'CA CERT\n', caKey: 'CA KEY\n', serverChain: 'CHAIN\n', serverKey: 'KEY\n' },
  };

  test("the repository's proxy.yaml and docker-compose.yml are what init renders", () => {
    assert.equal(read(join(REPO_ROOT, 'proxy.yaml')), renderProxyYaml({ kind: 'files' }));
    assert.equal(read(join(REPO_ROOT, 'docker-compose.yml')), renderCompose({ image: DEFAULT_IMAGE, build: true, tls: 'files' }));
  });

  test("the generated compose file is the repository's, without build: (below the header comment)", () => {
    const body = (text: string): string => text.slice(text.indexOf('\nservices:\n'));
    const generated = body(renderCompose({ image: DEFAULT_IMAGE, build: false, tls: 'files' }));
    const shipped = body(read(join(REPO_ROOT, 'docker-compose.yml')));
    assert.ok(shipped.includes('\n    build: .\n'));
    assert.equal(generated, shipped.replace('\n    build: .\n', '\n'));
    assert.match(renderCompose({ image: 'registry.example.com/portcullis:0.1.0', build: false, tls: 'files' }), /^ {4}image: registry\.example\.com\/portcullis:0\.1\.0$/m);
  });

  test('proxy.yaml is a valid config: the files init writes, no body limit, metrics internal', () => {
    const c = parseConfig(renderProxyYaml({ kind: 'files' }), '/etc/portcullis/proxy.yaml', {});
    assert.deepEqual(c.listen, { host: '0.0.0.0', port: 5043 });
    assert.equal(c.tls?.cert, `/etc/portcullis/${INIT_PATHS.serverCert}`);
    assert.equal(c.tls?.key, `/etc/portcullis/${INIT_PATHS.serverKey}`);
    assert.equal(c.auth.htpasswd, `/etc/portcullis/${INIT_PATHS.htpasswd}`);
    assert.equal(c.limits.maxBodySize, 0, 'no cap on layer size');
    assert.deepEqual(c.metrics, { host: '127.0.0.1', port: 9090 });
    // The comment says how to cap it, and that advice is itself a valid setting.
    const text = renderProxyYaml({ kind: 'files' });
    assert.match(text, /To cap, give a size[\s\S]*e\.g\. maxBodySize: 20G/);
    const capped = parseConfig(text.replace('limits: { maxBodySize: 0 }', 'limits: { maxBodySize: 20G }'), '/x/proxy.yaml', {});
    assert.equal(capped.limits.maxBodySize, 20 * 1024 ** 3);
  });

  test('with ACME: tls.acme for the names, storage in the folder the compose file mounts', () => {
    const text = renderProxyYaml({ kind: 'acme', email: 'ops@example.com', domains: ['registry.example.com', 'r2.example.com'] });
    const c = parseConfig(text, '/etc/portcullis/proxy.yaml', {});
    assert.deepEqual(c.tls?.acme?.domains, ['registry.example.com', 'r2.example.com']);
    assert.equal(c.tls?.acme?.email, 'ops@example.com');
    assert.equal(c.tls?.acme?.challenge, 'tls-alpn-01');
    const compose = renderCompose({ image: DEFAULT_IMAGE, build: false, tls: 'acme' });
    const volumes = (obj(obj(parseYaml(compose), 'compose').services, 'services').portcullis as { volumes: string[] }).volumes;
    assert.ok(volumes.includes(`./${INIT_PATHS.acme}:${c.tls?.acme?.storage}`), `${JSON.stringify(volumes)} mounts ${c.tls?.acme?.storage}, writable`);
    assert.ok(!volumes.some((v) => v.startsWith('./certs')), 'no certs/ with ACME');
  });

  test('.env holds the secret and the owner the proxy runs as', () => {
    const env = renderEnv(FILES_INPUT);
    assert.match(env, new RegExp(`^REGISTRY_HTTP_SECRET=${'ab'.repeat(32)}$`, 'm'));
    assert.match(env, /^PORTCULLIS_UID=1234$/m);
    assert.match(env, /^PORTCULLIS_GID=999$/m);
  });

  test('the plan: keys, htpasswd and .env 0600; its files are exactly the targets looked for before writing', () => {
    const files = initPlan(FILES_INPUT);
    const byPath = new Map(files.files.map((f) => [f.path, f]));
    for (const secret of [INIT_PATHS.caKey, INIT_PATHS.serverKey, INIT_PATHS.htpasswd, INIT_PATHS.env]) assert.equal(byPath.get(secret)?.mode, 0o600, secret);
    for (const open of [INIT_PATHS.proxy, INIT_PATHS.compose, INIT_PATHS.caCert, INIT_PATHS.serverCert]) assert.equal(byPath.get(open)?.mode, 0o644, open);
    assert.deepEqual([...byPath.keys()].sort(), initTargets('files').sort());
    assert.equal(byPath.get(INIT_PATHS.serverCert)?.text, 'CHAIN\n');

    const acme = initPlan({ ...FILES_INPUT, tls: { kind: 'acme', email: 'ops@example.com', domains: ['registry.example.com'] } });
    const mustNotExist = [...acme.files.map((f) => f.path), ...acme.dirs.filter((d) => !d.mayExist).map((d) => d.path)];
    assert.deepEqual(mustNotExist.sort(), initTargets('acme').sort());
    assert.equal(acme.dirs.find((d) => d.path === INIT_PATHS.acme)?.mode, 0o700);
    assert.ok(!acme.files.some((f) => f.path.startsWith('certs/')));
  });
});

// ------------------------------------------------------------------------------------------ the command

describe('portcullis init into a new folder', () => {
  let dir: string;
  let first: RunResult;
  let password: string;
  let written: Map<string, { content: string; mode: number; mtimeMs: number }>;

  before(async () => {
    dir = join(makeTempDir('portcullis-init-'), 'registry'); // does not exist yet
    first = await init([dir, '--host', 'localhost', '--ip', '127.0.0.1']);
    assert.equal(first.code, 0, describeRun('portcullis init', first));
    const m = PASSWORD_LINE.exec(first.stdout);
    assert.ok(m, `no password line in:\n${first.stdout}`);
    password = m[1]!;
    written = snapshot(dir);
  });

  test('writes every file, keys, htpasswd and .env 0600, and nothing else', T, () => {
    assert.deepEqual(
      [...written.keys()].sort(),
      ['.env', 'auth/', 'auth/htpasswd', 'certs/', 'certs/ca.crt', 'certs/ca.key', 'certs/server.crt', 'certs/server.key', 'docker-compose.yml', 'proxy.yaml'],
    );
    for (const secret of ['certs/ca.key', 'certs/server.key', 'auth/htpasswd', '.env']) assert.equal(mode(join(dir, secret)), 0o600, secret);
    for (const open of ['certs/ca.crt', 'certs/server.crt', 'proxy.yaml', 'docker-compose.yml']) assert.equal(mode(join(dir, open)), 0o644, open);
    assert.equal(first.stderr.replace(/^portcullis init: warning: written as root.*\n/m, ''), '');
  });

  test('prints the password once, the one next command and the trust steps; the password is on no disk', T, () => {
    const out = first.stdout;
    assert.equal(out.split(password).length - 1, 1, 'the password is printed exactly once');
    assert.ok(password.length >= 24, `a long random password: ${password.length} characters`);
    for (const content of [...written.values()].map((f) => f.content)) assert.ok(!content.includes(password), 'the password is stored in clear');
    assert.match(out, /^Start it, in .*registry:\n {2}docker compose up -d$/m);
    assert.ok(out.includes('sudo mkdir -p /etc/docker/certs.d/localhost:5043 && sudo cp certs/ca.crt /etc/docker/certs.d/localhost:5043/ca.crt'), out);
    assert.ok(out.includes('/etc/containers/certs.d/localhost:5043/ca.crt'));
    assert.ok(out.includes('/etc/containerd/certs.d/localhost:5043/hosts.toml'));
    assert.ok(out.includes('Repeat the certs.d steps for each other name clients use: 127.0.0.1:5043'));
    assert.match(out, /Then log in: {2}docker login localhost:5043 -u admin\n$/);
    assert.ok(out.indexOf('docker compose up -d') < out.indexOf('Make clients trust the CA'), 'the next command, then the trust steps');
  });

  test('the password verifies against the htpasswd file; .env has a random secret and this uid/gid', T, async () => {
    const verify = await runCli(['htpasswd', 'verify', join(dir, 'auth/htpasswd'), 'admin', '--password-stdin'], { input: `${password}\n` });
    assert.equal(verify.code, 0, describeRun('htpasswd verify', verify));
    const wrong = await runCli(['htpasswd', 'verify', join(dir, 'auth/htpasswd'), 'admin', '--password-stdin'], { input: 'not-it\n' });
    assert.equal(wrong.code, 1);
    const env = read(join(dir, '.env'));
    assert.match(env, /^REGISTRY_HTTP_SECRET=[0-9a-f]{64}$/m);
    assert.match(env, new RegExp(`^PORTCULLIS_UID=${UID}$`, 'm'));
    assert.match(env, new RegExp(`^PORTCULLIS_GID=${GID}$`, 'm'));
  });

  test('the server certificate is signed by the new CA, for the names given', T, () => {
    const ca = new X509Certificate(read(join(dir, 'certs/ca.crt')));
    const leaf = new X509Certificate(read(join(dir, 'certs/server.crt')));
    assert.ok(leaf.checkIssued(ca) && leaf.verify(ca.publicKey), 'server.crt is issued by ca.crt');
    assert.equal(leaf.subjectAltName, 'DNS:localhost, IP Address:127.0.0.1');
    assert.ok(leaf.checkPrivateKey(createPrivateKey(read(join(dir, 'certs/server.key')))));
  });

  test('docker-compose config accepts it with the generated .env, as the repository file with the image', T, async () => {
    const { r, doc } = await composeConfig(join(dir, 'docker-compose.yml'), join(dir, '.env'));
    assert.equal(r.code, 0, describeRun('docker-compose config', r));
    const services = obj(doc!.services, 'services');
    const secret = /^REGISTRY_HTTP_SECRET=(\w+)$/m.exec(read(join(dir, '.env')))![1];
    assert.equal(obj(obj(services.registry, 'registry').environment, 'environment').REGISTRY_HTTP_SECRET, secret);
    const p = obj(services.portcullis, 'portcullis');
    assert.equal(p.user, `${UID}:${GID}`);
    assert.equal(p.image, DEFAULT_IMAGE);
    assert.equal(p.build, undefined, 'runs the image: no Dockerfile next to it');

    // Everything else is the repository's compose file, with the same .env.
    const shipped = await composeConfig(join(REPO_ROOT, 'docker-compose.yml'), join(dir, '.env'));
    assert.equal(shipped.r.code, 0, describeRun('docker-compose config (repository)', shipped.r));
    const normalize = (d: Obj, root: string): unknown => {
      const copy = structuredClone(d);
      delete obj(obj(copy.services, 'services').portcullis, 'portcullis').build;
      return JSON.parse(JSON.stringify(copy).replaceAll(root.replace(/\/$/, ''), 'ROOT')) as unknown;
    };
    assert.deepEqual(normalize(doc!, dir), normalize(shipped.doc!, REPO_ROOT));
  });

  test('check-config accepts the generated proxy.yaml', T, async () => {
    const r = await runCli(['check-config', join(dir, 'proxy.yaml')]);
    assert.equal(r.code, 0, describeRun('check-config', r));
    assert.match(r.stdout, /: OK \(1 user in .*auth\/htpasswd\)$/m);
    assert.equal((parseYaml(r.stdout) as { limits: { maxBodySize: unknown } }).limits.maxBodySize, 0);
  });

  describe('serve with it in front of a real registry', () => {
    let registry: RunningRegistry;
    let proxy: RunningPortcullis;

    before(async () => {
      registry = await startRegistry();
      // The generated file as it is; only what differs on a test machine comes from the environment.
      proxy = await startPortcullis(read(join(dir, 'proxy.yaml')), {
        dir,
        env: { PORTCULLIS_LISTEN: '127.0.0.1:0', PORTCULLIS_UPSTREAM_URL: registry.url, PORTCULLIS_METRICS_LISTEN: '127.0.0.1:0' },
      });
    });

    after(async () => {
      await proxy?.stop();
      await registry?.close();
    });

    test('docker login with the printed password succeeds; the CA init made is the one clients trust', T, async () => {
      const ca = join(dir, 'certs/ca.crt');
      const ping = await request(`${proxy.url}/v2/`, { caFile: ca, auth: { user: 'admin', password } });
      assert.equal(ping.status, 200, ping.text());
      const wrong = await request(`${proxy.url}/v2/`, { caFile: ca, auth: { user: 'admin', password: `${password}x` } });
      assert.equal(wrong.status, 401);
      const login = await dockerLogin(proxy.hostPort, 'admin', password, { caFile: ca });
      try {
        assert.equal(login.code, 0, describeRun('docker login', login));
        assert.match(login.stdout, /Login Succeeded/);
        assert.equal(login.auths[proxy.hostPort]?.auth, Buffer.from(`admin:${password}`).toString('base64'));
      } finally {
        login.cleanup();
      }
      await proxy.waitForLog((l) => l['msg'] === 'request' && l['user'] === 'admin' && l['operation'] === 'ping' && l['status'] === 200);
    });
  });

  test('a second init in the same folder refuses, names every file in the way, and changes nothing', T, async () => {
    const before = snapshot(dir);
    const again = await init([dir, '--host', 'localhost', '--ip', '127.0.0.1']);
    assert.equal(again.code, 1, describeRun('second init', again));
    assert.match(again.stderr, /already has proxy\.yaml, docker-compose\.yml, \.env, certs\/ca\.crt, certs\/ca\.key, certs\/server\.crt, certs\/server\.key, auth\/htpasswd: nothing was written/);
    assert.doesNotMatch(again.stdout, /Password/);
    assert.deepEqual(snapshot(dir), before, 'files, modes and times unchanged');
    for (const [path, f] of written) assert.equal(before.get(path)?.content, f.content, `${path} is byte for byte what the first init wrote`);
  });
});

describe('portcullis init: refusals and options', () => {
  test('one file in the way (even a dangling symlink) is enough: named, and nothing else created', T, async () => {
    const dir = makeTempDir('portcullis-init-one-');
    writeFileSync(join(dir, '.env'), 'MINE=1\n');
    symlinkSync(join(dir, 'nowhere.yaml'), join(dir, 'proxy.yaml'));
    const before = snapshot(dir);
    const r = await init([dir, '--host', 'registry.example.com']);
    assert.equal(r.code, 1, describeRun('init', r));
    assert.match(r.stderr, /already has proxy\.yaml, \.env: nothing was written/);
    assert.deepEqual(snapshot(dir), before);
    assert.ok(!existsSync(join(dir, 'nowhere.yaml')), 'nothing written through the symlink');
  });

  test('a folder with other files is fine: init adds its own and leaves the rest', T, async () => {
    const dir = makeTempDir('portcullis-init-other-');
    writeFileSync(join(dir, 'notes.txt'), 'keep me\n');
    mkdirSync(join(dir, 'certs'));
    const r = await init([dir, '--host', 'registry.example.com', '--user', 'ops']);
    assert.equal(r.code, 0, describeRun('init', r));
    assert.equal(read(join(dir, 'notes.txt')), 'keep me\n');
    assert.match(read(join(dir, 'auth/htpasswd')), /^ops:\$2y\$12\$/);
    assert.match(r.stdout, /Then log in: {2}docker login registry\.example\.com:5043 -u ops\n$/);
  });

  test('a folder the system refuses (a file in the path): one line naming init and the cause, exit 1', T, async () => {
    const base = makeTempDir('portcullis-init-notdir-');
    writeFileSync(join(base, 'plain-file'), 'x');
    const r = await init([join(base, 'plain-file', 'registry'), '--host', 'registry.example.com']);
    assert.equal(r.code, 1, describeRun('init', r));
    assert.match(r.stderr, /^portcullis init: ENOTDIR: not a directory, .*\nNothing was left behind\.\n$/);
    assert.doesNotMatch(r.stderr, /\n\s+at /, 'no stack trace');
    assert.deepEqual(readdirSync(base), ['plain-file']);
  });

  test('--password-stdin: that password, never printed', T, async () => {
    const dir = makeTempDir('portcullis-init-stdin-');
    const given = 'given: pass word';
    const r = await init([dir, '--host', 'registry.example.com', '--password-stdin'], `${given}\n`);
    assert.equal(r.code, 0, describeRun('init', r));
    assert.ok(!r.stdout.includes(given), 'not printed');
    assert.doesNotMatch(r.stdout, /Password of/);
    const verify = await runCli(['htpasswd', 'verify', join(dir, 'auth/htpasswd'), 'admin', '--password-stdin'], { input: `${given}\n` });
    assert.equal(verify.code, 0, describeRun('htpasswd verify', verify));
  });

  test("--acme: Let's Encrypt in proxy.yaml, no certs/, port 443, storage 0700; check-config and compose accept it", T, async () => {
    const dir = makeTempDir('portcullis-init-acme-');
    const r = await init([dir, '--host', 'Registry.Example.com', '--acme', 'ops@example.com']);
    assert.equal(r.code, 0, describeRun('init --acme', r));
    assert.ok(!existsSync(join(dir, 'certs')), 'no private CA');
    assert.equal(mode(join(dir, 'acme')), 0o700);
    assert.deepEqual(readdirSync(join(dir, 'acme')), []);
    for (const secret of ['auth/htpasswd', '.env']) assert.equal(mode(join(dir, secret)), 0o600, secret);

    const check = await runCli(['check-config', join(dir, 'proxy.yaml')]);
    assert.equal(check.code, 0, describeRun('check-config', check));
    const printed = parseYaml(check.stdout) as { tls: { acme: { email: string; domains: string[]; storage: string; challenge: string } } };
    assert.deepEqual(printed.tls.acme.domains, ['registry.example.com']);
    assert.equal(printed.tls.acme.email, 'ops@example.com');
    assert.equal(printed.tls.acme.storage, join(dir, 'acme'));

    const { r: cr, doc } = await composeConfig(join(dir, 'docker-compose.yml'), join(dir, '.env'));
    assert.equal(cr.code, 0, describeRun('docker-compose config', cr));
    const p = obj(obj(doc!.services, 'services').portcullis, 'portcullis');
    // docker-compose 1.29 prints ports and mounts as strings; v2 as mappings.
    const ports = (p.ports as unknown[]).map((v) => (typeof v === 'string' ? v.replace(/\/tcp$/, '') : `${String(obj(v, 'port').published)}:${String(obj(v, 'port').target)}`));
    assert.deepEqual(ports, ['443:5043']);
    const volumes = (p.volumes as unknown[]).map((v) => (typeof v === 'string' ? v : `${String(obj(v, 'mount').source)}:${String(obj(v, 'mount').target)}${obj(v, 'mount').read_only === true ? ':ro' : ''}`));
    const storage = volumes.find((v) => v.startsWith(`${join(dir, 'acme')}:/etc/portcullis/acme`));
    assert.ok(storage && !storage.endsWith(':ro'), `storage mounted writable: ${JSON.stringify(volumes)}`);
    assert.ok(!volumes.some((v) => v.includes('/etc/portcullis/certs')), JSON.stringify(volumes));

    assert.doesNotMatch(r.stdout, /Make clients trust the CA/);
    assert.match(r.stdout, /must resolve to this host, and port 443 must be reachable/);
    assert.match(r.stdout, /Then log in: {2}docker login registry\.example\.com -u admin\n$/);
  });

  test('usage errors: exit 2 with the reason, and no folder created', T, async () => {
    const base = makeTempDir('portcullis-init-usage-');
    const cases: Array<[args: string[], reason: RegExp]> = [
      [['--host', 'registry.example.com', '--ip', '203.0.113.5', '--acme', 'ops@example.com'], /--ip cannot be combined with --acme: Let's Encrypt issues certificates for DNS names only/],
      [['--host', '203.0.113.5', '--acme', 'ops@example.com'], /--host 203\.0\.113\.5: Let's Encrypt issues certificates for DNS names only/],
      [['--host', '*.example.com', '--acme', 'ops@example.com'], /wildcard needs the dns-01 challenge/],
      [['--host', 'registry.example.com', '--acme', 'not-an-email'], /--acme takes the account's email address/],
      [['--acme', 'ops@example.com'], /--acme needs the DNS names/],
      [[], /give the names clients will use/],
      [['--host', 'bad_name!'], /not a valid DNS name/],
      [['--host', 'registry.example.com', '--user', 'a:b'], /invalid --user: user name contains ":"/],
      [['--host', 'registry.example.com', '--image', 'x y'], /is not an image reference/],
      [['--host', 'registry.example.com', '--bogus'], /Unknown option '--bogus'/],
    ];
    for (const [i, [args, reason]] of cases.entries()) {
      const dir = join(base, `case-${i}`);
      const r = await init([dir, ...args]);
      assert.equal(r.code, 2, describeRun(`init ${args.join(' ')}`, r));
      assert.match(r.stderr, reason, `init ${args.join(' ')}`);
      assert.ok(!existsSync(dir), `init ${args.join(' ')} created ${dir}`);
    }
  });

  test('help: the usage on stdout, and init among the commands', T, async () => {
    const help = await runCli(['init', '--help']);
    assert.equal(help.code, 0);
    assert.match(help.stdout, /^Usage: portcullis init \[DIR\] --host NAME\.\.\./);
    assert.match(help.stdout, /docker run --rm -u "\$\(id -u\):\$\(id -g\)" -v "\$PWD:\/work" IMAGE init \/work/);
    const top = await runCli(['--help']);
    assert.match(top.stdout, /^ {2}init \[DIR\] --host NAME\.\.\./m);
  });
});
