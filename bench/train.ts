// npm run bench (part 3): the training step (add-noise + forward + backward +
// AdamW) at batch 16, on the cifar10-32 architecture and a small MNIST config,
// next to a forward at the same batch (the speed issue's target: a training
// step within 3.5x the forward). Results also go to bench/results/train.json.
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { createUNet } from '../src/index.js';
import type { BackendName } from '../src/index.js';
import { engineOf } from '../src/train/engine_access.js';
import { nativeAvailable } from '../src/node/native.js';
import { DDPMScheduler } from '../src/core/schedulers/ddpm.js';
import { CIFAR10_CONFIG, MNIST_SMALL_CONFIG } from './models.js';

const batch = Number(process.env.BENCH_TRAIN_BATCH ?? 16);
const iterations = Number(process.env.BENCH_TRAIN_ITERATIONS ?? 2);
const backends: BackendName[] = (process.env.BENCH_BACKENDS?.split(',') as BackendName[]) ?? (nativeAvailable() ? ['cpu', 'wasm'] : ['wasm']);
const models = (process.env.BENCH_TRAIN_MODELS ?? 'mnist-small,cifar10-32').split(',');
const configs: Record<string, { config: Record<string, unknown>; channels: number; size: number }> = {
  'cifar10-32': { config: CIFAR10_CONFIG, channels: 3, size: 32 },
  'mnist-small': { config: MNIST_SMALL_CONFIG, channels: 1, size: 32 },
};
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const rows: Record<string, string | number>[] = [];

for (const modelName of models) {
  const { config, channels, size } = configs[modelName]!;
  for (const backend of backends) {
    const unet = await createUNet(config, { backend, seed: 1 });
    const engine = engineOf(unet);
    engine.trainInit({ ema: false });
    const n = batch * channels * size * size;
    const x0 = new Float32Array(n).map((_, i) => Math.sin(i * 0.1));
    const noise = new Float32Array(n).map((_, i) => Math.cos(i * 0.37));
    const timesteps = Array.from({ length: batch }, (_, i) => (i * 61) % 1000);
    const coefficients = new DDPMScheduler().noiseCoefficients(timesteps);
    const step = async () => {
      engine.zeroGrad();
      await engine.trainStep({
        x0,
        noise,
        shape: [batch, channels, size, size],
        timesteps: Float32Array.from(timesteps),
        ...coefficients,
        classCond: null,
        target: 0,
        lossWeights: null,
        dropoutSeed: 0,
      });
      engine.adamwStep({ lr: 1e-4, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.01, step: 1, gradScale: 1 });
    };
    const forward = () => unet.forward(x0, [batch, channels, size, size], timesteps);
    try {
      await step(); // warm-up: plans the arena
      await forward();
    } catch (e) {
      // e.g. wasm's 4 GB address space at cifar10-32, batch 16
      rows.push({ model: modelName, backend, batch, 'train step ms': `failed: ${(e as Error).message.slice(0, 120)}` });
      unet.dispose();
      continue;
    }
    const trainMs: number[] = [];
    const forwardMs: number[] = [];
    for (let i = 0; i < iterations; i++) {
      let t0 = performance.now();
      await step();
      trainMs.push(performance.now() - t0);
      t0 = performance.now();
      await forward();
      forwardMs.push(performance.now() - t0);
    }
    const t = median(trainMs);
    const f = median(forwardMs);
    rows.push({ model: modelName, backend, batch, 'train step ms': Math.round(t), 'forward ms': Math.round(f), 'train / forward': +(t / f).toFixed(2) });
    unet.dispose();
  }
}
console.log(`training step (forward + backward + AdamW) vs forward, batch ${batch}, median of ${iterations}`);
console.table(rows);
const outDir = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', 'bench', 'results');
mkdirSync(outDir, { recursive: true });
writeFileSync(path.join(outDir, 'train.json'), JSON.stringify({ date: new Date().toISOString(), batch, iterations, rows }, null, 2) + '\n');
