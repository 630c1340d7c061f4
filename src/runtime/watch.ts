/**
 * Calls back when any of a few files changes, for reloads without restart.
 *
 * Two mechanisms, because neither is enough alone: `fs.watch` on the parent folder (editors, `htpasswd`
 * and Kubernetes Secret updates replace files by rename, which a watch on the file itself misses), and a
 * stat poll as a fallback where inotify does not reach (bind mounts, network filesystems). A change is
 * reported once the stat signature (device, inode, size, mtime, ctime) differs from the last one reported,
 * so a refused file is retried only after it changes again, not on every poll.
 */
import { statSync, watch, type FSWatcher } from 'node:fs';
import { basename, dirname } from 'node:path';

export interface FileWatcherOptions {
  /** Stat poll interval in ms. */
  intervalMs?: number;
  /** Wait this long after an event before reading, so a cert and key written one after the other arrive together. */
  debounceMs?: number;
}

export class FileWatcher {
  readonly #paths: readonly string[];
  readonly #onChange: () => void;
  readonly #debounceMs: number;
  readonly #watchers: FSWatcher[] = [];
  readonly #poll: NodeJS.Timeout;
  #signature: string;
  #pending: NodeJS.Timeout | null = null;

  constructor(paths: readonly string[], onChange: () => void, opts: FileWatcherOptions = {}) {
    this.#paths = paths;
    this.#onChange = onChange;
    this.#debounceMs = opts.debounceMs ?? 200;
    this.#signature = this.#stat();
    const names = new Set(paths.map((p) => basename(p)));
    for (const dir of new Set(paths.map((p) => dirname(p)))) {
      try {
        const w = watch(dir, { persistent: false }, (_event, name) => {
          // Kubernetes swaps a `..data` symlink; any event in the folder is worth a stat.
          if (name === null || names.has(String(name)) || String(name).startsWith('..')) this.#schedule();
        });
        w.on('error', () => {}); // the poll still covers this folder
        this.#watchers.push(w);
      } catch {
        /* folder not watchable: the poll covers it */
      }
    }
    this.#poll = setInterval(() => this.#schedule(), opts.intervalMs ?? 2000);
    this.#poll.unref();
  }

  close(): void {
    clearInterval(this.#poll);
    if (this.#pending) clearTimeout(this.#pending);
    for (const w of this.#watchers) w.close();
  }

  #schedule(): void {
    if (this.#pending) return;
    this.#pending = setTimeout(() => {
      this.#pending = null;
      const signature = this.#stat();
      if (signature === this.#signature) return;
      this.#signature = signature;
      this.#onChange();
    }, this.#debounceMs);
    this.#pending.unref();
  }

  #stat(): string {
    return this.#paths
      .map((p) => {
        try {
          const s = statSync(p);
          return `${s.dev}:${s.ino}:${s.size}:${s.mtimeMs}:${s.ctimeMs}`;
        } catch {
          return 'missing';
        }
      })
      .join('|');
  }
}
