/**
 * What a request is, in registry terms: the operation, the repository it touches and what it does to it
 * (pull, push, delete), for access rules, logs and metrics. Pure.
 *
 * Routes (distribution `registry/api/v2/routes.go`): /v2/, /v2/_catalog, /v2/<name>/tags/list,
 * /v2/<name>/manifests/<reference>, /v2/<name>/blobs/<digest>, /v2/<name>/blobs/uploads/[<uuid>].
 */

export type Operation = 'ping' | 'catalog' | 'tags' | 'manifest' | 'blob' | 'upload' | 'other';

/** What a request does to a repository, as registry tokens name it (`repository:NAME:pull,push`). */
export type Action = 'pull' | 'push' | 'delete';

export interface Route {
  operation: Operation;
  /** Repository name, or null for /v2/, _catalog and paths that are no registry route. */
  repository: string | null;
  /** What the request does to `repository`; null where there is none. */
  action: Action | null;
  /** The source of a cross-repository mount (`POST .../blobs/uploads/?mount=<digest>&from=<repo>`), which
   * reads that repository too; null otherwise. */
  mountFrom: string | null;
}

/** Repository name grammar (distribution `reference/regexp.go`), at most 255 characters. */
const NAME_COMPONENT = '[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*';
const NAME = new RegExp(`^${NAME_COMPONENT}(?:/${NAME_COMPONENT})*$`);

export function isValidRepositoryName(name: string): boolean {
  return name.length <= 255 && NAME.test(name);
}

/**
 * Paths the registry's router would normalise or decode behind our back (gorilla/mux matches the decoded path
 * and redirects `//`, `.`, `..`), so that the name we see differs from the one the registry acts on.
 * Nothing a real client sends looks like this: refuse it.
 */
export function isAmbiguousPath(path: string): boolean {
  return (
    path.includes('//') ||
    path.includes('\\') ||
    hasAmbiguousEscape(path) ||
    /(?:^|\/)\.{1,2}(?:\/|$)/.test(path)
  );
}

/**
 * A percent-escape the registry would decode into something that changes the route or the name: `%2F`, `%5C`,
 * `%00`, and every escape of an unreserved character (RFC 3986 2.3: letters, digits, `-._~`), from which
 * names, references and the route keywords are made (`/v2/%61lice/tags/list` is alice's tags to the registry,
 * no route at all to us). Also a `%` without two hex digits after it, which Go refuses to parse at all. Escapes
 * of other characters (`%3A` in a digest) decode into something no name or keyword contains, and pass.
 */
function hasAmbiguousEscape(path: string): boolean {
  for (const m of path.matchAll(/%([0-9A-Fa-f]{2})?/g)) {
    if (m[1] === undefined) return true;
    if (/[A-Za-z0-9\-._~/\\\0]/.test(String.fromCharCode(parseInt(m[1], 16)))) return true;
  }
  return false;
}

/** Is this a path of the registry API (as opposed to one for the proxy's own router)? */
export function isRegistryPath(path: string): boolean {
  return path === '/v2' || path.startsWith('/v2/');
}

export function classify(method: string, path: string, query: string | null = null): Route {
  if (path === '/v2/' || path === '/v2') return unnamed('ping');
  if (path === '/v2/_catalog') return unnamed('catalog');
  if (!path.startsWith('/v2/')) return unnamed('other');
  const rest = path.slice(4);
  let m = /^(.+)\/tags\/list$/.exec(rest);
  if (m) return named('tags', m[1]!, method, null);
  m = /^(.+)\/manifests\/[^/]+$/.exec(rest);
  if (m) return named('manifest', m[1]!, method, null);
  m = /^(.+)\/blobs\/uploads(?:\/[^/]*)?$/.exec(rest);
  if (m) return named('upload', m[1]!, method, query);
  m = /^(.+)\/blobs\/[^/]+$/.exec(rest);
  if (m) return named('blob', m[1]!, method, null);
  return unnamed('other');
}

/**
 * The action, as the registry's own authorization maps requests (distribution `registry/handlers/app.go`
 * appendAccessRecords): reads are pull, DELETE is delete, every other method writes. Every upload route is
 * push, whatever its method: its GET reports progress and its DELETE cancels, both on a write in progress.
 */
function actionOf(operation: Operation, method: string): Action {
  if (operation === 'upload') return 'push';
  if (method === 'GET' || method === 'HEAD') return 'pull';
  if (method === 'DELETE') return 'delete';
  return 'push';
}

function named(operation: Operation, repository: string, method: string, query: string | null): Route {
  if (!isValidRepositoryName(repository)) return unnamed('other');
  const from = method === 'POST' && query !== null ? mountSource(query) : null;
  return { operation, repository, action: actionOf(operation, method), mountFrom: from };
}

function unnamed(operation: Operation): Route {
  return { operation, repository: null, action: null, mountFrom: null };
}

/** The `from` of a mount request, when it also names a digest to `mount` (the registry ignores one without the other). */
function mountSource(query: string): string | null {
  const params = new URLSearchParams(query);
  const from = params.get('from');
  return from !== null && params.has('mount') ? from : null;
}

/**
 * Why a query cannot be forwarded as it is, or null. The registry reads `mount` and `from` with Go's FormValue,
 * which takes the first of duplicated parameters and also splits on `;` in older Go versions: a second `from`
 * or a `;` could make the registry mount from another repository than the one checked here.
 */
export function queryProblem(query: string | null): string | null {
  if (query === null) return null;
  if (query.includes(';')) return 'query must not contain ";"';
  const params = new URLSearchParams(query);
  for (const key of ['mount', 'from']) {
    if (params.getAll(key).length > 1) return `more than one "${key}" parameter`;
  }
  const from = params.get('from');
  if (from !== null && !isValidRepositoryName(from)) return '"from" is not a repository name';
  return null;
}

/**
 * Does this /v2/ path have the shape of a named route (tags, manifests, blobs, uploads), whatever the name?
 * Such a path with a name outside the grammar is an invalid name (400), any other unknown path no route (404).
 */
export function looksNamed(path: string): boolean {
  return /^\/v2\/.+\/(?:tags\/list|manifests\/[^/]+|blobs\/uploads(?:\/[^/]*)?|blobs\/[^/]+)$/.test(path);
}

/**
 * The target without the `mount` and `from` query parameters (compared decoded, as Go's FormValue reads
 * them), every other byte as it was: what is forwarded when the caller may not pull the mount's source, so
 * the registry starts an ordinary upload instead of linking a blob the caller could not read.
 */
export function withoutMount(target: string): string {
  const { path, query } = splitTarget(target);
  if (query === null) return target;
  const kept = query.split('&').filter((part) => {
    const key = part.split('=')[0] ?? '';
    let decoded = key;
    try {
      decoded = decodeURIComponent(key.replace(/\+/g, ' '));
    } catch {
      /* an undecodable key is no mount parameter */
    }
    return decoded !== 'mount' && decoded !== 'from';
  });
  return kept.length === 0 ? path : `${path}?${kept.join('&')}`;
}

/** Splits a request target into path and raw query (query kept byte for byte, without the `?`). */
export function splitTarget(target: string): { path: string; query: string | null } {
  const q = target.indexOf('?');
  return q === -1 ? { path: target, query: null } : { path: target.slice(0, q), query: target.slice(q + 1) };
}
