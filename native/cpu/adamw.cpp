// The optimizer's per-tensor updates on the CPU: AdamW (torch.optim.AdamW's
// single-tensor float32 order of operations), the EMA of the weights, and
// the squared sums the global gradient norm (gradient clipping) adds up.
// engine/train.cpp computes the per-step coefficients and walks the tensors.
#include "../engine/mathf.h"
#include "ops.h"

namespace mb {

namespace {

// One range of one tensor. The arrays never overlap and the coefficients are
// values: that lets the compiler vectorise the loop (same operations per lane).
void adamw_range(float* __restrict w, float* __restrict ma, float* __restrict va, const float* __restrict g, size_t n,
                 const AdamwCoefs c) {
  for (size_t k = 0; k < n; ++k) {
    const float gk = c.scale == 1.0f ? g[k] : g[k] * c.scale;
    w[k] = w[k] * c.decay;
    ma[k] = ma[k] + c.one_minus_beta1 * (gk - ma[k]);
    va[k] = va[k] * c.beta2 + c.one_minus_beta2 * (gk * gk);
    const float denom = sqrt_f32(va[k]) / c.bc2_sqrt + c.eps;
    w[k] = w[k] + (-c.step_size) * (ma[k] / denom);
  }
}

}  // namespace

void adamw_update(float* w, float* exp_avg, float* exp_avg_sq, const float* grad, size_t n, const AdamwCoefs& c) {
  parallel_ranges((int)((n + 4095) / 4096), 1, [&](int c0, int c1) {
    const size_t k0 = (size_t)c0 * 4096, k1 = (size_t)c1 * 4096 < n ? (size_t)c1 * 4096 : n;
    adamw_range(w + k0, exp_avg + k0, exp_avg_sq + k0, grad + k0, k1 - k0, c);
  });
}

void ema_update(float* ema, const float* w, size_t n, float one_minus_decay) {
  for (size_t k = 0; k < n; ++k) ema[k] = ema[k] - one_minus_decay * (ema[k] - w[k]);
}

void sum_squares(const float* x, size_t n, double* out) {
  double sum = 0;
  for (size_t k = 0; k < n; ++k) sum += (double)x[k] * x[k];
  out[0] = sum;
}

}  // namespace mb
