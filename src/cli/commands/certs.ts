/**
 * `portcullis certs init`: a private CA and a server certificate for the proxy, plus the exact steps that
 * make docker, podman, containerd and the system trust it.
 *
 * The CA is created once and then reused: re-issuing the server certificate (new names, expiry) must not
 * make every client trust a new CA. Writes are atomic (temporary file in the same folder, then rename), keys
 * are created with mode 0600, and nothing is written until every certificate has been generated.
 */
import { randomBytes, X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { mkdir, readFile } from 'node:fs/promises';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import {
  MAX_SERVER_DAYS,
  createCertificateAuthority,
  createServerCertificate,
  normalizeDnsName,
  type CertificateAuthority,
} from '../../tls/ca.js';
import { PortcullisError } from '../../errors.js';
import { pathExists, writeFileAtomic } from '../../files.js';
import { runCommand } from '../run.js';
import { serverNames, trustSteps, type ServerNames } from '../trust-steps.js';

export const DEFAULT_PORT = 5043;

const USAGE = `Usage: portcullis certs init [--dir certs] [--host NAME]... [--ip ADDR]... [--port N] [--days N] [--force]

Creates DIR/ca.crt and DIR/ca.key (a private CA, reused if present) and DIR/server.crt (server certificate
followed by the CA) with DIR/server.key, then prints how to make clients trust the CA.

  --dir DIR     where to write (default: certs)
  --host NAME   DNS name clients use to reach the proxy (repeatable)
  --ip ADDR     IP address clients use to reach the proxy (repeatable)
                without --host and --ip: localhost, this machine's hostname, 127.0.0.1 and ::1
  --port N      the proxy's port, for the printed client steps (default ${DEFAULT_PORT})
  --days N      server certificate validity, 1 to ${MAX_SERVER_DAYS} days (default ${MAX_SERVER_DAYS})
  --force       replace an existing server certificate (the CA is always kept; delete ca.crt and ca.key
                to start a new CA, which every client must then trust again)
`;

interface InitArgs {
  dir: string;
  hosts: string[];
  ips: string[];
  port: number;
  days: number;
  force: boolean;
  /** Notes about defaults that had to be skipped. */
  notes: string[];
}

type IO = { stdout: NodeJS.WritableStream; stderr: NodeJS.WritableStream };

export async function certsCommand(argv: string[], io: IO): Promise<number> {
  const [action, ...rest] = argv;
  if (action === '--help' || action === '-h' || action === 'help' || rest.includes('--help') || rest.includes('-h')) {
    io.stdout.write(USAGE);
    return 0;
  }
  return runCommand({
    name: 'certs',
    usage: USAGE,
    stderr: io.stderr,
    parse: () => {
      if (action !== 'init') {
        throw new PortcullisError('PCL_ERR_USAGE', action === undefined ? 'missing action' : `unknown action "${action}"`);
      }
      return parseInitArgs(rest);
    },
    run: (args) => init(args, io),
  });
}

function parseInitArgs(argv: string[]): InitArgs {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      allowPositionals: false,
      strict: true,
      options: {
        dir: { type: 'string' },
        host: { type: 'string', multiple: true },
        ip: { type: 'string', multiple: true },
        port: { type: 'string' },
        days: { type: 'string' },
        force: { type: 'boolean' },
      },
    });
  } catch (err) {
    throw new PortcullisError('PCL_ERR_USAGE', (err as Error).message);
  }
  const v = parsed.values;
  const port = wholeNumber(v.port, DEFAULT_PORT, '--port');
  if (port < 1 || port > 65_535) throw new PortcullisError('PCL_ERR_USAGE', `--port must be from 1 to 65535, got ${port}`);
  const days = wholeNumber(v.days, MAX_SERVER_DAYS, '--days');
  if (days < 1 || days > MAX_SERVER_DAYS) {
    throw new PortcullisError('PCL_ERR_USAGE', `--days must be from 1 to ${MAX_SERVER_DAYS}, got ${days}`);
  }
  const dir = v.dir ?? 'certs';
  if (dir.length === 0) throw new PortcullisError('PCL_ERR_USAGE', '--dir must not be empty');

  const notes: string[] = [];
  const givenHosts = v.host ?? [];
  const givenIps = v.ip ?? [];
  let names: ServerNames;
  if (givenHosts.length === 0 && givenIps.length === 0) {
    const hosts = ['localhost'];
    const own = hostname();
    try {
      hosts.push(normalizeDnsName(own));
    } catch {
      notes.push(`this machine's hostname "${own}" is not a valid DNS name and was left out; add names with --host`);
    }
    names = serverNames(hosts, ['127.0.0.1', '::1']);
  } else {
    names = serverNames(givenHosts, givenIps);
  }
  return { dir, hosts: names.hosts, ips: names.ips, port, days, force: v.force === true, notes };
}

function wholeNumber(raw: string | undefined, dflt: number, flag: string): number {
  if (raw === undefined) return dflt;
  if (!/^\d+$/.test(raw)) throw new PortcullisError('PCL_ERR_USAGE', `${flag} must be a whole number, got "${raw}"`);
  return Number(raw);
}

async function init(args: InitArgs, io: IO): Promise<number> {
  const paths = {
    caCert: join(args.dir, 'ca.crt'),
    caKey: join(args.dir, 'ca.key'),
    cert: join(args.dir, 'server.crt'),
    key: join(args.dir, 'server.key'),
  };
  for (const note of args.notes) io.stderr.write(`portcullis certs: note: ${note}\n`);

  const existing = { cert: await pathExists(paths.cert, 'follow'), key: await pathExists(paths.key, 'follow') };
  if ((existing.cert || existing.key) && !args.force) {
    const which = existing.cert ? paths.cert : paths.key;
    io.stderr.write(
      `portcullis certs: ${which} already exists${describeExisting(paths.cert)}.\n` +
        `Nothing was written. Run again with --force to replace the server certificate and key; ` +
        `the CA (${paths.caCert}) is kept either way, so clients need not trust anything new.\n`,
    );
    return 1;
  }

  const caFiles = { cert: await pathExists(paths.caCert, 'follow'), key: await pathExists(paths.caKey, 'follow') };
  if (caFiles.cert !== caFiles.key) {
    const [have, missing] = caFiles.cert ? [paths.caCert, paths.caKey] : [paths.caKey, paths.caCert];
    throw new PortcullisError(
      'PCL_ERR_TLS',
      `${have} exists but ${missing} does not. Put ${missing} back to reuse this CA, ` +
        `or remove ${have} to create a new CA (clients that trusted the old one must then trust the new one).`,
    );
  }

  let ca: CertificateAuthority;
  const reuseCa = caFiles.cert;
  if (reuseCa) {
    ca = { cert: await readFile(paths.caCert, 'utf8'), key: await readFile(paths.caKey, 'utf8') };
  } else {
    const suffix = randomBytes(3).toString('hex');
    ca = await createCertificateAuthority({ commonName: `Portcullis CA ${hostname().slice(0, 32)} ${suffix}`.trim() });
  }
  let server;
  try {
    server = await createServerCertificate(ca, { hosts: args.hosts, ips: args.ips, days: args.days });
  } catch (err) {
    if (reuseCa && err instanceof PortcullisError && err.code === 'PCL_ERR_TLS') {
      throw new PortcullisError('PCL_ERR_TLS', `cannot reuse the CA in ${args.dir}: ${err.message}`, { cause: err });
    }
    throw err;
  }
  for (const w of server.warnings) io.stderr.write(`portcullis certs: warning: ${w}\n`);

  await mkdir(args.dir, { recursive: true });
  if (!reuseCa) {
    await writeFileAtomic(paths.caKey, ca.key, 0o600);
    await writeFileAtomic(paths.caCert, ca.cert, 0o644);
  }
  // Key before certificate: a proxy that reloads when server.crt changes then finds the matching key.
  await writeFileAtomic(paths.key, server.key, 0o600);
  await writeFileAtomic(paths.cert, server.chain, 0o644);

  const caX509 = new X509Certificate(ca.cert);
  io.stdout.write(instructions(args, paths, { reuseCa, caSubject: caX509.subject, caValidTo: caX509.validTo, notAfter: server.notAfter }));
  return 0;
}

function instructions(
  args: InitArgs,
  paths: { caCert: string; caKey: string; cert: string; key: string },
  info: { reuseCa: boolean; caSubject: string; caValidTo: string; notAfter: Date },
): string {
  const names = [...args.hosts, ...args.ips];
  return `${info.reuseCa ? 'Reused' : 'Created'} the CA ${paths.caCert} (${info.caSubject.replace(/\n/g, ', ')}; valid until ${new Date(info.caValidTo).toISOString()})
  and its key ${paths.caKey}: keep it private; anything it signs is trusted by every client below.
Wrote ${paths.cert} (server certificate, then the CA; valid until ${info.notAfter.toISOString()})
  and ${paths.key}, for: ${names.join(', ')}

Proxy config (proxy.yaml):
  tls: { cert: ${paths.cert}, key: ${paths.key} }

${trustSteps({ caPath: paths.caCert, names: { hosts: args.hosts, ips: args.ips }, port: args.port })}`;
}

function describeExisting(certPath: string): string {
  try {
    // Best effort: the refusal message is still useful without these details.
    const text = readFileSync(certPath, 'utf8');
    const c = new X509Certificate(text);
    return ` (for ${c.subjectAltName ?? c.subject}; valid until ${new Date(c.validTo).toISOString()})`;
  } catch {
    return '';
  }
}
