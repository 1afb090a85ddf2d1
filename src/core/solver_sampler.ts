// The sampling loop for the multistep and sigma-space schedulers
// (DPM-Solver++, UniPC, Euler, Euler ancestral, Heun), as diffusers'
// pipelines run them: the initial noise times init_noise_sigma,
// scale_model_input before each UNet call, step() with the same generator
// (so generator 'torch' draws the initial noise and every ancestral / SDE
// noise in diffusers' order), and Heun's two stages per timestep (its
// timesteps list each one twice).
//
// Where the backend keeps a sampling run on its device (the native addon:
// cpu and cuda), the whole loop runs there (native/engine/sampling.cpp,
// mb_sample_solver_steps): the sample, the model input, the converted
// outputs of the last steps and the kept sample stay in device memory, each
// step being input scaling, the forward (a CUDA graph replay on cuda), the
// noise and the fused solver kernel. The scheduler plans every step's
// coefficients up front (they depend on the step only). Elsewhere (wasm)
// each step is a forward() plus the fused kernel over host arrays.
import { InputError } from './errors.js';
import { guidedInput } from './model/guidance.js';
import type { DeviceSampling, UNet2DModel } from './model/unet.js';
import { DPMSolverMultistepScheduler } from './schedulers/dpmsolver.js';
import type { TorchGenerator } from './rng/torch.js';
import type { NoiseSource, SolverPlan } from './schedulers/solver_base.js';
import { kSolverCoefficientSlots, needsNoise, packSolverCoefficients } from './schedulers/solver_kernel.js';
import type { SolverScheduler } from './schedulers/solvers.js';

export interface SolverLoopOptions {
  unet: UNet2DModel;
  scheduler: SolverScheduler;
  numInferenceSteps: number;
  shape: [number, number, number, number];
  seed: bigint;
  /** null: Philox draws (the initial sample is draw 0, step i's noise draw i + 1). */
  torch: TorchGenerator | null;
  /**
   * Per-sample seeds (sample()'s `seeds`): draw d of the whole batch, drawn
   * on the host, each sample from its own stream; replaces seed and torch.
   */
  perSample?: ((draw: number) => Float32Array) | null;
  /** The forward's labels: guided, [labels; null labels] (2B). */
  classLabels?: number[];
  /** Classifier-free guidance (sampler.ts): 1 unguided, else the forward runs a doubled batch. */
  guidanceScale?: number;
  signal?: AbortSignal;
  preview?: boolean;
  onStep?: (info: { index: number; t: number; total: number; predOriginalSample?: Float32Array }) => void | Promise<void>;
  abortError: (signal: AbortSignal) => Error;
}

export async function sampleWithSolver(o: SolverLoopOptions): Promise<Float32Array> {
  const { unet, scheduler, shape, signal } = o;
  const backend = unet.backend;
  const numel = shape[0] * shape[1] * shape[2] * shape[3];
  if (unet.config.outChannels !== shape[1] && !(scheduler instanceof DPMSolverMultistepScheduler && scheduler.config.varianceType !== null))
    throw new InputError(
      `the model outputs ${unet.config.outChannels} channels for ${shape[1]}: only DPMSolverMultistepScheduler with variance_type learned or learned_range takes a learned-variance output`,
    );
  scheduler.useBackend(backend);
  scheduler.setTimesteps(o.numInferenceSteps);
  const timesteps = scheduler.timesteps.slice();
  const philox = (draw: number): NoiseSource => ({ randn: (n) => backend.randn(o.seed, BigInt(draw), n) });
  const perSample = o.perSample;
  const batchDraw = (draw: number): NoiseSource => ({
    randn: (n) => {
      if (n !== numel) throw new InputError(`per-sample noise: a draw of ${n} values for a batch of ${numel}`);
      return perSample!(draw);
    },
  });
  const noiseAt = (draw: number): NoiseSource => (perSample ? batchDraw(draw) : (o.torch ?? philox(draw)));

  // The initial noise times init_noise_sigma (Philox draw 0 is the same on the host and the device).
  let x = noiseAt(0).randn(numel);
  const sigma = scheduler.initNoiseSigma;
  if (sigma !== 1) for (let i = 0; i < numel; i++) x[i] = x[i]! * sigma;

  const guidanceScale = o.guidanceScale ?? 1;
  const guided = guidanceScale !== 1;
  const run = await unet.startSampling(shape, o.classLabels ? Float32Array.from(o.classLabels) : null, guidanceScale);
  if (run?.solverSteps) {
    try {
      return await sampleSolverOnDevice(o, run, timesteps, x, numel);
    } finally {
      await run.end();
    }
  }
  await run?.end();

  for (let index = 0; index < timesteps.length; index++) {
    if (signal?.aborted) throw o.abortError(signal);
    const t = timesteps[index]!;
    const input = scheduler.scaleModelInput(x, t);
    const modelOutput = guided
      ? await unet.forward(guidedInput(input), [2 * shape[0], shape[1], shape[2], shape[3]], t, o.classLabels)
      : await unet.forward(input, shape, t, o.classLabels);
    if (signal?.aborted) throw o.abortError(signal);
    const out = scheduler.step(modelOutput, t, x, { generator: noiseAt(index + 1), batchSize: shape[0], guidanceScale });
    x = out.prevSample;
    if (o.onStep)
      await o.onStep({
        index,
        t,
        total: timesteps.length,
        predOriginalSample: o.preview ? (out.predOriginalSample ?? undefined) : undefined,
      });
  }
  return x;
}

// Host noise for the torch generator travels with the steps: at most this
// many floats per call.
const kHostNoiseFloatsPerCall = 1 << 22;

/** The loop on the model's device; each call queues several steps unless a callback or signal wants control. */
async function sampleSolverOnDevice(
  o: SolverLoopOptions,
  run: DeviceSampling,
  timesteps: number[],
  x: Float32Array,
  numel: number,
): Promise<Float32Array> {
  const { scheduler, signal, onStep } = o;
  const plans: SolverPlan[] = timesteps.map((t) => {
    const p = scheduler.planStep(t);
    p.commit();
    return p;
  });
  await run.init(x, o.seed, 0n);
  let perCall = onStep ? 1 : signal ? 8 : timesteps.length;
  const host = o.perSample ? (draw: number) => o.perSample!(draw) : o.torch ? () => o.torch!.randn(numel) : null;
  if (host) perCall = Math.max(1, Math.min(perCall, Math.floor(kHostNoiseFloatsPerCall / numel)));
  const stride = kSolverCoefficientSlots + 1;
  for (let index = 0; index < timesteps.length; index += perCall) {
    if (signal?.aborted) throw o.abortError(signal);
    const count = Math.min(perCall, timesteps.length - index);
    const records = new Float32Array(stride * count);
    const scales = new Float32Array(count);
    let hostNoise: Float32Array | null = host ? new Float32Array(count * numel) : null;
    let anyNoise = false;
    for (let j = 0; j < count; j++) {
      const p = plans[index + j]!;
      records.set(packSolverCoefficients(p.coefficients), stride * j);
      records[stride * j + kSolverCoefficientSlots] = p.coefficients.keepLast ? 1 : 0;
      scales[j] = p.inputScale;
      // torch draws in diffusers' order: only for the steps that add noise.
      if (needsNoise(p.coefficients)) {
        anyNoise = true;
        if (hostNoise) hostNoise.set(host!(index + j + 1), j * numel);
      }
    }
    if (!anyNoise) hostNoise = null;
    const last = plans[index + count - 1]!;
    const wantX0 = o.preview === true && !!onStep && last.x0;
    // Philox: the noise of step i is draw i + 1 (draw 0 was the initial sample).
    const x0 = await run.solverSteps!(Float32Array.from(timesteps.slice(index, index + count)), scales, records, o.seed, index + 1, hostNoise, wantX0);
    if (signal?.aborted) throw o.abortError(signal);
    if (onStep) await onStep({ index, t: timesteps[index]!, total: timesteps.length, predOriginalSample: x0 });
  }
  return await run.read();
}
