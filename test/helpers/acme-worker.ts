/**
 * A cluster worker for the ACME workers test, wired like runtime/instance.ts with `workers: N` and tls.acme: a
 * placeholder until storage has a certificate, the storage files followed with the product's FileWatcher,
 * and tls-alpn-01 answered from what the primary publishes. Env: PORT, STORAGE, DOMAIN.
 * Logs JSON lines on stdout: `answered` (validations), `reloaded` (with the serial now served).
 */
import cluster from 'node:cluster';
import { X509Certificate } from 'node:crypto';
import { existsSync } from 'node:fs';
import https from 'node:https';
import { FileWatcher } from '../../src/runtime/watch.ts';
import { attachAcmeInWorker, placeholderMaterial, validationLog } from '../../src/tls/acme/attach.ts';
import { TlsAlpnChallenges } from '../../src/tls/acme/challenges.ts';
import { storageLayout } from '../../src/tls/acme/layout.ts';
import { routeTlsAlpnChallenges } from '../../src/tls/acme/tls-alpn.ts';
import { loadTlsMaterial } from '../../src/tls/material.ts';

const port = Number(process.env['PORT']);
const files = storageLayout(process.env['STORAGE'] ?? '');
const domain = process.env['DOMAIN'] ?? '';
const id = cluster.worker?.id ?? 0;
const say = (msg: string, extra: object = {}): void => void process.stdout.write(JSON.stringify({ worker: id, msg, ...extra }) + '\n');
const logger = {
  info: (obj: object, msg: string) => say(msg, obj),
  warn: (obj: object, msg: string) => say(msg, obj),
  error: (obj: object, msg: string) => say(msg, obj),
  debug: () => {},
};

const initial = existsSync(files.cert) ? loadTlsMaterial(files.cert, files.key) : await placeholderMaterial([domain]);
const server = https.createServer({ cert: initial.cert, key: initial.key, ALPNProtocols: ['http/1.1'] }, (_req, res) => res.end(`worker ${id}\n`));
const alpn = new TlsAlpnChallenges();
routeTlsAlpnChallenges(server, alpn, { onValidation: validationLog(logger) });
attachAcmeInWorker(alpn, process);
const watcher = new FileWatcher(
  [files.cert, files.key],
  () => {
    try {
      const m = loadTlsMaterial(files.cert, files.key);
      server.setSecureContext({ cert: m.cert, key: m.key, minVersion: 'TLSv1.2' });
      say('reloaded', { serial: new X509Certificate(m.cert).serialNumber });
    } catch (err) {
      say('reload refused', { err: (err as Error).message });
    }
  },
  { debounceMs: 100, intervalMs: 250 },
);
server.listen(port, '127.0.0.1');
process.on('SIGTERM', () => {
  watcher.close();
  server.close(() => process.exit(0));
  server.closeAllConnections();
});
