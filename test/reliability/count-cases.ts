/**
 * Counts what the hostile-input table and the property tests check, from the test files themselves, so the
 * figures in docs/reliability.md can be reproduced rather than trusted:
 *
 *   node --import tsx test/reliability/count-cases.ts
 *
 * test/hostile.test.ts: every entry of its CASES table, by family and by the answer it expects.
 * test/properties.test.ts: every fast-check property (`fc.assert`) and the cases `npm test` generates for it.
 */
import { readFileSync } from 'node:fs';
import { markdownTable } from '../helpers/stats.js';

const root = new URL('../', import.meta.url);
const hostile = readFileSync(new URL('hostile.test.ts', root), 'utf8');
const properties = readFileSync(new URL('properties.test.ts', root), 'utf8');

const start = hostile.indexOf('const CASES: Case[] = [');
const end = hostile.indexOf('\n];', start);
if (start === -1 || end === -1) throw new Error('test/hostile.test.ts: no CASES table found');
const table = hostile.slice(start, end);
const chunks = table.split(/(?=\bfamily: ')/).slice(1);

const constants: Record<string, string> = { MALFORMED: '400 UNSUPPORTED', NAME_INVALID: '400 NAME_INVALID', UNAUTHORIZED: '401 UNAUTHORIZED', UNAVAILABLE: '502 UNAVAILABLE' };
const byFamily = new Map<string, number>();
const byAnswer = new Map<string, number>();
const refusedByFamily = new Map<string, number>();
for (const chunk of chunks) {
  const family = /^family: '([^']+)'/.exec(chunk)![1]!;
  byFamily.set(family, (byFamily.get(family) ?? 0) + 1);
  const e = /\bexpect: (MALFORMED|NAME_INVALID|UNAUTHORIZED|UNAVAILABLE|\{ error: (\d+), code: '([A-Z_]+)' \}|\{ ok: (\d+) \}|\{ statuses: (\[[^\]]*\]|Array<number>\(\d+\)\.fill\(\d+\)) \}|\{ closed: '(\w+)' \}|\{ refused: 'tls' \})/.exec(chunk);
  if (!e) throw new Error(`a case without a recognised expect: ${chunk.slice(0, 120)}`);
  let answer: string;
  let refused = true;
  if (e[1] !== undefined && constants[e[1]] !== undefined) answer = `proxy answers ${constants[e[1]]}`;
  else if (e[2] !== undefined) answer = `proxy answers ${e[2]} ${e[3]}`;
  else if (e[4] !== undefined) {
    answer = `reaches the registry, as framed and cleaned by the proxy (${e[4]})`;
    refused = false;
  } else if (e[5] !== undefined) {
    answer = `several answers in order (${e[5]})`;
    refused = /4\d\d|5\d\d/.test(e[5]);
  } else if (e[6] !== undefined) answer = `connection closed (${e[6]})`;
  else answer = 'TLS refused';
  byAnswer.set(answer, (byAnswer.get(answer) ?? 0) + 1);
  if (refused) refusedByFamily.set(family, (refusedByFamily.get(family) ?? 0) + 1);
}

const runs = Number(/const RUNS = Number\(process\.env\.FUZZ_RUNS \?\? (\d+)\)/.exec(properties)?.[1] ?? NaN);
const asserts = [...properties.matchAll(/fc\.assert\(/g)].length;
const capped = [...properties.matchAll(/numRuns: Math\.min\(RUNS, (\d+)\)/g)].map((m) => Number(m[1]));
const generated = (asserts - capped.length) * runs + capped.reduce((a, n) => a + Math.min(runs, n), 0);
const describes = [...properties.matchAll(/^describe\('([^']+)'/gm)].map((m) => m[1]!);

const total = chunks.length;
const refusedTotal = [...refusedByFamily.values()].reduce((a, b) => a + b, 0);
process.stdout.write(
  [
    `test/hostile.test.ts: ${total} cases; ${refusedTotal} refused (an error answer, a closed connection or a refused handshake), ` +
      `${total - refusedTotal} let through as the proxy framed and cleaned them. After every case a normal request must still be served ` +
      'and the registry must have received exactly the requests the case lists.',
    '',
    markdownTable(['family', 'cases', 'refused'], [...byFamily.entries()].map(([f, n]) => [f, n, refusedByFamily.get(f) ?? 0])),
    '',
    markdownTable(['expected answer', 'cases'], [...byAnswer.entries()].sort((a, b) => b[1] - a[1])),
    '',
    `test/properties.test.ts: ${asserts} fast-check properties over ${describes.length} parsers (${describes.join('; ')}); ` +
      `npm test generates ${generated} cases (${runs} per property${capped.length > 0 ? `, ${capped.length} capped at ${capped.join(', ')}` : ''}); ` +
      '`npm run fuzz` 20,000 per property.',
    '',
  ].join('\n'),
);
