// The training step against diffusers' references, shared by the cpu/wasm
// tests (train_gradients.test.ts) and the CUDA suite (cuda_suite.ts): the
// batch a fixture's train_step.safetensors holds, and the loss and every
// parameter gradient checked against it with the same tolerances everywhere.
import '../src/node/host.js';
import assert from 'node:assert/strict';

import { loadUNet } from '../src/index.js';
import type { LoadOptions } from '../src/index.js';
import { engineOf } from '../src/train/engine_access.js';
import { tensorToFloat32, tensorToInt64AsNumbers } from '../src/core/model/safetensors.js';
import { readSafetensorsFile } from '../src/node/safetensors_file.js';
import type { SafetensorsFile } from '../src/core/model/safetensors.js';
import type { EngineModel } from '../src/core/backend/backend.js';
import { DDPMScheduler } from '../src/core/schedulers/ddpm.js';
import { fixturePath, maxAbs, maxAbsDiff } from './helpers.js';

/** The fixtures with a train_step.safetensors (and adamw_step.safetensors) reference. */
export const TRAIN_FIXTURES = ['tiny', 'mnist-variants', 'class-cond', 'class-timestep'] as const;

export async function batchFrom(file: SafetensorsFile) {
  const timesteps = tensorToInt64AsNumbers(file, 'timestep');
  const { sqrtAlphaProd, sqrtOneMinusAlphaProd } = new DDPMScheduler().noiseCoefficients(timesteps);
  return {
    x0: tensorToFloat32(file, 'x0'),
    noise: tensorToFloat32(file, 'noise'),
    shape: file.tensors.get('x0')!.shape as [number, number, number, number],
    timesteps: Float32Array.from(timesteps),
    sqrtAlphaProd,
    sqrtOneMinusAlphaProd,
    classCond: file.tensors.has('class_labels') ? Float32Array.from(tensorToInt64AsNumbers(file, 'class_labels')) : null,
    target: 0 as const,
    lossWeights: null,
    dropoutSeed: 0,
  };
}

/** The unit roundoff of the half types: 2^-11 for float16, 2^-8 for bfloat16. */
export const HALF_UNIT_ROUNDOFF = { float16: 2 ** -11, bfloat16: 2 ** -8 } as const;

/**
 * The unit of a mixed-precision step's error (cuda, dtype float16 /
 * bfloat16): the forward's GEMMs round their inputs to the model's type, the
 * gradients' GEMMs to bfloat16 (both types: native/cuda/conv2d_mma.cu says
 * why), so the sum of the two unit roundoffs.
 */
export function mixedPrecisionUnit(dtype: keyof typeof HALF_UNIT_ROUNDOFF): number {
  return HALF_UNIT_ROUNDOFF[dtype] + HALF_UNIT_ROUNDOFF.bfloat16;
}

/**
 * One training step of fixture `name` on `options`' backend: the loss and
 * every gradient against diffusers. With a half `options.dtype` the bound
 * is 8 mixedPrecisionUnits of each tensor's largest reference value, where
 * float32 has 1e-4: a gradient is a sum of products of a saved activation
 * and an output gradient, the first within the forward's 8 unit roundoffs of
 * its type (cuda_suite.ts derives that bound), the second within 8 of
 * bfloat16's from the backward's own GEMMs by the same argument. Returns the
 * worst gradient error in those units (0 for float32).
 */
export async function checkTrainStepAgainstDiffusers(name: string, options: LoadOptions, label: string): Promise<number> {
  const reference = await readSafetensorsFile(fixturePath(`unet/${name}/train_step.safetensors`));
  const unet = await loadUNet(fixturePath(`unet/${name}`), options);
  const engine = engineOf(unet);
  const half = options.dtype === 'float16' || options.dtype === 'bfloat16' ? mixedPrecisionUnit(options.dtype) : 0;
  let worst = 0;
  try {
    engine.trainInit({ ema: false });
    const loss = await engine.trainStep(await batchFrom(reference));
    const expectedLoss = tensorToFloat32(reference, 'loss')[0]!;
    const lossBound = half ? 8 * half : 1e-5;
    assert.ok(Math.abs(loss - expectedLoss) <= lossBound * expectedLoss, `${label}: loss ${loss} vs ${expectedLoss}`);
    const table = engine.paramTable();
    const index = new Map(table.map(({ name: n }, i) => [n, i]));
    let compared = 0;
    for (const [key] of reference.tensors) {
      if (!key.startsWith('grad.')) continue;
      const param = key.slice(5);
      const expected = tensorToFloat32(reference, key);
      const got = engine.readTensor(index.get(param)!, 'grad');
      compared++;
      if (param.endsWith('.to_k.bias')) {
        // Adding a constant to every key shifts each row of the scores by
        // a constant, which softmax ignores: this gradient is exactly zero,
        // and torch's reference holds only its rounding noise (~1e-10).
        // Check that both are noise next to the layer's weight gradient.
        const scale = maxAbs(tensorToFloat32(reference, key.replace('.bias', '.weight')));
        assert.ok(maxAbs(expected) <= 1e-6 * scale, `${param}: the reference is not rounding noise`);
        assert.ok(maxAbs(got) <= 1e-6 * scale, `${param}: ${maxAbs(got)} is not zero next to ${scale}`);
        continue;
      }
      const tolerance = (half ? 8 * half : 1e-4) * maxAbs(expected);
      const diff = maxAbsDiff(got, expected);
      assert.ok(diff <= tolerance, `${name}/${label}: grad of ${param} differs by ${diff} (tolerance ${tolerance})`);
      if (half) worst = Math.max(worst, diff / (half * maxAbs(expected)));
    }
    assert.equal(compared, table.filter(({ name: n }) => reference.tensors.has(`grad.${n}`)).length);
    assert.ok(compared > 50);
    // It did run in the half types: float32's gradients stay within 0.001 of these units.
    if (half) assert.ok(worst > 1 / 8, `${name}/${label}: gradients as close to diffusers as float32 (${worst} unit roundoffs)`);
  } finally {
    unet.dispose();
  }
  return worst;
}

/** Writes diffusers' gradients of a train_step.safetensors into the engine's gradient buffers. */
export function writeReferenceGrads(engine: EngineModel, grads: SafetensorsFile): void {
  engine.paramTable().forEach(({ name: n }, i) => {
    if (grads.tensors.has(`grad.${n}`)) engine.writeTensor(i, 'grad', tensorToFloat32(grads, `grad.${n}`));
  });
}

/** One AdamW step from diffusers' gradients on `options`' backend, against torch.optim.AdamW's weights. */
export async function checkAdamwStepAgainstTorch(name: string, options: LoadOptions, label: string): Promise<void> {
  const grads = await readSafetensorsFile(fixturePath(`unet/${name}/train_step.safetensors`));
  const after = await readSafetensorsFile(fixturePath(`unet/${name}/adamw_step.safetensors`));
  const unet = await loadUNet(fixturePath(`unet/${name}`), options);
  const engine = engineOf(unet);
  try {
    engine.trainInit({ ema: false });
    writeReferenceGrads(engine, grads);
    engine.adamwStep({ lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.01, step: 1, gradScale: 1 });
    engine.paramTable().forEach(({ name: n }, i) => {
      const expected = tensorToFloat32(after, `param.${n}`);
      const diff = maxAbsDiff(engine.readTensor(i, 'param'), expected);
      assert.ok(diff <= 1e-6, `${name}/${label}: ${n} after AdamW differs by ${diff}`);
    });
  } finally {
    unet.dispose();
  }
}
