// Crash-safe file and folder replacement for checkpoints.
//
// A file is written to a temporary name beside it and renamed over the
// target, so a reader sees the old file or the new one, never half of one.
// A checkpoint folder is built complete under a temporary name and then
// swapped in (commitDirectory). This protects against the process dying
// mid-save (kill, crash, Ctrl-C), not against power loss: nothing is fsynced.
import { randomBytes } from 'node:crypto';
import { readdir, rename, rm, stat, unlink, writeFile } from 'node:fs/promises';
import path from 'node:path';

/** JSON.stringify(value, null, 2) + newline, written atomically. */
export async function writeJsonAtomic(file: string, value: unknown): Promise<void> {
  const temporary = `${file}.tmp-${process.pid}-${randomBytes(6).toString('hex')}`;
  try {
    await writeFile(temporary, `${JSON.stringify(value, null, 2)}\n`);
    await rename(temporary, file);
  } catch (e) {
    await unlink(temporary).catch(() => {});
    throw e;
  }
}

export async function exists(p: string): Promise<boolean> {
  try {
    await stat(p);
    return true;
  } catch {
    return false;
  }
}

/** Where the previous checkpoint waits while a new one is swapped in. */
export function previousName(dir: string): string {
  return `${dir}.prev`;
}

/** A fresh temporary folder name beside `dir` (not created). */
export function temporaryName(dir: string): string {
  return `${dir}.tmp-${process.pid}-${randomBytes(6).toString('hex')}`;
}

/**
 * Replaces `dir` by the complete folder `staged`. Two renames: dir -> dir.prev,
 * staged -> dir, then dir.prev is removed. If the process dies between the
 * renames, `dir` is missing and `dir.prev` still holds the last good folder;
 * resolveCommitted() finds it, and the next commit finishes the swap.
 */
export async function commitDirectory(staged: string, dir: string): Promise<void> {
  const previous = previousName(dir);
  if (await exists(dir)) {
    // A leftover dir.prev next to a present dir is stale: dir is complete.
    await rm(previous, { recursive: true, force: true });
    await rename(dir, previous);
  }
  await rename(staged, dir);
  await rm(previous, { recursive: true, force: true });
}

/** `dir`, or `dir.prev` when a commit was interrupted between its two renames. */
export async function resolveCommitted(dir: string): Promise<string | null> {
  if (await exists(dir)) return dir;
  const previous = previousName(dir);
  if (await exists(previous)) return previous;
  return null;
}

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Removes temporary folders beside `dir` left by saves whose process has died. */
export async function removeStaleTemporaries(dir: string): Promise<void> {
  const parent = path.dirname(dir);
  const prefix = `${path.basename(dir)}.tmp-`;
  let names: string[];
  try {
    names = await readdir(parent);
  } catch {
    return;
  }
  for (const name of names) {
    if (!name.startsWith(prefix)) continue;
    const pid = Number(name.slice(prefix.length).split('-')[0]);
    if (!Number.isInteger(pid) || pid === process.pid || processAlive(pid)) continue;
    await rm(path.join(parent, name), { recursive: true, force: true });
  }
}
