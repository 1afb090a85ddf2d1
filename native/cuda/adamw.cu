// The optimizer's per-tensor updates on the GPU, the twins of cpu/adamw.cpp:
// AdamW in torch's float32 order of operations and the EMA of the weights,
// one thread per element, bit-identical (--fmad=false, IEEE sqrt and division).
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

}  // namespace cuda
}  // namespace mb
