// The forward pass against diffusers: every fixture in test/fixtures/unet
// (produced by diffusers 0.40 on torch 2.13 CPU) on the cpu and wasm backends,
// the output and every intermediate (so a regression names its block), and
// cpu against wasm.
import { test } from 'node:test';
import assert from 'node:assert/strict';

import { loadUNet } from '../src/index.js';
import type { BackendName } from '../src/index.js';
import { UNET_FIXTURES, backendsUnderTest, fixturePath, forwardReference as reference, maxAbs, maxAbsDiff } from './helpers.js';

const outputs = new Map<string, Float32Array>();

const BACKENDS = await backendsUnderTest();

for (const { label: backend, options } of BACKENDS) {
  for (const name of UNET_FIXTURES) {
    test(`${name} on ${backend} matches diffusers (out and every intermediate)`, async () => {
      const ref = await reference(name);
      const unet = await loadUNet(fixturePath(`unet/${name}`), options);
      try {
        const out = await unet.forward(ref.sample, ref.shape, ref.timesteps, ref.classLabels, { capture: true });
        outputs.set(`${name}/${backend}`, out);
        const checked: string[] = [];
        const check = (key: string, got: Float32Array, shape: number[]) => {
          const expected = ref.tensors.get(key)!;
          assert.deepEqual(shape, expected.shape, `${key}: shape`);
          const tolerance = 1e-4 * Math.max(1, maxAbs(expected.data));
          const diff = maxAbsDiff(got, expected.data);
          assert.ok(diff <= tolerance, `${name}/${backend}: ${key} differs from diffusers by ${diff} (tolerance ${tolerance})`);
          checked.push(key);
        };
        // Intermediates first, in graph order, so the first failure names the earliest broken block.
        for (const captured of unet.captures()) if (ref.tensors.has(captured.name)) check(captured.name, captured.data, captured.shape);
        check('out', out, [ref.shape[0]!, unet.config.outChannels, ref.shape[2]!, ref.shape[3]!]);
        const expectedKeys = [...ref.tensors.keys()].filter((k) => k !== 'sample');
        assert.deepEqual(checked.sort(), expectedKeys.sort(), 'every reference tensor was compared');
      } finally {
        unet.dispose();
      }
    });
  }
}

test('cpu and both wasm builds agree within 1e-5 relative on every fixture', () => {
  for (const name of UNET_FIXTURES) {
    const cpu = outputs.get(`${name}/cpu`);
    assert.ok(cpu, `${name}: cpu produced an output`);
    for (const wasmLabel of ['wasm', 'wasm-threads-2']) {
      const wasm = outputs.get(`${name}/${wasmLabel}`);
      assert.ok(wasm, `${name}: ${wasmLabel} produced an output`);
      const diff = maxAbsDiff(cpu, wasm);
      const tolerance = 1e-5 * maxAbs(cpu);
      assert.ok(diff <= tolerance, `${name}: cpu vs ${wasmLabel} differ by ${diff} (tolerance ${tolerance})`);
    }
  }
});

test('the threaded wasm build with 2 threads gives the single-threaded build\'s bits', () => {
  // Work is split by index, never by thread, so threads change nothing.
  for (const name of UNET_FIXTURES) {
    const single = outputs.get(`${name}/wasm`)!;
    const threaded = outputs.get(`${name}/wasm-threads-2`)!;
    assert.ok(single && threaded);
    assert.deepEqual(threaded, single, `${name}: threaded vs single-threaded wasm`);
  }
});

test('per-sample timesteps: a batch equals its samples run one by one', async () => {
  const ref = await reference('tiny');
  for (const backend of ['cpu', 'wasm'] as BackendName[]) {
    const unet = await loadUNet(fixturePath('unet/tiny'), { backend });
    try {
      const both = await unet.forward(ref.sample, ref.shape, ref.timesteps);
      const per = ref.sample.length / 2;
      for (let b = 0; b < 2; b++) {
        const one = await unet.forward(ref.sample.slice(b * per, (b + 1) * per), [1, ...ref.shape.slice(1)], ref.timesteps[b]!);
        const diff = maxAbsDiff(one, both.slice((b * one.length), (b + 1) * one.length));
        assert.ok(diff <= 1e-5 * Math.max(1, maxAbs(one)), `${backend}: sample ${b} differs by ${diff}`);
      }
      // One timestep for the whole batch broadcasts.
      const shared = await unet.forward(ref.sample, ref.shape, 17);
      const first = await unet.forward(ref.sample.slice(0, per), [1, ...ref.shape.slice(1)], 17);
      assert.ok(maxAbsDiff(shared.slice(0, first.length), first) <= 1e-5 * Math.max(1, maxAbs(first)));
    } finally {
      unet.dispose();
    }
  }
});

test('non-square inputs run and agree across backends', async () => {
  const outs: Float32Array[] = [];
  for (const backend of ['cpu', 'wasm'] as BackendName[]) {
    const unet = await loadUNet(fixturePath('unet/cifar-slim'), { backend });
    try {
      const shape = [1, 3, 16, 40];
      const sample = new Float32Array(16 * 40 * 3).map((_, i) => Math.sin(i * 0.37));
      const out = await unet.forward(sample, shape, 250);
      assert.equal(out.length, sample.length);
      outs.push(out);
    } finally {
      unet.dispose();
    }
  }
  const diff = maxAbsDiff(outs[0]!, outs[1]!);
  assert.ok(diff <= 1e-5 * Math.max(1, maxAbs(outs[0]!)), `cpu vs wasm: ${diff}`);
});

test('pipeline folders load through their unet/ subfolder', async () => {
  const { mkdtemp, mkdir, copyFile, rm } = await import('node:fs/promises');
  const { tmpdir } = await import('node:os');
  const { join } = await import('node:path');
  const dir = await mkdtemp(join(tmpdir(), 'marble-pipeline-'));
  try {
    await mkdir(join(dir, 'unet'));
    for (const f of ['config.json', 'diffusion_pytorch_model.safetensors'])
      await copyFile(fixturePath(`unet/tiny/${f}`), join(dir, 'unet', f));
    const unet = await loadUNet(dir, { backend: 'wasm' });
    assert.equal(unet.config.blockOutChannels.join(), '32,64');
    unet.dispose();
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

for (const backend of ['cpu', 'wasm'] as BackendName[])
test(`the ${backend} backend keeps the event loop free during a forward`, async () => {
  // wasm: the forward runs on the engine worker_thread (src/node/wasm.ts)
  const unet = await loadUNet(fixturePath('unet/cifar-slim'), { backend, threads: 2 });
  try {
    const batch = 16;
    const sample = new Float32Array(batch * 3 * 32 * 32).fill(0.1);
    let ticks = 0;
    let running = true;
    const tick = () => {
      ticks++;
      if (running) setImmediate(tick);
    };
    setImmediate(tick);
    await unet.forward(sample, [batch, 3, 32, 32], 10);
    running = false;
    assert.ok(ticks > 3, `the event loop ran ${ticks} times during the forward`);
  } finally {
    unet.dispose();
  }
});
