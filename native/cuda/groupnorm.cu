// GroupNorm over NHWC on the GPU with its fused tails (per-sample
// scale/shift, SiLU), the twin of cpu/groupnorm.cpp: statistics in double,
// two-pass (mean, then the centred sum of squares), one block per (sample,
// group); then one pass that applies y = x * mul[c] + add[c] (+ SiLU) with
// the CPU's float operations in the CPU's order, so given equal statistics
// the outputs are bit-identical (this file is compiled with --fmad=false).
#include "../engine/mathf.h"
#include "cuda_common.cuh"

namespace mb {
namespace cuda {

namespace {

constexpr int kStatThreads = 256;

__device__ double block_sum(double v, double* shared) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
  if (lane == 0) shared[warp] = v;
  __syncthreads();
  double total = 0.0;
  if (threadIdx.x == 0)
    for (int w = 0; w < (int)(blockDim.x >> 5); ++w) total += shared[w];
  __syncthreads();
  return total;  // valid in thread 0
}

// Block (g, b): mean and rstd of group g of sample b.
__global__ void __launch_bounds__(kStatThreads) group_stats(const float* x, int pixels, int channels, int groups,
                                                             float eps, float* mean_out, float* rstd_out) {
  __shared__ double partial[kStatThreads / 32];
  __shared__ double mean_shared;
  const int g = blockIdx.x, b = blockIdx.y;
  const int cpg = channels / groups;
  const long long count = (long long)pixels * cpg;
  const float* base = x + (size_t)b * pixels * channels + (size_t)g * cpg;
  double sum = 0.0;
  for (long long i = threadIdx.x; i < count; i += blockDim.x) {
    const long long p = i / cpg;
    sum += (double)base[(size_t)p * channels + (size_t)(i - p * cpg)];
  }
  sum = block_sum(sum, partial);
  if (threadIdx.x == 0) {
    mean_shared = sum / (double)count;
    mean_out[b * groups + g] = (float)mean_shared;
  }
  __syncthreads();
  const double mean = mean_shared;
  double sq = 0.0;
  for (long long i = threadIdx.x; i < count; i += blockDim.x) {
    const long long p = i / cpg;
    const double d = (double)base[(size_t)p * channels + (size_t)(i - p * cpg)] - mean;
    sq += d * d;
  }
  sq = block_sum(sq, partial);
  if (threadIdx.x == 0) {
    const double var = sq / (double)count;  // biased, like torch
    rstd_out[b * groups + g] = (float)(1.0 / sqrt_f64(var + (double)eps));
  }
}

struct ApplyParams {
  const float* x;
  float* y;
  const float* mean;
  const float* rstd;
  const float* gamma;
  const float* beta;
  const float* scale_shift;
  int scale_shift_ld;
  int pixels, channels, groups;
  bool silu;
};

__global__ void group_apply(ApplyParams a, size_t total) {
  const int cpg = a.channels / a.groups;
  MB_GRID_STRIDE(i, total) {
    const int c = (int)(i % (size_t)a.channels);
    const size_t b = i / ((size_t)a.pixels * a.channels);
    const int g = c / cpg;
    const float m = a.mean[b * a.groups + g], r = a.rstd[b * a.groups + g];
    float k = r * a.gamma[c];
    float d = a.beta[c] - m * k;
    if (a.scale_shift) {
      const float s = 1.0f + a.scale_shift[b * a.scale_shift_ld + c];
      const float sh = a.scale_shift[b * a.scale_shift_ld + a.channels + c];
      k *= s;
      d = d * s + sh;
    }
    const float v = a.x[i] * k + d;
    a.y[i] = a.silu ? silu_f32(v) : v;
  }
}

}  // namespace

void group_norm_forward(const float* x, const GroupNormArgs& a, float* y, float* stats) {
  if (a.batch <= 0 || a.pixels <= 0 || a.channels <= 0 || !begin_launch()) return;
  if (a.batch > 65535) {
    record(cudaErrorInvalidConfiguration, "group_norm: batch above 65535");
    return;
  }
  float* mean = stats;
  float* rstd = stats + (size_t)a.batch * a.groups;
  group_stats<<<dim3((unsigned)a.groups, (unsigned)a.batch), kStatThreads, 0, stream()>>>(x, a.pixels, a.channels,
                                                                                        a.groups, a.eps, mean, rstd);
  if (!check_launch("group_stats")) return;
  ApplyParams p{x, y, mean, rstd, a.gamma, a.beta, a.scale_shift, a.scale_shift_ld, a.pixels, a.channels, a.groups, a.silu};
  const size_t total = (size_t)a.batch * a.pixels * a.channels;
  group_apply<<<grid_for(total), kThreads, 0, stream()>>>(p, total);
  check_launch("group_apply");
}

}  // namespace cuda
}  // namespace mb
