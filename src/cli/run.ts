/**
 * How a command that reads arguments and writes files ends, the same for `init`, `certs` and `htpasswd`:
 * arguments refused -> exit 2 with the usage; a PortcullisError or a file the system refused -> exit 1 with
 * one line naming the command; anything else is a bug and is thrown (a stack trace, not a tidy message).
 */
import { PortcullisError, hasErrno } from '../errors.js';

/** File-system refusals reported as one line: a permission, a full or read-only disk, a path in the way. */
const FILE_REFUSALS = ['EACCES', 'EPERM', 'ENOTDIR', 'EROFS', 'ENOSPC', 'EEXIST', 'EISDIR'];

export interface CommandRun<A> {
  /** `portcullis NAME: ` starts every message. */
  name: string;
  usage: string;
  stderr: NodeJS.WritableStream;
  parse(): A;
  run(args: A): Promise<number>;
  /** More errno codes reported as one line (htpasswd: a file that is not there). */
  moreFileRefusals?: readonly string[];
  /** Appended to a file refusal's line (init: how to run it from the image). */
  afterFileRefusal?(err: Error): string;
}

export async function runCommand<A>(c: CommandRun<A>): Promise<number> {
  let args: A;
  try {
    args = c.parse();
  } catch (err) {
    if (!(err instanceof PortcullisError && err.code === 'PCL_ERR_USAGE')) throw err;
    c.stderr.write(`portcullis ${c.name}: ${err.message}\n\n${c.usage}`);
    return 2;
  }
  try {
    return await c.run(args);
  } catch (err) {
    if (err instanceof PortcullisError) {
      c.stderr.write(`portcullis ${c.name}: ${err.message}\n`);
      return err.code === 'PCL_ERR_USAGE' ? 2 : 1;
    }
    if (err instanceof Error && hasErrno(err, ...FILE_REFUSALS, ...(c.moreFileRefusals ?? []))) {
      c.stderr.write(`portcullis ${c.name}: ${err.message}${c.afterFileRefusal?.(err) ?? ''}\n`);
      return 1;
    }
    throw err;
  }
}
