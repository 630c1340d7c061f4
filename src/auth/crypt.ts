/**
 * The crypt(3) hashes found in htpasswd files besides bcrypt: MD5-crypt (`$1$`, and Apache's `$apr1$`
 * variant, which `htpasswd` writes without -B) and SHA-crypt (`$5$` SHA-256, `$6$` SHA-512, which nginx
 * accepts through glibc). Pure functions, no I/O. We only verify these, so files made for Apache or nginx
 * keep working; new hashes are bcrypt.
 *
 * References:
 * - MD5-crypt: Poul-Henning Kamp's FreeBSD crypt-md5.c (1994). Apache's apr_md5_encode (apr_md5.c) is the
 *   same algorithm with `$apr1$` as the magic string, which also enters the digest, so the two never match
 *   each other.
 * - SHA-crypt: Ulrich Drepper, "Unix crypt using SHA-256 and SHA-512"
 *   (https://www.akkadia.org/drepper/SHA-crypt.txt); "step N" below is that text's numbering.
 *
 * Cost: MD5-crypt is a fixed 1000 MD5 calls, about 1 ms. SHA-crypt is one hash call per round, 1-3 us each
 * in Node 20: about 6 ms at the default 5000 rounds, 0.2 s at 100,000 (like bcryptjs at cost 12), and the
 * spec's maximum of 999,999,999 would hold a thread for most of an hour. Callers run this off the event
 * loop, and refuse rounds above MAX_SHA_CRYPT_ROUNDS.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import { PortcullisError } from '../errors.js';

export type CryptScheme = 'md5crypt' | 'apr1' | 'sha256crypt' | 'sha512crypt';

export type ParsedCryptHash =
  | { readonly scheme: 'md5crypt' | 'apr1'; readonly salt: string }
  | {
      readonly scheme: 'sha256crypt' | 'sha512crypt';
      readonly salt: string;
      /** The rounds the hash was made with: its `rounds=N$` field, else the spec's default. */
      readonly rounds: number;
      /** Whether the hash has a `rounds=N$` field; crypt(3) writes it back exactly when it was given. */
      readonly roundsExplicit: boolean;
    };

/** Step 21 of the spec: 5000 rounds when the setting names none. */
export const SHA_CRYPT_DEFAULT_ROUNDS = 5000;
/** The spec clamps `rounds=N` into this range ("the minimum number is still observed"). */
export const SHA_CRYPT_MIN_ROUNDS = 1000;
export const SHA_CRYPT_MAX_ROUNDS = 999_999_999;
/**
 * The most SHA-crypt rounds we agree to compute. Above the defaults of the common generators (5000 for
 * glibc, libxcrypt, openssl and mkpasswd; 535,000 and 656,000 for Python passlib's sha256_crypt and
 * sha512_crypt), and low enough that one check, about 3 s of CPU here, holds a worker for seconds rather than
 * the better part of an hour: every wrong password costs a full check, and a file can name any rounds.
 */
export const MAX_SHA_CRYPT_ROUNDS = 1_000_000;
/**
 * The longest password checked against a SHA-crypt hash; longer ones match nothing. SHA-crypt's work grows
 * with the square of the password's length (steps 13-15 hash it once per byte) and its rounds with the
 * length again: a 6,000-byte password (an Authorization header near its 8 KiB bound) costs about twenty
 * times an ordinary one at 50,000 rounds, a guess an attacker pays nothing more for. musl's
 * crypt(3) has the same limit for the same reason (crypt_sha256.c, crypt_sha512.c: KEY_MAX).
 */
export const MAX_SHA_CRYPT_PASSWORD_BYTES = 256;

const MD5_SALT_MAX = 8;
const SHA_SALT_MAX = 16; // the spec's salt limit; see its "toolongsaltstring" test vectors
const MD5_ROUNDS = 1000;

// The crypt alphabet ("./0-9A-Za-z"), not RFC 4648 base64; each character carries 6 bits, least significant first.
const ITOA64 = './0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz';

// Digest bytes in output order, three at a time (first byte most significant); the last group is short.
// MD5: crypt-md5.c's to64 calls. SHA: the spec's step 22, written out there as b64_from_24bit calls.
const MD5_ORDER = [0, 6, 12, 1, 7, 13, 2, 8, 14, 3, 9, 15, 4, 10, 5, 11] as const;
const SHA256_ORDER = [
  0, 10, 20, 21, 1, 11, 12, 22, 2, 3, 13, 23, 24, 4, 14, 15, 25, 5, 6, 16, 26, 27, 7, 17, 18, 28, 8, 9, 19, 29,
  31, 30,
] as const;
const SHA512_ORDER = [
  0, 21, 42, 22, 43, 1, 44, 2, 23, 3, 24, 45, 25, 46, 4, 47, 5, 26, 6, 27, 48, 28, 49, 7, 50, 8, 29, 9, 30, 51,
  31, 52, 10, 53, 11, 32, 12, 33, 54, 34, 55, 13, 56, 14, 35, 15, 36, 57, 37, 58, 16, 59, 17, 38, 18, 39, 60,
  40, 61, 19, 62, 20, 41, 63,
] as const;

// Salt characters crypt(3) on Debian (libxcrypt) accepts: printable ASCII except these, which it refuses
// (`$` ends the salt). Keeping to ASCII also makes characters and bytes the same count.
const SALT_CHAR = String.raw`[^\x00-\x20\x7f-\uffff$:;!*\\]`;
const SALT_CHAR_RE = new RegExp(`^${SALT_CHAR}*$`);
// The checksum's last character carries only the bits left over (2 for MD5 and SHA-512, 4 for SHA-256);
// crypt(3) never writes another, so a hash ending otherwise is corrupt, not merely wrong.
const MD5_RE = new RegExp(String.raw`^\$(1|apr1)\$(${SALT_CHAR}{0,${MD5_SALT_MAX}})\$[./0-9A-Za-z]{21}[./01]$`);
const SHA_RE = new RegExp(
  String.raw`^\$(5|6)\$(?:rounds=([1-9][0-9]{0,8})\$)?(${SALT_CHAR}{0,${SHA_SALT_MAX}})\$` +
    String.raw`(?:[./0-9A-Za-z]{42}[./0-9A-D]|[./0-9A-Za-z]{85}[./01])$`,
);

/** MD5-crypt of `password` (a string is taken as UTF-8). `salt` ends at its first `$` and after 8 characters. */
export function md5Crypt(password: string | Buffer, salt: string, magic: '$1$' | '$apr1$'): string {
  const p = bytes(password);
  const s = cryptSalt(salt, MD5_SALT_MAX);
  const sb = Buffer.from(s, 'latin1');
  const alt = createHash('md5').update(p).update(sb).update(p).digest();
  const ctx = createHash('md5').update(p).update(magic, 'latin1').update(sb);
  for (let n = p.length; n > 0; n -= 16) ctx.update(alt.subarray(0, Math.min(n, 16)));
  // Per bit of the length, low bit first: a NUL where it is 1, the password's first byte where it is 0. The
  // C code meant to add the (zeroed) digest buffer's first byte; every implementation keeps the accident.
  for (let n = p.length; n > 0; n >>>= 1) ctx.update(n & 1 ? NUL : p.subarray(0, 1));
  let fin = ctx.digest();
  // "Just to make sure things don't run too fast" (crypt-md5.c): a fixed 1000 rounds.
  for (let i = 0; i < MD5_ROUNDS; i++) {
    const r = createHash('md5').update(i & 1 ? p : fin);
    if (i % 3 !== 0) r.update(sb);
    if (i % 7 !== 0) r.update(p);
    fin = r.update(i & 1 ? fin : p).digest();
  }
  return `${magic}${s}$${encode64(fin, MD5_ORDER)}`;
}

/**
 * SHA-crypt (`$5$` SHA-256, `$6$` SHA-512) of `password` (a string is taken as UTF-8). `salt` ends at its
 * first `$` and after 16 characters. `rounds` is clamped to 1000..999,999,999 as the spec says; it is written
 * as `rounds=N$` only when given, even when it equals the default, as crypt(3) does.
 */
export function shaCrypt(password: string | Buffer, salt: string, variant: 5 | 6, rounds?: number): string {
  if (rounds !== undefined && !Number.isSafeInteger(rounds)) throw new PortcullisError('PCL_ERR_HTPASSWD', `SHA-crypt rounds must be an integer, not ${rounds}`);
  const n = rounds === undefined ? SHA_CRYPT_DEFAULT_ROUNDS : Math.min(Math.max(rounds, SHA_CRYPT_MIN_ROUNDS), SHA_CRYPT_MAX_ROUNDS);
  const algorithm = variant === 5 ? 'sha256' : 'sha512';
  const size = variant === 5 ? 32 : 64;
  const p = bytes(password);
  const s = cryptSalt(salt, SHA_SALT_MAX);
  const sb = Buffer.from(s, 'latin1');

  // Steps 4-8: digest B = H(P S P).
  const b = createHash(algorithm).update(p).update(sb).update(p).digest();
  // Steps 1-3 and 9-12: digest A = H(P S, then B repeated to len(P) bytes, then per bit of len(P): B or P).
  const actx = createHash(algorithm).update(p).update(sb);
  let rest = p.length;
  for (; rest > size; rest -= size) actx.update(b);
  actx.update(b.subarray(0, rest));
  for (let k = p.length; k > 0; k >>>= 1) actx.update(k & 1 ? b : p);
  const a = actx.digest();
  // Steps 13-16: the P sequence, digest DP = H(P repeated len(P) times) repeated to len(P) bytes.
  const dpctx = createHash(algorithm);
  for (let k = 0; k < p.length; k++) dpctx.update(p);
  const pseq = repeatTo(dpctx.digest(), p.length);
  // Steps 17-20: the S sequence, digest DS = H(S repeated 16 + A[0] times) cut to len(S) bytes.
  const dsctx = createHash(algorithm);
  for (let k = 0; k < 16 + (a[0] ?? 0); k++) dsctx.update(sb);
  const sseq = dsctx.digest().subarray(0, sb.length);
  // Step 21: the rounds. Merging each round's update() calls into one prepared buffer gained nothing
  // measurable (making the Hash object dominates), so they stay as the spec writes them.
  let c = a;
  for (let i = 0; i < n; i++) {
    const r = createHash(algorithm).update(i & 1 ? pseq : c);
    if (i % 3 !== 0) r.update(sseq);
    if (i % 7 !== 0) r.update(pseq);
    c = r.update(i & 1 ? c : pseq).digest();
  }
  const prefix = rounds === undefined ? '' : `rounds=${n}$`;
  return `$${variant}$${prefix}${s}$${encode64(c, variant === 5 ? SHA256_ORDER : SHA512_ORDER)}`;
}

/**
 * Read an MD5-crypt or SHA-crypt hash, or null if it is not one that crypt(3) could have written: wrong
 * length or alphabet, a salt too long or with characters crypt(3) refuses, `rounds=` outside
 * 1000..999,999,999 or with leading zeros (crypt(3) writes back the clamped number, so such a hash matches
 * no password). Rounds above MAX_SHA_CRYPT_ROUNDS parse: refusing them is the caller's policy.
 */
export function parseCryptHash(hash: string): ParsedCryptHash | null {
  const md5 = MD5_RE.exec(hash);
  if (md5) return { scheme: md5[1] === '1' ? 'md5crypt' : 'apr1', salt: md5[2] ?? '' };
  const sha = SHA_RE.exec(hash);
  if (!sha) return null;
  const variant = sha[1];
  const roundsField = sha[2];
  const salt = sha[3] ?? '';
  // One regex matches either checksum length; the variant picks which one is right.
  if (hash.length - hash.lastIndexOf('$') - 1 !== (variant === '5' ? 43 : 86)) return null;
  // crypt(3) reads a salt that starts "rounds=" as a rounds field (or refuses it): it cannot have written this.
  if (salt.startsWith('rounds=')) return null;
  const rounds = roundsField === undefined ? SHA_CRYPT_DEFAULT_ROUNDS : Number(roundsField);
  if (rounds < SHA_CRYPT_MIN_ROUNDS || rounds > SHA_CRYPT_MAX_ROUNDS) return null;
  return { scheme: variant === '5' ? 'sha256crypt' : 'sha512crypt', salt, rounds, roundsExplicit: roundsField !== undefined };
}

/**
 * Does `password` (a string is taken as UTF-8) match `hash`? Recomputes the whole hash string and compares
 * it in constant time. False for a hash parseCryptHash refuses (no password can match it), and at once for
 * a password over MAX_SHA_CRYPT_PASSWORD_BYTES against SHA-crypt. Throws a
 * PortcullisError (PCL_ERR_HTPASSWD) for SHA-crypt rounds above MAX_SHA_CRYPT_ROUNDS, which callers must refuse before this point:
 * failing loudly beats holding a thread for minutes or passing the refusal off as a wrong password.
 */
export function verifyCrypt(password: string | Buffer, hash: string): boolean {
  const parsed = parseCryptHash(hash);
  if (parsed === null) return false;
  let computed: string;
  switch (parsed.scheme) {
    case 'md5crypt':
      computed = md5Crypt(password, parsed.salt, '$1$');
      break;
    case 'apr1':
      computed = md5Crypt(password, parsed.salt, '$apr1$');
      break;
    case 'sha256crypt':
    case 'sha512crypt':
      if (parsed.rounds > MAX_SHA_CRYPT_ROUNDS) {
        throw new PortcullisError('PCL_ERR_HTPASSWD', `SHA-crypt rounds=${parsed.rounds} is above the ${MAX_SHA_CRYPT_ROUNDS} accepted`);
      }
      if (bytes(password).length > MAX_SHA_CRYPT_PASSWORD_BYTES) return false;
      computed = shaCrypt(password, parsed.salt, parsed.scheme === 'sha256crypt' ? 5 : 6, parsed.roundsExplicit ? parsed.rounds : undefined);
      break;
  }
  const expected = Buffer.from(hash, 'latin1');
  const actual = Buffer.from(computed, 'latin1');
  return expected.length === actual.length && timingSafeEqual(expected, actual);
}

/**
 * A hash of `scheme` (at `rounds`, for SHA-crypt) that parseCryptHash accepts, with a random salt of the
 * longest length and a random checksum: no password matches it in practice, and checking one against it
 * costs what checking one against a real hash of the same scheme and rounds costs. For the unknown-user
 * check, which must take as long as a known user's. Rounds are written as crypt(3) does, only when not the
 * default; MD5-crypt has none and ignores `rounds`.
 */
export function dummyCryptHash(scheme: CryptScheme, rounds: number, random: (n: number) => Buffer): string {
  const chars = (n: number, alphabet: string = ITOA64): string => {
    let out = '';
    for (const b of random(n)) out += alphabet[b % alphabet.length];
    return out;
  };
  // The checksum's last character carries only the bits left over (see MD5_RE and SHA_RE).
  switch (scheme) {
    case 'md5crypt':
    case 'apr1':
      return `${scheme === 'apr1' ? '$apr1$' : '$1$'}${chars(MD5_SALT_MAX)}$${chars(21)}${chars(1, './01')}`;
    case 'sha256crypt':
    case 'sha512crypt': {
      const field = rounds === SHA_CRYPT_DEFAULT_ROUNDS ? '' : `rounds=${rounds}$`;
      const sum = scheme === 'sha256crypt' ? `${chars(42)}${chars(1, './0123456789ABCD')}` : `${chars(85)}${chars(1, './01')}`;
      return `$${scheme === 'sha256crypt' ? 5 : 6}$${field}${chars(SHA_SALT_MAX)}$${sum}`;
    }
  }
}

const NUL = Buffer.alloc(1);

function bytes(password: string | Buffer): Buffer {
  return typeof password === 'string' ? Buffer.from(password, 'utf8') : password;
}

/** The salt crypt(3) uses: up to the first `$`, at most `max` characters. Throws for characters it refuses. */
function cryptSalt(salt: string, max: number): string {
  const dollar = salt.indexOf('$');
  const s = (dollar === -1 ? salt : salt.slice(0, dollar)).slice(0, max);
  if (!SALT_CHAR_RE.test(s)) throw new PortcullisError('PCL_ERR_HTPASSWD', 'crypt salt may hold only printable ASCII other than $:;!*\\');
  return s;
}

/** `digest` repeated and cut to `length` bytes (step 16). */
function repeatTo(digest: Buffer, length: number): Buffer {
  const out = Buffer.alloc(length);
  for (let off = 0; off < length; off += digest.length) digest.copy(out, off, 0, Math.min(digest.length, length - off));
  return out;
}

/** The crypt base64 of `digest` with its bytes taken in `order`; a final group of k < 3 bytes gives k + 1 characters. */
function encode64(digest: Buffer, order: readonly number[]): string {
  let out = '';
  for (let g = 0; g < order.length; g += 3) {
    const group = order.slice(g, g + 3);
    let w = 0;
    for (const index of group) w = (w << 8) | (digest[index] ?? 0);
    for (let k = 0; k <= group.length; k++) {
      out += ITOA64[w & 0x3f];
      w >>>= 6;
    }
  }
  return out;
}
