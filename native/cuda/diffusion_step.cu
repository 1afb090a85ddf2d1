// The fused DDPM/DDIM step, add_noise and the training loss on the GPU, the twins of
// cpu/diffusion_step.cpp (and src/schedulers/step_kernel.ts): one thread per
// element does predicted x0, the clip, the previous sample and the variance
// noise with the same float32 operations in the same order (--fmad=false),
// so the results are bit-identical. Dynamic thresholding needs a quantile of
// each sample and is not on the GPU yet: it reports kErrUnsupported.
#include "../cpu/diffusion_loss.h"
#include "../engine/mathf.h"
#include "cuda_common.cuh"

namespace mb {
namespace cuda {

namespace {

__device__ inline float clampf(float x, float lo, float hi) {
  if (x != x) return x;  // torch.clamp keeps NaN
  return x < lo ? lo : (x > hi ? hi : x);
}

__device__ inline float pred_epsilon(const StepCoefficients& c, float m, float x, float x0) {
  const float sa = c.sqrt_alpha_prod, sb = c.sqrt_beta_prod;
  if (c.epsilon_from == kEpsilonFromClippedX0) return (x - sa * x0) / sb;
  if (c.prediction == kPredictEpsilon) return m;
  if (c.prediction == kPredictSample) return (x - sa * m) / sb;
  return sa * m + sb * x;
}

__global__ void step_kernel(StepCoefficients c, StepLayout layout, const float* model_output, const float* sample,
                            const float* noise, float* prev_sample, float* pred_original_sample) {
  const size_t n = (size_t)layout.sample_size;
  const float sa = c.sqrt_alpha_prod, sb = c.sqrt_beta_prod;
  MB_GRID_STRIDE(idx, (size_t)layout.batch_size * n) {
    const size_t b = idx / n, i = idx % n;
    const float* m = model_output + b * (size_t)layout.model_output_stride;
    const float x = sample[idx];
    float x0;
    if (c.prediction == kPredictEpsilon)
      x0 = (x - sb * m[i]) / sa;
    else if (c.prediction == kPredictSample)
      x0 = m[i];
    else
      x0 = sa * x - sb * m[i];
    if (c.x0_clip == kX0Clamp) x0 = clampf(x0, -c.clip_sample_range, c.clip_sample_range);
    pred_original_sample[idx] = x0;
    const float other = c.combine == kCombineSample ? x : pred_epsilon(c, m[i], x, x0);
    float p = c.x0_coeff * x0 + c.other_coeff * other;
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
      p = p + stddev * noise[idx];
    }
    prev_sample[idx] = p;
  }
}

__global__ void add_noise_kernel(const float* x0, const float* noise, const float* sa, const float* sb, size_t sample_size,
                                 size_t total, float* out) {
  MB_GRID_STRIDE(i, total) {
    const size_t b = i / sample_size;
    out[i] = sa[b] * x0[i] + sb[b] * noise[i];
  }
}

constexpr int kLossThreads = 256;

// One block per sample: each element's gradient with the CPU's expressions
// (bit-identical), and the sample's squared sum in double through a tree in
// shared memory (the CPU sums sequentially: only double rounding differs).
__global__ void __launch_bounds__(kLossThreads) diffusion_loss_kernel(const float* out, DiffusionLossArgs a, float* dy,
                                                                      double* sample_sums) {
  __shared__ double partial[kLossThreads];
  const int b = blockIdx.x, C = a.channels, pixels = a.pixels;
  const size_t per_sample = (size_t)C * pixels;
  double sum = 0;
  for (size_t e = threadIdx.x; e < per_sample; e += kLossThreads) {
    const size_t p = e / (size_t)C, c = e % (size_t)C;
    const size_t nhwc = (size_t)b * per_sample + e;
    const LossTerm t = diffusion_loss_term(a, out, b, nhwc, ((size_t)b * C + c) * pixels + p);
    sum += (double)t.diff * t.diff;
    dy[nhwc] = t.grad;
  }
  partial[threadIdx.x] = sum;
  __syncthreads();
  for (int half = kLossThreads / 2; half > 0; half /= 2) {
    if ((int)threadIdx.x < half) partial[threadIdx.x] += partial[threadIdx.x + half];
    __syncthreads();
  }
  if (threadIdx.x == 0) sample_sums[b] = partial[0];
}

}  // namespace

int diffusion_step(const StepCoefficients& c, const StepLayout& layout, const float* model_output, const float* sample,
                   const float* noise, float* prev_sample, float* pred_original_sample) {
  if (c.x0_clip == kX0DynamicThreshold) return kErrUnsupported;
  const size_t total = (size_t)layout.batch_size * layout.sample_size;
  if (!total || !begin_launch()) return kOk;
  MB_LAUNCH(step_kernel, grid_for(total), kThreads)(c, layout, model_output, sample, noise, prev_sample,
                                                          pred_original_sample);
  check_launch("diffusion_step");
  return kOk;
}

void add_noise(const float* x0, const float* noise, const float* sqrt_alpha_prod, const float* sqrt_one_minus_alpha_prod,
               int batch, int sample_size, float* out) {
  const size_t total = (size_t)batch * sample_size;
  if (!total || !begin_launch()) return;
  MB_LAUNCH(add_noise_kernel, grid_for(total), kThreads)(x0, noise, sqrt_alpha_prod, sqrt_one_minus_alpha_prod,
                                                               (size_t)sample_size, total, out);
  check_launch("add_noise");
}

void diffusion_loss(const float* out, const DiffusionLossArgs& a, float* dy, double* sample_sums) {
  if (a.batch <= 0 || !begin_launch()) return;
  MB_LAUNCH_SYNC(diffusion_loss_kernel, (unsigned)a.batch, kLossThreads)(out, a, dy, sample_sums);
  check_launch("diffusion_loss");
}

}  // namespace cuda
}  // namespace mb
