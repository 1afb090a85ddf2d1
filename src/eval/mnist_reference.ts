// The real digits generated ones are compared with: a fixed, seeded
// held-out subset of the mnist package's 10,000 digits, and the rest as the
// training reference for copy detection.
//
// The split is a seeded permutation (not "the last 1,000"): MnistDataset
// orders the digits by class, so the last 1,000 would all be nines. The
// same (count, seed) always gives the same indices, on every machine.
//
// `marble train --data mnist --holdout N` leaves exactly these digits out
// (same split, seed 0), as the default model's recipe does, so the held-out
// digits are unseen by it; a model trained without --holdout has seen them.
import { InputError } from '../core/errors.js';
import type { Dataset } from '../data/dataset.js';
import { SeededRandom } from '../data/random.js';
import type { Rows } from './distance.js';

/** Stream id of the split's permutation ("hold"), apart from the loader's streams. */
const HOLDOUT_STREAM = 0x686f6c64;

export interface MnistSplit {
  /** Held-out indices, ascending. */
  heldOut: Uint32Array;
  /** Every other index, ascending. */
  train: Uint32Array;
}

/** Splits indices 0 .. total-1 into `count` held-out ones (a seeded random choice) and the rest. */
export function mnistSplit(total: number, count: number, seed = 0): MnistSplit {
  if (!Number.isInteger(count) || count < 1 || count >= total)
    throw new InputError(`the held-out set must have 1 to ${total - 1} digits, got ${count}`);
  const permutation = new SeededRandom(seed, HOLDOUT_STREAM).permutation(total);
  const heldOut = permutation.slice(0, count).sort();
  const train = permutation.slice(count).sort();
  return { heldOut, train };
}

/** Model-space values ([-1, 1]) to pixel intensities in [0, 1], clamped as images are when saved. */
export function toPixels(modelSpace: Float32Array): Float32Array {
  const out = new Float32Array(modelSpace.length);
  for (let i = 0; i < out.length; i++) out[i] = Math.min(1, Math.max(0, modelSpace[i] / 2 + 0.5));
  return out;
}

export interface LabeledRows extends Rows {
  labels: Uint8Array;
}

/** The dataset's items at `indices` as pixel rows in [0, 1] (C*H*W values each), with their labels. */
export async function datasetRows(dataset: Dataset, indices: ArrayLike<number>): Promise<LabeledRows> {
  const [c, h, w] = dataset.shape;
  const d = c * h * w;
  const data = new Float32Array(indices.length * d);
  const labels = new Uint8Array(indices.length);
  for (let i = 0; i < indices.length; i++) {
    const item = await dataset.item(indices[i]);
    data.set(toPixels(item.pixels), i * d);
    labels[i] = item.label ?? 0;
  }
  return { data, n: indices.length, d, labels };
}

/**
 * `count` rows spread evenly over a set (rows floor(i * n / count)): from the
 * class-ordered MNIST rows this keeps every class in proportion, where the
 * first `count` rows would be zeros and ones.
 */
export function evenSubset(set: Rows, count: number): Rows {
  if (!Number.isInteger(count) || count < 1 || count > set.n) throw new InputError(`cannot take ${count} rows of ${set.n}`);
  const { d } = set;
  const data = new Float32Array(count * d);
  for (let i = 0; i < count; i++) {
    const from = Math.floor((i * set.n) / count);
    data.set(set.data.subarray(from * d, (from + 1) * d), i * d);
  }
  return { data, n: count, d };
}
