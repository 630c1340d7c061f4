/** Parses one htpasswd file off the event loop for htpasswd-file.ts, answers once, and ends. */
import { parentPort, workerData } from 'node:worker_threads';
import { parseHtpasswd } from './htpasswd.js';

const { text, source } = workerData as { text: string; source: string };
try {
  parentPort?.postMessage({ ok: true, users: parseHtpasswd(text, source) });
} catch (err) {
  parentPort?.postMessage({ ok: false, message: err instanceof Error ? err.message : String(err) });
}
