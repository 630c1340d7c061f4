/** Parses one htpasswd file off the event loop for htpasswd-file.ts, answers once, and ends. */
import { parentPort, workerData } from 'node:worker_threads';
import { packUsers } from './htpasswd-file.js';
import { parseHtpasswd } from './htpasswd.js';

const { content, length, source } = workerData as { content: ArrayBuffer; length: number; source: string };
try {
  const packed = Buffer.from(packUsers(parseHtpasswd(Buffer.from(content, 0, length).toString('utf8'), source)), 'utf8');
  // A buffer of its own, so its memory can move back without a copy.
  const out = new ArrayBuffer(packed.length);
  packed.copy(Buffer.from(out));
  parentPort?.postMessage({ ok: true, packed: out }, [out]);
} catch (err) {
  parentPort?.postMessage({ ok: false, message: err instanceof Error ? err.message : String(err) });
}
