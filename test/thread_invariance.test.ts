// The cpu backend's results do not depend on its thread count: work is split
// by index, never by thread, and reductions are summed in index order. The
// attention op has two ways of spreading (sample, head) pairs (one pair at a
// time with each GEMM split across the threads, or whole pairs per thread once
// there are at least two per thread); both must give the same bits.
import { test } from 'node:test';
import assert from 'node:assert/strict';

import { DDPMScheduler, createUNet } from '../src/index.js';
import { nativeAvailable } from '../src/node/native.js';
import { engineOf } from '../src/train/engine_access.js';

const CONFIG = {
  block_out_channels: [32, 64],
  down_block_types: ['DownBlock2D', 'AttnDownBlock2D'],
  up_block_types: ['AttnUpBlock2D', 'UpBlock2D'],
  layers_per_block: 1,
  norm_num_groups: 8,
  attention_head_dim: 16, // 4 heads at 64 channels: batch 4 gives 16 (sample, head) pairs
  sample_size: 16,
};

async function run(threads: number, channels = 3) {
  const config = { ...CONFIG, in_channels: channels, out_channels: channels };
  const unet = await createUNet(config, { backend: 'cpu', threads, seed: 11 });
  try {
    const batch = 4;
    const shape: [number, number, number, number] = [batch, channels, 16, 16];
    const x = new Float32Array(batch * channels * 16 * 16).map((_, i) => Math.sin(i * 0.37));
    const noise = new Float32Array(x.length).map((_, i) => Math.cos(i * 0.11));
    const timesteps = [10, 250, 500, 990];
    const out = await unet.forward(x, shape, timesteps);
    const engine = engineOf(unet);
    engine.trainInit({ ema: false });
    engine.zeroGrad();
    const loss = await engine.trainStep({
      x0: x,
      noise,
      shape,
      timesteps: Float32Array.from(timesteps),
      ...new DDPMScheduler().noiseCoefficients(timesteps),
      classCond: null,
      target: 0,
      lossWeights: null,
      dropoutSeed: 0,
    });
    const grads = engine.paramTable().map((p, i) => [p.name, engine.readTensor(i, 'grad')] as const);
    return { out, loss, grads };
  } finally {
    unet.dispose();
  }
}

test('cpu: forward and gradients are the same bits with 1 and 2 threads (attention pairs split both ways)', { skip: !nativeAvailable() && 'no native addon' }, async () => {
  const one = await run(1);
  const two = await run(2);
  assert.deepEqual(two.out, one.out);
  assert.equal(two.loss, one.loss);
  for (const [k, [name, grad]] of two.grads.entries()) assert.deepEqual(grad, one.grads[k]![1], `${name}.grad`);
});

test('cpu: one-channel images (conv2d_thin.cpp, its weight gradient over several pixel chunks) give the same bits with 1 and 2 threads', { skip: !nativeAvailable() && 'no native addon' }, async () => {
  const one = await run(1, 1);
  const two = await run(2, 1);
  assert.deepEqual(two.out, one.out);
  assert.equal(two.loss, one.loss);
  for (const [k, [name, grad]] of two.grads.entries()) assert.deepEqual(grad, one.grads[k]![1], `${name}.grad`);
});
