/**
 * proxy.yaml: parse, apply environment overrides, validate (schema.ts), and say where a bad value came from.
 *
 * Rules that shape this module:
 * - Every error names where the bad value came from: `FILE:LINE: key.path: problem`, or the environment
 *   variable that set it. Unknown keys are errors, so a typo (`maxBodysize`) cannot pass silently.
 * - Every key can be overridden from the environment: `PORTCULLIS_` + the key path in upper snake case
 *   (`upstream.url` -> `PORTCULLIS_UPSTREAM_URL`, `limits.maxBodySize` -> `PORTCULLIS_LIMITS_MAX_BODY_SIZE`).
 *   The value is read as a YAML scalar (so `2`, `false`, `1G` mean what they do in the file).
 *   `PORTCULLIS_<KEY>_FILE` reads the value from a file instead (Docker/Kubernetes secrets).
 * - Paths are relative to the folder of the config file, so the same proxy.yaml works from any cwd.
 */
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { LineCounter, Document, isMap, isScalar, parse as parseYamlScalar, parseDocument, type Node } from 'yaml';
import { z } from 'zod';
import { PortcullisError } from '../errors.js';
import { configSchema, resolveConfig, type Config } from './schema.js';

export type { Config } from './schema.js';

export const ENV_PREFIX = 'PORTCULLIS_';

/** Read, validate and resolve a config file. Throws PortcullisError (PCL_ERR_CONFIG*) with a located message. */
export function loadConfig(file: string, env: NodeJS.ProcessEnv = process.env): Config {
  const path = resolve(file);
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new PortcullisError('PCL_ERR_CONFIG_IO', `${file}: cannot read config: ${(err as Error).message}`, {
      cause: err,
    });
  }
  return parseConfig(text, path, env);
}

/** Pure core of loadConfig: `file` is used for messages and to resolve relative paths. */
export function parseConfig(text: string, file: string, env: NodeJS.ProcessEnv = {}): Config {
  const lineCounter = new LineCounter();
  const doc = parseDocument(text, { lineCounter, prettyErrors: false, uniqueKeys: true });
  if (doc.errors.length > 0) {
    const e = doc.errors[0]!;
    const line = e.linePos?.[0].line ?? lineCounter.linePos(e.pos[0]).line;
    throw new PortcullisError('PCL_ERR_CONFIG', `${file}:${line}: invalid YAML: ${firstLine(e.message)}`);
  }
  if (doc.contents !== null && !isMap(doc.contents)) {
    throw new PortcullisError('PCL_ERR_CONFIG', `${file}:1: the config must be a mapping of keys (listen, tls, ...)`);
  }
  const envSources = applyEnvOverrides(doc, env);

  const result = configSchema.safeParse(doc.toJS() ?? {});
  if (!result.success) {
    const messages = flattenIssues(result.error.issues).map((issue) => {
      const keyPath = issue.path.map(String);
      if (issue.code === 'unrecognized_keys') {
        return issue.keys
          .map((k) => `${where(doc, lineCounter, file, envSources, [...keyPath, k])}${[...keyPath, k].join('.')}: unknown key`)
          .join('\n');
      }
      const missing = issue.code === 'invalid_type' && issue.input === undefined;
      return `${where(doc, lineCounter, file, envSources, keyPath)}${keyPath.join('.') || '(top level)'}: ${missing ? 'is required' : issue.message}`;
    });
    throw new PortcullisError('PCL_ERR_CONFIG', messages.join('\n'));
  }
  return resolveConfig(result.data, file);
}

/** `limits.maxBodySize` -> `PORTCULLIS_LIMITS_MAX_BODY_SIZE`. */
export function envName(keyPath: readonly string[]): string {
  return ENV_PREFIX + keyPath.map((k) => k.replace(/([a-z0-9])([A-Z])/g, '$1_$2').toUpperCase()).join('_');
}

/** Every leaf key path of the schema, for env overrides and docs. */
export function configKeyPaths(): string[][] {
  const out: string[][] = [];
  const walk = (schema: z.ZodType, path: string[]): void => {
    const inner = unwrap(schema);
    if (inner instanceof z.ZodObject) {
      for (const [k, v] of Object.entries(inner.shape as Record<string, z.ZodType>)) walk(v, [...path, k]);
      return;
    }
    if (inner instanceof z.ZodUnion) {
      const objects = (inner.options as z.ZodType[]).map(unwrap).filter((o) => o instanceof z.ZodObject);
      if (objects.length > 0) {
        out.push(path); // the whole value (tls: false)
        for (const o of objects) walk(o, path);
        return;
      }
    }
    out.push(path);
  };
  walk(configSchema, []);
  return out;
}

function unwrap(schema: z.ZodType): z.ZodType {
  let s: z.ZodType = schema;
  for (;;) {
    if (s instanceof z.ZodDefault || s instanceof z.ZodPrefault || s instanceof z.ZodOptional) s = s.unwrap() as z.ZodType;
    else if (s instanceof z.ZodPipe) s = s.in as z.ZodType;
    else return s;
  }
}

/** Writes env overrides into the document; returns key path -> env var name, for error messages. */
function applyEnvOverrides(doc: Document, env: NodeJS.ProcessEnv): Map<string, string> {
  const sources = new Map<string, string>();
  for (const path of configKeyPaths()) {
    const name = envName(path);
    let raw = env[name];
    let source = name;
    const fileVar = env[`${name}_FILE`];
    if (raw === undefined && fileVar !== undefined) {
      try {
        raw = readFileSync(fileVar, 'utf8').replace(/\r?\n$/, '');
      } catch (err) {
        throw new PortcullisError('PCL_ERR_CONFIG_IO', `${name}_FILE: cannot read ${fileVar}: ${(err as Error).message}`);
      }
      source = `${name}_FILE`;
    }
    if (raw === undefined) continue;
    let value: unknown = raw;
    try {
      value = parseYamlScalar(raw);
    } catch {
      /* not YAML: keep the string as is */
    }
    if (value === null) value = raw;
    if (doc.contents === null) doc.contents = doc.createNode({}) as never;
    doc.setIn(path, value);
    sources.set(path.join('.'), source);
  }
  return sources;
}

function where(doc: Document, lc: LineCounter, file: string, envSources: Map<string, string>, path: string[]): string {
  for (let n = path.length; n >= 0; n--) {
    const env = envSources.get(path.slice(0, n).join('.'));
    if (env) return `${env}: `;
  }
  for (let n = path.length; n > 0; n--) {
    const line = lineOf(doc, lc, path.slice(0, n), n === path.length);
    if (line !== null) return `${file}:${line}: `;
  }
  return `${file}: `;
}

/** The line of a key (for unknown keys and missing values) or of its value. */
function lineOf(doc: Document, lc: LineCounter, path: string[], wantKey: boolean): number | null {
  const parent = path.length > 1 ? doc.getIn(path.slice(0, -1), true) : doc.contents;
  if (isMap(parent)) {
    const pair = parent.items.find((it) => isScalar(it.key) && String(it.key.value) === path[path.length - 1]);
    const node = (wantKey ? pair?.key : (pair?.value ?? pair?.key)) as Node | undefined;
    if (node?.range) return lc.linePos(node.range[0]).line;
  }
  return null;
}

/**
 * A union (`tls: false | {cert, key}`) fails as one vague "Invalid input". Report instead the issues of the
 * branch that got furthest: the one whose issues are not a type mismatch at the union itself.
 */
function flattenIssues(issues: readonly z.core.$ZodIssue[], prefix: PropertyKey[] = []): z.core.$ZodIssue[] {
  return issues.flatMap((issue) => {
    const path = [...prefix, ...issue.path];
    if (issue.code !== 'invalid_union' || issue.errors.length === 0) return [{ ...issue, path }];
    const deeper = issue.errors.find((branch) => branch.some((i) => i.path.length > 0 || i.code === 'custom'));
    if (!deeper) return [{ ...issue, path }];
    return flattenIssues(deeper, path);
  });
}

function firstLine(s: string): string {
  return s.split('\n')[0] ?? s;
}

