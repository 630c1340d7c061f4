/**
 * What every target shares: the tools, one TLS certificate, one set of credentials.
 */
import { randomBytes } from 'node:crypto';
import { lookup } from 'node:dns/promises';
import { chmodSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { run, runOk } from './proc.js';

/** Command -> Debian package that provides it. */
const TOOLS: Record<string, string> = {
  wrk: 'wrk',
  nginx: 'nginx',
  caddy: 'caddy',
  'docker-registry': 'docker-registry',
  skopeo: 'skopeo',
  htpasswd: 'apache2-utils',
  curl: 'curl',
  openssl: 'openssl',
};

/** Services some of these packages start on install; the benchmark runs its own copies on free ports. */
const SERVICES = ['nginx', 'caddy', 'docker-registry'];

async function has(cmd: string): Promise<boolean> {
  const r = await run('sh', ['-c', `command -v ${cmd}`], { timeoutMs: 10_000 });
  return r.code === 0;
}

/** Install missing tools with apt-get (as root), like the CI script does. */
export async function ensureTools(log: (line: string) => void): Promise<void> {
  const missing: string[] = [];
  for (const [cmd, pkg] of Object.entries(TOOLS)) if (!(await has(cmd))) missing.push(pkg);
  if (missing.length === 0) return;
  if (process.getuid?.() !== 0) {
    throw new Error(`missing tools: ${missing.join(', ')}. Install them (apt-get install ${missing.join(' ')}) or run as root.`);
  }
  log(`installing ${missing.join(', ')} with apt-get`);
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  await runOk('apt-get', ['update', '-qq'], { timeoutMs: 300_000, env });
  await runOk('apt-get', ['install', '-y', '-qq', '--no-install-recommends', ...missing], { timeoutMs: 600_000, env });
  for (const s of SERVICES) {
    if (missing.includes(s)) await run('systemctl', ['stop', s], { timeoutMs: 30_000 }).catch(() => undefined);
  }
}

/** Clients reach the TLS targets as https://localhost:PORT (Caddy's site address); it must mean 127.0.0.1. */
export async function checkLocalhost(): Promise<void> {
  const addrs = await lookup('localhost', { all: true });
  if (!addrs.some((a) => a.address === '127.0.0.1')) {
    throw new Error(`"localhost" does not resolve to 127.0.0.1 here (${addrs.map((a) => a.address).join(', ')}); the benchmark needs it`);
  }
}

export interface Certs {
  /** CA certificate, for curl --cacert. */
  caFile: string;
  /** A folder holding only ca.crt, for skopeo --*-cert-dir. */
  caDir: string;
  /** Server certificate + CA (full chain). */
  certFile: string;
  keyFile: string;
}

/** A throwaway CA and an EC P-256 server certificate for localhost and 127.0.0.1. */
export async function makeCerts(dir: string): Promise<Certs> {
  mkdirSync(dir, { recursive: true });
  chmodSync(dir, 0o755);
  const caFile = join(dir, 'ca.crt');
  const caKey = join(dir, 'ca.key');
  const keyFile = join(dir, 'server.key');
  const csr = join(dir, 'server.csr');
  const leaf = join(dir, 'server-leaf.crt');
  const certFile = join(dir, 'server.crt');
  const ext = join(dir, 'server.ext');
  const o = { timeoutMs: 30_000 };
  await runOk('openssl', [
    'req', '-x509', '-new', '-nodes', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1',
    '-keyout', caKey, '-out', caFile, '-days', '2', '-subj', '/CN=Portcullis bench CA',
    '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign',
  ], o);
  writeFileSync(ext, 'subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=critical,CA:FALSE\nextendedKeyUsage=serverAuth\n');
  await runOk('openssl', [
    'req', '-new', '-nodes', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1',
    '-keyout', keyFile, '-out', csr, '-subj', '/CN=localhost',
  ], o);
  await runOk('openssl', [
    'x509', '-req', '-in', csr, '-CA', caFile, '-CAkey', caKey, '-CAcreateserial', '-out', leaf, '-days', '2', '-extfile', ext,
  ], o);
  writeFileSync(certFile, readFileSync(leaf, 'utf8') + readFileSync(caFile, 'utf8'));
  // nginx reads the key as root, but keep everything readable for its workers anyway.
  for (const f of [caFile, keyFile, certFile]) chmodSync(f, 0o644);
  const caDir = join(dir, 'ca-dir');
  mkdirSync(caDir);
  chmodSync(caDir, 0o755);
  writeFileSync(join(caDir, 'ca.crt'), readFileSync(caFile));
  return { caFile, caDir, certFile, keyFile };
}

export interface Credentials {
  user: string;
  password: string;
  /** bcrypt cost of the hash every target checks. */
  cost: number;
  /** The bcrypt hash ($2y$...), as in the htpasswd file. */
  hash: string;
  /** An htpasswd file with the one line, readable by nginx's workers. */
  htpasswdFile: string;
  /** "Basic base64(user:password)". */
  authorization: string;
}

/** One user, a random password, one bcrypt hash of the given cost (made by Apache's htpasswd -B). */
export async function makeCredentials(dir: string, cost: number, password = randomBytes(12).toString('hex')): Promise<Credentials> {
  mkdirSync(dir, { recursive: true });
  chmodSync(dir, 0o755);
  const user = 'alice';
  const r = await runOk('htpasswd', ['-niB', '-C', String(cost), user], { timeoutMs: 60_000, input: `${password}\n` });
  const line = r.stdout.split('\n').find((l) => l.startsWith(`${user}:`));
  if (line === undefined) throw new Error(`htpasswd printed no line for ${user}: ${r.stdout}`);
  const hash = line.slice(user.length + 1).trim();
  const htpasswdFile = join(dir, `htpasswd-cost${cost}`);
  writeFileSync(htpasswdFile, `${user}:${hash}\n`, { mode: 0o644 });
  chmodSync(htpasswdFile, 0o644);
  return {
    user,
    password,
    cost,
    hash,
    htpasswdFile,
    authorization: `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}`,
  };
}
