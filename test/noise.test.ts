// Philox noise: the generator against Random123's known answers, bit-identical
// cpu and wasm, chunking by offset, and the distribution (mean, variance,
// Kolmogorov–Smirnov on 10^6 draws).
import { test } from 'node:test';
import assert from 'node:assert/strict';

import { createBackend } from '../src/index.js';

const cpu = await createBackend('cpu');
const wasm = await createBackend('wasm');

test('Philox4x32-10 matches the Random123 known-answer vectors on cpu and wasm', () => {
  const cases: [number[], number[], number[]][] = [
    [[0, 0, 0, 0], [0, 0], [0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8]],
    [[0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff], [0xffffffff, 0xffffffff], [0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd]],
    [[0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344], [0xa4093822, 0x299f31d0], [0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1]],
  ];
  for (const backend of [cpu, wasm])
    for (const [counter, key, expected] of cases) assert.deepEqual([...backend.philoxBlock(counter, key)], expected, backend.name);
});

test('noise is bit-identical on cpu and wasm, across seeds, draws and offsets', () => {
  for (const [seed, draw, n, offset] of [
    [0n, 0n, 1000, 0],
    [42n, 7n, 4099, 0],
    [2n ** 40n + 3n, 2n ** 33n, 777, 13],
    [2n ** 64n - 1n, 5n, 64, 2 ** 31 + 1],
  ] as [bigint, bigint, number, number][]) {
    const a = cpu.randn(seed, draw, n, offset);
    const b = wasm.randn(seed, draw, n, offset);
    assert.deepEqual(new Uint32Array(a.buffer), new Uint32Array(b.buffer), `seed ${seed} draw ${draw}`);
  }
});

test('a draw read in pieces equals the draw read whole; draws and seeds differ', () => {
  const whole = cpu.randn(9n, 1n, 1001);
  const pieces = [cpu.randn(9n, 1n, 3, 0), cpu.randn(9n, 1n, 500, 3), cpu.randn(9n, 1n, 498, 503)];
  assert.deepEqual(Float32Array.from(pieces.flatMap((p) => [...p])), whole);
  assert.notDeepEqual(cpu.randn(9n, 2n, 16), cpu.randn(9n, 1n, 16));
  assert.notDeepEqual(cpu.randn(10n, 1n, 16), cpu.randn(9n, 1n, 16));
});

// Standard normal CDF via erf (Abramowitz–Stegun 7.1.26 is too coarse for a KS
// test at n = 10^6, so use a series / continued fraction accurate to 1e-12).
function normalCdf(x: number): number {
  const z = Math.abs(x) / Math.SQRT2;
  let erfc: number;
  if (z < 3) {
    // erf by its Taylor series
    let term = z, sum = z;
    for (let n = 1; n < 200; n++) {
      term *= (-z * z) / n;
      const add = term / (2 * n + 1);
      sum += add;
      if (Math.abs(add) < 1e-17) break;
    }
    erfc = 1 - (2 / Math.sqrt(Math.PI)) * sum;
  } else {
    // continued fraction for erfc
    let f = 0;
    for (let n = 60; n >= 1; n--) f = n / 2 / (z + f);
    erfc = Math.exp(-z * z) / Math.sqrt(Math.PI) / (z + f);
  }
  return x >= 0 ? 1 - erfc / 2 : erfc / 2;
}

test('10^6 draws: mean 0, variance 1, and Kolmogorov–Smirnov against N(0, 1)', () => {
  const n = 1_000_000;
  const x = cpu.randn(12345n, 0n, n);
  let mean = 0;
  for (const v of x) mean += v;
  mean /= n;
  let variance = 0;
  for (const v of x) variance += (v - mean) ** 2;
  variance /= n - 1;
  // 5 standard errors: se(mean) = 1e-3, se(variance) = sqrt(2/n) = 1.4e-3
  assert.ok(Math.abs(mean) < 5e-3, `mean ${mean}`);
  assert.ok(Math.abs(variance - 1) < 7e-3, `variance ${variance}`);
  const sorted = Float64Array.from(x).sort();
  let d = 0;
  for (let i = 0; i < n; i++) {
    const cdf = normalCdf(sorted[i]!);
    d = Math.max(d, (i + 1) / n - cdf, cdf - i / n);
  }
  // KS critical value at alpha = 0.001: 1.95 / sqrt(n)
  assert.ok(d < 1.95 / Math.sqrt(n), `KS statistic ${d} (critical ${1.95 / Math.sqrt(n)})`);
});
