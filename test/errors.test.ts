/**
 * The error catalogue is the truth: every error the code raises is one of the classes in src/errors.ts with a
 * catalogued code, every catalogued code is raised somewhere, and every one is in the README's error table.
 */
import assert from 'node:assert/strict';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';
import { test } from 'node:test';
import { PORTCULLIS_ERRORS, REGISTRY_ERRORS } from '../src/errors.ts';
import { REPO_ROOT } from './helpers/portcullis.js';

const SRC = join(REPO_ROOT, 'src');

function sources(dir = SRC): Array<{ file: string; text: string }> {
  return readdirSync(dir).flatMap((name) => {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) return sources(path);
    return path.endsWith('.ts') ? [{ file: relative(REPO_ROOT, path), text: readFileSync(path, 'utf8') }] : [];
  });
}

const files = sources();
const raised = (pattern: RegExp): Set<string> => new Set(files.flatMap(({ text }) => [...text.matchAll(pattern)].map((m) => m[1]!)));

test('error classes live in src/errors.ts only, and nothing raises a bare Error', () => {
  const offenders = files
    .filter(({ file }) => file !== join('src', 'errors.ts'))
    .flatMap(({ file, text }) =>
      [...text.matchAll(/extends Error\b|new (?:Error|TypeError|RangeError|SyntaxError)\(/g)].map((m) => `${file}: ${m[0]}`),
    );
  assert.deepEqual(offenders, []);
});

test('every code raised is catalogued, and every catalogued code is raised', () => {
  const portcullis = raised(/(?:new PortcullisError|super)\(\s*'(PCL_[A-Z_]+)'/g);
  const registry = raised(/new RegistryError\(\s*'([A-Z_]+)'/g);
  assert.deepEqual([...portcullis].filter((c) => !(c in PORTCULLIS_ERRORS)), [], 'raised but not in PORTCULLIS_ERRORS');
  assert.deepEqual([...registry].filter((c) => !(c in REGISTRY_ERRORS)), [], 'raised but not in REGISTRY_ERRORS');
  assert.deepEqual(Object.keys(PORTCULLIS_ERRORS).filter((c) => !portcullis.has(c)), [], 'catalogued but never raised');
  assert.deepEqual(Object.keys(REGISTRY_ERRORS).filter((c) => !registry.has(c)), [], 'catalogued but never raised');
});

test('the README error table lists every catalogued code', () => {
  const readme = readFileSync(join(REPO_ROOT, 'README.md'), 'utf8');
  const section = readme.slice(readme.indexOf('## Errors'));
  assert.ok(readme.includes('## Errors'), 'README has an Errors section');
  const rows = new Set([...section.matchAll(/^\| `([A-Z_]+)` \|/gm)].map((m) => m[1]!));
  const missing = [...Object.keys(REGISTRY_ERRORS), ...Object.keys(PORTCULLIS_ERRORS)].filter((c) => !rows.has(c));
  assert.deepEqual(missing, [], 'codes without a README row');
  const unknown = [...rows].filter((c) => !(c in REGISTRY_ERRORS) && !(c in PORTCULLIS_ERRORS));
  assert.deepEqual(unknown, [], 'README rows for codes that do not exist');
});
