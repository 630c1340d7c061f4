import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { describe, it } from 'node:test';
import bcrypt from 'bcryptjs';
import { PortcullisError } from '../src/errors.js';
import { MAX_SHA_CRYPT_ROUNDS, parseCryptHash } from '../src/auth/crypt.js';
import {
  bcryptCost,
  classifyHash,
  dummyBcryptHash,
  dummyEntry,
  formatHtpasswdLine,
  hashPassword,
  parseHtpasswd,
  removeHtpasswdUser,
  setHtpasswdUser,
  verifyPassword,
  weakHashes,
  type HtpasswdFile,
} from '../src/auth/htpasswd.js';

const B = bcrypt.hashSync('secret', 4); // $2b$04$...
const A = `$2a$${B.slice(4)}`;
const Y = `$2y$${B.slice(4)}`;
const SHA_PASSWORD = `{SHA}${createHash('sha1').update('password').digest('base64')}`;
// Published vectors (see crypt.test.ts): Apache's documentation, FreeBSD's libcrypt test, Drepper's SHA-crypt spec.
const APR1 = '$apr1$r31.....$HqJZimcKQFAMYayBlzkrA/'; // myPassword
const MD5 = '$1$deadbeef$0Huu6KHrKLVWfqa4WljDE0'; // 0.s0.l33t
const SHA256 = '$5$saltstring$5B8vYYiY.CVt1RlTTf8KbXBH3hsxY/GNooZaBBGWEc5'; // Hello world!
const SHA512 = '$6$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIFNjnQJuesI68u4OTLiBFdcbYEdFCoEOfaS35inz1'; // Hello world!
const SHA256_1400 = '$5$rounds=1400$anotherlongsalts$Rx.j8H.h8HjEDGomFU8bDkXm3XIUnzyxf12oP84Bnq1';
const SHA512_SUM = SHA512.slice(SHA512.lastIndexOf('$') + 1);
/** yescrypt, Debian's default for /etc/shadow: a scheme we do not read. */
const YESCRYPT = '$y$j9T$F5Jx5fExrKuJdZBHeG3PW.$Kx3.Zf6hd2E3Bk6KpDBW5yOCjd2bYHx4nz8ePhXyHh9';

function htpasswdError(fn: () => unknown): string {
  let caught: unknown;
  try {
    fn();
  } catch (err) {
    caught = err;
  }
  assert.ok(caught instanceof PortcullisError, 'expected a PortcullisError');
  assert.equal(caught.code, 'PCL_ERR_HTPASSWD');
  return caught.message;
}

describe('parseHtpasswd', () => {
  it('reads bcrypt ($2a$ $2b$ $2y$) and {SHA} entries, skipping blanks and comments', () => {
    const text = `# team\n\nalice:${A}\n  bob:${B}  \r\ncarol:${Y}\r\n#dave:${Y}\nerin:${SHA_PASSWORD}\n`;
    const users = parseHtpasswd(text);
    assert.deepEqual([...users.keys()], ['alice', 'bob', 'carol', 'erin']);
    assert.deepEqual(users.get('alice'), { hash: A, scheme: 'bcrypt', line: 3 });
    assert.deepEqual(users.get('bob'), { hash: B, scheme: 'bcrypt', line: 4 });
    assert.equal(users.get('carol')?.hash, Y);
    assert.deepEqual(users.get('erin'), { hash: SHA_PASSWORD, scheme: 'sha1', line: 7 });
  });

  it('accepts an empty file and a file without a final newline', () => {
    assert.equal(parseHtpasswd('').size, 0);
    assert.equal(parseHtpasswd(`alice:${Y}`).get('alice')?.hash, Y);
  });

  it('splits on the first colon: the rest of the line is the hash', () => {
    const msg = htpasswdError(() => parseHtpasswd(`a:b:${Y}\n`));
    assert.match(msg, /^htpasswd line 1: user "a": unsupported hash scheme/);
  });

  it('refuses other schemes by name, with source file, line number and user', () => {
    const msg = htpasswdError(() =>
      parseHtpasswd(`alice:${Y}\n# c\nbob:${YESCRYPT}\n`, 'auth/htpasswd'),
    );
    assert.equal(msg, 'auth/htpasswd line 3: user "bob": unsupported hash scheme $y$ (use bcrypt: portcullis htpasswd add)');
  });

  it('names each refused scheme', () => {
    const cases: Array<[string, RegExp]> = [
      ['$y$j9T$abc$def', /scheme \$y\$/],
      [YESCRYPT, /^unsupported hash scheme \$y\$ \(use bcrypt: portcullis htpasswd add\)$/],
      ['$7$CU..../....saltsalt$abc', /scheme \$7\$/],
      ['$sha1$40000$salt$abc', /scheme \$sha1\$/],
      ['rqXexS6ZhobKA', /^unsupported hash scheme DES crypt \(use bcrypt: portcullis htpasswd add\)$/],
      ['{SSHA}abcdefghijklmnopqrstuvwxyz012345', /scheme \{SSHA\}/],
      ['5G1OI2SwmK4v6', /scheme DES crypt/],
      ['hunter2', /plaintext/],
      ['', /empty hash/],
      ['$2y$04$tooshort', /malformed bcrypt hash/],
      ['$2x$04$abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0', /scheme \$2x\$/],
      ['$2y$03$' + 'a'.repeat(53), /malformed bcrypt hash/],
      ['{SHA}not-base64', /malformed \{SHA\} hash/],
    ];
    for (const [hash, re] of cases) {
      const c = classifyHash(hash);
      assert.ok('problem' in c, `${hash} should be refused`);
      assert.match(c.problem, re, hash);
    }
  });

  it('refuses the whole file and lists every bad line without echoing any hash', () => {
    const msg = htpasswdError(() => parseHtpasswd(`alice:${Y}\nnocolon\n:${Y}\nbob:plain-secret\nal ice\n`, 'f'));
    const lines = msg.split('\n');
    assert.deepEqual(lines, [
      'f line 2: expected user:hash',
      'f line 3: empty user name',
      'f line 4: user "bob": unsupported hash scheme (plaintext?) (use bcrypt: portcullis htpasswd add)',
      'f line 5: expected user:hash',
    ]);
    assert.ok(!msg.includes('plain-secret'));
    assert.ok(!msg.includes(Y));
  });

  it('refuses duplicate users', () => {
    const msg = htpasswdError(() => parseHtpasswd(`alice:${Y}\nbob:${Y}\nalice:${B}\n`, 'f'));
    assert.equal(msg, 'f line 3: user "alice": duplicate user (also on line 1)');
  });

  it('refuses control characters in user names', () => {
    const msg = htpasswdError(() => parseHtpasswd(`al\u0001ice:${Y}\n`, 'f'));
    assert.match(msg, /control character/);
  });

  it('caps the list of problems', () => {
    const msg = htpasswdError(() => parseHtpasswd('x\n'.repeat(30), 'f'));
    assert.equal(msg.split('\n').length, 21);
    assert.match(msg, /and more bad lines \(stopped after 20\)$/);
  });
});

describe('crypt(3) schemes: files made for Apache and nginx', () => {
  it('reads $apr1$, $1$, $5$ and $6$ entries, with or without rounds, next to bcrypt and {SHA}', () => {
    const text = `apr:${APR1}\nmd5:${MD5}\ns256:${SHA256}\ns512:${SHA512}\nrounds:${SHA256_1400}\nb:${Y}\ns:${SHA_PASSWORD}\n`;
    const users = parseHtpasswd(text);
    assert.deepEqual(
      [...users].map(([u, e]) => [u, e.scheme, e.line]),
      [
        ['apr', 'apr1', 1],
        ['md5', 'md5crypt', 2],
        ['s256', 'sha256crypt', 3],
        ['s512', 'sha512crypt', 4],
        ['rounds', 'sha256crypt', 5],
        ['b', 'bcrypt', 6],
        ['s', 'sha1', 7],
      ],
    );
    assert.equal(users.get('s512')?.hash, SHA512);
  });

  it('refuses malformed ones, naming the line, the scheme and the fix', () => {
    const cases: Array<[string, string]> = [
      ['$apr1$r31.....$HqJZimcKQFAMYayBlzkrA', '$apr1$'], // checksum one short
      ['$1$deadbeef$0Huu6KHrKLVWfqa4WljDE!', '$1$'],
      ['$1$saltsalt$short', '$1$'],
      ['$5$rounds=5000$abc$def', '$5$'],
      ['$6$saltsalt$abcdefghijklmnop', '$6$'],
      [`$6$toolongsaltstring$${SHA512_SUM}`, '$6$'],
      [`$6$rounds=999$saltstring$${SHA512_SUM}`, '$6$'],
      [`$5$saltstring$${SHA512_SUM}`, '$5$'],
    ];
    for (const [hash, scheme] of cases) {
      const msg = htpasswdError(() => parseHtpasswd(`ok:${Y}\nbob:${hash}\n`, 'auth/htpasswd'));
      assert.equal(msg, `auth/htpasswd line 2: user "bob": malformed ${scheme} hash (use bcrypt: portcullis htpasswd add)`, hash);
      assert.ok(!msg.includes(hash), 'the hash is not echoed');
    }
  });

  it(`refuses SHA-crypt rounds above ${MAX_SHA_CRYPT_ROUNDS}, naming the line, the rounds and the fix`, () => {
    assert.deepEqual(classifyHash(`$6$rounds=${MAX_SHA_CRYPT_ROUNDS}$saltstring$${SHA512_SUM}`), { scheme: 'sha512crypt' });
    const msg = htpasswdError(() => parseHtpasswd(`carol:$6$rounds=5000000$saltstring$${SHA512_SUM}\n`, 'f'));
    assert.equal(msg, `f line 1: user "carol": SHA-crypt rounds=5000000 is above the ${MAX_SHA_CRYPT_ROUNDS} this proxy computes (use bcrypt: portcullis htpasswd add)`);
  });

  it('verifies each scheme', async () => {
    const cases: Array<[string, string]> = [
      [APR1, 'myPassword'],
      [MD5, '0.s0.l33t'],
      [SHA256, 'Hello world!'],
      [SHA512, 'Hello world!'],
      [SHA256_1400, 'a very much longer text to encrypt.  This one even stretches over morethan one line.'],
    ];
    for (const [hash, password] of cases) {
      const c = classifyHash(hash);
      assert.ok('scheme' in c, hash);
      assert.equal(await verifyPassword(password, { hash, scheme: c.scheme }), true, hash);
      assert.equal(await verifyPassword(`${password}!`, { hash, scheme: c.scheme }), false, hash);
      assert.equal(await verifyPassword('', { hash, scheme: c.scheme }), false, hash);
    }
  });
});

describe('dummyEntry: what an unknown user is checked against', () => {
  const file = (hashes: string[]): HtpasswdFile => new Map(hashes.map((hash, i) => {
    const c = classifyHash(hash);
    assert.ok('scheme' in c, hash);
    return [`u${i}`, { hash, scheme: c.scheme, line: i + 1 }];
  }));
  const b = (cost: number): string => `$2y$${String(cost).padStart(2, '0')}$${B.slice(7)}`;

  it('is bcrypt at the cost most users have, or the default cost for an empty file', () => {
    const d = dummyEntry(file([b(5), b(10), b(10), SHA512]), randomBytes);
    assert.equal(d.scheme, 'bcrypt');
    assert.equal(bcryptCost(d.hash), 10);
    assert.deepEqual(classifyHash(d.hash), { scheme: 'bcrypt' });
    const empty = dummyEntry(new Map(), randomBytes);
    assert.equal(bcryptCost(empty.hash), 12);
  });

  it('is the crypt scheme and rounds most users have, and a hash crypt.ts computes in full', async () => {
    const rounds = '$6$rounds=20000$';
    const r20k = `${rounds}saltstring$${SHA512_SUM}`;
    const d = dummyEntry(file([b(10), r20k, r20k.replace('saltstring', 'othersalt'), SHA512]), randomBytes);
    assert.equal(d.scheme, 'sha512crypt');
    assert.ok(d.hash.startsWith(rounds), d.hash);
    assert.deepEqual(parseCryptHash(d.hash), { scheme: 'sha512crypt', salt: parseCryptHash(d.hash)?.salt, rounds: 20_000, roundsExplicit: true });
    assert.equal(parseCryptHash(d.hash)?.salt.length, 16);
    assert.equal(await verifyPassword('anything', d), false);

    for (const [hash, scheme] of [[APR1, 'apr1'], [MD5, 'md5crypt'], [SHA256, 'sha256crypt'], [SHA512, 'sha512crypt']] as const) {
      const one = dummyEntry(file([hash]), randomBytes);
      assert.equal(one.scheme, scheme);
      const parsed = parseCryptHash(one.hash);
      assert.ok(parsed, `${one.hash} must parse, or it would be refused without any work`);
      assert.equal(parsed.scheme, scheme);
      if ('rounds' in parsed) assert.deepEqual([parsed.rounds, parsed.roundsExplicit], [5000, false]);
      assert.notEqual(dummyEntry(file([hash]), randomBytes).hash, one.hash, 'salt and checksum are random');
    }
  });

  it('is {SHA} when most users have {SHA}, and breaks ties towards the dearer scheme', () => {
    assert.equal(dummyEntry(file([SHA_PASSWORD, SHA_PASSWORD, b(4)]), randomBytes).scheme, 'sha1');
    assert.match(dummyEntry(file([SHA_PASSWORD, SHA_PASSWORD]), randomBytes).hash, /^\{SHA\}[A-Za-z0-9+/]{27}=$/);
    assert.equal(dummyEntry(file([SHA_PASSWORD, APR1]), randomBytes).scheme, 'apr1');
    assert.equal(bcryptCost(dummyEntry(file([b(4), b(6), APR1]), randomBytes).hash), 6);
    assert.equal(dummyEntry(file([b(10), SHA512]), randomBytes).scheme, 'bcrypt');
    assert.equal(dummyEntry(file([b(10), SHA256_1400.replace('1400', '900000')]), randomBytes).scheme, 'sha256crypt');
  });
});

describe('weakHashes', () => {
  it('counts {SHA}, $1$ and $apr1$ users and names the fix; bcrypt and SHA-crypt are not weak', () => {
    const users = parseHtpasswd(`a:${SHA_PASSWORD}\nb:${APR1}\nc:${APR1}\nd:${MD5}\ne:${Y}\nf:${SHA512}\n`);
    assert.deepEqual(weakHashes(users), {
      users: 4,
      message: '4 users have weak password hashes ({SHA}: 1, $apr1$: 2, $1$: 1; unsalted or fast to guess); re-set each with bcrypt: portcullis htpasswd add FILE USER',
    });
    assert.match(weakHashes(parseHtpasswd(`b:${APR1}\n`))?.message ?? '', /^1 user has a weak password hash \(\$apr1\$: 1;/);
    assert.equal(weakHashes(parseHtpasswd(`e:${Y}\nf:${SHA512}\ng:${SHA256}\n`)), null);
  });
});

describe('formatting and editing', () => {
  it('formats entries that parse back', () => {
    assert.equal(formatHtpasswdLine('alice', Y), `alice:${Y}`);
    const text = `${formatHtpasswdLine('alice', Y)}\n${formatHtpasswdLine('bob', SHA_PASSWORD)}\n`;
    assert.equal(text, `alice:${Y}\nbob:${SHA_PASSWORD}\n`);
    assert.deepEqual([...parseHtpasswd(text).keys()], ['alice', 'bob']);
  });

  it('refuses user names and hashes that would corrupt the file', () => {
    assert.match(htpasswdError(() => formatHtpasswdLine('a:b', Y)), /contains ":"/);
    assert.match(htpasswdError(() => formatHtpasswdLine('a\nb', Y)), /control character/);
    assert.match(htpasswdError(() => formatHtpasswdLine('', Y)), /empty user name/);
    assert.match(htpasswdError(() => formatHtpasswdLine('x'.repeat(256), Y)), /longer than 255 bytes/);
    assert.match(htpasswdError(() => formatHtpasswdLine('alice', `${Y}\nbob:x`)), /malformed bcrypt hash/);
  });

  it('replaces a user in place, keeps comments, drops further duplicates, appends new users', () => {
    const text = `# admins\nalice:${B}\nbob:${B}\n\nalice:${A}\n`;
    const replaced = setHtpasswdUser(text, 'alice', Y);
    assert.equal(replaced.added, false);
    assert.equal(replaced.text, `# admins\nalice:${Y}\nbob:${B}\n\n`);
    const appended = setHtpasswdUser(replaced.text, 'carol', Y);
    assert.equal(appended.added, true);
    assert.equal(appended.text, `# admins\nalice:${Y}\nbob:${B}\n\ncarol:${Y}\n`);
    assert.equal(setHtpasswdUser('', 'dave', Y).text, `dave:${Y}\n`);
  });

  it('re-sets a refused user, which is how a DES crypt user moves to bcrypt', () => {
    const text = `bob:rqXexS6ZhobKA\nalice:${Y}\n`;
    const { text: fixed } = setHtpasswdUser(text, 'bob', B);
    assert.equal(fixed, `bob:${B}\nalice:${Y}\n`);
    assert.equal(parseHtpasswd(fixed).size, 2);
  });

  it('removes every line of a user and nothing else', () => {
    const r = removeHtpasswdUser(`# c\nalice:${Y}\nbob:${B}\nalice:${A}\n`, 'alice');
    assert.deepEqual(r, { text: `# c\nbob:${B}\n`, removed: true });
    assert.deepEqual(removeHtpasswdUser(`bob:${B}\n`, 'carol'), { text: `bob:${B}\n`, removed: false });
    assert.deepEqual(removeHtpasswdUser(`bob:${B}\n`, 'bob'), { text: '', removed: true });
  });
});

describe('hashPassword and verifyPassword', () => {
  it('makes $2y$ hashes at the requested cost that verify', async () => {
    const hash = await hashPassword('pa:ss wörd', 4);
    assert.match(hash, /^\$2y\$04\$[./A-Za-z0-9]{53}$/);
    assert.equal(bcryptCost(hash), 4);
    assert.deepEqual(classifyHash(hash), { scheme: 'bcrypt' });
    assert.equal(await verifyPassword('pa:ss wörd', { hash, scheme: 'bcrypt' }), true);
    assert.equal(await verifyPassword('pa:ss word', { hash, scheme: 'bcrypt' }), false);
    // bcryptjs itself reads the $2y$ form
    assert.equal(bcrypt.compareSync('pa:ss wörd', hash), true);
  });

  it('refuses passwords over 72 bytes, counting bytes not characters', async () => {
    assert.match(await hashPassword('é'.repeat(36), 4), /^\$2y\$04\$/); // 72 bytes
    await assert.rejects(hashPassword('é'.repeat(37), 4), (err: unknown) => {
      assert.ok(err instanceof PortcullisError);
      assert.equal(err.code, 'PCL_ERR_HTPASSWD');
      assert.match(err.message, /74 bytes; bcrypt uses only the first 72/);
      return true;
    });
  });

  it('writes only costs Apache htpasswd -C accepts, 4..17', async () => {
    await assert.rejects(hashPassword('x', 3), /cost must be an integer from 4 to 17/);
    await assert.rejects(hashPassword('x', 18), /cost must be an integer from 4 to 17/);
    await assert.rejects(hashPassword('x', 4.5), /cost must be an integer/);
  });

  it('checks only the first 72 bytes of a longer password, as Apache and registry:2 do', async () => {
    const hash = bcrypt.hashSync('a'.repeat(72), 4);
    assert.equal(await verifyPassword('a'.repeat(80), { hash, scheme: 'bcrypt' }), true);
    assert.equal(await verifyPassword('a'.repeat(71), { hash, scheme: 'bcrypt' }), false);
  });

  it('verifies {SHA} entries', async () => {
    const entry = { hash: SHA_PASSWORD, scheme: 'sha1' } as const;
    assert.equal(SHA_PASSWORD, '{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g='); // Apache `htpasswd -nbs u password`
    assert.equal(await verifyPassword('password', entry), true);
    assert.equal(await verifyPassword('Password', entry), false);
  });

  it('hands bcrypt and crypt checks to the slow check it is given, and does {SHA} itself', async () => {
    const seen: string[] = [];
    const slow = async (p: string, h: string, kind: string): Promise<boolean> => {
      seen.push(`${kind} ${p} ${h}`);
      return true;
    };
    assert.equal(await verifyPassword('pw', { hash: Y, scheme: 'bcrypt' }, slow), true);
    assert.equal(await verifyPassword('pw', { hash: APR1, scheme: 'apr1' }, slow), true);
    assert.equal(await verifyPassword('pw', { hash: SHA512, scheme: 'sha512crypt' }, slow), true);
    assert.equal(await verifyPassword('password', { hash: SHA_PASSWORD, scheme: 'sha1' }, slow), true);
    assert.equal(await verifyPassword('pw', { hash: SHA_PASSWORD, scheme: 'sha1' }, slow), false);
    assert.deepEqual(seen, [`bcrypt pw ${Y}`, `crypt pw ${APR1}`, `crypt pw ${SHA512}`]);
  });
});

describe('dummyBcryptHash', () => {
  it('is a valid bcrypt hash at the given cost that matches nothing', async () => {
    const hash = dummyBcryptHash(5, randomBytes);
    assert.deepEqual(classifyHash(hash), { scheme: 'bcrypt' });
    assert.equal(bcryptCost(hash), 5);
    assert.equal(await verifyPassword('', { hash, scheme: 'bcrypt' }), false);
    assert.notEqual(dummyBcryptHash(5, randomBytes), hash);
  });
});
