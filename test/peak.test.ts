// The peak-throughput micro-benchmark's contract (native/cpu/peak.cpp through
// the addon and the wasm C ABI): it reports exactly the float operations it
// was asked to run, and 0 for an ISA this build or CPU lacks. Its timing is a
// benchmark (bench/peak.ts), not a test.
import '../src/node/host.js';
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';

import { loadAddon } from '../src/node/native.js';
import { loadDevAddon } from './support/dev_addon.js';
import { wasmPath } from '../src/node/wasm.js';
import { backendsUnderTest } from './helpers.js';

type PeakFn = (isa: number, tasks: number, iterations: number) => number;
// flops per iteration: accumulators x lanes x 2 (multiply and add)
const GENERIC = 12 * 4 * 2;
const AVX2 = 12 * 8 * 2;
const AVX512 = 16 * 16 * 2;

test('peakFma (the development addon) counts the operations of each ISA kernel and refuses unknown ones', async () => {
  await backendsUnderTest(); // throws when the addon is not built
  const addon = loadDevAddon() as unknown as { peakFma: PeakFn; isa(): string };
  assert.equal(addon.peakFma(0, 1, 1000), 1000 * GENERIC);
  assert.equal(addon.peakFma(0, 6, 1000), 6 * 1000 * GENERIC, 'tasks on the thread pool add up');
  // the GEMM kernel in use implies its peak kernel exists
  if (addon.isa() === 'avx512') assert.equal(addon.peakFma(2, 2, 1000), 2 * 1000 * AVX512);
  if (addon.isa() === 'avx512' || addon.isa() === 'avx2') assert.equal(addon.peakFma(1, 1, 1000), 1000 * AVX2);
  assert.equal(addon.peakFma(3, 1, 1000), 0);
  assert.equal(addon.peakFma(0, 0, 1000), 0);
  assert.equal(addon.peakFma(0, 1, 0), 0);
  assert.equal(addon.peakFma(0, 1, Number.NaN), 0);
});

test('mb_peak_fma (wasm) runs the SIMD128 kernel only', () => {
  const exports = new WebAssembly.Instance(new WebAssembly.Module(readFileSync(wasmPath())), {}).exports as unknown as { mb_peak_fma: PeakFn };
  assert.equal(exports.mb_peak_fma(0, 1, 1000), 1000 * GENERIC);
  assert.equal(exports.mb_peak_fma(0, 3, 10), 3 * 10 * GENERIC);
  assert.equal(exports.mb_peak_fma(1, 1, 1000), 0);
  assert.equal(exports.mb_peak_fma(2, 1, 1000), 0);
});

test('the product addon exports the product API only: no self-test, benchmark or fault-injection entry points', () => {
  const product = Object.keys(loadAddon()).sort();
  assert.deepEqual(product, ['Model', 'addNoise', 'cudaDevices', 'diffusionStep', 'isa', 'philoxBlock', 'randnPhilox', 'selectIsa', 'selectTrainingWinogradTile', 'setThreads', 'solverStep', 'threads', 'torchNormalFill']);
  const dev = Object.keys(loadDevAddon());
  for (const hook of ['cudaParity', 'cudaFaultProbe', 'cudaConvBench', 'cudaAttentionBench', 'peakFma']) assert.ok(dev.includes(hook), `marble_dev.node has ${hook}`);
});
