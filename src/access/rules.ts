/**
 * Per-repository access rules from `proxy.yaml`'s `access` section. Pure: an identity and a route in, a
 * decision out.
 *
 *   access:
 *     groups: { devs: [alice, bob], ci: [robot] }
 *     rules:
 *       - { repositories: ["public/**"], anonymous: true, actions: [pull] }
 *       - { repositories: ["users/${user}/**"], users: ["*"], actions: ["*"] }
 *       - { repositories: ["team/**"], groups: [devs, ci], actions: [pull, push] }
 *       - { repositories: ["**"], users: [admin], actions: ["*"] }
 *
 * A rule applies to a request when one of its repository patterns matches and it names the caller:
 * `anonymous: true` names everyone (signed in or not: a public repository stays public after `docker login`),
 * `users: ["*"]` every signed-in caller, `users`/`groups` those listed. Rules are read in order and the first
 * that decides wins: an applying rule that lists the action allows it; one with `actions: []` denies it (as
 * docker_auth's empty action list does); otherwise reading goes on. No rule deciding means denied.
 *
 * Beyond repositories: the `/v2/` ping needs a signed-in caller (docker login needs its 401 otherwise:
 * distribution#1028); the catalog is open to every signed-in caller, and to anonymous ones when some rule
 * lets anonymous callers pull (the pipeline filters it to what each caller may pull).
 */
import { nameOf, type Identity } from '../auth/identity.js';
import { PortcullisError } from '../errors.js';
import type { Action, Route } from '../http/route.js';
import { compilePattern, type RepositoryPattern } from './pattern.js';
import type { Authorizer, Decision } from './policy.js';

export type RuleAction = Action | '*';

export interface RuleSpec {
  repositories: readonly string[];
  users?: readonly string[] | undefined;
  groups?: readonly string[] | undefined;
  anonymous?: boolean | undefined;
  actions: readonly RuleAction[];
}

export interface AccessSpec {
  /** group -> members */
  groups: Readonly<Record<string, readonly string[]>>;
  rules: readonly RuleSpec[];
}

interface Rule {
  /** 1-based, as operators count the rules in their file. */
  readonly number: number;
  readonly patterns: readonly RepositoryPattern[];
  readonly anyone: boolean;
  readonly anySignedIn: boolean;
  readonly users: ReadonlySet<string>;
  readonly groups: ReadonlySet<string>;
  /** null: every action; empty: this rule denies. */
  readonly actions: ReadonlySet<Action> | null;
}

/** What is wrong with a spec, as key paths and messages (the config loader adds file and line). */
export function accessProblems(spec: AccessSpec): Array<{ path: Array<string | number>; message: string }> {
  const problems: Array<{ path: Array<string | number>; message: string }> = [];
  spec.rules.forEach((rule, i) => {
    rule.repositories.forEach((p, j) => {
      const compiled = compilePattern(p);
      if ('problem' in compiled) problems.push({ path: ['rules', i, 'repositories', j], message: compiled.problem });
    });
    (rule.groups ?? []).forEach((g, j) => {
      if (!(g in spec.groups)) problems.push({ path: ['rules', i, 'groups', j], message: `unknown group "${g}" (not in access.groups)` });
    });
    if (!rule.anonymous && (rule.users ?? []).length === 0 && (rule.groups ?? []).length === 0) {
      problems.push({ path: ['rules', i], message: 'names nobody: give users, groups or anonymous: true' });
    }
  });
  return problems;
}

export class AccessRules implements Authorizer {
  readonly #rules: readonly Rule[];
  /** member -> groups it is in */
  readonly #memberOf: ReadonlyMap<string, ReadonlySet<string>>;
  /** Some rule lets anonymous callers pull something: the catalog is then open to them (filtered). */
  readonly anonymousPull: boolean;
  readonly filtersCatalog = true;

  /** `spec` must be free of `accessProblems` (the config loader checks it); a bad pattern here is a bug. */
  constructor(spec: AccessSpec) {
    const memberOf = new Map<string, Set<string>>();
    for (const [group, members] of Object.entries(spec.groups)) {
      for (const m of members) memberOf.set(m, (memberOf.get(m) ?? new Set()).add(group));
    }
    this.#memberOf = memberOf;
    this.#rules = spec.rules.map((r, i) => ({
      number: i + 1,
      patterns: r.repositories.map((p) => {
        const compiled = compilePattern(p);
        if ('problem' in compiled) throw new PortcullisError('PCL_ERR_CONFIG', `access.rules.${i}: ${compiled.problem}`);
        return compiled;
      }),
      anyone: r.anonymous === true,
      anySignedIn: (r.users ?? []).includes('*'),
      users: new Set((r.users ?? []).filter((u) => u !== '*')),
      groups: new Set(r.groups ?? []),
      actions: r.actions.includes('*') ? null : new Set(r.actions.filter((a): a is Action => a !== '*')),
    }));
    this.anonymousPull = this.#rules.some((r) => r.anyone && (r.actions === null || r.actions.has('pull')));
  }

  authorize(identity: Identity, route: Route): Decision {
    if (route.operation === 'ping') {
      return identity.kind === 'anonymous' ? deny('authentication required') : allow('signed in');
    }
    if (route.operation === 'catalog') {
      if (identity.kind !== 'anonymous' || this.anonymousPull) return allow('catalog, filtered per caller');
      return deny('authentication required');
    }
    if (route.repository === null || route.action === null) return deny('not a repository route');
    return this.may(identity, route.action, route.repository);
  }

  /** May `identity` do `action` on `repository`? */
  may(identity: Identity, action: Action, repository: string): Decision {
    const user = nameOf(identity);
    for (const rule of this.#rules) {
      if (!this.#names(rule, identity, user)) continue;
      if (!rule.patterns.some((p) => p.matches(repository, user))) continue;
      if (rule.actions === null || rule.actions.has(action)) return allow(`rule ${rule.number}`);
      if (rule.actions.size === 0) return deny(`rule ${rule.number}`);
    }
    return deny('no rule');
  }

  #names(rule: Rule, identity: Identity, user: string | null): boolean {
    if (rule.anyone) return true;
    if (user === null) return false;
    if (rule.anySignedIn || rule.users.has(user)) return true;
    const groups = this.#memberOf.get(user);
    if (groups) for (const g of groups) if (rule.groups.has(g)) return true;
    return identity.kind !== 'anonymous' && identity.groups.some((g) => rule.groups.has(g));
  }
}

function allow(reason: string): Decision {
  return { allowed: true, reason };
}

function deny(reason: string): Decision {
  return { allowed: false, reason };
}
