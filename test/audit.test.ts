/**
 * The audit trail: which exchanges make an event, and what it holds (never a credential); the file of its own.
 */
import assert from 'node:assert/strict';
import { readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { auditEventOf, type AuditFacts } from '../src/ops/audit.ts';
import { startFront, type Front } from './helpers/front.js';
import { makeTempDir } from './helpers/proc.js';
import { eventually } from './helpers/wait.js';
import { basic, parseResponses, startRecordingUpstream, tlsExchange, type RecordingUpstream } from './helpers/wire.js';

const D = `sha256:${'e'.repeat(64)}`;
const facts = (over: Partial<AuditFacts>): AuditFacts => ({
  reqId: 'r1', user: 'alice', identity: 'user', clientIp: '10.0.0.1', method: 'PUT', path: '/v2/team/app/manifests/1.0',
  operation: 'manifest', action: 'push', repository: 'team/app', denied: false, status: 201, digest: D, ...over,
});
const NOW = new Date('2026-11-30T12:00:00Z');

describe('auditEventOf', () => {
  it('a manifest push, with its tag and the digest the registry answered', () => {
    assert.deepEqual(auditEventOf(facts({}), NOW), {
      time: '2026-11-30T12:00:00.000Z', event: 'push', reqId: 'r1', user: 'alice', identity: 'user', clientIp: '10.0.0.1',
      action: 'push', repository: 'team/app', reference: '1.0', digest: D, status: 201, result: 'ok',
    });
  });

  it('deletes of manifests and blobs, failed ones too; refused writes; nothing for reads or blob uploads', () => {
    assert.equal(auditEventOf(facts({ method: 'DELETE', action: 'delete', status: 202 }), NOW)?.event, 'delete');
    assert.equal(auditEventOf(facts({ method: 'DELETE', action: 'delete', status: 404 }), NOW)?.result, 'failed');
    const blob = auditEventOf(facts({ method: 'DELETE', action: 'delete', operation: 'blob', path: `/v2/team/app/blobs/${D}` }), NOW);
    assert.equal(blob?.reference, D);
    const denied = auditEventOf(facts({ method: 'POST', operation: 'upload', path: '/v2/team/app/blobs/uploads/', denied: true, status: 403, user: null, identity: 'anonymous' }), NOW);
    assert.equal(denied?.event, 'denied');
    assert.equal(denied?.reference, null);
    assert.equal(auditEventOf(facts({ method: 'GET', action: 'pull' }), NOW), null);
    assert.equal(auditEventOf(facts({ method: 'PATCH', operation: 'upload', path: '/v2/team/app/blobs/uploads/u1' }), NOW), null);
    assert.equal(auditEventOf(facts({ method: 'GET', action: null, repository: null, path: '/v2/' }), NOW), null);
  });
});

describe('the audit trail of a running proxy', () => {
  let upstream: RecordingUpstream;
  let front: Front;
  let file: string;
  before(async () => {
    upstream = await startRecordingUpstream((req) => {
      const status = req.method === 'PUT' ? '201 Created' : req.method === 'DELETE' ? '202 Accepted' : '200 OK';
      return `HTTP/1.1 ${status}\r\nDocker-Content-Digest: ${D}\r\nContent-Length: 0\r\n\r\n`;
    });
    file = join(makeTempDir('portcullis-audit-'), 'audit.jsonl');
    front = await startFront({
      users: { alice: 'alice-pw', bob: 'bob-pw' },
      upstream: `{ url: "${upstream.url}" }`,
      extraConfig: `access:\n  rules:\n    - { repositories: ["team/**"], users: [alice], actions: ["*"] }\n    - { repositories: ["team/**"], users: [bob], actions: [pull] }\naudit: { file: "${file}" }`,
    });
  });
  after(async () => {
    await front.close();
    await upstream.close();
  });

  const send = async (who: string, password: string, request: string): Promise<number> => {
    const raw = `${request} HTTP/1.1\r\nHost: r\r\nAuthorization: ${basic(who, password)}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n`;
    return parseResponses(await tlsExchange(front.port, raw, { ca: front.ca! }))[0]!.status;
  };

  it('push, delete and a refused delete land in the log stream and the file, without credentials', async () => {
    assert.equal(await send('alice', 'alice-pw', 'PUT /v2/team/app/manifests/2.0'), 201);
    assert.equal(await send('alice', 'alice-pw', `DELETE /v2/team/app/manifests/${D}`), 202);
    assert.equal(await send('bob', 'bob-pw', 'DELETE /v2/team/app/manifests/2.0'), 403);
    assert.equal(await send('bob', 'bob-pw', 'GET /v2/team/app/manifests/2.0'), 200);
    const lines = await eventually('three audit lines in the file', async () => {
      const l = readFileSync(file, 'utf8').trim().split('\n').filter(Boolean);
      return l.length >= 3 ? l.map((x) => JSON.parse(x) as Record<string, unknown>) : null;
    });
    assert.deepEqual(lines.map((e) => [e['event'], e['user'], e['reference'], e['result']]), [
      ['push', 'alice', '2.0', 'ok'],
      ['delete', 'alice', D, 'ok'],
      ['denied', 'bob', '2.0', 'denied'],
    ]);
    assert.equal(statSync(file).mode & 0o777, 0o600);
    const logged = front.logs.filter((l) => l['msg'] === 'audit').map((l) => (l['audit'] as Record<string, unknown>)['event']);
    assert.deepEqual(logged, ['push', 'delete', 'denied']);
    const text = readFileSync(file, 'utf8') + JSON.stringify(front.logs);
    for (const secret of ['alice-pw', 'bob-pw', basic('alice', 'alice-pw').slice(6), basic('bob', 'bob-pw').slice(6)]) assert.ok(!text.includes(secret), 'no credential');
  });
});
