// Node and Bun: node node.mjs / bun node.mjs
import { writeFile } from 'node:fs/promises';
import { embeddedModel, loadPipeline, sample } from 'marble-diffusion';

const pipe = await loadPipeline(embeddedModel(), { backend: 'wasm' });
const result = await sample({
  unet: pipe.unet,
  scheduler: pipe.scheduler('ddim'),
  numInferenceSteps: 20,
  batchSize: 4,
  seed: 0,
  classLabels: [0, 1, 2, 3],
  onStep: ({ index, total }) => console.log(`step ${index + 1}/${total}`),
});
await writeFile('digits.png', result.png());
pipe.dispose();
