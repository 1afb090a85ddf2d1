// GroupNorm over NHWC on the GPU with its fused tails (per-sample
// scale/shift, SiLU), the twin of cpu/groupnorm.cpp: statistics in double,
// two-pass (mean, then the centred sum of squares), one block per (sample,
// group); then one pass that applies y = x * mul[c] + add[c] (+ SiLU) with
// the CPU's float operations in the CPU's order, so given equal statistics
// the outputs are bit-identical (this file is compiled with --fmad=false).
// The backward follows at the end.
#include "../engine/mathf.h"
#include "cuda_common.cuh"
#include "mma.cuh"  // pack_half2, store_u32: the half output's rounding and stores

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

// Element i of the output, in fp32.
__device__ __forceinline__ float group_value(const ApplyParams& a, size_t i) {
  const int cpg = a.channels / a.groups;
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
  return a.silu ? silu_f32(v) : v;
}

__global__ void group_apply(ApplyParams a, size_t total) {
  MB_GRID_STRIDE(i, total) a.y[i] = group_value(a, i);
}

// Half activations (conv2d_mma.cu): the same values, rounded to T two at a
// time by the conversion the tensor-core GEMMs' A tiles use (pack_half2), so
// a conv reading y_half multiplies exactly what it would have rounded from
// group_apply's floats. `pairs` = total / 2 (channels are even).
template <WeightType T>
__global__ void group_apply_half(ApplyParams a, uint16_t* y_half, size_t pairs) {
  MB_GRID_STRIDE(j, pairs) store_u32(y_half + 2 * j, pack_half2<T>(group_value(a, 2 * j), group_value(a, 2 * j + 1)));
}

// --- backward kernels (see cpu/groupnorm.cpp for the derivation) ---------------

enum NormBackCoef { kMul, kAdd, kCentre, kK1, kK2, kK3, kNumCoefs };

struct BackParams {
  const float* x;
  const float* dy;
  float* dx;
  const float* mean;
  const float* rstd;
  const float* gamma;
  const float* beta;
  const float* scale_shift;
  int scale_shift_ld;
  int batch, pixels, channels, groups;
  bool silu;
  bool dx_overwrite;  // dx = ... rather than dx += ...
  double* sums;  // [B][C][2]: S1 = sum g1, S2 = sum g1 (x - mean)
  float* coefs;  // [B][kNumCoefs][C]
  float* g1;     // like dy
  float* dgamma;
  float* dbeta;
  float* dscale_shift;
  double count;
};

__device__ inline float* coef_at(const BackParams& p, size_t b, int k, int c) {
  return p.coefs + (b * kNumCoefs + k) * (size_t)p.channels + c;
}

// The forward's affine map per (b, c), to recompute y1 for SiLU'.
__global__ void back_affine(BackParams p) {
  const int cpg = p.channels / p.groups;
  MB_GRID_STRIDE(i, (size_t)p.batch * p.channels) {
    const size_t b = i / (size_t)p.channels;
    const int c = (int)(i % (size_t)p.channels), g = c / cpg;
    const float m = p.mean[b * p.groups + g], r = p.rstd[b * p.groups + g];
    float k = r * p.gamma[c];
    float d = p.beta[c] - m * k;
    if (p.scale_shift) {
      const float s = 1.0f + p.scale_shift[b * p.scale_shift_ld + c];
      k *= s;
      d = d * s + p.scale_shift[b * p.scale_shift_ld + p.channels + c];
    }
    *coef_at(p, b, kMul, c) = k;
    *coef_at(p, b, kAdd, c) = d;
    *coef_at(p, b, kCentre, c) = m;
  }
}

// Block (channel chunk, b): 32 channels x 8 pixel lanes; S1, S2 in double, g1 stored.
__global__ void __launch_bounds__(256) back_sums(BackParams p) {
  __shared__ double part[8][32][2];
  const int lane_c = threadIdx.x & 31, lane_p = threadIdx.x >> 5;
  const int c = blockIdx.x * 32 + lane_c;
  const size_t b = blockIdx.y;
  double s1 = 0.0, s2 = 0.0;
  if (c < p.channels) {
    const float mul = *coef_at(p, b, kMul, c), add = *coef_at(p, b, kAdd, c), centre = *coef_at(p, b, kCentre, c);
    for (int px = lane_p; px < p.pixels; px += 8) {
      const size_t i = (b * p.pixels + px) * (size_t)p.channels + c;
      const float xv = p.x[i];
      float g1 = p.dy[i];
      if (p.silu) {
        const float y1 = xv * mul + add;
        const float sig = 1.0f / (1.0f + exp_f32(-y1));
        g1 = g1 * (sig * (1.0f + y1 * (1.0f - sig)));
      }
      p.g1[i] = g1;
      s1 += (double)g1;
      s2 += (double)(g1 * (xv - centre));
    }
  }
  part[lane_p][lane_c][0] = s1;
  part[lane_p][lane_c][1] = s2;
  __syncthreads();
  if (lane_p == 0 && c < p.channels) {
    for (int l = 1; l < 8; ++l) s1 += part[l][lane_c][0], s2 += part[l][lane_c][1];
    p.sums[(b * p.channels + c) * 2] = s1;
    p.sums[(b * p.channels + c) * 2 + 1] = s2;
  }
}

// One thread per group, samples in order (dgamma and dbeta sum over them):
// the parameter gradients and pass 2's coefficients, as the CPU computes them.
__global__ void back_params(BackParams p) {
  const int g = blockIdx.x * blockDim.x + threadIdx.x;
  if (g >= p.groups) return;
  const int cpg = p.channels / p.groups, C = p.channels;
  for (int b = 0; b < p.batch; ++b) {
    const float r = p.rstd[b * p.groups + g];
    double sum_gx = 0, sum_gx_xhat = 0;
    for (int c = g * cpg; c < (g + 1) * cpg; ++c) {
      const double s1 = p.sums[((size_t)b * C + c) * 2], s2 = p.sums[((size_t)b * C + c) * 2 + 1];
      const float scale = p.scale_shift ? p.scale_shift[(size_t)b * p.scale_shift_ld + c] : 0.0f;
      const double s = 1.0 + scale;
      if (p.scale_shift && p.dscale_shift) {
        p.dscale_shift[(size_t)b * p.scale_shift_ld + c] += (float)((double)r * p.gamma[c] * s2 + p.beta[c] * s1);
        p.dscale_shift[(size_t)b * p.scale_shift_ld + C + c] += (float)s1;
      }
      if (p.dgamma) p.dgamma[c] += (float)(s * r * s2);
      if (p.dbeta) p.dbeta[c] += (float)(s * s1);
      sum_gx += p.gamma[c] * s * s1;
      sum_gx_xhat += p.gamma[c] * s * r * s2;
    }
    const float mean_gx = (float)(sum_gx / p.count), mean_gx_xhat = (float)(sum_gx_xhat / p.count);
    for (int c = g * cpg; c < (g + 1) * cpg; ++c) {
      const float scale = p.scale_shift ? p.scale_shift[(size_t)b * p.scale_shift_ld + c] : 0.0f;
      *coef_at(p, b, kK1, c) = r * p.gamma[c] * (1.0f + scale);
      *coef_at(p, b, kK2, c) = -r * r * mean_gx_xhat;
      *coef_at(p, b, kK3, c) = -r * mean_gx;
    }
  }
}

// dx += k1 g1 + k2 (x - mean) + k3 (dx = with dx_overwrite)
__global__ void back_dx(BackParams p, size_t total) {
  MB_GRID_STRIDE(i, total) {
    const int c = (int)(i % (size_t)p.channels);
    const size_t b = i / ((size_t)p.pixels * p.channels);
    const float d = p.x[i] - *coef_at(p, b, kCentre, c);
    const float v = *coef_at(p, b, kK1, c) * p.g1[i] + *coef_at(p, b, kK2, c) * d + *coef_at(p, b, kK3, c);
    p.dx[i] = p.dx_overwrite ? v : p.dx[i] + v;
  }
}

}  // namespace

namespace {
// Statistics into stats (mean, then rstd); the parameters of the apply pass.
bool group_norm_statistics(const float* x, const GroupNormArgs& a, float* stats, ApplyParams* p) {
  if (a.batch <= 0 || a.pixels <= 0 || a.channels <= 0 || !begin_launch()) return false;
  if (a.batch > 65535) {
    record(cudaErrorInvalidConfiguration, "group_norm: batch above 65535");
    return false;
  }
  float* mean = stats;
  float* rstd = stats + (size_t)a.batch * a.groups;
  MB_LAUNCH_SYNC(group_stats, dim3((unsigned)a.groups, (unsigned)a.batch), kStatThreads)(x, a.pixels, a.channels,
                                                                                        a.groups, a.eps, mean, rstd);
  if (!check_launch("group_stats")) return false;
  *p = ApplyParams{x, nullptr, mean, rstd, a.gamma, a.beta, a.scale_shift, a.scale_shift_ld, a.pixels, a.channels, a.groups, a.silu};
  return true;
}

template <WeightType T>
void group_norm_forward_half(const float* x, const GroupNormArgs& a, void* y, float* stats) {
  if (a.channels % 2 != 0 || ((uintptr_t)y & 3) != 0) {
    record(cudaErrorNotSupported, "group_norm: a half output needs an even channel count and 4-byte alignment");
    return;
  }
  ApplyParams p;
  if (!group_norm_statistics(x, a, stats, &p)) return;
  const size_t pairs = (size_t)a.batch * a.pixels * a.channels / 2;
  MB_LAUNCH(group_apply_half<T>, grid_for(pairs), kThreads)(p, static_cast<uint16_t*>(y), pairs);
  check_launch("group_apply_half");
}
}  // namespace

void group_norm_forward(const float* x, const GroupNormArgs& a, float* y, float* stats) {
  ApplyParams p;
  if (!group_norm_statistics(x, a, stats, &p)) return;
  p.y = y;
  const size_t total = (size_t)a.batch * a.pixels * a.channels;
  MB_LAUNCH(group_apply, grid_for(total), kThreads)(p, total);
  check_launch("group_apply");
}
void group_norm_forward_f16(const float* x, const GroupNormArgs& a, void* y, float* stats) {
  group_norm_forward_half<WeightType::kFloat16>(x, a, y, stats);
}
void group_norm_forward_bf16(const float* x, const GroupNormArgs& a, void* y, float* stats) {
  group_norm_forward_half<WeightType::kBfloat16>(x, a, y, stats);
}

// ---------------------------------------------------------------------------
// Backward: the CPU's two-pass scheme (per-channel sums S1, S2 of g1, the
// parameter gradients and per-channel coefficients, then dx) with the same
// scratch layout; sums run in a different order, so results agree to rounding.

size_t group_norm_backward_scratch_floats(const GroupNormArgs& a) {
  const size_t bc = (size_t)a.batch * a.channels;
  return bc * 4 + bc * kNumCoefs + bc * a.pixels;
}

void group_norm_backward(const float* x, const GroupNormArgs& a, const float* stats, const float* dy, float* dx,
                         float* dgamma, float* dbeta, float* dscale_shift, float* scratch) {
  if (a.batch <= 0 || a.pixels <= 0 || a.channels <= 0 || !begin_launch()) return;
  if (a.batch > 65535) {
    record(cudaErrorInvalidConfiguration, "group_norm_backward: batch above 65535");
    return;
  }
  const size_t bc = (size_t)a.batch * a.channels;
  BackParams p;
  p.x = x, p.dy = dy, p.dx = dx;
  p.mean = stats, p.rstd = stats + (size_t)a.batch * a.groups;
  p.gamma = a.gamma, p.beta = a.beta, p.scale_shift = a.scale_shift, p.scale_shift_ld = a.scale_shift_ld;
  p.batch = a.batch, p.pixels = a.pixels, p.channels = a.channels, p.groups = a.groups, p.silu = a.silu;
  p.dx_overwrite = a.dx_overwrite;
  p.sums = reinterpret_cast<double*>(scratch);  // arena blocks are 64-byte aligned
  p.coefs = scratch + bc * 4;
  p.g1 = p.coefs + bc * kNumCoefs;
  p.dgamma = dgamma, p.dbeta = dbeta, p.dscale_shift = dscale_shift;
  p.count = (double)a.pixels * (a.channels / a.groups);
  MB_LAUNCH(back_affine, grid_for(bc), kThreads)(p);
  if (!check_launch("group_norm_backward affine")) return;
  MB_LAUNCH_SYNC(back_sums, dim3((unsigned)((a.channels + 31) / 32), (unsigned)a.batch), 256)(p);
  if (!check_launch("group_norm_backward sums")) return;
  MB_LAUNCH(back_params, (unsigned)((a.groups + 63) / 64), 64)(p);
  if (!check_launch("group_norm_backward params")) return;
  const size_t total = bc * a.pixels;
  MB_LAUNCH(back_dx, grid_for(total), kThreads)(p, total);
  check_launch("group_norm_backward dx");
}

}  // namespace cuda
}  // namespace mb
