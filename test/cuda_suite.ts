// The CUDA backend's test suite, shared by cuda.test.ts (a real GPU) and
// cuda_emulation.test.ts (the kernels emulated on the CPU by
// marble_emulated.node, on every machine): each op family case by case
// against the CPU ops (native/cuda/parity.cpp), every forward fixture with its
// intermediates against diffusers (the tolerances of unet_forward.test.ts),
// and again with dtype float16 and bfloat16 (the tensor-core GEMMs, within
// tolerances derived from the types' precision), cuda against cpu, the
// schedulers' pipelines, the sampling loop kept on the device, training
// (every gradient against diffusers, AdamW + EMA against the cpu, a few
// trainer steps and a checkpoint round trip against the cpu), typed errors for
// a batch beyond device memory and for a kernel fault. No test stops the others.
import '../src/node/host.js';
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { MemoryLimitError, Trainer, createUNet, loadUNet } from '../src/index.js';
import type { BackendName, UNet2DModel } from '../src/index.js';
import { packStepCoefficients } from '../src/core/schedulers/engine_step.js';
import { cudaDevices, loadAddon } from '../src/node/native.js';
import type { CudaParityCase } from '../src/node/native.js';
import { tensorToFloat32 } from '../src/core/model/safetensors.js';
import { readSafetensorsFile } from '../src/node/safetensors_file.js';
import { sample } from '../src/core/sampler.js';
import { DDIMScheduler } from '../src/core/schedulers/ddim.js';
import { DDPMScheduler } from '../src/core/schedulers/ddpm.js';
import { kSolverCoefficientSlots, packSolverCoefficients } from '../src/core/schedulers/solver_kernel.js';
import { solverFromConfig, type SolverName } from '../src/core/schedulers/solvers.js';
import { engineOf } from '../src/train/engine_access.js';
import type { TensorKind } from '../src/core/backend/backend.js';
import { SELF_TEST_FAMILIES, UNET_FIXTURES, fixturePath, forwardReference, maxAbs, maxAbsDiff, selfTestFailure } from './helpers.js';
import {
  HALF_UNIT_ROUNDOFF,
  TRAIN_FIXTURES,
  batchFrom,
  checkAdamwStepAgainstTorch,
  checkTrainStepAgainstDiffusers,
  writeReferenceGrads,
} from './train_reference.js';

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
  // Under emulation, twice: warps run in order, then last first (with lanes
  // and blocks reversed), so a barrier or cp.async wait a kernel lacks gives
  // wrong results in one of the two (native/cuda/emulation/cuda_emulation.h).
  const schedules: readonly (string | undefined)[] = options.emulated ? [undefined, 'reverse'] : [undefined];
  for (const schedule of schedules) {
    const how = schedule ? `${where}, warps scheduled last first` : where;
    test(`every CUDA op family matches the CPU ops on ${how} (case by case)`, async (t) => {
      // In a child process: a kernel fault loses the CUDA context, and it must
      // not take the forward tests below with it. The child names each case on
      // stderr before running it, so a crash still says where.
      const native = fileURLToPath(new URL('../src/node/native.js', import.meta.url));
      const script = `import('${native}').then((m) => process.stdout.write(JSON.stringify(m.loadAddon().cudaParity(0, 20261128, false))));`;
      const env: NodeJS.ProcessEnv = { ...process.env, MB_PARITY_TRACE: '1' };
      if (schedule) env.MB_EMU_SCHEDULE = schedule;
      else delete env.MB_EMU_SCHEDULE;
      const child = spawnSync(process.execPath, ['--input-type=module', '-e', script], {
        encoding: 'utf8',
        env,
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
  }

  test(`the conv GEMM and attention benchmark helpers time them on ${where} and refuse what they cannot run`, () => {
    const addon = loadAddon();
    const plain = addon.cudaConvBench(0, 2, 0, 1, 16, 136, 4, 4, 2);
    assert.equal(plain.status, 0, plain.reason);
    assert.ok(plain.ms > 0);
    const fp32Wgmma = addon.cudaConvBench(0, 0, 1, 1, 16, 136, 4, 4, 2);
    assert.notEqual(fp32Wgmma.status, 0);
    assert.match(fp32Wgmma.reason, /warpgroup MMA needs a half weight type/);
    assert.notEqual(addon.cudaConvBench(0, 3, 0, 1, 16, 16, 4, 4, 1).status, 0, 'weight type 3 does not exist');
    const fused = addon.cudaAttentionBench(0, 1, 1, 40, 2, 16, 1);
    assert.equal(fused.status, 0, fused.reason);
    assert.equal(addon.cudaAttentionBench(0, 0, 1, 40, 2, 16, 1).status, 0);
    assert.match(addon.cudaAttentionBench(0, 1, 1, 40, 1, 80, 1).reason, /up to 64 channels/);
    const halfInput = addon.cudaConvBench(0, 1, 2, 1, 16, 136, 4, 4, 2);  // flag 2: the input in the half type
    assert.equal(halfInput.status, 0, halfInput.reason);
    const fp32HalfInput = addon.cudaConvBench(0, 0, 2, 1, 16, 136, 4, 4, 2);
    assert.notEqual(fp32HalfInput.status, 0);
    assert.match(fp32HalfInput.reason, /half input needs a half weight type/);
    if (options.emulated) {  // the emulation always has the warpgroup MMA
      const wgmma = addon.cudaConvBench(0, 2, 1, 1, 16, 136, 4, 4, 2);
      assert.equal(wgmma.status, 0, wgmma.reason);
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

  // Half activations (engine/ops.h): sampling with a float16 / bfloat16
  // model, GroupNorm writes the outputs that only a GEMM reads in the
  // model's type and the GEMM reads them so, rounded exactly as it rounds
  // floats itself: the forward must not change by a bit. The plan's size
  // changes (two bytes an element, and GroupNorm2 no longer in place), which
  // shows the other path ran. Checked on 2026-11-29 by swapping the two
  // halves of each pair GroupNorm writes: the first block's output (down.0)
  // then differed.
  test(`half activations on ${where}: a float16 / bfloat16 forward is bit-identical with and without them`, async () => {
    const shape = [2, 3, 8, 8];
    const x = new Float32Array(2 * 3 * 8 * 8).map((_, i) => Math.cos(i * 0.61) * 1.3);
    const previous = process.env.MARBLE_CUDA_HALF_ACTIVATIONS;
    try {
      for (const dtype of ['float16', 'bfloat16'] as const) {
        const runs: { out: Float32Array; captures: Map<string, Float32Array>; planBytes: number }[] = [];
        for (const setting of [undefined, '0']) {
          if (setting === undefined) delete process.env.MARBLE_CUDA_HALF_ACTIVATIONS;
          else process.env.MARBLE_CUDA_HALF_ACTIVATIONS = setting;
          const unet = await loadUNet(fixturePath('unet/tiny'), { backend: 'cuda', dtype });
          try {
            const out = await unet.forward(x, shape, [17, 803], undefined, { capture: true });
            const captures = new Map(unet.captures().map((c) => [c.name, c.data] as [string, Float32Array]));
            runs.push({ out, captures, planBytes: unet.activationBytes(2, 8, 8) });
          } finally {
            unet.dispose();
          }
        }
        const [half, float] = runs as [(typeof runs)[0], (typeof runs)[0]];
        assert.notEqual(half.planBytes, float.planBytes, `${dtype}: the half activations' plan differs`);
        assert.ok(half.captures.size > 2 && half.captures.size === float.captures.size, `${dtype}: intermediates captured`);
        for (const [key, data] of float.captures) assert.deepEqual(half.captures.get(key), data, `${dtype}: ${key}`);
        assert.deepEqual(half.out, float.out, `${dtype}: out`);
      }
    } finally {
      if (previous === undefined) delete process.env.MARBLE_CUDA_HALF_ACTIVATIONS;
      else process.env.MARBLE_CUDA_HALF_ACTIVATIONS = previous;
    }
  });

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

  // Training. Under emulation a training step of the smallest fixture takes
  // ~12 s on 2 cores: class-timestep only (its learned time table and class
  // projection cover both row-lookup gradients), all four with
  // MARBLE_CUDA_EMULATION=full.
  const trainFixtures: readonly string[] =
    options.emulated && process.env.MARBLE_CUDA_EMULATION !== 'full' ? ['class-timestep'] : TRAIN_FIXTURES;
  for (const name of trainFixtures) {
    test(`${name} on ${where}: loss and every gradient match diffusers`, async () => {
      await checkTrainStepAgainstDiffusers(name, { backend: 'cuda' }, where);
    });
  }
  // Mixed precision (dtype float16 / bfloat16): the forward's GEMMs on
  // tensor cores in the model's type, the gradients' GEMMs (dX, dW) in
  // bfloat16, everything else float32; bounds in mixedPrecisionUnit (the two
  // unit roundoffs added). Measured under the emulation on all four train
  // fixtures on 2026-11-29: worst gradient 2.5-3.5 units (float16) and
  // 1.4-3.6 (bfloat16) of its tensor's largest value, loss within 0.12. With
  // the gradients' GEMMs in float16, mnist-variants' were off by 2,939 float16
  // unit roundoffs (its dY lies below float16's normal range), which is why
  // they run in bfloat16. Breaking the data-gradient layout (checked the same
  // day): with its taps not flipped, class_embedding.linear_1.bias was off by
  // 0.021, 25 to 45 times its tolerance; with its padding left unzeroed, the
  // gradients were NaN.
  for (const dtype of ['float16', 'bfloat16'] as const) {
    for (const name of trainFixtures) {
      test(`${name} on ${where} with dtype ${dtype} (mixed precision): loss and every gradient match diffusers within 8 mixed-precision units`, async (t) => {
        const worst = await checkTrainStepAgainstDiffusers(name, { backend: 'cuda', dtype }, `${where}/${dtype}`);
        t.diagnostic(`${name}/${dtype}: worst gradient off by ${worst.toFixed(2)} mixed-precision units`);
      });
    }
  }

  test(`AdamW and EMA on ${where} equal the cpu's to the bit, and AdamW matches torch.optim.AdamW`, async () => {
    // The same gradients (diffusers') on both devices: AdamW and the EMA are
    // elementwise in the CPU's float32 order, so every tensor must agree exactly.
    const name = 'class-timestep';
    const grads = await readSafetensorsFile(fixturePath(`unet/${name}/train_step.safetensors`));
    const results = new Map<string, Map<TensorKind, Float32Array[]>>();
    for (const backend of ['cpu', 'cuda'] as BackendName[]) {
      const unet = await loadUNet(fixturePath(`unet/${name}`), { backend });
      const engine = engineOf(unet);
      try {
        engine.trainInit({ ema: true });
        const table = engine.paramTable();
        writeReferenceGrads(engine, grads);
        engine.adamwStep({ lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.01, step: 1, gradScale: 0.5 });
        engine.emaUpdate(0.9);
        engine.adamwStep({ lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.01, step: 2, gradScale: 1 });
        engine.emaUpdate(0.9);
        const kinds = new Map<TensorKind, Float32Array[]>();
        for (const kind of ['param', 'exp_avg', 'exp_avg_sq', 'ema'] as TensorKind[])
          kinds.set(kind, table.map((_, i) => engine.readTensor(i, kind)));
        results.set(backend, kinds);
        if (backend === 'cuda') {
          // The weights the next forward uses are the updated ones, repacked on the device.
          const x = new Float32Array(2 * 2 * 8 * 8).map((_, i) => Math.sin(i));
          const viaDevice = await unet.forward(x, [2, 2, 8, 8], [5, 900], [3, 250]);
          const fresh = await loadUNet(fixturePath(`unet/${name}`), { backend: 'cpu' });
          const freshEngine = engineOf(fresh);
          kinds.get('param')!.forEach((t, i) => freshEngine.writeTensor(i, 'param', t));
          freshEngine.repack();
          const viaCpu = await fresh.forward(x, [2, 2, 8, 8], [5, 900], [3, 250]);
          fresh.dispose();
          assert.ok(maxAbsDiff(viaDevice, viaCpu) <= 1e-5 * maxAbs(viaCpu), 'the forward after the step uses the new weights');
        }
      } finally {
        unet.dispose();
      }
    }
    const cpu = results.get('cpu')!, cuda = results.get('cuda')!;
    for (const kind of cpu.keys()) assert.deepEqual(cuda.get(kind), cpu.get(kind), `${kind} after two AdamW + EMA steps`);
    // One step alone against torch (the cpu test's tolerance), on the device.
    await checkAdamwStepAgainstTorch(name, { backend: 'cuda' }, where);
  });

  test(`trainer steps on ${where} match the cpu's, through a checkpoint saved and resumed on the device`, async () => {
    // A tiny config with attention, scale_shift, gradient clipping, EMA and
    // 2-way gradient accumulation: every device path of Trainer.step. The cpu
    // takes three steps; the device two, then saves (downloading its
    // tensors), resumes (uploading them) and takes the third.
    const config = {
      block_out_channels: [8, 16],
      down_block_types: ['DownBlock2D', 'AttnDownBlock2D'],
      up_block_types: ['AttnUpBlock2D', 'UpBlock2D'],
      layers_per_block: 1,
      norm_num_groups: 4,
      resnet_time_scale_shift: 'scale_shift',
      in_channels: 2,
      out_channels: 2,
      sample_size: 8,
    };
    const lr = 1e-3;
    const batch = new Float32Array(2 * 2 * 8 * 8).map((_, i) => 0.8 * Math.sin(i * 0.37));
    const dir = await mkdtemp(join(tmpdir(), 'marble-cuda-train-'));
    const runs = new Map<string, { losses: number[]; norms: number[]; params: Float32Array[]; ema: Float32Array[] }>();
    try {
      for (const backend of ['cpu', 'cuda'] as BackendName[]) {
        const unet = await createUNet(config, { backend, seed: 3 });
        let trainer = new Trainer({
          unet,
          noiseScheduler: new DDPMScheduler(),
          optimizer: { lr },
          gradClip: 0.5,
          gradAccumulation: 2,
          ema: { decay: 0.99 },
          seed: 11,
        });
        const losses: number[] = [], norms: number[] = [];
        try {
          for (let k = 0; k < 3; k++) {
            if (backend === 'cuda' && k === 2) {
              await trainer.save(join(dir, 'checkpoint'));
              const resumed = await Trainer.resume(join(dir, 'checkpoint'), { backend: 'cuda' });
              for (const kind of ['param', 'ema', 'exp_avg', 'exp_avg_sq'] as TensorKind[])
                assert.deepEqual(resumed.readAll(kind), trainer.readAll(kind), `${kind} after resume`);
              trainer.unet.dispose();
              trainer = resumed;
            }
            const r = await trainer.step(batch);
            losses.push(r.loss);
            norms.push(r.gradNorm);
          }
          runs.set(backend, { losses, norms, params: trainer.readAll('param'), ema: trainer.readAll('ema') });
        } finally {
          trainer.unet.dispose();
        }
      }
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
    const cpu = runs.get('cpu')!, cuda = runs.get('cuda')!;
    for (let k = 0; k < 3; k++) {
      assert.ok(Math.abs(cuda.losses[k]! - cpu.losses[k]!) <= 1e-5 * cpu.losses[k]!, `step ${k + 1}: loss ${cuda.losses[k]} vs ${cpu.losses[k]}`);
      assert.ok(Math.abs(cuda.norms[k]! - cpu.norms[k]!) <= 1e-5 * cpu.norms[k]!, `step ${k + 1}: grad norm ${cuda.norms[k]} vs ${cpu.norms[k]}`);
    }
    // AdamW moves every weight by about lr per step whatever its gradient's
    // size, so where a gradient is rounding noise (to_k.bias: exactly zero in
    // exact arithmetic) or near zero, the devices' last bits show up in units
    // of lr: the weights agree to 5% of one step.
    for (const [what, a, b] of [['param', cuda.params, cpu.params], ['ema', cuda.ema, cpu.ema]] as const)
      a.forEach((t, i) => {
        const diff = maxAbsDiff(t, b[i]!);
        assert.ok(diff <= 0.05 * lr, `${what} ${i} after three steps differs by ${diff}`);
      });
  });

  // The sampling loop on the device (native/engine/sampling.cpp): the sample
  // never leaves it between steps, and from the second step on the forward
  // is a recording (a CUDA graph) replayed with that step's timestep read
  // from device memory. A replay that baked in the first step's values, or
  // read another step's buffers, would drift from the cpu's loop below.
  const microConfig = {
    block_out_channels: [8, 16],
    down_block_types: ['DownBlock2D', 'AttnDownBlock2D'],
    up_block_types: ['AttnUpBlock2D', 'UpBlock2D'],
    layers_per_block: 1,
    norm_num_groups: 4,
    attention_head_dim: 8,
    in_channels: 1,
    out_channels: 1,
    sample_size: 8,
    num_class_embeds: 3,
  };
  test(`the sampling loop stays on ${where}: a recorded forward replays each step, samples equal cpu's`, async () => {
    const run = async (backend: BackendName, generator: 'philox' | 'torch', between?: (unet: UNet2DModel) => Promise<void>) => {
      const unet = await createUNet(microConfig, { backend, seed: 3 });
      try {
        let replays = -1;
        const result = await sample({
          unet,
          scheduler: generator === 'philox' ? new DDIMScheduler() : new DDPMScheduler(),
          numInferenceSteps: 3,
          batchSize: 2,
          seed: 11,
          eta: generator === 'philox' ? 0.7 : undefined,
          generator,
          classLabels: [2, 0],
          onStep: between ? () => between(unet) : undefined,
        });
        // The same run through the engine directly, to read how its forwards ran.
        const device = await unet.startSampling([2, 1, 8, 8], Float32Array.of(2, 0));
        assert.ok(device, `${backend} has a device sampling loop`);
        const scheduler = new DDIMScheduler();
        scheduler.setTimesteps(3);
        const coefficients = new Float32Array(15 * 3);
        scheduler.timesteps.forEach((t, i) => coefficients.set(packStepCoefficients(scheduler.stepCoefficients(t, { eta: 0 })), 15 * i));
        await device.init(null, 11n, 0n);
        await device.steps(Float32Array.from(scheduler.timesteps), coefficients, 11n, 1, null, false);
        replays = device.stats().replays;
        const direct = device.stats().directForwards;
        await device.end();
        return { samples: result.samples, replays, direct };
      } finally {
        unet.dispose();
      }
    };
    for (const generator of ['philox', 'torch'] as const) {
      const cpu = await run('cpu', generator);
      const cuda = await run('cuda', generator);
      assert.equal(cpu.replays, 0, 'the cpu runs every forward directly');
      assert.deepEqual([cuda.direct, cuda.replays], [1, 2], `${where}: one direct forward, then replays`);
      const diff = maxAbsDiff(cpu.samples, cuda.samples);
      assert.ok(diff <= 1e-5 * Math.max(1, maxAbs(cpu.samples)), `${generator}: cpu vs ${where} samples differ by ${diff}`);
    }
    // A forward at another size between steps moves the arena: the recording
    // must be made again, not replayed over freed memory.
    const other = new Float32Array(3 * 1 * 8 * 16).fill(0.25);
    const interleaved = await run('cuda', 'philox', async (unet) => {
      await unet.forward(other, [3, 1, 8, 16], 10, [0, 1, 2]);
    });
    const cpu = await run('cpu', 'philox');
    const diff = maxAbsDiff(cpu.samples, interleaved.samples);
    assert.ok(diff <= 1e-5 * Math.max(1, maxAbs(cpu.samples)), `with forwards in between: cpu vs ${where} differ by ${diff}`);
  });

  test(`the solvers' loop stays on ${where}: history on the device, a recorded forward replays, samples equal cpu's`, async () => {
    const solvers: [SolverName, Record<string, unknown>, 'philox' | 'torch'][] = [
      ['dpm++', { solver_order: 3, thresholding: true, sample_max_value: 1.5 }, 'torch'],
      ['unipc', { solver_order: 3 }, 'torch'],
      ['heun', {}, 'torch'],
      ['euler-a', {}, 'philox'],
    ];
    const run = async (backend: BackendName, name: SolverName, config: Record<string, unknown>, generator: 'philox' | 'torch') => {
      const unet = await createUNet(microConfig, { backend, seed: 3 });
      try {
        const result = await sample({ unet, scheduler: solverFromConfig(name, config), numInferenceSteps: 3, batchSize: 2, seed: 11, generator, classLabels: [2, 0] });
        // Euler's run through the engine directly, to read how its forwards ran.
        const device = await unet.startSampling([2, 1, 8, 8], Float32Array.of(2, 0));
        assert.ok(device?.solverSteps, `${backend} has a device solver loop`);
        const s = solverFromConfig('euler', {});
        s.setTimesteps(3);
        const stride = kSolverCoefficientSlots + 1;
        const records = new Float32Array(stride * 3);
        const scales = new Float32Array(3);
        s.timesteps.forEach((t, i) => {
          const p = s.planStep(t);
          p.commit();
          records.set(packSolverCoefficients(p.coefficients), stride * i);
          scales[i] = p.inputScale;
        });
        await device.init(null, 11n, 0n);
        await device.solverSteps(Float32Array.from(s.timesteps), scales, records, 11n, 1, null, false);
        const stats = device.stats();
        await device.end();
        return { samples: result.samples, ...stats };
      } finally {
        unet.dispose();
      }
    };
    for (const [name, config, generator] of solvers) {
      const cpu = await run('cpu', name, config, generator);
      const cuda = await run('cuda', name, config, generator);
      assert.equal(cpu.replays, 0, 'the cpu runs every forward directly');
      assert.deepEqual([cuda.directForwards, cuda.replays], [1, 2], `${where}: one direct forward, then replays`);
      // 1e-4 as the sampler tests' cpu vs wasm: a multistep solver combines
      // several steps' outputs (and dynamic thresholding divides by a quantile),
      // so the forward's ~1e-6 differences grow more than through one DDIM step.
      const diff = maxAbsDiff(cpu.samples, cuda.samples);
      assert.ok(diff <= 1e-4 * Math.max(1, maxAbs(cpu.samples)), `${name}: cpu vs ${where} samples differ by ${diff}`);
    }
  });

  // Classifier-free guidance on the device: each step's forward runs the
  // doubled batch [x; x] with labels [labels; null] (CUDA-graph replays of
  // the 2B forward), and the CUDA step kernels (the elementwise one, the
  // dynamic-thresholding pair, the solvers' convert) read the guided
  // combination. Guidance multiplies the forward's rounding differences by
  // up to |s| + |1 - s|: the tolerances are the unguided ones times that.
  const guidedTolerance = (reference: Float32Array, s: number, relative: number) =>
    relative * Math.max(1, maxAbs(reference)) * Math.max(1, Math.abs(s) + Math.abs(1 - s));
  test(`guided sampling on ${where} equals the cpu's (DDIM, DPM++, dynamic thresholding)`, async () => {
    const config = { ...microConfig, num_class_embeds: 4, _classifier_free_guidance: { null_class_label: 3, label_dropout: 0.1 } };
    const run = async (backend: BackendName, kind: 'ddim' | 'dpm++' | 'threshold') => {
      const unet = await createUNet(config, { backend, seed: 3 });
      try {
        const scheduler =
          kind === 'ddim' ? new DDIMScheduler() : kind === 'dpm++' ? solverFromConfig('dpm++', {}) : new DDPMScheduler({ thresholding: true, clipSample: false });
        const generator = kind === 'dpm++' ? 'torch' : 'philox';
        const eta = kind === 'ddim' ? 0.7 : undefined;
        const r = await sample({ unet, scheduler, numInferenceSteps: 2, batchSize: 2, seed: 4, generator, eta, classLabels: [1, 2], guidanceScale: 2.5 });
        return r.samples;
      } finally {
        unet.dispose();
      }
    };
    for (const kind of ['ddim', 'dpm++', 'threshold'] as const) {
      const cpu = await run('cpu', kind);
      const cuda = await run('cuda', kind);
      const diff = maxAbsDiff(cpu, cuda);
      assert.ok(diff <= guidedTolerance(cpu, 2.5, 1e-5), `${kind}: cpu vs ${where} differ by ${diff}`);
    }
  });

  // Against diffusers' guided loop (tools/make_cfg_fixtures.py): every case on a GPU.
  test(`guided sampling on ${where} reproduces diffusers' guided loop`, { skip: options.emulated && SLOW }, async () => {
    const meta = JSON.parse(readFileSync(fixturePath('pipelines/cfg_samples.json'), 'utf8')) as {
      cases: { name: string; scheduler: 'ddpm' | 'ddim' | SolverName; overrides: Record<string, unknown>; steps: number; seed: number; guidance_scale: number; class_labels: number[]; eta?: number }[];
    };
    const references = await readSafetensorsFile(fixturePath('pipelines/cfg_samples.safetensors'));
    const unet = await loadUNet(fixturePath('unet/cfg'), { backend: 'cuda' });
    try {
      for (const c of meta.cases) {
        const scheduler = c.scheduler === 'ddpm' ? new DDPMScheduler() : c.scheduler === 'ddim' ? new DDIMScheduler() : solverFromConfig(c.scheduler, c.overrides);
        const result = await sample({
          unet, scheduler, numInferenceSteps: c.steps, batchSize: c.class_labels.length, seed: BigInt(c.seed),
          generator: 'torch', classLabels: c.class_labels, guidanceScale: c.guidance_scale, ...(c.eta !== undefined ? { eta: c.eta } : {}),
        });
        const expected = tensorToFloat32(references, c.name);
        const diff = maxAbsDiff(result.samples, expected);
        assert.ok(diff <= guidedTolerance(expected, c.guidance_scale, 1e-4), `${c.name} (${c.scheduler}, s ${c.guidance_scale}) on ${where}: off by ${diff}`);
      }
    } finally {
      unet.dispose();
    }
  });

  test(`a float16 / bfloat16 UNet on ${where} repacks both half layouts after an AdamW step; a sampling-only one refuses to train`, async () => {
    // After a step, the forward and the next step's gradients (whose data
    // gradients read the transposed half layout) must be those of a model
    // loaded with the stepped weights, to the bit: a stale layout in either
    // would differ.
    const name = 'class-timestep';
    const grads = await readSafetensorsFile(fixturePath(`unet/${name}/train_step.safetensors`));
    const batch = await batchFrom(grads);
    const x = new Float32Array(2 * 2 * 8 * 8).map((_, i) => Math.sin(i));
    const run = async (unet: UNet2DModel) => {
      const engine = engineOf(unet);
      const out = await unet.forward(x, [2, 2, 8, 8], [5, 900], [3, 250]);
      await engine.trainStep(batch);  // after trainInit zeroed the gradients: this step's alone
      return { out, grads: engine.paramTable().map((_, i) => engine.readTensor(i, 'grad')) };
    };
    for (const dtype of ['float16', 'bfloat16'] as const) {
      const stepped = await loadUNet(fixturePath(`unet/${name}`), { backend: 'cuda', dtype });
      const fresh = await loadUNet(fixturePath(`unet/${name}`), { backend: 'cuda', dtype });
      try {
        const engine = engineOf(stepped);
        engine.trainInit({ ema: false });
        writeReferenceGrads(engine, grads);
        engine.adamwStep({ lr: 1e-2, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.01, step: 1, gradScale: 1 });
        engine.trainInit({ ema: false });
        const freshEngine = engineOf(fresh);
        engine.paramTable().forEach((_, i) => freshEngine.writeTensor(i, 'param', engine.readTensor(i, 'param')));
        freshEngine.repack();
        freshEngine.trainInit({ ema: false });
        const a = await run(stepped), b = await run(fresh);
        assert.deepEqual(a.out, b.out, `${dtype}: the forward after the step`);
        a.grads.forEach((g, i) => assert.deepEqual(g, b.grads[i], `${dtype}: gradient ${i} after the step`));
        // And the step changed them: against the unstepped model, the forward differs.
        const before = await loadUNet(fixturePath(`unet/${name}`), { backend: 'cuda', dtype });
        try {
          assert.ok(maxAbsDiff(await before.forward(x, [2, 2, 8, 8], [5, 900], [3, 250]), a.out) > 1e-3);
        } finally {
          before.dispose();
        }
      } finally {
        stepped.dispose();
        fresh.dispose();
      }
      // A sampling-only model (loadPipeline's) packs no data-gradient layout and keeps no weights.
      const samplingOnly = await loadUNet(fixturePath(`unet/${name}`), { backend: 'cuda', dtype, keepWeights: false });
      try {
        assert.throws(
          () => new Trainer({ unet: samplingOnly, noiseScheduler: new DDPMScheduler(), optimizer: { lr: 1e-4 } }),
          (e: unknown) => e instanceof Error && /released its unpacked weights/.test((e as Error).message),
        );
      } finally {
        samplingOnly.dispose();
      }
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
    const native = fileURLToPath(new URL('../src/node/native.js', import.meta.url));
    const script = `import('${native}').then((m) => { const r = m.loadAddon().cudaFaultProbe(0); console.log(JSON.stringify(r)); console.log('alive'); });`;
    const out = execFileSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8' });
    const lines = out.trim().split('\n');
    const result = JSON.parse(lines[0]!) as { status: number; message: string };
    assert.equal(result.status, 5, `status ${result.status}: ${result.message}`);
    assert.match(result.message, /illegal address|cudaError/);
    assert.equal(lines[1], 'alive');
  });
}
