/**
 * Restarting crashed workers: the wait doubles for each worker that dies soon after it started (a start-up
 * crash would otherwise be a busy loop) and starts over after one that ran a while. Unit, then the built
 * proxy with `workers: 2` whose workers are killed as soon as they listen.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import bcrypt from 'bcryptjs';
import { RestartBackoff } from '../src/runtime/backoff.ts';
import { startPortcullis } from './helpers/portcullis.js';
import { startRegistry } from './helpers/registry.js';
import { makeTestCerts } from './helpers/tls.js';
import { eventually } from './helpers/wait.js';

describe('RestartBackoff', () => {
  it('doubles for quick crashes up to the ceiling, and starts over after a stable run', () => {
    const b = new RestartBackoff({ initialMs: 1000, maxMs: 8000, stableMs: 60_000 });
    assert.deepEqual([b.next(10), b.next(2000), b.next(5), b.next(5), b.next(5)], [1000, 2000, 4000, 8000, 8000]);
    assert.equal(b.next(120_000), 1000, 'a worker that ran for two minutes was not a start-up crash');
    assert.equal(b.next(10), 2000);
  });
});

describe('workers: 2 whose workers keep dying', () => {
  it('restarts them later and later, and still stops cleanly', { timeout: 60_000 }, async () => {
    const [registry, certs] = await Promise.all([startRegistry(), makeTestCerts()]);
    const proxy = await startPortcullis(
      { listen: '127.0.0.1:0', tls: { cert: 'server.crt', key: 'server.key' }, upstream: { url: registry.url }, auth: { htpasswd: 'htpasswd' }, workers: 2 },
      {
        files: { 'server.crt': certs.cert, 'server.key': certs.key, htpasswd: `a:${bcrypt.hashSync('b', 4)}\n` },
        readyTimeoutMs: 30_000,
      },
    );
    try {
      const killed = new Set<number>();
      const exits = () => proxy.logs().filter((l) => l['msg'] === 'worker exited; starting a new one');
      // Kill every worker as soon as it listens, until four restarts are scheduled.
      await eventually(
        'four restarts scheduled',
        async () => {
          for (const l of proxy.logs()) {
            const pid = l['pid'];
            if (l['msg'] === 'worker listening' && typeof pid === 'number' && !killed.has(pid)) {
              killed.add(pid);
              process.kill(pid, 'SIGKILL');
            }
          }
          return exits().length >= 4;
        },
        40_000,
      );
      const delays = exits().map((l) => Number(l['restartInMs']));
      assert.deepEqual(delays.slice(0, 4), [1000, 2000, 4000, 8000], `restart delays ${delays.join(', ')}`);
      assert.equal(await proxy.stop('SIGTERM'), 0);
    } finally {
      await proxy.stop('SIGKILL');
      await registry.close();
      certs.cleanup();
    }
  });
});
