// Shared test utilities: fixture paths and tolerance checks.
import { fileURLToPath } from 'node:url';

import { nativeAvailable } from '../src/backend/native.js';
import type { BackendName } from '../src/index.js';

/** Tests run from dist/test/; the fixtures stay in the source tree. */
export function fixturePath(relative: string): string {
  return fileURLToPath(new URL(`../../test/fixtures/${relative}`, import.meta.url));
}

export const UNET_FIXTURES = ['tiny', 'cifar-slim', 'mnist-variants', 'class-cond'] as const;

/** Backends under test: both must be present here (CI builds the addon). */
export function backendsUnderTest(): BackendName[] {
  if (!nativeAvailable()) throw new Error('the native addon is not built: run `npm run build:addon` before the tests');
  return ['cpu', 'wasm'];
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
