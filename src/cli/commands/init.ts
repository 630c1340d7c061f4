/**
 * `portcullis init [DIR]`: from an empty folder to a registry that `docker compose up -d` starts. Writes
 * proxy.yaml, docker-compose.yml, .env (the registry's secret, the uid/gid to run as), a private CA and server
 * certificate (or, with --acme, a folder for Let's Encrypt's), and an htpasswd file with one user whose
 * random password is printed once.
 *
 * Nothing is ever overwritten. Every target is looked for before anything is generated, and a refusal names
 * what exists and writes nothing; each file is then created with O_EXCL (`wx`), so a file that appears in
 * between is not overwritten either, and what this run had written is removed again. Secrets are 0600 from
 * their first byte. The texts come from init-files.ts (pure); this module generates, writes and reports.
 */
import { randomBytes } from 'node:crypto';
import { chmod, lstat, mkdir, open, rm, rmdir, stat } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { z } from 'zod';
import { parseConfig } from '../../config/load.js';
import { DEFAULT_BCRYPT_COST, hashPassword, setHtpasswdUser, userNameProblem } from '../../auth/htpasswd.js';
import { PortcullisError, hasErrno } from '../../errors.js';
import { pathExists } from '../../files.js';
import { createCertificateAuthority, createServerCertificate, type ServerCertificate } from '../../tls/ca.js';
import { DEFAULT_IMAGE, INIT_PATHS, PROXY_PORT, ACME_PORT, initPlan, initTargets, type InitInput, type InitPlan } from '../init-files.js';
import type { CommandIO } from '../io.js';
import { runCommand } from '../run.js';
import { readPassword } from '../prompt.js';
import { isIpLiteral, registryHostPort, serverNames, shellQuote, trustSteps, type ServerNames } from '../trust-steps.js';

const USAGE = `Usage: portcullis init [DIR] --host NAME... [--ip ADDR]... [--user NAME] [--password-stdin]
                       [--acme EMAIL] [--image NAME]

Writes into DIR (default: the current folder; created if missing) what a private registry behind
Portcullis needs, then prints the one command that starts it and how clients trust it:

  proxy.yaml          the proxy's settings, commented
  docker-compose.yml  registry:2 and Portcullis; only the proxy's port, ${PROXY_PORT}, is published
  .env                REGISTRY_HTTP_SECRET (random) and the uid/gid the proxy runs as (yours)  0600
  certs/              a private CA and a server certificate, as certs init makes them    keys 0600
  auth/htpasswd       one user, with a random password printed once                            0600

Nothing is overwritten: if any of these files exists, init names it and writes nothing. DIR may hold
other files.

  --host NAME       a DNS name clients use to reach the registry (repeatable; an IP address works too)
  --ip ADDR         an IP address clients use (repeatable)
  --user NAME       the user to create (default admin)
  --password-stdin  take the password from the first line of stdin instead of making one (not printed)
  --acme EMAIL      a certificate from Let's Encrypt for the --host names instead of certs/: DNS names
                    only, port ${ACME_PORT} published, account and certificates kept in DIR/${INIT_PATHS.acme} (0700)
  --image NAME      the Portcullis image the compose file runs (default ${DEFAULT_IMAGE})

From the image, as yourself so that the files are yours:
  docker run --rm -u "$(id -u):$(id -g)" -v "$PWD:/work" IMAGE init /work --host registry.example.com
`;

/** bytes of randomness in a generated password: 24 base64url characters. */
const PASSWORD_BYTES = 18;

interface InitArgs {
  dir: string;
  names: ServerNames;
  user: string;
  passwordStdin: boolean;
  acme: { email: string } | null;
  image: string;
}

export async function initCommand(argv: string[], io: CommandIO): Promise<number> {
  if (argv.includes('--help') || argv.includes('-h')) {
    io.stdout.write(USAGE);
    return 0;
  }
  return runCommand({
    name: 'init',
    usage: USAGE,
    stderr: io.stderr,
    parse: () => parseInitArgs(argv),
    run: (args) => init(args, io),
    afterFileRefusal: (err) =>
      (hasErrno(err, 'EACCES', 'EPERM') ? ` (from the image, run it as the folder's owner: docker run -u "$(id -u):$(id -g)" ...)` : '') +
      '\nNothing was left behind.',
  });
}

function parseInitArgs(argv: string[]): InitArgs {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      allowPositionals: true,
      strict: true,
      options: {
        host: { type: 'string', multiple: true },
        ip: { type: 'string', multiple: true },
        user: { type: 'string' },
        'password-stdin': { type: 'boolean' },
        acme: { type: 'string' },
        image: { type: 'string' },
      },
    });
  } catch (err) {
    throw usage((err as Error).message);
  }
  const v = parsed.values;
  if (parsed.positionals.length > 1) throw usage(`one folder only, got ${parsed.positionals.map((p) => JSON.stringify(p)).join(' ')}`);
  const dir = parsed.positionals[0] ?? '.';
  if (dir === '') throw usage('DIR must not be empty');

  const hosts = v.host ?? [];
  const ips = v.ip ?? [];
  let acme: InitArgs['acme'] = null;
  if (v.acme !== undefined) {
    if (!z.email().safeParse(v.acme).success) throw usage(`--acme takes the account's email address, got "${v.acme}"`);
    if (ips.length > 0) {
      throw usage('--ip cannot be combined with --acme: Let\'s Encrypt issues certificates for DNS names only. Without --acme, init makes a private CA whose certificate covers IP addresses.');
    }
    if (hosts.length === 0) throw usage('--acme needs the DNS names of the certificate: --host registry.example.com');
    for (const h of hosts) {
      if (isIpLiteral(h)) throw usage(`--host ${h}: Let's Encrypt issues certificates for DNS names only, not IP addresses`);
      if (h.trim().startsWith('*.')) throw usage(`--host ${h}: a wildcard needs the dns-01 challenge, which the proxy does not offer`);
    }
    acme = { email: v.acme };
  } else if (hosts.length === 0 && ips.length === 0) {
    throw usage('give the names clients will use to reach the registry: --host registry.example.com (and/or --ip 10.0.0.5)');
  }
  const names = serverNames(hosts, ips);

  const user = v.user ?? 'admin';
  const problem = userNameProblem(user);
  if (problem) throw usage(`invalid --user: ${problem}`);
  const image = v.image ?? DEFAULT_IMAGE;
  // A reference as docker spells one; nothing that could break out of the YAML scalar it is written into.
  if (!/^[A-Za-z0-9][A-Za-z0-9._/:@-]*$/.test(image)) throw usage(`--image "${image}" is not an image reference`);
  return { dir, names, user, passwordStdin: v['password-stdin'] === true, acme, image };
}

async function init(args: InitArgs, io: CommandIO): Promise<number> {
  const kind = args.acme ? 'acme' : 'files';
  // Refuse before generating or writing anything, naming every file in the way.
  if ((await pathExists(args.dir, 'count')) && !(await isFolder(args.dir))) {
    throw new PortcullisError('PCL_ERR_EXISTS', `${args.dir} exists and is not a folder: nothing was written.`);
  }
  const existing: string[] = [];
  for (const target of initTargets(kind)) if (await pathExists(join(args.dir, target), 'count')) existing.push(target);
  if (existing.length > 0) {
    throw new PortcullisError(
      'PCL_ERR_EXISTS',
      `${args.dir} already has ${existing.join(', ')}: nothing was written. init never overwrites a file; ` +
        `move ${existing.length === 1 ? 'it' : 'them'} away or pick another folder.`,
    );
  }

  const password = args.passwordStdin ? await readPassword(io, { confirm: false, fromStdin: true }) : randomBytes(PASSWORD_BYTES).toString('base64url');
  if (password === '') throw new PortcullisError('PCL_ERR_HTPASSWD', 'empty password refused');
  const htpasswd = setHtpasswdUser('', args.user, await hashPassword(password, DEFAULT_BCRYPT_COST)).text;
  const uid = process.getuid?.() ?? 1000;
  const gid = process.getgid?.() ?? 1000;
  const common = { image: args.image, secret: randomBytes(32).toString('hex'), uid, gid, htpasswd };

  let input: InitInput;
  let server: ServerCertificate | null = null;
  if (args.acme) {
    input = { ...common, tls: { kind: 'acme', email: args.acme.email, domains: args.names.hosts } };
  } else {
    const primary = args.names.hosts[0] ?? args.names.ips[0] ?? 'registry';
    const ca = await createCertificateAuthority({ commonName: `Portcullis CA ${primary.slice(0, 32)} ${randomBytes(3).toString('hex')}` });
    server = await createServerCertificate(ca, { hosts: args.names.hosts, ips: args.names.ips });
    for (const w of server.warnings) io.stderr.write(`portcullis init: warning: ${w}\n`);
    input = { ...common, tls: { kind: 'files', caCert: ca.cert, caKey: ca.key, serverChain: server.chain, serverKey: server.key } };
  }
  const plan = initPlan(input);
  // The proxy must accept what it is given: a renderer bug is found here, not at the first start.
  parseConfig(plan.files.find((f) => f.path === INIT_PATHS.proxy)!.text, resolve(args.dir, INIT_PATHS.proxy));

  await writePlan(args.dir, plan);
  if (uid === 0) {
    io.stderr.write(
      'portcullis init: warning: written as root, so .env runs the proxy as root (uid 0). Run init as the user ' +
        'who will run the registry, or set PORTCULLIS_UID/GID in .env and chown the files to them.\n',
    );
  }
  io.stdout.write(report(args, { password: args.passwordStdin ? null : password, uid, gid, server }));
  return 0;
}

/** Create the folders and files of `plan` under `dir`; on any failure remove what this call created. */
async function writePlan(dir: string, plan: InitPlan): Promise<void> {
  const createdFiles: string[] = [];
  const createdDirs: string[] = [];
  try {
    const first = await mkdir(dir, { recursive: true });
    if (first !== undefined) createdDirs.push(first);
    for (const d of plan.dirs) {
      const path = join(dir, d.path);
      try {
        await mkdir(path, { mode: d.mode });
        createdDirs.push(path);
        await chmod(path, d.mode); // the umask may have narrowed it
      } catch (err) {
        // certs/ and auth/ may be there already (initTargets let them be); a folder that may not was refused above.
        if (!d.mayExist || !hasErrno(err, 'EEXIST') || !(await lstat(path)).isDirectory()) throw err;
      }
    }
    for (const f of plan.files) {
      const path = join(dir, f.path);
      const handle = await open(path, 'wx', f.mode); // O_EXCL: never through a file that exists, even a new one
      createdFiles.push(path);
      try {
        await handle.writeFile(f.text, 'utf8');
        await handle.chmod(f.mode);
        await handle.sync();
      } finally {
        await handle.close();
      }
    }
  } catch (err) {
    for (const f of createdFiles.reverse()) await rm(f, { force: true });
    for (const d of createdDirs.reverse()) await rmdir(d).catch(() => undefined);
    throw err;
  }
}

function report(
  args: InitArgs,
  r: { password: string | null; uid: number; gid: number; server: ServerCertificate | null },
): string {
  const names = [...args.names.hosts, ...args.names.ips];
  const port = args.acme ? ACME_PORT : PROXY_PORT;
  const target = registryHostPort(names[0]!, port);
  const lines: string[] = [`Wrote into ${args.dir}:`];
  const row = (path: string, what: string): void => {
    lines.push(`  ${path.padEnd(20)}${what}`);
  };
  row(INIT_PATHS.proxy, "the proxy's settings, commented");
  row(INIT_PATHS.compose, `registry:2 and Portcullis (${args.image}); publishes ${port} only`);
  row(INIT_PATHS.env, `REGISTRY_HTTP_SECRET, and the uid:gid ${r.uid}:${r.gid} the proxy runs as (0600)`);
  if (r.server) {
    row(INIT_PATHS.caCert, 'a private CA: what clients trust');
    row(INIT_PATHS.caKey, 'its key (0600): keep it private; the proxy never reads it');
    row(INIT_PATHS.serverCert, `the proxy's certificate for ${names.join(', ')}, valid until ${r.server.notAfter.toISOString().slice(0, 10)}`);
    row(INIT_PATHS.serverKey, 'its key (0600)');
  } else {
    row(`${INIT_PATHS.acme}/`, `where the proxy keeps its Let's Encrypt account and certificate for ${names.join(', ')} (0700)`);
  }
  row(INIT_PATHS.htpasswd, `user ${JSON.stringify(args.user)}, bcrypt (0600)`);
  lines.push('');
  if (r.password !== null) {
    lines.push(`Password of ${JSON.stringify(args.user)} (shown this once; only its bcrypt hash is stored):`, `  ${r.password}`, '');
  }
  if (args.acme) {
    lines.push(
      `Before the first start: ${names.join(', ')} must resolve to this host, and port ${ACME_PORT} must be reachable`,
      'from the internet (Let\'s Encrypt validates there). proxy.yaml names the staging directory to try first.',
      '',
    );
  }
  if (args.image === DEFAULT_IMAGE) {
    lines.push(`The compose file runs the image ${DEFAULT_IMAGE}: on a host without it, build it from the Portcullis`, 'sources with `docker build -t portcullis:local .` (or pass --image to init).', '');
  }
  lines.push(`Start it${args.dir === '.' ? '' : `, in ${args.dir}`}:`, '  docker compose up -d', '');
  if (args.acme) {
    lines.push('Clients need no trust step: the certificate comes from a public CA.', '', `Then log in:  docker login ${target} -u ${shellQuote(args.user)}`);
  } else {
    lines.push(`Paths below are relative to ${args.dir === '.' ? 'this folder' : args.dir}.`, '', trustSteps({ caPath: INIT_PATHS.caCert, names: args.names, port, user: args.user }));
  }
  return lines.join('\n').replace(/\n*$/, '\n');
}

/** A folder, or a symlink to one. */
async function isFolder(path: string): Promise<boolean> {
  try {
    return (await stat(path)).isDirectory();
  } catch (err) {
    if (hasErrno(err, 'ENOENT', 'ELOOP')) return false;
    throw err;
  }
}

function usage(message: string): PortcullisError {
  return new PortcullisError('PCL_ERR_USAGE', message);
}
