// Deno: deno run --allow-read --allow-write=digits.png deno.js
import { embeddedModel, loadPipeline, sample } from 'marble-diffusion';

const pipe = await loadPipeline(embeddedModel(), { backend: 'wasm' });
const result = await sample({
  unet: pipe.unet,
  scheduler: pipe.scheduler('ddim'),
  numInferenceSteps: 20,
  batchSize: 4,
  seed: 0,
  classLabels: [0, 1, 2, 3],
});
await Deno.writeFile('digits.png', result.png());
pipe.dispose();
