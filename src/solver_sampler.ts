// The sampling loop for the multistep and sigma-space schedulers
// (DPM-Solver++, UniPC, Euler, Euler ancestral, Heun), as diffusers'
// pipelines run them: the initial noise times init_noise_sigma,
// scale_model_input before each UNet call, step() with the same generator
// (so generator 'torch' draws the initial noise and every ancestral / SDE
// noise in diffusers' order), and Heun's two stages per timestep (its
// timesteps list each one twice).
//
// Each step is a forward() plus one fused solver kernel pass on the model's
// backend over host arrays; the device-side loop (sampleOnDevice) serves
// DDPM / DDIM only so far.
import type { UNet2DModel } from './model/unet.js';
import type { TorchGenerator } from './rng/torch.js';
import type { NoiseSource } from './schedulers/solver_base.js';
import type { SolverScheduler } from './schedulers/solvers.js';

export interface SolverLoopOptions {
  unet: UNet2DModel;
  scheduler: SolverScheduler;
  numInferenceSteps: number;
  shape: [number, number, number, number];
  seed: bigint;
  /** null: Philox draws (the initial sample is draw 0, step i's noise draw i + 1). */
  torch: TorchGenerator | null;
  classLabels?: number[];
  signal?: AbortSignal;
  preview?: boolean;
  onStep?: (info: { index: number; t: number; total: number; predOriginalSample?: Float32Array }) => void | Promise<void>;
  abortError: (signal: AbortSignal) => Error;
}

export async function sampleWithSolver(o: SolverLoopOptions): Promise<Float32Array> {
  const { unet, scheduler, shape, signal } = o;
  const backend = unet.backend;
  const numel = shape[0] * shape[1] * shape[2] * shape[3];
  scheduler.useBackend(backend);
  scheduler.setTimesteps(o.numInferenceSteps);
  const timesteps = scheduler.timesteps.slice();
  const philox = (draw: number): NoiseSource => ({ randn: (n) => backend.randn(o.seed, BigInt(draw), n) });

  let x = (o.torch ?? philox(0)).randn(numel);
  const sigma = scheduler.initNoiseSigma;
  if (sigma !== 1) for (let i = 0; i < numel; i++) x[i] = x[i]! * sigma;

  for (let index = 0; index < timesteps.length; index++) {
    if (signal?.aborted) throw o.abortError(signal);
    const t = timesteps[index]!;
    const input = scheduler.scaleModelInput(x, t);
    const modelOutput = await unet.forward(input, shape, t, o.classLabels);
    if (signal?.aborted) throw o.abortError(signal);
    const out = scheduler.step(modelOutput, t, x, { generator: o.torch ?? philox(index + 1), batchSize: shape[0] });
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
