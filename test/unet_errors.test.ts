// Bad input gets a clear, typed error: configs marble does not support,
// weights that do not match the config, hostile files, wrong input shapes,
// NaN, sizes beyond the memory limit. Each case asserts the error's type and
// that its message names the problem.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { copyFile, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import {
  BackendError,
  ConfigError,
  InputError,
  MemoryLimitError,
  SafetensorsError,
  WeightsError,
  createUNet,
  loadUNet,
} from '../src/index.js';
import type { BackendName, DType } from '../src/index.js';
import { DDIMScheduler, sample } from '../src/index.js';
import { parseSafetensors, serializeSafetensors, tensorToFloat32 } from '../src/core/model/safetensors.js';
import type { TensorToWrite } from '../src/core/model/safetensors.js';
import { engineOf } from '../src/train/engine_access.js';
import { fixturePath } from './helpers.js';

const BACKENDS: BackendName[] = ['cpu', 'wasm'];

/** A scratch copy of the tiny fixture whose config and weights a test may change. */
async function scratchModel(
  edit: { config?: (c: Record<string, unknown>) => void; weights?: (w: Record<string, TensorToWrite>) => void; bytes?: (b: Uint8Array) => Uint8Array } = {},
): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'marble-bad-'));
  const config = JSON.parse(await readFile(fixturePath('unet/tiny/config.json'), 'utf8')) as Record<string, unknown>;
  edit.config?.(config);
  await writeFile(join(dir, 'config.json'), JSON.stringify(config));
  let bytes: Uint8Array = await readFile(fixturePath('unet/tiny/diffusion_pytorch_model.safetensors'));
  if (edit.weights) {
    const file = parseSafetensors(bytes);
    const tensors: Record<string, TensorToWrite> = {};
    for (const [name, info] of file.tensors) tensors[name] = { dtype: 'F32', shape: info.shape, data: tensorToFloat32(file, name) };
    edit.weights(tensors);
    bytes = serializeSafetensors(tensors);
  }
  if (edit.bytes) bytes = edit.bytes(bytes);
  await writeFile(join(dir, 'diffusion_pytorch_model.safetensors'), bytes);
  return dir;
}

async function expectLoadError(
  dir: string,
  type: new (...args: never[]) => Error,
  pattern: RegExp,
): Promise<void> {
  try {
    for (const backend of BACKENDS) {
      await assert.rejects(loadUNet(dir, { backend }), (err: unknown) => {
        assert.ok(err instanceof type, `expected ${type.name}, got ${String(err)}`);
        assert.match((err as Error).message, pattern);
        return true;
      });
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

test('unsupported block type names the key and value', async () => {
  const dir = await scratchModel({ config: (c) => (c.down_block_types = ['SkipDownBlock2D', 'AttnDownBlock2D']) });
  await expectLoadError(dir, ConfigError, /down_block_types\[0\] = "SkipDownBlock2D" is not supported/);
});

test('unsupported activation names the key and value', async () => {
  const dir = await scratchModel({ config: (c) => (c.act_fn = 'gelu') });
  await expectLoadError(dir, ConfigError, /act_fn = "gelu"/);
});

test('mismatched block lists and group counts are config errors', async () => {
  await expectLoadError(
    await scratchModel({ config: (c) => (c.up_block_types = ['UpBlock2D']) }),
    ConfigError,
    /down_block_types has 2 entries but up_block_types has 1/,
  );
  await expectLoadError(await scratchModel({ config: (c) => (c.norm_num_groups = 7) }), ConfigError, /norm_num_groups = 7/);
});

test('a missing tensor, an unexpected one and a wrong shape are listed together', async () => {
  const dir = await scratchModel({
    weights: (w) => {
      delete w['conv_in.bias'];
      w['extra.weight'] = { dtype: 'F32', shape: [2], data: new Float32Array(2) };
      w['conv_out.weight'] = { dtype: 'F32', shape: [3, 32, 3, 1], data: new Float32Array(3 * 32 * 3) };
    },
  });
  try {
    await assert.rejects(loadUNet(dir, { backend: 'cpu' }), (err: unknown) => {
      assert.ok(err instanceof WeightsError, String(err));
      assert.deepEqual(err.missing, ['conv_in.bias']);
      assert.deepEqual(err.unexpected, ['extra.weight']);
      assert.equal(err.misshaped.length, 1);
      assert.match(err.message, /conv_out\.weight: expected \[3, 32, 3, 3\], found \[3, 32, 3, 1\]/);
      return true;
    });
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('a weight of a non-float dtype is rejected', async () => {
  const dir = await scratchModel({
    weights: (w) => {
      w['conv_in.bias'] = { dtype: 'I64', shape: [32], data: new BigInt64Array(32) };
    },
  });
  await expectLoadError(dir, WeightsError, /conv_in\.bias: dtype I64 is not supported/);
});

test('f16 and bf16 weights load and give the same output as their f32 values', async () => {
  for (const dtype of ['F16', 'BF16'] as const) {
    let rounded: Record<string, TensorToWrite> = {};
    const dir = await scratchModel({
      weights: (w) => {
        for (const t of Object.values(w)) t.dtype = dtype;
        rounded = w;
      },
    });
    const f32dir = await scratchModel({
      // the same values after rounding to 16 bits, stored as f32
      bytes: () => {
        const reread = parseSafetensors(serializeSafetensors(rounded));
        const tensors: Record<string, TensorToWrite> = {};
        for (const [name, info] of reread.tensors) tensors[name] = { dtype: 'F32', shape: info.shape, data: tensorToFloat32(reread, name) };
        return serializeSafetensors(tensors);
      },
    });
    try {
      const half = await loadUNet(dir, { backend: 'cpu' });
      const full = await loadUNet(f32dir, { backend: 'cpu' });
      const sample = new Float32Array(2 * 3 * 16 * 16).map((_, i) => Math.cos(i));
      const a = await half.forward(sample, [2, 3, 16, 16], [3, 700]);
      const b = await full.forward(sample, [2, 3, 16, 16], [3, 700]);
      assert.deepEqual(a, b, `${dtype} weights load to exactly their float32 values`);
      half.dispose();
      full.dispose();
    } finally {
      await rm(dir, { recursive: true, force: true });
      await rm(f32dir, { recursive: true, force: true });
    }
  }
});

test("dtype: float16 and bfloat16 are cuda's (cpu, wasm: a BackendError naming both); an unknown dtype is an InputError", async () => {
  for (const backend of BACKENDS) {
    for (const dtype of ['float16', 'bfloat16'] as const) {
      await assert.rejects(loadUNet(fixturePath('unet/tiny'), { backend, dtype }), (err: unknown) => {
        assert.ok(err instanceof BackendError, String(err));
        assert.match((err as Error).message, new RegExp(`dtype '${dtype}': the ${backend} backend computes in float32 only`));
        return true;
      });
    }
    const unet = await loadUNet(fixturePath('unet/tiny'), { backend, dtype: 'float32' });
    assert.equal(unet.dtype, 'float32');
    unet.dispose();
  }
  await assert.rejects(loadUNet(fixturePath('unet/tiny'), { backend: 'cpu', dtype: 'float64' as DType }), (err: unknown) => {
    assert.ok(err instanceof InputError, String(err));
    assert.match((err as Error).message, /dtype: unknown value "float64" \(expected one of 'float32', 'float16', 'bfloat16'\)/);
    return true;
  });
});

test('a truncated weights file is a SafetensorsError', async () => {
  const dir = await scratchModel({ bytes: (b) => b.subarray(0, b.length - 1000) });
  await expectLoadError(dir, SafetensorsError, /truncated|beyond|past|out of range/i);
});

test('a header length past the end of the file is a SafetensorsError', async () => {
  const dir = await scratchModel({
    bytes: (b) => {
      const copy = b.slice();
      new DataView(copy.buffer).setBigUint64(0, BigInt(copy.length) * 2n, true);
      return copy;
    },
  });
  await expectLoadError(dir, SafetensorsError, /header/i);
});

test('overlapping or out-of-range offsets are a SafetensorsError', async () => {
  for (const mode of ['overlap', 'range'] as const) {
    const dir = await scratchModel({
      bytes: (b) => {
        const file = parseSafetensors(b);
        const headerLength = Number(new DataView(b.buffer, b.byteOffset).getBigUint64(0, true));
        const header = JSON.parse(new TextDecoder().decode(b.subarray(8, 8 + headerLength))) as Record<string, { data_offsets: number[] }>;
        const names = [...file.tensors.keys()];
        const a = header[names[0]!]!, c = header[names[1]!]!;
        if (mode === 'overlap') c.data_offsets = [a.data_offsets[0]!, a.data_offsets[0]! + (c.data_offsets[1]! - c.data_offsets[0]!)];
        else a.data_offsets = [b.length * 4, b.length * 4 + (a.data_offsets[1]! - a.data_offsets[0]!)];
        const text = new TextEncoder().encode(JSON.stringify(header).padEnd(headerLength, ' '));
        const out = new Uint8Array(b.length - headerLength + text.length);
        new DataView(out.buffer).setBigUint64(0, BigInt(text.length), true);
        out.set(text, 8);
        out.set(b.subarray(8 + headerLength), 8 + text.length);
        return out;
      },
    });
    await expectLoadError(dir, SafetensorsError, mode === 'overlap' ? /overlap/i : /beyond|out of range|past/i);
  }
});

test('a folder without a model is a ConfigError', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'marble-empty-'));
  try {
    await assert.rejects(loadUNet(dir), ConfigError);
    await mkdir(join(dir, 'unet'));
    await copyFile(fixturePath('unet/tiny/config.json'), join(dir, 'unet', 'config.json'));
    await assert.rejects(loadUNet(dir, { backend: 'wasm' }), /diffusion_pytorch_model\.safetensors is missing/);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('wrong input shapes, channel counts, NaN and bad timesteps are InputErrors, and the model stays usable', async () => {
  for (const backend of BACKENDS) {
    const unet = await loadUNet(fixturePath('unet/tiny'), { backend });
    const good = new Float32Array(3 * 16 * 16).fill(0.5);
    const expectInput = (p: Promise<unknown>, pattern: RegExp) =>
      assert.rejects(p, (err: unknown) => {
        assert.ok(err instanceof InputError, `${backend}: expected InputError, got ${String(err)}`);
        assert.match((err as Error).message, pattern);
        return true;
      });
    await expectInput(unet.forward(good, [1, 3, 16], 1), /shape must be/);
    await expectInput(unet.forward(new Float32Array(16 * 16), [1, 1, 16, 16], 1), /1 channels but the model expects in_channels = 3/);
    await expectInput(unet.forward(good, [1, 3, 16, 15], 1), /needs 720/);
    const withNaN = good.slice();
    withNaN[100] = NaN;
    await expectInput(unet.forward(withNaN, [1, 3, 16, 16], 1), /NaN at index 100/);
    await expectInput(unet.forward(good, [1, 3, 16, 16], NaN), /finite/);
    await expectInput(unet.forward(good, [1, 3, 16, 16], [1, 2, 3]), /one per sample/);
    await expectInput(unet.forward(good, [1, 3, 16, 16], 1, [3]), /not class-conditional/);
    // 18 is not divisible by 2: the upsampled map no longer matches the skip
    const odd = new Float32Array(3 * 18 * 17);
    await expectInput(unet.forward(odd, [1, 3, 18, 17], 1), /does not fit this UNet.*divisible by 2/);
    // still works afterwards
    const out = await unet.forward(good, [1, 3, 16, 16], 1);
    assert.equal(out.length, good.length);
    unet.dispose();
    await assert.rejects(unet.forward(good, [1, 3, 16, 16], 1), BackendError);
  }
});

test('class-conditional models need valid labels', async () => {
  for (const backend of BACKENDS) {
    const unet = await loadUNet(fixturePath('unet/class-cond'), { backend });
    const x = new Float32Array(2 * 3 * 16 * 16);
    await assert.rejects(unet.forward(x, [2, 3, 16, 16], [1, 2]), /class-conditional: pass class labels/);
    await assert.rejects(unet.forward(x, [2, 3, 16, 16], [1, 2], [0, 10]), /class label 10 at index 1/);
    await assert.rejects(unet.forward(x, [2, 3, 16, 16], [1, 2], [0]), /expected 2 class conditioning values/);
    // learned time embedding: timesteps index a table
    await assert.rejects(unet.forward(x, [2, 3, 16, 16], [1, 1000], [0, 1]), /integer timesteps in \[0, 1000\)/);
    unet.dispose();
  }
});

test('a forward beyond the memory limit is refused before allocating', async () => {
  for (const backend of BACKENDS) {
    const unet = await loadUNet(fixturePath('unet/tiny'), { backend, memoryLimitBytes: 64 << 20 });
    const needed = unet.activationBytes(64, 64, 64);
    assert.ok(needed > 64 << 20, `plan for a big batch exceeds the limit (${needed})`);
    // The sample itself is small enough to build; the activations are not.
    const x = new Float32Array(64 * 3 * 64 * 64);
    await assert.rejects(unet.forward(x, [64, 3, 64, 64], 1), (err: unknown) => {
      assert.ok(err instanceof MemoryLimitError, String(err));
      assert.match((err as Error).message, /needs \d+ MB of activations, over the limit of 64 MB/);
      return true;
    });
    const out = await unet.forward(new Float32Array(3 * 16 * 16), [1, 3, 16, 16], 1);
    assert.equal(out.length, 3 * 16 * 16);
    unet.dispose();
  }
});

test('createUNet builds a random model from a config alone', async () => {
  const config = JSON.parse(await readFile(fixturePath('unet/tiny/config.json'), 'utf8'));
  const unet = await createUNet(config, { backend: 'wasm', seed: 3 });
  assert.equal(unet.parameterCount > 100000, true);
  const out = await unet.forward(new Float32Array(3 * 16 * 16).fill(0.2), [1, 3, 16, 16], 5);
  assert.ok(out.every((v) => Number.isFinite(v)) && out.some((v) => v !== 0));
  unet.dispose();
});

test('sizes a backend cannot address are refused with a MemoryLimitError, not wrapped around', async () => {
  const unet = await loadUNet(fixturePath('unet/tiny'), { backend: 'wasm' });
  // 64 x 256 x 256 images of 64+ channels: over 4 GB in one buffer, beyond wasm32
  assert.throws(() => unet.activationBytes(64, 256, 256), (err: unknown) => {
    assert.ok(err instanceof MemoryLimitError, String(err));
    assert.match((err as Error).message, /beyond what this 32-bit \(wasm\) build can address/);
    return true;
  });
  // the cpu build counts the same plan exactly (no wrap-around): 4x the batch, ~4x the bytes
  const cpu = await loadUNet(fixturePath('unet/tiny'), { backend: 'cpu' });
  const one = cpu.activationBytes(64, 256, 256);
  const four = cpu.activationBytes(256, 256, 256);
  assert.ok(four > 3.9 * one && four < 4.1 * one, `${one} -> ${four}`);
  cpu.dispose();
  unet.dispose();
});

test('a thread count beyond MAX_THREADS is a BackendError, not an abort or a thousand workers', async () => {
  for (const backend of BACKENDS) {
    for (const threads of [100000, 0, 1.5]) {
      await assert.rejects(loadUNet(fixturePath('unet/tiny'), { backend, threads }), (err: unknown) => {
        assert.ok(err instanceof BackendError, `${backend}, ${threads}: expected BackendError, got ${String(err)}`);
        assert.match((err as Error).message, /threads must be an integer from 1 to 256/);
        return true;
      });
    }
  }
  // the process is still fine and the default path still works
  const unet = await loadUNet(fixturePath('unet/tiny'), { backend: 'cpu', threads: 1 });
  assert.equal((await unet.forward(new Float32Array(3 * 16 * 16), [1, 3, 16, 16], 1)).length, 3 * 16 * 16);
  unet.dispose();
});

test('sizes that are not int32 are InputErrors, not truncated (2^32 + 1 is not a batch of 1)', async () => {
  for (const backend of BACKENDS) {
    const unet = await loadUNet(fixturePath('unet/tiny'), { backend, threads: 1 });
    for (const [b, h, w] of [[2 ** 32 + 1, 16, 16], [1, 2 ** 32 + 16, 16], [1.5, 16, 16]] as const)
      assert.throws(() => unet.activationBytes(b, h, w), (err: unknown) => {
        assert.ok(err instanceof InputError, `${backend} ${b}x${h}x${w}: ${String(err)}`);
        assert.match((err as Error).message, /positive integers below 2\^31/);
        return true;
      });
    await assert.rejects(
      sample({ unet, scheduler: new DDIMScheduler(), numInferenceSteps: 1, batchSize: 2 ** 32 + 1 }),
      (err: unknown) => err instanceof InputError && /below 2\^31/.test((err as Error).message),
    );
    const ok = await sample({ unet, scheduler: new DDIMScheduler(), numInferenceSteps: 1, batchSize: 1 });
    assert.equal(ok.samples.length, 3 * 16 * 16);
    unet.dispose();
  }
});

test('a config whose weights exceed the machine is a MemoryLimitError before they are written', async () => {
  // 4 levels of 8192 channels, 8 layers each: about 330 GB of float32 weights
  const config = JSON.parse(await readFile(fixturePath('unet/tiny/config.json'), 'utf8'));
  Object.assign(config, {
    block_out_channels: [8192, 8192, 8192, 8192],
    down_block_types: ['DownBlock2D', 'DownBlock2D', 'DownBlock2D', 'DownBlock2D'],
    up_block_types: ['UpBlock2D', 'UpBlock2D', 'UpBlock2D', 'UpBlock2D'],
    layers_per_block: 8,
  });
  for (const backend of BACKENDS) {
    await assert.rejects(createUNet(config, { backend, threads: 1 }), (err: unknown) => {
      assert.ok(err instanceof MemoryLimitError, `${backend}: ${String(err)}`);
      return true;
    });
  }
  // and a normal model still builds afterwards
  const unet = await createUNet(JSON.parse(await readFile(fixturePath('unet/tiny/config.json'), 'utf8')), { backend: 'cpu', threads: 1 });
  unet.dispose();
});

test('a weight of the wrong length is refused on every backend, and wasm refuses weights past its 4 GB', async () => {
  for (const backend of BACKENDS) {
    const unet = await loadUNet(fixturePath('unet/tiny'), { backend, threads: 1 });
    // wasm wrote whatever length it was given past the weight's end
    assert.throws(() => engineOf(unet).setParam(0, new Float32Array(1)), /parameter size mismatch/);
    unet.dispose();
  }
  // time_embedding.linear_2 alone: 36000^2 floats = 5.2 GB, a wrapped size in a 32-bit engine
  const config = JSON.parse(await readFile(fixturePath('unet/tiny/config.json'), 'utf8'));
  config.time_embedding_dim = 36000;
  await assert.rejects(createUNet(config, { backend: 'wasm', threads: 1 }), (err: unknown) => {
    assert.ok(err instanceof MemoryLimitError, String(err));
    assert.match((err as Error).message, /32-bit build/);
    return true;
  });
});
