// Improved precision and recall (Kynkäänniemi et al., "Improved Precision
// and Recall Metric for Assessing Generative Models", NeurIPS 2019).
//
// Each set's manifold is estimated as the union of balls around its points,
// each ball's radius being the distance to that point's k-th nearest
// neighbour in the same set (k = 3 in the paper). Then:
//
//   precision = the fraction of generated points inside the real manifold
//               (are the samples realistic?)
//   recall    = the fraction of real points inside the generated manifold
//               (do the samples cover the data, every mode of it?)
//
// As in the authors' code, "inside" means distance <= radius, and the
// k-th neighbour excludes the point itself. The paper computes distances in
// a VGG-16 feature space; here they are in pixel space, which is
// meaningful for aligned, centred MNIST digits and needs no network. The
// numbers are therefore comparable between marble models, not with papers.
import { InputError } from '../core/errors.js';
import { kthNeighborSquaredDistances, squaredDistanceMatrix } from './distance.js';
import type { Rows } from './distance.js';

export interface PrecisionRecall {
  precision: number;
  recall: number;
  k: number;
}

/** Precision and recall of `generated` against `real` (rows of the same length). */
export function precisionRecall(real: Rows, generated: Rows, k = 3): PrecisionRecall {
  if (real.d !== generated.d) throw new InputError(`real and generated rows differ in length (${real.d} vs ${generated.d})`);
  const realRadii = kthNeighborSquaredDistances(real, k);
  const generatedRadii = kthNeighborSquaredDistances(generated, k);
  // One cross matrix serves both directions (n_gen x n_real doubles: 8 MB at 1000 x 1000).
  const cross = squaredDistanceMatrix(generated, real);
  const nReal = real.n;

  let realistic = 0; // generated points inside some real ball
  const covered = new Uint8Array(nReal); // real points inside some generated ball
  for (let g = 0; g < generated.n; g++) {
    const row = g * nReal;
    let inside = false;
    for (let r = 0; r < nReal; r++) {
      const d2 = cross[row + r];
      if (!inside && d2 <= realRadii[r]) inside = true;
      if (d2 <= generatedRadii[g]) covered[r] = 1;
    }
    if (inside) realistic++;
  }
  let coveredCount = 0;
  for (let r = 0; r < nReal; r++) coveredCount += covered[r];
  return { precision: realistic / generated.n, recall: coveredCount / nReal, k };
}
