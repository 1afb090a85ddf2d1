// npm run bench (sampling): a whole 50-step DDIM sample (philox noise, the
// engine's fused step kernel) of the cifar10-32 architecture at batch 1 and
// 8 on each backend: the README's headline native-versus-wasm figure. One
// timed run per cell after a warm-up forward that plans the arena (a run is
// 50 forwards, so its own noise averages out). Results: bench/results/ddim50.json.
import os from 'node:os';

import { createUNet } from '../src/index.js';
import type { BackendName } from '../src/index.js';
import { nativeAvailable } from '../src/node/native.js';
import { sample } from '../src/core/sampler.js';
import { DDIMScheduler } from '../src/core/schedulers/ddim.js';
import { CIFAR10_CONFIG } from './models.js';
import { writeResult } from './results.js';

const steps = Number(process.env.BENCH_DDIM_STEPS ?? 50);
const batches = (process.env.BENCH_BATCHES ?? '1,8').split(',').map(Number);
const backends: BackendName[] = (process.env.BENCH_BACKENDS?.split(',') as BackendName[]) ?? (nativeAvailable() ? ['cpu', 'wasm'] : ['wasm']);
const rows: { backend: string; isa: string; threads: number; batch: number; steps: number; seconds: number; 'ms per step': number }[] = [];

for (const backend of backends) {
  const unet = await createUNet(CIFAR10_CONFIG, { backend, seed: 1 });
  for (const batch of batches) {
    await unet.forward(new Float32Array(batch * 3 * 32 * 32), [batch, 3, 32, 32], 999); // plans the arena
    const t0 = performance.now();
    await sample({ unet, scheduler: new DDIMScheduler({ clipSample: true }), numInferenceSteps: steps, batchSize: batch, seed: 1 });
    const ms = performance.now() - t0;
    rows.push({
      backend,
      isa: unet.backend.isa(),
      threads: unet.backend.threads(),
      batch,
      steps,
      seconds: Math.round(ms / 100) / 10,
      'ms per step': Math.round((ms / steps) * 10) / 10,
    });
  }
  unet.dispose();
}
console.log(`DDIM ${steps}-step sampling, cifar10-32 architecture (${os.cpus()[0]?.model}, ${os.cpus().length} cores)`);
console.table(rows);
writeResult('ddim50.json', { steps, rows });
