// TorchGenerator against torch.randn reference draws (torch 2.13, CPU).
import '../src/node/host.js';
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { TorchGenerator, useNormalFillKernel } from '../src/core/rng/torch.js';
import type { NormalFillKernel } from '../src/core/rng/torch.js';
import { loadAddon, nativeAvailable } from '../src/node/native.js';

// randn's normal_fill: the JavaScript one, and the Node addon's (which
// loading the addon installs for every generator) where it is built.
const nativeFill: NormalFillKernel | null = nativeAvailable()
  ? (words, index, out) => loadAddon().torchNormalFill!(words, index, out)
  : null;
const fills: [string, NormalFillKernel | null][] = [['JavaScript', null]];
if (nativeFill) fills.push(['native', nativeFill]);

interface Draw {
  seed: number;
  shape: number[];
  first: number[];
  second: number[];
}

const fixture = JSON.parse(
  readFileSync(new URL('../../test/fixtures/rng/torch_randn.json', import.meta.url), 'utf8'),
) as { draws: Draw[] };

/** Index of the first element that differs bit for bit (-0 vs +0 included), or -1. */
function firstMismatch(got: Float32Array, want: number[]): number {
  if (got.length !== want.length) return Math.min(got.length, want.length);
  for (let i = 0; i < got.length; i++) {
    if (!Object.is(got[i], Math.fround(want[i]))) return i;
  }
  return -1;
}

for (const [fillName, fill] of fills) {
  for (const d of fixture.draws) {
    const n = d.shape.reduce((a, b) => a * b, 1);
    test(`randn (${fillName}) seed ${d.seed} shape [${d.shape}] matches torch bit for bit, twice in a row`, (t) => {
      useNormalFillKernel(fill);
      t.after(() => useNormalFillKernel(nativeFill));
      // Seeds above 2^53 would not survive JSON as numbers; go through bigint
      // anyway so the test exercises the bigint path.
      const g = new TorchGenerator(BigInt(d.seed));
      const first = g.randn(n);
      const second = g.randn(n);
      const i1 = firstMismatch(first, d.first);
      assert.equal(i1, -1, `first draw differs at ${i1}: ${first[i1]} vs ${d.first[i1]}`);
      const i2 = firstMismatch(second, d.second);
      assert.equal(i2, -1, `second draw differs at ${i2}: ${second[i2]} vs ${d.second[i2]}`);
    });
  }
}

test('the native normal_fill gives the JavaScript one\'s bits and generator state, across twister refills', (t) => {
  if (!nativeFill) return t.skip('no native addon');
  t.after(() => useNormalFillKernel(nativeFill));
  for (const seed of [0, 1, 42, 2 ** 31 + 7, 2 ** 32 - 1]) {
    const js = new TorchGenerator(seed);
    const native = new TorchGenerator(seed);
    // sizes around a block (16), the twister's 624 words and a training batch; a scalar draw in between
    for (const n of [16, 17, 31, 623, 624, 625, 1249, 3, 50176, 16]) {
      useNormalFillKernel(null);
      const want = js.randn(n);
      useNormalFillKernel(nativeFill);
      const got = native.randn(n);
      const i = firstMismatch(got, Array.from(want));
      assert.equal(i, -1, `seed ${seed}, n ${n}: differs at ${i}: ${got[i]} vs ${want[i]}`);
    }
    assert.deepEqual(native.getState(), js.getState());
  }
  const words = new Uint32Array(624);
  assert.throws(() => loadAddon().torchNormalFill!(words, 625, new Float32Array(16)), /index in \[0, 624\]/);
  assert.throws(() => loadAddon().torchNormalFill!(words, 0, new Float32Array(15)), /16 outputs or more/);
  assert.throws(() => loadAddon().torchNormalFill!(new Uint32Array(10), 0, new Float32Array(16)), /624 words/);
});

test('number and bigint seeds agree; only the low 32 bits seed mt19937', () => {
  const a = new TorchGenerator(1099511627779).randn(21);
  const b = new TorchGenerator(1099511627779n).randn(21);
  const c = new TorchGenerator(1099511627779 % 2 ** 32).randn(21);
  assert.deepEqual(a, b);
  assert.deepEqual(a, c);
  assert.equal(new TorchGenerator(-1).initialSeed(), 2n ** 64n - 1n);
});

test('getState / setState resumes mid-stream, including the cached scalar normal', () => {
  const g = new TorchGenerator(1234);
  g.randn(5); // odd count on the scalar path leaves a cached value
  g.randn(37);
  const saved = JSON.parse(JSON.stringify(g.getState()));
  assert.notEqual(saved.nextDoubleNormal, null);
  const expected = [g.randn(3), g.randn(40), g.randn(1)];

  const h = new TorchGenerator(0);
  h.setState(saved);
  assert.deepEqual([h.randn(3), h.randn(40), h.randn(1)], expected);
  assert.equal(h.initialSeed(), 1234n);
});

test('bad seeds, sizes and states are rejected', () => {
  assert.throws(() => new TorchGenerator(1.5), RangeError);
  assert.throws(() => new TorchGenerator(2n ** 64n), RangeError);
  assert.throws(() => new TorchGenerator(-(2n ** 63n) - 1n), RangeError);
  const g = new TorchGenerator(0);
  assert.throws(() => g.randn(-1), RangeError);
  assert.throws(() => g.randn(2.5), RangeError);
  assert.equal(g.randn(0).length, 0);
  const state = g.getState();
  assert.throws(() => g.setState({ ...state, mt19937: { ...state.mt19937, index: 625 } }), RangeError);
  assert.throws(() => g.setState({ ...state, mt19937: { state: [1, 2], index: 0 } }), RangeError);
  assert.throws(() => g.setState({ ...state, seed: 'x' }), RangeError);
});
