// wasm32 linear memory reaches 4 GiB, and an engine allocation up to 3.75 GiB
// is allowed (a cifar10-32 training step at batch 16 needs a 2.2 GiB arena).
// Addresses past 2 GiB come back to JS as negative i32s unless read as
// unsigned (wasm_core.ts's exportsOf does); the allocator sizes memory in
// 64 bits (4 GiB is one past a 32-bit size_t).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';

import { createUNet } from '../src/index.js';
import { nativeAvailable } from '../src/node/native.js';
import { exportsOf } from '../src/core/backend/wasm_core.js';
import { maxAbs, maxAbsDiff } from './helpers.js';
import { wasmPath } from '../src/node/wasm.js';

test('wasm: allocations past 2 GiB, addresses above 2 GiB read and written from JS, oversize requests refused', () => {
  const ex = exportsOf(new WebAssembly.Instance(new WebAssembly.Module(readFileSync(wasmPath())), {}));
  const GiB = 2 ** 30;
  const big = ex.mb_wasm_alloc(2.25 * GiB); // grows memory past 2 GiB (pages stay untouched, so no RSS)
  assert.ok(big > 0, 'a 2.25 GiB block');
  const above = ex.mb_wasm_alloc(1 << 20); // lands after it
  assert.ok(above > 2 * GiB, `an address above 2 GiB, read as unsigned (got ${above})`);
  const view = new Float32Array(ex.memory.buffer, above, 1 << 18);
  view[0] = 1.5;
  view[view.length - 1] = -2.5;
  const bigEnd = new Float32Array(ex.memory.buffer, big + 2.25 * GiB - 4, 1);
  bigEnd[0] = 3.5;
  assert.deepEqual([view[0], view[view.length - 1], bigEnd[0]], [1.5, -2.5, 3.5]);
  assert.equal(ex.mb_wasm_alloc(1.8 * GiB), 0, 'what is left of 4 GiB cannot hold another 1.8 GiB');
  assert.equal(ex.mb_wasm_alloc(3.9 * GiB), 0, 'over the largest single allocation');
  ex.mb_wasm_free(above);
  ex.mb_wasm_free(big);
  // freed at the end of the heap, the space serves the next large request again
  const again = ex.mb_wasm_alloc(2.5 * GiB);
  assert.ok(again > 0 && again <= big, 'the freed space is reused');
  ex.mb_wasm_free(again);
});

// The 32-bit guard bounds the attention backward's T x T scores only where
// they exist: in training, at the finest level with attention. A forward at
// 128x128 (16384 pixels, whose T x T the guard used to count for any model)
// runs in wasm.
test('wasm: a 128x128 forward runs (the score guard is for training attention) and matches the cpu backend', async (t) => {
  if (!nativeAvailable()) return t.skip('no native addon to compare with');
  const config = {
    block_out_channels: [16, 32],
    down_block_types: ['DownBlock2D', 'DownBlock2D'],
    up_block_types: ['UpBlock2D', 'UpBlock2D'],
    layers_per_block: 1,
    norm_num_groups: 8,
    sample_size: 128,
  };
  const wasm = await createUNet(config, { backend: 'wasm', threads: 1, seed: 9 });
  const cpu = await createUNet(config, { backend: 'cpu', seed: 9 });
  try {
    const x = new Float32Array(3 * 128 * 128).map((_, i) => Math.sin(i * 0.01));
    const [a, b] = [await wasm.forward(x, [1, 3, 128, 128], 321), await cpu.forward(x, [1, 3, 128, 128], 321)];
    const diff = maxAbsDiff(a, b);
    const scale = maxAbs(b);
    assert.ok(diff <= 1e-5 * scale, `max |wasm - cpu| ${diff} (max |cpu| ${scale})`);
  } finally {
    wasm.dispose();
    cpu.dispose();
  }
});
