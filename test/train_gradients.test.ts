// The training step against diffusers: loss, every parameter gradient and one
// AdamW step, on cpu and wasm (references: train_step.safetensors and
// adamw_step.safetensors, written by diffusers + torch), and a
// finite-difference check of the gradients per op family.
import { test } from 'node:test';
import assert from 'node:assert/strict';

import { createUNet, loadUNet } from '../src/index.js';
import { engineOf } from '../src/train/engine_access.js';
import { tensorToFloat32 } from '../src/core/model/safetensors.js';
import { readSafetensorsFile } from '../src/node/safetensors_file.js';
import type { UNet2DModel } from '../src/core/model/unet.js';
import { DDPMScheduler } from '../src/core/schedulers/ddpm.js';
import { backendsUnderTest, fixturePath, maxAbsDiff } from './helpers.js';
import { TRAIN_FIXTURES, batchFrom, checkAdamwStepAgainstTorch, checkTrainStepAgainstDiffusers } from './train_reference.js';

const BACKENDS = await backendsUnderTest();

for (const { label: backend, options } of BACKENDS) {
  for (const name of TRAIN_FIXTURES) {
    test(`${name} on ${backend}: loss and every gradient match diffusers`, async () => {
      await checkTrainStepAgainstDiffusers(name, options, backend);
    });

    test(`${name} on ${backend}: one AdamW step matches torch.optim.AdamW`, () => checkAdamwStepAgainstTorch(name, options, backend));
  }
}

async function checkFiniteDifferences(unet: UNet2DModel, batch: Awaited<ReturnType<typeof batchFrom>>, families: string[]) {
  const engine = engineOf(unet);
  engine.trainInit({ ema: false });
  await engine.trainStep(batch);
  const table = engine.paramTable();
  // Read every gradient first: the finite-difference steps accumulate more.
  const grads = new Map(families.map((name) => {
    const i = table.findIndex((p) => p.name === name);
    assert.ok(i >= 0, name);
    return [name, engine.readTensor(i, 'grad')];
  }));
  for (const name of families) {
    const i = table.findIndex((p) => p.name === name);
    const grad = grads.get(name)!;
    const param = engine.readTensor(i, 'param');
    // the element with the largest gradient, where float32 differences are meaningful
    let k = 0;
    for (let j = 0; j < grad.length; j++) if (Math.abs(grad[j]!) > Math.abs(grad[k]!)) k = j;
    const h = Math.max(1e-3, Math.abs(param[k]!) * 1e-2);
    const lossAt = async (value: number) => {
      const p = param.slice();
      p[k] = value;
      engine.writeTensor(i, 'param', p);
      engine.repack();
      return engine.trainStep(batch);
    };
    const plus = await lossAt(param[k]! + h);
    const minus = await lossAt(param[k]! - h);
    engine.writeTensor(i, 'param', param);
    engine.repack();
    const numeric = (plus - minus) / (2 * h);
    const analytic = grad[k]!;
    assert.ok(
      Math.abs(numeric - analytic) <= 0.02 * Math.abs(analytic) + 2e-5,
      `${name}[${k}]: finite difference ${numeric} vs backward ${analytic}`,
    );
  }
}

// A training batch of smooth made-up images (sines), noise (cosines) and the
// scheduler's coefficients at `timesteps`, one image per timestep.
function syntheticBatch(channels: number, size: number, timesteps: number[], classCond: Float32Array<ArrayBuffer> | null,
                        xFreq: number, noiseFreq: number) {
  const n = timesteps.length * channels * size * size;
  const { sqrtAlphaProd, sqrtOneMinusAlphaProd } = new DDPMScheduler().noiseCoefficients(timesteps);
  return {
    x0: new Float32Array(n).map((_, i) => Math.sin(i * xFreq)),
    noise: new Float32Array(n).map((_, i) => Math.cos(i * noiseFreq)),
    shape: [timesteps.length, channels, size, size] as [number, number, number, number],
    timesteps: Float32Array.from(timesteps),
    sqrtAlphaProd,
    sqrtOneMinusAlphaProd,
    classCond,
    target: 0 as const,
    lossWeights: null,
    dropoutSeed: 0,
  };
}

test('finite differences agree with the backward pass, per op family', async () => {
  const reference = await readSafetensorsFile(fixturePath('unet/class-cond/train_step.safetensors'));
  const unet = await loadUNet(fixturePath('unet/class-cond'), { backend: 'cpu' });
  await checkFiniteDifferences(unet, await batchFrom(reference), [
    'conv_in.weight', // conv 3x3
    'down_blocks.0.resnets.0.norm1.weight', // GroupNorm + SiLU
    'down_blocks.0.resnets.0.time_emb_proj.weight', // linear on the time embedding
    'down_blocks.0.downsamplers.0.norm1.bias', // resnet downsample (avg pool)
    'down_blocks.1.attentions.0.to_q.weight', // attention
    'down_blocks.1.attentions.0.group_norm.weight', // GroupNorm without SiLU
    'up_blocks.0.resnets.0.conv_shortcut.weight', // 1x1 conv, concat
    'up_blocks.0.upsamplers.0.conv.weight', // nearest upsample + conv
    'class_embedding.weight', // embedding table
    'time_proj.weight', // learned time embedding
    'time_embedding.linear_1.weight',
  ]);
  unet.dispose();
});

test('finite differences on paths no fixture covers: resnet up/down sampling, class_embed_type timestep, padding 0', async () => {
  const unet = await createUNet(
    {
      block_out_channels: [16, 32],
      down_block_types: ['AttnDownBlock2D', 'DownBlock2D'],
      up_block_types: ['AttnUpBlock2D', 'UpBlock2D'],
      layers_per_block: 1,
      norm_num_groups: 8,
      attention_head_dim: 8,
      downsample_type: 'resnet',
      upsample_type: 'resnet',
      downsample_padding: 0,
      class_embed_type: 'timestep',
      resnet_time_scale_shift: 'scale_shift',
      sample_size: 8,
    },
    { backend: 'cpu', seed: 5 },
  );
  const batch = syntheticBatch(3, 8, [100, 800], Float32Array.of(3, 250), 0.7, 1.3);
  await checkFiniteDifferences(unet, batch, [
    'down_blocks.0.downsamplers.0.conv1.weight',
    'up_blocks.0.upsamplers.0.conv1.weight',
    'up_blocks.0.upsamplers.0.norm2.weight',
    'class_embedding.linear_1.weight',
    'down_blocks.1.resnets.0.time_emb_proj.bias',
    'mid_block.attentions.0.to_v.weight',
  ]);
  unet.dispose();
});

test('dropout: a seeded Philox mask, the same on cpu and wasm, and its gradient checks out', async () => {
  const config = {
    block_out_channels: [16, 32],
    down_block_types: ['DownBlock2D', 'AttnDownBlock2D'],
    up_block_types: ['AttnUpBlock2D', 'UpBlock2D'],
    layers_per_block: 1,
    norm_num_groups: 8,
    dropout: 0.25,
    sample_size: 8,
  };
  const n = 2 * 3 * 8 * 8;
  const timesteps = [10, 600];
  const { sqrtAlphaProd, sqrtOneMinusAlphaProd } = new DDPMScheduler().noiseCoefficients(timesteps);
  const batch = (dropoutSeed: number) => ({
    x0: new Float32Array(n).map((_, i) => Math.sin(i * 0.3)),
    noise: new Float32Array(n).map((_, i) => Math.cos(i * 0.9)),
    shape: [2, 3, 8, 8] as [number, number, number, number],
    timesteps: Float32Array.from(timesteps),
    sqrtAlphaProd,
    sqrtOneMinusAlphaProd,
    classCond: null,
    target: 0 as const,
    lossWeights: null,
    dropoutSeed,
  });
  const losses: number[][] = [];
  for (const { options } of BACKENDS) {
    const unet = await createUNet(config, { ...options, seed: 2 });
    const engine = engineOf(unet);
    engine.trainInit({ ema: false });
    losses.push([await engine.trainStep(batch(1)), await engine.trainStep(batch(1)), await engine.trainStep(batch(2))]);
    // inference ignores dropout: forward is deterministic
    const x = batch(0).x0;
    assert.deepEqual(await unet.forward(x, [2, 3, 8, 8], timesteps), await unet.forward(x, [2, 3, 8, 8], timesteps));
    unet.dispose();
  }
  const [cpu, ...wasms] = losses as [number[], ...number[][]];
  assert.equal(cpu[0], cpu[1], 'same dropout seed, same loss');
  assert.notEqual(cpu[0], cpu[2], 'another dropout seed, another mask');
  for (const wasm of wasms) assert.ok(Math.abs(cpu[0]! - wasm[0]!) <= 1e-5 * cpu[0]!, `cpu ${cpu[0]} vs wasm ${wasm[0]}`);
  const unet = await createUNet(config, { backend: 'cpu', seed: 2 });
  await checkFiniteDifferences(unet, batch(7), ['down_blocks.0.resnets.0.conv2.weight', 'up_blocks.1.resnets.1.norm2.weight']);
  unet.dispose();
});

for (const channels of [32, 24]) {
  test(`finite differences through one-channel images, ${channels} channels: conv_in and conv_out (conv2d_thin.cpp)`, async () => {
    // 32: the thin weight gradient's two-vector blocks (mnist-variants, 16
    // channels, takes its one-vector path against diffusers); 24: the thin
    // forward's part-vector tail (and the weight gradient's GEMM fallback).
    const unet = await createUNet(
      {
        block_out_channels: [channels, 32],
        down_block_types: ['DownBlock2D', 'DownBlock2D'],
        up_block_types: ['UpBlock2D', 'UpBlock2D'],
        layers_per_block: 1,
        norm_num_groups: 8,
        in_channels: 1,
        out_channels: 1,
        sample_size: 12,
      },
      { backend: 'cpu', seed: 7 },
    );
    const batch = syntheticBatch(1, 12, [40, 500, 900], null, 0.37, 1.1);
    await checkFiniteDifferences(unet, batch, ['conv_in.weight', 'conv_out.weight', 'conv_in.bias']);
    unet.dispose();
  });
}
