// The CUDA backend's test suite, shared by cuda.test.ts (a real GPU) and
// cuda_emulation.test.ts (the kernels emulated on the CPU by
// marble_emulated.node, on every machine): each op family case by case
// against the CPU ops (native/cuda/parity.cpp), every forward fixture with its
// intermediates against diffusers (the tolerances of unet_forward.test.ts),
// and again with dtype float16 and bfloat16 (the tensor-core GEMMs, within
// tolerances derived from the types' precision), cuda against cpu, the schedulers' pipelines, typed errors for a batch
// beyond device memory and for a kernel fault. No test stops the others.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

import { MemoryLimitError, createUNet, loadUNet } from '../src/index.js';
import type { BackendName } from '../src/index.js';
import { cudaDevices } from '../src/backend/native.js';
import type { CudaParityCase } from '../src/backend/native.js';
import { readSafetensorsFile, tensorToFloat32 } from '../src/model/safetensors.js';
import { sample } from '../src/sampler.js';
import { DDIMScheduler } from '../src/schedulers/ddim.js';
import { DDPMScheduler } from '../src/schedulers/ddpm.js';
import { SELF_TEST_FAMILIES, UNET_FIXTURES, fixturePath, forwardReference, maxAbs, maxAbsDiff, selfTestFailure } from './helpers.js';

export interface CudaSuiteOptions {
  /** The kernels run emulated on the CPU: skip what needs real hardware (a kernel fault) or real speed (big batches). */
  emulated: boolean;
}

// Emulated kernels run ~10^4 times slower than a GPU: the many-forward tests are for real devices.
const SLOW = 'too slow under CPU emulation (runs on a GPU)';

export function registerCudaSuite(options: CudaSuiteOptions): void {
  const where = options.emulated ? 'emulated cuda' : 'cuda';
  // Under emulation a fixture's forward takes 30-50 s on 2 cores: one by
  // default, all four with MARBLE_CUDA_EMULATION=full (each passed here on
  // 2026-11-28, intermediates included).
  const fixtures: readonly string[] =
    options.emulated && process.env.MARBLE_CUDA_EMULATION !== 'full' ? ['class-cond'] : UNET_FIXTURES;
  test(`every CUDA op family matches the CPU ops on ${where} (case by case)`, async (t) => {
    // In a child process: a kernel fault loses the CUDA context, and it must
    // not take the forward tests below with it. The child names each case on
    // stderr before running it, so a crash still says where.
    const native = fileURLToPath(new URL('../src/backend/native.js', import.meta.url));
    const script = `import('${native}').then((m) => process.stdout.write(JSON.stringify(m.loadAddon().cudaParity(0, 20261128, false))));`;
    const child = spawnSync(process.execPath, ['--input-type=module', '-e', script], {
      encoding: 'utf8',
      env: { ...process.env, MB_PARITY_TRACE: '1' },
      maxBuffer: 64 << 20,
    });
    const trace = child.stderr.trim().split('\n');
    assert.ok(child.status === 0 && child.stdout.startsWith('['),
      `the self-test process ended with status ${child.status} (signal ${child.signal}) after: ${trace.slice(-3).join(' | ')}`);
    const cases = JSON.parse(child.stdout) as CudaParityCase[];
    assert.ok(cases.length >= 70, `the self-test ran ${cases.length} cases`);
    const families = new Set(cases.map((c) => c.op));
    for (const op of SELF_TEST_FAMILIES) assert.ok(families.has(op), `the self-test covers ${op}`);
    for (const c of cases) {
      await t.test(`${c.op}: ${c.name}`, () => {
        t.diagnostic(`${c.op}: ${c.name}: max |cuda - cpu| ${c.maxAbsErr} (max |cpu| ${c.maxRef}, ${c.elements} values)`);
        const failure = selfTestFailure(c);
        assert.equal(failure, null, failure ?? '');
      });
    }
  });

  const outputs = new Map<string, Float32Array>();
  for (const name of fixtures) {
    test(`${name} on ${where} matches diffusers (out and every intermediate)`, async () => {
      const ref = await forwardReference(name);
      const unet = await loadUNet(fixturePath(`unet/${name}`), { backend: 'cuda' });
      try {
        const out = await unet.forward(ref.sample, ref.shape, ref.timesteps, ref.classLabels, { capture: true });
        outputs.set(name, out);
        const checked: string[] = [];
        const check = (key: string, got: Float32Array, shape: number[]) => {
          const expected = ref.tensors.get(key)!;
          assert.deepEqual(shape, expected.shape, `${key}: shape`);
          const tolerance = 1e-4 * Math.max(1, maxAbs(expected.data));
          const diff = maxAbsDiff(got, expected.data);
          assert.ok(diff <= tolerance, `${name}/cuda: ${key} differs from diffusers by ${diff} (tolerance ${tolerance})`);
          checked.push(key);
        };
        for (const captured of unet.captures()) if (ref.tensors.has(captured.name)) check(captured.name, captured.data, captured.shape);
        check('out', out, [ref.shape[0]!, unet.config.outChannels, ref.shape[2]!, ref.shape[3]!]);
        const expectedKeys = [...ref.tensors.keys()].filter((k) => k !== 'sample');
        assert.deepEqual(checked.sort(), expectedKeys.sort(), 'every reference tensor was compared');
      } finally {
        unet.dispose();
      }
    });
  }

  // dtype float16 / bfloat16: every conv and linear GEMM rounds both its
  // inputs to the type (relative error <= u each: u = 2^-11 for float16,
  // 2^-8 for bfloat16), so each product is off by <= 2u relative, and as the
  // K errors are independent a GEMM's output is off by ~2u sqrt(sum (x w)^2),
  // about 2u |output| for sums of mixed sign. GroupNorm renormalises between
  // layers, so the errors of successive GEMMs add in quadrature rather than
  // compound: 2u sqrt(D) for D full-size contributions, and the bound
  // 8u = 2u sqrt(16) of max(1, max |reference|) on every intermediate. D is
  // not the depth (cifar-slim's deepest path has ~50 GEMMs): each resnet adds
  // its branch to a residual, whose error it does not grow. Measured under
  // the emulation on all five fixtures: 1.9-3.1u (float16), 2.2-2.4u
  // (bfloat16); float32 stays below u / 100. A wrong fragment
  // layout mixes up rows or columns of a GEMM: errors of the size of the
  // values (checked on 2026-11-28 by swapping lanes 0 and 4's A rows in
  // conv2d_mma.cu: temb then differed by 0.28 against tolerances of 0.0039
  // (float16) and 0.031 (bfloat16), and every conv2d_half / linear_half case
  // of the self-test by 0.7-3.7). Under emulation the smallest fixture, all
  // of them on a GPU.
  const HALF_UNIT_ROUNDOFF = { float16: 2 ** -11, bfloat16: 2 ** -8 } as const;
  const halfFixtures: readonly string[] = options.emulated ? ['class-timestep'] : UNET_FIXTURES;
  for (const dtype of ['float16', 'bfloat16'] as const) {
    for (const name of halfFixtures) {
      test(`${name} on ${where} with dtype ${dtype} (tensor cores) matches diffusers within 8 unit roundoffs`, async (t) => {
        const ref = await forwardReference(name);
        const unet = await loadUNet(fixturePath(`unet/${name}`), { backend: 'cuda', dtype });
        try {
          assert.equal(unet.dtype, dtype);
          const out = await unet.forward(ref.sample, ref.shape, ref.timesteps, ref.classLabels, { capture: true });
          const tensors = [...unet.captures(), { name: 'out', data: out }].filter((c) => ref.tensors.has(c.name));
          assert.equal(tensors.length, ref.tensors.size - 1, 'every reference tensor but the sample is compared');
          let worst = 0;  // in unit roundoffs
          for (const { name: key, data } of tensors) {
            const expected = ref.tensors.get(key)!.data;
            const scale = HALF_UNIT_ROUNDOFF[dtype] * Math.max(1, maxAbs(expected));
            const diff = maxAbsDiff(data, expected);
            assert.ok(diff <= 8 * scale, `${name}/${dtype}: ${key} differs from diffusers by ${diff} (tolerance ${8 * scale})`);
            worst = Math.max(worst, diff / scale);
          }
          t.diagnostic(`${name}/${dtype}: worst intermediate off by ${worst.toFixed(2)} unit roundoffs`);
          // It did run in the half type: float32 stays within 1e-4, far below u / 8.
          assert.ok(worst > 1 / 8, `${name}/${dtype}: as close to diffusers as float32 (${worst} unit roundoffs)`);
        } finally {
          unet.dispose();
        }
      });
    }
  }

  test(`${where} and cpu agree within 1e-5 relative on every fixture run`, async () => {
    for (const name of fixtures) {
      const ref = await forwardReference(name);
      const unet = await loadUNet(fixturePath(`unet/${name}`), { backend: 'cpu' });
      const cpu = await unet.forward(ref.sample, ref.shape, ref.timesteps, ref.classLabels);
      unet.dispose();
      const cuda = outputs.get(name);
      assert.ok(cuda, `${name}: the cuda forward ran`);
      const diff = maxAbsDiff(cpu, cuda);
      const tolerance = 1e-5 * maxAbs(cpu);
      assert.ok(diff <= tolerance, `${name}: cpu vs cuda differ by ${diff} (tolerance ${tolerance})`);
    }
  });

  // Many tiles in every kernel's grid, partial tiles, several query blocks' worth of batch.
  for (const [batch, h, w] of [[33, 32, 32], [3, 16, 40]] as const) {
    test(`cifar-slim at batch ${batch}, ${h}x${w}: ${where} equals cpu within 1e-5 relative`, { skip: options.emulated && SLOW }, async () => {
      const shape = [batch, 3, h, w];
      const x = new Float32Array(batch * 3 * h * w).map((_, i) => Math.sin(i * 0.37) * 1.5);
      const timesteps = Array.from({ length: batch }, (_, b) => (b * 37) % 1000);
      const outs: Float32Array[] = [];
      for (const backend of ['cpu', 'cuda'] as BackendName[]) {
        const unet = await loadUNet(fixturePath('unet/cifar-slim'), { backend });
        try {
          outs.push(await unet.forward(x, shape, timesteps));
          // The same model again: the arena and weights persist between calls.
          if (backend === 'cuda') assert.deepEqual(await unet.forward(x, shape, timesteps), outs[1], 'repeatable');
        } finally {
          unet.dispose();
        }
      }
      const diff = maxAbsDiff(outs[0]!, outs[1]!);
      assert.ok(diff <= 1e-5 * Math.max(1, maxAbs(outs[0]!)), `cpu vs cuda: ${diff}`);
    });
  }

  test(`generator 'torch' reproduces DDPMPipeline and DDIMPipeline on ${where}`, { skip: options.emulated && SLOW }, async () => {
    const meta = JSON.parse(readFileSync(fixturePath('pipelines/tiny_samples.json'), 'utf8')) as {
      cases: { name: string; pipeline: 'ddpm' | 'ddim'; steps: number; seed: number; batch: number; eta?: number }[];
    };
    const references = await readSafetensorsFile(fixturePath('pipelines/tiny_samples.safetensors'));
    const unet = await loadUNet(fixturePath('unet/tiny'), { backend: 'cuda' });
    try {
      for (const c of meta.cases) {
        const scheduler = c.pipeline === 'ddpm' ? new DDPMScheduler() : new DDIMScheduler();
        const result = await sample({ unet, scheduler, numInferenceSteps: c.steps, batchSize: c.batch, seed: BigInt(c.seed), generator: 'torch', eta: c.eta });
        const expected = tensorToFloat32(references, c.name);
        const diff = maxAbsDiff(result.samples, expected);
        const tolerance = 1e-4 * Math.max(1, maxAbs(expected));
        assert.ok(diff <= tolerance, `${c.name} (${c.pipeline}, seed ${c.seed}, eta ${c.eta}): off by ${diff}`);
      }
    } finally {
      unet.dispose();
    }
  });

  test('a batch beyond device memory is a MemoryLimitError before allocating, and the model still works', { skip: options.emulated && SLOW }, async () => {
    // Wide channels make the activations ~1000x the input, so the batch that
    // overflows the device needs only a modest input array.
    const config = {
      block_out_channels: [256, 256],
      down_block_types: ['DownBlock2D', 'DownBlock2D'],
      up_block_types: ['UpBlock2D', 'UpBlock2D'],
      layers_per_block: 1,
      in_channels: 3,
      out_channels: 3,
      sample_size: 128,
    };
    const unet = await createUNet(config, { backend: 'cuda', memoryLimitBytes: Number.MAX_SAFE_INTEGER, seed: 0 });
    try {
      const deviceBytes = cudaDevices().devices[0]!.totalBytes!;
      const batch = Math.ceil((1.5 * deviceBytes) / unet.activationBytes(1, 128, 128));
      await assert.rejects(unet.forward(new Float32Array(batch * 3 * 128 * 128), [batch, 3, 128, 128], 10), (err: unknown) => {
        assert.ok(err instanceof MemoryLimitError, String(err));
        assert.match((err as Error).message, /out of cuda memory/);
        return true;
      });
      const out = await unet.forward(new Float32Array(3 * 16 * 16).fill(0.5), [1, 3, 16, 16], 10);
      assert.ok(out.every(Number.isFinite));
    } finally {
      unet.dispose();
    }
  });

  test('a kernel fault is a typed device error and the process survives it', { skip: options.emulated && 'kernel faults cannot be emulated' }, () => {
    // In a child: the fault loses this process's CUDA context for good.
    const native = fileURLToPath(new URL('../src/backend/native.js', import.meta.url));
    const script = `import('${native}').then((m) => { const r = m.loadAddon().cudaFaultProbe(0); console.log(JSON.stringify(r)); console.log('alive'); });`;
    const out = execFileSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8' });
    const lines = out.trim().split('\n');
    const result = JSON.parse(lines[0]!) as { status: number; message: string };
    assert.equal(result.status, 5, `status ${result.status}: ${result.message}`);
    assert.match(result.message, /illegal address|cudaError/);
    assert.equal(lines[1], 'alive');
  });
}
