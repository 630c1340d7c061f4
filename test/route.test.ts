import { test } from 'node:test';
import assert from 'node:assert/strict';
import { classify, isAmbiguousPath, isValidRepositoryName, queryProblem, splitTarget } from '../src/http/route.ts';

const r = (operation: string, repository: string | null, action: string | null, mountFrom: string | null = null) => ({ operation, repository, action, mountFrom });

test('registry routes map to operations, repositories and actions', () => {
  assert.deepEqual(classify('GET', '/v2/'), r('ping', null, null));
  assert.deepEqual(classify('GET', '/v2/_catalog'), r('catalog', null, null));
  assert.deepEqual(classify('GET', '/v2/team/app/tags/list'), r('tags', 'team/app', 'pull'));
  assert.deepEqual(classify('HEAD', '/v2/app/manifests/1.0'), r('manifest', 'app', 'pull'));
  assert.deepEqual(classify('PUT', '/v2/app/manifests/1.0'), r('manifest', 'app', 'push'));
  assert.deepEqual(classify('DELETE', '/v2/app/manifests/sha256:' + 'a'.repeat(64)), r('manifest', 'app', 'delete'));
  assert.deepEqual(classify('GET', '/v2/a/b/c/blobs/sha256:' + 'b'.repeat(64)), r('blob', 'a/b/c', 'pull'));
  assert.deepEqual(classify('DELETE', '/v2/a/blobs/sha256:' + 'b'.repeat(64)), r('blob', 'a', 'delete'));
  assert.deepEqual(classify('POST', '/v2/app/blobs/uploads/'), r('upload', 'app', 'push'));
  // every upload route is push, whatever the method: status GET and cancel DELETE act on a write in progress
  assert.deepEqual(classify('GET', '/v2/app/blobs/uploads/2f1e-uuid'), r('upload', 'app', 'push'));
  assert.deepEqual(classify('DELETE', '/v2/app/blobs/uploads/2f1e-uuid'), r('upload', 'app', 'push'));
  // a repository literally named "blobs/uploads" is still parsed by the last route segment
  assert.deepEqual(classify('GET', '/v2/x/blobs/uploads/tags/list'), r('tags', 'x/blobs/uploads', 'pull'));
  assert.deepEqual(classify('GET', '/v2/UPPER/tags/list'), r('other', null, null));
  assert.deepEqual(classify('GET', '/metrics'), r('other', null, null));
});

test('a cross-repository mount names its source repository', () => {
  const digest = 'sha256:' + 'c'.repeat(64);
  assert.deepEqual(classify('POST', '/v2/dst/blobs/uploads/', `mount=${digest}&from=src/app`), r('upload', 'dst', 'push', 'src/app'));
  assert.deepEqual(classify('POST', '/v2/dst/blobs/uploads/', 'from=src/app'), r('upload', 'dst', 'push'), 'no mount: no mount source');
  assert.deepEqual(classify('GET', '/v2/dst/blobs/uploads/u', `mount=${digest}&from=src/app`), r('upload', 'dst', 'push'), 'only POST mounts');
});

test('queries the registry could read differently are refused', () => {
  assert.equal(queryProblem(null), null);
  assert.equal(queryProblem('_state=abc%2B%3D&digest=sha256:1'), null);
  assert.match(queryProblem('mount=a&from=x&from=y') ?? '', /more than one "from"/);
  assert.match(queryProblem('mount=a&mount=b&from=x') ?? '', /more than one "mount"/);
  assert.match(queryProblem('mount=a;from=x') ?? '', /";"/);
  assert.match(queryProblem('mount=a&from=UPPER') ?? '', /not a repository name/);
});

test('repository name grammar', () => {
  assert.ok(isValidRepositoryName('library/ubuntu'));
  assert.ok(isValidRepositoryName('a-b__c.d/e--f'));
  assert.ok(!isValidRepositoryName('-a'));
  assert.ok(!isValidRepositoryName('a//b'));
  assert.ok(!isValidRepositoryName('a'.repeat(256)));
});

test('paths the registry router would rewrite are ambiguous', () => {
  for (const p of ['/v2//a/tags/list', '/v2/a/../b/tags/list', '/v2/./a', '/v2/a%2Fb/tags/list', '/v2/%2e%2e/x', '/v2/a\\b', '/v2/a/..']) {
    assert.ok(isAmbiguousPath(p), p);
  }
  for (const p of ['/v2/', '/v2/a.b/tags/list', '/v2/a/manifests/v1.2.3', '/v2/a/blobs/uploads/']) assert.ok(!isAmbiguousPath(p), p);
});

test('query kept raw', () => {
  assert.deepEqual(splitTarget('/v2/a/blobs/uploads/u?_state=a%2Bb&digest=sha256:1'), { path: '/v2/a/blobs/uploads/u', query: '_state=a%2Bb&digest=sha256:1' });
  assert.deepEqual(splitTarget('/v2/'), { path: '/v2/', query: null });
});
