// wasm32 linear memory reaches 4 GiB, and an engine allocation up to 3.75 GiB
// is allowed (a cifar10-32 training step at batch 16 needs a 2.2 GiB arena).
// Addresses past 2 GiB come back to JS as negative i32s unless read as
// unsigned (wasm_core.ts's exportsOf does); the allocator sizes memory in
// 64 bits (4 GiB is one past a 32-bit size_t).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';

import { exportsOf } from '../src/backend/wasm_core.js';
import { wasmPath } from '../src/backend/wasm.js';

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
