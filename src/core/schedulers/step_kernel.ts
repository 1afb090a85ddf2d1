// The per-element half of a DDPM / DDIM step: its coefficient record.
//
// A scheduler step splits into (1) a handful of per-timestep scalars, which
// the schedulers compute in TypeScript (stepCoefficients), and (2) one fused
// elementwise pass over [B, C, H, W] arrays in the engine
// (native/cpu/diffusion_step.cpp, via engine_step.ts), which computes in
// float32 in the order diffusers' torch expressions evaluate:
//   1. x0 = (x - sqrt(1-a) eps) / sqrt(a) | model output | sqrt(a) x - sqrt(1-a) v
//   2. clamp(x0, -r, r), or dynamic thresholding: s = quantile(|x0|, ratio) per
//      sample (torch.quantile's linear interpolation, one fused multiply-add),
//      clamped to [1, sample_max_value]; x0 = clamp(x0, -s, s) / s
//   3. prev = x0Coeff * x0 + otherCoeff * (sample | DDIM's epsilon)
//   4. prev += std * noise, std scalar or from the predicted variance.

/** config.prediction_type: what the model predicts. */
export const Prediction = { Epsilon: 0, Sample: 1, VPrediction: 2 } as const;
/** What happens to the predicted x0: nothing, clamp(-r, r), or dynamic thresholding. */
export const X0Clip = { None: 0, Clamp: 1, DynamicThreshold: 2 } as const;
/**
 * What the second term of the previous sample multiplies:
 * DDPM:  prev = x0Coeff * x0 + otherCoeff * sample        (formula 7, DDPM paper)
 * DDIM:  prev = x0Coeff * x0 + otherCoeff * epsilon       (formula 12, DDIM paper)
 */
export const Combine = { Sample: 0, Epsilon: 1 } as const;
/** DDIM's epsilon: from the model output, or re-derived from the clipped x0 (use_clipped_model_output). */
export const EpsilonFrom = { ModelOutput: 0, ClippedX0: 1 } as const;
/**
 * The variance noise term added to prev:
 * None            nothing (t = 0 in DDPM, eta = 0 in DDIM)
 * ScalarStd       noiseStd * noise
 * LearnedVariance sqrt(v) * noise, v the model's predicted variance ("learned")
 * LearnedRange    exp(0.5 * (frac * maxLog + (1 - frac) * minLog)) * noise,
 *                 frac = (v + 1) / 2 ("learned_range", improved DDPM)
 */
export const NoiseTerm = { None: 0, ScalarStd: 1, LearnedVariance: 2, LearnedRange: 3 } as const;

type Values<T> = T[keyof T];

/** The per-step scalars. All numbers are float32 values. */
export interface StepCoefficients {
  prediction: Values<typeof Prediction>;
  /** sqrt(alpha_prod_t) */
  sqrtAlphaProd: number;
  /** sqrt(1 - alpha_prod_t) */
  sqrtBetaProd: number;
  x0Clip: Values<typeof X0Clip>;
  /** clamp bound for X0Clip.Clamp (config.clip_sample_range) */
  clipSampleRange: number;
  /** quantile of |x0| per sample for X0Clip.DynamicThreshold (config.dynamic_thresholding_ratio) */
  dynamicThresholdingRatio: number;
  /** upper bound of the threshold s (config.sample_max_value); the lower bound is 1 */
  sampleMaxValue: number;
  combine: Values<typeof Combine>;
  x0Coeff: number;
  otherCoeff: number;
  /** Only read when combine is Combine.Epsilon. */
  epsilonFrom: Values<typeof EpsilonFrom>;
  noiseTerm: Values<typeof NoiseTerm>;
  /** For NoiseTerm.ScalarStd. */
  noiseStd: number;
  /** For NoiseTerm.LearnedRange: log of the fixed_small variance and of beta_t. */
  minLog: number;
  maxLog: number;
}

/** How the flat arrays are laid out. */
export interface StepLayout {
  batchSize: number;
  /** Elements per batch item in sample, noise and the outputs: C * H * W. */
  sampleSize: number;
  /**
   * Elements per batch item in modelOutput: sampleSize, or 2 * sampleSize when
   * the model also predicts its variance (channels C..2C-1, as torch.split).
   * Item b's prediction starts at b * modelOutputStride; its predicted
   * variance, if any, at b * modelOutputStride + sampleSize.
   */
  modelOutputStride: number;
  /**
   * Classifier-free guidance: 1 or absent, modelOutput holds batchSize items;
   * any other value s, it holds 2 * batchSize items (the conditional pass's
   * batch, then the unconditional pass's, from one doubled forward) and the
   * kernel reads uncond + s * (cond - uncond) in place of the model output
   * (native/engine/step_math.h, guided_output). A predicted variance half is
   * the conditional pass's.
   */
  guidanceScale?: number;
}

/** How many items a layout's model output holds. */
export function modelOutputItems(layout: StepLayout): number {
  return (layout.guidanceScale ?? 1) !== 1 ? 2 * layout.batchSize : layout.batchSize;
}
