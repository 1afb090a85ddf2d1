// The numbers `marble eval` reports for one set of generated digits:
// improved precision/recall against held-out real digits, and how close each
// sample is to its nearest training digit compared with how close unseen
// real digits are (a model that copies its training data produces samples
// much nearer to the training set than real unseen digits are).
import { agreement, votedLabels } from './classify.js';
import { kNearest } from './distance.js';
import type { KNearest, Rows } from './distance.js';
import type { LabeledRows } from './mnist_reference.js';
import { precisionRecall } from './precision_recall.js';

export interface DistanceSummary {
  mean: number;
  median: number;
  min: number;
}

export interface SampleMetrics {
  precision: number;
  recall: number;
  k: number;
  /** L2 distance (pixels in [0, 1]) from each generated image to its nearest training image. */
  nnToTrain: DistanceSummary;
  /**
   * Fraction of generated images nearer to the training set than 99% of the
   * held-out real digits are: about 0.01 for a model that does not copy,
   * far more for one that reproduces training images.
   */
  belowHeldOutP1: number;
  /**
   * Class-conditional models: the share of samples that a k-NN vote among
   * the training digits labels as the class they were drawn for (null when
   * the samples have no labels). Read next to Reference.heldOutClassAccuracy.
   */
  classAccuracy: number | null;
}

/** The reference side of the comparison, computed once per held-out/training split. */
export interface Reference {
  heldOut: LabeledRows;
  train: LabeledRows;
  /** Nearest-training-image distance of each held-out digit, ascending. */
  heldOutNnSorted: Float64Array;
  heldOutNn: DistanceSummary;
  /** The same k-NN vote applied to the held-out real digits: how often the classifier itself is right. */
  heldOutClassAccuracy: number;
}

export function summarize(values: Float64Array): DistanceSummary {
  const sorted = values.slice().sort();
  const n = sorted.length;
  let sum = 0;
  for (const v of sorted) sum += v;
  const median = n % 2 ? sorted[(n - 1) / 2] : (sorted[n / 2 - 1] + sorted[n / 2]) / 2;
  return { mean: sum / n, median, min: sorted[0] };
}

/** Value below which a fraction q of the sorted values lie (linear interpolation, as numpy's default). */
export function quantile(sorted: Float64Array, q: number): number {
  const position = (sorted.length - 1) * q;
  const lo = Math.floor(position);
  const hi = Math.min(sorted.length - 1, lo + 1);
  return sorted[lo] + (sorted[hi] - sorted[lo]) * (position - lo);
}

/** L2 distance of each query to its nearest reference row. */
function nearestDistances(near: KNearest): Float64Array {
  return Float64Array.from({ length: near.indices.length / near.k }, (_, i) => Math.sqrt(near.squared[i * near.k]));
}

// One pass over the (sample, training digit) pairs serves both the copy
// check (the nearest) and the class vote (the k nearest).
export function buildReference(heldOut: LabeledRows, train: LabeledRows, k = 3): Reference {
  const near = kNearest(heldOut, train, k);
  const nn = nearestDistances(near);
  const heldOutClassAccuracy = agreement(votedLabels(near, train.labels), heldOut.labels);
  return { heldOut, train, heldOutNnSorted: nn.slice().sort(), heldOutNn: summarize(nn), heldOutClassAccuracy };
}

/** `generated.labels`: the class each sample was drawn for, if the model is class-conditional. */
export function measureSamples(generated: Rows & { labels?: ArrayLike<number> | null }, reference: Reference, k = 3): SampleMetrics {
  const { precision, recall } = precisionRecall(reference.heldOut, generated, k);
  const near = kNearest(generated, reference.train, k);
  const nn = nearestDistances(near);
  const threshold = quantile(reference.heldOutNnSorted, 0.01);
  let below = 0;
  for (const v of nn) if (v < threshold) below++;
  const accuracy = generated.labels ? agreement(votedLabels(near, reference.train.labels), generated.labels) : null;
  return { precision, recall, k, nnToTrain: summarize(nn), belowHeldOutP1: below / nn.length, classAccuracy: accuracy };
}
