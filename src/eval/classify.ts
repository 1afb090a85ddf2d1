// Does a class-conditional model draw the class it was asked for? Each
// sample is labelled by a k-nearest-neighbour vote among the labelled
// training digits (pixel space, the same exact distances as the other
// metrics), and the share whose vote matches the requested class is the
// model's class accuracy. The same classifier applied to the held-out real
// digits says how far it can be trusted (k-NN in pixel space reads MNIST
// correctly about 95% of the time), so the two are read together.
import { InputError } from '../core/errors.js';
import { kNearest } from './distance.js';
import type { KNearest, Rows } from './distance.js';

/**
 * The k-NN label of each query row from its k nearest reference rows: the
 * label most of them carry; on a tie, the tied label with the nearest member.
 */
export function votedLabels(near: KNearest, referenceLabels: ArrayLike<number>): Int32Array {
  const { k } = near;
  const n = near.indices.length / k;
  const out = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    const labels = Array.from({ length: k }, (_, r) => referenceLabels[near.indices[i * k + r]]);
    let winner = labels[0];
    let votes = 0;
    // nearest first, so a tie keeps the label met first
    for (const label of labels) {
      const count = labels.filter((l) => l === label).length;
      if (count > votes) {
        winner = label;
        votes = count;
      }
    }
    out[i] = winner;
  }
  return out;
}

/** The k-NN label of each query row (votedLabels over kNearest). */
export function knnLabels(queries: Rows, reference: Rows, referenceLabels: ArrayLike<number>, k = 3): Int32Array {
  if (referenceLabels.length !== reference.n) throw new InputError(`${referenceLabels.length} labels for ${reference.n} reference rows`);
  return votedLabels(kNearest(queries, reference, k), referenceLabels);
}

/** Share of `voted` labels equal to the `wanted` ones. */
export function agreement(voted: ArrayLike<number>, wanted: ArrayLike<number>): number {
  if (wanted.length !== voted.length) throw new InputError(`${wanted.length} wanted labels for ${voted.length} rows`);
  let right = 0;
  for (let i = 0; i < voted.length; i++) if (voted[i] === wanted[i]) right++;
  return right / voted.length;
}

/** Share of rows whose k-NN label equals the wanted label. */
export function classAccuracy(queries: Rows, wanted: ArrayLike<number>, reference: Rows, referenceLabels: ArrayLike<number>, k = 3): number {
  if (wanted.length !== queries.n) throw new InputError(`${wanted.length} wanted labels for ${queries.n} rows`);
  return agreement(knnLabels(queries, reference, referenceLabels, k), wanted);
}
