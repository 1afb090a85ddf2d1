// The Backend interface: what the TypeScript side needs from an engine build.
// The native addon (cpu, cuda) and the wasm module both expose the engine's C ABI
// (native/engine/api.h); these interfaces are that ABI in TypeScript terms.

import { BackendError } from '../errors.js';
import type { StepLayout } from '../schedulers/step_kernel.js';

export type BackendName = 'cpu' | 'wasm' | 'cuda';

/**
 * Most threads a cpu or wasm backend starts. Each is an OS thread (cpu) or a
 * worker with its own JS heap (wasm): a larger count cannot help and can
 * exhaust the process's threads or memory (std::system_error abort, OOM).
 */
export const MAX_THREADS = 256;

/** A BackendError unless `threads` is absent or an integer in [1, MAX_THREADS]. */
export function checkThreads(threads: number | undefined): void {
  if (threads !== undefined && (!Number.isInteger(threads) || threads < 1 || threads > MAX_THREADS))
    throw new BackendError(`threads must be an integer from 1 to ${MAX_THREADS}, got ${threads}`);
}

export interface ParamInfo {
  name: string;
  shape: number[];
}

export interface CapturedTensor {
  name: string;
  shape: number[];
  data: Float32Array;
}

/** One UNet instance inside an engine. Calls must not overlap (the UNet class queues them). */
export interface EngineModel {
  paramTable(): ParamInfo[];
  setParam(index: number, data: Float32Array): void;
  finalize(): void;
  /** Arena bytes a forward at this size needs; throws (status 1) if the size does not fit the UNet. */
  planBytes(batch: number, height: number, width: number): number;
  setMemoryLimit(bytes: number): void;
  forward(
    sample: Float32Array,
    batch: number,
    channels: number,
    height: number,
    width: number,
    timesteps: Float32Array,
    classCond: Float32Array | null,
    outSize: number,
  ): Promise<Float32Array>;
  setCapture(enabled: boolean): void;
  captures(): CapturedTensor[];
  dispose(): void;

  // --- training (native/engine/train.cpp) ---------------------------------
  /** Allocates gradients and AdamW state (and an EMA copy of the weights when `ema`). */
  trainInit(options: { ema: boolean }): void;
  /**
   * One micro-batch: x_t = sqrtAlphaProd[b] x0 + sqrtOneMinusAlphaProd[b] noise,
   * forward in training mode, loss = mean over samples of lossWeights[b] *
   * mean((out - target)^2), backward. Gradients ACCUMULATE (call zeroGrad to
   * start a step). Resolves to the loss. target: 0 epsilon (noise), 1 sample
   * (x0), 2 v_prediction (sqrtAlphaProd noise - sqrtOneMinusAlphaProd x0).
   * `dropoutSeed` keys the dropout masks (Philox) when the config has dropout.
   */
  trainStep(args: TrainStepArgs): Promise<number>;
  zeroGrad(): void;
  /** Global L2 norm of the accumulated gradients. */
  gradNorm(): number;
  /**
   * Fused AdamW over every parameter (torch.optim.AdamW semantics, decoupled
   * weight decay, bias correction for `step` = 1, 2, ...), using gradients
   * multiplied by gradScale (for clipping and accumulation averaging), then
   * repacks the weights for the next forward.
   */
  adamwStep(args: { lr: number; beta1: number; beta2: number; eps: number; weightDecay: number; step: number; gradScale: number }): void;
  /** ema -= (1 - decay) * (ema - param), for every parameter. */
  emaUpdate(decay: number): void;

  // --- op profiling (native backends: native/engine/profile.cpp) ----------
  /** Times every op by family from now on (restarting zeroes the counters). */
  profileStart?(): void;
  /** [seconds, calls] per family of PROFILE_FAMILIES, or null when not profiling. */
  profileRead?(): Float64Array | null;
  profileStop?(): void;
  /** A copy of one parameter's tensor of the given kind (torch layout). */
  readTensor(index: number, kind: TensorKind): Float32Array;
  /** Overwrites one parameter's tensor of the given kind; call repack() after writing params. */
  writeTensor(index: number, kind: TensorKind, data: Float32Array): void;
  /** Repacks the weights after writeTensor(…, 'param', …). */
  repack(): void;
  /**
   * Frees the unpacked copies of the packed (conv/linear) weights; returns the
   * bytes freed now. Before finalize() it marks them to be freed as each layer
   * is packed (and returns 0). Afterwards trainInit and repack throw, and so
   * does reading those params.
   */
  releaseHostWeights(): number;

  // --- the sampling loop on the model's device (native/engine/sampling.cpp) --
  // Every engine backend has it (cpu, cuda, wasm); a model without it samples
  // through forward() and Backend.diffusionStep. One run per model at a time.
  /** Opens a run: device buffers for the sample, model output, noise and x0. */
  /**
   * guidanceScale (default 1, unguided): otherwise every forward runs the
   * sample twice, classCond holding 2 * batch labels (the conditional ones,
   * then the unconditional ones), and the step combines the two passes
   * (StepLayout.guidanceScale).
   */
  sampleBegin?(
    batch: number,
    channels: number,
    height: number,
    width: number,
    classCond: Float32Array | null,
    guidanceScale?: number,
  ): void;
  /** The initial sample: `sample` from the host, or Philox draw (drawLo, drawHi) under the seed. */
  sampleInit?(sample: Float32Array | null, seedLo: number, seedHi: number, drawLo: number, drawHi: number): void;
  /**
   * `count` steps (forward + noise + fused step each), queued without waiting
   * for the device. Step i: timesteps[i], coefficients[15 i ..] (packStepCoefficients),
   * noise from hostNoise[i * sample ..] when given, else Philox draw firstDraw + i.
   * Resolves to the last step's predicted x0 when wantX0 (which waits), else undefined.
   */
  sampleSteps?(
    count: number,
    timesteps: Float32Array,
    coefficients: Float32Array,
    seedLo: number,
    seedHi: number,
    firstDraw: number,
    hostNoise: Float32Array | null,
    wantX0: boolean,
  ): Promise<Float32Array | undefined>;
  /**
   * `count` solver steps (native/engine/sampling.cpp, mb_sample_solver_steps):
   * step i divides the sample by inputScales[i] into the model input, runs the
   * forward at timesteps[i], then the fused solver step with records[22 i ..]
   * (packSolverCoefficients' 21 slots and a keep-last flag); the history of
   * converted outputs stays on the device. Noise as for sampleSteps, for the
   * steps whose noise coefficient is not 0. Resolves to the last step's
   * converted output when wantX0.
   */
  sampleSolverSteps?(
    count: number,
    timesteps: Float32Array,
    inputScales: Float32Array,
    records: Float32Array,
    seedLo: number,
    seedHi: number,
    firstDraw: number,
    hostNoise: Float32Array | null,
    wantX0: boolean,
  ): Promise<Float32Array | undefined>;
  /** The current sample (waits for the device). */
  sampleRead?(): Promise<Float32Array>;
  /** How the run's forward passes ran: replays of a recorded pass (CUDA graphs), direct passes. */
  sampleStats?(): { replays: number; directForwards: number };
  sampleEnd?(): void;
}

export type TensorKind = 'param' | 'grad' | 'exp_avg' | 'exp_avg_sq' | 'ema';

export interface TrainStepArgs {
  x0: Float32Array;
  noise: Float32Array;
  shape: [number, number, number, number];
  timesteps: Float32Array;
  sqrtAlphaProd: Float32Array;
  sqrtOneMinusAlphaProd: Float32Array;
  classCond: Float32Array | null;
  target: 0 | 1 | 2;
  lossWeights: Float32Array | null;
  dropoutSeed: number;
}

/**
 * The element type of a model's conv and linear GEMMs: float32 everywhere;
 * float16 and bfloat16 (tensor cores, fp32 accumulation) on cuda only. The
 * activations, normalisation, attention and the scheduler stay float32.
 */
export type DType = 'float32' | 'float16' | 'bfloat16';
/** The DType values, in the engine's numbering (mb::WeightType). */
export const DTYPES: readonly DType[] = ['float32', 'float16', 'bfloat16'];

/** The typed error for a dtype a backend does not compute in (only cuda has tensor-core GEMMs). */
export function dtypeUnsupported(backend: string, dtype: string): BackendError {
  return new BackendError(`dtype '${dtype}': the ${backend} backend computes in float32 only (float16 and bfloat16 need backend 'cuda')`);
}

/** What a backend is running, for `marble info` and bug reports. */
export interface BackendDescription {
  name: BackendName;
  isa: string;
  threads: number;
  /** Why it runs fewer threads than asked for, or a build other than the default; absent when nothing to say. */
  note?: string;
  /** wasm: the size of its linear memory now, in bytes (it grows, never shrinks). */
  memoryBytes?: number;
}

/** The arrays of Backend.solverStep, [B, C, H, W] flattened (the model output [B, stride]). */
export interface SolverStepArrays {
  modelOutput: Float32Array;
  sample: Float32Array;
  last: Float32Array | null;
  history: readonly (Float32Array | null)[];
  noise: Float32Array | null;
  prevSample: Float32Array;
  converted: Float32Array;
  lastOut: Float32Array | null;
}

export interface Backend {
  readonly name: BackendName;
  /** The backend's identity and, where it fell back (single-threaded wasm), why. */
  describe?(): BackendDescription;
  /** `dtype` other than float32 only on cuda; other backends throw a BackendError. */
  createModel(config: Float64Array, dtype?: DType): EngineModel;
  threads(): number;
  /** The GEMM micro-kernel in use, e.g. "avx512", "avx2", "simd128". */
  isa(): string;
  /**
   * n standard normals of Philox draw `draw` under `seed`, starting at element
   * `offset` of that draw. Bit-identical on every backend.
   */
  randn(seed: bigint, draw: bigint, n: number, offset?: number): Float32Array;
  /**
   * The fused per-element DDPM/DDIM step (native/cpu/diffusion_step.cpp):
   * `coefficients` is the 15-slot record of src/core/schedulers/step_kernel.ts
   * (packStepCoefficients). Writes prevSample and predOriginalSample.
   */
  diffusionStep(
    coefficients: Float32Array,
    layout: StepLayout,
    modelOutput: Float32Array,
    sample: Float32Array,
    noise: Float32Array | null,
    prevSample: Float32Array,
    predOriginalSample: Float32Array,
  ): void;
  /**
   * The fused per-element step of the multistep and sigma-space solvers
   * (native/cpu/diffusion_step.cpp, solver_step): `coefficients` is the
   * 21-slot record of src/schedulers/solver_kernel.ts. Inputs a coefficient
   * does not use may be null. Writes prevSample, converted (the converted
   * model output, which must alias no input) and lastOut (the corrected
   * sample) when given.
   */
  solverStep(
    coefficients: Float32Array,
    layout: StepLayout,
    arrays: SolverStepArrays,
  ): void;
  /** out = sqrtAlphaProd[b] * x0 + sqrtOneMinusAlphaProd[b] * noise, per sample b. */
  addNoise(
    x0: Float32Array,
    noise: Float32Array,
    sqrtAlphaProd: Float32Array,
    sqrtOneMinusAlphaProd: Float32Array,
    out: Float32Array,
  ): void;
  /** One raw Philox4x32-10 block (for known-answer tests). */
  philoxBlock(counter: readonly number[], key: readonly number[]): Uint32Array;
  /**
   * Stops what the backend started (the wasm backend's worker threads) once
   * no call is in flight; its models cannot be used afterwards. Optional: the
   * native addon's pool lives as long as the process.
   */
  dispose?(): void;
}

/** Splits a non-negative 64-bit value into the (lo, hi) uint32 halves the engine takes. */
export function split64(value: bigint, what: string): [number, number] {
  if (value < 0n || value >= 1n << 64n) throw new RangeError(`${what} must be in [0, 2^64)`);
  return [Number(value & 0xffffffffn), Number(value >> 32n)];
}

/** Engine status codes (native/engine/common.h). */
export const enum EngineStatus {
  Ok = 0,
  InvalidArgument = 1,
  OutOfMemory = 2,
  Unsupported = 3,
  State = 4,
  /** A device failure: launch error, kernel fault, lost device (native/engine/ops.h kErrDevice). */
  Device = 5,
}
