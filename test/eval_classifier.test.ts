// The MNIST CNN of `marble eval` (issue #24): the committed classifier's
// accuracy on the real held-out digits, its hand-written gradients against
// TensorFlow.js's own, the typed errors for bad files and a missing tfjs,
// and the new rows of `marble eval` on the embedded model.
//
// TensorFlow.js is a development dependency, so it is installed wherever
// these tests run (npm ci).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { copyFile, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import '@tensorflow/tfjs'; // gradients and the cpu backend, for the gradient check
import { BackendError, ConfigError, InputError, SafetensorsError, WeightsError } from '../src/index.js';
import { MnistDataset } from '../src/data/mnist.js';
import { buildClassifierReference, measureWithClassifier } from '../src/eval/classifier_metrics.js';
import { CLASSIFIER_FILES, DEFAULT_CLASSIFIER, MnistClassifier } from '../src/eval/mnist_classifier.js';
import { cnnForward } from '../src/eval/mnist_cnn.js';
import { cnnInput, parameterShapes } from '../src/eval/mnist_cnn_spec.js';
import type { CnnParams } from '../src/eval/mnist_cnn.js';
import { datasetRows, evenSubset, mnistSplit } from '../src/eval/mnist_reference.js';
import { tableHeader, tableRow } from '../src/eval/table.js';
import { importTf, loadTf } from '../src/eval/tfjs.js';
import { packageRoot } from '../src/node/native.js';
import { writeSafetensorsFile } from '../src/node/safetensors_file.js';
import type { Tensor, Tensor2D, Tensor4D } from '@tensorflow/tfjs-core';

const CLI = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));
const SHIPPED = path.join(packageRoot(), DEFAULT_CLASSIFIER);

async function heldOutDigits() {
  const dataset = await MnistDataset.load({ size: 32, channels: 1 });
  const split = mnistSplit(dataset.length, 1000, 0);
  return { dataset, split, heldOut: await datasetRows(dataset, split.heldOut) };
}

test('the shipped MNIST classifier reads at least 98.5% of the 1,000 held-out digits right, as its training recorded', async () => {
  const { heldOut } = await heldOutDigits();
  const classifier = await MnistClassifier.load();
  try {
    const read = await classifier.classify(heldOut);
    let right = 0;
    for (let i = 0; i < heldOut.n; i++) if (read.labels[i] === heldOut.labels[i]) right++;
    const accuracy = right / heldOut.n;
    assert.ok(accuracy >= 0.985, `held-out accuracy ${accuracy}`);
    const training = JSON.parse(await readFile(path.join(SHIPPED, 'training.json'), 'utf8')) as { heldOutAccuracy: number };
    // the same weights and the same wasm arithmetic: the same digits right (a digit's slack for other CPUs)
    assert.ok(Math.abs(accuracy - training.heldOutAccuracy) <= 0.001, `${accuracy} vs recorded ${training.heldOutAccuracy}`);
    assert.equal(read.d, classifier.config.hidden);
    assert.equal(read.features.length, heldOut.n * read.d);
    assert.ok(read.features.every((v) => v >= 0 && Number.isFinite(v)), 'features are ReLU outputs');
  } finally {
    classifier.dispose();
  }
});

test('classifier metrics: real digits scored as samples read as their own labels, FD 0 against themselves; unequal floor sizes refused', async () => {
  const { dataset, split, heldOut } = await heldOutDigits();
  const train = await datasetRows(dataset, split.train.subarray(0, 300));
  const classifier = await MnistClassifier.load();
  try {
    const floorSet = evenSubset(heldOut, heldOut.n); // the held-out digits themselves: floor 0
    const reference = await buildClassifierReference(classifier, heldOut, floorSet);
    assert.ok(reference.floor < 1e-9, `floor ${reference.floor}`);
    const asSamples = await measureWithClassifier(heldOut, reference);
    assert.equal(asSamples.classAccuracy, reference.heldOutAccuracy);
    assert.ok(asSamples.frechet < 1e-9);
    await assert.rejects(measureWithClassifier(train, reference), InputError);
    // 28x28 digits read the same as the 32x32 ones they are the middle of
    const crop = { data: cnnInput(heldOut).subarray(0, 50 * 784), n: 50, d: 784 };
    const [a, b] = [await classifier.classify(crop), await classifier.classify({ ...heldOut, data: heldOut.data.subarray(0, 50 * 1024), n: 50 })];
    assert.deepEqual(a.labels, b.labels);
    assert.deepEqual(a.features, b.features);
    await assert.rejects(classifier.classify({ data: new Float32Array(30 * 30), n: 1, d: 900 }), InputError);
  } finally {
    classifier.dispose();
  }
});

test("the CNN's hand-written gradients equal tfjs's own (cpu backend, tf.conv2d and tf.matMul)", async () => {
  const tf = await loadTf();
  const config = { conv1: 3, conv2: 5, hidden: 6 };
  let seed = 1;
  const uniform = () => {
    seed = (seed * 16807) % 2147483647;
    return seed / 2147483647 - 0.5;
  };
  const values = Object.entries(parameterShapes(config)).map(([name, shape]) => ({ name, shape, data: Float32Array.from({ length: shape.reduce((a, b) => a * b) }, uniform) }));
  const x = Float32Array.from({ length: 2 * 784 }, () => uniform() + 0.5);
  const r = Float32Array.from({ length: 2 * 10 }, uniform);
  const gradients = (logits: (p: CnnParams, x: Tensor4D) => Tensor) => {
    const g = tf.grads((...ps: Tensor[]) => {
      const p = Object.fromEntries(values.map((v, i) => [v.name, ps[i]])) as CnnParams;
      return tf.sum(tf.mul(logits(p, tf.tensor4d(x, [2, 28, 28, 1])), tf.tensor2d(r, [2, 10])));
    })(values.map((v) => tf.tensor(v.data, v.shape)));
    return g.map((t) => t.dataSync());
  };
  const ours = gradients((p, input) => cnnForward(tf, p, input).logits);
  try {
    await tf.setBackend('cpu');
    const reference = gradients((p, input) => {
      const block = (h: Tensor4D, layer: string) =>
        tf.maxPool(tf.relu(tf.add(tf.conv2d(h, p[`${layer}.weight`] as Tensor4D, 1, 'same'), p[`${layer}.bias`])) as Tensor4D, 2, 2, 'valid');
      const flat = tf.reshape(block(block(input, 'conv1'), 'conv2'), [2, -1]) as Tensor2D;
      const features = tf.relu(tf.add(tf.matMul(flat, p['fc1.weight'] as Tensor2D), p['fc1.bias'])) as Tensor2D;
      return tf.add(tf.matMul(features, p['fc2.weight'] as Tensor2D), p['fc2.bias']);
    });
    values.forEach((v, i) => {
      let worst = 0;
      let scale = 0;
      for (let k = 0; k < v.data.length; k++) {
        worst = Math.max(worst, Math.abs(ours[i][k] - reference[i][k]));
        scale = Math.max(scale, Math.abs(reference[i][k]));
      }
      assert.ok(scale > 0 && worst <= 1e-5 * scale, `${v.name}: differs by ${worst} (largest ${scale})`);
    });
  } finally {
    await tf.setBackend('wasm');
  }
});

test('classifier files: a bad config, a missing or damaged weights file, and misshaped tensors are typed errors', async () => {
  const dir = await mkdtemp(path.join(tmpdir(), 'marble-classifier-'));
  try {
    await assert.rejects(MnistClassifier.load(dir), ConfigError); // no config.json
    await writeFile(path.join(dir, CLASSIFIER_FILES.config), '{"conv1": 4, "conv2": 0, "hidden": 8}');
    await assert.rejects(MnistClassifier.load(dir), (e: unknown) => e instanceof ConfigError && /conv2/.test(e.message));
    await writeFile(path.join(dir, CLASSIFIER_FILES.config), '{"conv1": 4, "conv2": 6, "hidden": 8}');
    await assert.rejects(MnistClassifier.load(dir), SafetensorsError); // no weights
    await writeFile(path.join(dir, CLASSIFIER_FILES.weights), 'not a safetensors file');
    await assert.rejects(MnistClassifier.load(dir), SafetensorsError);
    // the shipped weights under a config that asks for other shapes
    await copyFile(path.join(SHIPPED, CLASSIFIER_FILES.weights), path.join(dir, CLASSIFIER_FILES.weights));
    await assert.rejects(
      MnistClassifier.load(dir),
      (e: unknown) => e instanceof WeightsError && e.misshaped.some((m) => m.startsWith('conv1.weight')) && e.missing.length === 0,
    );
    // a tensor missing, one too many
    const tensors = Object.fromEntries(
      Object.entries(parameterShapes({ conv1: 4, conv2: 6, hidden: 8 }))
        .filter(([name]) => name !== 'fc2.bias')
        .map(([name, shape]) => [name, { dtype: 'F32' as const, shape, data: new Float32Array(shape.reduce((a, b) => a * b)) }]),
    );
    tensors.extra = { dtype: 'F32', shape: [1], data: new Float32Array(1) };
    await writeSafetensorsFile(path.join(dir, CLASSIFIER_FILES.weights), tensors);
    await assert.rejects(MnistClassifier.load(dir), (e: unknown) => e instanceof WeightsError && e.missing.join() === 'fc2.bias' && e.unexpected.join() === 'extra');
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('without TensorFlow.js installed, the classifier is a BackendError that says what to install', async () => {
  const missing = async (specifier: string) => {
    throw Object.assign(new Error(`Cannot find package '${specifier}'`), { code: 'ERR_MODULE_NOT_FOUND' });
  };
  await assert.rejects(importTf(missing), (e: unknown) => e instanceof BackendError && /npm install @tensorflow\/tfjs-core@4 @tensorflow\/tfjs-backend-wasm@4/.test(e.message));
  // other failures pass through as they are
  await assert.rejects(importTf(async () => { throw new TypeError('boom'); }), TypeError);
});

test('marble eval prints the CNN rows (class accuracy, Fréchet distance, floor, ratio) and writes them in its JSON', async () => {
  const dir = await mkdtemp(path.join(tmpdir(), 'marble-eval-cnn-'));
  try {
    const json = path.join(dir, 'eval.json');
    // 200 held-out digits (not 1,000) keep the k-NN reference quick; the CNN rows do not depend on it
    const args = [CLI, 'eval', '--samples', '20', '--steps', '2', '--batch', '20', '--real-holdout', '200', '--backend', 'cpu', '--json', json];
    const child = spawnSync(process.execPath, args, { encoding: 'utf8', cwd: packageRoot() });
    assert.equal(child.status, 0, child.stderr);
    assert.match(child.stdout, /class accuracy by the MNIST CNN: \d\.\d{3} \(it reads the held-out real digits right (0\.9[6-9]\d|1\.000) of the time\)/);
    assert.match(child.stdout, /Fréchet distance in the CNN's feature space, samples vs held-out: \d+\.\d{3}; floor \(20 real training digits vs held-out\) \d+\.\d{3}; ratio \d+\.\d\dx/);
    const result = JSON.parse(await readFile(json, 'utf8')) as { classifier: Record<string, number> };
    for (const key of ['heldOutAccuracy', 'classAccuracy', 'frechet', 'frechetFloor', 'frechetRatio']) assert.equal(typeof result.classifier[key], 'number', key);
    assert.ok(Math.abs(result.classifier.frechetRatio - result.classifier.frechet / result.classifier.frechetFloor) < 1e-12);
    assert.equal(result.classifier.floorDigits, 20);

    const without = spawnSync(process.execPath, [...args.slice(0, -2), '--no-classifier'], { encoding: 'utf8', cwd: packageRoot() });
    assert.equal(without.status, 0, without.stderr);
    assert.doesNotMatch(without.stdout, /MNIST CNN|Fréchet/);
    assert.match(without.stdout, /precision \d\.\d{3}/);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('a classifier folder that is not one stops marble eval with its typed error', async () => {
  const dir = await mkdtemp(path.join(tmpdir(), 'marble-eval-bad-'));
  try {
    await mkdir(path.join(dir, 'c'));
    const child = spawnSync(process.execPath, [CLI, 'eval', '--samples', '10', '--steps', '1', '--batch', '10', '--backend', 'cpu', '--classifier', path.join(dir, 'c')], { encoding: 'utf8' });
    assert.equal(child.status, 1);
    assert.match(child.stderr, /MNIST classifier's .*config\.json/);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('steps table: the CNN columns (class accuracy, FD, FD / floor) line up with the header, "-" without the CNN', () => {
  const metrics = { k: 3, precision: 0.5, recall: 0.25, nnToTrain: { mean: 5, median: 4.5, min: 1 }, belowHeldOutP1: 0.01, classAccuracy: 0.75 };
  const header = tableHeader({
    model: 'm', samples: 10, seed: 0, batch: 5, backend: 'cpu', heldOut: 10, train: 20, k: 3,
    reference: { heldOutNn: { mean: 4, median: 4, min: 1 }, heldOutClassAccuracy: 0.95 } as never,
    realBaseline: { precision: 0.9, recall: 0.8 },
    classifier: { heldOutAccuracy: 0.986, floor: 7.0581, floorDigits: 10 } as never,
    classifierDir: 'models/mnist-classifier',
  });
  assert.match(header, /`models\/mnist-classifier`; 0\.986 right on the held-out digits/);
  assert.match(header, /its floor \(10 real training digits vs the held-out\) is 7\.058/);
  const width = header.split('\n').at(-1)!.split('|').length;
  const withCnn = tableRow({ scheduler: 'ddim', steps: 50, eta: 0, metrics, classifier: { classAccuracy: 0.9, frechet: 12.3456, frechetRatio: 1.749 }, seconds: 1 });
  const without = tableRow({ scheduler: 'ddim', steps: 50, eta: 0, metrics, seconds: 1 });
  for (const row of [withCnn, without]) assert.equal(row.split('|').length, width, row);
  assert.match(withCnn, /\| 0\.750 \| 0\.900 \| 12\.346 \| 1\.75 \| 5\.000 \|/);
  assert.match(without, /\| 0\.750 \| - \| - \| - \| 5\.000 \|/);
});
