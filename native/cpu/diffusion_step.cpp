// The fused elementwise part of a DDPM / DDIM step, and add_noise.
//
// The schedulers (src/schedulers) compute a handful of per-step float32
// scalars in TypeScript; this kernel does the per-element work in one pass per
// sample: predicted x0, clip or dynamic threshold, the previous sample, the
// variance noise. Its arithmetic is engine/step_math.h, shared with the CUDA
// kernel; src/schedulers/step_kernel.ts is its TypeScript twin, which
// documents each term (the two must stay in step). Arithmetic is float32 in
// diffusers' (torch's) order and this file is compiled without FMA
// contraction, so results match diffusers to the last bit or two.
#include "../engine/step_math.h"
#include "diffusion_loss.h"
#include "ops.h"

namespace mb {

namespace {

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

// Dynamic thresholding of one sample in place (see step_math.h).
void dynamic_threshold(float* x0, int n, const StepCoefficients& c, float* scratch) {
  bool has_nan = false;
  for (int i = 0; i < n; ++i) {
    float v = x0[i] < 0 ? -x0[i] : x0[i];
    if (v != v) has_nan = true;
    scratch[i] = v;
  }
  int lo = 0, hi = 0;
  float w = 0;
  threshold_ranks(c, n, &lo, &hi, &w);
  if (!has_nan) sort_floats(scratch, n);
  const float s = threshold_scale(c, scratch[lo], scratch[hi], w, has_nan);
  for (int i = 0; i < n; ++i) x0[i] = threshold_apply(x0[i], s);
}

}  // namespace

size_t diffusion_step_scratch_floats(const StepCoefficients& c, const StepLayout& layout) {
  return c.x0_clip == kX0DynamicThreshold ? (size_t)layout.sample_size : 0;
}

void diffusion_step(const StepCoefficients& c, const StepLayout& layout, const float* model_output, const float* sample,
                    const float* noise, float* prev_sample, float* pred_original_sample, float* scratch) {
  const int n = layout.sample_size;
  for (int b = 0; b < layout.batch_size; ++b) {
    const size_t so = (size_t)b * n;
    const float* m = model_output + (size_t)b * layout.model_output_stride;
    const float* x = sample + so;
    float* x0 = pred_original_sample + so;

    // 1. predicted x0, 2. clip or threshold (m(i): the guided output where guided)
    auto mi = [&](int i) { return guided_output(layout, model_output, (size_t)b, (size_t)i); };
    for (int i = 0; i < n; ++i) x0[i] = step_pred_x0(c, mi(i), x[i]);
    if (c.x0_clip == kX0Clamp) {
      for (int i = 0; i < n; ++i) x0[i] = clamp_keep_nan(x0[i], -c.clip_sample_range, c.clip_sample_range);
    } else if (c.x0_clip == kX0DynamicThreshold) {
      dynamic_threshold(x0, n, c, scratch);
    }
    // 3. previous sample, 4. variance noise (prev may be the sample itself:
    // each element is read before it is written)
    float* prev = prev_sample + so;
    const bool learned = c.noise_term == kNoiseLearnedVariance || c.noise_term == kNoiseLearnedRange;
    for (int i = 0; i < n; ++i)
      prev[i] = step_prev_sample(c, mi(i), learned ? m[n + i] : 0.0f, x[i], x0[i], noise ? noise[so + i] : 0.0f);
  }
}

// --- the multistep / sigma-space solver step --------------------------------

bool solver_step_fits(const SolverCoefficients& c, const StepLayout& l, const SolverArrays& a) {
  if (!step_guidance_valid(l)) return false;
  if (l.batch_size < 1 || l.sample_size < 1 ||
      (l.model_output_stride != l.sample_size && l.model_output_stride != 2 * l.sample_size))
    return false;
  if (c.convert < kConvertIdentity || c.convert > kConvertAddDiv || c.x0_clip < kX0None ||
      c.x0_clip > kX0DynamicThreshold)
    return false;
  if (!a.model_output || !a.sample || !a.prev_sample || !a.converted) return false;
  const bool corr = c.corrector != 0;
  if (((corr && c.u_last != 0.0f) || c.v_last != 0.0f) && !a.last) return false;
  for (int k = 0; k < 3; ++k)
    if (((corr && c.u_h[k] != 0.0f) || c.v_h[k] != 0.0f) && !a.history[k]) return false;
  return c.v_noise == 0.0f || a.noise;
}

size_t solver_step_scratch_floats(const SolverCoefficients& c, const StepLayout& layout) {
  return c.x0_clip == kX0DynamicThreshold ? (size_t)layout.sample_size : 0;
}

void solver_step(const SolverCoefficients& c, const StepLayout& layout, const SolverArrays& a, float* scratch) {
  const int n = layout.sample_size;
  const StepCoefficients threshold = solver_threshold_record(c);
  auto at = [](const float* p, size_t i) { return p ? p[i] : 0.0f; };
  for (int b = 0; b < layout.batch_size; ++b) {
    const size_t so = (size_t)b * n;
    const float* x = a.sample + so;
    float* conv = a.converted + so;
    // 1. the converted (guided, where guided) model output, 2. clip or threshold
    for (int i = 0; i < n; ++i)
      conv[i] = solver_convert(c, guided_output(layout, a.model_output, (size_t)b, (size_t)i), x[i]);
    if (c.x0_clip == kX0Clamp) {
      for (int i = 0; i < n; ++i) conv[i] = clamp_keep_nan(conv[i], -c.clip_sample_range, c.clip_sample_range);
    } else if (c.x0_clip == kX0DynamicThreshold) {
      dynamic_threshold(conv, n, threshold, scratch);
    }
    // 3. corrector and update; every input of an element is read before its
    // outputs are written, so prev and last_out may alias sample or last.
    for (int i = 0; i < n; ++i) {
      const size_t e = so + i;
      float y, out;
      solver_combine(c, x[i], at(a.last, e), conv[i], at(a.history[0], e), at(a.history[1], e),
                     at(a.history[2], e), at(a.noise, e), &y, &out);
      if (a.last_out) a.last_out[e] = y;
      a.prev_sample[e] = out;
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
