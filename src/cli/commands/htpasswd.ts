/**
 * `portcullis htpasswd add|remove|list|verify`: manage the proxy's htpasswd file without apache2-utils.
 *
 * Files stay compatible both ways: we write `$2y$` bcrypt lines as `htpasswd -B` does, and keep every line we
 * do not touch as it was. The password never comes from argv (it would sit in shell history and in `ps`):
 * a no-echo prompt on a terminal, else the first line of stdin. Writes are atomic (temporary file in the
 * same folder, then rename), so the running proxy never reads half a file.
 */
import { readFile } from 'node:fs/promises';
import { StringDecoder } from 'node:string_decoder';
import { PortcullisError, hasErrno } from '../../errors.js';
import {
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

const USAGE = `Usage: portcullis htpasswd <action> FILE [USER] [options]

  add FILE USER [--cost N] [--password-stdin]   set USER's password (creates FILE, mode 0600)
  remove FILE USER                              delete USER
  list FILE                                     print the users; exit 1 if the proxy would refuse FILE
  verify FILE USER [--password-stdin]           check a password: exit 0 if correct, 1 if not

The password is prompted for (without echo) when stdin is a terminal, else read from the first line of
stdin. It is never taken from the command line.
  --cost N   bcrypt cost from 4 to 17 (default ${DEFAULT_BCRYPT_COST}); each step doubles the work
`;

/** Apache `htpasswd -C` accepts 4..17; higher costs make every uncached login take seconds. */
const MIN_COST = 4;
const MAX_COST = 17;
/** Longer than any password bcrypt can use: refuse a runaway stdin instead of buffering it. */
const MAX_PASSWORD_LINE = 4096;

type Action = 'add' | 'remove' | 'list' | 'verify';

interface Args {
  action: Action;
  file: string;
  user: string | null;
  cost: number;
  passwordStdin: boolean;
}

class UsageError extends Error {}

export async function htpasswdCommand(argv: string[], io: CommandIO): Promise<number> {
  if (argv.includes('--help') || argv.includes('-h') || argv[0] === 'help') {
    io.stdout.write(USAGE);
    return 0;
  }
  let args: Args;
  try {
    args = parseArgs(argv);
  } catch (err) {
    if (!(err instanceof UsageError)) throw err;
    io.stderr.write(`portcullis htpasswd: ${err.message}\n\n${USAGE}`);
    return 2;
  }
  try {
    switch (args.action) {
      case 'add':
        return await add(args, io);
      case 'remove':
        return await remove(args, io);
      case 'list':
        return await list(args, io);
      case 'verify':
        return await verify(args, io);
    }
  } catch (err) {
    if (err instanceof PortcullisError || err instanceof PromptError) {
      io.stderr.write(`portcullis htpasswd: ${err.message}\n`);
      return 1;
    }
    if (hasErrno(err, 'ENOENT', 'EACCES', 'EPERM', 'EISDIR', 'ENOTDIR', 'EROFS', 'ENOSPC', 'EEXIST')) {
      io.stderr.write(`portcullis htpasswd: ${(err as Error).message}\n`);
      return 1;
    }
    throw err;
  }
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
      if (v === undefined || !/^\d+$/.test(v) || Number(v) < MIN_COST || Number(v) > MAX_COST) {
        throw new UsageError(`--cost must be a whole number from ${MIN_COST} to ${MAX_COST}`);
      }
      cost = Number(v);
    } else if (a === '--') {
      positional.push(...argv.slice(i + 1));
      break;
    } else if (a.startsWith('-') && a !== '-') {
      throw new UsageError(`unknown option ${a}`);
    } else {
      positional.push(a);
    }
  }
  const [action, file, user, ...extra] = positional;
  if (action === undefined) throw new UsageError('missing action');
  if (action !== 'add' && action !== 'remove' && action !== 'list' && action !== 'verify') {
    throw new UsageError(`unknown action "${action}"`);
  }
  if (file === undefined || file === '') throw new UsageError('missing FILE');
  const wantsUser = action !== 'list';
  if (wantsUser && user === undefined) throw new UsageError('missing USER');
  if (!wantsUser && user !== undefined) throw new UsageError(`unexpected argument "${user}"`);
  if (extra.length > 0) {
    throw new UsageError(
      action === 'add' || action === 'verify'
        ? 'too many arguments (the password is never taken from the command line: it is prompted for or read from stdin)'
        : `unexpected argument "${extra[0]}"`,
    );
  }
  if (cost !== null && action !== 'add') throw new UsageError('--cost applies to add only');
  if (passwordStdin && action !== 'add' && action !== 'verify') throw new UsageError(`--password-stdin does not apply to ${action}`);
  if (user !== undefined) {
    const problem = userNameProblem(user);
    if (problem) throw new UsageError(`invalid USER: ${problem}`);
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

class PromptError extends Error {}

interface RawCapable {
  setRawMode?: (raw: boolean) => unknown;
  isRaw?: boolean;
}

/**
 * The password: prompted for without echo when stdin is a terminal (twice when `confirm`), else the first
 * line of stdin with its line ending removed.
 */
async function readPassword(io: CommandIO, opts: { confirm: boolean; fromStdin: boolean }): Promise<string> {
  const interactive = io.isTTY && !opts.fromStdin;
  const reader = new LineReader(io.stdin, interactive);
  const tty = io.stdin as NodeJS.ReadableStream & RawCapable;
  const wasRaw = tty.isRaw === true;
  const raw = interactive && typeof tty.setRawMode === 'function';
  try {
    if (!interactive) {
      const line = await reader.line();
      if (line === null) throw new PromptError('no password on standard input');
      return line;
    }
    if (raw) tty.setRawMode!(true);
    const ask = async (prompt: string): Promise<string> => {
      io.stderr.write(prompt);
      let line: string | null;
      try {
        line = await reader.line();
      } finally {
        io.stderr.write('\n'); // Enter was not echoed
      }
      if (line === null) throw new PromptError('no password entered');
      return line;
    };
    const first = await ask('Password: ');
    if (opts.confirm && (await ask('Re-type password: ')) !== first) throw new PromptError('passwords do not match');
    return first;
  } finally {
    if (raw) tty.setRawMode!(wasRaw);
    reader.close();
  }
}

/**
 * Reads lines from a stream without losing what arrives after one. In interactive (raw terminal) mode Enter
 * is `\r`, backspace edits, Ctrl-C aborts and Ctrl-D ends input, as a terminal's own line editor would.
 */
class LineReader {
  private buffer = '';
  private ended = false;
  private wake: (() => void) | null = null;
  private readonly decoder = new StringDecoder('utf8'); // a character may be split across chunks
  private readonly onData = (chunk: string | Buffer): void => {
    this.buffer += typeof chunk === 'string' ? chunk : this.decoder.write(chunk);
    this.notify();
  };
  private readonly onEnd = (): void => {
    this.ended = true;
    this.notify();
  };

  constructor(
    private readonly stream: NodeJS.ReadableStream,
    private readonly interactive: boolean,
  ) {
    stream.on('data', this.onData);
    stream.on('end', this.onEnd);
    stream.on('error', this.onEnd);
    stream.resume();
  }

  async line(): Promise<string | null> {
    for (;;) {
      const got = this.interactive ? this.takeInteractive() : this.takePlain();
      if (got !== undefined) return got;
      if (this.buffer.length > MAX_PASSWORD_LINE) throw new PromptError('password line too long');
      if (this.ended) {
        const rest = this.buffer;
        this.buffer = '';
        return rest === '' ? null : rest;
      }
      await new Promise<void>((resolve) => (this.wake = resolve));
    }
  }

  close(): void {
    this.stream.removeListener('data', this.onData);
    this.stream.removeListener('end', this.onEnd);
    this.stream.removeListener('error', this.onEnd);
    this.stream.pause();
  }

  private notify(): void {
    const w = this.wake;
    this.wake = null;
    w?.();
  }

  /** Up to the first `\n`, without it or a `\r` before it. */
  private takePlain(): string | undefined {
    const nl = this.buffer.indexOf('\n');
    if (nl === -1) return undefined;
    const line = this.buffer.slice(0, nl);
    this.buffer = this.buffer.slice(nl + 1);
    return line.endsWith('\r') ? line.slice(0, -1) : line;
  }

  private takeInteractive(): string | null | undefined {
    let line = '';
    for (let i = 0; i < this.buffer.length; i++) {
      const ch = this.buffer[i]!;
      if (ch === '\r' || ch === '\n') {
        const skip = ch === '\r' && this.buffer[i + 1] === '\n' ? 2 : 1;
        this.buffer = this.buffer.slice(i + skip);
        return line;
      }
      if (ch === '\u0003') throw new PromptError('cancelled');
      if (ch === '\u0004') {
        if (line !== '') continue;
        this.buffer = this.buffer.slice(i + 1);
        return null;
      }
      if (ch === '\u007f' || ch === '\b') {
        line = [...line].slice(0, -1).join('');
        continue;
      }
      line += ch;
    }
    return undefined;
  }
}
