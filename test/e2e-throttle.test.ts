/**
 * End to end: the login throttle through the built proxy in front of a real registry. Every client here
 * connects from 127.0.0.1, which is exactly the case that matters: a CI host behind one NAT address, where
 * one job has a stale password and the other jobs must keep logging in and pushing.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { dockerLogin, errorCodes, request, skopeoCopy, type HttpResponse } from './helpers/clients.js';
import { buildOciImage } from './helpers/oci-image.js';
import { describeRun, makeTempDir } from './helpers/proc.js';
import { metric } from './helpers/prometheus.js';
import { startStack, type Stack } from './helpers/stack.js';

const T = { timeout: 120_000 };
const MAX_FAILURES = 3;
const MAX_FAILURES_PER_ADDRESS = 12;
const WINDOW_S = 600;
const USERS = { alice: 'alice-pw', bob: 'bob-pw', carol: 'carol-pw', dave: 'dave-pw' };

let stack: Stack;

before(async () => {
  stack = await startStack(USERS, {
    proxy: {
      auth: { maxFailures: MAX_FAILURES, maxFailuresPerAddress: MAX_FAILURES_PER_ADDRESS, failureWindow: `${WINDOW_S}s` },
      metrics: { listen: '127.0.0.1:0' },
    },
  });
});

after(async () => {
  await stack?.close();
});

function get(user: string, password: string, path = '/v2/'): Promise<HttpResponse> {
  return stack.request(path, { auth: { user, password } });
}

function assertThrottled(r: HttpResponse): void {
  assert.equal(r.status, 429, r.text());
  assert.deepEqual(errorCodes(r), ['TOOMANYREQUESTS']);
  const retry = Number(r.headers['retry-after']);
  assert.ok(Number.isInteger(retry) && retry >= 1 && retry <= WINDOW_S, `Retry-After ${String(r.headers['retry-after'])}`);
}

async function login(user: keyof typeof USERS): Promise<void> {
  const r = await dockerLogin(stack.proxy.hostPort, user, USERS[user], { caFile: stack.certs.caFile });
  try {
    assert.equal(r.code, 0, describeRun(`docker login ${user}`, r));
    assert.match(r.stdout, /Login Succeeded/);
  } finally {
    r.cleanup();
  }
}

async function authOutcome(outcome: string): Promise<number> {
  const r = await request(`${stack.proxy.metricsUrl!}/metrics`);
  return metric(r.text(), 'portcullis_auth_total', { outcome });
}

describe('one address shared by many users (NAT)', () => {
  test('a job with a stale password throttles that user only; the others log in and push', T, async () => {
    await login('alice'); // verified now, cached from here on

    for (let i = 0; i < MAX_FAILURES; i++) assert.equal((await get('alice', `stale-${i}`)).status, 401);
    assertThrottled(await get('alice', 'stale-again'));
    assert.equal((await get('alice', USERS.alice)).status, 200, 'alice\'s verified credentials still pass');

    // bob and dave were never verified: the throttle on alice does not touch them.
    await login('bob');
    const image = await buildOciImage(makeTempDir('portcullis-e2e-throttle-img-'), { layers: 1, layerSize: 64 * 1024, tag: 'v1', seed: 'e2e-throttle' });
    const push = await skopeoCopy(image.ref, `docker://${stack.proxy.hostPort}/ci/app:v1`, {
      dest: { certDir: stack.certs.caDir, creds: `dave:${USERS.dave}` },
    });
    assert.equal(push.code, 0, describeRun('skopeo copy (dave)', push));
    const tags = await get('dave', USERS.dave, '/v2/ci/app/tags/list');
    assert.equal(tags.status, 200, tags.text());
    assert.deepEqual((tags.json() as { tags: string[] }).tags, ['v1']);
  });

  test('spraying many user names from the address trips the per-address limit; verified credentials keep working', T, async () => {
    const throttledBefore = await authOutcome('throttled');
    // MAX_FAILURES failures so far (alice's); one guess per name adds the rest of the address's allowance.
    for (let i = MAX_FAILURES; i < MAX_FAILURES_PER_ADDRESS; i++) assert.equal((await get(`user${i}`, 'Winter2025!')).status, 401, `user${i}`);
    // Now any credentials not verified before wait, whoever they name: carol's right password too.
    assertThrottled(await get('carol', USERS.carol));
    assertThrottled(await get('someone', 'Winter2025!'));
    assert.equal(await authOutcome('throttled'), throttledBefore + 2);
    // Those verified before pass from the cache, and reach the registry.
    for (const user of ['alice', 'bob', 'dave'] as const) {
      const r = await get(user, USERS[user], '/v2/_catalog');
      assert.equal(r.status, 200, `${user}: ${r.text()}`);
    }
  });
});
