/**
 * Assembling the services from the config, and what a reload keeps: a change that does not concern the
 * authenticator (the realm, which only the challenge uses) keeps it, and with it the credential cache;
 * a change that does (another htpasswd file) builds a new one. The same for the forwarder and its pool.
 */
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, test } from 'node:test';
import bcrypt from 'bcryptjs';
import { parseConfig } from '../src/config/load.ts';
import { createLogger } from '../src/ops/log.ts';
import { Metrics } from '../src/ops/metrics.ts';
import { buildServices } from '../src/runtime/services.ts';
import type { Services } from '../src/http/pipeline.ts';
import { makeTempDir } from './helpers/proc.js';
import { basic } from './helpers/wire.js';

const dir = makeTempDir('portcullis-services-');
writeFileSync(join(dir, 'htpasswd'), `alice:${bcrypt.hashSync('secret', 4)}\n`);
writeFileSync(join(dir, 'other'), `bob:${bcrypt.hashSync('secret', 4)}\n`);
const built: Services[] = [];
after(async () => {
  for (const s of new Set(built.map((b) => b.authenticator))) await s.close();
  for (const s of new Set(built.map((b) => b.forwarder))) s.close();
});

function config(auth: string, upstream = 'http://127.0.0.1:5000') {
  return parseConfig(`tls: false\nupstream: { url: "${upstream}" }\nauth: ${auth}\n`, join(dir, 'proxy.yaml'));
}

async function build(c: ReturnType<typeof config>, previous: Services | null): Promise<Services> {
  const s = await buildServices(c, previous, createLogger('silent'), new Metrics());
  built.push(s);
  return s;
}

test('a new realm keeps the authenticator and its credential cache', async () => {
  const first = await build(config('{ htpasswd: htpasswd, realm: "One" }'), null);
  assert.equal((await first.authenticator.authenticate(basic('alice', 'secret'), '10.0.0.1')).outcome, 'ok');
  const second = await build(config('{ htpasswd: htpasswd, realm: "Two" }'), first);
  assert.equal(second.config.auth.realm, 'Two');
  assert.equal(second.authenticator, first.authenticator);
  assert.equal((await second.authenticator.authenticate(basic('alice', 'secret'), '10.0.0.1')).outcome, 'cached');
  assert.equal(second.authenticator.verifications, 1, 'no second bcrypt run after the reload');
  assert.equal(second.forwarder, first.forwarder, 'the upstream did not change: same pool');
});

test('another htpasswd file, cache or throttle setting builds a new authenticator; another upstream a new forwarder', async () => {
  const first = await build(config('{ htpasswd: htpasswd }'), null);
  const otherFile = await build(config('{ htpasswd: other }'), first);
  assert.notEqual(otherFile.authenticator, first.authenticator);
  assert.equal(otherFile.authenticator.users, 1);
  const otherTtl = await build(config('{ htpasswd: other, cacheTtl: 1m }'), otherFile);
  assert.notEqual(otherTtl.authenticator, otherFile.authenticator);
  const otherLimit = await build(config('{ htpasswd: other, cacheTtl: 1m, maxFailuresPerAddress: 5 }'), otherTtl);
  assert.notEqual(otherLimit.authenticator, otherTtl.authenticator, 'the per-address limit is the authenticator\'s');
  assert.equal((await build(config('{ htpasswd: other, cacheTtl: 1m, maxFailuresPerAddress: 5 }'), otherLimit)).authenticator, otherLimit.authenticator);
  const otherUpstream = await build(config('{ htpasswd: other, cacheTtl: 1m, maxFailuresPerAddress: 5 }', 'http://127.0.0.1:5001'), otherLimit);
  assert.equal(otherUpstream.authenticator, otherLimit.authenticator);
  assert.notEqual(otherUpstream.forwarder, otherLimit.forwarder);
});
