// Shared test utilities: fixture paths and tolerance checks.
import { fileURLToPath } from 'node:url';

import { readFile } from 'node:fs/promises';

import { nativeAvailable } from '../src/backend/native.js';
import { wasmPath } from '../src/backend/wasm.js';
import type { LoadOptions } from '../src/index.js';
import { createWasmBackend } from '../src/wasm.js';

/** Tests run from dist/test/; the fixtures stay in the source tree. */
export function fixturePath(relative: string): string {
  return fileURLToPath(new URL(`../../test/fixtures/${relative}`, import.meta.url));
}

export const UNET_FIXTURES = ['tiny', 'cifar-slim', 'mnist-variants', 'class-cond', 'class-timestep'] as const;

export interface BackendUnderTest {
  label: string;
  /** What loadUNet / createUNet get to run on it. */
  options: LoadOptions;
}

/**
 * The backends the parity tables run on, all present here (CI builds the
 * addon): the cpu addon; `wasm`, the single-threaded marble.wasm (through
 * marble-diffusion/wasm, on this thread, the build for runtimes without
 * SharedArrayBuffer); `wasm-threads-2`, loadUNet's Node wasm backend:
 * marble-threads.wasm on an engine worker with one pool worker.
 */
export async function backendsUnderTest(): Promise<BackendUnderTest[]> {
  if (!nativeAvailable()) throw new Error('the native addon is not built: run `npm run build:addon` before the tests');
  const single = await createWasmBackend({ threads: 1, single: await readFile(wasmPath()) });
  return [
    { label: 'cpu', options: { backend: 'cpu' } },
    { label: 'wasm', options: { backend: single } },
    { label: 'wasm-threads-2', options: { backend: 'wasm', threads: 2 } },
  ];
}

export function maxAbs(a: Float32Array): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]!));
  return m;
}

export function maxAbsDiff(a: Float32Array, b: Float32Array): number {
  if (a.length !== b.length) throw new Error(`length mismatch: ${a.length} vs ${b.length}`);
  let m = 0;
  for (let i = 0; i < a.length; i++) {
    const d = Math.abs(a[i]! - b[i]!);
    if (!(d <= m)) m = d; // NaN propagates as a failure
  }
  return m;
}
