// Elementwise ops that are not fused into a GEMM or a norm.
#include "../engine/mathf.h"
#include "ops.h"

namespace mb {

void silu_forward(const float* x, long long n, float* y) {
  for (long long i = 0; i < n; ++i) y[i] = silu_f32(x[i]);
}

void add_forward(const float* a, const float* b, long long n, float* y) {
  for (long long i = 0; i < n; ++i) y[i] = a[i] + b[i];
}

void silu_backward(const float* x, const float* dy, long long n, float* dx) {
  for (long long i = 0; i < n; ++i) {
    const float sig = 1.0f / (1.0f + exp_f32(-x[i]));
    dx[i] += dy[i] * (sig * (1.0f + x[i] * (1.0f - sig)));
  }
}

bool has_non_finite(const float* x, long long n) {
  for (long long i = 0; i < n; ++i)
    if (!is_finite_f32(x[i])) return true;
  return false;
}

}  // namespace mb
