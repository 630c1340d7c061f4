import { test } from 'node:test';
import assert from 'node:assert/strict';
import { classify, isAmbiguousPath, isValidRepositoryName, splitTarget } from '../src/http/route.ts';

test('registry routes map to operations and repositories', () => {
  assert.deepEqual(classify('/v2/'), { operation: 'ping', repository: null });
  assert.deepEqual(classify('/v2/_catalog'), { operation: 'catalog', repository: null });
  assert.deepEqual(classify('/v2/team/app/tags/list'), { operation: 'tags', repository: 'team/app' });
  assert.deepEqual(classify('/v2/app/manifests/1.0'), { operation: 'manifest', repository: 'app' });
  assert.deepEqual(classify('/v2/app/manifests/sha256:' + 'a'.repeat(64)), { operation: 'manifest', repository: 'app' });
  assert.deepEqual(classify('/v2/a/b/c/blobs/sha256:' + 'b'.repeat(64)), { operation: 'blob', repository: 'a/b/c' });
  assert.deepEqual(classify('/v2/app/blobs/uploads/'), { operation: 'upload', repository: 'app' });
  assert.deepEqual(classify('/v2/app/blobs/uploads/2f1e-uuid'), { operation: 'upload', repository: 'app' });
  // a repository literally named "blobs/uploads" is still parsed by the last route segment
  assert.deepEqual(classify('/v2/x/blobs/uploads/tags/list'), { operation: 'tags', repository: 'x/blobs/uploads' });
  assert.deepEqual(classify('/v2/UPPER/tags/list'), { operation: 'other', repository: null });
  assert.deepEqual(classify('/metrics'), { operation: 'other', repository: null });
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
