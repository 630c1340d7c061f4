import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { CredentialCache } from '../src/auth/credential-cache.js';

function clock(start = 1000): { now: () => number; advance: (ms: number) => void } {
  let t = start;
  return { now: () => t, advance: (ms) => (t += ms) };
}

/** A promise with its resolve function outside, to hold a verification open. */
function gate(): { promise: Promise<boolean>; open: (v: boolean) => void } {
  let open!: (v: boolean) => void;
  const promise = new Promise<boolean>((r) => (open = r));
  return { promise, open };
}

describe('CredentialCache keys', () => {
  it('depend on user, password and stored hash, and never contain the password', () => {
    const c = new CredentialCache({ ttlMs: 1000, maxEntries: 10 });
    const k = c.keyFor('alice', 'hunter2', '$2y$h1');
    assert.equal(c.keyFor('alice', 'hunter2', '$2y$h1'), k);
    assert.notEqual(c.keyFor('alice', 'hunter3', '$2y$h1'), k);
    assert.notEqual(c.keyFor('alice', 'hunter2', '$2y$h2'), k);
    assert.notEqual(c.keyFor('alicf', 'hunter2', '$2y$h1'), k);
    assert.ok(!k.includes('hunter2'));
    assert.equal(Buffer.from(k, 'base64').length, 32);
  });

  it('cannot be made to collide by moving separators between fields', () => {
    const c = new CredentialCache({ ttlMs: 1000, maxEntries: 10 });
    assert.notEqual(c.keyFor('a\u0000b', 'c', 'h'), c.keyFor('a', 'b\u0000c', 'h'));
    assert.notEqual(c.keyFor('ab', 'c', 'h'), c.keyFor('a', 'bc', 'h'));
  });

  it('differ between processes (random secret) and agree under the same secret', () => {
    const secret = Buffer.alloc(32, 7);
    const a = new CredentialCache({ ttlMs: 1, maxEntries: 1, secret });
    const b = new CredentialCache({ ttlMs: 1, maxEntries: 1, secret });
    assert.equal(a.keyFor('u', 'p', 'h'), b.keyFor('u', 'p', 'h'));
    assert.notEqual(new CredentialCache({ ttlMs: 1, maxEntries: 1 }).keyFor('u', 'p', 'h'), a.keyFor('u', 'p', 'h'));
  });
});

describe('CredentialCache entries', () => {
  it('expire after the TTL', () => {
    const t = clock();
    const c = new CredentialCache({ ttlMs: 100, maxEntries: 10, now: t.now });
    c.set('k', 'alice');
    t.advance(99);
    assert.equal(c.get('k', 'alice'), 'alice');
    t.advance(1);
    assert.equal(c.get('k', 'alice'), null);
    assert.equal(c.size, 0);
  });

  it('answer only for the user they were stored for', () => {
    const c = new CredentialCache({ ttlMs: 100, maxEntries: 10 });
    c.set('k', 'alice');
    assert.equal(c.get('k', 'bob'), null);
  });

  it('evict the least recently used past the bound', () => {
    const c = new CredentialCache({ ttlMs: 1000, maxEntries: 2 });
    c.set('a', 'ua');
    c.set('b', 'ub');
    assert.equal(c.get('a', 'ua'), 'ua'); // a is now the most recent
    c.set('c', 'uc');
    assert.equal(c.size, 2);
    assert.equal(c.get('b', 'ub'), null);
    assert.equal(c.get('a', 'ua'), 'ua');
    assert.equal(c.get('c', 'uc'), 'uc');
  });

  it('store nothing when size or TTL is 0', () => {
    for (const opts of [{ ttlMs: 0, maxEntries: 10 }, { ttlMs: 1000, maxEntries: 0 }]) {
      const c = new CredentialCache(opts);
      c.set('k', 'u');
      assert.equal(c.get('k', 'u'), null);
      assert.equal(c.size, 0);
    }
  });

  it('clear()', () => {
    const c = new CredentialCache({ ttlMs: 1000, maxEntries: 10 });
    c.set('k', 'u');
    c.clear();
    assert.equal(c.get('k', 'u'), null);
  });
});

describe('CredentialCache.getOrVerify', () => {
  it('verifies once, then answers from the cache', async () => {
    const c = new CredentialCache({ ttlMs: 1000, maxEntries: 10 });
    let runs = 0;
    const verify = async (): Promise<boolean> => {
      runs++;
      return true;
    };
    assert.deepEqual(await c.getOrVerify('k', 'u', verify), { ok: true, source: 'verified' });
    assert.deepEqual(await c.getOrVerify('k', 'u', verify), { ok: true, source: 'cache' });
    assert.equal(runs, 1);
  });

  it('never stores a failure', async () => {
    const c = new CredentialCache({ ttlMs: 1000, maxEntries: 10 });
    let runs = 0;
    const verify = async (): Promise<boolean> => {
      runs++;
      return false;
    };
    assert.deepEqual(await c.getOrVerify('k', 'u', verify), { ok: false, source: 'verified' });
    assert.deepEqual(await c.getOrVerify('k', 'u', verify), { ok: false, source: 'verified' });
    assert.equal(runs, 2);
    assert.equal(c.size, 0);
  });

  it('coalesces concurrent verifications of one key into one run', async () => {
    const c = new CredentialCache({ ttlMs: 1000, maxEntries: 10 });
    const g = gate();
    let runs = 0;
    const verify = (): Promise<boolean> => {
      runs++;
      return g.promise;
    };
    const all = Array.from({ length: 8 }, () => c.getOrVerify('k', 'u', verify));
    await new Promise((r) => setImmediate(r));
    assert.equal(c.pending, 1);
    g.open(true);
    const results = await Promise.all(all);
    assert.equal(runs, 1);
    assert.deepEqual(results.map((r) => r.source).sort(), ['joined', 'joined', 'joined', 'joined', 'joined', 'joined', 'joined', 'verified']);
    assert.ok(results.every((r) => r.ok));
    assert.equal(c.pending, 0);
  });

  it('does not coalesce different keys', async () => {
    const c = new CredentialCache({ ttlMs: 1000, maxEntries: 10 });
    let runs = 0;
    const verify = async (): Promise<boolean> => {
      runs++;
      return true;
    };
    await Promise.all([c.getOrVerify('k1', 'u', verify), c.getOrVerify('k2', 'u', verify)]);
    assert.equal(runs, 2);
  });

  it('passes a rejection to every waiting caller and recovers', async () => {
    const c = new CredentialCache({ ttlMs: 1000, maxEntries: 10 });
    const boom = (): Promise<boolean> => Promise.reject(new Error('worker died'));
    const results = await Promise.allSettled([c.getOrVerify('k', 'u', boom), c.getOrVerify('k', 'u', boom)]);
    assert.deepEqual(results.map((r) => r.status), ['rejected', 'rejected']);
    assert.equal(c.pending, 0);
    assert.deepEqual(await c.getOrVerify('k', 'u', async () => true), { ok: true, source: 'verified' });
  });

  it('survives a verifier that throws synchronously', async () => {
    const c = new CredentialCache({ ttlMs: 1000, maxEntries: 10 });
    const sync = (): Promise<boolean> => {
      throw new Error('sync');
    };
    await assert.rejects(c.getOrVerify('k', 'u', sync), /sync/);
    assert.equal(c.pending, 0);
    assert.deepEqual(await c.getOrVerify('k', 'u', async () => false), { ok: false, source: 'verified' });
  });
});
