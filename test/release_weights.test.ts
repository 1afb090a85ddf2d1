// A sampling model holds its weights once: releaseWeights() / keepWeights:
// false free the unpacked copy of the packed conv and linear weights. The
// forward must not change by a bit, and everything that needs the unpacked
// copy (training, repacking, reading the weights) must fail with a typed error.
import { test } from 'node:test';
import assert from 'node:assert/strict';

import { BackendError, DDPMScheduler, createUNet, loadPipeline, loadUNet } from '../src/index.js';
import { Trainer } from '../src/train/index.js';
import { tensorToFloat32, tensorToInt64AsNumbers } from '../src/core/model/safetensors.js';
import { readSafetensorsFile } from '../src/node/safetensors_file.js';
import { engineOf } from '../src/train/engine_access.js';
import { backendsUnderTest, fixturePath } from './helpers.js';

const BACKENDS = await backendsUnderTest();

async function forwardInput(name: string) {
  const file = await readSafetensorsFile(fixturePath(`unet/${name}/forward.safetensors`));
  return {
    sample: tensorToFloat32(file, 'sample'),
    shape: file.tensors.get('sample')!.shape,
    timesteps: tensorToInt64AsNumbers(file, 'timestep'),
    classLabels: file.tensors.has('class_labels') ? tensorToInt64AsNumbers(file, 'class_labels') : undefined,
  };
}

for (const { label, options } of BACKENDS) {
  test(`released weights on ${label}: the same forward bits, half the weight memory, typed errors for what needs them`, async () => {
    const input = await forwardInput('class-cond');
    const kept = await loadUNet(fixturePath('unet/class-cond'), options);
    const released = await loadUNet(fixturePath('unet/class-cond'), { ...options, keepWeights: false });
    try {
      const expected = await kept.forward(input.sample, input.shape, input.timesteps, input.classLabels);
      const got = await released.forward(input.sample, input.shape, input.timesteps, input.classLabels);
      assert.deepEqual(got, expected, 'the forward reads only the packed weights');

      // What was freed: exactly the conv and linear weights (4-d conv kernels, 2-d linear
      // matrices), not the embedding tables (learned time table, class table) the forward reads.
      const table = engineOf(kept).paramTable();
      const embeddingTables = /^(time_proj|class_embedding)\.weight$/;
      const freedNames = table.filter((p) => (p.shape.length === 4 || p.shape.length === 2) && !embeddingTables.test(p.name)).map((p) => p.name);
      const engine = engineOf(released);
      const unreadable = table.filter((_, i) => {
        try {
          engine.readTensor(i, 'param');
          return false;
        } catch {
          return true;
        }
      }).map((p) => p.name);
      assert.deepEqual(unreadable.sort(), freedNames.sort());
      // biases, norms and embedding tables are read by the forward and stay
      const bias = table.findIndex((p) => p.name === 'conv_in.bias');
      assert.deepEqual(engine.readTensor(bias, 'param'), engineOf(kept).readTensor(bias, 'param'));

      assert.equal(kept.releaseWeights() > 0, true, 'an explicit release frees bytes');
      assert.equal(kept.releaseWeights(), 0, 'a second release frees nothing');
      assert.throws(() => engineOf(released).repack(), /released/);
      assert.throws(() => new Trainer({ unet: released, noiseScheduler: new DDPMScheduler(), optimizer: { lr: 1e-3 } }), /released/);
      const weight = table.findIndex((p) => p.name === 'conv_in.weight');
      assert.throws(() => engine.setParam(weight, new Float32Array(table[weight]!.shape.reduce((a, b) => a * b, 1))), /released/);
    } finally {
      kept.dispose();
      released.dispose();
    }
  });
}

// In wasm, linear memory never shrinks: what packing leaves behind stays for
// good. A released model packs each layer into the hole its own weights leave
// (parameters allocated in packing order, each job's weights staged out and
// freed first) and keeps its Winograd convs' 3x3 weights (transformed per
// call) rather than the 16/9-larger transformed filters, so the memory ends at
// about the weights once plus the activation arena (or the largest packing job,
// the time projections, staged while packed), never at weights + packed copy.
test('a released wasm model holds its weights about once in linear memory', async () => {
  const config = {
    block_out_channels: [64, 128, 128],
    down_block_types: ['DownBlock2D', 'AttnDownBlock2D', 'DownBlock2D'],
    up_block_types: ['UpBlock2D', 'AttnUpBlock2D', 'UpBlock2D'],
    layers_per_block: 2,
    norm_num_groups: 32,
    sample_size: 32,
  };
  const unet = await createUNet(config, { backend: 'wasm', threads: 1, seed: 3, keepWeights: false });
  try {
    const engine = engineOf(unet);
    const table = engine.paramTable();
    const numel = (p: { shape: number[] }) => p.shape.reduce((a, b) => a * b, 1);
    const weightBytes = 4 * table.reduce((n, p) => n + numel(p), 0);
    const stagedBytes = 4 * table.filter((p) => p.name.endsWith('.time_emb_proj.weight')).reduce((n, p) => n + numel(p), 0);
    const x = new Float32Array(3 * 32 * 32).map((_, i) => Math.sin(i));
    await unet.forward(x, [1, 3, 32, 32], [500]);
    const arenaBytes = unet.activationBytes(1, 32, 32);
    const linearBytes = (engine as unknown as { ex: { memory: WebAssembly.Memory } }).ex.memory.buffer.byteLength;
    // 4 MiB: the module's data and stacks (the main one and the engine thread's) and the allocator's headers
    const bound = weightBytes + Math.max(arenaBytes, stagedBytes) + 4 * 2 ** 20;
    const MB = (b: number) => `${(b / 2 ** 20).toFixed(1)} MB`;
    assert.ok(weightBytes > 16 * 2 ** 20, 'the weights outgrow the initial 16 MB, so the bound says something');
    assert.ok(linearBytes <= bound, `linear memory ${MB(linearBytes)} > ${MB(bound)} (weights ${MB(weightBytes)}, arena ${MB(arenaBytes)}, staged ${MB(stagedBytes)})`);
  } finally {
    unet.dispose();
  }
});

test('loadPipeline releases by default (it samples), keepWeights: true keeps them; a training model cannot release', async () => {
  const pipeline = await loadPipeline(fixturePath('unet/tiny'), { backend: 'cpu' });
  const kept = await loadPipeline(fixturePath('unet/tiny'), { backend: 'cpu', keepWeights: true });
  try {
    const index = engineOf(pipeline.unet).paramTable().findIndex((p) => p.name === 'conv_in.weight');
    assert.throws(() => engineOf(pipeline.unet).readTensor(index, 'param'), /released/);
    assert.equal(engineOf(kept.unet).readTensor(index, 'param').length > 0, true);
    new Trainer({ unet: kept.unet, noiseScheduler: new DDPMScheduler(), optimizer: { lr: 1e-3 } });
    assert.throws(() => kept.unet.releaseWeights(), (e: unknown) => e instanceof BackendError && /training keeps its weights/.test((e as Error).message));
  } finally {
    pipeline.unet.dispose();
    kept.unet.dispose();
  }
});
