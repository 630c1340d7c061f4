/**
 * The audit trail: who changed what in the registry, and who was refused. One JSON event per manifest push,
 * manifest, tag or blob delete, and refused write (push or delete), in the log stream and, with `audit.file`,
 * appended to a file of its own (0600). Built from an allow-list of fields, like the access log: never a
 * credential. Reads are not audited: the access log has them.
 */
import { createWriteStream, type WriteStream } from 'node:fs';
import type { Action } from '../http/route.js';
import type { Logger } from './log.js';

export interface AuditEvent {
  time: string;
  /** push: a manifest was put; delete: a manifest, tag or blob deleted; denied: a write refused. */
  event: 'push' | 'delete' | 'denied';
  reqId: string;
  /** The user name or certificate CN; null for anonymous. */
  user: string | null;
  identity: 'user' | 'certificate' | 'anonymous';
  clientIp: string;
  action: Action;
  repository: string;
  /** The tag or digest in the path (for uploads, null). */
  reference: string | null;
  /** The manifest digest the registry answered with (Docker-Content-Digest), when it did. */
  digest: string | null;
  result: 'ok' | 'failed' | 'denied';
  status: number;
}

/** What an exchange must tell for its audit event. */
export interface AuditFacts {
  reqId: string;
  user: string | null;
  identity: AuditEvent['identity'];
  clientIp: string;
  method: string;
  path: string;
  operation: string;
  action: Action | null;
  repository: string | null;
  /** The authorization refused it. */
  denied: boolean;
  status: number;
  digest: string | null;
}

/** The event an exchange is worth, or null when it changed nothing and nothing was refused. Pure. */
export function auditEventOf(f: AuditFacts, now: Date): AuditEvent | null {
  if (f.action === null || f.repository === null || f.action === 'pull') return null;
  const base = {
    time: now.toISOString(),
    reqId: f.reqId,
    user: f.user,
    identity: f.identity,
    clientIp: f.clientIp,
    action: f.action,
    repository: f.repository,
    reference: referenceOf(f.path),
    digest: f.digest,
    status: f.status,
  };
  if (f.denied) return { ...base, event: 'denied', result: 'denied' };
  const ok = f.status >= 200 && f.status < 300;
  if (f.action === 'delete') return { ...base, event: 'delete', result: ok ? 'ok' : 'failed' };
  // Of the pushes, the manifest is the change (blob uploads only make it possible).
  if (f.operation === 'manifest' && f.method === 'PUT') return { ...base, event: 'push', result: ok ? 'ok' : 'failed' };
  return null;
}

function referenceOf(path: string): string | null {
  const m = /\/(?:manifests|blobs)\/([^/]+)$/.exec(path);
  return m && m[1] !== 'uploads' ? m[1]! : null;
}

export class AuditLog {
  readonly file: string | null;
  readonly #logger: Logger;
  readonly #stream: WriteStream | null;

  constructor(logger: Logger, file: string | null) {
    this.file = file;
    this.#logger = logger;
    this.#stream = file === null ? null : createWriteStream(file, { flags: 'a', mode: 0o600 });
    // A full disk or a removed folder must not take the proxy down: the log stream still has every event.
    this.#stream?.on('error', (err) => logger.error({ file, err: err.message }, 'audit file write failed; events still go to the log'));
  }

  record(event: AuditEvent): void {
    this.#logger.info({ audit: event }, 'audit');
    this.#stream?.write(`${JSON.stringify(event)}\n`);
  }

  close(): Promise<void> {
    const stream = this.#stream;
    if (!stream || stream.closed) return Promise.resolve();
    return new Promise((resolve) => stream.end(() => resolve()));
  }
}
