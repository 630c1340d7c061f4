/**
 * One access-log line per request, built from an allow-list of fields: no header is ever copied whole,
 * so an Authorization header or password cannot reach the log at any level.
 */
import type { Action, Route } from '../http/route.js';

export interface AccessRecord {
  reqId: string;
  clientIp: string;
  user: string | null;
  method: string;
  /** Path only: the query of upload URLs carries the registry's signed `_state`, not worth logging. */
  path: string;
  repository: string | null;
  operation: Route['operation'];
  /** What the request does to the repository (pull, push, delete). */
  action: Action | null;
  /** The authorization decision and why: `allow: rule 2`, `deny: no rule`, ... (null if never reached). */
  decision: string | null;
  status: number;
  bytesIn: number;
  bytesOut: number;
  durationMs: number;
  upstreamStatus: number | null;
  aborted: boolean;
  error: string | null;
}

/** Every login starts with an anonymous 401 on /v2/: routine, so it is logged at debug. */
export function accessLevel(r: AccessRecord): 'debug' | 'info' | 'warn' {
  if (r.status === 401 && r.operation === 'ping') return 'debug';
  if (r.status >= 500) return 'warn';
  return 'info';
}
