// Training data: the MNIST dataset from the `mnist` package, image folders
// (PNG and JPEG decoded, resized, center cropped), the seeded loader's
// shuffling and flips, and bad input.
import '../src/node/host.js';
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, mkdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import jpeg from 'jpeg-js';
import pngjs from 'pngjs';

import { InputError } from '../src/core/errors.js';
import { DataLoader, ImageFolderDataset, MnistDataset, resizeBilinear } from '../src/data/index.js';
import type { Dataset, DatasetItem } from '../src/data/index.js';

const { PNG } = pngjs;

/** An RGBA PNG whose pixel (x, y) is color(x, y). */
function makePng(width: number, height: number, color: (x: number, y: number) => [number, number, number]): Buffer {
  const png = new PNG({ width, height });
  for (let y = 0; y < height; y++)
    for (let x = 0; x < width; x++) {
      const [r, g, b] = color(x, y);
      png.data.set([r, g, b, 255], 4 * (y * width + x));
    }
  return PNG.sync.write(png);
}

function makeJpeg(width: number, height: number, color: (x: number, y: number) => [number, number, number]): Buffer {
  const data = new Uint8Array(4 * width * height);
  for (let y = 0; y < height; y++)
    for (let x = 0; x < width; x++) data.set([...color(x, y), 255], 4 * (y * width + x));
  return jpeg.encode({ width, height, data }, 95).data;
}

async function tempDir(): Promise<string> {
  return mkdtemp(join(tmpdir(), 'marble-data-'));
}

test('mnist: 10,000 real digits with labels 0..9, values in [-1, 1]', async () => {
  const mnist = await MnistDataset.load();
  assert.equal(mnist.length, 10000);
  assert.deepEqual(mnist.shape, [1, 28, 28]);
  assert.equal(mnist.numClasses, 10);
  const counts = new Array<number>(10).fill(0);
  let min = Infinity;
  let max = -Infinity;
  for (let i = 0; i < mnist.length; i += 7) {
    const { pixels, label } = await mnist.item(i);
    assert.equal(pixels.length, 28 * 28);
    assert.ok(label !== null && Number.isInteger(label) && label >= 0 && label <= 9);
    counts[label]++;
    for (const v of pixels) {
      min = Math.min(min, v);
      max = Math.max(max, v);
    }
  }
  assert.ok(counts.every((c) => c > 100), `every digit appears: ${counts.join(', ')}`);
  assert.equal(min, -1); // the background
  assert.ok(max <= 1 && max > 0.9, `ink reaches near 1, max ${max}`);
  // A real digit, not noise: about 10-25% of the pixels are ink.
  const { pixels } = await mnist.item(0);
  const ink = pixels.filter((v) => v > 0).length / pixels.length;
  assert.ok(ink > 0.05 && ink < 0.4, `ink fraction ${ink}`);
});

test('mnist: padded to 32x32 with background, 3 channels on request', async () => {
  const plain = await MnistDataset.load();
  const padded = await MnistDataset.load({ size: 32, channels: 3 });
  assert.deepEqual(padded.shape, [3, 32, 32]);
  const a = (await plain.item(1234)).pixels;
  const { pixels: b, label } = await padded.item(1234);
  assert.equal(label, (await plain.item(1234)).label);
  for (let c = 0; c < 3; c++)
    for (let y = 0; y < 32; y++)
      for (let x = 0; x < 32; x++) {
        const inside = y >= 2 && y < 30 && x >= 2 && x < 30;
        const expected = inside ? a[(y - 2) * 28 + (x - 2)] : -1;
        assert.equal(b[c * 1024 + y * 32 + x], expected);
      }
  await assert.rejects(MnistDataset.load({ size: 0 }), InputError);
  await assert.rejects(plain.item(10000), InputError);
});

test('resize: PIL bilinear coefficients, antialiased when shrinking', () => {
  // PIL: 4 -> 2 uses support 2; output 0 weighs pixels 0,1,2 by .75,.75,.25.
  const out = resizeBilinear(new Float32Array([0, 10, 20, 30]), 1, 1, 4, 1, 2);
  assert.ok(Math.abs(out[0] - 12.5 / 1.75) < 1e-5, `${out[0]}`);
  assert.ok(Math.abs(out[1] - 40 / 1.75) < 1e-5, `${out[1]}`);
  // Enlarging 2 -> 4 interpolates: centers at .25, .75, 1.25, 1.75 of the source.
  const up = resizeBilinear(new Float32Array([0, 8]), 1, 1, 2, 1, 4);
  assert.deepEqual(Array.from(up), [0, 2, 6, 8]);
  // A constant image stays constant.
  const flat = resizeBilinear(new Float32Array(7 * 5).fill(3), 1, 7, 5, 3, 2);
  assert.ok(flat.every((v) => Math.abs(v - 3) < 1e-6));
});

test('image folder: PNG and JPEG decode, resize to cover, center crop, RGB or gray in [-1, 1]', async () => {
  const dir = await tempDir();
  try {
    // 40 wide x 20 high: left half red, right half blue -> covered to 32x16, center 16x16 crop.
    await writeFile(join(dir, 'a.png'), makePng(40, 20, (x) => (x < 20 ? [255, 0, 0] : [0, 0, 255])));
    await mkdir(join(dir, 'sub'));
    await writeFile(join(dir, 'sub', 'b.jpg'), makeJpeg(24, 24, () => [0, 200, 0]));
    await writeFile(join(dir, 'notes.txt'), 'not an image');

    const rgb = await ImageFolderDataset.open(dir, { channels: 3, size: 16 });
    assert.equal(rgb.length, 2);
    assert.deepEqual(rgb.shape, [3, 16, 16]);
    const png = await rgb.item(0);
    assert.equal(png.label, null);
    assert.equal(png.pixels.length, 3 * 256);
    const px = (item: DatasetItem, c: number, y: number, x: number) => item.pixels[c * 256 + y * 16 + x];
    // Far left: pure red; far right: pure blue; the seam blends.
    assert.ok(Math.abs(px(png, 0, 5, 0) - 1) < 1e-6 && Math.abs(px(png, 2, 5, 0) + 1) < 1e-6);
    assert.ok(Math.abs(px(png, 2, 5, 15) - 1) < 1e-6 && Math.abs(px(png, 0, 5, 15) + 1) < 1e-6);
    assert.ok(px(png, 0, 5, 7) > px(png, 0, 5, 8), 'the seam is at the center after the crop');
    assert.ok(png.pixels.every((v) => v >= -1 && v <= 1));

    const jpg = await rgb.item(1);
    for (let p = 0; p < 256; p++) {
      assert.ok(Math.abs(jpg.pixels[p] + 1) < 0.05, 'red ~ 0');
      assert.ok(Math.abs(jpg.pixels[256 + p] - (200 / 127.5 - 1)) < 0.05, 'green ~ 200');
    }

    const gray = await ImageFolderDataset.open(dir, { channels: 1, size: [8, 12] });
    assert.deepEqual(gray.shape, [1, 8, 12]);
    const g = await gray.item(1);
    const luma = (200 * 587) / 1000;
    assert.ok(g.pixels.every((v) => Math.abs(v - (luma / 127.5 - 1)) < 0.05), 'ITU-R 601 luma');
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('image folder: clear errors for an empty folder, a missing one, and a broken file', async () => {
  const dir = await tempDir();
  try {
    await assert.rejects(ImageFolderDataset.open(dir, { channels: 3, size: 16 }), (e: unknown) => e instanceof InputError && /no \.png/.test((e as Error).message));
    await assert.rejects(ImageFolderDataset.open(join(dir, 'missing'), { channels: 3, size: 16 }), (e: unknown) => e instanceof InputError && /ENOENT/.test((e as Error).message));
    await writeFile(join(dir, 'broken.png'), 'this is not a png');
    const ds = await ImageFolderDataset.open(dir, { channels: 3, size: 16 });
    await assert.rejects(ds.item(0), (e: unknown) => e instanceof InputError && /broken\.png/.test((e as Error).message));
    await assert.rejects(ImageFolderDataset.open(dir, { channels: 4 as 3, size: 16 }), InputError);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

/** A small labeled dataset whose item i is filled with i (and a left-right ramp). */
function rampDataset(n: number): Dataset {
  return {
    length: n,
    shape: [1, 2, 4],
    numClasses: 3,
    item: async (i) => ({ pixels: Float32Array.from([0, 1, 2, 3, 0, 1, 2, 3], (v) => i * 10 + v), label: i % 3 }),
  };
}

test('loader: seeded shuffle per epoch, full batches across epochs, labels', async () => {
  const ds = rampDataset(10);
  const collect = async (loader: DataLoader, batches: number) => {
    const out = [];
    for (let i = 0; i < batches; i++) out.push(await loader.next());
    return out;
  };
  const a = await collect(new DataLoader(ds, { batchSize: 4, seed: 5 }), 5);
  const b = await collect(new DataLoader(ds, { batchSize: 4, seed: 5 }), 5);
  const c = await collect(new DataLoader(ds, { batchSize: 4, seed: 6 }), 5);
  assert.deepEqual(a, b, 'same seed, same batches');
  assert.notDeepEqual(a.map((x) => x.indices), c.map((x) => x.indices), 'another seed, another order');
  const first20 = a.flatMap((x) => x.indices);
  assert.deepEqual([...first20.slice(0, 10)].sort((p, q) => p - q), [0, 1, 2, 3, 4, 5, 6, 7, 8, 9], 'epoch 0 is a permutation');
  assert.deepEqual([...first20.slice(10, 20)].sort((p, q) => p - q), [0, 1, 2, 3, 4, 5, 6, 7, 8, 9], 'epoch 1 too');
  assert.notDeepEqual(first20.slice(0, 10), first20.slice(10, 20), 'each epoch reshuffles');
  for (const batch of a) {
    assert.deepEqual(batch.shape, [4, 1, 2, 4]);
    assert.deepEqual(batch.labels, batch.indices.map((i) => i % 3));
    batch.indices.forEach((index, k) => assert.equal(batch.data[k * 8], index * 10));
  }
  const ordered = await collect(new DataLoader(ds, { batchSize: 3, shuffle: false }), 4);
  assert.deepEqual(ordered.flatMap((x) => x.indices), [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1]);
});

test('loader: random flips are deterministic per seed and mirror the image', async () => {
  const ds = rampDataset(16);
  const run = async (seed: number) => {
    const loader = new DataLoader(ds, { batchSize: 16, seed, randomFlip: true, shuffle: false });
    return loader.next();
  };
  const a = await run(1);
  const b = await run(1);
  const c = await run(2);
  assert.deepEqual(a.data, b.data);
  const flipped = (batch: Awaited<ReturnType<typeof run>>) =>
    batch.indices.map((index, k) => batch.data[k * 8] !== index * 10);
  const fa = flipped(a);
  assert.ok(fa.some((f) => f) && fa.some((f) => !f), 'some images flipped, some not');
  assert.notDeepEqual(fa, flipped(c), 'another seed flips others');
  a.indices.forEach((index, k) => {
    const row = Array.from(a.data.subarray(k * 8, k * 8 + 4));
    const ramp = [0, 1, 2, 3].map((v) => index * 10 + v);
    assert.deepEqual(row, fa[k] ? ramp.reverse() : ramp);
  });
});

test('loader: state round-trips, so a resumed loader continues the same stream', async () => {
  const ds = rampDataset(7);
  const straight = new DataLoader(ds, { batchSize: 3, seed: 9, randomFlip: true });
  const first = [];
  for (let i = 0; i < 6; i++) first.push(await straight.next());
  const part = new DataLoader(ds, { batchSize: 3, seed: 9, randomFlip: true });
  for (let i = 0; i < 2; i++) await part.next();
  const resumed = new DataLoader(ds, { batchSize: 3, seed: 9, randomFlip: true });
  resumed.setState(JSON.parse(JSON.stringify(part.getState())));
  for (let i = 2; i < 6; i++) assert.deepEqual(await resumed.next(), first[i]);
  assert.throws(() => resumed.setState({ epoch: -1, position: 0 }), InputError);
  assert.throws(() => resumed.setState({ epoch: 0, position: 7 }), InputError);
  assert.throws(() => new DataLoader(ds, { batchSize: 0 }), InputError);
});
