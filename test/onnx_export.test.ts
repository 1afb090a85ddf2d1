// ONNX export (src/onnx): the protobuf writer against known bytes from the
// protobuf encoding guide; the exported ModelProto decoded by an independent
// wire reader (structure, names, weights bit for bit, topological order);
// `marble export --onnx` errors; and, when onnxruntime-node is installed, the
// exported graph run in onnxruntime on every test/fixtures/unet fixture
// against diffusers' outputs at the forward test's tolerance.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';

import { createUNet, InputError, loadUNet } from '../src/index.js';
import { exportOnnxFile } from '../src/cli/export.js';
import { ONNX_IR_VERSION, ONNX_OPSET, unetToOnnx } from '../src/onnx/export.js';
import { ProtoMessage } from '../src/onnx/protobuf.js';
import { timestepFrequencies } from '../src/onnx/unet_graph.js';
import { tensorToFloat32, tensorToInt64AsNumbers } from '../src/core/model/safetensors.js';
import { readSafetensorsFile } from '../src/node/safetensors_file.js';
import { engineOf } from '../src/train/engine_access.js';
import { createOrtSession, loadOrt } from '../src/node/onnxruntime.js';
import { classConditioning } from '../src/core/model/config.js';
import { UNET_FIXTURES, fixturePath, maxAbs, maxAbsDiff } from './helpers.js';
import { bytesOf, ints, msgs, readFields, readMessage, str } from './support/protobuf_reader.js';

const hex = (bytes: Uint8Array) => Buffer.from(bytes).toString('hex');

test('protobuf writer: the encoding guide examples and edge cases, byte for byte', () => {
  // https://protobuf.dev/programming-guides/encoding/: Test1 { a: 150 }, Test2 { b: "testing" }, Test3 { c: Test1 }
  assert.equal(hex(new ProtoMessage().int(1, 150).finish()), '089601');
  assert.equal(hex(new ProtoMessage().string(2, 'testing').finish()), '120774657374696e67');
  assert.equal(hex(new ProtoMessage().message(3, new ProtoMessage().int(1, 150)).finish()), '1a03089601');
  // int64 -1 is ten bytes of two's complement; 0 is one byte; 2^63 - 1 is nine
  assert.equal(hex(new ProtoMessage().int(1, -1).finish()), '08ffffffffffffffffff01');
  assert.equal(hex(new ProtoMessage().int(1, 0).finish()), '0800');
  assert.equal(hex(new ProtoMessage().int(1, (1n << 63n) - 1n).finish()), '08ffffffffffffffff7f');
  // float 1.0 as fixed32 (wire type 5), little-endian; field 16 needs a two-byte key
  assert.equal(hex(new ProtoMessage().float(2, 1).finish()), '150000803f');
  assert.equal(hex(new ProtoMessage().int(16, 1).finish()), '800101');
  // large payloads are referenced and laid out once, length prefix first (300 = ac 02)
  const payload = Uint8Array.from({ length: 300 }, (_, i) => i & 0xff);
  const out = new ProtoMessage().int(1, 7).bytes(2, payload).int(3, 8).finish();
  assert.equal(hex(out.subarray(0, 5)), '0807' + '12ac02');
  assert.deepEqual(out.subarray(5, 305), payload);
  assert.equal(hex(out.subarray(305)), '1808');
  // nested messages holding large chunks report their length correctly
  const inner = new ProtoMessage().bytes(1, payload);
  const outer = new ProtoMessage().message(1, inner).message(2, inner).finish();
  const fields = readFields(outer);
  assert.equal(fields.length, 2);
  for (const f of fields) assert.deepEqual(readFields(f.value as Uint8Array)[0]!.value, payload);
  assert.throws(() => new ProtoMessage().int(0, 1), RangeError);
  assert.throws(() => new ProtoMessage().int(1, 1n << 64n), RangeError);
});

test('timestep frequencies follow get_timestep_embedding: exp(-ln(10000) i / (half - freq_shift)), in float32', () => {
  // The float32 rounding of each op is checked end to end by the onnxruntime fixture tests below;
  // here, the formula, for both freq_shift conventions: within the float32 rounding of the
  // exponent (a few ulps of |exponent| <= 9.3, i.e. ~2e-6 relative) of the exact value.
  for (const [half, shift] of [[4, 0], [64, 1], [16, 0]] as const) {
    const freqs = timestepFrequencies(half, shift);
    assert.equal(freqs.length, half);
    freqs.forEach((f, i) => {
      const exact = Math.exp((-Math.log(10000) * i) / (half - shift));
      assert.ok(Math.abs(f - exact) <= 4 * 2 ** -23 * Math.max(1, -Math.log(exact)) * exact, `half ${half}, shift ${shift}, i ${i}: ${f} vs ${exact}`);
    });
  }
});

interface DecodedModel {
  irVersion: number;
  opsets: { domain: string; version: number }[];
  inputs: { name: string; elemType: number; dims: (number | string)[] }[];
  outputs: { name: string; elemType: number; dims: (number | string)[] }[];
  initializers: Map<string, { dims: number[]; dataType: number; raw: Uint8Array }>;
  nodes: { opType: string; inputs: string[]; outputs: string[] }[];
}

function decodeModel(bytes: Uint8Array): DecodedModel {
  const model = readMessage(bytes);
  const graph = msgs(model, 7)[0]!;
  const valueInfo = (m: Map<number, unknown[]>) => {
    const v = m as ReturnType<typeof readMessage>;
    const tensorType = msgs(msgs(v, 2)[0]!, 1)[0]!;
    const dims = msgs(msgs(tensorType, 2)[0]!, 1).map((d) => (d.has(1) ? ints(d, 1)[0]! : str(d, 2)[0]!));
    return { name: str(v, 1)[0]!, elemType: ints(tensorType, 1)[0]!, dims };
  };
  const initializers = new Map<string, { dims: number[]; dataType: number; raw: Uint8Array }>();
  for (const t of msgs(graph, 5)) initializers.set(str(t, 8)[0]!, { dims: ints(t, 1), dataType: ints(t, 2)[0]!, raw: bytesOf(t, 9)[0]! });
  return {
    irVersion: ints(model, 1)[0]!,
    opsets: msgs(model, 8).map((o) => ({ domain: str(o, 1)[0] ?? '', version: ints(o, 2)[0]! })),
    inputs: msgs(graph, 11).map(valueInfo),
    outputs: msgs(graph, 12).map(valueInfo),
    initializers,
    nodes: msgs(graph, 1).map((n) => ({ opType: str(n, 4)[0]!, inputs: str(n, 1), outputs: str(n, 2) })),
  };
}

test('the exported ModelProto decodes: opset, inputs, every parameter bit for bit, nodes in topological order', async () => {
  for (const name of ['tiny', 'class-cond'] as const) {
    const unet = await loadUNet(fixturePath(`unet/${name}`), { backend: 'wasm' });
    try {
      const model = decodeModel(unetToOnnx(unet));
      assert.equal(model.irVersion, ONNX_IR_VERSION);
      assert.deepEqual(model.opsets, [{ domain: '', version: ONNX_OPSET }]);
      const expectedInputs: DecodedModel['inputs'] = [
        { name: 'sample', elemType: 1, dims: ['batch', 3, 'height', 'width'] },
        { name: 'timestep', elemType: 1, dims: ['batch'] },
      ];
      if (name === 'class-cond') expectedInputs.push({ name: 'class_labels', elemType: 7, dims: ['batch'] });
      assert.deepEqual(model.inputs, expectedInputs);
      assert.deepEqual(model.outputs, [{ name: 'out_sample', elemType: 1, dims: ['batch', 3, 'height', 'width'] }]);

      // every parameter, under its diffusers name and torch shape, with the engine's exact values
      const engine = engineOf(unet);
      const table = engine.paramTable();
      table.forEach(({ name: param, shape }, i) => {
        const init = model.initializers.get(param);
        assert.ok(init, `${name}: initializer ${param}`);
        assert.deepEqual(init.dims, shape, param);
        assert.equal(init.dataType, 1, param);
        const values = engine.readTensor(i, 'param');
        assert.deepEqual(init.raw, new Uint8Array(values.buffer, values.byteOffset, values.byteLength), param);
      });
      assert.ok(model.initializers.has('down_blocks.1.attentions.0.to_q.weight'));

      // each node reads only graph inputs, initializers or earlier outputs; every output is produced once
      const defined = new Set<string>([...model.inputs.map((i) => i.name), ...model.initializers.keys()]);
      for (const node of model.nodes) {
        for (const input of node.inputs) assert.ok(input === '' || defined.has(input), `${name}: ${node.opType} reads ${input} before it is defined`);
        for (const output of node.outputs) {
          assert.ok(!defined.has(output), `${name}: ${output} defined twice`);
          defined.add(output);
        }
      }
      assert.ok(defined.has('out_sample'));
      const ops = new Set(model.nodes.map((n) => n.opType));
      for (const op of ['Conv', 'InstanceNormalization', 'Softmax', 'Resize', 'Gemm', 'MatMul']) assert.ok(ops.has(op), `${name} uses ${op}`);
      if (name === 'class-cond') assert.ok(ops.has('AveragePool') && ops.has('Gather'), 'resnet downsampling and the embedding tables');
    } finally {
      unet.dispose();
    }
  }
});

test('marble export --onnx: writes a file atomically; bad destinations are typed errors', async () => {
  const dir = await mkdtemp(path.join(tmpdir(), 'marble-onnx-'));
  try {
    const file = path.join(dir, 'tiny.onnx');
    const r = await exportOnnxFile({ checkpoint: fixturePath('unet/tiny'), file });
    const written = await readFile(file);
    assert.equal(written.byteLength, r.bytes);
    assert.equal(r.parameters, 702499);
    assert.equal(decodeModel(written).outputs[0]!.name, 'out_sample');
    await assert.rejects(exportOnnxFile({ checkpoint: fixturePath('unet/tiny'), file }), (e) => e instanceof InputError && /--force/.test(e.message));
    await writeFile(file, 'old');
    await exportOnnxFile({ checkpoint: fixturePath('unet/tiny'), file, force: true });
    assert.equal((await readFile(file)).byteLength, r.bytes);
    await assert.rejects(exportOnnxFile({ checkpoint: fixturePath('unet/tiny'), file: dir, force: true }), (e) => e instanceof InputError && /folder/.test(e.message));
    await assert.rejects(exportOnnxFile({ checkpoint: fixturePath('unet/tiny'), file: path.join(dir, 'missing', 'x.onnx') }), InputError);
    await assert.rejects(exportOnnxFile({ checkpoint: path.join(dir, 'nothing'), file: path.join(dir, 'y.onnx') }), /neither a UNet2DModel folder/);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

// --- onnxruntime-node -------------------------------------------------------

const ortNode = await loadOrt('onnxruntime-node');
const skipOrt = ortNode ? false : 'onnxruntime-node is not installed (optional; see README, Speed)';

describe('onnxruntime-node runs the exported graph', { skip: skipOrt }, () => {
  for (const name of UNET_FIXTURES) {
    test(`${name}: the exported graph in onnxruntime-node matches diffusers`, async () => {
      const { ort } = ortNode!;
      const file = await readSafetensorsFile(fixturePath(`unet/${name}/forward.safetensors`));
      const sample = tensorToFloat32(file, 'sample');
      const shape = file.tensors.get('sample')!.shape;
      const timesteps = tensorToInt64AsNumbers(file, 'timestep');
      const expected = tensorToFloat32(file, 'out');
      const unet = await loadUNet(fixturePath(`unet/${name}`), { backend: 'wasm' });
      const session = await createOrtSession('onnxruntime-node', ort, unetToOnnx(unet), 1);
      // Class indices are int64 inputs; class_embed_type timestep takes its labels as float timesteps.
      const labelsAreIndices = classConditioning(unet.config) === 'labels';
      unet.dispose();
      try {
        const feeds: Record<string, InstanceType<typeof ort.Tensor>> = {
          sample: new ort.Tensor('float32', sample, shape),
          timestep: new ort.Tensor('float32', Float32Array.from(timesteps), [timesteps.length]),
        };
        if (file.tensors.has('class_labels')) {
          const labels = tensorToInt64AsNumbers(file, 'class_labels');
          feeds.class_labels = labelsAreIndices
            ? new ort.Tensor('int64', BigInt64Array.from(labels.map(BigInt)), [timesteps.length])
            : new ort.Tensor('float32', Float32Array.from(labels), [timesteps.length]);
        }
        const out = (await session.run(feeds)).out_sample!;
        assert.deepEqual(out.dims, file.tensors.get('out')!.shape);
        const tolerance = 1e-4 * Math.max(1, maxAbs(expected)); // test/unet_forward.test.ts's tolerance
        const diff = maxAbsDiff(out.data as Float32Array, expected);
        assert.ok(diff <= tolerance, `${name}: onnxruntime output differs from diffusers by ${diff} (tolerance ${tolerance})`);
      } finally {
        await session.release();
      }
    });
  }

  // Options no fixture covers, cross-checked against marble's engine (itself checked against diffusers
  // on the fixtures): two independent implementations of the same config must agree.
  const variants: Record<string, Record<string, unknown>> = {
    'class_embed_type timestep, resnet down/upsampling in attention blocks, attn_norm_num_groups, time_embedding_dim': {
      block_out_channels: [16, 32], down_block_types: ['AttnDownBlock2D', 'AttnDownBlock2D'], up_block_types: ['AttnUpBlock2D', 'AttnUpBlock2D'],
      layers_per_block: 1, norm_num_groups: 8, attention_head_dim: 8, attn_norm_num_groups: 4, downsample_type: 'resnet', upsample_type: 'resnet',
      class_embed_type: 'timestep', time_embedding_dim: 48, flip_sin_to_cos: false, freq_shift: 1,
    },
    'class_embed_type identity, no mid block, scale_shift, downsample_padding 0': {
      block_out_channels: [16, 32], down_block_types: ['DownBlock2D', 'DownBlock2D'], up_block_types: ['UpBlock2D', 'UpBlock2D'],
      layers_per_block: 2, norm_num_groups: 4, mid_block_type: null, class_embed_type: 'identity', resnet_time_scale_shift: 'scale_shift', downsample_padding: 0,
    },
    'odd time_proj width (a zero column), three levels, multi-head mid attention': {
      block_out_channels: [9, 18, 18], down_block_types: ['DownBlock2D', 'AttnDownBlock2D', 'DownBlock2D'], up_block_types: ['UpBlock2D', 'AttnUpBlock2D', 'UpBlock2D'],
      layers_per_block: 1, norm_num_groups: 3, attention_head_dim: 9, in_channels: 2, out_channels: 4, center_input_sample: true, mid_block_scale_factor: 0.7,
    },
  };
  for (const [what, config] of Object.entries(variants)) {
    test(`onnxruntime-node agrees with marble: ${what}`, async () => {
      const { ort } = ortNode!;
      const unet = await createUNet(config, { backend: 'cpu', seed: 5 });
      const session = await createOrtSession('onnxruntime-node', ort, unetToOnnx(unet), 1);
      try {
        const shape: [number, number, number, number] = [2, unet.config.inChannels, 16, 16];
        const x = Float32Array.from({ length: shape.reduce((a, b) => a * b, 1) }, (_, i) => Math.sin(i * 0.37));
        const t = [3, 700];
        const feeds: Record<string, InstanceType<typeof ort.Tensor>> = {
          sample: new ort.Tensor('float32', x, shape),
          timestep: new ort.Tensor('float32', Float32Array.from(t), [2]),
        };
        let cond: number[] | undefined;
        if (unet.config.classEmbedType === 'timestep') {
          cond = [5, 321];
          feeds.class_labels = new ort.Tensor('float32', Float32Array.from(cond), [2]);
        } else if (unet.config.classEmbedType === 'identity') {
          const width = (unet.config.timeEmbeddingDim ?? unet.config.blockOutChannels[0]! * 4);
          cond = Array.from({ length: 2 * width }, (_, i) => Math.cos(i * 0.11));
          feeds.class_labels = new ort.Tensor('float32', Float32Array.from(cond), [2, width]);
        }
        const ours = await unet.forward(x, shape, t, cond);
        const theirs = (await session.run(feeds)).out_sample!;
        assert.deepEqual(theirs.dims, [2, unet.config.outChannels, 16, 16]);
        const diff = maxAbsDiff(theirs.data as Float32Array, ours);
        assert.ok(diff <= 1e-4 * Math.max(1, maxAbs(ours)), `${what}: onnxruntime vs marble differ by ${diff} (max |out| ${maxAbs(ours)})`);
      } finally {
        await session.release();
        unet.dispose();
      }
    });
  }

  test('the exported graph has dynamic batch and spatial sizes (onnxruntime-node, 16x40 and batch 3, against marble)', async () => {
    const { ort } = ortNode!;
    const unet = await createUNet(JSON.parse(await readFile(fixturePath('unet/cifar-slim/config.json'), 'utf8')), { backend: 'cpu', seed: 3 });
    const session = await createOrtSession('onnxruntime-node', ort, unetToOnnx(unet), 1);
    try {
      for (const shape of [[1, 3, 16, 40], [3, 3, 32, 32]] as [number, number, number, number][]) {
        const n = shape.reduce((a, b) => a * b, 1);
        const x = Float32Array.from({ length: n }, (_, i) => Math.sin(i * 0.37));
        const t = Array.from({ length: shape[0] }, (_, i) => 100 + 400 * i);
        const ours = await unet.forward(x, shape, t);
        const theirs = (await session.run({ sample: new ort.Tensor('float32', x, shape), timestep: new ort.Tensor('float32', Float32Array.from(t), [shape[0]]) })).out_sample!;
        const diff = maxAbsDiff(theirs.data as Float32Array, ours);
        assert.ok(diff <= 1e-4 * Math.max(1, maxAbs(ours)), `${shape}: ${diff}`);
      }
    } finally {
      await session.release();
      unet.dispose();
    }
  });
});
