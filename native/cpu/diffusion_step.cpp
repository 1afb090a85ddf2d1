// The fused elementwise part of a DDPM / DDIM step, and add_noise.
//
// The schedulers (src/schedulers) compute a handful of per-step float32
// scalars in TypeScript; this kernel does the per-element work in one pass per
// sample: predicted x0, clip or dynamic threshold, the previous sample, the
// variance noise. It is the C++ twin of src/schedulers/step_kernel.ts, which
// documents each term; the two must stay in step. Arithmetic is float32 in
// diffusers' (torch's) order and this file is compiled without FMA
// contraction, so results match diffusers to the last bit or two.
#include "../engine/mathf.h"
#include "diffusion_loss.h"
#include "ops.h"

namespace mb {

namespace {

// float32 fused multiply-add a * b + c with one rounding, without libm (wasm
// has no scalar fma): a * b is exact in double; TwoSum recovers the error of
// the double sum, which decides the rare halfway cases.
float fma_f32(float a, float b, float c) {
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
}

float clampf(float x, float lo, float hi) {
  if (x != x) return x;  // torch.clamp keeps NaN
  return x < lo ? lo : (x > hi ? hi : x);
}

void sift_down(float* a, int start, int end) {
  int root = start;
  for (;;) {
    int child = 2 * root + 1;
    if (child > end) return;
    if (child + 1 <= end && a[child] < a[child + 1]) ++child;
    if (a[root] < a[child]) {
      float t = a[root];
      a[root] = a[child];
      a[child] = t;
      root = child;
    } else {
      return;
    }
  }
}

// Heapsort: in place, no allocation, O(n log n); n is one sample's C*H*W.
void sort_floats(float* a, int n) {
  for (int start = n / 2 - 1; start >= 0; --start) sift_down(a, start, n - 1);
  for (int end = n - 1; end > 0; --end) {
    float t = a[0];
    a[0] = a[end];
    a[end] = t;
    sift_down(a, 0, end - 1);
  }
}

// Dynamic thresholding of one sample in place (see step_kernel.ts).
void dynamic_threshold(float* x0, int n, const StepCoefficients& c, float* scratch) {
  bool has_nan = false;
  for (int i = 0; i < n; ++i) {
    float v = x0[i] < 0 ? -x0[i] : x0[i];
    if (v != v) has_nan = true;
    scratch[i] = v;
  }
  float s;
  if (has_nan) {
    s = bits_f32(0x7fc00000u);
  } else {
    sort_floats(scratch, n);
    const float rank = c.dynamic_thresholding_ratio * (float)(n - 1);
    const int lo = (int)rank;
    const int hi = (float)lo == rank ? lo : lo + 1;
    const float w = rank - (float)lo;
    const float low = scratch[lo], high = scratch[hi];
    const float diff = high - low;
    s = (w < 0.5f && w > -0.5f) ? fma_f32(w, diff, low) : fma_f32(w - 1.0f, diff, high);
  }
  s = clampf(s, 1.0f, c.sample_max_value);
  for (int i = 0; i < n; ++i) x0[i] = clampf(x0[i], -s, s) / s;
}

float pred_epsilon(const StepCoefficients& c, float m, float x, float x0) {
  const float sa = c.sqrt_alpha_prod, sb = c.sqrt_beta_prod;
  if (c.epsilon_from == kEpsilonFromClippedX0) return (x - sa * x0) / sb;
  if (c.prediction == kPredictEpsilon) return m;
  if (c.prediction == kPredictSample) return (x - sa * m) / sb;
  return sa * m + sb * x;
}

}  // namespace

size_t diffusion_step_scratch_floats(const StepCoefficients& c, const StepLayout& layout) {
  return c.x0_clip == kX0DynamicThreshold ? (size_t)layout.sample_size : 0;
}

void diffusion_step(const StepCoefficients& c, const StepLayout& layout, const float* model_output, const float* sample,
                    const float* noise, float* prev_sample, float* pred_original_sample, float* scratch) {
  const int n = layout.sample_size;
  const float sa = c.sqrt_alpha_prod, sb = c.sqrt_beta_prod;
  for (int b = 0; b < layout.batch_size; ++b) {
    const size_t so = (size_t)b * n;
    const float* m = model_output + (size_t)b * layout.model_output_stride;
    const float* x = sample + so;
    float* x0 = pred_original_sample + so;

    // 1. predicted x0
    for (int i = 0; i < n; ++i) {
      if (c.prediction == kPredictEpsilon)
        x0[i] = (x[i] - sb * m[i]) / sa;
      else if (c.prediction == kPredictSample)
        x0[i] = m[i];
      else
        x0[i] = sa * x[i] - sb * m[i];
    }
    // 2. clip or threshold
    if (c.x0_clip == kX0Clamp) {
      for (int i = 0; i < n; ++i) x0[i] = clampf(x0[i], -c.clip_sample_range, c.clip_sample_range);
    } else if (c.x0_clip == kX0DynamicThreshold) {
      dynamic_threshold(x0, n, c, scratch);
    }
    // 3. previous sample, 4. variance noise
    float* prev = prev_sample + so;
    const float* z = noise ? noise + so : nullptr;
    for (int i = 0; i < n; ++i) {
      const float other = c.combine == kCombineSample ? x[i] : pred_epsilon(c, m[i], x[i], x0[i]);
      float p = c.x0_coeff * x0[i] + c.other_coeff * other;
      if (c.noise_term != kNoiseNone) {
        float stddev;
        if (c.noise_term == kNoiseScalar) {
          stddev = c.noise_std;
        } else {
          const float v = m[n + i];
          if (c.noise_term == kNoiseLearnedVariance) {
            stddev = sqrt_f32(v);
          } else {
            const float frac = (v + 1.0f) / 2.0f;
            const float log_var = frac * c.max_log + (1.0f - frac) * c.min_log;
            stddev = exp_f32(0.5f * log_var);
          }
        }
        p = p + stddev * z[i];
      }
      prev[i] = p;
    }
  }
}

void add_noise(const float* x0, const float* noise, const float* sqrt_alpha_prod, const float* sqrt_one_minus_alpha_prod,
               int batch, int sample_size, float* out) {
  for (int b = 0; b < batch; ++b) {
    const size_t base = (size_t)b * sample_size;
    const float sa = sqrt_alpha_prod[b], sb = sqrt_one_minus_alpha_prod[b];
    for (int i = 0; i < sample_size; ++i) out[base + i] = sa * x0[base + i] + sb * noise[base + i];
  }
}

// The training loss (see ops.h): the squares summed in double, pixel by
// pixel, channel by channel, per sample.
void diffusion_loss(const float* out, const DiffusionLossArgs& a, float* dy, double* sample_sums) {
  const int C = a.channels, pixels = a.pixels;
  for (int b = 0; b < a.batch; ++b) {
    double sample_sum = 0;
    for (int p = 0; p < pixels; ++p)
      for (int c = 0; c < C; ++c) {
        const size_t nhwc = ((size_t)b * pixels + p) * C + c;
        const size_t nchw = ((size_t)b * C + c) * pixels + p;
        const LossTerm t = diffusion_loss_term(a, out, b, nhwc, nchw);
        sample_sum += (double)t.diff * t.diff;
        dy[nhwc] = t.grad;
      }
    sample_sums[b] = sample_sum;
  }
}

}  // namespace mb
