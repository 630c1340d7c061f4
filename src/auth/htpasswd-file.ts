/**
 * Reading the htpasswd file the proxy serves from: bounded in size, and parsed off the event loop when large.
 *
 * A bind mount gone wrong can put a disk image where the htpasswd should be. Read whole and parsed on the
 * event loop, a 100 MB file stalled every transfer for seconds and took RSS past a gigabyte only to be refused.
 * So: the size is checked before reading (and the read itself is bounded, in case the file grows meanwhile),
 * and a file too big to parse in a blink is parsed on a worker thread while the proxy keeps serving.
 */
import { open } from 'node:fs/promises';
import { Worker } from 'node:worker_threads';
import { PortcullisError, hasErrno } from '../errors.js';
import { formatSize } from '../config/units.js';
import { parseHtpasswd, type HtpasswdFile } from './htpasswd.js';

/** Far above any real file (100,000 bcrypt users take about 7 MiB). */
export const MAX_HTPASSWD_BYTES = 16 * 1024 * 1024;
/** Larger files are parsed on a worker thread (a few thousand users: about a millisecond of parsing). */
export const OFF_THREAD_BYTES = 256 * 1024;

export interface LoadedHtpasswd {
  users: HtpasswdFile;
  bytes: number;
  /** Where it was parsed, for the log. */
  parsedOn: 'event-loop' | 'worker';
}

/** Throws PortcullisError(PCL_ERR_HTPASSWD) naming the file: unreadable, too large, or bad lines. */
export async function loadHtpasswdFile(path: string): Promise<LoadedHtpasswd> {
  const text = await readBounded(path);
  const bytes = Buffer.byteLength(text);
  if (bytes <= OFF_THREAD_BYTES) return { users: parseHtpasswd(text, path), bytes, parsedOn: 'event-loop' };
  return { users: await parseOnWorker(text, path), bytes, parsedOn: 'worker' };
}

async function readBounded(path: string): Promise<string> {
  let handle;
  try {
    handle = await open(path, 'r');
  } catch (err) {
    throw new PortcullisError('PCL_ERR_HTPASSWD', `cannot read htpasswd file ${path}: ${reason(err)}`, { cause: err });
  }
  try {
    const { size } = await handle.stat();
    if (size > MAX_HTPASSWD_BYTES) throw tooLarge(path, size);
    // One byte more than allowed tells a file that grew past the limit since the stat.
    const buffer = Buffer.alloc(Math.min(size, MAX_HTPASSWD_BYTES) + 1);
    let length = 0;
    for (;;) {
      const { bytesRead } = await handle.read(buffer, length, buffer.length - length, null);
      if (bytesRead === 0) break;
      length += bytesRead;
      if (length === buffer.length) {
        if (length > MAX_HTPASSWD_BYTES) throw tooLarge(path, length);
        break;
      }
    }
    return buffer.toString('utf8', 0, length);
  } catch (err) {
    if (err instanceof PortcullisError) throw err;
    throw new PortcullisError('PCL_ERR_HTPASSWD', `cannot read htpasswd file ${path}: ${reason(err)}`, { cause: err });
  } finally {
    await handle.close();
  }
}

function tooLarge(path: string, size: number): PortcullisError {
  return new PortcullisError(
    'PCL_ERR_HTPASSWD',
    `htpasswd file ${path} is ${formatSize(size)}, over the ${formatSize(MAX_HTPASSWD_BYTES)} an htpasswd file may have: is the right file mounted there?`,
  );
}

function reason(err: unknown): string {
  if (hasErrno(err, 'ENOENT')) return 'no such file';
  if (hasErrno(err, 'EACCES')) return 'permission denied';
  if (hasErrno(err, 'EISDIR')) return 'it is a directory';
  return err instanceof Error ? err.message : String(err);
}

type WorkerReply = { ok: true; users: HtpasswdFile } | { ok: false; message: string };

/** The worker runs the same parser from its own module next to this one. */
function parseOnWorker(text: string, source: string): Promise<HtpasswdFile> {
  return new Promise((resolve, reject) => {
    const worker = moduleWorker(new URL(import.meta.url.endsWith('.ts') ? './htpasswd-worker.ts' : './htpasswd-worker.js', import.meta.url), {
      text,
      source,
    });
    worker.once('message', (reply: WorkerReply) => {
      if (reply.ok) resolve(reply.users);
      else reject(new PortcullisError('PCL_ERR_HTPASSWD', reply.message));
    });
    worker.once('error', (err) => reject(new PortcullisError('PCL_ERR_HTPASSWD', `cannot parse htpasswd file ${source}: ${err.message}`)));
    worker.once('exit', (code) => {
      if (code !== 0) reject(new PortcullisError('PCL_ERR_HTPASSWD', `cannot parse htpasswd file ${source}: parser exited with ${code}`));
    });
  });
}

/**
 * A worker running `module`. Built, that is a plain `.js` file. Run from the TypeScript sources (tests, under
 * tsx), the worker must load tsx itself first: Node 20 ignores `--import` in a worker's execArgv.
 */
function moduleWorker(module: URL, workerData: unknown): Worker {
  if (!module.pathname.endsWith('.ts')) return new Worker(module, { workerData });
  const boot = `import('tsx/esm/api').then((tsx) => { tsx.register(); return import(${JSON.stringify(module.href)}); })`;
  return new Worker(boot, { eval: true, workerData });
}
