// Sample-quality tooling: exact distances, k-NN precision/recall on sets
// with known answers, nearest-neighbour (copy) distances, the held-out
// split, batched generation, `marble export` (f16 weights load and match the
// f32 weights rounded to f16), and `marble sample` without a model.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { copyFile, mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { InputError, loadUNet } from '../src/index.js';
import { packageRoot } from '../src/node/native.js';
import { DDIMScheduler } from '../src/core/schedulers/ddim.js';
import {
  evenSubset,
  forEachPair,
  generateSamples,
  kthNeighborSquaredDistances,
  mnistSplit,
  nearestNeighbors,
  precisionRecall,
  quantile,
  rows,
  squaredDistanceMatrix,
  summarize,
  tableHeader,
  tableRow,
  knnLabels,
  classAccuracy,
  kNearest,
} from '../src/eval/index.js';
import type { Rows } from '../src/eval/index.js';
import { EMBEDDED_MODEL, resolveSampleModel } from '../src/cli/embedded_model.js';
import { exportModel } from '../src/cli/export.js';
import { float16ToFloat32, float32ToFloat16, parseSafetensors, tensorToFloat32 } from '../src/core/model/safetensors.js';
import { readSafetensorsFile, writeSafetensorsFile } from '../src/node/safetensors_file.js';
import type { TensorToWrite } from '../src/core/model/safetensors.js';
import { fixturePath, maxAbsDiff } from './helpers.js';

const CLI = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));

/** mulberry32: seeded uniforms in [0, 1), so every "random" set is fixed. */
function uniforms(seed: number) {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function randomRows(n: number, d: number, seed: number, scale = 1): Rows {
  const u = uniforms(seed);
  return rows(Float32Array.from({ length: n * d }, () => (u() - 0.5) * scale), d);
}

/** `perMode` points around each center (a cube of side `spread`), rows in center order. */
function clusters(centers: number[][], perMode: number, spread: number, seed: number): Rows {
  const d = centers[0]!.length;
  const u = uniforms(seed);
  const data = new Float32Array(centers.length * perMode * d);
  let at = 0;
  for (const c of centers) for (let p = 0; p < perMode; p++) for (let k = 0; k < d; k++) data[at++] = c[k]! + (u() - 0.5) * spread;
  return rows(data, d);
}

function naiveSquared(a: Rows, i: number, b: Rows, j: number): number {
  let s = 0;
  for (let k = 0; k < a.d; k++) s += (a.data[i * a.d + k]! - b.data[j * b.d + k]!) ** 2;
  return s;
}

async function tempDir(): Promise<string> {
  return mkdtemp(path.join(tmpdir(), 'marble-eval-'));
}

// ---------------------------------------------------------------------------
// Distances

test('distances: the blocked matrix equals the naive one, ragged edges included', () => {
  // odd sizes exercise the 2x4 tile edges and a partial block (BLOCK = 64)
  for (const [n, m, d] of [[7, 13, 5], [1, 1, 3], [3, 70, 1024], [66, 5, 2]] as const) {
    const a = randomRows(n, d, n * 31 + d);
    const b = randomRows(m, d, m * 17 + d + 1);
    const matrix = squaredDistanceMatrix(a, b);
    for (let i = 0; i < n; i++)
      for (let j = 0; j < m; j++) assert.equal(matrix[i * m + j], naiveSquared(a, i, b, j), `[${n}x${m}x${d}] pair ${i},${j}`);
  }
});

test('distances: pair filters visit each wanted pair exactly once', () => {
  const set = randomRows(71, 3, 5);
  for (const filter of ['all', 'skip-self', 'upper'] as const) {
    const seen = new Uint8Array(71 * 71);
    forEachPair(set, set, (i, j) => seen[i * 71 + j]++, filter);
    for (let i = 0; i < 71; i++)
      for (let j = 0; j < 71; j++) {
        const wanted = filter === 'all' || (filter === 'skip-self' ? i !== j : i < j);
        assert.equal(seen[i * 71 + j], wanted ? 1 : 0, `${filter}: ${i},${j}`);
      }
  }
  assert.throws(() => forEachPair(set, randomRows(71, 3, 6), () => {}, 'upper'), InputError);
});

test('distances: k-th neighbour radii match sorting each row (itself excluded)', () => {
  const set = randomRows(45, 6, 9);
  for (const k of [1, 3, 5]) {
    const radii = kthNeighborSquaredDistances(set, k);
    for (let i = 0; i < set.n; i++) {
      const others = Array.from({ length: set.n }, (_, j) => j)
        .filter((j) => j !== i)
        .map((j) => naiveSquared(set, i, set, j))
        .sort((x, y) => x - y);
      assert.equal(radii[i], others[k - 1], `k=${k} row ${i}`);
    }
  }
  // duplicates: a point's twin is a neighbour at distance 0, the point itself is not
  const twins = rows(new Float32Array([0, 0, 0, 0, 5, 5, 9, 9]), 2);
  assert.deepEqual([...kthNeighborSquaredDistances(twins, 1)], [0, 0, 32, 32]);
  assert.throws(() => kthNeighborSquaredDistances(randomRows(3, 2, 1), 3), InputError);
  assert.throws(() => rows(new Float32Array(5), 2), InputError);
});

test('nearest neighbours: known offsets give known distances and indices', () => {
  const d = 16;
  const reference = randomRows(40, d, 3, 20); // far apart relative to the offsets below
  const queries = new Float32Array(10 * d);
  const picks = [3, 0, 39, 17, 17, 8, 22, 5, 31, 11];
  picks.forEach((j, q) => {
    for (let k = 0; k < d; k++) queries[q * d + k] = reference.data[j * d + k]!;
    queries[q * d + (q % d)] += 0.25 * (q % 3); // offsets 0, 0.25, 0.5 along one axis
  });
  const nn = nearestNeighbors(rows(queries, d), reference);
  assert.deepEqual([...nn.indices], picks);
  picks.forEach((_, q) => assert.ok(Math.abs(nn.distances[q]! - 0.25 * (q % 3)) < 1e-6, `query ${q}: ${nn.distances[q]}`));
  // kNearest's first column is the nearest neighbour; its k columns ascend, and match sorting the row
  const near = kNearest(rows(queries, d), reference, 3);
  const all = squaredDistanceMatrix(rows(queries, d), reference);
  picks.forEach((j, q) => {
    assert.equal(near.indices[q * 3], j);
    assert.equal(Math.sqrt(near.squared[q * 3]!), nn.distances[q]);
    const sorted = [...all.subarray(q * reference.n, (q + 1) * reference.n)].sort((a, b) => a - b).slice(0, 3);
    assert.deepEqual([...near.squared.subarray(q * 3, q * 3 + 3)], sorted);
  });
});

// ---------------------------------------------------------------------------
// Precision and recall

test('precision/recall: identical sets score 1 and 1', () => {
  const set = randomRows(60, 32, 4);
  assert.deepEqual(precisionRecall(set, set), { precision: 1, recall: 1, k: 3 });
});

test('precision/recall: disjoint, far-apart clusters score 0 and 0', () => {
  const real = clusters([[0, 0, 0, 0]], 50, 1, 1);
  const generated = clusters([[100, 100, 100, 100]], 50, 1, 2);
  assert.deepEqual(precisionRecall(real, generated), { precision: 0, recall: 0, k: 3 });
});

test('precision/recall: samples covering half the modes have recall about 0.5, precision 1', () => {
  const modes = [[0, 0, 0, 0], [100, 0, 0, 0], [0, 100, 0, 0], [0, 0, 100, 0]];
  const real = clusters(modes, 100, 1, 11);
  // Exact: copies of the real points of two modes.
  const half = rows(real.data.slice(0, 200 * 4), 4);
  assert.deepEqual(precisionRecall(real, half), { precision: 1, recall: 0.5, k: 3 });
  // Fresh draws from the same two modes: the same answer up to the balls' ragged edges.
  const fresh = clusters(modes.slice(0, 2), 100, 1, 12);
  const { precision, recall } = precisionRecall(real, fresh);
  assert.ok(precision >= 0.95, `precision ${precision}`);
  assert.ok(recall >= 0.45 && recall <= 0.5, `recall ${recall}`);
  // Swapping the roles swaps the meaning: every real point of the covered modes is realistic...
  const swapped = precisionRecall(fresh, real);
  assert.ok(Math.abs(swapped.precision - 0.5) <= 0.05 && swapped.recall >= 0.95, JSON.stringify(swapped));
});

test('precision/recall: mismatched row lengths are refused', () => {
  assert.throws(() => precisionRecall(randomRows(10, 4, 1), randomRows(10, 5, 2)), InputError);
});

// ---------------------------------------------------------------------------
// Summaries, split, generation

test('k-NN labels: the majority of the k nearest, a tie goes to the nearest; class accuracy counts matches', () => {
  // 1-d points: reference at 0, 1, 2 (label 0) and 10, 11 (label 1), 20 (label 2)
  const reference = rows(Float32Array.from([0, 1, 2, 10, 11, 20]), 1);
  const labels = [0, 0, 0, 1, 1, 2];
  const queries = rows(Float32Array.from([0.4, 10.4, 19, 6.2]), 1);
  // 0.4: 0,1,2 -> 0. 10.4: 10,11,(2 at 8.4 vs 20 at 9.6) -> 1. 19: 20, 11, 10 -> 1 (two votes).
  // 6.2: 2 (4.2), 10 (3.8), 11 (4.8) -> 1.
  assert.deepEqual([...knnLabels(queries, reference, labels, 3)], [0, 1, 1, 1]);
  // k = 1 is the nearest label; k = 2 with a 1-1 tie keeps the nearest's
  assert.deepEqual([...knnLabels(queries, reference, labels, 1)], [0, 1, 2, 1]);
  assert.deepEqual([...knnLabels(rows(Float32Array.from([15.9]), 1), reference, labels, 2)], [2]);
  assert.equal(classAccuracy(queries, [0, 1, 2, 0], reference, labels, 3), 0.5);
  assert.throws(() => knnLabels(queries, reference, [0, 1], 3), InputError);
  assert.throws(() => classAccuracy(queries, [0], reference, labels, 3), InputError);
});

test('summaries and quantiles', () => {
  assert.deepEqual(summarize(Float64Array.from([3, 1, 2, 10])), { mean: 4, median: 2.5, min: 1 });
  const sorted = Float64Array.from([0, 1, 2, 3, 4]);
  assert.equal(quantile(sorted, 0), 0);
  assert.equal(quantile(sorted, 0.5), 2);
  assert.equal(quantile(sorted, 0.01), 0.04); // numpy.quantile's linear interpolation
  const even = evenSubset(rows(Float32Array.from({ length: 10 }, (_, i) => i), 1), 5);
  assert.deepEqual([...even.data], [0, 2, 4, 6, 8]);
});

test('steps table: one row per setting, with the epsilon the DDIM update used, columns matching the header', () => {
  const metrics = { k: 3, precision: 0.5, recall: 0.25, nnToTrain: { mean: 5, median: 4.5, min: 1 }, belowHeldOutP1: 0.01, classAccuracy: 0.75 };
  const header = tableHeader({
    model: 'm', samples: 10, seed: 0, batch: 5, backend: 'cpu', heldOut: 10, train: 20, k: 3,
    reference: { heldOutNn: { mean: 4, median: 4, min: 1 }, heldOutClassAccuracy: 0.95 } as never,
    realBaseline: { precision: 0.9, recall: 0.8 },
  });
  const columns = (line: string) => line.split('|').length;
  const headerLines = header.split('\n');
  const width = columns(headerLines.at(-1)!);
  const model = tableRow({ scheduler: 'ddim', steps: 50, eta: 0, metrics, seconds: 1 });
  const clipped = tableRow({ scheduler: 'ddim', steps: 50, eta: 0, clippedModelOutput: true, metrics, seconds: 1 });
  const ddpm = tableRow({ scheduler: 'ddpm', steps: 1000, eta: null, metrics, seconds: 1 });
  const unconditional = tableRow({ scheduler: 'ddpm', steps: 1000, eta: null, metrics: { ...metrics, classAccuracy: null }, seconds: 1 });
  for (const row of [model, clipped, ddpm, unconditional]) assert.equal(columns(row), width, row);
  assert.match(model, /\| ddim \| 50 \| 0 \| model \| 0\.500 \| 0\.250 \| 0\.750 \|/);
  assert.match(unconditional, /\| 0\.250 \| - \|/);
  assert.match(header, /right 0\.950 of the time/);
  assert.match(clipped, /\| 0 \| from clipped x0 \|/);
  assert.match(ddpm, /\| ddpm \| 1000 \| - \| - \|/);
});

test('held-out split: fixed by its seed, disjoint, complete, spread over the class-ordered digits', () => {
  const a = mnistSplit(10000, 1000, 0);
  const b = mnistSplit(10000, 1000, 0);
  assert.deepEqual(a, b);
  assert.equal(a.heldOut.length, 1000);
  assert.equal(a.train.length, 9000);
  const all = new Set([...a.heldOut, ...a.train]);
  assert.equal(all.size, 10000);
  for (let i = 1; i < a.heldOut.length; i++) assert.ok(a.heldOut[i - 1]! < a.heldOut[i]!);
  // every tenth of the index range (roughly one digit class each) gets its share
  for (let tenth = 0; tenth < 10; tenth++) {
    const count = a.heldOut.filter((i) => Math.floor(i / 1000) === tenth).length;
    assert.ok(count > 60 && count < 140, `tenth ${tenth}: ${count}`);
  }
  assert.notDeepEqual(mnistSplit(10000, 1000, 1).heldOut, a.heldOut);
  assert.throws(() => mnistSplit(100, 100), InputError);
});

test('generation: classes cycle over the whole set, pixels in [0, 1], the seed fixes the result', async () => {
  const unet = await loadUNet(fixturePath('unet/class-cond'));
  try {
    const options = { unet, scheduler: new DDIMScheduler(), count: 5, steps: 2, seed: 3, batchSize: 2 };
    const first = await generateSamples(options);
    assert.equal(first.n, 5);
    assert.equal(first.d, 3 * 16 * 16);
    assert.deepEqual(first.labels, [0, 1, 2, 3, 4]);
    assert.ok(first.data.every((v) => v >= 0 && v <= 1));
    assert.deepEqual((await generateSamples(options)).data, first.data);
    const other = await generateSamples({ ...options, seed: 4 });
    assert.notDeepEqual(other.data.subarray(0, first.d), first.data.subarray(0, first.d));
    await assert.rejects(generateSamples({ ...options, seed: 2 ** 32 }), InputError);
  } finally {
    unet.dispose();
  }
});

test('generation with a guidance model: labels cycle over the data classes, never the null class; guidance is passed on', async () => {
  const unet = await loadUNet(fixturePath('unet/cfg'));  // 4 classes and a null class (label 4)
  try {
    const options = { unet, scheduler: new DDIMScheduler(), count: 6, steps: 2, seed: 3, batchSize: 3 };
    const plain = await generateSamples(options);
    assert.deepEqual(plain.labels, [0, 1, 2, 3, 0, 1]);
    assert.deepEqual((await generateSamples({ ...options, guidanceScale: 1 })).data, plain.data, 'scale 1 is no guidance');
    const guided = await generateSamples({ ...options, guidanceScale: 3 });
    assert.deepEqual(guided.labels, plain.labels);
    assert.notDeepEqual(guided.data, plain.data, 'guidance changes the samples');
    await assert.rejects(generateSamples({ ...options, guidanceScale: Number.NaN }), InputError);
  } finally {
    unet.dispose();
  }
});

test('generation: each batch draws its own noise', async () => {
  // unconditional, so the first image of two batches would be equal if they shared noise
  const unet = await loadUNet(fixturePath('unet/tiny'));
  try {
    const generated = await generateSamples({ unet, scheduler: new DDIMScheduler(), count: 4, steps: 2, seed: 0, batchSize: 2 });
    assert.equal(generated.labels, null);
    const d = generated.d;
    assert.notDeepEqual(generated.data.subarray(0, d), generated.data.subarray(2 * d, 3 * d));
  } finally {
    unet.dispose();
  }
});

test('generation cache: a rerun reads finished batches back, a damaged batch is sampled again, another seed misses', async () => {
  const unet = await loadUNet(fixturePath('unet/tiny'));
  const dir = await mkdtemp(path.join(tmpdir(), 'marble-gen-cache-'));
  try {
    const cache = { dir, modelKey: 'tiny' };
    const options = { unet, scheduler: new DDIMScheduler(), count: 5, steps: 2, seed: 1, batchSize: 2, cache };
    const fresh: boolean[] = [];
    const first = await generateSamples({ ...options, onBatch: (_d, _t, fromCache) => fresh.push(fromCache) });
    assert.deepEqual(fresh, [false, false, false]);
    const files = (await readdir(dir)).filter((f) => f.endsWith('.f32'));
    assert.equal(files.length, 3);

    const again: boolean[] = [];
    const second = await generateSamples({ ...options, onBatch: (_d, _t, fromCache) => again.push(fromCache) });
    assert.deepEqual(again, [true, true, true]);
    assert.deepEqual(second.data, first.data);
    assert.ok(Math.abs(second.seconds - first.seconds) < 1e-9, 'cached batches keep their recorded sampling time');

    // a truncated batch file (an interrupted write outside our rename) is not trusted
    const victim = path.join(dir, files[0]);
    await writeFile(victim, (await readFile(victim)).subarray(0, 10));
    const repaired: boolean[] = [];
    const third = await generateSamples({ ...options, onBatch: (_d, _t, fromCache) => repaired.push(fromCache) });
    assert.equal(repaired.filter((c) => !c).length, 1);
    assert.deepEqual(third.data, first.data);

    const missed: boolean[] = [];
    await generateSamples({ ...options, seed: 2, onBatch: (_d, _t, fromCache) => missed.push(fromCache) });
    assert.deepEqual(missed, [false, false, false]);
    // the epsilon variant is part of the key too
    const clipped: boolean[] = [];
    await generateSamples({ ...options, useClippedModelOutput: true, onBatch: (_d, _t, fromCache) => clipped.push(fromCache) });
    assert.deepEqual(clipped, [false, false, false]);
  } finally {
    unet.dispose();
    await rm(dir, { recursive: true, force: true });
  }
});

// ---------------------------------------------------------------------------
// marble export

/** The tiny fixture's weights with every value rounded through float16, stored as F32. */
async function roundedThroughF16(dir: string): Promise<void> {
  const source = await readSafetensorsFile(fixturePath('unet/tiny/diffusion_pytorch_model.safetensors'));
  const tensors: Record<string, TensorToWrite> = {};
  for (const [name, info] of source.tensors) {
    const data = tensorToFloat32(source, name).map((v) => float16ToFloat32(float32ToFloat16(v)));
    tensors[name] = { dtype: 'F32', shape: info.shape, data };
  }
  await mkdir(dir, { recursive: true });
  await copyFile(fixturePath('unet/tiny/config.json'), path.join(dir, 'config.json'));
  await writeSafetensorsFile(path.join(dir, 'diffusion_pytorch_model.safetensors'), tensors);
}

async function forward(dir: string): Promise<Float32Array> {
  const unet = await loadUNet(dir);
  try {
    const shape: [number, number, number, number] = [2, 3, 16, 16];
    const x = Float32Array.from({ length: 2 * 3 * 16 * 16 }, (_, i) => Math.sin(i * 0.37));
    return await unet.forward(x, shape, [10, 700]);
  } finally {
    unet.dispose();
  }
}

test('export: f16 weights load and give the forward of the f32 weights rounded to f16; f32 is lossless', async () => {
  const dir = await tempDir();
  try {
    const f16 = path.join(dir, 'f16');
    const f32 = path.join(dir, 'f32');
    const r16 = await exportModel({ checkpoint: fixturePath('unet/tiny'), out: f16 });
    const r32 = await exportModel({ checkpoint: fixturePath('unet/tiny'), out: f32, dtype: 'f32' });
    assert.equal(r32.maxRoundingError, 0);
    assert.ok(r16.maxRoundingError > 0 && r16.maxRoundingError < 1e-2, `${r16.maxRoundingError}`);
    assert.ok(r16.weightBytes < 0.55 * r32.weightBytes, `${r16.weightBytes} vs ${r32.weightBytes}`);

    // a complete DDPMPipeline folder
    for (const file of ['model_index.json', 'scheduler/scheduler_config.json', 'unet/config.json', 'unet/diffusion_pytorch_model.safetensors'])
      assert.ok(existsSync(path.join(f16, file)), file);
    const index = JSON.parse(await readFile(path.join(f16, 'model_index.json'), 'utf8')) as Record<string, unknown>;
    assert.equal(index._class_name, 'DDPMPipeline');
    const written = parseSafetensors(await readFile(path.join(f16, 'unet', 'diffusion_pytorch_model.safetensors')));
    assert.ok([...written.tensors.values()].every((t) => t.dtype === 'F16'));

    const rounded = path.join(dir, 'rounded');
    await roundedThroughF16(rounded);
    assert.equal(maxAbsDiff(await forward(f16), await forward(rounded)), 0);
    assert.equal(maxAbsDiff(await forward(f32), await forward(fixturePath('unet/tiny'))), 0);

    // a pipeline folder's scheduler and index are carried over verbatim
    const pipeline = path.join(dir, 'pipeline');
    await mkdir(path.join(pipeline, 'scheduler'), { recursive: true });
    await writeFile(path.join(pipeline, 'model_index.json'), '{"_class_name": "DDPMPipeline", "marker": 1}\n');
    await writeFile(path.join(pipeline, 'scheduler', 'scheduler_config.json'), '{"_class_name": "DDPMScheduler", "beta_schedule": "squaredcos_cap_v2"}\n');
    await mkdir(path.join(pipeline, 'unet'));
    for (const f of ['config.json', 'diffusion_pytorch_model.safetensors']) await copyFile(path.join(f32, 'unet', f), path.join(pipeline, 'unet', f));
    const again = path.join(dir, 'again');
    await exportModel({ checkpoint: pipeline, out: again });
    assert.equal(await readFile(path.join(again, 'model_index.json'), 'utf8'), '{"_class_name": "DDPMPipeline", "marker": 1}\n');
    assert.match(await readFile(path.join(again, 'scheduler', 'scheduler_config.json'), 'utf8'), /squaredcos_cap_v2/);

    // replacing: only with --force, and never a folder that is not a model
    await assert.rejects(exportModel({ checkpoint: pipeline, out: again }), /--force/);
    await exportModel({ checkpoint: pipeline, out: again, force: true, dtype: 'f32' });
    const other = path.join(dir, 'other');
    await mkdir(other);
    await writeFile(path.join(other, 'notes.txt'), 'keep me');
    await assert.rejects(exportModel({ checkpoint: pipeline, out: other, force: true }), /not a model folder/);
    assert.equal(await readFile(path.join(other, 'notes.txt'), 'utf8'), 'keep me');
    await assert.rejects(exportModel({ checkpoint: pipeline, out: pipeline, force: true }), /differ/);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('export: weights beyond float16 range are refused for f16', async () => {
  const dir = await tempDir();
  try {
    const model = path.join(dir, 'big');
    await roundedThroughF16(model);
    const file = path.join(model, 'diffusion_pytorch_model.safetensors');
    const source = await readSafetensorsFile(file);
    const tensors: Record<string, TensorToWrite> = {};
    for (const [name, info] of source.tensors) tensors[name] = { dtype: 'F32', shape: info.shape, data: tensorToFloat32(source, name) };
    const first = Object.keys(tensors).sort()[0]!;
    (tensors[first]!.data as Float32Array)[0] = 70000;
    await writeSafetensorsFile(file, tensors);
    await assert.rejects(exportModel({ checkpoint: model, out: path.join(dir, 'out') }), /beyond float16/);
    assert.ok(!existsSync(path.join(dir, 'out')));
    await exportModel({ checkpoint: model, out: path.join(dir, 'out'), dtype: 'f32' });
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('marble export is registered on the command line', async () => {
  const dir = await tempDir();
  try {
    const out = path.join(dir, 'm');
    const child = spawnSync(process.execPath, [CLI, 'export', '--checkpoint', fixturePath('unet/tiny'), '--out', out], { encoding: 'utf8' });
    assert.equal(child.status, 0, child.stderr);
    assert.match(child.stdout, /exported .* f16/);
    assert.ok(existsSync(path.join(out, 'unet', 'diffusion_pytorch_model.safetensors')));
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

// ---------------------------------------------------------------------------
// marble sample without --model

test('the embedded model: --model wins, else models/mnist, else a clear error', async () => {
  const root = await tempDir();
  try {
    assert.equal(resolveSampleModel('some/dir', root), 'some/dir');
    assert.throws(
      () => resolveSampleModel(undefined, root),
      (e: unknown) => e instanceof InputError && /no embedded model/.test(e.message) && /--model/.test(e.message) && e.message.includes(path.join(root, EMBEDDED_MODEL)),
    );
    await mkdir(path.join(root, EMBEDDED_MODEL, 'unet'), { recursive: true });
    await writeFile(path.join(root, EMBEDDED_MODEL, 'unet', 'config.json'), '{}');
    assert.equal(resolveSampleModel(undefined, root), path.join(root, EMBEDDED_MODEL));
  } finally {
    await rm(root, { recursive: true, force: true });
  }
});

test('marble sample without --model, in a package without models/mnist, says to pass --model', (t) => {
  if (existsSync(path.join(packageRoot(), EMBEDDED_MODEL, 'unet', 'config.json'))) {
    t.skip('this package has its embedded model');
    return;
  }
  const child = spawnSync(process.execPath, [CLI, 'sample', '--batch', '1', '--out', path.join(tmpdir(), 'marble-never-written.png')], { encoding: 'utf8' });
  assert.equal(child.status, 1);
  assert.match(child.stderr, /no embedded model/);
  assert.match(child.stderr, /pass --model/i);
  assert.match(child.stderr, /npm run train:default/);
});
