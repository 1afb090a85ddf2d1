// Shared test utilities: fixture paths and tolerance checks.
import '../src/node/host.js';
import { fileURLToPath } from 'node:url';

import { readFile } from 'node:fs/promises';

import { nativeAvailable } from '../src/node/native.js';
import { wasmPath } from '../src/node/wasm.js';
import type { LoadOptions } from '../src/index.js';
import { createWasmBackend } from '../src/web/wasm.js';
import { tensorToFloat32, tensorToInt64AsNumbers } from '../src/core/model/safetensors.js';
import { readSafetensorsFile } from '../src/node/safetensors_file.js';

/** Tests run from dist/test/; the fixtures stay in the source tree. */
export function fixturePath(relative: string): string {
  return fileURLToPath(new URL(`../../test/fixtures/${relative}`, import.meta.url));
}

export const UNET_FIXTURES = ['tiny', 'cifar-slim', 'mnist-variants', 'class-cond', 'class-timestep'] as const;

/**
 * Relative bounds (of max(1, max |cpu|)) for the self-test's op families whose
 * sums run in another order on the GPU; every other family must reproduce the
 * CPU's bits.
 */
export const SELF_TEST_TOLERANCE: Record<string, number> = {
  conv2d: 2e-5,
  linear: 2e-5,
  // The tensor-core GEMMs against an fp32 GEMM of the same half-rounded
  // inputs: the products are exact in fp32, so only the sums differ. Tensor
  // cores add each 16-product block with truncation, at worst one fp32 ulp
  // (2^-23) of the running sum per block (Fasi et al., "Numerical behavior of
  // NVIDIA tensor cores", 2021); the cases' K <= 576 is 36 blocks, with
  // partial sums within ~10x of the result: 36 * 1.2e-7 * 10 = 4.3e-5 < 1e-4.
  // A wrong fragment layout pairs the wrong rows and columns: errors of the
  // size of the values themselves (~0.1-1).
  conv2d_half: 1e-4,
  linear_half: 1e-4,
  attention: 2e-5,
  group_norm: 1e-5,
  // Half activations: GroupNorm's output rounded to float16 / bfloat16, against
  // the CPU's rounded likewise. Equal statistics give equal bits; a statistic
  // one fp32 rounding apart can move a value across a rounding boundary: one
  // unit in the last place, at most 2^-7 of the value for bfloat16. (The same
  // cases' comparison with the device's own fp32 output is bit-exact.)
  group_norm_half: 2 ** -7,
  conv2d_backward: 2e-5,
  // The half types' data and weight gradients, on the tensor cores as
  // conv2d_half (the cases' sums are <= 576 long too: taps * cout for dX,
  // the pixels for dW), strided convs' dX on the fp32 kernel.
  conv2d_backward_half: 1e-4,
  attention_backward: 2e-5,
  group_norm_backward: 1e-5,
  // per-sample squared sums and gradient squared sums, in double: a tree on the GPU, sequential on the CPU
  diffusion_loss: 1e-6,
  grad_norm: 1e-6,
};

/** One self-test case's verdict: null when it passes, else why not. */
export function selfTestFailure(c: { op: string; exact: boolean; maxAbsErr: number; maxRef: number; status: number; error: string }): string | null {
  if (c.status !== 0) return `did not run (status ${c.status}): ${c.error}`;
  if (c.exact) return c.maxAbsErr === 0 ? null : `not bit-identical: max |cuda - cpu| = ${c.maxAbsErr}`;
  const bound = SELF_TEST_TOLERANCE[c.op];
  if (bound === undefined) return `no tolerance for op family ${c.op}`;
  const tolerance = bound * Math.max(1, c.maxRef);
  return c.maxAbsErr <= tolerance ? null : `max |cuda - cpu| = ${c.maxAbsErr} > ${tolerance}`;
}

/** The op families native/cuda/parity.cpp checks, each against the CPU ops. */
export const SELF_TEST_FAMILIES = [
  'conv2d', 'linear', 'conv2d_half', 'linear_half', 'group_norm', 'group_norm_half', 'attention', 'resample', 'embed', 'elementwise', 'noise', 'diffusion_step',
  'conv2d_backward', 'conv2d_backward_half', 'group_norm_backward', 'attention_backward', 'resample_backward', 'optimizer',
  'diffusion_loss', 'embed_backward', 'grad_norm',
];

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

/** A forward fixture (test/fixtures/unet/NAME/forward.safetensors): the input and diffusers' output and intermediates. */
export interface ForwardReference {
  sample: Float32Array;
  shape: number[];
  timesteps: number[];
  classLabels?: number[];
  tensors: Map<string, { data: Float32Array; shape: number[] }>;
}

export async function forwardReference(name: string): Promise<ForwardReference> {
  const file = await readSafetensorsFile(fixturePath(`unet/${name}/forward.safetensors`));
  const tensors = new Map<string, { data: Float32Array; shape: number[] }>();
  for (const [key, info] of file.tensors)
    if (info.dtype === 'F32') tensors.set(key, { data: tensorToFloat32(file, key), shape: info.shape });
  return {
    sample: tensors.get('sample')!.data,
    shape: tensors.get('sample')!.shape,
    timesteps: tensorToInt64AsNumbers(file, 'timestep'),
    classLabels: file.tensors.has('class_labels') ? tensorToInt64AsNumbers(file, 'class_labels') : undefined,
    tensors,
  };
}
