// The training loop's driver: one call to step() is one optimizer update of
// a diffusers-style DDPM training run (train_unconditional.py):
//
//   noise = randn(x0.shape); t = randint(0, T, (B,))          (one seeded torch generator)
//   x_t = sqrt(a_t) x0 + sqrt(1 - a_t) noise                    (DDPMScheduler.add_noise)
//   labels -> null label with probability p                     (classifier-free guidance only: label_dropout.ts)
//   loss = mean_b w_b mean((unet(x_t, t) - target)^2)          (target per prediction_type)
//   backward; clip_grad_norm_; AdamW; lr_scheduler; EMAModel.step
//
// The engine does the heavy part (forward, MSE, backward, AdamW, EMA); this
// class draws the randomness, computes the per-sample scalars in float32 as
// diffusers does, and keeps the bookkeeping (step count, schedules, history)
// that a checkpoint saves and resume() restores.
import { ConfigError, InputError } from '../core/errors.js';
import type { EngineModel, TensorKind } from '../core/backend/backend.js';
import { classConditioning, timeEmbedDim } from '../core/model/config.js';
import { createUNet, engineError } from '../core/model/unet.js';
import type { LoadOptions, UNet2DModel } from '../core/model/unet.js';
import { TorchGenerator } from '../core/rng/torch.js';
import type { TorchGeneratorState } from '../core/rng/torch.js';
import { DDPMScheduler } from '../core/schedulers/ddpm.js';
import { addNoiseCoefficients, dropoutSeed, minSnrLossWeights, TARGET_CODE, torchRandint } from './diffusion.js';
import { emaDecay, resolveEmaOptions } from './ema.js';
import type { EmaOptions, ResolvedEmaOptions } from './ema.js';
import { readCheckpoint, STATE_FORMAT, STATE_VERSION, writeCheckpoint } from './checkpoint.js';
import type { CheckpointContents, SaveOptions } from './checkpoint.js';
import { ddpmPipelineIndex, schedulerToDiffusersConfig, toDiffusersConfig } from './diffusers_config.js';
import { engineOf } from './engine_access.js';
import { dropLabels } from './label_dropout.js';
import { CheckpointError, TrainingError } from './errors.js';
import { learningRate, resolveLrSchedule } from './lr_schedule.js';
import { OpProfiler, profileTable } from './profile.js';
import type { TrainProfile } from './profile.js';
import type { LrScheduleOptions, ResolvedLrSchedule } from './lr_schedule.js';

export interface OptimizerOptions {
  lr: number;
  /** torch.optim.AdamW defaults: (0.9, 0.999). */
  betas?: [number, number];
  /** Default 1e-8. */
  eps?: number;
  /** Decoupled weight decay; default 0.01 as torch's AdamW. */
  weightDecay?: number;
}

export interface TrainerOptions {
  unet: UNet2DModel;
  /** Its alphas_cumprod define the forward process; its prediction_type the regression target. */
  noiseScheduler: DDPMScheduler;
  optimizer: OptimizerOptions;
  /** Default: constant, no warmup. */
  lrSchedule?: LrScheduleOptions;
  /** Keep an EMA of the weights (diffusers' EMAModel); a checkpoint's model is then the EMA. */
  ema?: EmaOptions | null;
  /** Max global gradient norm (torch.nn.utils.clip_grad_norm_); default: no clipping. */
  gradClip?: number | null;
  /**
   * Micro-batches per update (default 1): step(batch) runs the batch as this
   * many equal slices, so activation memory is that of one slice, and
   * averages their gradients: the same update as the whole batch at once.
   */
  gradAccumulation?: number;
  /** Min-SNR-gamma loss weighting (diffusers' --snr_gamma, 5 is the paper's value). */
  minSnrGamma?: number | null;
  /** Seeds the generator of noise and timesteps. Default 0. */
  seed?: number | bigint;
  /** Training image size when the config has no sample_size. */
  sampleSize?: number | [number, number];
}

/** Everything of a Trainer's configuration that a checkpoint stores (JSON). */
export interface TrainerSettings {
  optimizer: { lr: number; betas: [number, number]; eps: number; weightDecay: number };
  lrSchedule: ResolvedLrSchedule;
  ema: ResolvedEmaOptions | null;
  gradClip: number | null;
  gradAccumulation: number;
  minSnrGamma: number | null;
  /** Decimal uint64. */
  seed: string;
  /** [height, width] of the training images. */
  sampleSize: [number, number];
}

/** The mutable part of a Trainer, as a checkpoint stores it. */
export interface TrainerProgress {
  /** Optimizer updates made. */
  globalStep: number;
  /** Micro-batches run (keys the dropout masks). */
  microStep: number;
  generator: TorchGeneratorState;
  /** The loss of every update so far. */
  lossHistory: number[];
}

export interface StepResult {
  /** The update just made, 1-based (= globalStep after it). */
  step: number;
  /** Mean loss over the batch (weighted, with min-SNR). */
  loss: number;
  /** The learning rate the update used. */
  lr: number;
  /** Global L2 norm of the (averaged) gradients before clipping. */
  gradNorm: number;
}

function positiveFinite(value: unknown, what: string, allowZero = false): number {
  if (typeof value !== 'number' || !Number.isFinite(value) || value < 0 || (!allowZero && value === 0))
    throw new InputError(`${what} must be a ${allowZero ? 'non-negative' : 'positive'} finite number, got ${String(value)}`);
  return value;
}

function seedString(seed: number | bigint): string {
  if (typeof seed === 'number' && !Number.isSafeInteger(seed)) throw new InputError(`seed ${seed} must be an integer`);
  const s = BigInt(seed);
  if (s < 0n || s >= 1n << 64n) throw new InputError(`seed ${seed} must be in [0, 2^64)`);
  return s.toString();
}

function imageSize(unet: UNet2DModel, override: number | [number, number] | undefined): [number, number] {
  const size = override ?? unet.config.sampleSize;
  const pair = typeof size === 'number' ? [size, size] : size;
  if (!Array.isArray(pair) || pair.length !== 2 || !pair.every((d) => Number.isInteger(d) && d >= 1))
    throw new InputError(
      override === undefined
        ? 'the model config has no sample_size: pass sampleSize (the training image size) to the Trainer'
        : `sampleSize must be a positive integer or [height, width], got ${JSON.stringify(override)}`,
    );
  return [pair[0]!, pair[1]!];
}

/** Validates options; the result is what a checkpoint stores. */
export function resolveTrainerSettings(o: Omit<TrainerOptions, 'noiseScheduler'>): TrainerSettings {
  if (typeof o.optimizer !== 'object' || o.optimizer === null) throw new InputError('optimizer must be an object { lr, betas?, eps?, weightDecay? }');
  const lr = positiveFinite(o.optimizer.lr, 'optimizer.lr', true);
  const betas = o.optimizer.betas ?? [0.9, 0.999];
  if (!Array.isArray(betas) || betas.length !== 2 || !betas.every((b) => typeof b === 'number' && b >= 0 && b < 1))
    throw new InputError(`optimizer.betas must be two numbers in [0, 1), got ${JSON.stringify(betas)}`);
  const gradAccumulation = o.gradAccumulation ?? 1;
  if (!Number.isInteger(gradAccumulation) || gradAccumulation < 1)
    throw new InputError(`gradAccumulation must be an integer >= 1, got ${gradAccumulation}`);
  return {
    optimizer: {
      lr,
      betas: [betas[0], betas[1]],
      eps: positiveFinite(o.optimizer.eps ?? 1e-8, 'optimizer.eps'),
      weightDecay: positiveFinite(o.optimizer.weightDecay ?? 0.01, 'optimizer.weightDecay', true),
    },
    lrSchedule: resolveLrSchedule(o.lrSchedule ?? { kind: 'constant', warmupSteps: 0 }),
    ema: o.ema ? resolveEmaOptions(o.ema) : null,
    gradClip: o.gradClip == null ? null : positiveFinite(o.gradClip, 'gradClip'),
    gradAccumulation,
    minSnrGamma: o.minSnrGamma == null ? null : positiveFinite(o.minSnrGamma, 'minSnrGamma'),
    seed: seedString(o.seed ?? 0),
    sampleSize: imageSize(o.unet, o.sampleSize),
  };
}

export interface TrainerSaveOptions extends SaveOptions {
  /** Stored in state.json and handed back as trainer.userState by resume() (must be JSON). */
  userState?: unknown;
}

export interface ResumeOptions extends Omit<LoadOptions, 'backend'> {
  backend?: LoadOptions['backend'];
  /** Extend (or shorten) the run: replaces the LR schedule's totalSteps. */
  totalSteps?: number;
}

export class Trainer {
  readonly unet: UNet2DModel;
  readonly noiseScheduler: DDPMScheduler;
  readonly settings: Readonly<TrainerSettings>;
  /** What resume() found in the checkpoint's userState (e.g. a data loader's position). */
  userState: unknown = undefined;

  private progress: TrainerProgress;
  private generator: TorchGenerator;
  private readonly seed: bigint;
  private profiler: OpProfiler | null = null;
  private profiled = { steps: 0, seconds: 0 };
  /** step(), save() and friends run one at a time, in call order. */
  private queue: Promise<unknown> = Promise.resolve();

  constructor(options: TrainerOptions) {
    const { unet, noiseScheduler } = options;
    if (!unet || typeof unet.forward !== 'function') throw new InputError('Trainer: unet must be a UNet2DModel');
    if (!(noiseScheduler instanceof DDPMScheduler)) throw new InputError('Trainer: noiseScheduler must be a DDPMScheduler');
    const config = unet.config;
    if (config.outChannels !== config.inChannels)
      throw new ConfigError(
        `training needs out_channels = in_channels (the MSE compares the output with a ${config.inChannels}-channel target), got out_channels ${config.outChannels}`,
      );
    const T = noiseScheduler.config.numTrainTimesteps;
    if (config.timeEmbeddingType === 'learned' && config.numTrainTimesteps !== null && config.numTrainTimesteps < T)
      throw new ConfigError(
        `the UNet's learned time embedding has ${config.numTrainTimesteps} entries but the scheduler draws timesteps up to ${T - 1}`,
      );
    // dtype float16 / bfloat16 (cuda) trains in mixed precision: the
    // weights, their gradients, AdamW's moments and the EMA stay float32;
    // the GEMMs run on tensor cores from half copies of the weights,
    // repacked after every step (the forward's in the model's type, the
    // backward's in bfloat16: native/cuda/conv2d_mma.cu).
    this.unet = unet;
    this.noiseScheduler = noiseScheduler;
    this.settings = Object.freeze(resolveTrainerSettings(options));
    this.seed = BigInt(this.settings.seed);
    this.generator = new TorchGenerator(this.seed);
    this.progress = { globalStep: 0, microStep: 0, generator: this.generator.getState(), lossHistory: [] };
    const engine = engineOf(unet);
    try {
      engine.trainInit({ ema: this.settings.ema !== null });
    } catch (e) {
      throw engineError(e);
    }
  }

  /** Optimizer updates made so far. */
  get globalStep(): number {
    return this.progress.globalStep;
  }

  /** The loss of every update so far (a copy). */
  get lossHistory(): number[] {
    return this.progress.lossHistory.slice();
  }

  /** The rate the next update will use. */
  get currentLr(): number {
    return learningRate(this.settings.optimizer.lr, this.settings.lrSchedule, this.progress.globalStep + 1);
  }

  /** Shape [B, C, H, W] a batch of `batchSize` images must have. */
  batchShape(batchSize: number): [number, number, number, number] {
    const [h, w] = this.settings.sampleSize;
    return [batchSize, this.unet.config.inChannels, h, w];
  }

  /**
   * One optimizer update on a batch of clean images x0 (NCHW float32 in
   * [-1, 1], [B, in_channels, H, W] with H, W the model's sample_size).
   * `classLabels`: one per image for class-conditional models.
   * A non-finite loss or gradient norm throws TrainingError and leaves the
   * weights, optimizer state and step count untouched (the step's noise and
   * timesteps are consumed, so the next call draws fresh ones).
   * Do not run unet.forward() while a step is in flight: the trainer drives
   * the engine directly, and engine calls must not overlap (withEmaWeights()
   * is the safe way to sample between steps).
   */
  step(batch: Float32Array, classLabels?: readonly number[]): Promise<StepResult> {
    return this.serial(async () => {
      if (!this.profiler) return this.stepNow(batch, classLabels);
      const t0 = performance.now();
      const result = await this.stepNow(batch, classLabels);
      this.profiled.steps++;
      this.profiled.seconds += (performance.now() - t0) / 1000;
      return result;
    });
  }

  /**
   * Times the engine's ops by family, and the steps, from now on (a native
   * backend; ConfigError on wasm). Read with profile(); restarting zeroes it.
   */
  startProfile(): void {
    this.profiler ??= new OpProfiler(this.engine());
    this.profiler.start();
    this.profiled = { steps: 0, seconds: 0 };
  }

  /** The profile since startProfile(); `dataSeconds`: time the caller spent waiting for batches. */
  profile(dataSeconds = 0): TrainProfile {
    if (!this.profiler) throw new InputError('no profile: call startProfile() first');
    return profileTable(this.profiler.read(), this.profiled.steps, this.profiled.seconds, dataSeconds);
  }

  stopProfile(): void {
    this.profiler?.stop();
    this.profiler = null;
  }

  /** Runs `fn` with the EMA weights in the UNet (e.g. to sample), then puts the trained weights back. */
  withEmaWeights<T>(fn: () => Promise<T>): Promise<T> {
    return this.serial(async () => {
      if (!this.settings.ema) return fn();
      const trained = this.readAll('param');
      const ema = this.readAll('ema');
      this.writeAll('param', ema);
      try {
        return await fn();
      } finally {
        this.writeAll('param', trained);
      }
    });
  }

  /**
   * Writes a checkpoint folder (see checkpoint.ts): a diffusers DDPMPipeline
   * folder plus trainer_state/. The previous checkpoint at `dir` is replaced
   * only once the new one is complete.
   */
  save(dir: string, options: TrainerSaveOptions = {}): Promise<void> {
    return this.serial(async () => {
      const ema = this.settings.ema ? this.readAll('ema') : null;
      const contents: CheckpointContents = {
        unetConfig: toDiffusersConfig(this.unet.config),
        schedulerConfig: schedulerToDiffusersConfig(this.noiseScheduler),
        modelIndex: ddpmPipelineIndex(),
        params: this.engine().paramTable(),
        tensors: { param: this.readAll('param'), exp_avg: this.readAll('exp_avg'), exp_avg_sq: this.readAll('exp_avg_sq'), ema },
        state: {
          format: STATE_FORMAT,
          version: STATE_VERSION,
          settings: { ...this.settings },
          progress: this.snapshotProgress(),
          userState: options.userState ?? null,
        },
      };
      await writeCheckpoint(dir, contents, options);
    });
  }

  /**
   * A Trainer continuing the run saved at `dir`: same weights, optimizer
   * moments, EMA, step count, generator state and settings, so the next
   * steps are those the saved run would have made.
   */
  static async resume(dir: string, options: ResumeOptions = {}): Promise<Trainer> {
    const checkpoint = await readCheckpoint(dir);
    const where = checkpoint.dir;
    // Saved values that do not validate are a corrupt checkpoint, whatever
    // error the validator threw; other failures (no backend, no memory) pass through.
    const corrupt = (e: unknown, isStateError: (e: unknown) => boolean): never => {
      if (e instanceof CheckpointError || !isStateError(e)) throw e;
      throw new CheckpointError(`cannot resume from ${where}: ${(e as Error).message}`, where, { cause: e });
    };
    const badValue = (e: unknown) => e instanceof ConfigError || e instanceof InputError;
    let noiseScheduler: DDPMScheduler;
    try {
      noiseScheduler = DDPMScheduler.fromConfig(checkpoint.schedulerConfig);
    } catch (e) {
      return corrupt(e, badValue);
    }
    let unet: UNet2DModel;
    try {
      unet = await createUNet(checkpoint.unetConfig, {
        backend: options.backend,
        threads: options.threads,
        memoryLimitBytes: options.memoryLimitBytes,
        dtype: options.dtype,
      });
    } catch (e) {
      return corrupt(e, badValue);
    }
    try {
      const s = checkpoint.state.settings;
      let trainer: Trainer;
      try {
        if (typeof s.seed !== 'string' || !/^\d+$/.test(s.seed)) throw new InputError(`settings.seed must be a decimal integer string, got ${JSON.stringify(s.seed)}`);
        trainer = new Trainer({
          unet,
          noiseScheduler,
          optimizer: s.optimizer,
          lrSchedule: { ...s.lrSchedule, totalSteps: options.totalSteps ?? s.lrSchedule?.totalSteps },
          ema: s.ema,
          gradClip: s.gradClip,
          gradAccumulation: s.gradAccumulation,
          minSnrGamma: s.minSnrGamma,
          seed: BigInt(s.seed),
          sampleSize: s.sampleSize,
        });
      } catch (e) {
        return corrupt(e, (x) => badValue(x) || x instanceof TypeError);
      }
      const params = engineOf(unet).paramTable();
      for (const kind of ['param', 'exp_avg', 'exp_avg_sq', 'ema'] as const) {
        const tensors = await checkpoint.tensors(kind, params);
        if (tensors) trainer.writeAll(kind, tensors);
      }
      try {
        trainer.restoreProgress(checkpoint.state.progress);
      } catch (e) {
        return corrupt(e, (x) => x instanceof Error);
      }
      trainer.userState = checkpoint.state.userState;
      return trainer;
    } catch (e) {
      unet.dispose();
      throw e;
    }
  }

  /** Runs `task` after every earlier step/save call has finished. */
  protected serial<T>(task: () => Promise<T>): Promise<T> {
    const result = this.queue.then(task, task);
    this.queue = result.catch(() => undefined);
    return result;
  }

  private engine(): EngineModel {
    return engineOf(this.unet);
  }

  /** One tensor kind of every parameter, in paramTable order. */
  readAll(kind: TensorKind): Float32Array[] {
    const engine = this.engine();
    try {
      return engine.paramTable().map((_, i) => engine.readTensor(i, kind));
    } catch (e) {
      throw engineError(e);
    }
  }

  /** Overwrites one tensor kind of every parameter (and repacks after params). */
  writeAll(kind: TensorKind, tensors: readonly Float32Array[]): void {
    const engine = this.engine();
    try {
      tensors.forEach((data, i) => engine.writeTensor(i, kind, data));
      if (kind === 'param') engine.repack();
    } catch (e) {
      throw engineError(e);
    }
  }

  /** A copy of the progress counters and generator state (for checkpoints). */
  snapshotProgress(): TrainerProgress {
    return {
      globalStep: this.progress.globalStep,
      microStep: this.progress.microStep,
      generator: this.generator.getState(),
      lossHistory: this.progress.lossHistory.slice(),
    };
  }

  /** Restores progress saved by snapshotProgress() (resume). */
  restoreProgress(p: TrainerProgress): void {
    this.generator.setState(p.generator);
    this.progress = {
      globalStep: p.globalStep,
      microStep: p.microStep,
      generator: p.generator,
      lossHistory: p.lossHistory.slice(),
    };
  }

  private checkBatch(batch: Float32Array, classLabels: readonly number[] | undefined) {
    const config = this.unet.config;
    if (!(batch instanceof Float32Array)) throw new InputError('batch must be a Float32Array (NCHW)');
    const [, C, H, W] = this.batchShape(1);
    const perImage = C * H * W;
    if (batch.length === 0 || batch.length % perImage !== 0)
      throw new InputError(
        `batch has ${batch.length} values, not a whole number of ${C}x${H}x${W} images ` +
          `(the model has in_channels = ${C} and sample_size ${H === W ? H : `[${H}, ${W}]`})`,
      );
    const B = batch.length / perImage;
    const k = this.settings.gradAccumulation;
    if (B % k !== 0) throw new InputError(`a batch of ${B} images does not split into gradAccumulation = ${k} equal micro-batches`);
    for (let i = 0; i < batch.length; i++)
      if (!Number.isFinite(batch[i])) throw new InputError(`batch contains ${batch[i]} at index ${i}`);

    const conditioning = classConditioning(config);
    let classCond: Float32Array | null = null;
    let condPerImage = 0;
    if (conditioning === 'none') {
      if (classLabels !== undefined && classLabels.length > 0)
        throw new InputError('class labels were given but this model is not class-conditional');
    } else {
      condPerImage = conditioning === 'identity' ? timeEmbedDim(config) : 1;
      if (!classLabels) throw new InputError(`this model is class-conditional: pass class labels (${B * condPerImage} values)`);
      if (classLabels.length !== B * condPerImage)
        throw new InputError(`expected ${B * condPerImage} class conditioning values for ${B} images, got ${classLabels.length}`);
      classLabels.forEach((label, i) => {
        if (conditioning === 'labels') {
          const n = config.numClassEmbeds!;
          if (!Number.isInteger(label) || label < 0 || label >= n)
            throw new InputError(`class label ${label} at index ${i} is not an integer in [0, ${n})`);
        } else if (!Number.isFinite(label)) {
          throw new InputError(`class conditioning value ${label} at index ${i} is not finite`);
        }
      });
      classCond = Float32Array.from(classLabels);
    }
    return { B, C, H, W, perImage, classCond, condPerImage };
  }

  private async stepNow(batch: Float32Array, classLabels: readonly number[] | undefined): Promise<StepResult> {
    const engine = this.engine();
    const checked = this.checkBatch(batch, classLabels);
    const { B, C, H, W, perImage, condPerImage } = checked;
    const s = this.settings;
    const scheduler = this.noiseScheduler;
    const step = this.progress.globalStep + 1;
    // A model trained for classifier-free guidance records its null class and dropout rate.
    const guidance = this.unet.config.guidance;
    const classCond =
      checked.classCond && guidance && guidance.labelDropout > 0
        ? dropLabels(checked.classCond, guidance.nullClassLabel, guidance.labelDropout, this.seed, step)
        : checked.classCond;

    // The draws of train_unconditional.py, in its order, from one generator.
    const noise = this.generator.randn(batch.length);
    const timesteps = torchRandint(this.generator, 0, scheduler.config.numTrainTimesteps, B);
    const { sqrtAlphaProd, sqrtOneMinusAlphaProd } = addNoiseCoefficients(scheduler.alphasCumprod, timesteps);
    const predictionType = scheduler.config.predictionType;
    const lossWeights =
      s.minSnrGamma === null ? null : minSnrLossWeights(scheduler.alphasCumprod, timesteps, s.minSnrGamma, predictionType);

    const k = s.gradAccumulation;
    const mb = B / k;
    let lossSum = 0;
    try {
      engine.zeroGrad();
      for (let j = 0; j < k; j++) {
        const lo = j * mb;
        const hi = lo + mb;
        const microLoss = await engine.trainStep({
          x0: batch.subarray(lo * perImage, hi * perImage),
          noise: noise.subarray(lo * perImage, hi * perImage),
          shape: [mb, C, H, W],
          timesteps: Float32Array.from(timesteps.slice(lo, hi)),
          sqrtAlphaProd: sqrtAlphaProd.subarray(lo, hi),
          sqrtOneMinusAlphaProd: sqrtOneMinusAlphaProd.subarray(lo, hi),
          classCond: classCond ? classCond.subarray(lo * condPerImage, hi * condPerImage) : null,
          target: TARGET_CODE[predictionType],
          lossWeights: lossWeights ? lossWeights.subarray(lo, hi) : null,
          dropoutSeed: dropoutSeed(this.seed, this.progress.microStep + j),
        });
        lossSum += microLoss;
      }
    } catch (e) {
      const error = engineError(e);
      // The inputs were checked above, so the engine refusing a non-finite
      // value means the loss itself blew up: a training failure, not bad input.
      if (error instanceof InputError && /NaN|Inf/.test(error.message)) {
        engine.zeroGrad();
        throw new TrainingError(`step ${step}: ${error.message}; the update was skipped (lower the learning rate, or enable gradClip)`, step, NaN);
      }
      throw error;
    }
    this.progress.microStep += k;
    // Equal micro-batches: the mean of their means is the batch mean.
    const loss = k === 1 ? lossSum : lossSum / k;

    // Accumulated gradients are sums over micro-batches; the update uses their mean.
    const rawNorm = engine.gradNorm();
    const gradNorm = rawNorm / k;
    if (!Number.isFinite(loss) || !Number.isFinite(gradNorm)) {
      engine.zeroGrad();
      throw new TrainingError(
        `step ${step}: the ${Number.isFinite(loss) ? `gradient norm is ${gradNorm}` : `loss is ${loss}`}; ` +
          'the update was skipped (lower the learning rate, or enable gradClip)',
        step,
        loss,
      );
    }
    // clip_grad_norm_: scale = min(1, max_norm / (total_norm + 1e-6)).
    const clipScale = s.gradClip === null ? 1 : Math.min(1, s.gradClip / (gradNorm + 1e-6));
    const lr = learningRate(s.optimizer.lr, s.lrSchedule, step);
    try {
      engine.adamwStep({
        lr,
        beta1: s.optimizer.betas[0],
        beta2: s.optimizer.betas[1],
        eps: s.optimizer.eps,
        weightDecay: s.optimizer.weightDecay,
        step,
        gradScale: clipScale / k,
      });
      if (s.ema) engine.emaUpdate(emaDecay(s.ema, step));
    } catch (e) {
      throw engineError(e);
    }
    this.progress.globalStep = step;
    this.progress.lossHistory.push(loss);
    return { step, loss, lr, gradNorm };
  }
}
