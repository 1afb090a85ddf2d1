// The optimizer's per-tensor updates on the GPU, the twins of cpu/adamw.cpp:
// AdamW in torch's float32 order of operations and the EMA of the weights,
// one thread per element, bit-identical (--fmad=false, IEEE sqrt and division);
// and the squared sum of a gradient for the global norm, in double (a tree
// order, so it differs from the CPU's sequential sum only in double rounding).
#include "../engine/mathf.h"
#include "cuda_common.cuh"

namespace mb {
namespace cuda {

namespace {

__global__ void adamw_kernel(float* w, float* ma, float* va, const float* g, size_t n, AdamwCoefs c) {
  MB_GRID_STRIDE(k, n) {
    const float gk = c.scale == 1.0f ? g[k] : g[k] * c.scale;
    float wk = w[k] * c.decay;
    const float m = ma[k] + c.one_minus_beta1 * (gk - ma[k]);
    const float v = va[k] * c.beta2 + c.one_minus_beta2 * (gk * gk);
    ma[k] = m;
    va[k] = v;
    const float denom = sqrt_f32(v) / c.bc2_sqrt + c.eps;
    w[k] = wk + (-c.step_size) * (m / denom);
  }
}

__global__ void ema_kernel(float* ema, const float* w, size_t n, float one_minus_decay) {
  MB_GRID_STRIDE(k, n) ema[k] = ema[k] - one_minus_decay * (ema[k] - w[k]);
}

constexpr int kSumThreads = 256;

// One block: each thread sums a strided share, then a tree in shared memory.
__global__ void __launch_bounds__(kSumThreads) sum_squares_kernel(const float* x, size_t n, double* out) {
  __shared__ double partial[kSumThreads];
  double sum = 0;
  for (size_t k = threadIdx.x; k < n; k += kSumThreads) sum += (double)x[k] * x[k];
  partial[threadIdx.x] = sum;
  __syncthreads();
  for (int half = kSumThreads / 2; half > 0; half /= 2) {
    if ((int)threadIdx.x < half) partial[threadIdx.x] += partial[threadIdx.x + half];
    __syncthreads();
  }
  if (threadIdx.x == 0) out[0] = partial[0];
}

}  // namespace

void adamw_update(float* w, float* exp_avg, float* exp_avg_sq, const float* grad, size_t n, const AdamwCoefs& c) {
  if (!n || !begin_launch()) return;
  MB_LAUNCH(adamw_kernel, grid_for(n), kThreads)(w, exp_avg, exp_avg_sq, grad, n, c);
  check_launch("adamw");
}

void ema_update(float* ema, const float* w, size_t n, float one_minus_decay) {
  if (!n || !begin_launch()) return;
  MB_LAUNCH(ema_kernel, grid_for(n), kThreads)(ema, w, n, one_minus_decay);
  check_launch("ema");
}

void sum_squares(const float* x, size_t n, double* out) {
  if (!begin_launch()) return;
  MB_LAUNCH_SYNC(sum_squares_kernel, 1, kSumThreads)(x, n, out);
  check_launch("sum_squares");
}

}  // namespace cuda
}  // namespace mb
