// The GPU benchmark (bench/gpu-check.sh runs it): on CUDA device 0, the
// cifar10-32 architecture (random weights) forward at batch 1, 8, 64 and 256
// in each dtype (float32; float16 and bfloat16: the tensor-core conv GEMMs),
// a 50-step DDIM sampling run against 50 bare forwards, and the training step
// (forward + backward + AdamW; float32 and mixed-precision bfloat16,
// BENCH_TRAIN_DTYPES) on the GPU at batch 16 and 64, with
// the cpu's at batch 16 for scale, the conv GEMMs alone at batch 256
// (TFLOPS and percent of the half-type tensor-core peak; BENCH_CONV=0 skips
// them), and attention at long token counts, fused and not (BENCH_ATTENTION=0). Writes bench/results/gpu.json, and
// $OUT/gpu.json when OUT is set.
// Without a device it writes the reason and exits with status 2.
import { mkdirSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { createUNet } from '../src/index.js';
import type { DType } from '../src/index.js';
import { cudaDevices, loadAddon } from '../src/node/native.js';
import { sample } from '../src/core/sampler.js';
import { DDIMScheduler } from '../src/core/schedulers/ddim.js';
import { packStepCoefficients } from '../src/core/schedulers/engine_step.js';
import { CIFAR10_CONFIG, CIFAR10_GFLOP_PER_IMAGE } from './models.js';

const batches = (process.env.BENCH_BATCHES ?? '1,8,64,256').split(',').filter(Boolean).map(Number);  // '' for none
const dtypes = (process.env.BENCH_DTYPES ?? 'float32,float16,bfloat16').split(',') as DType[];
const ddimBatches = (process.env.BENCH_DDIM_BATCHES ?? '1,64').split(',').filter(Boolean).map(Number);  // '' for none
// The half types' forward again with float32 activations (MARBLE_CUDA_HALF_ACTIVATIONS=0) at these batches.
const floatActivationBatches = (process.env.BENCH_FLOAT_ACTIVATION_BATCHES ?? '256').split(',').filter(Boolean).map(Number);
const budgetMs = Number(process.env.BENCH_TIME_MS ?? 1500);  // per measurement, after one warm-up
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const round = (x: number, digits = 2) => Math.round(x * 10 ** digits) / 10 ** digits;

/** Runs `fn` once to warm up, then until the budget is spent (3 to 50 times); the median in ms. */
async function time(fn: () => Promise<unknown>): Promise<{ ms: number; runs: number }> {
  await fn();
  const times: number[] = [];
  const start = performance.now();
  while (times.length < 3 || (times.length < 50 && performance.now() - start < budgetMs)) {
    const t0 = performance.now();
    await fn();
    times.push(performance.now() - t0);
  }
  return { ms: median(times), runs: times.length };
}

const devices = cudaDevices();
const result: Record<string, unknown> = {
  date: new Date().toISOString(),
  node: process.version,
  host: `${os.cpus()[0]?.model} (${os.cpus().length} cores)`,
  cuda: devices,
  model: 'google/ddpm-cifar10-32 architecture, random weights (forward: each dtype; DDIM: float32)',
  // Hopper's warpgroup MMA for the half-type conv GEMMs (MARBLE_CUDA_WGMMA=1, where the device has sm_90a code).
  wgmmaRequested: process.env.MARBLE_CUDA_WGMMA === '1',
  gflopPerImage: CIFAR10_GFLOP_PER_IMAGE,
};

function write(): void {
  const here = path.dirname(fileURLToPath(import.meta.url));
  const outDir = path.resolve(here, '..', '..', 'bench', 'results');
  mkdirSync(outDir, { recursive: true });
  const text = JSON.stringify(result, null, 2) + '\n';
  writeFileSync(path.join(outDir, 'gpu.json'), text);
  if (process.env.OUT) writeFileSync(path.join(process.env.OUT, 'gpu.json'), text);
}

if (devices.count === 0) {
  result.skipped = `no CUDA device: ${devices.reason}`;
  console.error(result.skipped);
  write();
  process.exit(2);
}

const errors: string[] = [];
result.errors = errors;
const unetF32 = await createUNet(CIFAR10_CONFIG, { backend: 'cuda', seed: 1, memoryLimitBytes: Number.MAX_SAFE_INTEGER });
const forward: Record<string, number | string | boolean>[] = [];
result.forward = forward;
// A half type's model has half activations (engine/ops.h) unless created
// with MARBLE_CUDA_HALF_ACTIVATIONS=0: the second variant, at fewer batches.
const forwardVariants = dtypes.flatMap((dtype): { dtype: DType; halfActivations: boolean; at: number[] }[] =>
  dtype === 'float32' ? [{ dtype, halfActivations: false, at: batches }] : [
    { dtype, halfActivations: true, at: batches },
    { dtype, halfActivations: false, at: floatActivationBatches },
  ]);
for (const { dtype, halfActivations, at } of forwardVariants) {
  if (at.length === 0) continue;
  let model = unetF32;
  try {
    if (dtype !== 'float32') {
      if (!halfActivations) process.env.MARBLE_CUDA_HALF_ACTIVATIONS = '0';
      model = await createUNet(CIFAR10_CONFIG, { backend: 'cuda', seed: 1, memoryLimitBytes: Number.MAX_SAFE_INTEGER, dtype });
    }
  } catch (e) {
    errors.push(`forward ${dtype}: ${(e as Error).message}`);
    continue;
  } finally {
    delete process.env.MARBLE_CUDA_HALF_ACTIVATIONS;
  }
  for (const batch of at) {
    try {
      const x = new Float32Array(batch * 3 * 32 * 32).map((_, i) => Math.sin(i));
      const t = await time(() => model.forward(x, [batch, 3, 32, 32], 500));
      forward.push({
        dtype,
        halfActivations,
        batch,
        ms: round(t.ms),
        runs: t.runs,
        imagesPerSecond: round((batch * 1000) / t.ms, 1),
        gflops: round((CIFAR10_GFLOP_PER_IMAGE * batch) / (t.ms / 1000), 1),
        activationMB: round(model.activationBytes(batch, 32, 32) / 2 ** 20, 1),
      });
      console.log(`cuda forward ${dtype}${dtype !== 'float32' && !halfActivations ? ' (float32 activations)' : ''} b${batch}: ${t.ms.toFixed(2)} ms (${t.runs} runs)`);
    } catch (e) {
      errors.push(`forward ${dtype} b${batch}: ${(e as Error).message}`);
      console.error(errors.at(-1));
    }
  }
  if (model !== unetF32) model.dispose();
}
write();

// The conv GEMMs alone (the tensor-core target: at batch 256, at
// least 40% of the bf16 tensor-core peak): the cifar10-32 UNet's 3x3 convs at
// batch 256, one layer timed over 20 launches, in each dtype; for the half
// types both with a float32 input (rounded as the A tiles fill) and with the
// input already in the type (half activations: what a sampling model's
// resnet convs read), and each again on Hopper's warpgroup MMA where the
// device has it (sm_90a). Percent of peak against the datasheet's dense bf16/fp16
// tensor-core figure where the device is known (H100/H200 SXM 989.4 TFLOPS,
// H100 PCIe 756.5), else null.
const convShapes = [
  { cin: 128, cout: 128, size: 32 },
  { cin: 256, cout: 256, size: 16 },
  { cin: 256, cout: 256, size: 8 },
];
const convBatch = Number(process.env.BENCH_CONV_BATCH ?? 256);
const deviceName = devices.devices?.[0]?.name ?? '';
const halfPeakTflops = /H200|H100.*(SXM|HBM3)|GH200/.test(deviceName) ? 989.4 : /H100.*PCIe/.test(deviceName) ? 756.5 : null;
const convRows: Record<string, number | string | boolean | null>[] = [];
result.convGemm = { batch: convBatch, halfPeakTflops, rows: convRows };
if (process.env.BENCH_CONV !== '0') {
  const addon = loadAddon();
  const weightTypes: Record<string, number> = { float32: 0, float16: 1, bfloat16: 2 };
  const WGMMA = 1, HALF_INPUT = 2;  // cudaConvBench's flags
  for (const dtype of dtypes)
    for (const wgmma of dtype === 'float32' ? [0] : [0, WGMMA])
      for (const halfInput of dtype === 'float32' ? [0] : [0, HALF_INPUT])
        for (const { cin, cout, size } of convShapes) {
          const r = addon.cudaConvBench(0, weightTypes[dtype]!, wgmma | halfInput, convBatch, cin, cout, size, size, 20);
          const label = `conv ${dtype}${wgmma ? ' wgmma' : ''}${halfInput ? ' half-input' : ''} b${convBatch} ${cin}->${cout} @${size}`;
          if (r.status !== 0) {
            if (wgmma && /warpgroup/.test(r.reason)) break;  // not an sm_90a device: no warpgroup MMA rows
            errors.push(`${label}: ${r.reason}`);
            console.error(errors.at(-1));
            continue;
          }
          const tflops = (2 * convBatch * size * size * cout * cin * 9) / (r.ms / 1000) / 1e12;
          convRows.push({
            dtype, wgmma: wgmma !== 0, halfInput: halfInput !== 0, cin, cout, size, ms: round(r.ms, 3), tflops: round(tflops, 1),
            percentOfHalfPeak: halfPeakTflops && dtype !== 'float32' ? round((tflops / halfPeakTflops) * 100, 1) : null,
          });
          console.log(`${label}: ${r.ms.toFixed(3)} ms, ${tflops.toFixed(1)} TFLOPS`);
        }
}
write();

// Attention at long token counts (64-channel heads, as latent-diffusion
// UNets have at 32 x 32 and 64 x 64): the fused flash-style kernel against
// the batched GEMMs + softmax, which the engine leaves from 1024 tokens on
// (native/cuda/attention.cu's use_flash, when its blocks fill the GPU; a
// 256-token row and a one-head batch-1 row show the other side).
// BENCH_ATTENTION=0 skips them.
const attentionRows: Record<string, number | boolean>[] = [];
result.attention = attentionRows;
if (process.env.BENCH_ATTENTION !== '0') {
  const addon = loadAddon();
  const shapes = [
    { batch: 16, tokens: 256, heads: 8, headDim: 64 },
    { batch: 8, tokens: 1024, heads: 8, headDim: 64 },
    { batch: 2, tokens: 4096, heads: 8, headDim: 64 },
    { batch: 1, tokens: 4096, heads: 1, headDim: 64 },  // 32 blocks: the engine keeps these unfused
  ];
  for (const { batch, tokens, heads, headDim } of shapes)
    for (const fused of [0, 1]) {
      const r = addon.cudaAttentionBench(0, fused, batch, tokens, heads, headDim, 10);
      const label = `attention ${fused ? 'fused' : 'unfused'} b${batch} ${tokens} tokens ${heads}x${headDim}`;
      if (r.status !== 0) {
        errors.push(`${label}: ${r.reason}`);
        console.error(errors.at(-1));
        continue;
      }
      const tflops = (4 * batch * heads * tokens * tokens * headDim) / (r.ms / 1000) / 1e12;
      attentionRows.push({ fused: fused === 1, batch, tokens, heads, headDim, ms: round(r.ms, 3), tflops: round(tflops, 2) });
      console.log(`${label}: ${r.ms.toFixed(3)} ms, ${tflops.toFixed(2)} TFLOPS`);
    }
}
write();

// A DDIM run is 50 forwards plus 50 fused steps, all queued on the device in
// one call (engine/sampling.cpp) with the forward replayed from a CUDA graph
// from step 2 on: the overhead column compares a step with a bare forward
// (which also copies its input up and its output down and waits). In
// float32 and, at batch 1 (BENCH_DDIM_HALF_BATCHES), bfloat16 (tensor-core
// GEMMs, half activations): the 100 ms target is for the architecture,
// whichever dtype meets it.
const ddim: Record<string, number | string>[] = [];
result.ddim50 = ddim;
const ddimHalfBatches = (process.env.BENCH_DDIM_HALF_BATCHES ?? '1').split(',').filter(Boolean).map(Number);
const ddimRuns = [
  ...ddimBatches.map((batch) => ({ dtype: 'float32' as DType, batch })),
  ...(dtypes.includes('bfloat16') ? ddimHalfBatches.map((batch) => ({ dtype: 'bfloat16' as DType, batch })) : []),
];
let halfUnet: Awaited<ReturnType<typeof createUNet>> | null = null;
for (const { dtype, batch } of ddimRuns) {
  try {
    let unet = unetF32;
    if (dtype !== 'float32') {
      halfUnet ??= await createUNet(CIFAR10_CONFIG, { backend: 'cuda', seed: 1, memoryLimitBytes: Number.MAX_SAFE_INTEGER, dtype });
      unet = halfUnet;
    }
    const x = new Float32Array(batch * 3 * 32 * 32).map((_, i) => Math.sin(i));
    const scheduler = new DDIMScheduler();
    const fwd = await time(() => unet.forward(x, [batch, 3, 32, 32], 500));
    await sample({ unet, scheduler, numInferenceSteps: 50, batchSize: batch, seed: 0 });  // warm-up
    const t0 = performance.now();
    await sample({ unet, scheduler, numInferenceSteps: 50, batchSize: batch, seed: 0 });
    const ms = performance.now() - t0;
    // How the loop's forwards ran: replays of the recorded pass vs direct.
    const run = await unet.startSampling([batch, 3, 32, 32], null);
    let replays = -1;
    if (run) {
      const steps = 3;
      scheduler.setTimesteps(steps);
      const coefficients = new Float32Array(15 * steps);
      scheduler.timesteps.forEach((t, i) => coefficients.set(packStepCoefficients(scheduler.stepCoefficients(t, { eta: 0 })), 15 * i));
      await run.init(null, 0n, 0n);
      await run.steps(Float32Array.from(scheduler.timesteps), coefficients, 0n, 1, null, false);
      replays = run.stats().replays;
      await run.end();
    }
    ddim.push({
      dtype,
      batch,
      ms: round(ms, 1),
      msPerStep: round(ms / 50),
      forwardMs: round(fwd.ms),
      overheadPercent: round(((ms / 50 - fwd.ms) / fwd.ms) * 100, 1),
      imagesPerSecond: round((batch * 1000) / ms, 2),
      graphReplaysOf3Steps: replays,
    });
    console.log(`cuda DDIM-50 ${dtype} b${batch}: ${ms.toFixed(1)} ms`);
  } catch (e) {
    errors.push(`ddim ${dtype} b${batch}: ${(e as Error).message}`);
    console.error(errors.at(-1));
  }
}
halfUnet?.dispose();
unetF32.dispose();
write();

// The training step: forward + backward + AdamW, on the GPU in float32 and
// in mixed precision (bfloat16: tensor-core forward and data gradients,
// float32 weight gradients and optimizer), and on the cpu for scale.
const train: Record<string, unknown> = {};
result.trainStep = train;
const trainBatches = (process.env.BENCH_TRAIN_BATCHES ?? '16,64').split(',').filter(Boolean).map(Number);  // '' for none
const trainDtypes = (process.env.BENCH_TRAIN_DTYPES ?? 'float32,bfloat16').split(',').filter(Boolean) as DType[];
const trainRows: Record<string, number | string>[] = [];
train.cuda = trainRows;
const { Trainer, DDPMScheduler } = await import('../src/index.js');
for (const dtype of trainDtypes) {
  for (const batch of trainBatches) {
    try {
      const gpu = await createUNet(CIFAR10_CONFIG, { backend: 'cuda', seed: 1, memoryLimitBytes: Number.MAX_SAFE_INTEGER, dtype });
      const trainer = new Trainer({ unet: gpu, noiseScheduler: new DDPMScheduler(), optimizer: { lr: 1e-4 }, seed: 0 });
      const x = new Float32Array(batch * 3 * 32 * 32).map((_, i) => Math.sin(i) * 0.9);
      const t = await time(() => trainer.step(x));
      const fwd = await time(() => gpu.forward(x, [batch, 3, 32, 32], 500));
      trainRows.push({ dtype, batch, ms: round(t.ms, 2), runs: t.runs, forwardMs: round(fwd.ms, 2), trainOverForward: round(t.ms / fwd.ms, 2) });
      console.log(`cuda training step ${dtype} b${batch}: ${t.ms.toFixed(2)} ms (forward ${fwd.ms.toFixed(2)} ms)`);
      gpu.dispose();
    } catch (e) {
      errors.push(`cuda training step ${dtype} b${batch}: ${(e as Error).message}`);
      console.error(errors.at(-1));
    }
  }
}
write();
if (process.env.BENCH_CPU_TRAIN !== '0') {
  try {
    const cpu = await createUNet(CIFAR10_CONFIG, { backend: 'cpu', seed: 1 });
    const trainer = new Trainer({ unet: cpu, noiseScheduler: new DDPMScheduler(), optimizer: { lr: 1e-4 }, seed: 0 });
    const batch = 16;
    const x = new Float32Array(batch * 3 * 32 * 32).map((_, i) => Math.sin(i) * 0.9);
    const t = await time(() => trainer.step(x));
    train.cpu = { batch, ms: round(t.ms, 1), runs: t.runs, threads: cpu.backend.threads() };
    console.log(`cpu training step b${batch}: ${t.ms.toFixed(1)} ms`);
    cpu.dispose();
  } catch (e) {
    errors.push(`cpu training step: ${(e as Error).message}`);
  }
}
write();
console.log(JSON.stringify({ forward, ddim50: ddim, trainStep: train, errors }, null, 2));
