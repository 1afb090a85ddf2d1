// The fused DDPM/DDIM step, add_noise and the training loss on the GPU. The
// per-element arithmetic is the CPU kernels' own (engine/step_math.h,
// cpu/diffusion_loss.h), compiled with --fmad=false: the results are
// bit-identical with the cpu's.
//
// Without dynamic thresholding one thread per element does the whole step.
// With it, x0 first goes to pred_original_sample (one thread per element),
// then one block per sample finds the quantile of |x0| by radix selection
// (exact: it returns the same order statistics the CPU's sort does) and
// finishes its sample's step.
#include "../cpu/diffusion_loss.h"
#include "../engine/step_math.h"
#include "cuda_common.cuh"

namespace mb {
namespace cuda {

namespace {

__device__ inline float variance_half(const StepCoefficients& c, const float* m, size_t n, size_t i) {
  return c.noise_term == kNoiseLearnedVariance || c.noise_term == kNoiseLearnedRange ? m[n + i] : 0.0f;
}

__global__ void step_kernel(StepCoefficients c, StepLayout layout, const float* model_output, const float* sample,
                            const float* noise, float* prev_sample, float* pred_original_sample) {
  const size_t n = (size_t)layout.sample_size;
  MB_GRID_STRIDE(idx, (size_t)layout.batch_size * n) {
    const size_t b = idx / n, i = idx % n;
    const float* m = model_output + b * (size_t)layout.model_output_stride;
    const float mi = guided_output(layout, model_output, b, i);
    const float x = sample[idx];
    float x0 = step_pred_x0(c, mi, x);
    if (c.x0_clip == kX0Clamp) x0 = clamp_keep_nan(x0, -c.clip_sample_range, c.clip_sample_range);
    pred_original_sample[idx] = x0;
    prev_sample[idx] = step_prev_sample(c, mi, variance_half(c, m, n, i), x, x0, noise ? noise[idx] : 0.0f);
  }
}

// Dynamic thresholding, part 1: the unclipped x0 of every element.
__global__ void pred_x0_kernel(StepCoefficients c, StepLayout layout, const float* model_output, const float* sample,
                               float* pred_original_sample) {
  const size_t n = (size_t)layout.sample_size;
  MB_GRID_STRIDE(idx, (size_t)layout.batch_size * n) {
    const size_t b = idx / n, i = idx % n;
    pred_original_sample[idx] = step_pred_x0(c, guided_output(layout, model_output, b, i), sample[idx]);
  }
}

constexpr int kSelectThreads = 256;

// The k-th smallest (0-based) of |x[0..n)| by the bits of the magnitudes
// (for non-negative floats the bit patterns sort as the values do), eight
// bits at a time from the top: each round counts the candidates' next digit
// and keeps the digit where rank k falls. Every thread of the block calls it.
__device__ uint32_t select_magnitude_bits(const float* x, int n, uint32_t k, uint32_t* histogram, uint32_t* shared) {
  uint32_t prefix = 0, mask = 0;
  for (int shift = 24; shift >= 0; shift -= 8) {
    for (int d = threadIdx.x; d < 256; d += blockDim.x) histogram[d] = 0;
    __syncthreads();
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
      const uint32_t bits = f32_bits(x[i]) & 0x7fffffffu;
      if ((bits & mask) == prefix) atomicAdd(&histogram[(bits >> shift) & 255u], 1u);
    }
    __syncthreads();
    if (threadIdx.x == 0) {
      uint32_t below = 0, digit = 0;
      for (; digit < 255 && below + histogram[digit] <= k; ++digit) below += histogram[digit];
      shared[0] = prefix | (digit << shift);
      shared[1] = k - below;
    }
    __syncthreads();
    prefix = shared[0];
    k = shared[1];
    mask |= 255u << shift;
    __syncthreads();
  }
  return prefix;
}

// Dynamic thresholding, part 2: one block per sample.
__global__ void threshold_step_kernel(StepCoefficients c, StepLayout layout, const float* model_output,
                                      const float* sample, const float* noise, float* prev_sample,
                                      float* pred_original_sample) {
  __shared__ uint32_t histogram[256];
  __shared__ uint32_t shared[2];
  __shared__ int has_nan;
  const int n = layout.sample_size;
  const size_t base = (size_t)blockIdx.x * n;
  float* x0 = pred_original_sample + base;
  if (threadIdx.x == 0) has_nan = 0;
  __syncthreads();
  for (int i = threadIdx.x; i < n; i += blockDim.x)
    if (x0[i] != x0[i]) has_nan = 1;  // (every writer writes 1)
  __syncthreads();
  const bool nan_present = has_nan != 0;
  int lo = 0, hi = 0;
  float w = 0;
  threshold_ranks(c, n, &lo, &hi, &w);
  float low = 0, high = 0;
  if (!nan_present) {
    low = bits_f32(select_magnitude_bits(x0, n, (uint32_t)lo, histogram, shared));
    high = hi == lo ? low : bits_f32(select_magnitude_bits(x0, n, (uint32_t)hi, histogram, shared));
  }
  const float s = threshold_scale(c, low, high, w, nan_present);
  const float* m = model_output + (size_t)blockIdx.x * layout.model_output_stride;
  for (int i = threadIdx.x; i < n; i += blockDim.x) {
    const float t = threshold_apply(x0[i], s);
    x0[i] = t;
    prev_sample[base + i] = step_prev_sample(c, guided_output(layout, model_output, blockIdx.x, (size_t)i), variance_half(c, m, (size_t)n, (size_t)i), sample[base + i], t,
                                             noise ? noise[base + i] : 0.0f);
  }
}

// --- the multistep / sigma-space solver step (SolverCoefficients, cpu/ops.h) ---

// 1-2. The converted model output of every element, clamped where asked
// (dynamic thresholding then runs on it per sample).
__global__ void solver_convert_kernel(SolverCoefficients c, StepLayout layout, const float* model_output,
                                      const float* sample, float* converted) {
  const size_t n = (size_t)layout.sample_size;
  MB_GRID_STRIDE(idx, (size_t)layout.batch_size * n) {
    const size_t b = idx / n, i = idx % n;
    float v = solver_convert(c, guided_output(layout, model_output, b, i), sample[idx]);
    if (c.x0_clip == kX0Clamp) v = clamp_keep_nan(v, -c.clip_sample_range, c.clip_sample_range);
    converted[idx] = v;
  }
}

// 2. Dynamic thresholding of the converted output in place: one block per sample.
__global__ void solver_threshold_kernel(SolverCoefficients sc, StepLayout layout, float* converted) {
  __shared__ uint32_t histogram[256];
  __shared__ uint32_t shared[2];
  __shared__ int has_nan;
  const StepCoefficients c = solver_threshold_record(sc);
  const int n = layout.sample_size;
  float* x0 = converted + (size_t)blockIdx.x * n;
  if (threadIdx.x == 0) has_nan = 0;
  __syncthreads();
  for (int i = threadIdx.x; i < n; i += blockDim.x)
    if (x0[i] != x0[i]) has_nan = 1;
  __syncthreads();
  const bool nan_present = has_nan != 0;
  int lo = 0, hi = 0;
  float w = 0;
  threshold_ranks(c, n, &lo, &hi, &w);
  float low = 0, high = 0;
  if (!nan_present) {
    low = bits_f32(select_magnitude_bits(x0, n, (uint32_t)lo, histogram, shared));
    high = hi == lo ? low : bits_f32(select_magnitude_bits(x0, n, (uint32_t)hi, histogram, shared));
  }
  const float s = threshold_scale(c, low, high, w, nan_present);
  __syncthreads();
  for (int i = threadIdx.x; i < n; i += blockDim.x) x0[i] = threshold_apply(x0[i], s);
}

// 3. Corrector and update, one thread per element (the CPU's solver_combine).
__global__ void solver_combine_kernel(SolverCoefficients c, size_t total, const float* sample, const float* last,
                                      const float* h0, const float* h1, const float* h2, const float* noise,
                                      const float* converted, float* prev_sample, float* last_out) {
  MB_GRID_STRIDE(e, total) {
    float y, out;
    solver_combine(c, sample[e], last ? last[e] : 0.0f, converted[e], h0 ? h0[e] : 0.0f, h1 ? h1[e] : 0.0f,
                   h2 ? h2[e] : 0.0f, noise ? noise[e] : 0.0f, &y, &out);
    if (last_out) last_out[e] = y;
    prev_sample[e] = out;
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
  const size_t total = (size_t)layout.batch_size * layout.sample_size;
  if (!total || !begin_launch()) return kOk;
  if (c.x0_clip == kX0DynamicThreshold) {
    MB_LAUNCH(pred_x0_kernel, grid_for(total), kThreads)(c, layout, model_output, sample, pred_original_sample);
    check_launch("diffusion_step (x0)");
    MB_LAUNCH_SYNC(threshold_step_kernel, (unsigned)layout.batch_size, kSelectThreads)(
        c, layout, model_output, sample, noise, prev_sample, pred_original_sample);
    check_launch("diffusion_step (dynamic thresholding)");
    return kOk;
  }
  MB_LAUNCH(step_kernel, grid_for(total), kThreads)(c, layout, model_output, sample, noise, prev_sample,
                                                          pred_original_sample);
  check_launch("diffusion_step");
  return kOk;
}

// The solver step on device arrays (the CPU's solver_step, ops.h): the same
// per-element arithmetic (step_math.h, no FMA contraction), so results are
// bit-identical with the cpu's. Callers check solver_step_fits first.
int solver_step(const SolverCoefficients& c, const StepLayout& layout, const SolverArrays& a) {
  const size_t total = (size_t)layout.batch_size * layout.sample_size;
  if (!total || !begin_launch()) return kOk;
  MB_LAUNCH(solver_convert_kernel, grid_for(total), kThreads)(c, layout, a.model_output, a.sample, a.converted);
  check_launch("solver_step (convert)");
  if (c.x0_clip == kX0DynamicThreshold) {
    MB_LAUNCH_SYNC(solver_threshold_kernel, (unsigned)layout.batch_size, kSelectThreads)(c, layout, a.converted);
    check_launch("solver_step (dynamic thresholding)");
  }
  MB_LAUNCH(solver_combine_kernel, grid_for(total), kThreads)(c, total, a.sample, a.last, a.history[0], a.history[1],
                                                              a.history[2], a.noise, a.converted, a.prev_sample,
                                                              a.last_out);
  check_launch("solver_step");
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
