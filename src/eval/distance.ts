// Exact squared Euclidean distances between sets of vectors (images
// flattened to rows), the one primitive the sample-quality metrics need.
//
// Brute force on purpose: the sets are small (N up to a few thousand, D =
// 1024 for 32x32 gray digits), so an exact answer costs seconds, and an
// approximate index would add error to metrics whose differences we want to
// read. Each difference is squared and summed in float64 (JS numbers), which
// keeps the result exact to ~1e-15 relative; the |a|^2 + |b|^2 - 2ab
// expansion would be no faster here and loses digits to cancellation when
// two images are close, which is exactly the copying case we look for.
import { InputError } from '../core/errors.js';

/** n vectors of d float32 values, one after another ([N, D] row-major). */
export interface Rows {
  data: Float32Array;
  n: number;
  d: number;
}

/** Views a [N, D] Float32Array as rows, checking that the length fits. */
export function rows(data: Float32Array, d: number): Rows {
  if (!Number.isInteger(d) || d < 1) throw new InputError(`row length must be a positive integer, got ${d}`);
  if (data.length % d !== 0) throw new InputError(`${data.length} values do not split into rows of ${d}`);
  return { data, n: data.length / d, d };
}

function checkSameDim(a: Rows, b: Rows): void {
  if (a.d !== b.d) throw new InputError(`the two sets have rows of different length (${a.d} vs ${b.d})`);
}

/**
 * Squared L2 distance between row i of a and row j of b. One running sum per
 * pair, in index order: the tile kernel below sums the same way, so a pair
 * gets bit-identical distances whichever path computes it.
 */
export function squaredDistance(a: Rows, i: number, b: Rows, j: number): number {
  const d = a.d;
  const x = a.data;
  const y = b.data;
  const xi = i * d;
  const yj = j * d;
  let s = 0;
  for (let k = 0; k < d; k++) {
    const e = x[xi + k] - y[yj + k];
    s += e * e;
  }
  return s;
}

/**
 * 2 rows of a against 4 rows of b at once: each loaded value serves 4 (or 2)
 * pairs, which is twice the throughput of one pair at a time in V8 (about
 * 1e9 pairs-by-element a second on one core). Writes the 8 sums to out,
 * row-major [2][4].
 */
function tile2x4(x: Float32Array, xa: number, y: Float32Array, y0: number, d: number, out: Float64Array): void {
  const xb = xa + d;
  const y1 = y0 + d;
  const y2 = y1 + d;
  const y3 = y2 + d;
  let a0 = 0, a1 = 0, a2 = 0, a3 = 0, b0 = 0, b1 = 0, b2 = 0, b3 = 0;
  for (let k = 0; k < d; k++) {
    const p = x[xa + k];
    const q = x[xb + k];
    const c0 = y[y0 + k];
    const c1 = y[y1 + k];
    const c2 = y[y2 + k];
    const c3 = y[y3 + k];
    let e = p - c0;
    a0 += e * e;
    e = p - c1;
    a1 += e * e;
    e = p - c2;
    a2 += e * e;
    e = p - c3;
    a3 += e * e;
    e = q - c0;
    b0 += e * e;
    e = q - c1;
    b1 += e * e;
    e = q - c2;
    b2 += e * e;
    e = q - c3;
    b3 += e * e;
  }
  out[0] = a0;
  out[1] = a1;
  out[2] = a2;
  out[3] = a3;
  out[4] = b0;
  out[5] = b1;
  out[6] = b2;
  out[7] = b3;
}

/**
 * Rows of b are visited in blocks small enough (BLOCK rows x D floats, 256
 * KB at D = 1024) to stay in cache while every row of a passes over them;
 * without blocking, each row of a would stream all of b from memory.
 */
const BLOCK = 64;

export type PairFilter = 'all' | 'skip-self' | 'upper';

/**
 * Calls visit(i, j, squaredDistance) for pairs (row i of a, row j of b),
 * blocked over b. `filter` (for a === b): 'skip-self' leaves out (i, i);
 * 'upper' visits each unordered pair once, as i < j, and skips the work of
 * the other half.
 */
export function forEachPair(a: Rows, b: Rows, visit: (i: number, j: number, d2: number) => void, filter: PairFilter = 'all'): void {
  checkSameDim(a, b);
  if (filter !== 'all' && a !== b) throw new InputError(`pair filter '${filter}' needs the same set on both sides`);
  const keep = filter === 'all' ? () => true : filter === 'skip-self' ? (i: number, j: number) => i !== j : (i: number, j: number) => i < j;
  const { d } = a;
  const sums = new Float64Array(8);
  for (let j0 = 0; j0 < b.n; j0 += BLOCK) {
    const j1 = Math.min(b.n, j0 + BLOCK);
    const j1Tiled = j0 + Math.floor((j1 - j0) / 4) * 4;
    for (let i = 0; i < a.n; i += 2) {
      if (filter === 'upper' && j1 <= i) continue; // the whole block lies at or below the diagonal
      const pair = i + 1 < a.n;
      let j = j0;
      if (pair)
        for (; j < j1Tiled; j += 4) {
          if (filter === 'upper' && j + 3 <= i) continue;
          tile2x4(a.data, i * d, b.data, j * d, d, sums);
          for (let r = 0; r < 2; r++)
            for (let c = 0; c < 4; c++) if (keep(i + r, j + c)) visit(i + r, j + c, sums[r * 4 + c]);
        }
      // the ragged edges: the last odd row of a, the last < 4 rows of the block
      for (let ii = i; ii < Math.min(i + 2, a.n); ii++)
        for (let jj = pair ? j : j0; jj < j1; jj++) if (keep(ii, jj)) visit(ii, jj, squaredDistance(a, ii, b, jj));
    }
  }
}

/** The full [a.n, b.n] matrix of squared distances (row-major, float64). */
export function squaredDistanceMatrix(a: Rows, b: Rows): Float64Array {
  checkSameDim(a, b);
  const out = new Float64Array(a.n * b.n);
  forEachPair(a, b, (i, j, d2) => {
    out[i * b.n + j] = d2;
  });
  return out;
}

/**
 * The k-th smallest squared distance from each row of `set` to the other
 * rows of the same set (itself excluded): the radius of each point's k-NN
 * ball. Computes each pair once (the matrix is symmetric) and keeps only the
 * k best per row, so memory is O(n k), not O(n^2).
 */
export function kthNeighborSquaredDistances(set: Rows, k: number): Float64Array {
  if (!Number.isInteger(k) || k < 1) throw new InputError(`k must be a positive integer, got ${k}`);
  if (set.n <= k) throw new InputError(`a set needs more than k = ${k} rows for k-nearest-neighbour radii, got ${set.n}`);
  // best[i*k .. i*k+k) holds row i's k smallest distances so far, ascending.
  const best = new Float64Array(set.n * k).fill(Infinity);
  const offer = (i: number, d2: number) => {
    const base = i * k;
    if (!(d2 < best[base + k - 1])) return;
    let p = base + k - 1;
    while (p > base && best[p - 1] > d2) {
      best[p] = best[p - 1];
      p--;
    }
    best[p] = d2;
  };
  forEachPair(
    set,
    set,
    (i, j, d2) => {
      offer(i, d2);
      offer(j, d2);
    },
    'upper',
  );
  const out = new Float64Array(set.n);
  for (let i = 0; i < set.n; i++) out[i] = best[i * k + k - 1];
  return out;
}

export interface NearestNeighbors {
  /** L2 distance from each query row to its nearest reference row. */
  distances: Float64Array;
  /** Index of that reference row (the first one on ties). */
  indices: Int32Array;
}

/** For each row of `queries`, its nearest row of `reference` and the L2 distance to it. */
export function nearestNeighbors(queries: Rows, reference: Rows): NearestNeighbors {
  checkSameDim(queries, reference);
  if (reference.n < 1) throw new InputError('the reference set is empty');
  const best = new Float64Array(queries.n).fill(Infinity);
  const indices = new Int32Array(queries.n).fill(-1);
  forEachPair(queries, reference, (i, j, d2) => {
    if (d2 < best[i]) {
      best[i] = d2;
      indices[i] = j;
    }
  });
  return { distances: best.map(Math.sqrt), indices };
}

export interface KNearest {
  k: number;
  /** Per query row, the squared distances to its k nearest reference rows, ascending ([n, k]). */
  squared: Float64Array;
  /** Their reference row indices ([n, k]; the earlier row first on ties). */
  indices: Int32Array;
}

/** For each row of `queries`, its k nearest rows of `reference`, in one pass over the pairs. */
export function kNearest(queries: Rows, reference: Rows, k: number): KNearest {
  checkSameDim(queries, reference);
  if (!Number.isInteger(k) || k < 1) throw new InputError(`k must be a positive integer, got ${k}`);
  if (reference.n < k) throw new InputError(`k = ${k} neighbours need at least ${k} reference rows, got ${reference.n}`);
  const squared = new Float64Array(queries.n * k).fill(Infinity);
  const indices = new Int32Array(queries.n * k).fill(-1);
  forEachPair(queries, reference, (i, j, d2) => {
    const base = i * k;
    if (!(d2 < squared[base + k - 1])) return;
    let p = base + k - 1;
    while (p > base && squared[p - 1] > d2) {
      squared[p] = squared[p - 1];
      indices[p] = indices[p - 1];
      p--;
    }
    squared[p] = d2;
    indices[p] = j;
  });
  return { k, squared, indices };
}
