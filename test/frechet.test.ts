// The Fréchet distance of `marble eval` (src/eval/frechet.ts) and the
// symmetric eigen-decomposition under it: against numpy/scipy references
// (test/fixtures/frechet/cases.json, made by tools/make_frechet_fixture.py)
// and the properties a distance must have.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';

import { InputError } from '../src/index.js';
import { frechetDistance, frechetDistanceOfSets, gaussianOf } from '../src/eval/frechet.js';
import { sqrtPsd, symmetricEigen } from '../src/eval/symmetric_eigen.js';
import { fixturePath } from './helpers.js';

interface Case {
  name: string;
  d: number;
  x: number[];
  y: number[];
  fd: number;
}

const set = (values: number[], d: number) => ({ data: Float64Array.from(values), n: values.length / d, d });

/** Seeded values in [-0.5, 0.5) (a linear congruential generator; only needs to be fixed). */
function values(count: number, seed: number): number[] {
  let s = seed;
  return Array.from({ length: count }, () => {
    s = (s * 16807) % 2147483647;
    return s / 2147483647 - 0.5;
  });
}

test('Fréchet distance: equals scipy (sqrtm of S1 S2) on the fixture cases', async () => {
  const { cases } = JSON.parse(await readFile(fixturePath('frechet/cases.json'), 'utf8')) as { cases: Case[] };
  assert.equal(cases.length, 4);
  for (const c of cases) {
    const fd = frechetDistanceOfSets(set(c.x, c.d), set(c.y, c.d));
    assert.ok(Math.abs(fd - c.fd) <= 1e-9 * c.fd, `${c.name}: ${fd} vs scipy ${c.fd}`);
  }
});

test('Fréchet distance: zero from a set to itself, symmetric, and the mean term alone for a shifted copy', () => {
  const d = 12;
  const x = set(values(80 * d, 7), d);
  const y = set(values(95 * d, 11).map((v) => 2 * v * v), d);
  assert.ok(Math.abs(frechetDistanceOfSets(x, x)) <= 1e-9, `${frechetDistanceOfSets(x, x)}`);
  const xy = frechetDistanceOfSets(x, y);
  const yx = frechetDistanceOfSets(y, x);
  assert.ok(xy > 0.1);
  assert.ok(Math.abs(xy - yx) <= 1e-9 * xy, `${xy} vs ${yx}`);
  // a copy moved by a vector v has the same covariance: FD = |v|^2
  const shifted = set(Array.from(x.data, (v, i) => v + (i % d) * 0.1), d);
  const v2 = Array.from({ length: d }, (_, k) => (k * 0.1) ** 2).reduce((a, b) => a + b);
  assert.ok(Math.abs(frechetDistanceOfSets(x, shifted) - v2) <= 1e-9, `${frechetDistanceOfSets(x, shifted)} vs ${v2}`);
});

test('Fréchet distance: closed form for diagonal covariances; mismatched dimensions refused', () => {
  // N(0, diag(a)) vs N(m, diag(b)): |m|^2 + sum (sqrt a - sqrt b)^2
  const d = 3;
  const g1 = { mean: new Float64Array(d), covariance: Float64Array.from([4, 0, 0, 0, 1, 0, 0, 0, 9]), d, n: 10 };
  const g2 = { mean: Float64Array.from([1, 2, 0]), covariance: Float64Array.from([1, 0, 0, 0, 1, 0, 0, 0, 0]), d, n: 10 };
  assert.ok(Math.abs(frechetDistance(g1, g2) - (5 + 1 + 0 + 9)) <= 1e-12);
  assert.throws(() => frechetDistance(g1, { ...g2, d: 2 }), InputError);
  assert.throws(() => gaussianOf(set([1, 2, 3], 3)), InputError); // one vector: no covariance
});

test('covariances divide by n - 1, as numpy.cov does', () => {
  const g = gaussianOf(set([1, 10, 3, 14, 5, 12], 2)); // columns (1, 3, 5) and (10, 14, 12)
  assert.deepEqual([...g.mean], [3, 12]);
  assert.deepEqual([...g.covariance], [4, 2, 2, 4]);
});

test('symmetric eigen-decomposition: A V = V diag(lambda), V orthonormal, eigenvalues ascending; PSD square root squares back', () => {
  const n = 20;
  const b = values(n * n, 3);
  const a = new Float64Array(n * n);
  // B B^T: symmetric positive semi-definite, with rank 20
  for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) for (let k = 0; k < n; k++) a[i * n + j] += b[i * n + k] * b[j * n + k];
  const { values: lambda, vectors } = symmetricEigen(a, n);
  for (let i = 1; i < n; i++) assert.ok(lambda[i - 1] <= lambda[i]);
  let worst = 0;
  for (let i = 0; i < n; i++)
    for (let j = 0; j < n; j++) {
      let av = 0;
      let vv = 0;
      for (let k = 0; k < n; k++) {
        av += a[i * n + k] * vectors[k * n + j];
        vv += vectors[k * n + i] * vectors[k * n + j];
      }
      worst = Math.max(worst, Math.abs(av - lambda[j] * vectors[i * n + j]), Math.abs(vv - (i === j ? 1 : 0)));
    }
  assert.ok(worst < 1e-12, `residual ${worst}`);
  const root = sqrtPsd(a, n);
  let back = 0;
  for (let i = 0; i < n; i++)
    for (let j = 0; j < n; j++) {
      let s = 0;
      for (let k = 0; k < n; k++) s += root[i * n + k] * root[k * n + j];
      back = Math.max(back, Math.abs(s - a[i * n + j]));
    }
  assert.ok(back < 1e-12, `sqrt squared differs by ${back}`);
  assert.throws(() => symmetricEigen([1, 2, 3, 4], 2), InputError); // not symmetric
  assert.throws(() => symmetricEigen([1, NaN, NaN, 1], 2), InputError);
});
