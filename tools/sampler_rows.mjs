// One row of digits 0-9 per sampler setting, all from the same seed (the
// same initial noise), for models/README.md's comparison figure:
//
//   npm run build && node tools/sampler_rows.mjs models/mnist-samplers.png [seed]
//
// Rows: DDIM 50 eta 0 (marble sample's default), DDIM 50 eta 0 with epsilon
// from the clipped x0, DDIM 50 eta 1, DDPM 1000, DDIM 1000 eta 0, DDIM 1000
// eta 0 with epsilon from the clipped x0. cpu backend; about 5 minutes on two cores.
import { writeFile } from 'node:fs/promises';
import { imagesToGridPng, loadPipeline, sample, samplesToImages } from '../dist/src/index.js';

const out = process.argv[2] ?? 'models/mnist-samplers.png';
const seed = Number(process.argv[3] ?? 0);
const rows = [
  { scheduler: 'ddim', steps: 50, eta: 0 },
  { scheduler: 'ddim', steps: 50, eta: 0, useClippedModelOutput: true },
  { scheduler: 'ddim', steps: 50, eta: 1 },
  { scheduler: 'ddpm', steps: 1000 },
  { scheduler: 'ddim', steps: 1000, eta: 0 },
  { scheduler: 'ddim', steps: 1000, eta: 0, useClippedModelOutput: true },
];
const pipe = await loadPipeline(new URL('../models/mnist', import.meta.url).pathname, { backend: 'cpu' });
const images = [];
try {
  for (const row of rows) {
    const result = await sample({
      unet: pipe.unet,
      scheduler: pipe.scheduler(row.scheduler),
      numInferenceSteps: row.steps,
      batchSize: 10,
      seed,
      eta: row.eta,
      useClippedModelOutput: row.useClippedModelOutput,
      classLabels: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
    });
    images.push(...samplesToImages(result.samples, result.shape));
    console.log(`${row.scheduler} ${row.steps}${row.eta === undefined ? '' : ` eta ${row.eta}`}${row.useClippedModelOutput ? ' clipped' : ''}`);
  }
} finally {
  pipe.unet.dispose();
}
await writeFile(out, imagesToGridPng(images, { columns: 10 }));
console.log(`wrote ${out}`);
