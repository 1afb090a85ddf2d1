// The CUDA test suite (test/cuda_suite.ts) on every machine, GPU or not:
// marble_emulated.node is the addon with native/cuda's kernels compiled as
// C++ and run on the CPU (native/cuda/emulation: each block's threads as
// fibers with real barriers, shared memory, warp shuffles, mma.sync and
// ldmatrix in the PTX ISA's fragment layouts, cp.async landing only when
// waited for; warps run one at a time between barriers, in order and, for
// the op cases, last first, so a missing barrier or wait shows), so the
// kernels' index math, bounds, tiling and reductions, and the engine's device
// paths (input staging, parameter copies, device packing, the memory check),
// meet the same references and tolerances as on a GPU. What only a GPU shows
// (nvcc's code, timing, the memory model, kernel faults) is cuda.test.ts's.
import '../../src/node/host.js';
import { test } from 'node:test';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
const emulated = path.join(root, 'build', 'dev', 'marble_emulated.node');

if (process.env.MARBLE_CUDA_EMULATION === 'OFF') {
  test('CUDA suite under CPU emulation', (t) => t.skip('MARBLE_CUDA_EMULATION=OFF: marble_emulated.node was not built'));
} else if (!existsSync(emulated)) {
  test('CUDA suite under CPU emulation', () => {
    throw new Error(`${emulated} is missing: build the development addons (node scripts/dev_addons.mjs), or set MARBLE_CUDA_EMULATION=OFF`);
  });
} else {
  // This process (node --test runs each file in its own) uses the emulated addon.
  process.env.MARBLE_ADDON = emulated;
  const { registerCudaSuite } = await import('../cuda_suite.js');
  registerCudaSuite({ emulated: true });
}
