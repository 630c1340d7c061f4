/**
 * htpasswd files: parse, edit, hash, verify. Pure functions, no I/O (auth.ts and commands/htpasswd.ts do the I/O).
 *
 * Format, as Apache `htpasswd` writes it and distribution's `registry/auth/htpasswd` reads it: one `user:hash`
 * per line; the hash is everything after the FIRST colon; surrounding whitespace is ignored; lines that begin
 * with `#` are comments. registry:2 accepts only bcrypt; we also accept `{SHA}`, and the crypt(3) schemes of
 * crypt.ts (`$apr1$` from Apache `htpasswd -m`, `$1$`, `$5$` and `$6$` as nginx reads them), so a file made
 * for Apache or nginx works as it is. Everything else (DES crypt, plaintext, yescrypt, ...) is refused by
 * name, so the operator knows which line to redo.
 *
 * A file with any bad line is refused whole: a reload must never swap in a half-understood file (a user whose
 * line we skipped would be locked out with no error anywhere but the log).
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import bcrypt from 'bcryptjs';
import { PortcullisError } from '../errors.js';
import { MAX_SHA_CRYPT_ROUNDS, SHA_CRYPT_DEFAULT_ROUNDS, dummyCryptHash, parseCryptHash, verifyCrypt, type CryptScheme } from './crypt.js';

export type HashScheme = 'bcrypt' | 'sha1' | CryptScheme;

export interface HtpasswdEntry {
  readonly hash: string;
  readonly scheme: HashScheme;
  /** 1-based line number in the source, for messages. */
  readonly line: number;
}

/** user -> entry. Users are unique (a duplicate is an error). */
export type HtpasswdFile = Map<string, HtpasswdEntry>;

/** One line of a file as written, classified. Editing keeps every line it does not touch byte for byte. */
export type HtpasswdLine =
  | { readonly kind: 'blank' | 'comment'; readonly text: string; readonly line: number }
  | { readonly kind: 'entry'; readonly text: string; readonly line: number; readonly user: string; readonly hash: string; readonly scheme: HashScheme }
  | { readonly kind: 'invalid'; readonly text: string; readonly line: number; readonly user: string | null; readonly problem: string };

/** bcrypt reads only this many bytes of a password (the Blowfish key schedule takes 18 32-bit words). */
export const BCRYPT_MAX_PASSWORD_BYTES = 72;
/** Costs we write, as Apache `htpasswd -C` accepts them (4..17): past 17 every uncached login takes seconds.
 * Reading accepts any cost a valid hash may carry (04..31), so files made elsewhere still load. */
export const BCRYPT_MIN_COST = 4;
export const BCRYPT_MAX_COST = 17;
/** Apache's default is 5; 12 costs about 0.25 s in bcryptjs, which the credential cache pays once per TTL. */
export const DEFAULT_BCRYPT_COST = 12;
/** Apache `htpasswd` refuses longer user names. */
const MAX_USER_BYTES = 255;

// $2a$/$2b$/$2y$ differ only in bugs of old C implementations; bcryptjs and Go's x/crypto/bcrypt (used by
// registry:2) read all three the same way (Go keeps any minor letter: bcrypt.go decodeVersion).
const BCRYPT_RE = /^\$2[aby]\$(0[4-9]|[12][0-9]|3[01])\$[./A-Za-z0-9]{53}$/;
// Apache `htpasswd -s`: base64 of the raw 20-byte SHA-1 digest, unsalted.
const SHA_RE = /^\{SHA\}[A-Za-z0-9+/]{27}=$/;
// Traditional DES crypt: 2 salt characters + 11 hash characters.
const DES_RE = /^[./A-Za-z0-9]{13}$/;
// The prefixes of crypt.ts' schemes, to name a hash of theirs that does not parse.
const CRYPT_PREFIX_RE = /^\$(?:1|apr1|5|6)\$/;
const CONTROL_RE = /[\u0000-\u001f\u007f]/;

const FIX = '(use bcrypt: portcullis htpasswd add)';

/** Classify a hash: its scheme, or a problem saying why we refuse it. Never echoes the hash itself. */
export function classifyHash(hash: string): { scheme: HashScheme } | { problem: string } {
  if (hash === '') return { problem: 'empty hash' };
  if (BCRYPT_RE.test(hash)) return { scheme: 'bcrypt' };
  if (SHA_RE.test(hash)) return { scheme: 'sha1' };
  const crypt = parseCryptHash(hash);
  if (crypt) {
    // A file may name any rounds, and every wrong password costs a full check: past the bound, one guess
    // would hold a password worker for seconds to minutes.
    if ('rounds' in crypt && crypt.rounds > MAX_SHA_CRYPT_ROUNDS) {
      return { problem: `SHA-crypt rounds=${crypt.rounds} is above the ${MAX_SHA_CRYPT_ROUNDS} this proxy computes ${FIX}` };
    }
    return { scheme: crypt.scheme };
  }
  if (/^\$2[aby]\$/.test(hash)) return { problem: 'malformed bcrypt hash' };
  if (hash.startsWith('{SHA}')) return { problem: 'malformed {SHA} hash' };
  const cryptPrefix = CRYPT_PREFIX_RE.exec(hash);
  if (cryptPrefix) return { problem: `malformed ${cryptPrefix[0]} hash ${FIX}` };
  const dollar = /^\$[A-Za-z0-9-]+\$/.exec(hash);
  if (dollar) return { problem: `unsupported hash scheme ${dollar[0]} ${FIX}` };
  const brace = /^\{[A-Za-z0-9-]+\}/.exec(hash);
  if (brace) return { problem: `unsupported hash scheme ${brace[0]} ${FIX}` };
  if (DES_RE.test(hash)) return { problem: `unsupported hash scheme DES crypt ${FIX}` };
  return { problem: `unsupported hash scheme (plaintext?) ${FIX}` };
}

/** Why a user name cannot be in an htpasswd file or a Basic credential, or null if it can. */
export function userNameProblem(user: string): string | null {
  if (user === '') return 'empty user name';
  if (user.includes(':')) return 'user name contains ":"'; // RFC 7617 section 2: the user-id cannot contain a colon
  // A line is trimmed and a `#` line is a comment when the file is read: written, ` bob` would come back as
  // `bob` (another user) and `#bob` not at all, and every later edit of that user would append a duplicate.
  if (user.trimStart() !== user) return 'user name begins with white space';
  if (user.startsWith('#')) return 'user name begins with "#"';
  if (CONTROL_RE.test(user)) return 'user name contains a control character';
  if (Buffer.byteLength(user) > MAX_USER_BYTES) return `user name longer than ${MAX_USER_BYTES} bytes`;
  return null;
}

/** Split text into classified lines. Tolerant: problems are reported per line, never thrown. */
export function scanHtpasswd(text: string): HtpasswdLine[] {
  return [...htpasswdLines(text)];
}

/** The lines of a file one by one, so a parse that gives up early never classifies (or holds) the rest. */
function* htpasswdLines(text: string): Generator<HtpasswdLine> {
  let start = 0;
  for (let line = 1; start < text.length; line++) {
    let end = text.indexOf('\n', start);
    if (end === -1) end = text.length; // the final newline does not start a line
    yield classifyLine(text.slice(start, end), line);
    start = end + 1;
  }
}

function classifyLine(rawText: string, line: number): HtpasswdLine {
  const t = rawText.trim(); // like registry:2; also drops the \r of CRLF files
  if (t === '') return { kind: 'blank', text: rawText, line };
  if (t.startsWith('#')) return { kind: 'comment', text: rawText, line };
  const colon = t.indexOf(':');
  if (colon === -1) return { kind: 'invalid', text: rawText, line, user: null, problem: 'expected user:hash' };
  const user = t.slice(0, colon);
  const userProblem = userNameProblem(user);
  if (userProblem) return { kind: 'invalid', text: rawText, line, user: null, problem: userProblem };
  const hash = t.slice(colon + 1);
  const c = classifyHash(hash);
  if ('problem' in c) return { kind: 'invalid', text: rawText, line, user, problem: c.problem };
  return { kind: 'entry', text: rawText, line, user, hash, scheme: c.scheme };
}

/** Describe a bad line as `SOURCE line N: user "bob": problem`. */
export function describeLine(source: string, l: { line: number; user: string | null }, problem: string): string {
  return `${source} line ${l.line}: ${l.user === null ? '' : `user ${JSON.stringify(l.user)}: `}${problem}`;
}

/** A refused file names this many bad lines, then stops reading: a file that is wrong throughout (a binary
 * mounted by mistake) must cost a short message, not one line of error per line of file. */
export const MAX_REPORTED_PROBLEMS = 20;

/**
 * Parse a whole file strictly. Throws PortcullisError(PCL_ERR_HTPASSWD) naming the bad lines (up to
 * MAX_REPORTED_PROBLEMS) if any line is bad or a user appears twice (Apache would use the first, registry:2
 * the last: neither is safe to guess). `source` names the file in messages.
 */
export function parseHtpasswd(text: string, source = 'htpasswd'): HtpasswdFile {
  const users: HtpasswdFile = new Map();
  const problems: string[] = [];
  for (const l of htpasswdLines(text)) {
    if (problems.length > MAX_REPORTED_PROBLEMS) break;
    if (l.kind === 'invalid') {
      problems.push(describeLine(source, l, l.problem));
    } else if (l.kind === 'entry') {
      const first = users.get(l.user);
      if (first) problems.push(describeLine(source, l, `duplicate user (also on line ${first.line})`));
      else users.set(l.user, { hash: l.hash, scheme: l.scheme, line: l.line });
    }
  }
  if (problems.length > 0) {
    const shown = problems.slice(0, MAX_REPORTED_PROBLEMS);
    if (problems.length > shown.length) shown.push(`... and more bad lines (stopped after ${MAX_REPORTED_PROBLEMS})`);
    throw new PortcullisError('PCL_ERR_HTPASSWD', shown.join('\n'));
  }
  return users;
}

/** `user:hash`, refusing what would corrupt the file or never match a Basic credential. */
export function formatHtpasswdLine(user: string, hash: string): string {
  const problem = userNameProblem(user);
  if (problem) throw new PortcullisError('PCL_ERR_HTPASSWD', `cannot write user ${JSON.stringify(user)}: ${problem}`);
  const c = classifyHash(hash);
  if ('problem' in c) throw new PortcullisError('PCL_ERR_HTPASSWD', `cannot write user ${JSON.stringify(user)}: ${c.problem}`);
  return `${user}:${hash}`;
}

/**
 * Set `user`'s hash in file text: its first line is replaced in place (also if that line was refused, which
 * is how a DES crypt user is moved to bcrypt), any further lines of the same user are dropped, other lines
 * are kept as they are. A new user is appended.
 */
export function setHtpasswdUser(text: string, user: string, hash: string): { text: string; added: boolean } {
  const entry = formatHtpasswdLine(user, hash);
  const out: string[] = [];
  let done = false;
  for (const l of scanHtpasswd(text)) {
    if (lineUser(l) === user) {
      if (!done) out.push(entry);
      done = true;
    } else {
      out.push(l.text);
    }
  }
  if (!done) out.push(entry);
  return { text: joinLines(out), added: !done };
}

/** Remove every line of `user` from file text; other lines are kept as they are. */
export function removeHtpasswdUser(text: string, user: string): { text: string; removed: boolean } {
  const lines = scanHtpasswd(text);
  const kept = lines.filter((l) => lineUser(l) !== user);
  return { text: joinLines(kept.map((l) => l.text)), removed: kept.length !== lines.length };
}

/** The user a line is about, if it names one (a refused line may). */
export function lineUser(l: HtpasswdLine): string | null {
  return l.kind === 'entry' || l.kind === 'invalid' ? l.user : null;
}

function joinLines(lines: string[]): string {
  return lines.length === 0 ? '' : `${lines.join('\n')}\n`;
}

/**
 * A bcrypt hash with the `$2y$` prefix Apache `htpasswd -B` writes (bcryptjs writes `$2b$`; the algorithm is
 * the same). Passwords over 72 bytes are refused rather than silently cut the way Apache does: bcrypt would
 * ignore the rest, and a user would believe a longer secret protects them.
 */
export async function hashPassword(password: string, cost: number = DEFAULT_BCRYPT_COST): Promise<string> {
  if (!Number.isInteger(cost) || cost < BCRYPT_MIN_COST || cost > BCRYPT_MAX_COST) {
    throw new PortcullisError('PCL_ERR_HTPASSWD', `bcrypt cost must be an integer from ${BCRYPT_MIN_COST} to ${BCRYPT_MAX_COST}, not ${cost}`);
  }
  if (Buffer.byteLength(password) > BCRYPT_MAX_PASSWORD_BYTES) {
    throw new PortcullisError(
      'PCL_ERR_HTPASSWD',
      `password is ${Buffer.byteLength(password)} bytes; bcrypt uses only the first ${BCRYPT_MAX_PASSWORD_BYTES}, choose a shorter one`,
    );
  }
  const hash = await bcrypt.hash(password, cost);
  return `$2y$${hash.slice(4)}`;
}

/** The slow checks: bcrypt, and crypt.ts' schemes (its `verifyCrypt` tells them apart by prefix). */
export type CheckKind = 'bcrypt' | 'crypt';

/** Runs a slow check: here by default (bcryptjs, crypt.ts), on the worker pool in the proxy. */
export type SlowCheck = (password: string, hash: string, kind: CheckKind) => Promise<boolean>;

const checkHere: SlowCheck = async (password, hash, kind) => (kind === 'bcrypt' ? bcrypt.compare(password, hash) : verifyCrypt(password, hash));

/**
 * Does `password` match the entry? bcrypt checks only the first 72 bytes of a longer password, exactly as
 * Apache `htpasswd -v` and registry:2 (Go x/crypto/bcrypt) do: Apache cuts long passwords silently when
 * hashing, so refusing them here would lock out users whose file Apache made. The crypt(3) schemes compare
 * the recomputed hash in constant time (SHA-crypt up to MAX_SHA_CRYPT_PASSWORD_BYTES of password, see
 * crypt.ts). bcrypt and crypt run through `slow`; `{SHA}`, one SHA-1, compares digests in constant time here.
 */
export async function verifyPassword(
  password: string,
  entry: Pick<HtpasswdEntry, 'hash' | 'scheme'>,
  slow: SlowCheck = checkHere,
): Promise<boolean> {
  if (entry.scheme === 'bcrypt') return slow(password, entry.hash, 'bcrypt');
  if (entry.scheme !== 'sha1') return slow(password, entry.hash, 'crypt');
  const expected = Buffer.from(entry.hash.slice('{SHA}'.length), 'base64');
  const actual = createHash('sha1').update(password, 'utf8').digest();
  return expected.length === actual.length && timingSafeEqual(expected, actual);
}

/** The cost field of a bcrypt hash. */
export function bcryptCost(hash: string): number {
  return Number(hash.slice(4, 6));
}

/**
 * A syntactically valid bcrypt hash that matches no password (random salt and checksum). Checking an unknown
 * user against it costs the same as a wrong password, so user names cannot be probed by timing.
 */
export function dummyBcryptHash(cost: number, random: (n: number) => Buffer): string {
  const alphabet = './ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789';
  const bytes = random(53);
  let tail = '';
  for (const b of bytes) tail += alphabet[b % 64];
  return `$2y$${String(cost).padStart(2, '0')}$${tail}`;
}

/** What checking a password against an entry costs, as a key: entries with the same key cost the same. */
interface CostClass {
  readonly key: string;
  readonly scheme: HashScheme;
  /** bcrypt cost or SHA-crypt rounds; 0 for the schemes without a parameter. */
  readonly param: number;
  /** A rough time per check in microseconds on one core, to break ties only. */
  readonly micros: number;
}

const SHA_CRYPT_ROUNDS_RE = /^\$[56]\$rounds=(\d+)\$/;

function costClass(e: Pick<HtpasswdEntry, 'hash' | 'scheme'>): CostClass {
  switch (e.scheme) {
    case 'bcrypt': {
      const cost = bcryptCost(e.hash);
      return { key: `bcrypt ${cost}`, scheme: e.scheme, param: cost, micros: 60 * 2 ** cost };
    }
    case 'sha256crypt':
    case 'sha512crypt': {
      const field = SHA_CRYPT_ROUNDS_RE.exec(e.hash);
      const rounds = field ? Number(field[1]) : SHA_CRYPT_DEFAULT_ROUNDS; // entries were parsed: in range
      return { key: `${e.scheme} ${rounds}`, scheme: e.scheme, param: rounds, micros: 1.5 * rounds };
    }
    case 'md5crypt':
    case 'apr1':
      return { key: e.scheme, scheme: e.scheme, param: 0, micros: 1000 };
    case 'sha1':
      return { key: e.scheme, scheme: e.scheme, param: 0, micros: 1 };
  }
}

/**
 * The entry an unknown user is checked against: a hash of the scheme and cost (bcrypt cost, SHA-crypt
 * rounds) that most users of the file have, ties going to the dearer, so that an unknown name takes as long
 * as a typical known one and names cannot be probed by timing. bcrypt at the default cost for an empty file.
 * Salt and checksum are random: it matches no password.
 */
export function dummyEntry(users: HtpasswdFile, random: (n: number) => Buffer): Pick<HtpasswdEntry, 'hash' | 'scheme'> {
  const counts = new Map<string, { c: CostClass; n: number }>();
  for (const e of users.values()) {
    const c = costClass(e);
    const seen = counts.get(c.key);
    if (seen) seen.n++;
    else counts.set(c.key, { c, n: 1 });
  }
  let best: { c: CostClass; n: number } | null = null;
  for (const x of counts.values()) if (!best || x.n > best.n || (x.n === best.n && x.c.micros > best.c.micros)) best = x;
  const c = best?.c ?? { scheme: 'bcrypt', param: DEFAULT_BCRYPT_COST };
  switch (c.scheme) {
    case 'bcrypt':
      return { hash: dummyBcryptHash(c.param, random), scheme: c.scheme };
    case 'sha1':
      return { hash: `{SHA}${random(20).toString('base64')}`, scheme: c.scheme };
    default:
      return { hash: dummyCryptHash(c.scheme, c.param, random), scheme: c.scheme };
  }
}

/** Schemes that are unsalted ({SHA}: one SHA-1, so equal passwords have equal hashes) or fast to guess
 * (MD5-crypt: a fixed 1000 MD5s, millions of guesses a second on a GPU). */
const WEAK_SCHEMES: Partial<Record<HashScheme, string>> = { sha1: '{SHA}', md5crypt: '$1$', apr1: '$apr1$' };

/** How many users have a weak hash, and a message saying so and what to do, or null if none has. */
export function weakHashes(users: HtpasswdFile): { users: number; message: string } | null {
  const counts = new Map<string, number>();
  let total = 0;
  for (const e of users.values()) {
    const name = WEAK_SCHEMES[e.scheme];
    if (name === undefined) continue;
    counts.set(name, (counts.get(name) ?? 0) + 1);
    total++;
  }
  if (total === 0) return null;
  const list = [...counts].map(([name, n]) => `${name}: ${n}`).join(', ');
  return {
    users: total,
    message:
      `${total} user${total === 1 ? ' has a weak password hash' : 's have weak password hashes'} (${list}; unsalted or fast to guess); ` +
      're-set each with bcrypt: portcullis htpasswd add FILE USER',
  };
}
