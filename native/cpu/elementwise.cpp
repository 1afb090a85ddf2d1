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

bool has_non_finite(const float* x, long long n) {
  for (long long i = 0; i < n; ++i)
    if (!is_finite_f32(x[i])) return true;
  return false;
}

}  // namespace mb
