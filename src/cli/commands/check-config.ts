/**
 * `portcullis check-config FILE`: validate a config and everything it points at (certificate and key, or
 * with tls.acme the CA file and the storage folder; the client CA; the htpasswd file), then print the
 * effective config (defaults and PORTCULLIS_ overrides applied, secrets redacted). Exit 0 when the proxy
 * would start with it, 1 otherwise. Weak htpasswd hashes are warned about on stderr, as the proxy logs
 * them, without failing. Nothing is sent to an ACME CA.
 */
import { accessSync, constants, existsSync, readFileSync, statSync } from 'node:fs';
import { dirname } from 'node:path';
import { stringify } from 'yaml';
import { effectiveConfig } from '../../config/effective.js';
import { loadConfig } from '../../config/load.js';
import { loadHtpasswdFile } from '../../auth/htpasswd-file.js';
import { weakHashes } from '../../auth/htpasswd.js';
import type { AcmeConfig } from '../../config/schema.js';
import { AcmeError } from '../../errors.js';
import { loadCaCertificates, loadTlsMaterial } from '../../tls/material.js';
import type { CommandIO } from '../io.js';

export async function checkConfigCommand(argv: string[], io: CommandIO): Promise<number> {
  const file = argv.find((a) => !a.startsWith('-')) ?? 'proxy.yaml';
  try {
    const config = loadConfig(file);
    if (config.tls?.acme) {
      checkAcme(config.tls.acme);
      if (config.tls.clientCA) loadCaCertificates(config.tls.clientCA, 'tls.clientCA');
    } else if (config.tls) loadTlsMaterial(config.tls.cert, config.tls.key, config.tls.clientCA);
    const htpasswd = (await loadHtpasswdFile(config.auth.htpasswd)).users;
    const users = htpasswd.size;
    if (config.upstream.ca) readFileSync(config.upstream.ca);
    io.stdout.write(`# ${file}: OK (${users} user${users === 1 ? '' : 's'} in ${config.auth.htpasswd})\n`);
    const weak = weakHashes(htpasswd);
    if (weak) io.stderr.write(`portcullis: warning: ${config.auth.htpasswd}: ${weak.message}\n`);
    io.stdout.write(stringify(effectiveConfig(config)));
    return 0;
  } catch (err) {
    io.stderr.write(`portcullis: ${(err as Error).message}\n`);
    return 1;
  }
}

/** tls.acme: the CA file is PEM, and storage is writable (or can be created: its nearest existing parent is). */
function checkAcme(acme: AcmeConfig): void {
  if (acme.ca) loadCaCertificates(acme.ca, 'tls.acme.ca');
  let dir = acme.storage;
  while (!existsSync(dir) && dirname(dir) !== dir) dir = dirname(dir);
  if (!statSync(dir).isDirectory()) throw new AcmeError(`${acme.storage}: tls.acme.storage cannot be created: ${dir} is not a folder`);
  try {
    accessSync(dir, constants.W_OK | constants.X_OK);
  } catch {
    throw new AcmeError(`${acme.storage}: tls.acme.storage is not writable by this user (checked ${dir})`);
  }
}
