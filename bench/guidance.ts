// Classifier-free guidance on an MNIST model trained with `marble train
// --cfg-dropout`: the same noise sampled at several guidance scales, scored
// as `marble eval` scores samples (src/eval: k-NN precision/recall against
// held-out digits, and class accuracy: how often a 3-NN vote among the
// training digits reads a sample as the digit asked for), plus one grid row
// per scale and the time per image.
//
//   node dist/bench/guidance.js --model DIR [--scales 1,2,3,5] [--samples 500]
//        [--steps 20] [--scheduler ddim] [--thresholding] [--grid out.png] [--json out.json]
import '../src/node/host.js';
import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { parseArgs } from 'node:util';

import { DDIMScheduler, loadPipeline } from '../src/index.js';
import { imagesToGridPng, samplesToImages } from '../src/core/image/png.js';
import { sample } from '../src/core/sampler.js';
import { dataClassCount } from '../src/core/model/config.js';
import { MnistDataset } from '../src/data/mnist.js';
import { buildReference, datasetRows, measureSamples, mnistSplit, rows, toPixels } from '../src/eval/index.js';

const { values } = parseArgs({
  options: {
    model: { type: 'string' },
    scales: { type: 'string', default: '1,2,3,5' },
    samples: { type: 'string', default: '500' },
    steps: { type: 'string', default: '20' },
    scheduler: { type: 'string', default: 'ddim' },
    batch: { type: 'string', default: '50' },
    grid: { type: 'string' },
    json: { type: 'string' },
    // DDIM with dynamic thresholding (Imagen) instead of the config's clip_sample
    thresholding: { type: 'boolean', default: false },
  },
});
if (!values.model) throw new Error('--model DIR (a pipeline trained with --cfg-dropout) is required');
const scales = values.scales!.split(',').map(Number);
const total = Number(values.samples);
const steps = Number(values.steps);
const batch = Number(values.batch);

const pipeline = await loadPipeline(values.model, { backend: 'cpu' });
const schedulerConfig = JSON.parse(await readFile(path.join(values.model, 'scheduler', 'scheduler_config.json'), 'utf8')) as Record<string, unknown>;
const makeScheduler = () =>
  values.thresholding
    ? DDIMScheduler.fromConfig({ ...schedulerConfig, thresholding: true, clip_sample: false })
    : pipeline.scheduler(values.scheduler as 'ddim');
const { unet } = pipeline;
const classes = dataClassCount(unet.config);
const side = unet.config.sampleSize as number;
const dataset = await MnistDataset.load({ size: side, channels: 1 });
const split = mnistSplit(dataset.length, 1000, 0);
const reference = buildReference(await datasetRows(dataset, split.heldOut), await datasetRows(dataset, split.train), 3);

const results: Record<string, unknown>[] = [];
const gridRows: Float32Array[] = [];
console.log(`| guidance | precision | recall | class accuracy | s / image |\n|---:|---:|---:|---:|---:|`);
for (const s of scales) {
  const labels = Array.from({ length: total }, (_, i) => i % classes);
  const pixels = new Float32Array(total * side * side);
  const started = performance.now();
  for (let at = 0; at < total; at += batch) {
    const n = Math.min(batch, total - at);
    const r = await sample({
      unet,
      scheduler: makeScheduler(),
      numInferenceSteps: steps,
      batchSize: n,
      seeds: Array.from({ length: n }, (_, i) => at + i), // the same noise at every scale
      classLabels: labels.slice(at, at + n),
      guidanceScale: s,
    });
    pixels.set(toPixels(r.samples), at * side * side);
    if (at === 0) gridRows.push(r.samples.slice(0, classes * side * side));
  }
  const seconds = (performance.now() - started) / 1000 / total;
  const m = measureSamples({ ...rows(pixels, side * side), labels }, reference, 3);
  results.push({ guidanceScale: s, precision: m.precision, recall: m.recall, classAccuracy: m.classAccuracy, secondsPerImage: seconds });
  console.log(`| ${s} | ${m.precision.toFixed(3)} | ${m.recall.toFixed(3)} | ${m.classAccuracy!.toFixed(3)} | ${seconds.toFixed(3)} |`);
}
console.log(
  `(k-NN vote on real held-out digits: ${reference.heldOutClassAccuracy.toFixed(3)}; ${total} samples per scale, ` +
    `${values.thresholding ? 'ddim with dynamic thresholding' : values.scheduler} ${steps} steps)`,
);
if (values.grid) {
  const all = new Float32Array(gridRows.length * classes * side * side);
  gridRows.forEach((g, i) => all.set(g, i * g.length));
  await writeFile(values.grid, imagesToGridPng(samplesToImages(all, [gridRows.length * classes, 1, side, side]), { columns: classes }));
}
if (values.json)
  await writeFile(values.json, JSON.stringify({ model: values.model, scheduler: values.scheduler, thresholding: values.thresholding, steps, samples: total, results }, null, 2) + '\n');
unet.dispose();
