import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { FailureThrottle, throttleKey, type ThrottleOptions } from '../src/auth/throttle.js';

function clock(start = 5000): { now: () => number; advance: (ms: number) => void } {
  let t = start;
  return { now: () => t, advance: (ms) => (t += ms) };
}

function throttle(opts: Partial<ThrottleOptions> & Pick<ThrottleOptions, 'windowMs'>): FailureThrottle {
  return new FailureThrottle({ maxFailures: 3, maxFailuresPerAddress: 0, ...opts });
}

describe('FailureThrottle: per user name and address', () => {
  it('throttles a name from an address after maxFailures within the window, until the window ends', () => {
    const t = clock();
    const th = throttle({ maxFailures: 3, windowMs: 60_000, now: t.now });
    th.recordFailure('alice', '10.0.0.1');
    th.recordFailure('alice', '10.0.0.1');
    assert.equal(th.check('alice', '10.0.0.1'), null);
    t.advance(10_000);
    th.recordFailure('alice', '10.0.0.1');
    assert.deepEqual(th.check('alice', '10.0.0.1'), { scope: 'user', retryAfterMs: 50_000 });
    assert.equal(th.check('alice', '10.0.0.2'), null, 'the same name from another address is not affected');
    assert.equal(th.check('bob', '10.0.0.1'), null, 'another name from the same address is not affected');
    assert.equal(th.check('Alice', '10.0.0.1'), null, 'names are compared exactly, as htpasswd does');
    t.advance(49_999);
    assert.deepEqual(th.check('alice', '10.0.0.1'), { scope: 'user', retryAfterMs: 1 });
    t.advance(1);
    assert.equal(th.check('alice', '10.0.0.1'), null);
  });

  it('starts a fresh window once the old one has ended', () => {
    const t = clock();
    const th = throttle({ maxFailures: 2, windowMs: 1000, now: t.now });
    th.recordFailure('alice', '10.0.0.1');
    t.advance(1000);
    th.recordFailure('alice', '10.0.0.1'); // first of a new window: the old failure no longer counts
    assert.equal(th.check('alice', '10.0.0.1'), null);
    th.recordFailure('alice', '10.0.0.1');
    assert.equal(th.check('alice', '10.0.0.1')?.scope, 'user');
  });

  it('keeps names apart that a naive key would join', () => {
    const th = throttle({ maxFailures: 1, windowMs: 1000 });
    th.recordFailure('a', '10.0.0.1');
    assert.equal(th.check('a', '10.0.0.11'), null);
    assert.equal(th.check('', '10.0.0.1a'), null);
  });
});

describe('FailureThrottle: per address', () => {
  it('throttles every name from an address after maxFailuresPerAddress failures over all names (spraying)', () => {
    const t = clock();
    const th = throttle({ maxFailures: 3, maxFailuresPerAddress: 10, windowMs: 60_000, now: t.now });
    for (let i = 0; i < 9; i++) th.recordFailure(`user${i}`, '192.0.2.1');
    assert.equal(th.check('user0', '192.0.2.1'), null, 'one failure per name: no name is throttled on its own');
    t.advance(20_000);
    th.recordFailure('user9', '192.0.2.1');
    assert.deepEqual(th.check('someone-else', '192.0.2.1'), { scope: 'address', retryAfterMs: 40_000 });
    assert.equal(th.check('someone-else', '192.0.2.2'), null, 'other addresses are not affected');
    t.advance(40_000);
    assert.equal(th.check('someone-else', '192.0.2.1'), null);
  });

  it('a shared address: one name with a wrong password waits, the others do not, until the address limit', () => {
    const th = throttle({ maxFailures: 10, maxFailuresPerAddress: 100, windowMs: 60_000 });
    for (let i = 0; i < 10; i++) th.recordFailure('ci-job', '10.0.0.1');
    assert.equal(th.check('ci-job', '10.0.0.1')?.scope, 'user');
    for (const other of ['alice', 'bob', 'deploy']) assert.equal(th.check(other, '10.0.0.1'), null, other);
  });

  it('when both block, says address and waits for the later window', () => {
    const t = clock();
    const th = throttle({ maxFailures: 2, maxFailuresPerAddress: 3, windowMs: 1000, now: t.now });
    th.recordFailure('bob', '10.0.0.1'); // address window from t=0
    t.advance(500);
    th.recordFailure('alice', '10.0.0.1'); // alice's window from t=500
    th.recordFailure('alice', '10.0.0.1');
    assert.deepEqual(th.check('alice', '10.0.0.1'), { scope: 'address', retryAfterMs: 1000 });
    t.advance(499);
    assert.deepEqual(th.check('alice', '10.0.0.1'), { scope: 'address', retryAfterMs: 501 });
    assert.deepEqual(th.check('carol', '10.0.0.1'), { scope: 'address', retryAfterMs: 1 });
    t.advance(1);
    assert.equal(th.check('carol', '10.0.0.1'), null, 'the address window has ended');
    assert.deepEqual(th.check('alice', '10.0.0.1'), { scope: 'user', retryAfterMs: 500 }, 'alice still waits for hers');
  });
});

describe('FailureThrottle: limits off, memory', () => {
  it('is off with both limits 0, and each limit can be off alone', () => {
    const off = throttle({ maxFailures: 0, maxFailuresPerAddress: 0, windowMs: 1000 });
    for (let i = 0; i < 100; i++) off.recordFailure('alice', '10.0.0.1');
    assert.equal(off.check('alice', '10.0.0.1'), null);
    assert.deepEqual([off.trackedPairs, off.trackedAddresses], [0, 0]);

    const addressOnly = throttle({ maxFailures: 0, maxFailuresPerAddress: 5, windowMs: 1000 });
    for (let i = 0; i < 5; i++) addressOnly.recordFailure('alice', '10.0.0.1');
    assert.equal(addressOnly.check('bob', '10.0.0.1')?.scope, 'address');
    assert.equal(addressOnly.trackedPairs, 0);

    const userOnly = throttle({ maxFailures: 5, maxFailuresPerAddress: 0, windowMs: 1000 });
    for (let i = 0; i < 500; i++) userOnly.recordFailure(`u${i}`, '10.0.0.1');
    assert.equal(userOnly.check('bob', '10.0.0.1'), null);
    assert.equal(userOnly.trackedAddresses, 0);
  });

  it('tracks a bounded number of keys per count, dropping expired then oldest windows', () => {
    const t = clock();
    const th = throttle({ maxFailures: 1, maxFailuresPerAddress: 1, windowMs: 1000, maxTracked: 3, now: t.now });
    th.recordFailure('u', '10.0.0.1');
    t.advance(500);
    th.recordFailure('u', '10.0.0.2');
    th.recordFailure('u', '10.0.0.3');
    th.recordFailure('u', '10.0.0.4'); // full: the oldest (10.0.0.1) goes
    assert.deepEqual([th.trackedPairs, th.trackedAddresses], [3, 3]);
    assert.equal(th.check('u', '10.0.0.1'), null);
    assert.equal(th.check('u', '10.0.0.4')?.scope, 'address');
    t.advance(1000); // all expired
    th.recordFailure('u', '10.0.0.5');
    assert.deepEqual([th.trackedPairs, th.trackedAddresses], [1, 1]);
    for (let i = 0; i < 1000; i++) th.recordFailure(`name${i}`, `10.1.${i >> 8}.${i & 255}`);
    assert.deepEqual([th.trackedPairs, th.trackedAddresses], [3, 3]);
  });

  it('a flood of names from one address cannot push that address out of the per-address count', () => {
    const th = throttle({ maxFailures: 10, maxFailuresPerAddress: 50, windowMs: 60_000, maxTracked: 100 });
    for (let i = 0; i < 1000; i++) th.recordFailure(`name${i}`, '203.0.113.5');
    assert.equal(th.trackedPairs, 100);
    assert.equal(th.trackedAddresses, 1);
    assert.equal(th.check('name0', '203.0.113.5')?.scope, 'address');
  });
});

describe('FailureThrottle: addresses', () => {
  it('counts IPv4-mapped addresses as IPv4 and IPv6 per /64, on both counts', () => {
    const th = throttle({ maxFailures: 2, maxFailuresPerAddress: 4, windowMs: 1000 });
    th.recordFailure('alice', '::ffff:192.0.2.7');
    th.recordFailure('alice', '192.0.2.7');
    assert.equal(th.check('alice', '::FFFF:192.0.2.7')?.scope, 'user');
    th.recordFailure('alice', '2001:db8:1:2::1');
    th.recordFailure('alice', '2001:db8:1:2:ffff:ffff:ffff:fffe');
    assert.equal(th.check('alice', '2001:db8:1:2::99')?.scope, 'user');
    assert.equal(th.check('bob', '2001:db8:1:2::99'), null);
    th.recordFailure('bob', '2001:db8:1:2::5');
    th.recordFailure('carol', '2001:db8:1:2::6');
    assert.equal(th.check('dave', '2001:db8:1:2::7')?.scope, 'address');
    assert.equal(th.check('alice', '2001:db8:1:3::1'), null);
  });
});

describe('throttleKey', () => {
  it('normalises addresses', () => {
    assert.equal(throttleKey('203.0.113.9'), '203.0.113.9');
    assert.equal(throttleKey('::ffff:203.0.113.9'), '203.0.113.9');
    assert.equal(throttleKey('2001:DB8:0:0:1::1'), '2001:db8:0:0::/64');
    assert.equal(throttleKey('2001:db8::'), '2001:db8:0:0::/64');
    assert.equal(throttleKey('::1'), '0:0:0:0::/64');
    assert.equal(throttleKey('fe80::1%eth0'), 'fe80:0:0:0::/64');
    assert.equal(throttleKey('64:ff9b::192.0.2.1'), '64:ff9b:0:0::/64');
    assert.equal(throttleKey('1:2:3:4:5:6:7:8'), '1:2:3:4::/64');
    assert.equal(throttleKey('unknown'), 'unknown');
  });
});
