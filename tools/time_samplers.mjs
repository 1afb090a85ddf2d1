// Sampling time per image of the embedded model with each sampler, measured
// back to back in one process (one batch of 100 digits each, cpu backend,
// after one warm-up batch), for models/mnist-solvers.md:
//
//   npm run build && node tools/time_samplers.mjs
//
// DDPM 1000 is not run (its per-step cost is DDIM's); its time is 20 times DDIM 50's.
import { loadPipeline, sample } from '../dist/src/index.js';

const rows = [
  ['dpm++', 5], ['dpm++', 10], ['dpm++', 20],
  ['unipc', 5], ['unipc', 10], ['unipc', 20],
  ['ddim', 10], ['ddim', 20], ['ddim', 50],
];
const pipe = await loadPipeline(new URL('../models/mnist', import.meta.url).pathname, { backend: 'cpu' });
const labels = Array.from({ length: 100 }, (_, i) => i % 10);
const run = (name, steps) =>
  sample({ unet: pipe.unet, scheduler: pipe.scheduler(name), numInferenceSteps: steps, batchSize: 100, seed: 1, classLabels: labels });
try {
  await run('ddim', 5);
  const out = {};
  for (const [name, steps] of rows) {
    const t0 = performance.now();
    await run(name, steps);
    const ms = (performance.now() - t0) / 100;
    out[`${name} ${steps}`] = Number(ms.toFixed(2));
    console.error(`${name} ${steps}: ${ms.toFixed(2)} ms per image`);
  }
  out['ddpm 1000 (20 x ddim 50)'] = Number((20 * out['ddim 50']).toFixed(1));
  console.log(JSON.stringify(out, null, 2));
} finally {
  pipe.unet.dispose();
}
