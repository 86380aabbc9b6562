/*
 * Change watching for fileStore: calls back (coalesced) when the token file may have changed.
 * It only says "look again"; fileStore reads the file and decides whether anything is new.
 */
import { mkdirSync, unwatchFile, watch, watchFile, type Stats } from 'node:fs';
import { basename, dirname } from 'node:path';

/** How fileStore learns of other processes' writes; see `FileStoreOptions.watch`. */
export type FileWatchMode = 'auto' | 'poll' | false;

/**
 * Starts watching `filePath` and returns the function that stops. `'auto'` watches the file's
 * directory with `fs.watch` (the directory, not the file: an atomic replace gives the file a new
 * inode, which a file watch would miss) and falls back to polling where that is unavailable or
 * fails (some network and container file systems); `'poll'` polls with `fs.watchFile`. Neither
 * keeps the process alive.
 */
export function watchTokenFile(
  filePath: string,
  { mode, pollIntervalMs }: { mode: FileWatchMode; pollIntervalMs: number },
  onChange: () => void,
): () => void {
  if (mode === false) return () => undefined;
  const directory = dirname(filePath);
  const fileName = basename(filePath);
  let stopped = false;
  let pending: ReturnType<typeof setTimeout> | undefined;

  // A rename raises several events; coalesce them.
  const schedule = () => {
    if (stopped || pending) return;
    pending = setTimeout(() => {
      pending = undefined;
      if (!stopped) onChange();
    }, 5);
    pending.unref();
  };

  let stopCurrent: () => void = () => undefined;
  const poll = () => {
    const onStat = (current: Stats, previous: Stats) => {
      if (current.mtimeMs !== previous.mtimeMs || current.ino !== previous.ino) schedule();
    };
    watchFile(filePath, { persistent: false, interval: pollIntervalMs }, onStat);
    stopCurrent = () => unwatchFile(filePath, onStat);
  };

  if (mode === 'poll') poll();
  else {
    try {
      mkdirSync(directory, { recursive: true, mode: 0o700 });
      const watcher = watch(directory, { persistent: false }, (_event, changed) => {
        if (changed === null || changed === fileName) schedule();
      });
      watcher.on('error', () => {
        watcher.close();
        if (!stopped) poll();
      });
      stopCurrent = () => watcher.close();
    } catch {
      poll();
    }
  }
  return () => {
    stopped = true;
    clearTimeout(pending);
    stopCurrent();
  };
}
