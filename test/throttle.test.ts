import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { FailureThrottle, throttleKey } from '../src/auth/throttle.js';

function clock(start = 5000): { now: () => number; advance: (ms: number) => void } {
  let t = start;
  return { now: () => t, advance: (ms) => (t += ms) };
}

describe('FailureThrottle', () => {
  it('throttles an address after maxFailures within the window, until the window ends', () => {
    const t = clock();
    const th = new FailureThrottle({ maxFailures: 3, windowMs: 60_000, now: t.now });
    th.recordFailure('10.0.0.1');
    th.recordFailure('10.0.0.1');
    assert.equal(th.isThrottled('10.0.0.1'), false);
    t.advance(10_000);
    th.recordFailure('10.0.0.1');
    assert.equal(th.isThrottled('10.0.0.1'), true);
    assert.equal(th.retryAfterMs('10.0.0.1'), 50_000);
    assert.equal(th.isThrottled('10.0.0.2'), false, 'other addresses are not affected');
    t.advance(49_999);
    assert.equal(th.isThrottled('10.0.0.1'), true);
    t.advance(1);
    assert.equal(th.isThrottled('10.0.0.1'), false);
    assert.equal(th.retryAfterMs('10.0.0.1'), 0);
  });

  it('starts a fresh window once the old one has ended', () => {
    const t = clock();
    const th = new FailureThrottle({ maxFailures: 2, windowMs: 1000, now: t.now });
    th.recordFailure('10.0.0.1');
    t.advance(1000);
    th.recordFailure('10.0.0.1'); // first of a new window: the old failure no longer counts
    assert.equal(th.isThrottled('10.0.0.1'), false);
    th.recordFailure('10.0.0.1');
    assert.equal(th.isThrottled('10.0.0.1'), true);
  });

  it('is off with maxFailures 0', () => {
    const th = new FailureThrottle({ maxFailures: 0, windowMs: 1000 });
    for (let i = 0; i < 100; i++) th.recordFailure('10.0.0.1');
    assert.equal(th.isThrottled('10.0.0.1'), false);
    assert.equal(th.tracked, 0);
  });

  it('tracks a bounded number of addresses, dropping expired then oldest windows', () => {
    const t = clock();
    const th = new FailureThrottle({ maxFailures: 1, windowMs: 1000, maxTracked: 3, now: t.now });
    th.recordFailure('10.0.0.1');
    t.advance(500);
    th.recordFailure('10.0.0.2');
    th.recordFailure('10.0.0.3');
    th.recordFailure('10.0.0.4'); // full: the oldest (10.0.0.1) goes
    assert.equal(th.tracked, 3);
    assert.equal(th.isThrottled('10.0.0.1'), false);
    assert.equal(th.isThrottled('10.0.0.4'), true);
    t.advance(1000); // all expired
    th.recordFailure('10.0.0.5');
    assert.equal(th.tracked, 1);
    for (let i = 0; i < 1000; i++) th.recordFailure(`10.1.${i >> 8}.${i & 255}`);
    assert.equal(th.tracked, 3);
  });

  it('counts IPv4-mapped addresses as IPv4 and IPv6 per /64', () => {
    const th = new FailureThrottle({ maxFailures: 2, windowMs: 1000 });
    th.recordFailure('::ffff:192.0.2.7');
    th.recordFailure('192.0.2.7');
    assert.equal(th.isThrottled('::FFFF:192.0.2.7'), true);
    th.recordFailure('2001:db8:1:2::1');
    th.recordFailure('2001:db8:1:2:ffff:ffff:ffff:fffe');
    assert.equal(th.isThrottled('2001:db8:1:2::99'), true);
    assert.equal(th.isThrottled('2001:db8:1:3::1'), false);
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
