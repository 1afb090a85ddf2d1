// The training step against diffusers' references, shared by the cpu/wasm
// tests (train_gradients.test.ts) and the CUDA suite (cuda_suite.ts): the
// batch a fixture's train_step.safetensors holds, and the loss and every
// parameter gradient checked against it with the same tolerances everywhere.
import assert from 'node:assert/strict';

import { loadUNet } from '../src/index.js';
import type { LoadOptions } from '../src/index.js';
import { engineOf } from '../src/train/engine_access.js';
import { readSafetensorsFile, tensorToFloat32, tensorToInt64AsNumbers } from '../src/model/safetensors.js';
import type { SafetensorsFile } from '../src/model/safetensors.js';
import type { EngineModel } from '../src/backend/backend.js';
import { DDPMScheduler } from '../src/schedulers/ddpm.js';
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

/** One training step of fixture `name` on `options`' backend: the loss and every gradient against diffusers. */
export async function checkTrainStepAgainstDiffusers(name: string, options: LoadOptions, label: string): Promise<void> {
  const reference = await readSafetensorsFile(fixturePath(`unet/${name}/train_step.safetensors`));
  const unet = await loadUNet(fixturePath(`unet/${name}`), options);
  const engine = engineOf(unet);
  try {
    engine.trainInit({ ema: false });
    const loss = await engine.trainStep(await batchFrom(reference));
    const expectedLoss = tensorToFloat32(reference, 'loss')[0]!;
    assert.ok(Math.abs(loss - expectedLoss) <= 1e-5 * expectedLoss, `loss ${loss} vs ${expectedLoss}`);
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
      const tolerance = 1e-4 * maxAbs(expected);
      const diff = maxAbsDiff(got, expected);
      assert.ok(diff <= tolerance, `${name}/${label}: grad of ${param} differs by ${diff} (tolerance ${tolerance})`);
    }
    assert.equal(compared, table.filter(({ name: n }) => reference.tensors.has(`grad.${n}`)).length);
    assert.ok(compared > 50);
  } finally {
    unet.dispose();
  }
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
