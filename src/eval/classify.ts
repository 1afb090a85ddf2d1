// Does a class-conditional model draw the class it was asked for? Each
// sample is labelled by a k-nearest-neighbour vote among the labelled
// training digits (pixel space, the same exact distances as the other
// metrics), and the share whose vote matches the requested class is the
// model's class accuracy. The same classifier applied to the held-out real
// digits says how far it can be trusted (k-NN in pixel space reads MNIST
// correctly about 95% of the time), so the two are read together.
import { InputError } from '../errors.js';
import { forEachPair } from './distance.js';
import type { Rows } from './distance.js';

/**
 * The k-NN label of each query row: the label most of its k nearest
 * reference rows carry; on a tie, the tied label with the nearest member.
 */
export function knnLabels(queries: Rows, reference: Rows, referenceLabels: ArrayLike<number>, k = 3): Int32Array {
  if (!Number.isInteger(k) || k < 1) throw new InputError(`k must be a positive integer, got ${k}`);
  if (referenceLabels.length !== reference.n) throw new InputError(`${referenceLabels.length} labels for ${reference.n} reference rows`);
  if (reference.n < k) throw new InputError(`k = ${k} neighbours need at least ${k} reference rows, got ${reference.n}`);
  // per query: its k nearest so far, ascending by distance
  const bestD = new Float64Array(queries.n * k).fill(Infinity);
  const bestJ = new Int32Array(queries.n * k).fill(-1);
  forEachPair(queries, reference, (i, j, d2) => {
    const base = i * k;
    if (!(d2 < bestD[base + k - 1])) return;
    let p = base + k - 1;
    while (p > base && bestD[p - 1] > d2) {
      bestD[p] = bestD[p - 1];
      bestJ[p] = bestJ[p - 1];
      p--;
    }
    bestD[p] = d2;
    bestJ[p] = j;
  });
  const out = new Int32Array(queries.n);
  for (let i = 0; i < queries.n; i++) {
    const labels = Array.from({ length: k }, (_, r) => referenceLabels[bestJ[i * k + r]]);
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

/** Share of rows whose k-NN label equals the wanted label. */
export function classAccuracy(queries: Rows, wanted: ArrayLike<number>, reference: Rows, referenceLabels: ArrayLike<number>, k = 3): number {
  if (wanted.length !== queries.n) throw new InputError(`${wanted.length} wanted labels for ${queries.n} rows`);
  const voted = knnLabels(queries, reference, referenceLabels, k);
  let right = 0;
  for (let i = 0; i < voted.length; i++) if (voted[i] === wanted[i]) right++;
  return right / queries.n;
}
