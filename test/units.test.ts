import { test } from 'node:test';
import assert from 'node:assert/strict';
import { formatSize, parseDuration, parseHostPort, parseSize } from '../src/config/units.ts';

test('sizes use binary units, like client_max_body_size', () => {
  assert.equal(parseSize('0'), 0);
  assert.equal(parseSize(1234), 1234);
  assert.equal(parseSize('64K'), 65536);
  assert.equal(parseSize('512M'), 512 * 1024 ** 2);
  assert.equal(parseSize('1G'), 1024 ** 3);
  assert.equal(parseSize('1gib'), 1024 ** 3);
  assert.equal(parseSize('1.5G'), 1.5 * 1024 ** 3);
  assert.equal(parseSize('1X'), null);
  assert.equal(parseSize(-1), null);
  assert.equal(formatSize(1024 ** 3), '1G');
  assert.equal(formatSize(1000), '1000 bytes');
});

test('durations: units or bare seconds', () => {
  assert.equal(parseDuration('30s'), 30_000);
  assert.equal(parseDuration('5m'), 300_000);
  assert.equal(parseDuration('250ms'), 250);
  assert.equal(parseDuration(2), 2000);
  assert.equal(parseDuration('soon'), null);
});

test('host:port, IPv6 literals and :port', () => {
  assert.deepEqual(parseHostPort('0.0.0.0:5043'), { host: '0.0.0.0', port: 5043 });
  assert.deepEqual(parseHostPort('[::1]:443'), { host: '::1', port: 443 });
  assert.deepEqual(parseHostPort(':8080'), { host: '0.0.0.0', port: 8080 });
  assert.equal(parseHostPort('5043'), null);
  assert.equal(parseHostPort('a:70000'), null);
});
