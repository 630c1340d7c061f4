/**
 * Access rules alone: patterns, who a rule names, first decision wins, the config errors they produce.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { compilePattern } from '../src/access/pattern.ts';
import { accessProblems, AccessRules, type AccessSpec } from '../src/access/rules.ts';
import { ANONYMOUS, type Identity } from '../src/auth/identity.ts';
import { classify } from '../src/http/route.ts';
import { parseConfig } from '../src/config/load.ts';
import { PortcullisError } from '../src/errors.ts';

const user = (name: string, groups: string[] = []): Identity => ({ kind: 'user', name, groups });
const cert = (name: string): Identity => ({ kind: 'certificate', name, groups: [] });

const EXAMPLE: AccessSpec = {
  groups: { devs: ['alice', 'bob'], ci: ['robot'] },
  rules: [
    { repositories: ['public/**'], anonymous: true, actions: ['pull'] },
    { repositories: ['users/${user}/**'], users: ['*'], actions: ['*'] },
    { repositories: ['team/**'], groups: ['devs', 'ci'], actions: ['pull', 'push'] },
    { repositories: ['**'], users: ['admin'], actions: ['*'] },
  ],
};

describe('repository patterns', () => {
  const m = (pattern: string, repo: string, u: string | null = null): boolean => {
    const p = compilePattern(pattern);
    assert.ok(!('problem' in p), pattern);
    return p.matches(repo, u);
  };

  it('** spans one or more whole segments, * stays within one', () => {
    assert.ok(m('team/**', 'team/app'));
    assert.ok(m('team/**', 'team/app/api'));
    assert.ok(!m('team/**', 'team'), 'not the namespace itself');
    assert.ok(!m('team/**', 'teamx/app'));
    assert.ok(m('team/*', 'team/app'));
    assert.ok(!m('team/*', 'team/app/api'));
    assert.ok(m('team/app-*', 'team/app-api'));
    assert.ok(!m('team/app-*', 'team/app/x'));
    assert.ok(m('**', 'anything/at/all'));
    assert.ok(m('a/**/z', 'a/b/c/z'));
    assert.ok(!m('a/**/z', 'a/z'));
  });

  it('dots are literal, not any character', () => {
    assert.ok(m('lib/a.b', 'lib/a.b'));
    assert.ok(!m('lib/a.b', 'lib/axb'));
  });

  it('${user} stands for the caller, and only for a name that is a valid path component', () => {
    assert.ok(m('users/${user}/**', 'users/alice/tools', 'alice'));
    assert.ok(!m('users/${user}/**', 'users/alice/tools', 'bob'));
    assert.ok(!m('users/${user}/**', 'users/alice/tools', null), 'never for anonymous');
    assert.ok(!m('users/${user}/**', 'users/alice/tools', 'Alice'), 'upper case is no repository name');
    assert.ok(!m('users/${user}/**', 'users/a/b/x', 'a/b'), 'a slash cannot reach into another namespace');
    assert.ok(!m('users/${user}/**', 'users/a.b/x', 'a*b'), 'glob characters in a name are no wildcards');
  });

  it('bad patterns are named', () => {
    for (const [p, why] of [
      ['', /empty/],
      ['a//b', /empty path segment/],
      ['a/**b', /whole path segment/],
      ['Team/**', /lower case/],
      ['a/${group}', /only variable/],
      ['a b', /lower case/],
    ] as const) {
      const c = compilePattern(p);
      assert.ok('problem' in c, p);
      assert.match(c.problem, why, p);
    }
  });
});

describe('AccessRules', () => {
  const rules = new AccessRules(EXAMPLE);
  const may = (id: Identity, action: 'pull' | 'push' | 'delete', repo: string): boolean => rules.may(id, action, repo).allowed;

  it('the example: public pulls, personal namespaces, team groups, admin everything', () => {
    assert.ok(may(ANONYMOUS, 'pull', 'public/base'));
    assert.ok(!may(ANONYMOUS, 'push', 'public/base'));
    assert.ok(may(user('carol'), 'pull', 'public/base'), 'a public repository stays public for signed-in callers');
    assert.ok(may(user('carol'), 'push', 'users/carol/tools'));
    assert.ok(may(user('carol'), 'delete', 'users/carol/tools'));
    assert.ok(!may(user('carol'), 'pull', 'users/dave/tools'));
    assert.ok(may(user('alice'), 'push', 'team/app'));
    assert.ok(!may(user('alice'), 'delete', 'team/app'));
    assert.ok(may(cert('robot'), 'push', 'team/app'), 'a certificate identity is in groups by name too');
    assert.ok(!may(user('carol'), 'pull', 'team/app'));
    assert.ok(may(user('admin'), 'delete', 'team/app'));
    assert.ok(may(user('admin'), 'push', 'public/base'), 'a rule that does not grant the action does not stop the search');
    assert.ok(!may(ANONYMOUS, 'pull', 'team/app'));
  });

  it('groups from the identity count as well as those of the config', () => {
    assert.ok(may(user('erin', ['devs']), 'push', 'team/app'));
  });

  it('the first rule that decides wins; actions: [] denies', () => {
    const r = new AccessRules({
      groups: {},
      rules: [
        { repositories: ['team/secret/**'], users: ['*'], actions: [] },
        { repositories: ['team/**'], users: ['*'], actions: ['pull'] },
      ],
    });
    assert.deepEqual(r.may(user('a'), 'pull', 'team/secret/x'), { allowed: false, reason: 'rule 1' });
    assert.deepEqual(r.may(user('a'), 'pull', 'team/app'), { allowed: true, reason: 'rule 2' });
    assert.deepEqual(r.may(user('a'), 'push', 'team/app'), { allowed: false, reason: 'no rule' });
  });

  it('routes: the ping needs a signed-in caller, the catalog is open when anonymous pulls exist', () => {
    assert.equal(rules.authorize(ANONYMOUS, classify('GET', '/v2/')).allowed, false);
    assert.equal(rules.authorize(user('carol'), classify('GET', '/v2/')).allowed, true);
    assert.equal(rules.authorize(ANONYMOUS, classify('GET', '/v2/_catalog')).allowed, true);
    const closed = new AccessRules({ groups: {}, rules: [{ repositories: ['**'], users: ['*'], actions: ['pull'] }] });
    assert.equal(closed.authorize(ANONYMOUS, classify('GET', '/v2/_catalog')).allowed, false);
    assert.equal(rules.authorize(user('alice'), classify('PUT', '/v2/team/app/manifests/1')).allowed, true);
    assert.equal(rules.authorize(user('alice'), classify('DELETE', '/v2/team/app/manifests/1')).allowed, false);
    assert.equal(rules.authorize(user('alice'), classify('GET', '/v2/team/app/blobs/uploads/u')).allowed, true, 'upload status is push');
    assert.equal(rules.authorize(user('carol'), classify('GET', '/v2/public/x/blobs/uploads/u')).allowed, false, 'and so not for pull-only callers');
  });

  it('accessProblems names bad patterns, unknown groups and rules that name nobody, by key path', () => {
    assert.deepEqual(accessProblems(EXAMPLE), []);
    const problems = accessProblems({
      groups: { devs: [] },
      rules: [
        { repositories: ['ok/**', 'Bad'], groups: ['devs', 'ops'], actions: ['pull'] },
        { repositories: ['x'], actions: ['pull'] },
      ],
    });
    assert.deepEqual(
      problems.map((p) => p.path.join('.')),
      ['rules.0.repositories.1', 'rules.0.groups.1', 'rules.1'],
    );
    assert.match(problems[1]!.message, /unknown group "ops"/);
    assert.match(problems[2]!.message, /names nobody/);
  });
});

describe('the access section in proxy.yaml', () => {
  const base = 'tls: false\nupstream: { url: "http://127.0.0.1:5000" }\nauth: { htpasswd: htpasswd }\n';
  const refused = (text: string): string => {
    try {
      parseConfig(text, '/etc/portcullis/proxy.yaml');
    } catch (err) {
      assert.ok(err instanceof PortcullisError);
      assert.equal(err.code, 'PCL_ERR_CONFIG');
      return err.message;
    }
    assert.fail('config accepted');
  };

  it('loads the example', () => {
    const c = parseConfig(
      `${base}access:\n  groups: { devs: [alice, bob], ci: [robot] }\n  rules:\n    - { repositories: ["public/**"], anonymous: true, actions: [pull] }\n    - { repositories: ["users/\${user}/**"], users: ["*"], actions: ["*"] }\n`,
      '/etc/portcullis/proxy.yaml',
    );
    assert.equal(c.access?.rules.length, 2);
    assert.deepEqual(c.access?.groups['ci'], ['robot']);
  });

  it('errors name file, line and key', () => {
    const text = `${base}access:\n  groups: { devs: [alice] }\n  rules:\n    - { repositories: ["team/**"], groups: [ops], actions: [pull] }\n    - { repositories: ["Team//x"], users: [a], actions: [pull] }\n`;
    const msg = refused(text);
    assert.match(msg, /^\/etc\/portcullis\/proxy\.yaml:7: access\.rules\.0\.groups\.0: unknown group "ops"/m);
    assert.match(msg, /^\/etc\/portcullis\/proxy\.yaml:8: access\.rules\.1\.repositories\.0: "Team\/\/x" has an empty path segment/m);
    // Shape errors come first; the rules' meaning is checked once their shape is right.
    const typo = refused(`${base}access:\n  rules:\n    - { repositories: ["x"], users: [a], actions: [pul] }\n`);
    assert.match(typo, /^\/etc\/portcullis\/proxy\.yaml:6: access\.rules\.0\.actions\.0: Invalid option: expected one of "pull"\|"push"\|"delete"\|"\*"/m);
  });

  it('a rule must name someone; certificate identities need a client CA', () => {
    assert.match(refused(`${base}access:\n  rules:\n    - { repositories: ["x"], actions: [pull] }\n`), /access\.rules\.0: names nobody/);
    assert.match(
      refused('tls: false\nupstream: { url: "http://127.0.0.1:5000" }\nauth: { htpasswd: htpasswd, clientCertificate: identity }\n'),
      /proxy\.yaml:3: auth\.clientCertificate: "identity" needs tls\.clientCA/,
    );
  });
});
