/**
 * Reloads without a restart, against the real registry and real files and signals:
 * - htpasswd: followed on disk (replaced by rename, or rewritten in place); a broken file is refused with
 *   its file and line named, and the last good users keep working.
 * - certificate and key: new handshakes get the new pair, open connections keep theirs; a pair that does
 *   not load or does not match is refused and the old one keeps serving.
 * - proxy.yaml: re-read on SIGHUP; a broken file is refused and the running config kept.
 */
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { copyFileSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import https from 'node:https';
import { join } from 'node:path';
import tls from 'node:tls';
import { after, before, describe, test } from 'node:test';
import bcrypt from 'bcryptjs';
import { stringify } from 'yaml';
import { request } from './helpers/clients.js';
import { startPortcullis, type RunningPortcullis } from './helpers/portcullis.js';
import { sha256 } from './helpers/oci-image.js';
import { startRegistry, type RunningRegistry } from './helpers/registry.js';
import { makeTestCerts, signCert, type TestCerts } from './helpers/tls.js';
import { eventually, waitForNewLog } from './helpers/wait.js';
import { metric } from './helpers/prometheus.js';
import { basic } from './helpers/wire.js';

const T = { timeout: 60_000 };

// ------------------------------------------------------------------------------------------ local helpers

function htpasswdLine(user: string, password: string): string {
  return `${user}:${bcrypt.hashSync(password, 4).replace(/^\$2b\$/, '$2y$')}`;
}




async function metricsText(p: RunningPortcullis): Promise<string> {
  const r = await request(`${p.metricsUrl!}/metrics`);
  assert.equal(r.status, 200);
  return r.text();
}

/** Serial number (upper-case hex) of the certificate a fresh TLS handshake presents. */
function handshakeSerial(port: number, ca: string, opts: tls.ConnectionOptions = {}): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = tls.connect({ host: '127.0.0.1', port, ca, servername: 'localhost', ...opts }, () => {
      const serial = socket.getPeerCertificate().serialNumber.toUpperCase();
      socket.end();
      resolve(serial);
    });
    socket.once('error', reject);
    socket.setTimeout(5000, () => socket.destroy(new Error('TLS handshake timed out')));
  });
}

function serialOf(pemFile: string): string {
  return new X509Certificate(readFileSync(pemFile)).serialNumber.toUpperCase();
}

/** GET through a given (keep-alive) agent: status, whether the socket was reused, and that socket's certificate. */
function agentGet(url: string, agent: https.Agent, auth: string): Promise<{ status: number; reused: boolean; serial: string }> {
  return new Promise((resolve, reject) => {
    const req = https.request(url, { agent, headers: { authorization: auth }, timeout: 10_000 }, (res) => {
      const serial = (res.socket as tls.TLSSocket).getPeerCertificate().serialNumber.toUpperCase();
      res.resume();
      res.once('end', () => resolve({ status: res.statusCode ?? 0, reused: req.reusedSocket, serial }));
    });
    req.once('timeout', () => req.destroy(new Error('timeout')));
    req.once('error', reject);
    req.end();
  });
}

/** Replace a file the way editors and `htpasswd` do: write a temp file next to it, rename over. */
function replaceByRename(path: string, content: string | Buffer): void {
  const tmp = `${path}.tmp-${process.pid}`;
  writeFileSync(tmp, content);
  renameSync(tmp, path);
}

// ------------------------------------------------------------------------------------------------ setup

let registry: RunningRegistry;
let certs: TestCerts;

before(async () => {
  [registry, certs] = await Promise.all([startRegistry(), makeTestCerts()]);
});

after(async () => {
  await registry?.close();
  certs?.cleanup();
});

function baseConfig(extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    listen: '127.0.0.1:0',
    tls: { cert: 'server.crt', key: 'server.key' },
    upstream: { url: registry.url },
    // maxFailures 0: polling with not-yet-valid credentials must not get this address throttled.
    auth: { htpasswd: 'htpasswd', realm: 'Reload Realm', maxFailures: 0 },
    metrics: { listen: '127.0.0.1:0' },
    ...extra,
  };
}

// ---------------------------------------------------------------------------------------------- htpasswd

describe('htpasswd reload', () => {
  let proxy: RunningPortcullis;
  let file: string;
  const status = async (user: string, password: string): Promise<number> =>
    (await request(`${proxy.url}/v2/`, { ca: certs.ca, auth: { user, password } })).status;

  before(async () => {
    proxy = await startPortcullis(baseConfig(), {
      files: { 'server.crt': certs.cert, 'server.key': certs.key, htpasswd: `${htpasswdLine('alice', 'alice-pw')}\n` },
    });
    file = join(proxy.dir, 'htpasswd');
  });
  after(async () => {
    await proxy?.stop();
  });

  test('a user added by replacing the file (rename) can log in', T, async () => {
    assert.equal(await status('bob', 'bob-pw'), 401);
    replaceByRename(file, `${htpasswdLine('alice', 'alice-pw')}\n${htpasswdLine('bob', 'bob-pw')}\n`);
    await eventually('bob gets 200 after the rename', async () => (await status('bob', 'bob-pw')) === 200);
    assert.equal(await status('alice', 'alice-pw'), 200);
  });

  test('a user added by rewriting the file in place can log in', T, async () => {
    assert.equal(await status('carol', 'carol-pw'), 401);
    writeFileSync(file, `${htpasswdLine('alice', 'alice-pw')}\n${htpasswdLine('bob', 'bob-pw')}\n${htpasswdLine('carol', 'carol-pw')}\n`);
    await eventually('carol gets 200 after the in-place rewrite', async () => (await status('carol', 'carol-pw')) === 200);
  });

  test('a removed user is refused, even with credentials verified (cached) before', T, async () => {
    assert.equal(await status('carol', 'carol-pw'), 200); // cached now
    replaceByRename(file, `${htpasswdLine('alice', 'alice-pw')}\n${htpasswdLine('bob', 'bob-pw')}\n`);
    await eventually('carol gets 401 after her removal', async () => (await status('carol', 'carol-pw')) === 401);
    assert.equal(await status('bob', 'bob-pw'), 200);
  });

  test('a changed password: the old one is refused, the new one accepted', T, async () => {
    assert.equal(await status('bob', 'bob-pw'), 200);
    replaceByRename(file, `${htpasswdLine('alice', 'alice-pw')}\n${htpasswdLine('bob', 'bob-new-pw')}\n`);
    await eventually('the new password works', async () => (await status('bob', 'bob-new-pw')) === 200);
    assert.equal(await status('bob', 'bob-pw'), 401);
  });

  test('a broken file is refused naming file and line; the last good users keep working', T, async () => {
    const before = metric(await metricsText(proxy), 'portcullis_config_reloads_total', { kind: 'htpasswd', result: 'error' });
    let from = proxy.logs().length;
    // Line 2 uses a scheme we refuse; bob is missing from it: if the file were half-taken bob would be out.
    replaceByRename(file, `${htpasswdLine('alice', 'alice-pw')}\ndave:$y$j9T$Xb3aQ/Jn0k6sOTm9yiCDr.$zfO.uL5E/0k6sOTm9yiCDrzfO.uL5E/Xb3aQ/Jn0\n`);
    const refused = await waitForNewLog(proxy, from, 'htpasswd reload refused', (l) => /htpasswd reload refused/.test(String(l['msg'])));
    assert.equal(refused['level'], 50, JSON.stringify(refused));
    assert.equal(refused['file'], file);
    assert.match(String(refused['err']), new RegExp(`${escape(file)} line 2: user "dave": unsupported hash scheme \\$y\\$`));
    assert.doesNotMatch(JSON.stringify(refused), /Xb3aQ/, 'the hash itself is not logged');
    assert.equal(await status('bob', 'bob-new-pw'), 200);
    assert.equal(await status('alice', 'alice-pw'), 200);
    assert.equal(await status('dave', 'anything'), 401);
    await eventually('reload error counted', async () =>
      metric(await metricsText(proxy), 'portcullis_config_reloads_total', { kind: 'htpasswd', result: 'error' }) === before + 1);

    // Random binary garbage (what a half-copied file or a wrong path can produce).
    from = proxy.logs().length;
    replaceByRename(file, Buffer.from([0x00, 0x9f, 0x92, 0x96, 0x0a, 0xff, 0xfe, 0x3a, 0x01, 0x02, 0x0a, 0x7f, 0x45, 0x4c, 0x46]));
    const garbage = await waitForNewLog(proxy, from, 'htpasswd reload refused (binary)', (l) => /htpasswd reload refused/.test(String(l['msg'])));
    assert.equal(garbage['file'], file);
    assert.match(String(garbage['err']), new RegExp(`${escape(file)} line 1: `));
    assert.equal(await status('bob', 'bob-new-pw'), 200);
    assert.equal(await status('alice', 'alice-pw'), 200);
    await eventually('second reload error counted', async () =>
      metric(await metricsText(proxy), 'portcullis_config_reloads_total', { kind: 'htpasswd', result: 'error' }) === before + 2);
    assert.equal(await status('alice', 'alice-pw'), 200);

    // A good file again is taken (the refused one did not stop the following).
    const okBefore = metric(await metricsText(proxy), 'portcullis_config_reloads_total', { kind: 'htpasswd', result: 'ok' });
    writeFileSync(file, `${htpasswdLine('erin', 'erin-pw')}\n`);
    await eventually('erin gets 200 after the repair', async () => (await status('erin', 'erin-pw')) === 200);
    assert.equal(await status('alice', 'alice-pw'), 401);
    assert.ok(metric(await metricsText(proxy), 'portcullis_config_reloads_total', { kind: 'htpasswd', result: 'ok' }) >= okBefore + 1);
  });
});

function escape(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

// ------------------------------------------------------------------------------------------- certificate

describe('certificate reload', () => {
  let proxy: RunningPortcullis;
  let certFile: string;
  let keyFile: string;
  let agent: https.Agent;
  let rotated: { keyFile: string; leafFile: string; chainFile: string };
  const auth = basic('alice', 'alice-pw');

  before(async () => {
    rotated = await signCert({ dir: certs.dir, caFile: certs.caFile, caKeyFile: certs.caKeyFile, name: 'rotated', cn: 'rotated.test' });
    proxy = await startPortcullis(baseConfig({ tls: { cert: 'server.crt', key: 'server.key', minVersion: 'TLSv1.3' } }), {
      files: { 'server.crt': certs.cert, 'server.key': certs.key, htpasswd: `${htpasswdLine('alice', 'alice-pw')}\n` },
    });
    certFile = join(proxy.dir, 'server.crt');
    keyFile = join(proxy.dir, 'server.key');
    agent = new https.Agent({ keepAlive: true, maxSockets: 1, ca: certs.ca });
  });
  after(async () => {
    agent?.destroy();
    await proxy?.stop();
  });

  test('new handshakes get the new certificate; a connection opened before keeps working', T, async () => {
    const original = serialOf(certs.leafFile);
    const next = serialOf(rotated.leafFile);
    assert.notEqual(original, next);
    assert.equal(await handshakeSerial(proxy.port, certs.ca), original);
    await assert.rejects(handshakeSerial(proxy.port, certs.ca, { maxVersion: 'TLSv1.2' }), /protocol version|alert|wrong version|unsupported/i);
    const first = await agentGet(`${proxy.url}/v2/`, agent, auth);
    assert.deepEqual(first, { status: 200, reused: false, serial: original });

    const from = proxy.logs().length;
    // Key first, then the chain, each by rename (the way cert-manager/certbot deploy hooks do it).
    replaceByRename(keyFile, readFileSync(rotated.keyFile));
    replaceByRename(certFile, readFileSync(rotated.chainFile));
    await eventually('new handshakes present the new certificate', async () => (await handshakeSerial(proxy.port, certs.ca)) === next);
    const reloaded = await waitForNewLog(proxy, from, 'certificate reloaded', (l) => l['msg'] === 'certificate reloaded');
    assert.match(String(reloaded['certificate']), /CN=rotated\.test/);

    const again = await agentGet(`${proxy.url}/v2/`, agent, auth);
    assert.deepEqual(again, { status: 200, reused: true, serial: original }, 'the keep-alive connection still works, with its certificate');
    const fresh = await request(`${proxy.url}/v2/`, { ca: certs.ca, auth: { user: 'alice', password: 'alice-pw' } });
    assert.equal(fresh.status, 200);
  });

  test('tls.minVersion still applies after a certificate reload', T, async () => {
    // The proxy has reloaded its certificate in the test above; TLS 1.2 must still be refused.
    await assert.rejects(handshakeSerial(proxy.port, certs.ca, { maxVersion: 'TLSv1.2' }), /protocol version|alert|wrong version|unsupported/i);
    assert.equal(await handshakeSerial(proxy.port, certs.ca, { minVersion: 'TLSv1.3' }), serialOf(rotated.leafFile));
  });

  test('a certificate that does not match the key is refused; the previous pair keeps serving', T, async () => {
    const serving = serialOf(rotated.leafFile);
    const stray = await signCert({ dir: certs.dir, caFile: certs.caFile, caKeyFile: certs.caKeyFile, name: 'stray', cn: 'stray.test' });
    const before = metric(await metricsText(proxy), 'portcullis_config_reloads_total', { kind: 'tls', result: 'error' });
    const from = proxy.logs().length;
    replaceByRename(certFile, readFileSync(stray.chainFile)); // the key stays the rotated one
    const refused = await waitForNewLog(proxy, from, 'certificate reload refused', (l) => /certificate reload refused/.test(String(l['msg'])));
    assert.equal(refused['level'], 50);
    assert.match(String(refused['err']), new RegExp(`${escape(keyFile)} does not match the certificate in ${escape(certFile)}`));
    assert.equal(await handshakeSerial(proxy.port, certs.ca), serving);
    const r = await request(`${proxy.url}/v2/`, { ca: certs.ca, auth: { user: 'alice', password: 'alice-pw' } });
    assert.equal(r.status, 200);
    assert.equal(metric(await metricsText(proxy), 'portcullis_config_reloads_total', { kind: 'tls', result: 'error' }), before + 1);
  });

  test('a truncated certificate is refused naming the file; the previous pair keeps serving', T, async () => {
    const serving = serialOf(rotated.leafFile);
    const pem = readFileSync(rotated.chainFile, 'utf8');
    const from = proxy.logs().length;
    writeFileSync(certFile, pem.slice(0, Math.floor(pem.length / 3))); // in place, as an interrupted copy leaves it
    const refused = await waitForNewLog(proxy, from, 'certificate reload refused', (l) => /certificate reload refused/.test(String(l['msg'])));
    assert.match(String(refused['err']), new RegExp(`^${escape(certFile)}: `));
    assert.equal(await handshakeSerial(proxy.port, certs.ca), serving);

    // Repairing the files is picked up again.
    const from2 = proxy.logs().length;
    copyFileSync(certs.certFile, certFile);
    copyFileSync(certs.keyFile, keyFile);
    await waitForNewLog(proxy, from2, 'certificate reloaded', (l) => l['msg'] === 'certificate reloaded');
    await eventually('the original certificate is served again', async () => (await handshakeSerial(proxy.port, certs.ca)) === serialOf(certs.leafFile));
  });

  test('a renewal seen half done (the new key, the old certificate) is taken once the certificate follows, with no refusal', T, async () => {
    const next = await signCert({ dir: certs.dir, caFile: certs.caFile, caKeyFile: certs.caKeyFile, name: 'halfway', cn: 'halfway.test' });
    const errors = metric(await metricsText(proxy), 'portcullis_config_reloads_total', { kind: 'tls', result: 'error' });
    const from = proxy.logs().length;
    replaceByRename(keyFile, readFileSync(next.keyFile));
    // The proxy reads the pair while only the key is new (as when a renewal's two renames straddle a reload).
    const early = await waitForNewLog(proxy, from, 'a reload that waits for the files to settle', (l) => /certificate files do not load yet/.test(String(l['msg'])));
    assert.match(String(early['err']), new RegExp(`${escape(keyFile)} does not match the certificate`));
    assert.equal(await handshakeSerial(proxy.port, certs.ca), serialOf(certs.leafFile), 'the previous pair serves meanwhile');
    replaceByRename(certFile, readFileSync(next.chainFile));
    await waitForNewLog(proxy, from, 'certificate reloaded', (l) => l['msg'] === 'certificate reloaded');
    assert.equal(await handshakeSerial(proxy.port, certs.ca), serialOf(next.leafFile));
    // The reload that succeeded cancelled the pending look: nothing can be refused later for this renewal.
    assert.equal(metric(await metricsText(proxy), 'portcullis_config_reloads_total', { kind: 'tls', result: 'error' }), errors);
    assert.deepEqual(proxy.logs().slice(from).filter((l) => /reload refused/.test(String(l['msg']))), []);
  });
});

// ------------------------------------------------------------------------------------ proxy.yaml on SIGHUP

describe('proxy.yaml reload on SIGHUP', () => {
  let proxy: RunningPortcullis;
  const blob = Buffer.alloc(2048, 'b');
  const digest = sha256(blob);

  before(async () => {
    proxy = await startPortcullis(baseConfig(), {
      files: { 'server.crt': certs.cert, 'server.key': certs.key, htpasswd: `${htpasswdLine('alice', 'alice-pw')}\n` },
    });
  });
  after(async () => {
    await proxy?.stop();
  });

  const challenge = async (): Promise<string> => {
    const r = await request(`${proxy.url}/v2/`, { ca: certs.ca });
    assert.equal(r.status, 401);
    return String(r.headers['www-authenticate']);
  };
  /** A POST with a 2 KiB body: 202 from the registry (an upload session opens), or 413 from the proxy. */
  const upload = async (): Promise<number> =>
    (
      await request(`${proxy.url}/v2/reload/app/blobs/uploads/?digest=${digest}`, {
        method: 'POST',
        ca: certs.ca,
        auth: { user: 'alice', password: 'alice-pw' },
        headers: { 'content-type': 'application/octet-stream' },
        body: blob,
      })
    ).status;

  test('a new realm and body limit apply after SIGHUP', T, async () => {
    assert.equal(await challenge(), 'Basic realm="Reload Realm"');
    assert.equal(await upload(), 202);
    const from = proxy.logs().length;
    writeFileSync(
      proxy.configFile,
      stringify(baseConfig({ auth: { htpasswd: 'htpasswd', realm: 'Reloaded Realm', maxFailures: 0 }, limits: { maxBodySize: '1K' } })),
    );
    proxy.proc.kill('SIGHUP');
    await waitForNewLog(proxy, from, 'config reloaded', (l) => l['msg'] === 'config reloaded');
    assert.equal(await challenge(), 'Basic realm="Reloaded Realm"');
    assert.equal(await upload(), 413);
    assert.equal(proxy.proc.exitCode, null, 'still running');
  });

  test('invalid YAML on SIGHUP is refused naming the file; the running config keeps serving', T, async () => {
    const metricsBefore = metric(await metricsText(proxy), 'portcullis_config_reloads_total', { kind: 'config', result: 'error' });
    const from = proxy.logs().length;
    writeFileSync(proxy.configFile, 'listen: "127.0.0.1:0"\nauth: { htpasswd: htpasswd, realm: "Broken\n  oops: [\n');
    proxy.proc.kill('SIGHUP');
    const refused = await waitForNewLog(proxy, from, 'config reload refused', (l) => /config reload refused/.test(String(l['msg'])));
    assert.equal(refused['level'], 50);
    assert.match(String(refused['err']), new RegExp(`${escape(proxy.configFile)}:\\d+: invalid YAML`));
    assert.equal(await challenge(), 'Basic realm="Reloaded Realm"');
    assert.equal(await upload(), 413);
    assert.equal(metric(await metricsText(proxy), 'portcullis_config_reloads_total', { kind: 'config', result: 'error' }), metricsBefore + 1);

    // A schema error (unknown key) is refused the same way, with its line.
    const from2 = proxy.logs().length;
    writeFileSync(proxy.configFile, stringify(baseConfig({ limits: { maxBodySize: 0, maxBodysize: '1G' } })));
    proxy.proc.kill('SIGHUP');
    const typo = await waitForNewLog(proxy, from2, 'config reload refused (typo)', (l) => /config reload refused/.test(String(l['msg'])));
    assert.match(String(typo['err']), new RegExp(`${escape(proxy.configFile)}:\\d+: limits\\.maxBodysize: unknown key`));
    assert.equal(await upload(), 413);
    assert.equal(proxy.proc.exitCode, null, 'still running');
  });

  test('after a SIGHUP that replaces the authenticator, each htpasswd change is one reload', T, async () => {
    // A new realm builds a new authenticator. The one it replaces must stop following the file: if it did
    // not, every change would be loaded, logged and counted twice.
    writeFileSync(proxy.configFile, stringify(baseConfig({ auth: { htpasswd: 'htpasswd', realm: 'Third Realm', maxFailures: 0 }, limits: { maxBodySize: '1K' } })));
    let from = proxy.logs().length;
    proxy.proc.kill('SIGHUP');
    await waitForNewLog(proxy, from, 'config reloaded', (l) => l['msg'] === 'config reloaded');
    assert.equal(await challenge(), 'Basic realm="Third Realm"');
    const okBefore = metric(await metricsText(proxy), 'portcullis_config_reloads_total', { kind: 'htpasswd', result: 'ok' });
    from = proxy.logs().length;
    const file = join(proxy.dir, 'htpasswd');
    const frank = async (): Promise<number> =>
      (await request(`${proxy.url}/v2/`, { ca: certs.ca, auth: { user: 'frank', password: 'frank-pw' } })).status;
    replaceByRename(file, `${htpasswdLine('alice', 'alice-pw')}\n${htpasswdLine('frank', 'frank-pw')}\n`);
    await eventually('frank gets 200', async () => (await frank()) === 200);
    // A second change: both watchers would see it at the same moment, so once it has applied, a second
    // reload of the first change would long be in.
    replaceByRename(file, `${htpasswdLine('alice', 'alice-pw')}\n`);
    await eventually('frank gets 401 again', async () => (await frank()) === 401);
    const reloads = await eventually('two "htpasswd reloaded" lines', async () => {
      const lines = proxy.logs().slice(from).filter((l) => l['msg'] === 'htpasswd reloaded');
      return lines.length >= 2 ? lines : null;
    });
    assert.equal(metric(await metricsText(proxy), 'portcullis_config_reloads_total', { kind: 'htpasswd', result: 'ok' }), okBefore + 2);
    assert.equal(reloads.length, 2, JSON.stringify(reloads));
  });
});
