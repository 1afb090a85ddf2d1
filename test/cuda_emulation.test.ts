// The CUDA kernels on any machine: marble_cuda_emulation (built with the
// addon, native/cuda/emulation) compiles native/cuda's kernels as C++ and
// runs them on the CPU — each block's threads as fibers with real barriers,
// shared memory and warp shuffles — through the same op-by-op self-test a GPU
// runs (native/cuda/parity.cpp), against the CPU ops and with the same
// tolerances as test/cuda.test.ts. It checks the kernels' index math, bounds,
// tiling and reductions; what only a GPU shows (timing, the memory model,
// nvcc's code generation) is left to cuda.test.ts.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import path from 'node:path';

import { packageRoot } from '../src/backend/native.js';
import type { CudaParityCase } from '../src/backend/native.js';
import { SELF_TEST_FAMILIES, selfTestFailure } from './helpers.js';

const addonDir = process.env.MARBLE_ADDON ? path.dirname(path.resolve(process.env.MARBLE_ADDON)) : path.join(packageRoot(), 'build', 'Release');
const program = path.join(addonDir, 'marble_cuda_emulation');

if (process.env.MARBLE_CUDA_EMULATION === 'OFF') {
  test('CUDA kernels under CPU emulation', (t) => t.skip('MARBLE_CUDA_EMULATION=OFF: the emulation test program was not built'));
} else {
  test('every CUDA kernel matches the CPU ops under CPU emulation (case by case)', async (t) => {
    assert.ok(existsSync(program), `${program} is missing: build the addon (npm run build:addon), or set MARBLE_CUDA_EMULATION=OFF`);
    const run = spawnSync(program, ['20261128'], { encoding: 'utf8', env: { ...process.env, MB_PARITY_TRACE: '1' }, maxBuffer: 64 << 20 });
    const trace = run.stderr.trim().split('\n');
    assert.ok(run.status === 0 && run.stdout.startsWith('['),
      `the emulation ended with status ${run.status} (signal ${run.signal}) after: ${trace.slice(-3).join(' | ')}`);
    const cases = JSON.parse(run.stdout) as CudaParityCase[];
    assert.ok(cases.length >= 70, `${cases.length} cases`);
    const families = new Set(cases.map((c) => c.op));
    for (const op of SELF_TEST_FAMILIES) assert.ok(families.has(op), `covers ${op}`);
    for (const c of cases) {
      await t.test(`${c.op}: ${c.name}`, () => {
        const failure = selfTestFailure(c);
        assert.equal(failure, null, failure ?? '');
      });
    }
  });
}
