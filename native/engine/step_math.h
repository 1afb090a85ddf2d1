// The per-element arithmetic of the fused DDPM/DDIM step, shared by the CPU
// kernel (native/cpu/diffusion_step.cpp) and the CUDA one
// (native/cuda/diffusion_step.cu): the same float32 operations in the same
// order, compiled without contraction on both, so their results are
// bit-identical. src/schedulers/step_kernel.ts documents each term.
#pragma once

#include "../cpu/ops.h"
#include "mathf.h"

namespace mb {

// torch.clamp: NaN stays NaN.
MB_HD inline float clamp_keep_nan(float x, float lo, float hi) {
  if (x != x) return x;
  return x < lo ? lo : (x > hi ? hi : x);
}

// Classifier-free guidance (StepLayout::guidance_scale): element i of item
// b's model output as the step reads it. Unguided, the output itself;
// guided, diffusers' noise_pred_uncond + guidance_scale * (noise_pred_cond -
// noise_pred_uncond), the same three float32 operations in that order (no
// contraction), so guided steps match a diffusers loop as unguided ones do.
MB_HD inline bool step_guided(const StepLayout& l) { return l.guidance_scale != 1.0f; }
MB_HD inline float guided_output(const StepLayout& l, const float* model_output, size_t b, size_t i) {
  const size_t stride = (size_t)l.model_output_stride;
  const float cond = model_output[b * stride + i];
  if (!step_guided(l)) return cond;
  const float uncond = model_output[((size_t)l.batch_size + b) * stride + i];
  return uncond + l.guidance_scale * (cond - uncond);
}

// 1. The predicted x0 from the model output m and the sample x (before any clip).
MB_HD inline float step_pred_x0(const StepCoefficients& c, float m, float x) {
  const float sa = c.sqrt_alpha_prod, sb = c.sqrt_beta_prod;
  if (c.prediction == kPredictEpsilon) return (x - sb * m) / sa;
  if (c.prediction == kPredictSample) return m;
  return sa * x - sb * m;
}

MB_HD inline float step_pred_epsilon(const StepCoefficients& c, float m, float x, float x0) {
  const float sa = c.sqrt_alpha_prod, sb = c.sqrt_beta_prod;
  if (c.epsilon_from == kEpsilonFromClippedX0) return (x - sa * x0) / sb;
  if (c.prediction == kPredictEpsilon) return m;
  if (c.prediction == kPredictSample) return (x - sa * m) / sb;
  return sa * m + sb * x;
}

// 3-4. The previous sample from the final (clipped or thresholded) x0; m_var
// is the model output's variance half (learned variance only), z the noise.
MB_HD inline float step_prev_sample(const StepCoefficients& c, float m, float m_var, float x, float x0, float z) {
  const float other = c.combine == kCombineSample ? x : step_pred_epsilon(c, m, x, x0);
  float p = c.x0_coeff * x0 + c.other_coeff * other;
  if (c.noise_term == kNoiseNone) return p;
  float stddev;
  if (c.noise_term == kNoiseScalar) {
    stddev = c.noise_std;
  } else if (c.noise_term == kNoiseLearnedVariance) {
    stddev = sqrt_f32(m_var);
  } else {
    const float frac = (m_var + 1.0f) / 2.0f;
    const float log_var = frac * c.max_log + (1.0f - frac) * c.min_log;
    stddev = exp_f32(0.5f * log_var);
  }
  return p + stddev * z;
}

// float32 a * b + c with one rounding (torch.quantile's lerp uses it). On a
// GPU the instruction; elsewhere without libm (wasm has no scalar fma): a * b
// is exact in double, and TwoSum recovers the error of the double sum, which
// decides the rare halfway cases.
MB_HD inline float fma_f32(float a, float b, float c) {
#if defined(__CUDA_ARCH__)
  return __fmaf_rn(a, b, c);
#else
  const double p = (double)a * (double)b;
  const double s = p + (double)c;
  const double bb = s - p;
  const double e = (p - (s - bb)) + ((double)c - bb);
  const float r = (float)s;
  if (e == 0 || (double)r == s || !is_finite_f32(r)) return r;
  const double other = 2 * s - (double)r;
  if (other == (double)r || (double)(float)other != other) return r;
  const float o = (float)other;
  return e > 0 ? (o > r ? o : r) : (o < r ? o : r);
#endif
}

// 2. Dynamic thresholding (Imagen): s = quantile(|x0|, ratio) over one
// sample's n values, clamped to [1, sample_max_value]; x0 = clamp(x0, -s, s) / s.
// torch.quantile's linear interpolation between the lo-th and hi-th smallest
// values (0-based), weighted by w:
MB_HD inline void threshold_ranks(const StepCoefficients& c, int n, int* lo, int* hi, float* w) {
  const float rank = c.dynamic_thresholding_ratio * (float)(n - 1);
  *lo = (int)rank;
  *hi = (float)*lo == rank ? *lo : *lo + 1;
  *w = rank - (float)*lo;
}
// s from those two order statistics (NaN when the sample has a NaN).
MB_HD inline float threshold_scale(const StepCoefficients& c, float low, float high, float w, bool has_nan) {
  float s;
  if (has_nan) {
    s = bits_f32(0x7fc00000u);
  } else {
    const float diff = high - low;
    s = (w < 0.5f && w > -0.5f) ? fma_f32(w, diff, low) : fma_f32(w - 1.0f, diff, high);
  }
  return clamp_keep_nan(s, 1.0f, c.sample_max_value);
}
MB_HD inline float threshold_apply(float x0, float s) { return clamp_keep_nan(x0, -s, s) / s; }

// --- the multistep / sigma-space solver step (SolverCoefficients, ops.h) ---

// The converted model output before any clip: x0 (or epsilon) as diffusers'
// convert_model_output / pred_original_sample writes it for this step.
MB_HD inline float solver_convert(const SolverCoefficients& c, float m, float x) {
  switch (c.convert) {
    case kConvertSubDiv: return (x - c.p * m) / c.q;
    case kConvertSub: return c.p * x - c.q * m;
    case kConvertAdd: return c.p * m + c.q * x;
    case kConvertAddDiv: return c.p * m + x / c.q;
    default: return m;
  }
}

// acc + k * v, skipping a zero coefficient (its input may be absent); `any`
// says whether acc holds a term yet.
MB_HD inline void solver_term(float& acc, bool& any, float k, float v) {
  if (k == 0.0f) return;
  const float t = k * v;
  acc = any ? acc + t : t;
  any = true;
}

// y (the corrected sample) and out (the previous sample) of one element.
MB_HD inline void solver_combine(const SolverCoefficients& c, float x, float last, float conv, float h0, float h1,
                                 float h2, float z, float* y_out, float* out) {
  float y = x;
  if (c.corrector) {
    float acc = 0.0f;
    bool any = false;
    solver_term(acc, any, c.u_x, x);
    solver_term(acc, any, c.u_last, last);
    solver_term(acc, any, c.u_conv, conv);
    solver_term(acc, any, c.u_h[0], h0);
    solver_term(acc, any, c.u_h[1], h1);
    solver_term(acc, any, c.u_h[2], h2);
    y = acc;
  }
  float acc = 0.0f;
  bool any = false;
  solver_term(acc, any, c.v_y, y);
  solver_term(acc, any, c.v_last, last);
  solver_term(acc, any, c.v_conv, conv);
  solver_term(acc, any, c.v_h[0], h0);
  solver_term(acc, any, c.v_h[1], h1);
  solver_term(acc, any, c.v_h[2], h2);
  solver_term(acc, any, c.v_noise, z);
  *y_out = y;
  *out = acc;
}

// The StepCoefficients fields dynamic thresholding reads, from a solver record.
MB_HD inline StepCoefficients solver_threshold_record(const SolverCoefficients& c) {
  StepCoefficients t = {};
  t.x0_clip = kX0DynamicThreshold;
  t.dynamic_thresholding_ratio = c.dynamic_thresholding_ratio;
  t.sample_max_value = c.sample_max_value;
  return t;
}

}  // namespace mb
