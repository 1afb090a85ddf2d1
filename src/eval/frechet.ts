// The Fréchet distance between two sets of feature vectors, each summarised
// by a Gaussian (mean and covariance): the FID formula (Heusel et al. 2017)
// applied to the MNIST classifier's features instead of Inception's.
//
//   FD = |mu1 - mu2|^2 + tr(S1 + S2 - 2 (S1^1/2 S2 S1^1/2)^1/2)
//
// (S1^1/2 S2 S1^1/2 has the eigenvalues of S1 S2, so this is the usual
// tr (S1 S2)^1/2, but as the square root of a symmetric PSD matrix it is
// computed by two symmetric eigen-decompositions, in float64, with no
// complex parts to discard as scipy.linalg.sqrtm(S1 @ S2) has.)
//
// Covariances divide by n - 1, as numpy.cov and pytorch-fid do. FD depends
// on the set sizes (a finite-sample bias), so it is only comparable between
// sets of equal sizes: `marble eval` reports it next to the same distance
// between two sets of real digits of the same sizes.
import { InputError } from '../core/errors.js';
import { sqrtPsd, symmetricEigen } from './symmetric_eigen.js';

/** n vectors of d values, row-major (float32 features, or float64). */
export interface FeatureSet {
  data: ArrayLike<number>;
  n: number;
  d: number;
}

export interface Gaussian {
  /** Length d. */
  mean: Float64Array;
  /** Row-major [d, d], exactly symmetric. */
  covariance: Float64Array;
  d: number;
  /** How many vectors it was estimated from. */
  n: number;
}

/** Mean and (n - 1)-normalised covariance of the rows, in float64, two-pass (centred products). */
export function gaussianOf(set: FeatureSet): Gaussian {
  const { data, n, d } = set;
  if (n < 2) throw new InputError(`a covariance needs at least 2 vectors, got ${n}`);
  if (data.length !== n * d) throw new InputError(`${data.length} values are not ${n} vectors of ${d}`);
  const mean = new Float64Array(d);
  for (let i = 0; i < n; i++) for (let k = 0; k < d; k++) mean[k] += data[i * d + k];
  for (let k = 0; k < d; k++) mean[k] /= n;
  const covariance = new Float64Array(d * d);
  const centred = new Float64Array(d);
  for (let i = 0; i < n; i++) {
    for (let k = 0; k < d; k++) centred[k] = data[i * d + k] - mean[k];
    for (let a = 0; a < d; a++) {
      const ca = centred[a];
      if (ca === 0) continue; // ReLU features are often exactly zero
      for (let b = a; b < d; b++) covariance[a * d + b] += ca * centred[b];
    }
  }
  for (let a = 0; a < d; a++)
    for (let b = a; b < d; b++) {
      const c = covariance[a * d + b] / (n - 1);
      covariance[a * d + b] = c;
      covariance[b * d + a] = c;
    }
  for (const v of mean) if (!Number.isFinite(v)) throw new InputError('the feature vectors hold a NaN or infinite value');
  return { mean, covariance, d, n };
}

/** The Fréchet distance between two Gaussians (>= 0; a rounding-level negative result is returned as 0). */
export function frechetDistance(g1: Gaussian, g2: Gaussian): number {
  if (g1.d !== g2.d) throw new InputError(`the two feature sets have different dimensions (${g1.d} vs ${g2.d})`);
  const { d } = g1;
  let meanTerm = 0;
  for (let k = 0; k < d; k++) meanTerm += (g1.mean[k] - g2.mean[k]) ** 2;
  let traces = 0;
  for (let k = 0; k < d; k++) traces += g1.covariance[k * d + k] + g2.covariance[k * d + k];
  // M = S1^1/2 S2 S1^1/2, symmetric in exact arithmetic; symmetrised to undo rounding
  const r = sqrtPsd(g1.covariance, d);
  const rs = multiply(r, g2.covariance, d);
  const m = multiply(rs, r, d);
  for (let i = 0; i < d; i++)
    for (let j = i + 1; j < d; j++) {
      const s = (m[i * d + j] + m[j * d + i]) / 2;
      m[i * d + j] = s;
      m[j * d + i] = s;
    }
  let traceRoot = 0;
  for (const lambda of symmetricEigen(m, d).values) traceRoot += Math.sqrt(Math.max(0, lambda));
  return Math.max(0, meanTerm + traces - 2 * traceRoot);
}

/** The Fréchet distance between the Gaussians of two sets of vectors. */
export function frechetDistanceOfSets(a: FeatureSet, b: FeatureSet): number {
  return frechetDistance(gaussianOf(a), gaussianOf(b));
}

/** [d, d] row-major product a b, float64. */
function multiply(a: Float64Array, b: Float64Array, d: number): Float64Array {
  const out = new Float64Array(d * d);
  for (let i = 0; i < d; i++)
    for (let k = 0; k < d; k++) {
      const aik = a[i * d + k];
      if (aik === 0) continue;
      for (let j = 0; j < d; j++) out[i * d + j] += aik * b[k * d + j];
    }
  return out;
}
