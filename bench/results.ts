// Where benchmark results go: bench/results/NAME (from dist/bench/, two levels up).
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const RESULTS_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', 'bench', 'results');

/** Writes bench/results/NAME as JSON, stamped with the date and the CPU. */
export function writeResult(name: string, value: Record<string, unknown>): void {
  mkdirSync(RESULTS_DIR, { recursive: true });
  const stamped = { date: new Date().toISOString(), cpu: os.cpus()[0]?.model, cores: os.cpus().length, ...value };
  writeFileSync(path.join(RESULTS_DIR, name), JSON.stringify(stamped, null, 2) + '\n');
}

/** A result file written earlier in this `npm run bench`, or null. */
export function readResult<T>(name: string): T | null {
  try {
    return JSON.parse(readFileSync(path.join(RESULTS_DIR, name), 'utf8')) as T;
  } catch {
    return null;
  }
}
