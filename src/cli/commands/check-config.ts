/**
 * `portcullis check-config FILE`: validate a config and everything it points at (certificate and key,
 * htpasswd file), then print the effective config (defaults and PORTCULLIS_ overrides applied, secrets
 * redacted). Exit 0 when the proxy would start with it, 1 otherwise. Weak htpasswd hashes are warned about
 * on stderr, as the proxy logs them, without failing.
 */
import { readFileSync } from 'node:fs';
import { stringify } from 'yaml';
import { effectiveConfig } from '../../config/effective.js';
import { loadConfig } from '../../config/load.js';
import { loadHtpasswdFile } from '../../auth/htpasswd-file.js';
import { weakHashes } from '../../auth/htpasswd.js';
import { loadTlsMaterial } from '../../tls/material.js';
import type { CommandIO } from '../io.js';

export async function checkConfigCommand(argv: string[], io: CommandIO): Promise<number> {
  const file = argv.find((a) => !a.startsWith('-')) ?? 'proxy.yaml';
  try {
    const config = loadConfig(file);
    if (config.tls) loadTlsMaterial(config.tls.cert, config.tls.key, config.tls.clientCA);
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
