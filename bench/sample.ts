// npm run bench (part 2): what a sampling step costs beyond its UNet forward.
// A DDIM step is one forward plus the fused step kernel; the budget is
// 2% over a bare forward at batch 1 on the cifar10-32 architecture. Forward
// loops and sampling runs are interleaved so machine noise hits both alike.
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { createUNet } from '../src/index.js';
import type { BackendName } from '../src/index.js';
import { nativeAvailable } from '../src/node/native.js';
import { sample } from '../src/core/sampler.js';
import { DDIMScheduler } from '../src/core/schedulers/ddim.js';
import { CIFAR10_CONFIG } from './models.js';

const steps = Number(process.env.BENCH_SAMPLE_STEPS ?? 10);
const rounds = Number(process.env.BENCH_ROUNDS ?? 5);
const backends: BackendName[] = (process.env.BENCH_BACKENDS?.split(',') as BackendName[]) ?? (nativeAvailable() ? ['cpu', 'wasm'] : ['wasm']);
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const rows: Record<string, string | number>[] = [];

for (const backend of backends) {
  const unet = await createUNet(CIFAR10_CONFIG, { backend, seed: 1 });
  const x = new Float32Array(3 * 32 * 32).map((_, i) => Math.sin(i));
  const scheduler = new DDIMScheduler({ clipSample: true });
  await unet.forward(x, [1, 3, 32, 32], 500); // warm-up: plans the arena
  const forwardMs: number[] = [];
  const stepMs: number[] = [];
  for (let r = 0; r < rounds; r++) {
    let t0 = performance.now();
    for (let i = 0; i < steps; i++) await unet.forward(x, [1, 3, 32, 32], 999 - i * 100);
    forwardMs.push((performance.now() - t0) / steps);
    t0 = performance.now();
    await sample({ unet, scheduler, numInferenceSteps: steps, batchSize: 1, seed: r });
    stepMs.push((performance.now() - t0) / steps);
  }
  const f = median(forwardMs);
  const s = median(stepMs);
  rows.push({ backend, 'forward ms': +f.toFixed(2), 'DDIM step ms': +s.toFixed(2), 'step overhead %': +(((s - f) / f) * 100).toFixed(2) });
  unet.dispose();
}
console.log(`DDIM step vs bare forward, batch 1, cifar10-32 architecture (${steps}-step runs, median of ${rounds})`);
console.table(rows);
const outDir = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', 'bench', 'results');
mkdirSync(outDir, { recursive: true });
writeFileSync(path.join(outDir, 'sample.json'), JSON.stringify({ date: new Date().toISOString(), steps, rounds, rows }, null, 2) + '\n');
