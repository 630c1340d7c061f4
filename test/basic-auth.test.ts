import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { MAX_AUTHORIZATION_LENGTH, parseBasicAuthorization } from '../src/auth/basic.js';

const b64 = (s: string | Buffer): string => Buffer.from(s).toString('base64');

function reason(header: string): string {
  const r = parseBasicAuthorization(header);
  assert.equal(r.kind, 'malformed', `${JSON.stringify(header.slice(0, 40))} should be malformed`);
  return r.kind === 'malformed' ? r.reason : '';
}

describe('parseBasicAuthorization', () => {
  it('reports no header as none', () => {
    assert.deepEqual(parseBasicAuthorization(undefined), { kind: 'none' });
  });

  it('reads user and password', () => {
    assert.deepEqual(parseBasicAuthorization(`Basic ${b64('alice:s3cret')}`), { kind: 'credentials', user: 'alice', password: 's3cret' });
  });

  it('takes the scheme case-insensitively and tolerates extra spaces', () => {
    for (const scheme of ['basic', 'BASIC', 'bAsIc']) {
      assert.deepEqual(parseBasicAuthorization(`${scheme}   ${b64('a:b')}  `), { kind: 'credentials', user: 'a', password: 'b' });
    }
  });

  it('splits on the first colon: the password may contain colons', () => {
    assert.deepEqual(parseBasicAuthorization(`Basic ${b64('bob:pa:ss:')}`), { kind: 'credentials', user: 'bob', password: 'pa:ss:' });
  });

  it('allows an empty password and UTF-8 in both parts', () => {
    assert.deepEqual(parseBasicAuthorization(`Basic ${b64('bob:')}`), { kind: 'credentials', user: 'bob', password: '' });
    assert.deepEqual(parseBasicAuthorization(`Basic ${b64('jürgen:pässwörd')}`), { kind: 'credentials', user: 'jürgen', password: 'pässwörd' });
  });

  it('treats `Basic Og==` (containers/image without credentials) as anonymous', () => {
    assert.equal(b64(':'), 'Og==');
    assert.deepEqual(parseBasicAuthorization('Basic Og=='), { kind: 'anonymous' });
  });

  it('refuses other schemes and a missing token', () => {
    assert.equal(reason('Bearer abc.def.ghi'), 'unsupported scheme "Bearer"');
    assert.equal(reason('Basic'), 'no credentials after "Basic"');
    assert.equal(reason('Basic    '), 'no credentials after "Basic"');
    assert.equal(reason(''), 'not "Basic <base64>"');
    assert.equal(reason('Basicdddd'), 'unsupported scheme "Basicdddd"');
    assert.equal(reason('{}<> x'), 'not "Basic <base64>"');
  });

  it('requires strict base64: standard alphabet, with padding', () => {
    assert.equal(b64('a:bc'), 'YTpiYw==');
    assert.equal(reason('Basic YTpi*A=='), 'credentials are not valid base64');
    assert.equal(reason('Basic YTpiYw'), 'credentials are not valid base64');
    assert.equal(reason('Basic YT-iYw=='), 'credentials are not valid base64'); // URL-safe alphabet
    assert.equal(reason('Basic YTpi YTpi'), 'credentials are not valid base64');
    assert.equal(reason('Basic ===='), 'credentials are not valid base64');
  });

  it('refuses credentials without a colon or with an empty or control-character user', () => {
    assert.equal(reason(`Basic ${b64('alice')}`), 'credentials have no ":" between user and password');
    assert.equal(reason(`Basic ${b64(':secret')}`), 'empty user name');
    assert.equal(reason(`Basic ${b64('al\u0000ice:x')}`), 'user name contains a control character');
  });

  it('refuses bytes that are not UTF-8', () => {
    assert.equal(reason(`Basic ${b64(Buffer.from([0x62, 0x6f, 0x62, 0x3a, 0xff, 0xfe]))}`), 'credentials are not UTF-8');
  });

  it('refuses over-long headers without decoding them', () => {
    const long = `Basic ${b64(`alice:${'x'.repeat(MAX_AUTHORIZATION_LENGTH)}`)}`;
    assert.match(reason(long), /longer than 8192 characters/);
    const spaces = `Basic${' '.repeat(MAX_AUTHORIZATION_LENGTH - 10)}\nx`;
    assert.equal(parseBasicAuthorization(spaces).kind, 'malformed');
  });
});
