/**
 * The V8 flags a serving process runs with, per Node major, and how they reach every way Portcullis starts.
 *
 * Why: a streaming proxy allocates a fresh ArrayBuffer per socket read that Node's HTTP machinery handles.
 * V8 counts those as external memory and, with a small live heap, answers with full mark-compacts: ~30 per
 * 512 MiB moved, a third of the process's CPU (a "GC storm"). Which knob stops it depends on V8
 * (8-16 fresh `serve` processes x 2 x 512 MiB per row; docs/benchmarks.md, "GC storm"):
 * - Node 20 (V8 11.3): incremental marking starts off the inflated external memory, in about half of the
 *   processes. `--no-incremental-marking`: 0 storms in 16.
 * - Node 22 (V8 12.4): no storm without flags (0 in 32).
 * - Node 24 (V8 13.6): the scavenger's new space may grow to 32 MB, so dead buffers wait for a full GC;
 *   every process storms. `--scavenger-max-new-space-capacity-mb=8` (V8 12.4's default): 0 in 16.
 *   `--no-incremental-marking` does not help on 24, and Node 20 refuses the scavenger flag (exit 9).
 * None of these flags is allowed in NODE_OPTIONS. Set at run time (v8.setFlagsFromString, before the proxy
 * allocates) they give the same counts as on the command line; that is the fallback for launch paths whose
 * command line we do not own. test/gc-storm.test.ts counts full GCs on every supported major.
 *
 * Launch paths:
 * - Dockerfile ENTRYPOINT (major fixed by NODE_IMAGE; test/deploy.test.ts checks they agree), the bench and
 *   `npm start`: `node <gcFlagsFor(major)> dist/cli/main.js serve`;
 * - cluster workers: cluster.setupPrimary({ execArgv: withGcFlags(process.execArgv) }) before forking;
 * - the npm bin and a bare `node dist/cli/main.js serve`: ensureGcFlags() first thing in `serve`
 *   (a shebang line cannot choose flags by Node major).
 */
import v8 from 'node:v8';

export function nodeMajor(version: string = process.versions.node): number {
  return Number(version.split('.')[0]);
}

/** The GC flags for a Node major (see above). Majors past 24 keep 24's until measured. */
export function gcFlagsFor(major: number = nodeMajor()): readonly string[] {
  if (major <= 21) return ['--no-incremental-marking'];
  if (major === 22) return [];
  return ['--scavenger-max-new-space-capacity-mb=8'];
}

/** The GC flags missing from `execArgv`. */
export function missingGcFlags(execArgv: readonly string[] = process.execArgv, major: number = nodeMajor()): string[] {
  return gcFlagsFor(major).filter((flag) => !execArgv.includes(flag));
}

/** `execArgv` with the GC flags it lacks in front: for cluster.setupPrimary and for spawning `serve`. */
export function withGcFlags(execArgv: readonly string[], major: number = nodeMajor()): string[] {
  return [...missingGcFlags(execArgv, major), ...execArgv];
}

/**
 * Sets the GC flags the command line lacked; call before the proxy allocates. Returns what it set. Node
 * documents run-time flag changes as unsupported in general; these are read by V8 at each GC decision, and
 * the suite checks the outcome (no storm) on every supported major through this path.
 */
export function ensureGcFlags(): string[] {
  const missing = missingGcFlags();
  for (const flag of missing) v8.setFlagsFromString(flag);
  return missing;
}
