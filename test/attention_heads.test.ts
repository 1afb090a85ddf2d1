// The small-head attention kernels at the head sizes no other fixture has:
// 12 (three 4-lane vectors per row) and 16 (two 8-lane vectors on avx2 and
// avx512, four on 4-lane builds and wasm), 4 heads over 49 tokens each.
// References from diffusers (tools/make_head_dim_fixtures.py).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { loadUNet } from '../src/index.js';
import { backendsUnderTest, fixturePath, forwardReference, maxAbs, maxAbsDiff } from './helpers.js';

const BACKENDS = await backendsUnderTest();

for (const { label: backend, options } of BACKENDS) {
  for (const name of ['heads-12', 'heads-16']) {
    test(`${name} on ${backend} matches diffusers (out and every intermediate)`, async () => {
      const ref = await forwardReference(name);
      const unet = await loadUNet(fixturePath(`unet/${name}`), options);
      try {
        const out = await unet.forward(ref.sample, ref.shape, ref.timesteps, ref.classLabels, { capture: true });
        const checked: string[] = [];
        const check = (key: string, got: Float32Array) => {
          const expected = ref.tensors.get(key)!;
          const tolerance = 1e-4 * Math.max(1, maxAbs(expected.data));
          const diff = maxAbsDiff(got, expected.data);
          assert.ok(diff <= tolerance, `${name}/${backend}: ${key} differs from diffusers by ${diff} (tolerance ${tolerance})`);
          checked.push(key);
        };
        for (const captured of unet.captures()) if (ref.tensors.has(captured.name)) check(captured.name, captured.data);
        check('out', out);
        assert.ok(checked.includes('mid') && checked.includes('down.1') && checked.includes('up.0'), `${name}: the attention blocks were compared`);
      } finally {
        unet.dispose();
      }
    });
  }
}
