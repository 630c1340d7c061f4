/**
 * `portcullis htpasswd add|remove|list|verify`: manage the proxy's htpasswd file without apache2-utils.
 *
 * Files stay compatible both ways: we write `$2y$` bcrypt lines as `htpasswd -B` does, and keep every line we
 * do not touch as it was. The password never comes from argv (it would sit in shell history and in `ps`):
 * a no-echo prompt on a terminal, else the first line of stdin. Writes are atomic (temporary file in the
 * same folder, then rename), so the running proxy never reads half a file.
 */
import { readFile } from 'node:fs/promises';
import { PortcullisError } from '../../errors.js';
import {
  BCRYPT_MAX_COST,
  BCRYPT_MIN_COST,
  DEFAULT_BCRYPT_COST,
  describeLine,
  hashPassword,
  lineUser,
  parseHtpasswd,
  removeHtpasswdUser,
  scanHtpasswd,
  setHtpasswdUser,
  userNameProblem,
  verifyPassword,
} from '../../auth/htpasswd.js';
import { readIfExists, writeFileAtomic } from '../../files.js';
import type { CommandIO } from '../io.js';
import { runCommand } from '../run.js';
import { readPassword } from '../prompt.js';

const USAGE = `Usage: portcullis htpasswd <action> FILE [USER] [options]

  add FILE USER [--cost N] [--password-stdin]   set USER's password (creates FILE, mode 0600)
  remove FILE USER                              delete USER
  list FILE                                     print the users; exit 1 if the proxy would refuse FILE
  verify FILE USER [--password-stdin]           check a password: exit 0 if correct, 1 if not

The password is prompted for (without echo) when stdin is a terminal, else read from the first line of
stdin. It is never taken from the command line.
  --cost N   bcrypt cost from 4 to 17 (default ${DEFAULT_BCRYPT_COST}); each step doubles the work
`;


type Action = 'add' | 'remove' | 'list' | 'verify';

interface Args {
  action: Action;
  file: string;
  user: string | null;
  cost: number;
  passwordStdin: boolean;
}

export async function htpasswdCommand(argv: string[], io: CommandIO): Promise<number> {
  if (argv.includes('--help') || argv.includes('-h') || argv[0] === 'help') {
    io.stdout.write(USAGE);
    return 0;
  }
  return runCommand({
    name: 'htpasswd',
    usage: USAGE,
    stderr: io.stderr,
    parse: () => parseArgs(argv),
    run: (args) => {
      switch (args.action) {
        case 'add':
          return add(args, io);
        case 'remove':
          return remove(args, io);
        case 'list':
          return list(args, io);
        case 'verify':
          return verify(args, io);
      }
    },
    moreFileRefusals: ['ENOENT'],
  });
}

function parseArgs(argv: string[]): Args {
  const positional: string[] = [];
  let cost: number | null = null;
  let passwordStdin = false;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--password-stdin') {
      passwordStdin = true;
    } else if (a === '--cost' || a.startsWith('--cost=')) {
      const v = a === '--cost' ? argv[++i] : a.slice('--cost='.length);
      if (v === undefined || !/^\d+$/.test(v) || Number(v) < BCRYPT_MIN_COST || Number(v) > BCRYPT_MAX_COST) {
        throw usageError(`--cost must be a whole number from ${BCRYPT_MIN_COST} to ${BCRYPT_MAX_COST}`);
      }
      cost = Number(v);
    } else if (a === '--') {
      positional.push(...argv.slice(i + 1));
      break;
    } else if (a.startsWith('-') && a !== '-') {
      throw usageError(`unknown option ${a}`);
    } else {
      positional.push(a);
    }
  }
  const [action, file, user, ...extra] = positional;
  if (action === undefined) throw usageError('missing action');
  if (action !== 'add' && action !== 'remove' && action !== 'list' && action !== 'verify') {
    throw usageError(`unknown action "${action}"`);
  }
  if (file === undefined || file === '') throw usageError('missing FILE');
  const wantsUser = action !== 'list';
  if (wantsUser && user === undefined) throw usageError('missing USER');
  if (!wantsUser && user !== undefined) throw usageError(`unexpected argument "${user}"`);
  if (extra.length > 0) {
    throw usageError(
      action === 'add' || action === 'verify'
        ? 'too many arguments (the password is never taken from the command line: it is prompted for or read from stdin)'
        : `unexpected argument "${extra[0]}"`,
    );
  }
  if (cost !== null && action !== 'add') throw usageError('--cost applies to add only');
  if (passwordStdin && action !== 'add' && action !== 'verify') throw usageError(`--password-stdin does not apply to ${action}`);
  if (user !== undefined) {
    const problem = userNameProblem(user);
    if (problem) throw usageError(`invalid USER: ${problem}`);
  }
  return { action, file, user: user ?? null, cost: cost ?? DEFAULT_BCRYPT_COST, passwordStdin };
}

async function add(args: Args, io: CommandIO): Promise<number> {
  const user = args.user!;
  const existing = await readIfExists(args.file);
  const password = await readPassword(io, { confirm: true, fromStdin: args.passwordStdin });
  if (password === '') throw new PortcullisError('PCL_ERR_HTPASSWD', 'empty password refused');
  const hash = await hashPassword(password, args.cost);
  const { text, added } = setHtpasswdUser(existing ?? '', user, hash);
  await writeFileAtomic(args.file, text);
  io.stdout.write(`${added ? 'added' : 'updated'} user ${JSON.stringify(user)} in ${args.file}\n`);
  const rest = problemsOf(text, args.file);
  if (rest.length > 0) io.stderr.write(`warning: the proxy still refuses ${args.file}:\n${rest.join('\n')}\n`);
  return 0;
}

async function remove(args: Args, io: CommandIO): Promise<number> {
  const user = args.user!;
  const existing = await readFile(args.file, 'utf8');
  const { text, removed } = removeHtpasswdUser(existing, user);
  if (!removed) {
    io.stderr.write(`portcullis htpasswd: user ${JSON.stringify(user)} not found in ${args.file}\n`);
    return 1;
  }
  await writeFileAtomic(args.file, text);
  io.stdout.write(`removed user ${JSON.stringify(user)} from ${args.file}\n`);
  return 0;
}

async function list(args: Args, io: CommandIO): Promise<number> {
  const text = await readFile(args.file, 'utf8');
  const seen = new Set<string>();
  for (const l of scanHtpasswd(text)) {
    const user = lineUser(l);
    if (user === null || seen.has(user)) continue;
    seen.add(user);
    io.stdout.write(`${user}\n`);
  }
  const problems = problemsOf(text, args.file);
  if (problems.length === 0) return 0;
  io.stderr.write(`${problems.join('\n')}\n`);
  return 1;
}

async function verify(args: Args, io: CommandIO): Promise<number> {
  const user = args.user!;
  const text = await readFile(args.file, 'utf8');
  const line = scanHtpasswd(text).find((l) => lineUser(l) === user);
  if (!line) {
    io.stderr.write(`portcullis htpasswd: user ${JSON.stringify(user)} not found in ${args.file}\n`);
    return 1;
  }
  if (line.kind !== 'entry') {
    io.stderr.write(`portcullis htpasswd: ${describeLine(args.file, { line: line.line, user }, line.kind === 'invalid' ? line.problem : 'no hash')}\n`);
    return 1;
  }
  const password = await readPassword(io, { confirm: false, fromStdin: args.passwordStdin });
  const ok = await verifyPassword(password, line);
  io.stdout.write(ok ? 'password correct\n' : 'password incorrect\n');
  return ok ? 0 : 1;
}

/** The lines the proxy would refuse, as it would word them. */
function problemsOf(text: string, source: string): string[] {
  try {
    parseHtpasswd(text, source);
    return [];
  } catch (err) {
    if (err instanceof PortcullisError) return err.message.split('\n');
    throw err;
  }
}

function usageError(message: string): PortcullisError {
  return new PortcullisError('PCL_ERR_USAGE', message);
}
