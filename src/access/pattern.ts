/**
 * Repository patterns of access rules. Pure.
 *
 * A pattern is a repository name whose path segments may be `**` (one or more whole segments), or contain
 * `*` (any characters within one segment) and `${user}` (the caller's user name). Examples:
 *   `team/**`         team/app, team/app/api        (not `team` itself, not `teamx/app`)
 *   `team/*`          team/app                      (not team/app/api)
 *   `users/${user}/**` users/alice/tools for alice  (never for anonymous callers)
 * `${user}` stands only for a name that is itself a valid repository path component (lower case, no `/`):
 * a user named `Alice` or `a/b` matches no `${user}` pattern, rather than someone else's namespace.
 */

/** One path component of a repository name (distribution `reference/regexp.go`). */
const COMPONENT = /^[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*$/;
/** What a pattern segment may hold besides `**`: name characters, `*` and `${user}`. */
const SEGMENT = /^(?:[a-z0-9._-]|\*|\$\{user\})+$/;

export interface RepositoryPattern {
  readonly source: string;
  /** Does `repository` match, for a caller named `user` (null: anonymous)? */
  matches(repository: string, user: string | null): boolean;
}

/** Compile a pattern, or say what is wrong with it (for config errors). */
export function compilePattern(source: string): RepositoryPattern | { problem: string } {
  if (source === '') return { problem: 'empty repository pattern' };
  const segments = source.split('/');
  if (segments.includes('')) return { problem: `"${source}" has an empty path segment` };
  for (const s of segments) {
    if (s === '**') continue;
    if (s.includes('**')) return { problem: `"${source}": ** must be a whole path segment` };
    if (/\$\{(?!user\})/.test(s)) return { problem: `"${source}": the only variable is \${user}` };
    if (!SEGMENT.test(s)) return { problem: `"${source}": repository names are lower case letters, digits and . _ - (with * and \${user})` };
  }
  const usesUser = source.includes('${user}');
  const build = (user: string | null): RegExp =>
    new RegExp(
      `^${segments
        .map((s) => (s === '**' ? '[^/]+(?:/[^/]+)*' : s.split(/(\*|\$\{user\})/).map((p) => (p === '*' ? '[^/]*' : p === '${user}' ? escape(user ?? '') : escape(p))).join('')))
        .join('/')}$`,
    );
  const fixed = usesUser ? null : build(null);
  // A pattern with ${user} is built per user; users are few, so the regular expressions are kept.
  const perUser = new Map<string, RegExp>();
  return {
    source,
    matches(repository, user) {
      if (fixed) return fixed.test(repository);
      if (user === null || !COMPONENT.test(user)) return false;
      let re = perUser.get(user);
      if (!re) {
        if (perUser.size > 10_000) perUser.clear();
        re = build(user);
        perUser.set(user, re);
      }
      return re.test(repository);
    },
  };
}

function escape(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}
