/**
 * What a request is, in registry terms: the repository it touches and the operation, for logs, metrics
 * and (later) access rules. Pure.
 *
 * Routes (distribution `registry/api/v2/routes.go`): /v2/, /v2/_catalog, /v2/<name>/tags/list,
 * /v2/<name>/manifests/<reference>, /v2/<name>/blobs/<digest>, /v2/<name>/blobs/uploads/[<uuid>].
 */

export type Operation = 'ping' | 'catalog' | 'tags' | 'manifest' | 'blob' | 'upload' | 'other';

export interface Route {
  operation: Operation;
  /** Repository name, or null for /v2/ and _catalog. */
  repository: string | null;
}

/** Repository name grammar (distribution `reference/regexp.go`), at most 255 characters. */
const NAME_COMPONENT = '[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*';
const NAME = new RegExp(`^${NAME_COMPONENT}(?:/${NAME_COMPONENT})*$`);

export function isValidRepositoryName(name: string): boolean {
  return name.length <= 255 && NAME.test(name);
}

/**
 * Paths the registry's router would normalise or decode behind our back (gorilla/mux decodes `%2F` and
 * redirects `//`, `.`, `..`), so that the name we see differs from the one the registry acts on.
 * Nothing a real client sends looks like this: refuse it.
 */
export function isAmbiguousPath(path: string): boolean {
  return (
    path.includes('//') ||
    path.includes('\\') ||
    /%(?:2f|2e|5c|00)/i.test(path) ||
    /(?:^|\/)\.{1,2}(?:\/|$)/.test(path)
  );
}

export function classify(path: string): Route {
  if (path === '/v2/' || path === '/v2') return { operation: 'ping', repository: null };
  if (path === '/v2/_catalog') return { operation: 'catalog', repository: null };
  if (!path.startsWith('/v2/')) return { operation: 'other', repository: null };
  const rest = path.slice(4);
  let m = /^(.+)\/tags\/list$/.exec(rest);
  if (m) return named('tags', m[1]!);
  m = /^(.+)\/manifests\/[^/]+$/.exec(rest);
  if (m) return named('manifest', m[1]!);
  m = /^(.+)\/blobs\/uploads(?:\/[^/]*)?$/.exec(rest);
  if (m) return named('upload', m[1]!);
  m = /^(.+)\/blobs\/[^/]+$/.exec(rest);
  if (m) return named('blob', m[1]!);
  return { operation: 'other', repository: null };
}

function named(operation: Operation, repository: string): Route {
  return isValidRepositoryName(repository) ? { operation, repository } : { operation: 'other', repository: null };
}

/** Splits a request target into path and raw query (query kept byte for byte, without the `?`). */
export function splitTarget(target: string): { path: string; query: string | null } {
  const q = target.indexOf('?');
  return q === -1 ? { path: target, query: null } : { path: target.slice(0, q), query: target.slice(q + 1) };
}
