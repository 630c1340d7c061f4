/**
 * Request targets against access rules, at the wire: each raw request, who sends it, the answer it must get,
 * and exactly what (if anything) the registry receives. Many try to reach a denied repository through an
 * allowed one: by path tricks, encodings, a mount's source, or a form body.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { startFront, type Front } from './helpers/front.js';
import { basic, echoTarget, parseResponses, startRecordingUpstream, tlsExchange, type RecordingUpstream } from './helpers/wire.js';

const ACCESS = `access:
  groups: { devs: [alice] }
  rules:
    - { repositories: ["public/**"], anonymous: true, actions: [pull] }
    - { repositories: ["team/**"], groups: [devs], actions: [pull, push] }
    - { repositories: ["users/\${user}/**"], users: ["*"], actions: ["*"] }
    - { repositories: ["secret/**"], users: [admin], actions: ["*"] }`;

const AUTH = {
  anon: null,
  empty: 'Basic Og==',
  alice: basic('alice', 'alice-pw'),
  bob: basic('bob', 'bob-pw'),
  admin: basic('admin', 'admin-pw'),
  wrong: basic('alice', 'not-her-password'),
} as const;
type Who = keyof typeof AUTH;

const D = `sha256:${'d'.repeat(64)}`;

interface Case {
  who: Who;
  /** Request line and any extra header lines, without Host and Authorization. */
  request: string;
  body?: string;
  status: number;
  /** The target the registry receives, or null when nothing may reach it. */
  upstream: string | null;
}

const CASES: Array<[string, Case]> = [
  // the ping and the login it starts
  ['anonymous ping gets the challenge', { who: 'anon', request: 'GET /v2/', status: 401, upstream: null }],
  ['empty Basic credentials are anonymous: the challenge', { who: 'empty', request: 'GET /v2/', status: 401, upstream: null }],
  ['a signed-in ping', { who: 'bob', request: 'GET /v2/', status: 200, upstream: '/v2/' }],
  // public pulls
  ['anonymous pull of a public manifest', { who: 'anon', request: 'GET /v2/public/app/manifests/1.0', status: 200, upstream: '/v2/public/app/manifests/1.0' }],
  ['"Basic Og==" pull of a public manifest', { who: 'empty', request: 'HEAD /v2/public/app/manifests/1.0', status: 200, upstream: '/v2/public/app/manifests/1.0' }],
  ['anonymous pull of a public blob', { who: 'anon', request: `GET /v2/public/app/blobs/${D}`, status: 200, upstream: `/v2/public/app/blobs/${D}` }],
  ['anonymous tag list with paging', { who: 'anon', request: 'GET /v2/public/app/tags/list?n=1&last=a', status: 200, upstream: '/v2/public/app/tags/list?n=1&last=a' }],
  ['a signed-in pull of a public repository', { who: 'bob', request: 'GET /v2/public/app/manifests/1.0', status: 200, upstream: '/v2/public/app/manifests/1.0' }],
  ['a wrong password is refused, not downgraded to anonymous', { who: 'wrong', request: 'GET /v2/public/app/manifests/1.0', status: 401, upstream: null }],
  // writes need more than pull
  ['anonymous upload start to a public repository', { who: 'anon', request: 'POST /v2/public/app/blobs/uploads/', status: 401, upstream: null }],
  ['anonymous upload status (GET under uploads is push)', { who: 'anon', request: 'GET /v2/public/app/blobs/uploads/u1', status: 401, upstream: null }],
  ['anonymous upload cancel (DELETE under uploads is push)', { who: 'anon', request: 'DELETE /v2/public/app/blobs/uploads/u1', status: 401, upstream: null }],
  ['a pull-only caller pushing a public manifest', { who: 'bob', request: 'PUT /v2/public/app/manifests/1.0', status: 403, upstream: null }],
  ['a pull-only caller deleting a public blob', { who: 'bob', request: `DELETE /v2/public/app/blobs/${D}`, status: 403, upstream: null }],
  // groups and personal namespaces
  ['a developer pulls from team', { who: 'alice', request: 'GET /v2/team/app/manifests/1', status: 200, upstream: '/v2/team/app/manifests/1' }],
  ['a developer pushes to team', { who: 'alice', request: 'PUT /v2/team/app/manifests/1', status: 200, upstream: '/v2/team/app/manifests/1' }],
  ['a developer may not delete in team', { who: 'alice', request: 'DELETE /v2/team/app/manifests/1', status: 403, upstream: null }],
  ['a non-member may not pull team', { who: 'bob', request: 'GET /v2/team/app/manifests/1', status: 403, upstream: null }],
  ['anonymous may not pull team, and gets the challenge', { who: 'anon', request: 'GET /v2/team/app/manifests/1', status: 401, upstream: null }],
  ['a user deletes in their own namespace', { who: 'bob', request: 'DELETE /v2/users/bob/tools/manifests/1', status: 200, upstream: '/v2/users/bob/tools/manifests/1' }],
  ['a user may not read another user\'s namespace', { who: 'bob', request: 'GET /v2/users/alice/tools/tags/list', status: 403, upstream: null }],
  ['the admin reads secret', { who: 'admin', request: 'GET /v2/secret/db/tags/list', status: 200, upstream: '/v2/secret/db/tags/list' }],
  ['others may not read secret', { who: 'alice', request: 'GET /v2/secret/db/tags/list', status: 403, upstream: null }],
  // path tricks aimed at secret through public
  ['dot-dot segments', { who: 'anon', request: 'GET /v2/public/../secret/db/tags/list', status: 400, upstream: null }],
  ['percent-encoded dot-dot', { who: 'anon', request: 'GET /v2/public/%2e%2e/secret/db/tags/list', status: 400, upstream: null }],
  ['mixed-case percent-encoded dot-dot', { who: 'anon', request: 'GET /v2/public/%2E./secret/db/tags/list', status: 400, upstream: null }],
  ['an encoded slash joining two names', { who: 'anon', request: 'GET /v2/public%2Fsecret/db/tags/list', status: 400, upstream: null }],
  ['an encoded slash inside the name', { who: 'anon', request: 'GET /v2/public/x%2f..%2fsecret/tags/list', status: 400, upstream: null }],
  ['a double slash', { who: 'anon', request: 'GET /v2/public//secret/db/tags/list', status: 400, upstream: null }],
  ['an empty first segment', { who: 'anon', request: 'GET /v2//secret/db/tags/list', status: 400, upstream: null }],
  ['a dot segment', { who: 'anon', request: 'GET /v2/public/./app/tags/list', status: 400, upstream: null }],
  ['a backslash', { who: 'anon', request: 'GET /v2/public\\..\\secret/tags/list', status: 400, upstream: null }],
  ['dot-dot after the route', { who: 'anon', request: 'GET /v2/public/app/manifests/../../secret/db/manifests/1', status: 400, upstream: null }],
  ['an encoded NUL', { who: 'anon', request: 'GET /v2/public/app%00/tags/list', status: 400, upstream: null }],
  ['upper case (the registry would refuse the name)', { who: 'anon', request: 'GET /v2/PUBLIC/app/tags/list', status: 400, upstream: null }],
  ['a percent-encoded variable', { who: 'bob', request: 'GET /v2/users/%24%7Buser%7D/x/tags/list', status: 400, upstream: null }],
  ['an absolute-form target', { who: 'anon', request: 'GET http://registry/v2/public/app/tags/list', status: 400, upstream: null }],
  ['an unknown route under /v2/', { who: 'admin', request: 'GET /v2/public/app/nothing', status: 404, upstream: null }],
  ['a tag list with a trailing slash', { who: 'admin', request: 'GET /v2/public/app/tags/list/', status: 404, upstream: null }],
  ['a manifest without a reference', { who: 'admin', request: 'GET /v2/public/app/manifests/', status: 404, upstream: null }],
  // mounts: the source needs pull too
  ['a mount from a readable source is kept', {
    who: 'alice', request: `POST /v2/team/app/blobs/uploads/?mount=${D}&from=public/base`, status: 200,
    upstream: `/v2/team/app/blobs/uploads/?mount=${D}&from=public/base`,
  }],
  ['a mount from an unreadable source becomes an ordinary upload', {
    who: 'alice', request: `POST /v2/team/app/blobs/uploads/?mount=${D}&from=secret/db`, status: 200, upstream: '/v2/team/app/blobs/uploads/',
  }],
  ['an encoded mount from an unreadable source, other parameters kept', {
    who: 'alice', request: `POST /v2/team/app/blobs/uploads/?x=1&mo%75nt=${D}&fr%6Fm=secret/db`, status: 200, upstream: '/v2/team/app/blobs/uploads/?x=1',
  }],
  ['two from parameters', { who: 'alice', request: `POST /v2/team/app/blobs/uploads/?mount=${D}&from=public/base&from=secret/db`, status: 400, upstream: null }],
  ['a semicolon in the query', { who: 'alice', request: `POST /v2/team/app/blobs/uploads/?mount=${D};from=secret/db`, status: 400, upstream: null }],
  ['a source that is no repository name', { who: 'alice', request: `POST /v2/team/app/blobs/uploads/?mount=${D}&from=Secret/db`, status: 400, upstream: null }],
  ['a mount source in a form body', {
    who: 'alice', request: 'POST /v2/team/app/blobs/uploads/\r\nContent-Type: application/x-www-form-urlencoded',
    body: `mount=${D}&from=secret/db`, status: 400, upstream: null,
  }],
  ['a mount on GET is no mount: a plain pull', { who: 'bob', request: `GET /v2/public/app/manifests/1?mount=${D}&from=secret/db`, status: 200, upstream: `/v2/public/app/manifests/1?mount=${D}&from=secret/db` }],
  // credentials that are not one caller
  ['two Authorization headers', { who: 'alice', request: `GET /v2/team/app/manifests/1\r\nAuthorization: ${basic('admin', 'admin-pw')}`, status: 400, upstream: null }],
];

let upstream: RecordingUpstream;
let front: Front;

before(async () => {
  upstream = await startRecordingUpstream((req) => {
    if (req.target.startsWith('/v2/_catalog')) {
      const body = JSON.stringify({ repositories: ['public/app', 'secret/db', 'team/app', 'users/bob/tools'] });
      return `HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n${body}`;
    }
    return echoTarget(req);
  });
  front = await startFront({
    users: { alice: 'alice-pw', bob: 'bob-pw', admin: 'admin-pw' },
    upstream: `{ url: "${upstream.url}" }`,
    extraConfig: ACCESS,
  });
});

after(async () => {
  await front.close();
  await upstream.close();
});

async function send(c: Case): Promise<{ status: number; body: string }> {
  const [line, ...extra] = c.request.split('\r\n');
  const auth = AUTH[c.who];
  const headers = ['Host: registry.example:5043', ...(auth ? [`Authorization: ${auth}`] : []), ...extra];
  if (c.body !== undefined) headers.push(`Content-Length: ${Buffer.byteLength(c.body)}`);
  const raw = `${line} HTTP/1.1\r\n${headers.join('\r\n')}\r\nConnection: close\r\n\r\n${c.body ?? ''}`;
  const answer = await tlsExchange(front.port, raw, { ca: front.ca! });
  const [res] = parseResponses(answer);
  assert.ok(res, `no answer to ${line}`);
  return res;
}

test(`${CASES.length} request targets get their decision, and the registry sees only what was allowed`, async () => {
  assert.ok(CASES.length >= 40);
  const failures: string[] = [];
  for (const [name, c] of CASES) {
    const before = upstream.requests.length;
    const res = await send(c);
    const reached = upstream.requests.slice(before).map((r) => r.target);
    const expected = c.upstream === null ? [] : [c.upstream];
    if (res.status !== c.status || JSON.stringify(reached) !== JSON.stringify(expected)) {
      failures.push(`${name}: got ${res.status} and upstream ${JSON.stringify(reached)}, want ${c.status} and ${JSON.stringify(expected)}`);
    }
  }
  assert.deepEqual(failures, []);
});

test('refusals are registry JSON; the anonymous ones carry the challenge, the known ones say DENIED', async () => {
  const anon = await send({ who: 'anon', request: 'GET /v2/team/app/manifests/1', status: 401, upstream: null });
  assert.equal(JSON.parse(anon.body).errors[0].code, 'UNAUTHORIZED');
  const known = await send({ who: 'bob', request: 'GET /v2/team/app/manifests/1', status: 403, upstream: null });
  assert.equal(JSON.parse(known.body).errors[0].code, 'DENIED');
  const invalid = await send({ who: 'anon', request: 'GET /v2/PUBLIC/app/tags/list', status: 400, upstream: null });
  assert.equal(JSON.parse(invalid.body).errors[0].code, 'NAME_INVALID');
});

test('the catalog lists only what each caller may pull', async () => {
  const list = async (who: Who): Promise<string[]> => {
    const res = await send({ who, request: 'GET /v2/_catalog', status: 200, upstream: '/v2/_catalog' });
    assert.equal(res.status, 200, who);
    return (JSON.parse(res.body) as { repositories: string[] }).repositories;
  };
  assert.deepEqual(await list('anon'), ['public/app']);
  assert.deepEqual(await list('bob'), ['public/app', 'users/bob/tools']);
  assert.deepEqual(await list('alice'), ['public/app', 'team/app']);
  assert.deepEqual(await list('admin'), ['public/app', 'secret/db']);
});

test('the decision is in the access log line', async () => {
  await send({ who: 'bob', request: 'GET /v2/team/app/manifests/9', status: 403, upstream: null });
  await send({ who: 'alice', request: `POST /v2/team/app/blobs/uploads/?mount=${D}&from=secret/db`, status: 200, upstream: null });
  const lines = front.logs.filter((l) => l['msg'] === 'request');
  const denied = lines.findLast((l) => l['path'] === '/v2/team/app/manifests/9')!;
  assert.equal(denied['decision'], 'deny: no rule');
  assert.equal(denied['action'], 'pull');
  assert.equal(denied['user'], 'bob');
  const mount = lines.findLast((l) => l['path'] === '/v2/team/app/blobs/uploads/')!;
  assert.equal(mount['decision'], 'allow: rule 2; mount from secret/db dropped');
});
