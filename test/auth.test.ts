import assert from 'node:assert/strict';
import { mkdir, mkdtemp, rename, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import bcrypt from 'bcryptjs';
import { Authenticator, type AuthenticatorOptions } from '../src/auth/authenticator.js';
import { BcryptPool } from '../src/auth/bcrypt-pool.js';
import { md5Crypt, shaCrypt } from '../src/auth/crypt.js';
import { PortcullisError, RegistryError } from '../src/errors.js';
import { createLogger } from '../src/ops/log.js';
import { eventually } from './helpers/wait.js';
import { basic } from './helpers/wire.js';

const COST = 4;
// Published vectors (see crypt.test.ts).
const APR1 = '$apr1$r31.....$HqJZimcKQFAMYayBlzkrA/'; // myPassword
const SHA512 = '$6$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIFNjnQJuesI68u4OTLiBFdcbYEdFCoEOfaS35inz1'; // Hello world!
const hash = (password: string): string => `$2y$${bcrypt.hashSync(password, COST).slice(4)}`;

let dir: string;
before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'portcullis-auth-'));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** A logger whose JSON lines land in an array. */
function capture(): { logger: AuthenticatorOptions['logger']; lines: Array<Record<string, unknown>>; text: () => string } {
  const raw: string[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _enc, cb) {
      raw.push(chunk.toString());
      cb();
    },
  });
  const lines: Array<Record<string, unknown>> = [];
  const logger = createLogger('info', stream);
  return {
    logger,
    lines,
    text: () => {
      lines.length = 0;
      for (const l of raw.join('').split('\n').filter(Boolean)) lines.push(JSON.parse(l) as Record<string, unknown>);
      return raw.join('');
    },
  };
}

let fileNo = 0;
async function htpasswdFile(text: string): Promise<string> {
  const path = join(dir, `htpasswd-${++fileNo}`);
  await writeFile(path, text);
  return path;
}

describe('BcryptPool', () => {
  it('compares on a worker thread', async () => {
    const pool = new BcryptPool({ size: 2 });
    try {
      const h = hash('secret');
      const results = await Promise.all(['secret', 'wrong', 'secret', '', 'secret'].map((p) => pool.compare(p, h)));
      assert.deepEqual(results, [true, false, true, false, true]);
      assert.equal(pool.completed, 5);
    } finally {
      await pool.close();
    }
  });

  it('refuses jobs beyond the queue bound with TOOMANYREQUESTS', async () => {
    const pool = new BcryptPool({ size: 1, maxPending: 2 });
    try {
      const h = hash('secret');
      const accepted = [pool.compare('a', h), pool.compare('b', h), pool.compare('secret', h)]; // 1 running, 2 waiting
      assert.equal(pool.pending, 2);
      await assert.rejects(pool.compare('c', h), (err: unknown) => err instanceof RegistryError && err.code === 'TOOMANYREQUESTS');
      assert.deepEqual(await Promise.all(accepted), [false, false, true]);
    } finally {
      await pool.close();
    }
  });

  it('replaces a crashed worker: a job is tried once more, then fails; later jobs run', async () => {
    const marker = join(dir, 'crashed-once');
    const stub = join(dir, 'stub-bcrypt.cjs');
    await writeFile(
      stub,
      `const fs = require('node:fs');
module.exports.compareSync = (password) => {
  if (password === 'crash') process.exit(1);
  if (password === 'crash-once' && !fs.existsSync(${JSON.stringify(marker)})) { fs.writeFileSync(${JSON.stringify(marker)}, ''); process.exit(1); }
  if (password === 'throw') throw new Error('bad hash');
  return password === 'good' || password === 'crash-once';
};`,
    );
    const pool = new BcryptPool({ size: 1, bcryptjsPath: stub });
    try {
      await assert.rejects(pool.compare('crash', 'h'), (err: unknown) => err instanceof RegistryError && err.code === 'UNAVAILABLE' && /stopped/.test(err.message));
      assert.equal(await pool.compare('good', 'h'), true);
      assert.equal(await pool.compare('crash-once', 'h'), true);
      await assert.rejects(pool.compare('throw', 'h'), /password verification failed: bad hash/);
      assert.equal(await pool.compare('nope', 'h'), false);
    } finally {
      await pool.close();
    }
  });

  it('fails jobs when the worker cannot start', async () => {
    const pool = new BcryptPool({ bcryptjsPath: join(dir, 'no-such-module.cjs') });
    try {
      await assert.rejects(pool.compare('x', 'h'), /could not start/);
      await assert.rejects(pool.compare('x', 'h'), /could not start/);
    } finally {
      await pool.close();
    }
  });

  it('runs crypt(3) checks on the worker too, loading crypt.ts there', async () => {
    const pool = new BcryptPool({ size: 1 });
    try {
      const checks = [
        pool.compare('myPassword', APR1, 'crypt'),
        pool.compare('Hello world!', SHA512, 'crypt'),
        pool.compare('wrong', SHA512, 'crypt'),
        pool.compare('secret', hash('secret')),
      ];
      assert.deepEqual(await Promise.all(checks), [true, true, false, true]);
      assert.equal(pool.completed, 4);
    } finally {
      await pool.close();
    }
  });

  it('fails crypt checks (not bcrypt ones) when the crypt module cannot be loaded', async () => {
    const pool = new BcryptPool({ size: 1, cryptModule: new URL(`file://${join(dir, 'no-such-crypt.js')}`) });
    try {
      await assert.rejects(pool.compare('myPassword', APR1, 'crypt'), (err: unknown) => err instanceof RegistryError && err.code === 'UNAVAILABLE');
      assert.equal(await pool.compare('secret', hash('secret')), true);
    } finally {
      await pool.close();
    }
  });

  it('close() rejects waiting jobs and later calls', async () => {
    const pool = new BcryptPool({ size: 1 });
    const h = hash('secret');
    const jobs = [pool.compare('a', h), pool.compare('b', h)].map((p) => p.then(() => 'done', (e: Error) => e.message));
    await pool.close();
    assert.deepEqual(await Promise.all(jobs), ['password verification is shutting down', 'password verification is shutting down']);
    await assert.rejects(pool.compare('a', h), /shutting down/);
  });
});

describe('Authenticator.open', () => {
  it('refuses a missing file', async () => {
    const log = capture();
    const path = join(dir, 'absent');
    await assert.rejects(Authenticator.open({ htpasswdPath: path, cacheTtlMs: 1000, cacheSize: 10, logger: log.logger }), (err: unknown) => {
      assert.ok(err instanceof PortcullisError);
      assert.equal(err.code, 'PCL_ERR_HTPASSWD');
      assert.equal(err.message, `cannot read htpasswd file ${path}: no such file`);
      return true;
    });
  });

  it('refuses a broken file, naming file and line', async () => {
    const log = capture();
    const path = await htpasswdFile(`alice:${hash('a')}\nbob:rqXexS6ZhobKA\n`);
    await assert.rejects(Authenticator.open({ htpasswdPath: path, cacheTtlMs: 1000, cacheSize: 10, logger: log.logger }), (err: unknown) => {
      assert.ok(err instanceof PortcullisError);
      assert.equal(err.message, `${path} line 2: user "bob": unsupported hash scheme DES crypt (use bcrypt: portcullis htpasswd add)`);
      return true;
    });
  });
});

describe('Authenticator.authenticate', () => {
  let auth: Authenticator;
  let log: ReturnType<typeof capture>;
  before(async () => {
    log = capture();
    const path = await htpasswdFile(`# users\nalice:${hash('alice-pw')}\nbob:${hash('pa:ss')}\n`);
    auth = await Authenticator.open({ htpasswdPath: path, cacheTtlMs: 60_000, cacheSize: 100, logger: log.logger, watch: false, throttle: { maxFailures: 1000, maxFailuresPerAddress: 1000, windowMs: 60_000 } });
  });
  after(() => auth.close());

  it('loads the users and logs how many', () => {
    assert.equal(auth.users, 2);
    log.text();
    assert.ok(log.lines.some((l) => l.msg === 'htpasswd loaded' && l.users === 2));
  });

  it('verifies, then answers from the cache', async () => {
    const before = auth.verifications;
    assert.deepEqual(await auth.authenticate(basic('alice', 'alice-pw'), '10.0.0.1'), { outcome: 'ok', user: 'alice' });
    assert.deepEqual(await auth.authenticate(basic('alice', 'alice-pw'), '10.0.0.1'), { outcome: 'cached', user: 'alice' });
    assert.equal(auth.verifications, before + 1);
  });

  it('accepts passwords with colons', async () => {
    assert.deepEqual(await auth.authenticate(basic('bob', 'pa:ss'), '10.0.0.1'), { outcome: 'ok', user: 'bob' });
  });

  it('fails a wrong password and an unknown user, and checks both with bcrypt', async () => {
    const before = auth.verifications;
    assert.deepEqual(await auth.authenticate(basic('alice', 'nope'), '10.0.0.1'), { outcome: 'failed', user: null, reason: 'wrong password' });
    assert.deepEqual(await auth.authenticate(basic('mallory', 'nope'), '10.0.0.1'), { outcome: 'failed', user: null, reason: 'unknown user' });
    assert.equal(auth.verifications, before + 2, 'an unknown user costs a verification too');
  });

  it('reports anonymous and malformed headers without verifying', async () => {
    const before = auth.verifications;
    assert.equal((await auth.authenticate(undefined, '10.0.0.1')).outcome, 'anonymous');
    assert.equal((await auth.authenticate('Basic Og==', '10.0.0.1')).outcome, 'anonymous');
    assert.deepEqual(await auth.authenticate('Basic !!!', '10.0.0.1'), { outcome: 'malformed', user: null, reason: 'credentials are not valid base64' });
    assert.equal(auth.verifications, before);
  });

  it('coalesces concurrent requests with the same credentials into one verification', async () => {
    const before = auth.verifications;
    const results = await Promise.all(Array.from({ length: 8 }, () => auth.authenticate(basic('bob', 'pa:ss-new-guess'), '10.0.0.2')));
    assert.equal(auth.verifications, before + 1);
    assert.ok(results.every((r) => r.outcome === 'failed'));

    const fresh = await htpasswdFile(`carol:${hash('carol-pw')}\n`);
    const other = await Authenticator.open({ htpasswdPath: fresh, cacheTtlMs: 60_000, cacheSize: 100, logger: log.logger, watch: false });
    try {
      const ok = await Promise.all(Array.from({ length: 8 }, () => other.authenticate(basic('carol', 'carol-pw'), '10.0.0.3')));
      assert.equal(other.verifications, 1);
      assert.deepEqual(ok.map((r) => r.outcome).sort(), ['cached', 'cached', 'cached', 'cached', 'cached', 'cached', 'cached', 'ok']);
      assert.ok(ok.every((r) => r.user === 'carol'));
    } finally {
      await other.close();
    }
  });

  it('never logs a password or an Authorization header', () => {
    const text = log.text();
    for (const secret of ['alice-pw', 'pa:ss', 'nope', 'carol-pw', Buffer.from('alice:alice-pw').toString('base64')]) {
      assert.ok(!text.includes(secret), `log contains ${secret}`);
    }
  });
});

describe('Authenticator with crypt(3) hashes (files made for Apache and nginx)', () => {
  it('verifies $apr1$, $1$, $5$ and $6$ users once, then answers from the cache; warns about the weak ones', async () => {
    const log = capture();
    const users = {
      apr: ['apr-pw', md5Crypt('apr-pw', 'aprsalt1', '$apr1$')],
      md5: ['md5-pw', md5Crypt('md5-pw', 'md5salt', '$1$')],
      s256: ['s256-pw', shaCrypt('s256-pw', 'sixteencharsalt1', 5)],
      s512: ['s512:pw', shaCrypt('s512:pw', 'q', 6, 2000)],
      b: ['b-pw', hash('b-pw')],
    } as const;
    const path = await htpasswdFile(Object.entries(users).map(([u, [, h]]) => `${u}:${h}\n`).join(''));
    const auth = await Authenticator.open({ htpasswdPath: path, cacheTtlMs: 60_000, cacheSize: 100, logger: log.logger, watch: false });
    try {
      assert.equal(auth.users, 5);
      for (const [user, [password]] of Object.entries(users)) {
        const before = auth.verifications;
        assert.deepEqual(await auth.authenticate(basic(user, password), '10.0.0.1'), { outcome: 'ok', user });
        assert.deepEqual(await auth.authenticate(basic(user, password), '10.0.0.1'), { outcome: 'cached', user });
        assert.equal(auth.verifications, before + 1, `${user}: one check, then the cache`);
        assert.deepEqual(await auth.authenticate(basic(user, `${password}x`), '10.0.0.1'), { outcome: 'failed', user: null, reason: 'wrong password' });
      }
      log.text();
      const warning = log.lines.find((l) => l.level === 40);
      assert.ok(warning, 'a warning is logged');
      assert.equal(warning.users, 2);
      assert.equal(warning.msg, 'htpasswd: 2 users have weak password hashes ($apr1$: 1, $1$: 1; unsalted or fast to guess); re-set each with bcrypt: portcullis htpasswd add FILE USER');
    } finally {
      await auth.close();
    }
  });

  it('checks them off the event loop', async () => {
    const path = await htpasswdFile(`slow:${shaCrypt('pw', 'salt', 6, 100_000)}\n`);
    const auth = await Authenticator.open({ htpasswdPath: path, cacheTtlMs: 60_000, cacheSize: 100, logger: capture().logger, watch: false });
    try {
      let ticks = 0;
      const timer = setInterval(() => ticks++, 5);
      const result = await auth.authenticate(basic('slow', 'wrong'), '10.0.0.1');
      clearInterval(timer);
      assert.equal(result.outcome, 'failed');
      // Computed on this thread, the check would block every timer until it returned.
      assert.ok(ticks >= 3, `the event loop ran during the check (${ticks} ticks)`);
    } finally {
      await auth.close();
    }
  });
});

describe('Authenticator throttle', () => {
  const WINDOW = 60_000;
  async function open(maxFailures: number, maxFailuresPerAddress: number): Promise<Authenticator> {
    const path = await htpasswdFile(`alice:${hash('alice-pw')}\nbob:${hash('bob-pw')}\ncarol:${hash('carol-pw')}\n`);
    return Authenticator.open({
      htpasswdPath: path,
      cacheTtlMs: 60_000,
      cacheSize: 100,
      logger: capture().logger,
      watch: false,
      throttle: { maxFailures, maxFailuresPerAddress, windowMs: WINDOW },
    });
  }

  it('a shared address: alice\'s wrong password throttles alice there, bob still verifies, cached alice passes', async () => {
    const auth = await open(10, 100);
    try {
      const nat = '10.0.0.1';
      assert.equal((await auth.authenticate(basic('alice', 'alice-pw'), nat)).outcome, 'ok');
      for (let i = 0; i < 10; i++) assert.equal((await auth.authenticate(basic('alice', `stale-${i}`), nat)).outcome, 'failed');
      const before = auth.verifications;
      const throttled = await auth.authenticate(basic('alice', 'stale-10'), nat);
      assert.equal(throttled.outcome, 'throttled');
      assert.equal(throttled.reason, 'too many failed logins for this user from this address');
      assert.ok(throttled.outcome === 'throttled' && throttled.retryAfterMs > 0 && throttled.retryAfterMs <= WINDOW, 'retry when the window ends');
      assert.equal(auth.verifications, before, 'a throttled attempt runs no password check');
      assert.deepEqual(await auth.authenticate(basic('alice', 'alice-pw'), nat), { outcome: 'cached', user: 'alice' });
      assert.deepEqual(await auth.authenticate(basic('bob', 'bob-pw'), nat), { outcome: 'ok', user: 'bob' }, 'bob, never seen before, verifies');
      assert.equal((await auth.authenticate(basic('carol', 'wrong'), nat)).outcome, 'failed', 'carol\'s guesses are still checked');
      assert.equal((await auth.authenticate(basic('alice', 'stale-11'), '10.0.0.2')).outcome, 'failed', 'alice from elsewhere is checked');
    } finally {
      await auth.close();
    }
  });

  it('password spraying: 100 user names from one address trip the per-address limit; cached credentials pass', async () => {
    const auth = await open(10, 100);
    try {
      const ip = '203.0.113.9';
      assert.equal((await auth.authenticate(basic('alice', 'alice-pw'), ip)).outcome, 'ok');
      for (let i = 0; i < 99; i++) assert.equal((await auth.authenticate(basic(`user${i}`, 'Summer2024!'), ip)).outcome, 'failed', `user${i}`);
      assert.equal((await auth.authenticate(basic('bob', 'bob-pw'), ip)).outcome, 'ok', 'below the limit, others still verify');
      assert.equal((await auth.authenticate(basic('user99', 'Summer2024!'), ip)).outcome, 'failed');
      const before = auth.verifications;
      for (const [user, password] of [['bob', 'guess'], ['carol', 'carol-pw'], ['user100', 'Summer2024!']] as const) {
        const r = await auth.authenticate(basic(user, password), ip);
        assert.equal(r.outcome, 'throttled', user);
        assert.equal(r.reason, 'too many failed logins from this address');
        assert.ok(r.outcome === 'throttled' && r.retryAfterMs > 0 && r.retryAfterMs <= WINDOW);
      }
      assert.equal(auth.verifications, before);
      assert.deepEqual(await auth.authenticate(basic('alice', 'alice-pw'), ip), { outcome: 'cached', user: 'alice' });
      assert.deepEqual(await auth.authenticate(basic('bob', 'bob-pw'), ip), { outcome: 'cached', user: 'bob' });
      assert.equal((await auth.authenticate(basic('carol', 'carol-pw'), '203.0.113.10')).outcome, 'ok', 'other addresses are unaffected');
    } finally {
      await auth.close();
    }
  });

  it('a flood of guesses at once: checks queued behind the first are not run once the limit is reached', async () => {
    const auth = await open(3, 100);
    try {
      const ip = '192.0.2.50';
      const results = await Promise.all(Array.from({ length: 30 }, (_, i) => auth.authenticate(basic('alice', `guess-${i}`), ip)));
      assert.equal(results.filter((r) => r.outcome === 'failed').length, 3);
      assert.equal(results.filter((r) => r.outcome === 'throttled').length, 27);
      assert.ok(results.every((r) => r.outcome !== 'throttled' || r.reason === 'too many failed logins for this user from this address'));
      assert.equal(auth.verifications, 3, 'only the checks within the limit ran');
      assert.equal((await auth.authenticate(basic('bob', 'bob-pw'), ip)).outcome, 'ok', 'others on the address still verify');
    } finally {
      await auth.close();
    }
  });

  it('an unknown name is throttled exactly like a known one, so the 429 does not tell which names exist', async () => {
    const auth = await open(3, 100);
    try {
      const ip = '198.51.100.7';
      for (const user of ['alice', 'mallory']) {
        for (let i = 0; i < 3; i++) assert.equal((await auth.authenticate(basic(user, `g${i}`), ip)).outcome, 'failed');
        const r = await auth.authenticate(basic(user, 'g3'), ip);
        assert.equal(r.outcome, 'throttled', user);
        assert.equal(r.reason, 'too many failed logins for this user from this address');
      }
      assert.equal((await auth.authenticate(basic('bob', 'bob-pw'), ip)).outcome, 'ok');
    } finally {
      await auth.close();
    }
  });
});

describe('Authenticator reload', () => {
  it('reload() picks up changes; a changed password is no longer cached', async () => {
    const log = capture();
    const reloads: string[] = [];
    const path = await htpasswdFile(`alice:${hash('old')}\n`);
    const auth = await Authenticator.open({ htpasswdPath: path, cacheTtlMs: 60_000, cacheSize: 100, logger: log.logger, watch: false, onReload: (r) => reloads.push(r) });
    try {
      assert.equal((await auth.authenticate(basic('alice', 'old'), '10.0.0.1')).outcome, 'ok');
      assert.equal((await auth.authenticate(basic('alice', 'old'), '10.0.0.1')).outcome, 'cached');
      await writeFile(path, `alice:${hash('new')}\nbob:${hash('bob')}\n`);
      assert.equal(await auth.reload(), true);
      assert.equal(auth.users, 2);
      assert.deepEqual(reloads, ['ok']);
      assert.equal((await auth.authenticate(basic('alice', 'old'), '10.0.0.1')).outcome, 'failed');
      assert.equal((await auth.authenticate(basic('alice', 'new'), '10.0.0.1')).outcome, 'ok');
      assert.equal((await auth.authenticate(basic('bob', 'bob'), '10.0.0.1')).outcome, 'ok');
      log.text();
      assert.ok(log.lines.some((l) => l.msg === 'htpasswd reloaded' && l.users === 2 && l.file === path));
    } finally {
      await auth.close();
    }
  });

  it('refuses a broken file, logs file and line, and keeps the last good one', async () => {
    const log = capture();
    const errors: Error[] = [];
    const path = await htpasswdFile(`alice:${hash('alice-pw')}\n`);
    const auth = await Authenticator.open({
      htpasswdPath: path,
      cacheTtlMs: 60_000,
      cacheSize: 100,
      logger: log.logger,
      watch: false,
      onReload: (r, err) => {
        if (r === 'error' && err) errors.push(err);
      },
    });
    try {
      await writeFile(path, `alice:${hash('other')}\nbob:rqXexS6ZhobKA\n`);
      assert.equal(await auth.reload(), false);
      assert.equal(auth.users, 1);
      assert.equal((await auth.authenticate(basic('alice', 'alice-pw'), '10.0.0.1')).outcome, 'ok', 'the last good file is still in force');
      assert.equal(errors.length, 1);
      assert.match(errors[0]!.message, /line 2: user "bob": unsupported hash scheme DES crypt/);
      log.text();
      const refusal = log.lines.find((l) => l.level === 50);
      assert.ok(refusal, 'an error line is logged');
      assert.equal(refusal.file, path);
      assert.equal(refusal.msg, 'htpasswd reload refused, keeping the last good file');
      assert.match(String(refusal.err), new RegExp(`^${path.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')} line 2: `));
    } finally {
      await auth.close();
    }
  });

  it('follows a file replaced by rename, the way editors and htpasswd save', async () => {
    const log = capture();
    const reloads: string[] = [];
    const path = await htpasswdFile(`alice:${hash('alice-pw')}\n`);
    const auth = await Authenticator.open({ htpasswdPath: path, cacheTtlMs: 60_000, cacheSize: 100, logger: log.logger, onReload: (r) => reloads.push(r) });
    try {
      const tmp = `${path}.tmp`;
      await writeFile(tmp, `alice:${hash('alice-pw')}\ncarol:${hash('carol-pw')}\n`);
      await rename(tmp, path);
      await eventually('the renamed file to be loaded', async () => auth.users === 2);
      assert.equal((await auth.authenticate(basic('carol', 'carol-pw'), '10.0.0.1')).outcome, 'ok');

      // A broken save is refused once and not re-parsed on every poll; the next good save is picked up.
      await writeFile(tmp, 'carol:plaintext\n');
      await rename(tmp, path);
      await eventually('the broken file to be refused', async () => reloads.includes('error'));
      assert.equal(auth.users, 2);
      await writeFile(path, `dave:${hash('dave-pw')}\n`); // in place this time
      await eventually('the in-place write to be loaded', async () => auth.users === 1);
      assert.equal((await auth.authenticate(basic('dave', 'dave-pw'), '10.0.0.1')).outcome, 'ok');
      assert.equal(reloads.filter((r) => r === 'error').length, 1);
      assert.equal(reloads[0], 'ok');
      assert.equal(reloads.at(-1), 'ok');
    } finally {
      await auth.close();
    }
  });

  it('keeps the last good file while the file is missing, then loads it when it is back', async () => {
    const log = capture();
    const reloads: string[] = [];
    const path = await htpasswdFile(`alice:${hash('alice-pw')}\n`);
    const auth = await Authenticator.open({ htpasswdPath: path, cacheTtlMs: 60_000, cacheSize: 100, logger: log.logger, onReload: (r) => reloads.push(r) });
    try {
      await rm(path);
      await eventually('the missing file to be noticed', async () => reloads.includes('error'));
      assert.equal(auth.users, 1);
      assert.equal((await auth.authenticate(basic('alice', 'alice-pw'), '10.0.0.1')).outcome, 'ok');
      await writeFile(`${path}.tmp`, `alice:${hash('alice-pw')}\nbob:${hash('bob-pw')}\n`);
      await rename(`${path}.tmp`, path);
      await eventually('the file to come back', async () => auth.users === 2);
      assert.deepEqual(reloads, ['error', 'ok']);
      log.text();
      assert.ok(log.lines.some((l) => l.level === 50 && String(l.err).includes('no such file')));
    } finally {
      await auth.close();
    }
  });

  it('close() and stopFollowing() stop following the file', async () => {
    // The file is a symlink into another folder, as Kubernetes mounts secrets: a write to the target makes no
    // event in the link's folder, so only the stat poll (every 2 s) sees it. A third authenticator that keeps
    // following the same link shows when the poll has run; the two that stopped must not have reloaded.
    const targetDir = join(dir, `target-${++fileNo}`);
    await mkdir(targetDir);
    const target = join(targetDir, 'htpasswd');
    await writeFile(target, `alice:${hash('alice-pw')}\n`);
    const path = join(dir, `link-${fileNo}`);
    await symlink(target, path);
    const follow = (log: ReturnType<typeof capture>, reloads: string[]): Promise<Authenticator> =>
      Authenticator.open({ htpasswdPath: path, cacheTtlMs: 60_000, cacheSize: 100, logger: log.logger, onReload: (r) => reloads.push(r) });
    const closedLog = capture();
    const stoppedLog = capture();
    const closedReloads: string[] = [];
    const stoppedReloads: string[] = [];
    const openReloads: string[] = [];
    // The stopped ones first: their polls tick just before the open one's, so when it has seen a change, they would have.
    const closed = await follow(closedLog, closedReloads);
    const stopped = await follow(stoppedLog, stoppedReloads);
    const open = await follow(capture(), openReloads);
    try {
      await closed.close();
      await closed.close();
      stopped.stopFollowing();
      const logged = { closed: closedLog.text(), stopped: stoppedLog.text() };

      await writeFile(target, `alice:${hash('alice-pw')}\nbob:${hash('bob-pw')}\n`);
      await eventually('the open authenticator to see the write by its poll', async () => open.users === 2);
      // Then a replace by rename, which the folder watch reports at once: it ends the wait for anything the
      // poll above started, and checks the watch was stopped too.
      await writeFile(`${path}.tmp`, `alice:${hash('alice-pw')}\nbob:${hash('bob-pw')}\ncarol:${hash('carol-pw')}\n`);
      await rename(`${path}.tmp`, path);
      await eventually('the open authenticator to see the rename', async () => open.users === 3);
      assert.deepEqual(openReloads, ['ok', 'ok']);

      assert.deepEqual(closedReloads, [], 'the closed authenticator reloaded');
      assert.equal(closedLog.text(), logged.closed, 'the closed authenticator logged after close()');
      assert.equal(closed.users, 1);
      assert.deepEqual(stoppedReloads, [], 'the authenticator that stopped following reloaded');
      assert.equal(stoppedLog.text(), logged.stopped, 'the authenticator that stopped following logged');
      assert.equal(stopped.users, 1);
      // It still answers, with the users it had: checks in flight when it was replaced must finish.
      assert.equal((await stopped.authenticate(basic('alice', 'alice-pw'), '10.0.0.1')).outcome, 'ok');
      assert.equal((await stopped.authenticate(basic('carol', 'carol-pw'), '10.0.0.1')).outcome, 'failed');

      assert.equal(await closed.reload(), false);
      await assert.rejects(closed.authenticate(basic('alice', 'alice-pw'), '10.0.0.1'), (err: unknown) => err instanceof RegistryError && err.code === 'UNAVAILABLE');
    } finally {
      await Promise.all([closed.close(), stopped.close(), open.close()]);
    }
  });
});
