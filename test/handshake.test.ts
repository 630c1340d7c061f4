/**
 * Connections that never finish their TLS handshake, against the built proxy: they are closed once
 * `limits.headersTimeout` has passed, their descriptors are freed, and they cannot hold shutdown hostage.
 */
import assert from 'node:assert/strict';
import { readdirSync } from 'node:fs';
import net from 'node:net';
import { after, before, test } from 'node:test';
import { startStack, type Stack } from './helpers/stack.js';
import { eventually } from './helpers/wait.js';

let stack: Stack;

// The first test uses the stack's proxy; the second starts its own with other limits.
before(async () => {
  stack = await startStack({ alice: 'secret' }, { proxy: { limits: { headersTimeout: '1s' } } });
});

after(() => stack?.close());

const fds = (pid: number): number => readdirSync(`/proc/${pid}/fd`).length;

/** TCP connections that send nothing at all: not even a ClientHello. */
async function silentConnections(port: number, n: number): Promise<Array<net.Socket & { closedByServer: Promise<void> }>> {
  return Promise.all(
    Array.from({ length: n }, () =>
      new Promise<net.Socket & { closedByServer: Promise<void> }>((resolve, reject) => {
        const s = net.connect({ host: '127.0.0.1', port });
        const closedByServer = new Promise<void>((r) => s.once('end', () => r()).once('close', () => r()));
        s.on('error', () => {});
        s.once('connect', () => resolve(Object.assign(s, { closedByServer })));
        s.once('error', reject);
      }),
    ),
  );
}

test('silent connections are closed after headersTimeout and their descriptors freed', { timeout: 60_000 }, async () => {
  const proxy = stack.proxy;
  try {
    const pid = proxy.proc.pid!;
    // A served request first, so lazily opened descriptors (bcrypt worker, upstream pool) are in the baseline.
    const ok = await stack.request('/v2/');
    assert.equal(ok.status, 200);
    const baseline = fds(pid);
    const sockets = await silentConnections(proxy.port, 40);
    await eventually(`the proxy holds the 40 connections (baseline ${baseline})`, async () => { const n = fds(pid); return n >= baseline + 40 ? n : String(n) as unknown as false; });
    // The server closes them: a handshake may take as long as the headers may, no longer.
    await Promise.all(sockets.map((s) => s.closedByServer));
    for (const s of sockets) s.destroy();
    await eventually(`descriptors back to the baseline of ${baseline}`, async () => fds(pid) <= baseline, 10_000);
    const again = await stack.request('/v2/');
    assert.equal(again.status, 200, 'still serving');
  } finally {
    await proxy.stop('SIGKILL');
  }
});

test('silent connections do not keep the process alive past the grace period on SIGTERM', { timeout: 60_000 }, async () => {
  // A long handshake allowance, so only shutdown itself can close them in time.
  const proxy = await stack.startProxy({ limits: { headersTimeout: '5m' }, shutdown: { gracePeriod: '1s' } });
  const sockets = await silentConnections(proxy.port, 10);
  const started = Date.now();
  proxy.proc.kill('SIGTERM');
  let timer: NodeJS.Timeout | undefined;
  const exit = await Promise.race([proxy.exited, new Promise<'late'>((r) => (timer = setTimeout(() => r('late'), 15_000)))]);
  clearTimeout(timer);
  const tookMs = Date.now() - started;
  for (const s of sockets) s.destroy();
  if (exit === 'late') await proxy.stop('SIGKILL');
  assert.ok(exit !== 'late', `still running 15 s after SIGTERM with a 1 s grace period\n${proxy.output()}`);
  assert.equal(exit.code, 0);
  // The grace period ends it, with some room for a busy machine; the 15 s race above only stops a hang.
  assert.ok(tookMs < 5000, `exited ${tookMs} ms after SIGTERM with a 1 s grace period`);
});
