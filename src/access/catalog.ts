/**
 * `/v2/_catalog` filtered to what the caller may pull, with pagination kept right (distribution API spec,
 * "Listing Repositories": `n` names at most, after `last`, and a `Link: <...>; rel="next"` header while more
 * follow).
 *
 * The registry pages over every repository; filtering a page can leave it short or empty. So further pages
 * are fetched until `n` allowed names are in hand, plus one more to know whether a next page exists: the
 * caller never gets more than `n` names, never an empty page while allowed names remain, and a `Link` only
 * when they do.
 */

export interface CatalogPage {
  repositories: string[];
  /** The registry said more names follow (its Link header). */
  more: boolean;
}

export interface CatalogRequest {
  /** Page size asked for. */
  n: number;
  /** Start after this name, or null. */
  last: string | null;
}

/** Names asked for when the client gives no `n` (the registry's own default page). */
export const DEFAULT_PAGE_SIZE = 100;
/** Names asked of the registry per further page: large, to cover sparse access in few round trips. */
export const UPSTREAM_PAGE_SIZE = 1000;
/** Most registry pages read for one answer: a caller who may pull almost nothing must not make us walk
 * an enormous registry on every request. Past it the answer ends with a Link to continue from there. */
export const MAX_UPSTREAM_PAGES = 50;

/** The client's `n` and `last`, bounded. */
export function catalogRequest(query: string | null): CatalogRequest {
  const params = new URLSearchParams(query ?? '');
  const n = Number.parseInt(params.get('n') ?? '', 10);
  return { n: Number.isFinite(n) && n > 0 ? Math.min(n, UPSTREAM_PAGE_SIZE) : DEFAULT_PAGE_SIZE, last: params.get('last') };
}

export interface FilteredCatalog {
  repositories: string[];
  /** `last` for the next page's Link, or null: nothing allowed follows. */
  next: string | null;
}

/**
 * From the registry's first page (the answer to the client's own request), further pages fetched with
 * `fetchPage(last, n)`, and `allowed(name)`.
 */
export async function filterCatalog(
  first: CatalogPage,
  request: CatalogRequest,
  allowed: (name: string) => boolean,
  fetchPage: (last: string, n: number) => Promise<CatalogPage>,
): Promise<FilteredCatalog> {
  const names: string[] = [];
  let page = first;
  let pages = 1;
  let lastSeen = request.last;
  for (;;) {
    for (const name of page.repositories) {
      lastSeen = name;
      if (allowed(name)) names.push(name);
      if (names.length > request.n) break;
    }
    if (names.length > request.n) return { repositories: names.slice(0, request.n), next: names[request.n - 1]! };
    if (!page.more || lastSeen === null || page.repositories.length === 0) return { repositories: names, next: null };
    if (pages >= MAX_UPSTREAM_PAGES) {
      // Give what we have and let the client continue from the last name read, allowed or not.
      return { repositories: names, next: lastSeen };
    }
    page = await fetchPage(lastSeen, UPSTREAM_PAGE_SIZE);
    pages += 1;
  }
}

/** The `Link` header for the next page (RFC 8288), relative as the registry writes it. */
export function nextLink(next: string, n: number): string {
  return `</v2/_catalog?last=${encodeURIComponent(next)}&n=${n}>; rel="next"`;
}

/** Does a registry Link header announce a next page? */
export function hasNextLink(link: string | string[] | undefined): boolean {
  return typeof link === 'string' && /rel="?next"?/.test(link);
}
