import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { describe, it } from 'node:test';
import { randomBytes } from 'node:crypto';
import {
  MAX_SHA_CRYPT_PASSWORD_BYTES,
  MAX_SHA_CRYPT_ROUNDS,
  SHA_CRYPT_MAX_ROUNDS,
  dummyCryptHash,
  md5Crypt,
  parseCryptHash,
  shaCrypt,
  verifyCrypt,
} from '../src/auth/crypt.js';
import { PortcullisError } from '../src/errors.js';

// ------------------------------------------------------------------------------------------ published vectors

/** A crypt(3) setting as the vectors give it: `$5$[rounds=N$]salt`. */
function setting(s: string): { variant: 5 | 6; salt: string; rounds: number | undefined } {
  const m = /^\$([56])\$(?:rounds=(\d+)\$)?(.*)$/.exec(s);
  assert.ok(m, s);
  return { variant: m[1] === '5' ? 5 : 6, salt: m[3] ?? '', rounds: m[2] === undefined ? undefined : Number(m[2]) };
}

// Drepper, "Unix crypt using SHA-256 and SHA-512" (https://www.akkadia.org/drepper/SHA-crypt.txt), the test
// vectors at its end, also glibc's crypt/sha256c-test.c and sha512c-test.c: [setting, password, result].
// They cover the 16-character salt cut ("toolongsaltstring", "saltstringsaltstring"), rounds=10 raised to
// 1000, and rounds=77777 / 123456.
const LONG_TEXT = 'a very much longer text to encrypt.  This one even stretches over morethan one line.';
const DREPPER: ReadonlyArray<readonly [string, string, string]> = [
  ['$5$saltstring', 'Hello world!', '$5$saltstring$5B8vYYiY.CVt1RlTTf8KbXBH3hsxY/GNooZaBBGWEc5'],
  ['$5$rounds=10000$saltstringsaltstring', 'Hello world!', '$5$rounds=10000$saltstringsaltst$3xv.VbSHBb41AL9AvLeujZkZRBAwqFMz2.opqey6IcA'],
  ['$5$rounds=5000$toolongsaltstring', 'This is just a test', '$5$rounds=5000$toolongsaltstrin$Un/5jzAHMgOGZ5.mWJpuVolil07guHPvOW8mGRcvxa5'],
  ['$5$rounds=1400$anotherlongsaltstring', LONG_TEXT, '$5$rounds=1400$anotherlongsalts$Rx.j8H.h8HjEDGomFU8bDkXm3XIUnzyxf12oP84Bnq1'],
  ['$5$rounds=77777$short', 'we have a short salt string but not a short password', '$5$rounds=77777$short$JiO1O3ZpDAxGJeaDIuqCoEFysAe1mZNJRs3pw0KQRd/'],
  ['$5$rounds=123456$asaltof16chars..', 'a short string', '$5$rounds=123456$asaltof16chars..$gP3VQ/6X7UUEW3HkBn2w1/Ptq2jxPyzV/cZKmF/wJvD'],
  ['$5$rounds=10$roundstoolow', 'the minimum number is still observed', '$5$rounds=1000$roundstoolow$yfvwcWrQ8l/K0DAWyuPMDNHpIVlTQebY9l/gL972bIC'],
  ['$6$saltstring', 'Hello world!', '$6$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIFNjnQJuesI68u4OTLiBFdcbYEdFCoEOfaS35inz1'],
  [
    '$6$rounds=10000$saltstringsaltstring',
    'Hello world!',
    '$6$rounds=10000$saltstringsaltst$OW1/O6BYHV6BcXZu8QVeXbDWra3Oeqh0sbHbbMCVNSnCM/UrjmM0Dp8vOuZeHBy/YTBmSK6H9qs/y3RnOaw5v.',
  ],
  [
    '$6$rounds=5000$toolongsaltstring',
    'This is just a test',
    '$6$rounds=5000$toolongsaltstrin$lQ8jolhgVRVhY4b5pZKaysCLi0QBxGoNeKQzQ3glMhwllF7oGDZxUhx1yxdYcz/e1JSbq3y6JMxxl8audkUEm0',
  ],
  [
    '$6$rounds=1400$anotherlongsaltstring',
    LONG_TEXT,
    '$6$rounds=1400$anotherlongsalts$POfYwTEok97VWcjxIiSOjiykti.o/pQs.wPvMxQ6Fm7I6IoYN3CmLs66x9t0oSwbtEW7o7UmJEiDwGqd8p4ur1',
  ],
  [
    '$6$rounds=77777$short',
    'we have a short salt string but not a short password',
    '$6$rounds=77777$short$WuQyW2YR.hBNpjjRhpYD/ifIw05xdfeEyQoMxIXbkvr0gge1a1x3yRULJ5CCaUeOxFmtlcGZelFl5CxtgfiAc0',
  ],
  [
    '$6$rounds=123456$asaltof16chars..',
    'a short string',
    '$6$rounds=123456$asaltof16chars..$BtCwjqMJGx5hrJhZywWvt0RLE8uZ4oPwcelCjmw2kSYu.Ec6ycULevoBK25fs2xXgMNrCzIMVcgEJAstJeonj1',
  ],
  [
    '$6$rounds=10$roundstoolow',
    'the minimum number is still observed',
    '$6$rounds=1000$roundstoolow$kUMsbe306n21p9R.FRkW3IGn.S9NPN0x50YhH1xhLsPuWGsUSklZt58jaTfF4ZEQpyUNGc0dqbpBYYBaHHrsX.',
  ],
];

// MD5-crypt: Apache's password_encryptions documentation (`htpasswd -nbm myName myPassword`), FreeBSD's
// lib/libcrypt test (0.s0.l33t), and Python passlib's md5_crypt / apr_md5_crypt test vectors (the last one a
// UTF-8 password).
const MD5: ReadonlyArray<readonly [string, string]> = [
  ['myPassword', '$apr1$r31.....$HqJZimcKQFAMYayBlzkrA/'],
  ['t\u00e1\u0411\u2113\u0259', '$apr1$bzYrOHUx$a1FcpXuQDJV3vPY20CS6N1'],
  ['0.s0.l33t', '$1$deadbeef$0Huu6KHrKLVWfqa4WljDE0'],
  ['', '$1$dOHYPKoP$tnxS1T8Q6VVn3kpV8cN6o.'],
  [' ', '$1$m/5ee7ol$bZn0kIBFipq39e.KDXX8I0'],
  ['test', '$1$ec6XvcoW$ghEtNK2U1MC5l.Dwgi3020'],
  ['Compl3X AlphaNu3meric', '$1$nX1e7EeI$ljQn72ZUgt6Wxd9hfvHdV0'],
  ['4lpHa N|_|M3r1K W/ Cur5Es: #$%(*)(*%#', '$1$jQS7o98J$V6iTcr71CGgwW2laf17pi1'],
  ['test', '$1$SuMrG47N$ymvzYjr7QcEQjaK5m1PGx1'],
];

/** Vectors whose rounds make them cost a second or more to repeat. */
const SLOW = /rounds=(10000|77777|123456)\$/;

function md5Parts(hash: string): { magic: '$1$' | '$apr1$'; salt: string } {
  const m = /^(\$1\$|\$apr1\$)([^$]*)\$/.exec(hash);
  assert.ok(m, hash);
  return { magic: m[1] === '$1$' ? '$1$' : '$apr1$', salt: m[2] ?? '' };
}

describe('shaCrypt: the SHA-crypt specification vectors', () => {
  for (const [set, password, expected] of DREPPER) {
    it(`${set} (${JSON.stringify(password.slice(0, 24))})`, () => {
      const { variant, salt, rounds } = setting(set);
      assert.equal(shaCrypt(password, salt, variant, rounds), expected);
      // Reading the result back must use its cut salt and raised rounds (the slow ones would only repeat this).
      if (!SLOW.test(set)) assert.equal(verifyCrypt(password, expected), true);
    });
  }

  it('cuts the salt at 16 characters and at a "$"', () => {
    const [, password, expected] = DREPPER[2]!; // toolongsaltstring
    assert.equal(shaCrypt(password, 'toolongsaltstrin', 5, 5000), expected);
    assert.equal(shaCrypt(password, 'toolongsaltstrin$whatever', 5, 5000), expected);
  });

  it('writes rounds=N$ exactly when rounds are given, also at the default 5000 (libxcrypt vector)', () => {
    const implicit = '$5$saltstring$5B8vYYiY.CVt1RlTTf8KbXBH3hsxY/GNooZaBBGWEc5';
    assert.equal(shaCrypt('Hello world!', 'saltstring', 5), implicit);
    assert.equal(shaCrypt('Hello world!', 'saltstring', 5, 5000), '$5$rounds=5000$saltstring$5B8vYYiY.CVt1RlTTf8KbXBH3hsxY/GNooZaBBGWEc5');
    assert.equal(verifyCrypt('Hello world!', '$5$rounds=5000$saltstring$5B8vYYiY.CVt1RlTTf8KbXBH3hsxY/GNooZaBBGWEc5'), true);
  });

  it('rejects wrong passwords, including ones that differ in length or by one byte', () => {
    for (const [, password, expected] of DREPPER.filter(([set]) => !SLOW.test(set))) {
      for (const wrong of [`${password}x`, password.slice(0, -1), `${password.slice(0, -1)}${password.endsWith('!') ? '?' : '!'}`, '']) {
        assert.equal(verifyCrypt(wrong, expected), false, `${JSON.stringify(wrong)} against ${expected}`);
      }
    }
  });

  it('reads a Buffer as the password bytes, and a string as UTF-8 (musl crypt_sha512.c and libc-test vectors)', () => {
    const raw = Buffer.from('Xy01@#\x01\x02\x80\x7f\xff\r\n\x81\t !', 'latin1'); // not valid UTF-8
    const rawHash = '$6$rounds=1234$abc0123456789$BCpt8zLrc/RcyuXmCDOE1ALqMXB2MH6n1g891HhFj8.w7LxGv.FTkqq6Vxc/km3Y0jE0j24jY5PIv/oOu6reg1';
    assert.equal(shaCrypt(raw, 'abc0123456789', 6, 1234), rawHash);
    assert.equal(verifyCrypt(raw, rawHash), true);
    assert.equal(verifyCrypt(raw.toString('latin1'), rawHash), false); // as UTF-8 these are other bytes
    assert.equal(shaCrypt(Buffer.from('pässwörd'), 'salt', 5), shaCrypt('pässwörd', 'salt', 5));
    // Empty password and empty salt.
    assert.equal(shaCrypt('', '', 6), '$6$$/chiBau24cE26QQVW3IfIe68Xu5.JQ4E8Ie7lcRLwqxO5cxGuBhqF2HmTL.zWJ9zjChg3yJYFXeGBQ2y3Ba1d1');
  });

  it('refuses non-integer rounds and salt characters crypt(3) refuses', () => {
    assert.throws(() => shaCrypt('x', 'salt', 5, 1.5), PortcullisError);
    assert.throws(() => shaCrypt('x', 'salt', 6, Number.NaN), PortcullisError);
    for (const salt of ['a:b', 'a b', 'a;b', 'a!b', 'a*b', 'a\\b', 'sälz', 'a\nb']) {
      assert.throws(() => shaCrypt('x', salt, 5), PortcullisError, JSON.stringify(salt));
      assert.throws(() => md5Crypt('x', salt, '$1$'), PortcullisError, JSON.stringify(salt));
    }
  });
});

describe('md5Crypt: known MD5-crypt and Apache apr1 vectors', () => {
  for (const [password, expected] of MD5) {
    it(`${expected} (${JSON.stringify(password)})`, () => {
      const { magic, salt } = md5Parts(expected);
      assert.equal(md5Crypt(password, salt, magic), expected);
      assert.equal(verifyCrypt(password, expected), true);
      assert.equal(verifyCrypt(`${password}.`, expected), false);
      assert.equal(verifyCrypt(`x${password.slice(1)}`, expected), false);
    });
  }

  it('puts the magic into the digest: $1$ and $apr1$ of the same salt differ, and do not cross-verify', () => {
    const apr = md5Crypt('myPassword', 'r31.....', '$apr1$');
    const md5 = md5Crypt('myPassword', 'r31.....', '$1$');
    assert.notEqual(apr.slice('$apr1$'.length), md5.slice('$1$'.length));
    assert.equal(verifyCrypt('myPassword', `$1$${apr.slice('$apr1$'.length)}`), false);
  });

  it('cuts the salt at 8 characters and at a "$"', () => {
    const full = md5Crypt('secret', '12345678', '$1$');
    assert.equal(md5Crypt('secret', '123456789abc', '$1$'), full);
    assert.equal(md5Crypt('secret', '12345678$rest', '$1$'), full);
    assert.equal(md5Crypt('secret', '123$45678', '$apr1$'), md5Crypt('secret', '123', '$apr1$'));
    assert.match(md5Crypt('secret', '123$45678', '$apr1$'), /^\$apr1\$123\$[./0-9A-Za-z]{22}$/);
  });
});

// ------------------------------------------------------------------------------------------ parseCryptHash

const SHA256_HASH = '$5$saltstring$5B8vYYiY.CVt1RlTTf8KbXBH3hsxY/GNooZaBBGWEc5';
const SHA512_HASH = '$6$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIFNjnQJuesI68u4OTLiBFdcbYEdFCoEOfaS35inz1';
const SHA256_SUM = SHA256_HASH.slice(SHA256_HASH.lastIndexOf('$') + 1);
const SHA512_SUM = SHA512_HASH.slice(SHA512_HASH.lastIndexOf('$') + 1);

describe('parseCryptHash', () => {
  it('reads scheme, salt and rounds', () => {
    assert.deepEqual(parseCryptHash('$1$dOHYPKoP$tnxS1T8Q6VVn3kpV8cN6o.'), { scheme: 'md5crypt', salt: 'dOHYPKoP' });
    assert.deepEqual(parseCryptHash('$apr1$r31.....$HqJZimcKQFAMYayBlzkrA/'), { scheme: 'apr1', salt: 'r31.....' });
    assert.deepEqual(parseCryptHash('$1$$LP5.V3ajGqHDdXW6XwZQy.'), { scheme: 'md5crypt', salt: '' });
    assert.deepEqual(parseCryptHash(SHA256_HASH), { scheme: 'sha256crypt', salt: 'saltstring', rounds: 5000, roundsExplicit: false });
    assert.deepEqual(parseCryptHash(`$5$rounds=5000$saltstring$${SHA256_SUM}`), {
      scheme: 'sha256crypt',
      salt: 'saltstring',
      rounds: 5000,
      roundsExplicit: true,
    });
    assert.deepEqual(parseCryptHash(`$6$rounds=1000$$${SHA512_SUM}`), { scheme: 'sha512crypt', salt: '', rounds: 1000, roundsExplicit: true });
    assert.deepEqual(parseCryptHash(`$6$rounds=123456$asaltof16chars..$${SHA512_SUM}`), {
      scheme: 'sha512crypt',
      salt: 'asaltof16chars..',
      rounds: 123456,
      roundsExplicit: true,
    });
    // Above MAX_SHA_CRYPT_ROUNDS but within the spec: it parses; refusing it is the caller's policy.
    assert.deepEqual(parseCryptHash(`$5$rounds=999999999$a-b_c$${SHA256_SUM}`), {
      scheme: 'sha256crypt',
      salt: 'a-b_c',
      rounds: 999_999_999,
      roundsExplicit: true,
    });
  });

  const MALFORMED: ReadonlyArray<readonly [string, string]> = [
    ['empty', ''],
    ['plaintext', 'myPassword'],
    ['DES crypt', 'rqXexS6ZhobKA'],
    ['{SHA}', '{SHA}VBPuJHI7uixaa6LQGWx4s+5GKNE='],
    ['bcrypt', '$2y$05$c4WoMPo3SXsafkva.HHa6uXQZWr7oboPiC2bT/r7q1BB8I2s0BRqC'],
    ['unknown $7$', `$7$saltstring$${SHA256_SUM}`],
    ['uppercase magic', '$APR1$r31.....$HqJZimcKQFAMYayBlzkrA/'],
    ['MD5 checksum with a bad character', '$1$dOHYPKoP$tnxS1T8Q6VVn3kpV8cN6o!'],
    ['MD5 checksum one short', '$1$dOHYPKoP$tnxS1T8Q6VVn3kpV8cN6o'],
    ['MD5 checksum one long', '$1$dOHYPKoP$tnxS1T8Q6VVn3kpV8cN6o..'],
    ['MD5 checksum ending in bits crypt never sets', '$1$dOHYPKoP$tnxS1T8Q6VVn3kpV8cN6oz'],
    ['MD5 without checksum', '$1$dOHYPKoP'],
    ['MD5 with empty checksum', '$1$dOHYPKoP$'],
    ['MD5 salt of 9', '$1$dOHYPKoPx$tnxS1T8Q6VVn3kpV8cN6o.'],
    ['salt with a colon', '$1$dOH:YPKo$tnxS1T8Q6VVn3kpV8cN6o.'],
    ['salt with a space', '$apr1$r31 ....$HqJZimcKQFAMYayBlzkrA/'],
    ['salt with non-ASCII', '$apr1$r31..é.$HqJZimcKQFAMYayBlzkrA/'],
    ['trailing newline', '$apr1$r31.....$HqJZimcKQFAMYayBlzkrA/\n'],
    ['leading space', ' $apr1$r31.....$HqJZimcKQFAMYayBlzkrA/'],
    ['$5$ with a SHA-512 checksum', `$5$saltstring$${SHA512_SUM}`],
    ['$6$ with a SHA-256 checksum', `$6$saltstring$${SHA256_SUM}`],
    ['SHA-256 checksum ending in bits crypt never sets', `${SHA256_HASH.slice(0, -1)}z`],
    ['SHA-512 checksum ending in bits crypt never sets', `${SHA512_HASH.slice(0, -1)}2`],
    ['SHA-256 checksum one short', SHA256_HASH.slice(0, -1)],
    ['SHA salt of 17', `$5$toolongsaltstring$${SHA256_SUM}`],
    ['rounds below 1000', `$5$rounds=999$saltstring$${SHA256_SUM}`],
    ['rounds=0', `$5$rounds=0$saltstring$${SHA256_SUM}`],
    ['rounds with a leading zero', `$5$rounds=05000$saltstring$${SHA256_SUM}`],
    ['rounds above the spec maximum', `$6$rounds=1000000000$saltstring$${SHA512_SUM}`],
    ['rounds not a number', `$5$rounds=abc$${SHA256_SUM}`],
    ['rounds field without a salt field', `$5$rounds=5000$${SHA256_SUM}`],
    ['an extra field', `$5$rounds=5000$salt$extra$${SHA256_SUM}`],
  ];
  for (const [what, hash] of MALFORMED) {
    it(`null for ${what}; verifyCrypt is false`, () => {
      assert.equal(parseCryptHash(hash), null);
      assert.equal(verifyCrypt('myPassword', hash), false);
    });
  }
});

describe('verifyCrypt: the rounds bound', () => {
  it('sits above common generators and far below the spec maximum', () => {
    assert.ok(MAX_SHA_CRYPT_ROUNDS >= 656_000, 'passlib sha512_crypt writes rounds=656000 by default');
    assert.ok(MAX_SHA_CRYPT_ROUNDS <= 10_000_000, 'a verification must not hold a worker for minutes');
    assert.ok(MAX_SHA_CRYPT_ROUNDS < SHA_CRYPT_MAX_ROUNDS);
  });

  it('throws at once for rounds above MAX_SHA_CRYPT_ROUNDS instead of computing them', { timeout: 5_000 }, () => {
    for (const rounds of [MAX_SHA_CRYPT_ROUNDS + 1, SHA_CRYPT_MAX_ROUNDS]) {
      const started = process.hrtime.bigint();
      assert.throws(() => verifyCrypt('x', `$6$rounds=${rounds}$salt$${SHA512_SUM}`), PortcullisError);
      assert.throws(() => verifyCrypt('x', `$5$rounds=${rounds}$salt$${SHA256_SUM}`), PortcullisError);
      assert.ok(process.hrtime.bigint() - started < 100_000_000n, 'refused without hashing');
    }
  });
});

describe('verifyCrypt: the password length bound', () => {
  it(`checks SHA-crypt passwords up to ${MAX_SHA_CRYPT_PASSWORD_BYTES} bytes, and refuses longer ones without computing`, () => {
    for (const variant of [5, 6] as const) {
      const longest = 'é'.repeat(MAX_SHA_CRYPT_PASSWORD_BYTES / 2);
      assert.equal(verifyCrypt(longest, shaCrypt(longest, 'salt', variant)), true);
      const over = `${longest}x`;
      assert.equal(verifyCrypt(over, shaCrypt(over, 'salt', variant)), false, 'even the right password, when over the bound');
    }
  });

  it('has no bound for MD5-crypt, whose work grows only linearly', () => {
    const long = 'x'.repeat(1000);
    assert.equal(verifyCrypt(long, md5Crypt(long, 'salt', '$apr1$')), true);
  });
});

describe('dummyCryptHash', () => {
  it('gives hashes parseCryptHash accepts (so a check does the full work) with random salts of the longest length', () => {
    const cases = [
      ['md5crypt', 5000, { saltLength: 8, rounds: undefined }],
      ['apr1', 5000, { saltLength: 8, rounds: undefined }],
      ['sha256crypt', 5000, { saltLength: 16, rounds: 5000 }],
      ['sha512crypt', 5000, { saltLength: 16, rounds: 5000 }],
      ['sha256crypt', 1000, { saltLength: 16, rounds: 1000 }],
      ['sha512crypt', MAX_SHA_CRYPT_ROUNDS, { saltLength: 16, rounds: MAX_SHA_CRYPT_ROUNDS }],
    ] as const;
    for (const [scheme, rounds, want] of cases) {
      // Many draws, so every checksum ending the random bytes can pick is seen to parse.
      for (let i = 0; i < 200; i++) {
        const hash = dummyCryptHash(scheme, rounds, randomBytes);
        const parsed = parseCryptHash(hash);
        assert.ok(parsed, hash);
        assert.equal(parsed.scheme, scheme);
        assert.equal(parsed.salt.length, want.saltLength);
        if ('rounds' in parsed) {
          assert.equal(parsed.rounds, want.rounds);
          assert.equal(parsed.roundsExplicit, rounds !== 5000, 'rounds=N$ only when not the default, as crypt(3) writes it');
        }
      }
      if (rounds <= 5000) assert.equal(verifyCrypt('', dummyCryptHash(scheme, rounds, randomBytes)), false);
    }
    assert.notEqual(dummyCryptHash('apr1', 5000, randomBytes), dummyCryptHash('apr1', 5000, randomBytes));
  });
});

// ------------------------------------------------------------------------------------------ against real tools

// The tools below are required (.ci/run installs them): Python's crypt module is glibc/libxcrypt crypt(3),
// the code nginx calls (removed in Python 3.13: the cross-check then fails and says so).

// Passwords around the lengths where the algorithms change branch (MD5's 16-byte blocks, SHA-256's 32 and
// SHA-512's 64 in steps 9-10 and 16), non-ASCII UTF-8, and 200 bytes in ASCII and in UTF-8.
const PASSWORDS: readonly string[] = [
  'password',
  'pässwörd',
  'パスワード🔑',
  'with:colons and spaces',
  'a'.repeat(15),
  'b'.repeat(16),
  'c'.repeat(17),
  'd'.repeat(32),
  'e'.repeat(33),
  'f'.repeat(63),
  'g'.repeat(64),
  'h'.repeat(65),
  'x'.repeat(200),
  'é'.repeat(100), // 200 bytes
];

function tool(cmd: string, args: string[], input?: string): string {
  const r = spawnSync(cmd, args, { encoding: 'utf8', input: input ?? '' });
  assert.equal(r.status, 0, `${cmd} ${args.slice(0, -1).join(' ')}: ${r.stderr}`);
  return r.stdout.trim();
}

/** Our hash of `password` with the salt and rounds read from `hash`. */
function recompute(password: string, hash: string): string {
  const parsed = parseCryptHash(hash);
  assert.ok(parsed, `not an MD5-crypt or SHA-crypt hash: ${hash}`);
  switch (parsed.scheme) {
    case 'md5crypt':
      return md5Crypt(password, parsed.salt, '$1$');
    case 'apr1':
      return md5Crypt(password, parsed.salt, '$apr1$');
    default:
      return shaCrypt(password, parsed.salt, parsed.scheme === 'sha256crypt' ? 5 : 6, parsed.roundsExplicit ? parsed.rounds : undefined);
  }
}

/** Each password must give the tool's hash, verify against it, and (for the first few) a wrong one must not. */
function agree(cases: ReadonlyArray<readonly [password: string, hash: string, ours: string]>): void {
  cases.forEach(([password, hash, ours], i) => {
    const what = `${JSON.stringify(password)} -> ${hash}`;
    assert.equal(ours, hash, what);
    if (i < 3) {
      // verifyCrypt reads salt and rounds back from the hash; a full recomputation each, so only a few.
      assert.equal(verifyCrypt(password, hash), true, what);
      assert.equal(verifyCrypt(`${password}x`, hash), false, what);
    }
  });
}

describe('cross-checks against openssl passwd', () => {
  // openssl takes SHA-crypt rounds inside -salt, as crypt(3) settings do.
  const CASES: ReadonlyArray<readonly [flag: '-1' | '-apr1' | '-5' | '-6', salt: string]> = [
    ['-1', 'S'],
    ['-1', 'abcdefgh'],
    ['-apr1', 'x./Y09Zz'],
    ['-apr1', 'ab-c'],
    ['-5', 'saltsaltsaltsalt'],
    ['-5', 'rounds=1000$r'],
    ['-6', 'q'],
    ['-6', 'rounds=1500$saltsaltsaltsalt'],
  ];
  for (const [flag, salt] of CASES) {
    it(`openssl passwd ${flag} -salt ${salt}`, () => {
      const m = /^(?:rounds=(\d+)\$)?(.*)$/.exec(salt);
      const rounds = m?.[1] === undefined ? undefined : Number(m[1]);
      const bare = m?.[2] ?? '';
      // -stdin: one password per line, one hash per line.
      const hashes = tool('openssl', ['passwd', flag, '-salt', salt, '-stdin'], `${PASSWORDS.join('\n')}\n`).split('\n');
      assert.equal(hashes.length, PASSWORDS.length);
      agree(
        PASSWORDS.map((password, i) => {
          const ours =
            flag === '-1' || flag === '-apr1'
              ? md5Crypt(password, salt, flag === '-1' ? '$1$' : '$apr1$')
              : shaCrypt(password, bare, flag === '-5' ? 5 : 6, rounds);
          return [password, hashes[i] ?? '', ours] as const;
        }),
      );
    });
  }

  it('agrees on the empty password for MD5-crypt (openssl 3.0 prints <NULL> for SHA-crypt)', () => {
    assert.equal(md5Crypt('', 'abc', '$1$'), tool('openssl', ['passwd', '-1', '-salt', 'abc', '']));
    assert.equal(md5Crypt('', 'abc', '$apr1$'), tool('openssl', ['passwd', '-apr1', '-salt', 'abc', '']));
  });
});

describe('cross-checks against htpasswd -nbm (apr1, random salts)', () => {
  it('verifies what Apache htpasswd writes, and recomputes it exactly', () => {
    agree(
      ['', ...PASSWORDS].map((password) => {
        const line = tool('htpasswd', ['-nbm', 'user', password]);
        assert.match(line, /^user:\$apr1\$/);
        const hash = line.slice('user:'.length);
        return [password, hash, recompute(password, hash)] as const;
      }),
    );
  });
});

describe('cross-checks against crypt(3) through python3', () => {
  // A bare method name stands for a random salt from crypt.mksalt (default rounds).
  const SETTINGS: readonly string[] = [
    'MD5',
    '$1$s$',
    '$1$abcdefgh$',
    'SHA256',
    '$5$x-y_z$',
    '$5$rounds=1000$saltsaltsaltsalt$',
    '$5$rounds=5000$explicit$',
    'SHA512',
    '$6$$',
    '$6$rounds=1001$odd$',
    '$6$rounds=2345$sixteencharsalt$',
  ];
  for (const set of SETTINGS) {
    it(`crypt.crypt(password, ${set})`, () => {
      const passwords = ['', ...PASSWORDS];
      // One python3 for all passwords: JSON in, one hash per line out.
      const script = [
        'import crypt, json, sys',
        'for p, s in json.load(sys.stdin):',
        '    print(crypt.crypt(p, s if s.startswith("$") else crypt.mksalt(getattr(crypt, "METHOD_" + s))))',
      ].join('\n');
      const out = tool('python3', ['-W', 'ignore', '-c', script], JSON.stringify(passwords.map((p) => [p, set]))).split('\n');
      assert.equal(out.length, passwords.length);
      agree(passwords.map((password, i) => [password, out[i] ?? '', recompute(password, out[i] ?? '')] as const));
    });
  }
});
