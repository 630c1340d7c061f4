import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { describe, it } from 'node:test';
import bcrypt from 'bcryptjs';
import { PortcullisError } from '../src/errors.js';
import {
  bcryptCost,
  classifyHash,
  dummyBcryptHash,
  formatHtpasswdLine,
  hashPassword,
  parseHtpasswd,
  removeHtpasswdUser,
  setHtpasswdUser,
  verifyPassword,
} from '../src/auth/htpasswd.js';

const B = bcrypt.hashSync('secret', 4); // $2b$04$...
const A = `$2a$${B.slice(4)}`;
const Y = `$2y$${B.slice(4)}`;
const SHA_PASSWORD = `{SHA}${createHash('sha1').update('password').digest('base64')}`;

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
      parseHtpasswd(`alice:${Y}\n# c\nbob:$apr1$lZL6V/ci$eIMz/iKDkbtys/uU7LEK00\n`, 'auth/htpasswd'),
    );
    assert.equal(msg, 'auth/htpasswd line 3: user "bob": unsupported hash scheme $apr1$ (use bcrypt: portcullis htpasswd add)');
  });

  it('names each refused scheme', () => {
    const cases: Array<[string, RegExp]> = [
      ['$1$saltsalt$qjXMvbEw8oaL.CzflDugX/', /scheme \$1\$/],
      ['$5$rounds=5000$abc$def', /scheme \$5\$/],
      ['$6$saltsalt$abcdefghijklmnop', /scheme \$6\$/],
      ['$y$j9T$abc$def', /scheme \$y\$/],
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

  it('re-sets a refused user, which is how an $apr1$ file moves to bcrypt', () => {
    const text = `bob:$apr1$lZL6V/ci$eIMz/iKDkbtys/uU7LEK00\nalice:${Y}\n`;
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

  it('uses the bcrypt comparison it is given', async () => {
    const seen: string[] = [];
    const ok = await verifyPassword('pw', { hash: Y, scheme: 'bcrypt' }, async (p, h) => {
      seen.push(`${p} ${h}`);
      return true;
    });
    assert.equal(ok, true);
    assert.deepEqual(seen, [`pw ${Y}`]);
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
