// Training: the Trainer (one optimizer update per step()), checkpoints,
// schedules, and the helpers they share with diffusers' training scripts.
import '../node/host.js';
export { Trainer, resolveTrainerSettings } from './trainer.js';
export type {
  OptimizerOptions,
  ResumeOptions,
  StepResult,
  TrainerOptions,
  TrainerProgress,
  TrainerSaveOptions,
  TrainerSettings,
} from './trainer.js';
export { TrainingError, CheckpointError } from './errors.js';
export { PROFILE_FAMILIES, formatProfile } from './profile.js';
export type { ProfileRow, TrainProfile } from './profile.js';
export { learningRate, lrFactor, resolveLrSchedule } from './lr_schedule.js';
export type { LrScheduleKind, LrScheduleOptions, ResolvedLrSchedule } from './lr_schedule.js';
export { emaDecay, resolveEmaOptions } from './ema.js';
export type { EmaOptions, ResolvedEmaOptions } from './ema.js';
export { addNoiseCoefficients, computeSnr, minSnrLossWeights, torchRandint } from './diffusion.js';
export { toDiffusersConfig, schedulerToDiffusersConfig, ddpmPipelineIndex, DIFFUSERS_VERSION } from './diffusers_config.js';
export { readCheckpoint, writeCheckpoint } from './checkpoint.js';
export { defaultUNetConfig } from './default_config.js';
export * from '../data/index.js';
