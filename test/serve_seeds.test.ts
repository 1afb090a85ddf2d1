// Per-sample seeds (sample({ seeds })), what `marble serve`'s dynamic
// batching rests on: a sample's noise comes from its own seed, so its image is
// bit-identical whether it ran alone (batch 1, `seed`) or batched with others.
import { test } from 'node:test';
import assert from 'node:assert/strict';

import { InputError, loadUNet } from '../src/index.js';
import { DPMSolverMultistepScheduler, UniPCMultistepScheduler } from '../src/index.js';
import type { BackendName } from '../src/index.js';
import { sample } from '../src/core/sampler.js';
import { DDIMScheduler } from '../src/core/schedulers/ddim.js';
import { DDPMScheduler } from '../src/core/schedulers/ddpm.js';
import { fixturePath } from './helpers.js';

function bitsEqual(a: Float32Array, b: Float32Array): boolean {
  if (a.length !== b.length) return false;
  const x = new Uint32Array(a.buffer, a.byteOffset, a.length);
  const y = new Uint32Array(b.buffer, b.byteOffset, b.length);
  return x.every((v, i) => v === y[i]);
}

for (const backend of ['cpu', 'wasm'] as BackendName[]) {
  test(`per-sample seeds: batched samples equal the same seeds run alone, bit for bit (${backend})`, async () => {
    const unet = await loadUNet(fixturePath('unet/class-cond'), { backend, threads: 2 });
    try {
      const n = unet.config.numClassEmbeds!;
      const seeds = [5n, 2n ** 64n - 1n, 5n, 12345];
      const labels = [1 % n, 0, 1 % n, 2 % n];
      const per = unet.config.inChannels * 8 * 8;
      const cases = [
        { name: 'ddim eta 0.7 philox', scheduler: () => new DDIMScheduler(), steps: 4, eta: 0.7, generator: 'philox' as const },
        { name: 'ddpm torch', scheduler: () => new DDPMScheduler(), steps: 3, eta: undefined, generator: 'torch' as const },
        // The solvers: ancestral noise per sample too (on cpu: the device loop with host noise).
        // (Euler's fractional timesteps do not suit this fixture's learned time embedding.)
        { name: 'sde-dpm++ philox', scheduler: () => new DPMSolverMultistepScheduler({ algorithmType: 'sde-dpmsolver++' }), steps: 3, eta: undefined, generator: 'philox' as const },
        { name: 'sde-dpm++ torch', scheduler: () => new DPMSolverMultistepScheduler({ algorithmType: 'sde-dpmsolver++' }), steps: 3, eta: undefined, generator: 'torch' as const },
        { name: 'unipc philox', scheduler: () => new UniPCMultistepScheduler(), steps: 3, eta: undefined, generator: 'philox' as const },
      ];
      for (const c of cases) {
        const common = { unet, numInferenceSteps: c.steps, eta: c.eta, generator: c.generator, height: 8, width: 8 };
        const batched = await sample({ ...common, scheduler: c.scheduler(), batchSize: 4, seeds, classLabels: labels });
        for (let b = 0; b < seeds.length; b++) {
          const alone = await sample({ ...common, scheduler: c.scheduler(), batchSize: 1, seed: seeds[b], classLabels: [labels[b]!] });
          assert.ok(bitsEqual(batched.samples.subarray(b * per, (b + 1) * per), alone.samples), `${c.name}: sample ${b} differs from its run alone`);
        }
        // Equal seeds and labels give equal images; the seed matters.
        assert.ok(bitsEqual(batched.samples.subarray(0, per), batched.samples.subarray(2 * per, 3 * per)));
        assert.ok(!bitsEqual(batched.samples.subarray(0, per), batched.samples.subarray(3 * per, 4 * per)));
      }
      // Also through a step callback (the device path one step per call) and in a different batch order.
      const common = { unet, numInferenceSteps: 3, eta: 1, height: 8, width: 8 };
      const reordered = await sample({ ...common, scheduler: new DDIMScheduler(), batchSize: 2, seeds: [12345, 5], classLabels: [labels[3]!, labels[0]!], onStep: () => {} });
      const first = await sample({ ...common, scheduler: new DDIMScheduler(), batchSize: 1, seed: 5, classLabels: [labels[0]!] });
      assert.ok(bitsEqual(reordered.samples.subarray(per), first.samples));
    } finally {
      unet.dispose();
    }
  });
}

test('per-sample seeds are validated', async () => {
  const unet = await loadUNet(fixturePath('unet/tiny'), { backend: 'cpu', threads: 1 });
  try {
    const base = { unet, scheduler: new DDIMScheduler(), numInferenceSteps: 1, height: 8, width: 8 };
    await assert.rejects(sample({ ...base, batchSize: 2, seeds: [1] }), InputError);
    await assert.rejects(sample({ ...base, batchSize: 1, seeds: [1], seed: 1 }), InputError);
    await assert.rejects(sample({ ...base, batchSize: 1, seeds: [-1] }), InputError);
    await assert.rejects(sample({ ...base, batchSize: 1, seeds: [0.5] }), InputError);
    await assert.rejects(sample({ ...base, batchSize: 1, seeds: [2n ** 64n] }), InputError);
  } finally {
    unet.dispose();
  }
});
