// The sampling loop: noise -> (UNet forward + fused scheduler step) x N -> samples.
//
// Each step is two engine calls on the UNet's backend: the forward pass and
// the fused DDPM/DDIM step (native/cpu/diffusion_step.cpp). The scheduler
// only computes that step's handful of float32 scalars.
//
// Classifier-free guidance (`guidanceScale` s != 1, models trained with
// label dropout, core/model/guidance.ts): each forward runs the batch with
// its labels and with the null label in one doubled batch, and the fused
// step combines the halves as eps_u + s * (eps_c - eps_u); the sample, the
// noise draws and the step's other arrays keep the batch's size, so seeds
// give the same initial noise guided or not.
//
// Noise: `philox` (default) draws from the engine's counter-based generator,
// identical on every backend; `torch` reproduces torch.Generator('cpu')
// .manual_seed(seed) + torch.randn in diffusers' pipeline order, so a seed
// gives the image DDPMPipeline / DDIMPipeline give on CPU.
import { ConfigError, InputError } from './errors.js';
import { imagesToGridPng, imagesToRgba, samplesToImages } from './image/png.js';
import type { RgbaImage } from './image/png.js';
import type { DeviceSampling, UNet2DModel } from './model/unet.js';
import { classConditioning } from './model/config.js';
import { checkGuidanceScale, guidedInput, guidedLabels } from './model/guidance.js';
import { TorchGenerator } from './rng/torch.js';
import { DDIMScheduler } from './schedulers/ddim.js';
import { DDPMScheduler } from './schedulers/ddpm.js';
import { kStepCoefficientSlots, packStepCoefficients, runStepKernel } from './schedulers/engine_step.js';
import { NoiseTerm } from './schedulers/step_kernel.js';
import type { StepCoefficients } from './schedulers/step_kernel.js';
import { isSolverScheduler, type SolverScheduler } from './schedulers/solvers.js';
import { sampleWithSolver } from './solver_sampler.js';

export type GeneratorName = 'philox' | 'torch';

export interface StepInfo {
  /** 0-based step index */
  index: number;
  /** the timestep of this step */
  t: number;
  total: number;
  /** The model's estimate of x0 after this step (NCHW); present only with `preview: true`. */
  predOriginalSample?: Float32Array;
}

export interface SampleOptions {
  unet: UNet2DModel;
  /** DDPM, DDIM, or a multistep / sigma-space solver (DPM-Solver++, UniPC, Euler, Euler ancestral, Heun). */
  scheduler: DDPMScheduler | DDIMScheduler | SolverScheduler;
  /** Default: 50 for DDIM, 20 for the solvers, num_train_timesteps for DDPM (as diffusers' pipelines default to 1000). */
  numInferenceSteps?: number;
  batchSize?: number;
  /** Default 0. Any integer in [0, 2^64). */
  seed?: number | bigint;
  /**
   * One seed per sample, instead of `seed`: sample b's initial and step noise
   * come from its own stream (philox: draws of seeds[b] of one sample's size;
   * torch: its own generator), so it is the image `seed: seeds[b]` gives at
   * batch size 1, whatever else shares the batch.
   */
  seeds?: readonly (number | bigint)[];
  generator?: GeneratorName;
  /** DDIM only: 0 is deterministic DDIM, 1 is DDPM-like. Default 0. */
  eta?: number;
  /** DDIM only: re-derive epsilon from the clipped x0. */
  useClippedModelOutput?: boolean;
  /** One class label per sample, for class-conditional models. */
  classLabels?: number[];
  /**
   * Classifier-free guidance scale s (models trained with label dropout,
   * which record a null class): eps_u + s * (eps_c - eps_u). 1 or absent: no
   * guidance (one forward of the batch). Any other finite s >= 0 runs the
   * conditional and unconditional passes in one doubled batch.
   */
  guidanceScale?: number;
  /** Image size; default: the model's sample_size. */
  height?: number;
  width?: number;
  onStep?: (info: StepInfo) => void | Promise<void>;
  /** Hand onStep a copy of pred x0 at each step. */
  preview?: boolean;
  signal?: AbortSignal;
}

export interface SampleResult {
  /** [B, C, H, W] in model space (about [-1, 1]) */
  samples: Float32Array;
  shape: [number, number, number, number];
  /** RGBA images, ImageData-compatible: `ctx.putImageData(new ImageData(image.data, image.width), x, y)`. */
  images(): RgbaImage[];
  /** the batch as one grid PNG */
  png(options?: { columns?: number }): Uint8Array;
}

function abortError(signal: AbortSignal): Error {
  const reason = signal.reason;
  if (reason instanceof Error) return reason;
  return new DOMException(typeof reason === 'string' ? reason : 'sampling was aborted', 'AbortError');
}

function toSeed(seed: number | bigint): bigint {
  if (typeof seed === 'number' && !Number.isSafeInteger(seed)) throw new InputError(`seed ${seed} must be an integer`);
  const s = BigInt(seed);
  if (s < 0n || s >= 1n << 64n) throw new InputError(`seed ${seed} must be in [0, 2^64)`);
  return s;
}

/** Validates every option before any work, and resolves defaults. */
function resolve(options: SampleOptions) {
  const { unet, scheduler } = options;
  if (!unet) throw new InputError('sample: unet is required');
  const isSolver = isSolverScheduler(scheduler);
  if (!(scheduler instanceof DDPMScheduler) && !(scheduler instanceof DDIMScheduler) && !isSolver)
    throw new InputError('sample: scheduler must be a DDPM, DDIM, DPMSolverMultistep, UniPCMultistep, EulerDiscrete, EulerAncestralDiscrete or HeunDiscrete scheduler');
  const isDDIM = scheduler instanceof DDIMScheduler;
  const trainSteps = scheduler.config.numTrainTimesteps;
  const numInferenceSteps = options.numInferenceSteps ?? (isDDIM ? 50 : isSolver ? 20 : trainSteps);
  if (!Number.isInteger(numInferenceSteps) || numInferenceSteps < 1 || numInferenceSteps > trainSteps)
    throw new InputError(`numInferenceSteps must be an integer from 1 to num_train_timesteps (${trainSteps}), got ${numInferenceSteps}`);
  const batchSize = options.batchSize ?? 1;
  if (!Number.isInteger(batchSize) || batchSize < 1) throw new InputError(`batchSize must be a positive integer, got ${batchSize}`);
  const eta = options.eta ?? 0;
  if (typeof eta !== 'number' || !(eta >= 0) || !Number.isFinite(eta)) throw new InputError(`eta must be a number >= 0, got ${eta}`);
  if (!isDDIM && options.eta !== undefined && options.eta !== 0)
    throw new InputError('eta applies to DDIM only (DDPM always adds its variance noise)');
  const generator = options.generator ?? 'philox';
  if (generator !== 'philox' && generator !== 'torch') throw new InputError(`generator must be 'philox' or 'torch', got ${String(generator)}`);
  const seed = toSeed(options.seed ?? 0);
  let seeds: bigint[] | null = null;
  if (options.seeds !== undefined) {
    if (options.seed !== undefined) throw new InputError('pass seed or seeds, not both');
    if (!Array.isArray(options.seeds) || options.seeds.length !== batchSize)
      throw new InputError(`seeds must be an array of ${batchSize} seeds (one per sample), got ${Array.isArray(options.seeds) ? options.seeds.length : typeof options.seeds}`);
    seeds = options.seeds.map((s) => toSeed(s));
  }

  const size = unet.config.sampleSize;
  const defaultH = Array.isArray(size) ? size[0] : size;
  const defaultW = Array.isArray(size) ? size[1] : size;
  const height = options.height ?? defaultH;
  const width = options.width ?? defaultW;
  if (typeof height !== 'number' || typeof width !== 'number' || !Number.isInteger(height) || !Number.isInteger(width) || height < 1 || width < 1)
    throw new InputError('sample: height and width are needed (the model config has no sample_size)');
  const shape: [number, number, number, number] = [batchSize, unet.config.inChannels, height, width];
  const guidanceScale = checkGuidanceScale(options.guidanceScale);
  const guided = guidanceScale !== 1;
  if (guided && !unet.config.guidance)
    throw new InputError(
      'guidanceScale needs a model trained for classifier-free guidance (with label dropout: `marble train --cfg-dropout`); this one records no null class',
    );
  // The whole sampling run must fit: ask the engine now, not at step 1.
  unet.activationBytes(guided ? 2 * batchSize : batchSize, height, width);

  const conditioning = classConditioning(unet.config);
  let classLabels: number[] | undefined;
  if (conditioning === 'labels') {
    const n = unet.config.numClassEmbeds!;
    if (!options.classLabels) throw new InputError(`this model is class-conditional: pass classLabels (${batchSize} labels in [0, ${n}))`);
    if (options.classLabels.length !== batchSize)
      throw new InputError(`classLabels has ${options.classLabels.length} labels for a batch of ${batchSize}`);
    options.classLabels.forEach((label, i) => {
      if (!Number.isInteger(label) || label < 0 || label >= n) throw new InputError(`class label ${label} at index ${i} is not an integer in [0, ${n})`);
    });
    classLabels = options.classLabels;
  } else if (conditioning !== 'none') {
    throw new InputError(`sampling with class_embed_type ${unet.config.classEmbedType} is not supported; pass labels through unet.forward`);
  } else if (options.classLabels && options.classLabels.length > 0) {
    throw new InputError('classLabels were given but this model is not class-conditional');
  }
  // What each forward runs on: the batch's labels, or [labels; null labels] guided.
  const forwardLabels = classLabels && guided ? guidedLabels(classLabels, unet.config.guidance!) : classLabels;
  return { unet, scheduler, isDDIM, numInferenceSteps, batchSize, eta, generator, seed, seeds, shape, classLabels, guidanceScale, forwardLabels };
}

/** Generates images with a UNet and a DDPM or DDIM scheduler. */
export async function sample(options: SampleOptions): Promise<SampleResult> {
  const r = resolve(options);
  const { unet, scheduler, shape } = r;
  const { signal } = options;
  if (signal?.aborted) throw abortError(signal);
  const outChannels = unet.config.outChannels;
  if (outChannels !== shape[1] && outChannels !== 2 * shape[1])
    throw new ConfigError(`sampling needs out_channels = in_channels (or twice it, with a learned variance); got ${outChannels}`);

  if (isSolverScheduler(scheduler)) {
    const samples = await sampleWithSolver({
      unet, scheduler, shape, signal, abortError,
      numInferenceSteps: r.numInferenceSteps,
      seed: r.seed,
      torch: r.generator === 'torch' ? new TorchGenerator(r.seed) : null,
      perSample: r.seeds ? perSampleNoise(r) : null,
      classLabels: r.forwardLabels,
      guidanceScale: r.guidanceScale,
      preview: options.preview,
      onStep: options.onStep,
    });
    return resultOf(samples, shape);
  }

  scheduler.setTimesteps(r.numInferenceSteps);
  const timesteps = scheduler.timesteps.slice();
  // Each step's scalars depend on its timestep only, not on the sample.
  const coefficients: StepCoefficients[] = timesteps.map((t) =>
    r.isDDIM
      ? (scheduler as DDIMScheduler).stepCoefficients(t, { eta: r.eta, useClippedModelOutput: options.useClippedModelOutput })
      : (scheduler as DDPMScheduler).stepCoefficients(t, outChannels === 2 * shape[1]),
  );
  // The loop on the model's device where the backend has one.
  const classCond = r.forwardLabels ? Float32Array.from(r.forwardLabels) : null;
  const onDevice = await unet.startSampling(shape, classCond, r.guidanceScale);
  const samples = onDevice
    ? await sampleOnDevice(r, options, timesteps, coefficients, onDevice)
    : await sampleThroughForward(r, options, timesteps, coefficients);
  return resultOf(samples, shape);
}

function resultOf(samples: Float32Array, shape: [number, number, number, number]): SampleResult {
  return {
    samples,
    shape,
    images: () => imagesToRgba(samplesToImages(samples, shape)),
    png: (pngOptions) => imagesToGridPng(samplesToImages(samples, shape), pngOptions),
  };
}

type Resolved = ReturnType<typeof resolve>;

/**
 * With per-sample seeds: a function from draw index (0: the initial sample,
 * i + 1: step i's noise) to the batch's noise, each sample's slice drawn from
 * its own stream. Draws must be asked for in increasing order (the torch
 * generators are sequential); philox draw d of seed s is the batch-1 draw d.
 */
function perSampleNoise(r: Resolved): (draw: number) => Float32Array {
  const seeds = r.seeds!;
  const per = r.shape[1] * r.shape[2] * r.shape[3];
  const torch = r.generator === 'torch' ? seeds.map((s) => new TorchGenerator(s)) : null;
  return (draw) => {
    const out = new Float32Array(per * seeds.length);
    seeds.forEach((s, b) => out.set(torch ? torch[b]!.randn(per) : r.unet.backend.randn(s, BigInt(draw), per), b * per));
    return out;
  };
}

// Host noise for the torch generator travels with the steps: at most this
// many floats per call (so a 1000-step run is cut into calls of a few steps).
const kHostNoiseFloatsPerCall = 1 << 22;

/**
 * The loop on the model's device (native backends): the sample stays there;
 * each call queues several steps without waiting for the device, unless a
 * step callback or an abort signal wants control between steps.
 */
async function sampleOnDevice(
  r: Resolved,
  options: SampleOptions,
  timesteps: number[],
  coefficients: StepCoefficients[],
  run: DeviceSampling,
): Promise<Float32Array> {
  const { shape, seed } = r;
  const { signal, onStep } = options;
  const numel = shape[0] * shape[1] * shape[2] * shape[3];
  const perSample = r.seeds ? perSampleNoise(r) : null;
  const torch = !perSample && r.generator === 'torch' ? new TorchGenerator(seed) : null;
  const host = perSample ?? (torch ? (_draw: number) => torch.randn(numel) : null);
  try {
    await run.init(host ? host(0) : null, seed, 0n);
    let perCall = onStep ? 1 : signal ? 8 : timesteps.length;
    if (host) perCall = Math.max(1, Math.min(perCall, Math.floor(kHostNoiseFloatsPerCall / numel)));
    for (let index = 0; index < timesteps.length; index += perCall) {
      if (signal?.aborted) throw abortError(signal);
      const count = Math.min(perCall, timesteps.length - index);
      const packed = new Float32Array(kStepCoefficientSlots * count);
      let hostNoise: Float32Array | null = host ? new Float32Array(count * numel) : null;
      let anyNoise = false;
      for (let j = 0; j < count; j++) {
        const c = coefficients[index + j]!;
        packed.set(packStepCoefficients(c), kStepCoefficientSlots * j);
        // torch draws in diffusers' order: only for the steps that add noise.
        if (c.noiseTerm !== NoiseTerm.None) {
          anyNoise = true;
          if (hostNoise) hostNoise.set(host!(index + j + 1), j * numel);
        }
      }
      if (!anyNoise) hostNoise = null;
      const stepTimesteps = Float32Array.from(timesteps.slice(index, index + count));
      // Philox: the noise of step i is draw i + 1 (draw 0 was the initial sample).
      const x0 = await run.steps(stepTimesteps, packed, seed, index + 1, hostNoise, options.preview === true && !!onStep);
      if (signal?.aborted) throw abortError(signal);
      if (onStep) await onStep({ index, t: timesteps[index]!, total: timesteps.length, predOriginalSample: x0 });
    }
    return await run.read();
  } finally {
    await run.end();
  }
}

/** The loop through forward() and Backend.diffusionStep over host arrays (wasm). */
async function sampleThroughForward(
  r: Resolved,
  options: SampleOptions,
  timesteps: number[],
  coefficients: StepCoefficients[],
): Promise<Float32Array> {
  const { unet, shape } = r;
  const { signal } = options;
  const numel = shape[0] * shape[1] * shape[2] * shape[3];
  const backend = unet.backend;

  // One generator serves the whole call, drawing in diffusers' order (or one per sample).
  const perSample = r.seeds ? perSampleNoise(r) : null;
  const torch = !perSample && r.generator === 'torch' ? new TorchGenerator(r.seed) : null;
  const draw = (index: number): Float32Array =>
    perSample ? perSample(index) : torch ? torch.randn(numel) : backend.randn(r.seed, BigInt(index), numel);

  let x: Float32Array = draw(0); // init_noise_sigma is 1 for both schedulers
  let next: Float32Array = new Float32Array(numel);
  const x0 = new Float32Array(numel);
  const outChannels = unet.config.outChannels;
  const guided = r.guidanceScale !== 1;
  const layout = {
    batchSize: shape[0],
    sampleSize: numel / shape[0],
    modelOutputStride: (outChannels * shape[2] * shape[3]),
    guidanceScale: r.guidanceScale,
  };
  const forwardShape: [number, number, number, number] = guided ? [2 * shape[0], shape[1], shape[2], shape[3]] : shape;

  for (let index = 0; index < timesteps.length; index++) {
    if (signal?.aborted) throw abortError(signal);
    const t = timesteps[index]!;
    const modelOutput = await unet.forward(guided ? guidedInput(x) : x, forwardShape, t, r.forwardLabels);
    if (signal?.aborted) throw abortError(signal);
    const c = coefficients[index]!;
    const noise = c.noiseTerm === NoiseTerm.None ? null : draw(index + 1);
    runStepKernel(backend, c, layout, modelOutput, x, noise, next, x0);
    [x, next] = [next, x];
    if (options.onStep)
      await options.onStep({
        index,
        t,
        total: timesteps.length,
        predOriginalSample: options.preview ? x0.slice() : undefined,
      });
  }
  return x;
}
