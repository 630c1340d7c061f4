import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { effectiveConfig } from '../src/config/effective.ts';
import { envName, loadConfig, parseConfig, type Config } from '../src/config/load.ts';
import { PortcullisError } from '../src/errors.ts';

const MINIMAL = `tls: { cert: certs/server.crt, key: certs/server.key }
upstream: { url: "http://127.0.0.1:5000" }
auth: { htpasswd: auth/htpasswd }
`;

function configError(text: string, env: NodeJS.ProcessEnv = {}): string {
  try {
    parseConfig(text, '/etc/portcullis/proxy.yaml', env);
  } catch (err) {
    assert.ok(err instanceof PortcullisError);
    assert.equal(err.code, 'PCL_ERR_CONFIG');
    return err.message;
  }
  assert.fail('expected a config error');
}

test('the documented example config parses with defaults, paths relative to the file', () => {
  const c = parseConfig(
    `listen: "0.0.0.0:5043"
tls: { cert: certs/server.crt, key: certs/server.key, minVersion: TLSv1.2 }
upstream: { url: "http://127.0.0.1:5000" }
auth: { htpasswd: auth/htpasswd, realm: "Registry Realm" }
limits: { maxBodySize: 20G }
`,
    '/etc/portcullis/proxy.yaml',
  );
  assert.deepEqual(c.listen, { host: '0.0.0.0', port: 5043 });
  assert.deepEqual(c.tls, {
    cert: '/etc/portcullis/certs/server.crt',
    key: '/etc/portcullis/certs/server.key',
    minVersion: 'TLSv1.2',
    clientCA: null,
    clientAuth: 'require',
  });
  assert.equal(c.access, null, 'no access section: every signed-in caller may do everything');
  assert.equal(c.auth.clientCertificate, 'none');
  assert.equal(c.upstream.url.origin, 'http://127.0.0.1:5000');
  assert.equal(c.auth.htpasswd, '/etc/portcullis/auth/htpasswd');
  assert.equal(c.auth.realm, 'Registry Realm');
  assert.equal(c.limits.maxBodySize, 20 * 1024 ** 3);
  assert.equal(c.limits.headersTimeoutMs, 30_000);
  assert.equal(c.upstream.timeoutMs, 300_000);
  assert.equal(c.upstream.maxSockets, 1024);
  assert.equal(c.workers, 1);
  assert.equal(c.metrics, null);
  assert.equal(c.shutdown.gracePeriodMs, 30_000);
});

test('an unknown key is an error naming file, line and key path', () => {
  const msg = configError(MINIMAL + 'limits:\n  maxBodysize: 1G\n');
  assert.equal(msg, '/etc/portcullis/proxy.yaml:5: limits.maxBodysize: unknown key');
});

test('a bad value names its line and says what is expected', () => {
  assert.match(configError(MINIMAL + 'limits: { maxBodySize: lots }\n'), /^\/etc\/portcullis\/proxy\.yaml:4: limits\.maxBodySize: "lots" is not a size/);
  assert.match(configError(MINIMAL.replace('http://127.0.0.1:5000', 'ftp://x')), /proxy\.yaml:2: upstream\.url: .*http:\/\/ or https:\/\//);
  assert.match(configError(MINIMAL + 'listen: 5043\n'), /proxy\.yaml:4: listen: /);
  assert.match(configError(MINIMAL.replace('key: certs/server.key', 'kee: x')), /proxy\.yaml:1: tls\.(key: is required|kee: unknown key)/);
  assert.match(configError(MINIMAL.replace('tls: { cert: certs/server.crt, key: certs/server.key }', 'tls: true')), /proxy\.yaml:1: tls: must be a mapping with cert and key, or false/);
  assert.match(configError(MINIMAL + 'workers: many\n'), /proxy\.yaml:4: workers: must be "auto" or a number/);
});

test('missing required sections are reported', () => {
  assert.match(configError('tls: false\nupstream: { url: "http://a:5000" }\n'), /auth: is required/);
});

test('invalid YAML names the line', () => {
  assert.match(configError(MINIMAL + 'limits: { maxBodySize: 1G\n'), /^\/etc\/portcullis\/proxy\.yaml:\d+: invalid YAML/);
  assert.match(configError(MINIMAL + 'tls: false\n'), /proxy\.yaml:4: invalid YAML: Map keys must be unique/);
});

test('tls: false is plain HTTP, explicitly', () => {
  const c = parseConfig(MINIMAL.replace(/^tls:.*$/m, 'tls: false'), '/x/proxy.yaml');
  assert.equal(c.tls, null);
});

test('environment overrides every key, parsed like YAML, and errors name the variable', () => {
  const env = {
    PORTCULLIS_UPSTREAM_URL: 'http://registry:5000',
    PORTCULLIS_LIMITS_MAX_BODY_SIZE: '2G',
    PORTCULLIS_WORKERS: '3',
    PORTCULLIS_METRICS_LISTEN: '0.0.0.0:9090',
    PORTCULLIS_TLS: 'false',
  };
  const c = parseConfig(MINIMAL, '/x/proxy.yaml', env);
  assert.equal(c.upstream.url.origin, 'http://registry:5000');
  assert.equal(c.limits.maxBodySize, 2 * 1024 ** 3);
  assert.equal(c.workers, 3);
  assert.deepEqual(c.metrics, { host: '0.0.0.0', port: 9090 });
  assert.equal(c.tls, null);
  assert.match(configError(MINIMAL, { PORTCULLIS_LIMITS_MAX_BODY_SIZE: 'huge' }), /^PORTCULLIS_LIMITS_MAX_BODY_SIZE: limits\.maxBodySize: "huge" is not a size/);
});

test('*_FILE reads a value from a file (mounted secrets)', () => {
  const dir = mkdtempSync(join(tmpdir(), 'pcl-config-'));
  writeFileSync(join(dir, 'realm'), 'Secret Realm\n');
  const c = parseConfig(MINIMAL, '/x/proxy.yaml', { PORTCULLIS_AUTH_REALM_FILE: join(dir, 'realm') });
  assert.equal(c.auth.realm, 'Secret Realm');
  assert.throws(() => parseConfig(MINIMAL, '/x/proxy.yaml', { PORTCULLIS_AUTH_REALM_FILE: join(dir, 'nope') }), /PORTCULLIS_AUTH_REALM_FILE: cannot read/);
});

test('every config key has its environment variable, and each one takes effect', () => {
  // Written out here, not derived from configKeyPaths (the walker the overrides themselves use): a key the
  // walker misses has no variable, and its row fails. Each value differs from what MINIMAL gives.
  // A few keys only make sense with another: `extra` sets that one too.
  const RULES = '[{ repositories: ["**"], users: ["*"], actions: [pull] }]';
  // The ACME keys replace cert and key: their rows start from a config that has tls.acme instead.
  const ACME = 'tls: { acme: { email: ops@example.com, domains: [r.example], storage: acme } }\nupstream: { url: "http://127.0.0.1:5000" }\nauth: { htpasswd: auth/htpasswd }\n';
  const cases: Array<[name: string, value: string, read: (c: Config) => unknown, expected: unknown, extra?: Record<string, string>, base?: string]> = [
    ['PORTCULLIS_LISTEN', '127.0.0.1:6000', (c) => c.listen, { host: '127.0.0.1', port: 6000 }],
    ['PORTCULLIS_TLS', 'false', (c) => c.tls, null],
    ['PORTCULLIS_TLS_CERT', '/env/server.crt', (c) => c.tls?.cert, '/env/server.crt'],
    ['PORTCULLIS_TLS_KEY', '/env/server.key', (c) => c.tls?.key, '/env/server.key'],
    ['PORTCULLIS_TLS_MIN_VERSION', 'TLSv1.3', (c) => c.tls?.minVersion, 'TLSv1.3'],
    ['PORTCULLIS_UPSTREAM_URL', 'http://registry:5000', (c) => c.upstream.url.origin, 'http://registry:5000'],
    ['PORTCULLIS_UPSTREAM_CA', '/env/ca.crt', (c) => c.upstream.ca, '/env/ca.crt'],
    ['PORTCULLIS_UPSTREAM_ALIASES', '["http://registry.internal:5000"]', (c) => c.upstream.aliases, ['http://registry.internal:5000']],
    ['PORTCULLIS_UPSTREAM_TIMEOUT', '90s', (c) => c.upstream.timeoutMs, 90_000],
    ['PORTCULLIS_UPSTREAM_MAX_SOCKETS', '7', (c) => c.upstream.maxSockets, 7],
    ['PORTCULLIS_AUTH_HTPASSWD', '/env/htpasswd', (c) => c.auth.htpasswd, '/env/htpasswd'],
    ['PORTCULLIS_AUTH_REALM', 'Env Realm', (c) => c.auth.realm, 'Env Realm'],
    ['PORTCULLIS_AUTH_CACHE_TTL', '1m', (c) => c.auth.cacheTtlMs, 60_000],
    ['PORTCULLIS_AUTH_CACHE_SIZE', '5', (c) => c.auth.cacheSize, 5],
    ['PORTCULLIS_AUTH_MAX_FAILURES', '3', (c) => c.auth.maxFailures, 3],
    ['PORTCULLIS_AUTH_FAILURE_WINDOW', '2m', (c) => c.auth.failureWindowMs, 120_000],
    ['PORTCULLIS_AUTH_MAX_FAILURES_PER_ADDRESS', '7', (c) => c.auth.maxFailuresPerAddress, 7],
    ['PORTCULLIS_LIMITS_MAX_BODY_SIZE', '2G', (c) => c.limits.maxBodySize, 2 * 1024 ** 3],
    ['PORTCULLIS_LIMITS_HEADERS_TIMEOUT', '5s', (c) => c.limits.headersTimeoutMs, 5000],
    ['PORTCULLIS_LIMITS_KEEP_ALIVE_TIMEOUT', '10s', (c) => c.limits.keepAliveTimeoutMs, 10_000],
    ['PORTCULLIS_LIMITS_MAX_HEADER_SIZE', '32K', (c) => c.limits.maxHeaderSize, 32 * 1024],
    ['PORTCULLIS_METRICS_LISTEN', '0.0.0.0:9090', (c) => c.metrics, { host: '0.0.0.0', port: 9090 }],
    ['PORTCULLIS_LOG_LEVEL', 'debug', (c) => c.log.level, 'debug'],
    ['PORTCULLIS_WORKERS', '3', (c) => c.workers, 3],
    ['PORTCULLIS_SHUTDOWN_GRACE_PERIOD', '45s', (c) => c.shutdown.gracePeriodMs, 45_000],
    ['PORTCULLIS_TLS_CLIENT_CA', '/env/clients.crt', (c) => c.tls?.clientCA, '/env/clients.crt'],
    ['PORTCULLIS_TLS_CLIENT_AUTH', 'optional', (c) => c.tls?.clientAuth, 'optional'],
    ['PORTCULLIS_AUTH_CLIENT_CERTIFICATE', 'identity', (c) => c.auth.clientCertificate, 'identity', { PORTCULLIS_TLS_CLIENT_CA: '/env/clients.crt' }],
    ['PORTCULLIS_ACCESS_RULES', RULES, (c) => c.access?.rules[0]?.users, ['*']],
    ['PORTCULLIS_ACCESS_GROUPS', '{ devs: [alice] }', (c) => c.access?.groups, { devs: ['alice'] }, { PORTCULLIS_ACCESS_RULES: RULES }],
    ['PORTCULLIS_AUDIT_FILE', '/env/audit.jsonl', (c) => c.audit.file, '/env/audit.jsonl'],
    ['PORTCULLIS_TLS_ACME_EMAIL', 'env@example.com', (c) => c.tls?.acme?.email, 'env@example.com', {}, ACME],
    ['PORTCULLIS_TLS_ACME_DOMAINS', '[env.example]', (c) => c.tls?.acme?.domains, ['env.example'], {}, ACME],
    ['PORTCULLIS_TLS_ACME_STORAGE', '/env/acme', (c) => c.tls?.acme?.storage, '/env/acme', {}, ACME],
    ['PORTCULLIS_TLS_ACME_DIRECTORY', 'https://acme.env.example/dir', (c) => c.tls?.acme?.directory, 'https://acme.env.example/dir', {}, ACME],
    ['PORTCULLIS_TLS_ACME_CHALLENGE', 'http-01', (c) => c.tls?.acme?.challenge, 'http-01', { PORTCULLIS_TLS_ACME_HTTP_LISTEN: ':80' }, ACME],
    ['PORTCULLIS_TLS_ACME_HTTP_LISTEN', ':8080', (c) => c.tls?.acme?.httpListen, { host: '0.0.0.0', port: 8080 }, {}, ACME],
    ['PORTCULLIS_TLS_ACME_HTTPS_PORT', '8443', (c) => c.tls?.acme?.httpsPort, 8443, {}, ACME],
    ['PORTCULLIS_TLS_ACME_CA', '/env/acme-ca.pem', (c) => c.tls?.acme?.ca, '/env/acme-ca.pem', {}, ACME],
  ];
  for (const [name, value, read, expected, also, base = MINIMAL] of cases) {
    assert.notDeepEqual(read(parseConfig(base, '/x/proxy.yaml', {})), expected, `${name}: pick a value the base does not already give`);
    assert.deepEqual(read(parseConfig(base, '/x/proxy.yaml', { ...also, [name]: value })), expected, `${name}=${value} has no effect`);
  }
  // The README documents exactly these keys (a row "`tls.cert` / `tls.key`" documents two).
  const readme = readFileSync(new URL('../README.md', import.meta.url), 'utf8');
  const table = readme.slice(readme.indexOf('| Key | Default | Meaning |'));
  const documented = table
    .slice(0, table.indexOf('\n\n'))
    .split('\n')
    .slice(2)
    .flatMap((row) => [...(row.split('|')[1] ?? '').matchAll(/`([\w.]+)`/g)].map((m) => m[1]!));
  assert.deepEqual(documented.map((k) => envName(k.split('.'))).sort(), cases.map(([name]) => name).sort(), 'README configuration table');
});

test('realm cannot break the WWW-Authenticate header', () => {
  assert.match(configError(MINIMAL.replace('auth: { htpasswd: auth/htpasswd }', 'auth: { htpasswd: h, realm: "a\\"b" }')), /auth\.realm: must not contain quotes/);
});

test('loadConfig names an unreadable file; redaction hides upstream credentials', () => {
  assert.throws(() => loadConfig('/nonexistent/proxy.yaml'), (e: unknown) => e instanceof PortcullisError && e.code === 'PCL_ERR_CONFIG_IO' && /\/nonexistent\/proxy\.yaml: cannot read config/.test(e.message));
  const c = parseConfig(MINIMAL.replace('http://127.0.0.1:5000', 'https://bob:hunter2@reg.internal'), '/x/proxy.yaml');
  const printed = JSON.stringify(effectiveConfig(c));
  assert.ok(!printed.includes('hunter2'));
  assert.ok(printed.includes('reg.internal'));
});

test('the effective config printed by check-config loads back to the same config', async () => {
  const { stringify } = await import('yaml');
  const original = parseConfig(
    `listen: "[::1]:5443"
tls: { cert: certs/server.crt, key: certs/server.key }
upstream: { url: "https://reg.internal:5000", aliases: ["http://registry:5000"], timeout: 90s }
auth: { htpasswd: auth/htpasswd }
limits: { maxBodySize: 1000, headersTimeout: 1500ms }
metrics: { listen: "127.0.0.1:9090" }
workers: 2
`,
    '/etc/portcullis/proxy.yaml',
  );
  const text = stringify(effectiveConfig(original));
  assert.match(text, /timeout: 90s/);
  assert.match(text, /maxBodySize: 1000\n/);
  assert.match(text, /headersTimeout: 1500ms/);
  const again = parseConfig(text, '/etc/portcullis/proxy.yaml');
  assert.deepEqual({ ...again, upstream: { ...again.upstream, url: again.upstream.url.href } }, { ...original, upstream: { ...original.upstream, url: original.upstream.url.href } });
});
