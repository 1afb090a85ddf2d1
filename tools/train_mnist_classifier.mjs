// Trains the MNIST classifier that `marble eval` reads digits with
// (src/eval/mnist_cnn.ts; issue #24), and writes it to models/mnist-classifier/:
//
//   npm run build:ts && node tools/train_mnist_classifier.mjs
//
// Data: the 9,000 digits `marble eval` does not hold out (mnistSplit(10000,
// 1000, 0), the split `marble train --holdout 1000` also leaves out), read
// through the same path as the evaluator's (MnistDataset at 32x32, pixels
// in [0, 1], the 2-pixel frame cropped). The 1,000 held-out digits are only
// measured, after every epoch; nothing is chosen by them (no early stopping,
// the last epoch's weights are written).
//
// Reproducible: every random choice (initial weights, batch order,
// augmentation, dropout) comes from marble's seeded generator
// (src/data/random.ts), and TensorFlow.js's wasm backend computes the same
// floats on every run, so the same --seed gives the same weights file (see
// models/README.md for what was checked).
//
// Options: --epochs N (default 30) --seed S (0) --out DIR (models/mnist-classifier)
//          --conv1 C --conv2 C --hidden H (the architecture; defaults below)
import { mkdir, writeFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import path from 'node:path';
import { parseArgs } from 'node:util';

import '@tensorflow/tfjs'; // registers the gradients (tfjs-core alone has none)
import { MnistDataset } from '../dist/src/data/mnist.js';
import { SeededRandom } from '../dist/src/data/random.js';
import { datasetRows, mnistSplit } from '../dist/src/eval/mnist_reference.js';
import { classifyWith, cnnForward } from '../dist/src/eval/mnist_cnn.js';
import { CNN_CLASSES, CNN_SIDE, cnnInput, parameterShapes } from '../dist/src/eval/mnist_cnn_spec.js';
import { CLASSIFIER_FILES } from '../dist/src/eval/mnist_classifier.js';
import { loadTf } from '../dist/src/eval/tfjs.js';
import { writeSafetensorsFile } from '../dist/src/node/safetensors_file.js';

const { values: flags } = parseArgs({
  options: {
    epochs: { type: 'string', default: '30' },
    seed: { type: 'string', default: '0' },
    out: { type: 'string', default: 'models/mnist-classifier' },
    conv1: { type: 'string', default: '16' },
    conv2: { type: 'string', default: '32' },
    hidden: { type: 'string', default: '128' },
  },
});
const config = { conv1: Number(flags.conv1), conv2: Number(flags.conv2), hidden: Number(flags.hidden) };
const EPOCHS = Number(flags.epochs);
const SEED = Number(flags.seed);
const BATCH = 64;
const PEAK_LR = 2e-3;
const WARMUP_STEPS = 100;
const DROPOUT = 0.25;
// Augmentation: each training digit, every time it is drawn, is rotated,
// scaled and shifted by a random small amount (bilinear resampling): 9,000
// digits are few for a CNN, and handwriting varies in exactly these ways.
const AUGMENT = { rotationDegrees: 10, scale: 0.1, shiftPixels: 2 };
// Stream ids of the generator, one per use, so that changing one use (e.g.
// the augmentation) leaves the others' draws as they were.
const STREAM = { init: 1, order: 2, augment: 3, dropout: 4 };

const tf = await loadTf();
const started = performance.now();

// --- data --------------------------------------------------------------------
const dataset = await MnistDataset.load({ size: 32, channels: 1 });
const split = mnistSplit(dataset.length, 1000, 0);
const trainRows = await datasetRows(dataset, split.train);
const heldOutRows = await datasetRows(dataset, split.heldOut);
const trainImages = cnnInput(trainRows);
const PIXELS = CNN_SIDE * CNN_SIDE;

/** Gaussian draw (Box-Muller) from a SeededRandom. */
function normal(random) {
  const u = 1 - random.float(); // (0, 1]
  return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * random.float());
}

/** `image` (28x28) rotated, scaled and shifted about its centre, bilinear, zero outside. */
function augment(image, random, out) {
  const angle = ((2 * random.float() - 1) * AUGMENT.rotationDegrees * Math.PI) / 180;
  const scale = 1 + (2 * random.float() - 1) * AUGMENT.scale;
  const tx = (2 * random.float() - 1) * AUGMENT.shiftPixels;
  const ty = (2 * random.float() - 1) * AUGMENT.shiftPixels;
  const c = (CNN_SIDE - 1) / 2;
  // inverse map: output pixel -> source position
  const cos = Math.cos(angle) / scale;
  const sin = Math.sin(angle) / scale;
  for (let y = 0; y < CNN_SIDE; y++)
    for (let x = 0; x < CNN_SIDE; x++) {
      const dx = x - c - tx;
      const dy = y - c - ty;
      const sx = cos * dx + sin * dy + c;
      const sy = -sin * dx + cos * dy + c;
      const x0 = Math.floor(sx);
      const y0 = Math.floor(sy);
      const fx = sx - x0;
      const fy = sy - y0;
      const at = (yy, xx) => (yy >= 0 && yy < CNN_SIDE && xx >= 0 && xx < CNN_SIDE ? image[yy * CNN_SIDE + xx] : 0);
      out[y * CNN_SIDE + x] =
        (1 - fy) * ((1 - fx) * at(y0, x0) + fx * at(y0, x0 + 1)) + fy * ((1 - fx) * at(y0 + 1, x0) + fx * at(y0 + 1, x0 + 1));
    }
}

// --- parameters: He-normal weights, zero biases ----------------------------------
const shapes = parameterShapes(config);
const initRandom = new SeededRandom(SEED, STREAM.init);
const params = {};
for (const [name, shape] of Object.entries(shapes)) {
  const size = shape.reduce((a, b) => a * b, 1);
  const values = new Float32Array(size);
  if (name.endsWith('.weight')) {
    const fanIn = shape.length === 4 ? shape[0] * shape[1] * shape[2] : shape[0];
    const std = Math.sqrt(2 / fanIn);
    for (let i = 0; i < size; i++) values[i] = std * normal(initRandom);
  }
  params[name] = tf.variable(tf.tensor(values, shape), true, name);
}

// --- training ------------------------------------------------------------------
const optimizer = tf.train.adam(PEAK_LR, 0.9, 0.999, 1e-7);
const stepsPerEpoch = Math.ceil(trainRows.n / BATCH);
const totalSteps = EPOCHS * stepsPerEpoch;
/** Linear warm-up, then cosine decay to zero. */
const learningRate = (step) => (step < WARMUP_STEPS ? (PEAK_LR * (step + 1)) / WARMUP_STEPS : 0.5 * PEAK_LR * (1 + Math.cos((Math.PI * (step - WARMUP_STEPS)) / (totalSteps - WARMUP_STEPS))));

const augmentRandom = new SeededRandom(SEED, STREAM.augment);
const dropoutRandom = new SeededRandom(SEED, STREAM.dropout);
const batchImages = new Float32Array(BATCH * PIXELS);
const log = [];
let step = 0;
for (let epoch = 0; epoch < EPOCHS; epoch++) {
  const order = new SeededRandom(SEED, STREAM.order, epoch).permutation(trainRows.n);
  let lossSum = 0;
  for (let start = 0; start < trainRows.n; start += BATCH, step++) {
    const size = Math.min(BATCH, trainRows.n - start);
    const labels = new Int32Array(size);
    for (let b = 0; b < size; b++) {
      const index = order[start + b];
      augment(trainImages.subarray(index * PIXELS, (index + 1) * PIXELS), augmentRandom, batchImages.subarray(b * PIXELS, (b + 1) * PIXELS));
      labels[b] = trainRows.labels[index];
    }
    const keep = new Float32Array(size * config.hidden);
    for (let i = 0; i < keep.length; i++) keep[i] = dropoutRandom.float() < DROPOUT ? 0 : 1 / (1 - DROPOUT);
    optimizer.learningRate = learningRate(step);
    const loss = tf.tidy(() => {
      const x = tf.tensor4d(batchImages.subarray(0, size * PIXELS), [size, CNN_SIDE, CNN_SIDE, 1]);
      const y = tf.oneHot(tf.tensor1d(labels, 'int32'), CNN_CLASSES);
      const mask = tf.tensor2d(keep, [size, config.hidden]);
      return optimizer.minimize(() => tf.losses.softmaxCrossEntropy(y, cnnForward(tf, params, x, mask).logits), true);
    });
    lossSum += (await loss.data())[0] * size;
    loss.dispose();
  }
  const { labels: predicted } = await classifyWith(tf, params, config, heldOutRows);
  let right = 0;
  for (let i = 0; i < heldOutRows.n; i++) if (predicted[i] === heldOutRows.labels[i]) right++;
  const entry = { epoch: epoch + 1, loss: lossSum / trainRows.n, heldOutAccuracy: right / heldOutRows.n, seconds: (performance.now() - started) / 1000 };
  log.push(entry);
  console.log(`epoch ${entry.epoch}/${EPOCHS}: loss ${entry.loss.toFixed(4)}, held-out accuracy ${entry.heldOutAccuracy.toFixed(3)}, ${entry.seconds.toFixed(0)} s`);
}

// --- the files -------------------------------------------------------------------
const out = flags.out;
await mkdir(out, { recursive: true });
const tensors = {};
for (const [name, shape] of Object.entries(shapes)) tensors[name] = { dtype: 'F32', shape, data: await params[name].data() };
await writeSafetensorsFile(path.join(out, CLASSIFIER_FILES.weights), tensors);
await writeFile(path.join(out, CLASSIFIER_FILES.config), `${JSON.stringify(config, null, 2)}\n`);
const tfjsVersion = createRequire(import.meta.url)('@tensorflow/tfjs-core/package.json').version;
const last = log.at(-1);
const training = {
  heldOutAccuracy: last.heldOutAccuracy,
  heldOut: { digits: heldOutRows.n, split: 'mnistSplit(10000, 1000, 0)' },
  trainDigits: trainRows.n,
  seconds: Math.round(last.seconds),
  seed: SEED,
  epochs: EPOCHS,
  batch: BATCH,
  optimizer: { name: 'adam', peakLr: PEAK_LR, warmupSteps: WARMUP_STEPS, schedule: 'cosine to 0', beta1: 0.9, beta2: 0.999, epsilon: 1e-7 },
  dropout: DROPOUT,
  augmentation: AUGMENT,
  tfjs: `@tensorflow/tfjs-core ${tfjsVersion}, ${tf.getBackend()} backend`,
  log,
};
await writeFile(path.join(out, 'training.json'), `${JSON.stringify(training, null, 2)}\n`);
console.log(`wrote ${out}: held-out accuracy ${last.heldOutAccuracy.toFixed(4)} after ${EPOCHS} epochs, ${last.seconds.toFixed(0)} s`);
