/**
 * The filtered catalog's paging: at most `n` names, no empty page while allowed names remain, a Link exactly
 * when more allowed names follow, and a bound on how much of the registry one answer may read.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { catalogRequest, DEFAULT_PAGE_SIZE, filterCatalog, hasNextLink, MAX_UPSTREAM_PAGES, nextLink, type CatalogPage } from '../src/access/catalog.ts';

/** A registry of `names` (sorted) paging as distribution does: after `last`, `n` at most, more = Link. */
function registry(names: string[]): { first: (last: string | null, n: number) => CatalogPage; fetch: (last: string, n: number) => Promise<CatalogPage>; calls: number[] } {
  const calls: number[] = [];
  const page = (last: string | null, n: number): CatalogPage => {
    const from = last === null ? 0 : names.findIndex((x) => x > last);
    const start = from === -1 ? names.length : from;
    const repositories = names.slice(start, start + n);
    return { repositories, more: start + n < names.length };
  };
  return { first: page, fetch: async (last, n) => (calls.push(n), page(last, n)), calls };
}

const NAMES = Array.from({ length: 30 }, (_, i) => `r${String(i).padStart(2, '0')}`);
const every = (k: number) => (name: string) => Number(name.slice(1)) % k === 0;

describe('filterCatalog', () => {
  it('fills a page from further registry pages, and links to the next only when allowed names follow', async () => {
    const reg = registry(NAMES);
    const out = await filterCatalog(reg.first(null, 3), { n: 3, last: null }, every(5), reg.fetch);
    assert.deepEqual(out, { repositories: ['r00', 'r05', 'r10'], next: 'r10' });
    const second = await filterCatalog(reg.first('r10', 3), { n: 3, last: 'r10' }, every(5), reg.fetch);
    assert.deepEqual(second, { repositories: ['r15', 'r20', 'r25'], next: null }, 'r25 is the last allowed name: no Link');
  });

  it('walking all pages gives exactly the allowed names, never an empty page, never more than n', async () => {
    for (const n of [1, 2, 4, 7]) {
      const reg = registry(NAMES);
      const seen: string[] = [];
      let last: string | null = null;
      for (let guard = 0; guard < 100; guard++) {
        const out = await filterCatalog(reg.first(last, n), { n, last }, every(3), reg.fetch);
        assert.ok(out.repositories.length > 0 && out.repositories.length <= n, `n=${n}: page of ${out.repositories.length}`);
        seen.push(...out.repositories);
        if (out.next === null) break;
        last = out.next;
      }
      assert.deepEqual(seen, NAMES.filter(every(3)), `n=${n}`);
    }
  });

  it('a first page with nothing allowed still leads to the allowed names behind it', async () => {
    const reg = registry(NAMES);
    const out = await filterCatalog(reg.first(null, 2), { n: 2, last: null }, (name) => name >= 'r27', reg.fetch);
    assert.deepEqual(out, { repositories: ['r27', 'r28'], next: 'r28' });
  });

  it('nothing allowed at all: an empty list and no Link', async () => {
    const reg = registry(NAMES);
    assert.deepEqual(await filterCatalog(reg.first(null, 5), { n: 5, last: null }, () => false, reg.fetch), { repositories: [], next: null });
  });

  it('reads at most MAX_UPSTREAM_PAGES registry pages, then links on from the last name read', async () => {
    const names = Array.from({ length: (MAX_UPSTREAM_PAGES + 5) * 2 }, (_, i) => `n${String(i).padStart(5, '0')}`);
    const reg = registry(names);
    // Tiny registry pages so the bound is reached: the first page is what the client asked for.
    const tiny = async (last: string, _n: number) => reg.fetch(last, 2);
    const out = await filterCatalog(reg.first(null, 2), { n: 2, last: null }, () => false, tiny);
    assert.equal(reg.calls.length, MAX_UPSTREAM_PAGES - 1);
    assert.deepEqual(out.repositories, []);
    assert.equal(out.next, names[MAX_UPSTREAM_PAGES * 2 - 1]);
  });
});

describe('catalog request and Link', () => {
  it('n and last from the query, bounded', () => {
    assert.deepEqual(catalogRequest(null), { n: DEFAULT_PAGE_SIZE, last: null });
    assert.deepEqual(catalogRequest('n=5&last=a%2Fb'), { n: 5, last: 'a/b' });
    assert.deepEqual(catalogRequest('n=0'), { n: DEFAULT_PAGE_SIZE, last: null });
    assert.deepEqual(catalogRequest('n=99999'), { n: 1000, last: null });
  });

  it('Link as the registry writes it, and recognised from it', () => {
    assert.equal(nextLink('team/app', 5), '</v2/_catalog?last=team%2Fapp&n=5>; rel="next"');
    assert.ok(hasNextLink('</v2/_catalog?last=b&n=2>; rel="next"'));
    assert.ok(!hasNextLink(undefined));
  });
});
