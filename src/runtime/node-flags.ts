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
 *   every process storms. `--scavenger-max-new-space-capacity-mb=8` (V8 12.4's default): 0 in 16 while
 *   every process loaded acme-client at start; once that was loaded only for tls.acme, the smaller heap
 *   stormed again in 3 of 5 processes. With `--initial-old-space-size=64` as well: 0 in 10 (and 0 in 8
 *   before), at about 5 MiB more peak RSS than without it.
 *   `--no-incremental-marking` does not help on 24, and Node 20 refuses the scavenger flag (exit 9).
 * None of these flags is allowed in NODE_OPTIONS. Node 24's is not reliable set at run time: whether the
 * storm stays away then depends on what the heap held when it was set (after acme-client was no longer
 * loaded at start, 3 of 5 processes stormed again). So where Node can replace the process (process.execve,
 * Node >= 22.15), a `serve` that lacks its flags starts itself again with them, same pid, same stdio;
 * elsewhere (Node 20, whose flag is read at each GC decision and measured effective at run time) they are
 * set with v8.setFlagsFromString. test/gc-storm.test.ts counts full GCs on every supported major.
 *
 * Launch paths:
 * - Dockerfile ENTRYPOINT (major fixed by NODE_IMAGE; test/deploy.test.ts checks they agree), the bench and
 *   `npm start`: `node <gcFlagsFor(major)> dist/cli/main.js serve`;
 * - cluster workers: cluster.setupPrimary({ execArgv: withGcFlags(process.execArgv) }) before forking;
 * - the npm bin and a bare `node dist/cli/main.js serve`: relaunchWithGcFlags(), else ensureGcFlags(), first
 *   thing in `serve` (a shebang line cannot choose flags by Node major).
 */
import cluster from 'node:cluster';
import v8 from 'node:v8';

/** Set in the environment of a process started again with its flags, so it never loops. */
const RELAUNCHED = 'PORTCULLIS_GC_FLAGS_RELAUNCHED';

type Execve = (file: string, args: readonly string[], env: NodeJS.ProcessEnv) => never;

export function nodeMajor(version: string = process.versions.node): number {
  return Number(version.split('.')[0]);
}

/** The GC flags for a Node major (see above). Majors past 24 keep 24's until measured. */
export function gcFlagsFor(major: number = nodeMajor()): readonly string[] {
  if (major <= 21) return ['--no-incremental-marking'];
  if (major === 22) return [];
  return ['--scavenger-max-new-space-capacity-mb=8', '--initial-old-space-size=64'];
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
 * When the command line lacks GC flags and Node can replace the running process (process.execve), start
 * this same command again with them: it does not return then. Returns when it did not (nothing missing,
 * already relaunched once, a cluster worker, or no execve), and the caller falls back to ensureGcFlags().
 */
export function relaunchWithGcFlags(): void {
  const missing = missingGcFlags();
  if (missing.length === 0 || process.env[RELAUNCHED] !== undefined || !cluster.isPrimary) return;
  // Not in @types/node 20; present from Node 22.15 and 23.11.
  const execve = (process as unknown as { execve?: Execve }).execve;
  if (typeof execve !== 'function') return;
  const args = [process.execPath, ...withGcFlags(process.execArgv), ...process.argv.slice(1)];
  execve.call(process, process.execPath, args, { ...process.env, [RELAUNCHED]: missing.join(' ') });
}

/**
 * Sets the GC flags the command line lacked; call before the proxy allocates. Returns what it set. Node
 * documents run-time flag changes as unsupported in general; Node 20's flag is read by V8 at each GC
 * decision, and the suite checks the outcome (no storm) through this path on Node 20, the one major that
 * reaches it (22 needs no flag, 24 is started again by relaunchWithGcFlags).
 */
export function ensureGcFlags(): string[] {
  const missing = missingGcFlags();
  for (const flag of missing) v8.setFlagsFromString(flag);
  return missing;
}
