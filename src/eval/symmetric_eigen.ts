// Eigenvalues and eigenvectors of a real symmetric matrix, in float64, by
// the cyclic Jacobi method: the one matrix function the Fréchet distance
// needs (square roots of covariance matrices, src/eval/frechet.ts).
//
// Jacobi rather than tridiagonalisation + QL because it is short, needs no
// pivoting decisions, and computes small eigenvalues of a positive
// semi-definite matrix to high relative accuracy, which is what a matrix
// square root of a nearly singular covariance needs. It costs about ten
// sweeps of n^2/2 rotations of O(n) each: 0.1 s for n = 128 in V8.
import { InputError } from '../core/errors.js';

export interface SymmetricEigen {
  /** The n eigenvalues, ascending. */
  values: Float64Array;
  /** Row-major [n, n]; column j is the unit eigenvector of values[j]. */
  vectors: Float64Array;
}

const MAX_SWEEPS = 60;

/** The eigen-decomposition of the symmetric [n, n] row-major matrix `a` (left unchanged). */
export function symmetricEigen(a: ArrayLike<number>, n: number): SymmetricEigen {
  if (!Number.isInteger(n) || n < 1 || a.length !== n * n) throw new InputError(`expected an ${n}x${n} matrix, got ${a.length} values`);
  const m = Float64Array.from(a);
  let norm2 = 0;
  for (let i = 0; i < n; i++)
    for (let j = 0; j < n; j++) {
      const v = m[i * n + j];
      if (!Number.isFinite(v)) throw new InputError(`matrix entry (${i}, ${j}) is ${v}`);
      // symmetric to rounding: a covariance computed in float64 is exactly symmetric
      if (j > i && Math.abs(v - m[j * n + i]) > 1e-12 * (Math.abs(v) + Math.abs(m[j * n + i])) + 1e-300)
        throw new InputError(`matrix is not symmetric at (${i}, ${j}): ${v} vs ${m[j * n + i]}`);
      norm2 += v * v;
    }
  const v = new Float64Array(n * n);
  for (let i = 0; i < n; i++) v[i * n + i] = 1;

  for (let sweep = 0; ; sweep++) {
    let off = 0;
    for (let p = 0; p < n; p++) for (let q = p + 1; q < n; q++) off += m[p * n + q] * m[p * n + q];
    // converged: what is left off the diagonal is below float64 rounding of the whole matrix
    if (off <= 1e-32 * norm2 || off === 0) break;
    if (sweep === MAX_SWEEPS) throw new InputError(`symmetric eigen-decomposition did not converge in ${MAX_SWEEPS} sweeps`);
    for (let p = 0; p < n - 1; p++)
      for (let q = p + 1; q < n; q++) {
        const apq = m[p * n + q];
        if (apq === 0) continue;
        const app = m[p * n + p];
        const aqq = m[q * n + q];
        // The rotation angle phi that zeroes (p, q): cot(2 phi) = theta. t = tan(phi),
        // the smaller root of t^2 + 2 theta t - 1 = 0, so |phi| <= pi/4 (this keeps
        // the method convergent); for huge theta, t ~ 1 / (2 theta) without overflow.
        const theta = (aqq - app) / (2 * apq);
        const t = Math.abs(theta) > 1e150 ? 1 / (2 * theta) : Math.sign(theta || 1) / (Math.abs(theta) + Math.sqrt(theta * theta + 1));
        const c = 1 / Math.sqrt(t * t + 1);
        const s = t * c;
        // m <- J^T m J, J the rotation in the (p, q) plane: columns, then rows
        for (let k = 0; k < n; k++) {
          const mkp = m[k * n + p];
          const mkq = m[k * n + q];
          m[k * n + p] = c * mkp - s * mkq;
          m[k * n + q] = s * mkp + c * mkq;
        }
        for (let k = 0; k < n; k++) {
          const mpk = m[p * n + k];
          const mqk = m[q * n + k];
          m[p * n + k] = c * mpk - s * mqk;
          m[q * n + k] = s * mpk + c * mqk;
        }
        m[p * n + q] = 0; // zero by construction; rounding would leave ~1e-17
        m[q * n + p] = 0;
        for (let k = 0; k < n; k++) {
          const vkp = v[k * n + p];
          const vkq = v[k * n + q];
          v[k * n + p] = c * vkp - s * vkq;
          v[k * n + q] = s * vkp + c * vkq;
        }
      }
  }

  const order = Array.from({ length: n }, (_, i) => i).sort((i, j) => m[i * n + i] - m[j * n + j]);
  const values = new Float64Array(n);
  const vectors = new Float64Array(n * n);
  order.forEach((from, to) => {
    values[to] = m[from * n + from];
    for (let k = 0; k < n; k++) vectors[k * n + to] = v[k * n + from];
  });
  return { values, vectors };
}

/**
 * The symmetric positive semi-definite square root of a covariance-like
 * matrix: V diag(sqrt(max(lambda, 0))) V^T. Eigenvalues below zero can only
 * be rounding (a covariance is PSD), so they are taken as zero.
 */
export function sqrtPsd(a: ArrayLike<number>, n: number): Float64Array {
  const { values, vectors } = symmetricEigen(a, n);
  const roots = values.map((x) => Math.sqrt(Math.max(0, x)));
  const out = new Float64Array(n * n);
  for (let i = 0; i < n; i++)
    for (let j = i; j < n; j++) {
      let s = 0;
      for (let k = 0; k < n; k++) s += vectors[i * n + k] * roots[k] * vectors[j * n + k];
      out[i * n + j] = s;
      out[j * n + i] = s;
    }
  return out;
}
