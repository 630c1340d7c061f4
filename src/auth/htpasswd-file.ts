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
import { parseHtpasswd, type HashScheme, type HtpasswdFile } from './htpasswd.js';

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
  const content = await readBounded(path);
  const bytes = content.length;
  if (bytes <= OFF_THREAD_BYTES) return { users: parseHtpasswd(content.toString('utf8'), path), bytes, parsedOn: 'event-loop' };
  return { users: await parseOnWorker(content, path), bytes, parsedOn: 'worker' };
}

/** The file's bytes, in a buffer of their own (not Node's shared pool), so they can be moved to a worker. */
async function readBounded(path: string): Promise<Buffer> {
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
    const buffer = Buffer.from(new ArrayBuffer(Math.min(size, MAX_HTPASSWD_BYTES) + 1));
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
    return buffer.subarray(0, length);
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

type WorkerReply = { ok: true; packed: ArrayBuffer } | { ok: false; message: string };

/**
 * The worker's result as one string, `user TAB hash TAB scheme TAB line` per entry, moved back as UTF-8 bytes:
 * a Map of a few hundred thousand entries took seconds to deserialize, and even a long string a few hundred
 * milliseconds, both on the event loop; a transferred ArrayBuffer costs nothing to move.
 * Tabs cannot occur in either field (user names with control characters and hashes outside their alphabets
 * are refused by the parser).
 */
export function packUsers(users: HtpasswdFile): string {
  const parts: string[] = [];
  for (const [user, e] of users) parts.push(`${user}\t${e.hash}\t${e.scheme}\t${e.line}`);
  return parts.join('\n');
}

/** Builds the users back from `packUsers` output, yielding to the event loop between slices. */
async function unpackUsers(packed: string): Promise<HtpasswdFile> {
  const users: HtpasswdFile = new Map();
  let start = 0;
  while (start < packed.length) {
    const sliceEnd = performance.now() + UNPACK_SLICE_MS;
    while (start < packed.length && performance.now() < sliceEnd) {
      for (let n = 0; n < 256 && start < packed.length; n++) {
        let end = packed.indexOf('\n', start);
        if (end === -1) end = packed.length;
        const [user, hash, scheme, line] = packed.slice(start, end).split('\t') as [string, string, HashScheme, string];
        users.set(user, { hash, scheme, line: Number(line) });
        start = end + 1;
      }
    }
    if (start < packed.length) await new Promise<void>((resolve) => setImmediate(resolve));
  }
  return users;
}

/** Longest stretch the event loop spends building a large file's users before letting requests through. */
const UNPACK_SLICE_MS = 5;

/** The worker runs the same parser from its own module next to this one; the file's bytes move to it. */
function parseOnWorker(content: Buffer, source: string): Promise<HtpasswdFile> {
  const data = content.buffer as ArrayBuffer; // readBounded allocated it as an ArrayBuffer of its own
  return new Promise((resolve, reject) => {
    const worker = moduleWorker(siblingModule('htpasswd-worker', import.meta.url), { content: data, length: content.length, source }, [data]);
    worker.once('message', (reply: WorkerReply) => {
      if (reply.ok) unpackUsers(Buffer.from(reply.packed).toString('utf8')).then(resolve, reject);
      else reject(new PortcullisError('PCL_ERR_HTPASSWD', reply.message));
    });
    worker.once('error', (err) => reject(new PortcullisError('PCL_ERR_HTPASSWD', `cannot parse htpasswd file ${source}: ${err.message}`)));
    worker.once('exit', (code) => {
      if (code !== 0) reject(new PortcullisError('PCL_ERR_HTPASSWD', `cannot parse htpasswd file ${source}: parser exited with ${code}`));
    });
  });
}

/** A worker running `module`. Built, that is a plain `.js` file; from the TypeScript sources, see workerImport. */
function moduleWorker(module: URL, workerData: unknown, transferList: ArrayBuffer[]): Worker {
  if (!module.pathname.endsWith('.ts')) return new Worker(module, { workerData, transferList });
  return new Worker(workerImport(module), { eval: true, workerData, transferList });
}

/** The module `name` next to `base` (an `import.meta.url`): `.ts` when running from the TypeScript sources. */
export function siblingModule(name: string, base: string): URL {
  return new URL(`./${name}${base.endsWith('.ts') ? '.ts' : '.js'}`, base);
}

/**
 * JavaScript source of an expression that imports `module` in an eval'd worker (CommonJS) and evaluates to a
 * promise of its namespace. Built, that is a plain import. Run from the TypeScript sources (tests, under
 * tsx), the worker must load tsx itself first: Node 20 ignores `--import` in a worker's execArgv.
 */
export function workerImport(module: URL): string {
  const load = `import(${JSON.stringify(module.href)})`;
  if (!module.pathname.endsWith('.ts')) return load;
  return `import('tsx/esm/api').then((tsx) => { tsx.register(); return ${load}; })`;
}
