/**
 * Files the CLI writes (htpasswd, certificates and keys): replaced atomically, so a proxy watching them
 * never reads half a file, and with modes that never expose a secret.
 */
import { randomBytes } from 'node:crypto';
import { lstat, open, readFile, realpath, rename, rm, stat } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { hasErrno } from './errors.js';

/**
 * Whether something is at `path`. `symlinks: 'count'` (before creating a file there): a link is something
 * even when it points nowhere, since writing through it would create a file elsewhere. `'follow'`: only what
 * a link points to counts.
 */
export async function pathExists(path: string, symlinks: 'count' | 'follow'): Promise<boolean> {
  try {
    await (symlinks === 'count' ? lstat(path) : stat(path));
    return true;
  } catch (err) {
    if (hasErrno(err, 'ENOENT')) return false;
    throw err;
  }
}

/** The file's text, or null if it does not exist. */
export async function readIfExists(path: string): Promise<string | null> {
  try {
    return await readFile(path, 'utf8');
  } catch (err) {
    if (hasErrno(err, 'ENOENT')) return null;
    throw err;
  }
}

/**
 * Replace `path` atomically: write a temporary file beside it (0600 from its first byte, so a key is never
 * readable by others, even briefly), flush, rename over. An existing file keeps its mode (and owner, when we
 * may set it); a new one gets `newFileMode`. A symlink is followed, so a file linked from
 * elsewhere is updated where it lives and the link stays.
 */
export async function writeFileAtomic(path: string, text: string, newFileMode = 0o600): Promise<void> {
  let target = path;
  try {
    target = await realpath(path);
  } catch (err) {
    if (!hasErrno(err, 'ENOENT')) throw err;
  }
  let mode = newFileMode;
  let owner: { uid: number; gid: number } | null = null;
  try {
    const st = await stat(target);
    mode = st.mode & 0o7777;
    owner = { uid: st.uid, gid: st.gid };
  } catch (err) {
    if (!hasErrno(err, 'ENOENT')) throw err;
  }
  const tmp = join(dirname(target), `.${basename(target)}.${randomBytes(6).toString('hex')}.tmp`);
  const handle = await open(tmp, 'wx', 0o600); // O_EXCL: never write through someone else's file
  try {
    try {
      await handle.writeFile(text, 'utf8');
      await handle.chmod(mode); // the umask may have narrowed it
      if (owner && process.getuid?.() === 0 && (owner.uid !== 0 || owner.gid !== 0)) await handle.chown(owner.uid, owner.gid);
      await handle.sync();
    } finally {
      await handle.close();
    }
    await rename(tmp, target);
  } catch (err) {
    await rm(tmp, { force: true });
    throw err;
  }
}
