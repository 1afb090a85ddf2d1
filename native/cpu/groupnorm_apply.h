// GroupNorm's apply pass over a run of channels, y = x * mul + add, then
// optionally SiLU, a whole vector of the chosen instruction set at a time;
// and its backward's first pass through the SiLU (MB_GRAD_KERNEL below).
// The pass is SiLU-bound (some fifty vector operations per vector of
// outputs), so natively it runs at the width of the CPU's widest unit rather
// than groupnorm.cpp's four lanes. The operations are exp_f32's, lane for
// lane, with no contraction: every width gives the same bits.
//
// Included once per instruction set by groupnorm_<isa>.cpp, each compiled
// with its own target flags, with
//   MB_APPLY_BYTES   vector width in bytes (32: AVX2, 64: AVX-512)
//   MB_APPLY_KERNEL  the function's name
// A kernel does the leading multiple of its width and returns how many
// channels it did; groupnorm.cpp does the rest. Only templates instantiated
// on this width's own types are used here, never a shared inline function,
// so no code built for these flags can stand in for the generic build's.
#pragma once

#include "../engine/mathf.h"

namespace mb {

using NormApplyKernel = int (*)(const float* x, const float* mul, const float* add, int n, float* y, bool silu);

// The kernel for the instruction set the GEMM kernels were chosen for
// (conv2d.cpp; MARBLE_ISA forces both), or null: four lanes in groupnorm.cpp.
NormApplyKernel norm_apply_kernel();

// The backward's pass 1 at one pixel, through the SiLU (groupnorm.cpp's
// norm_backward_sums): g1 = dy * SiLU'(x * mul + add) into g1_out, and per
// channel acc1 += g1, acc2 += g1 * (x - centre). Also the leading multiple of
// the width; the same operations as groupnorm.cpp's four lanes, lane for lane.
using NormGradKernel = int (*)(const float* x, const float* dy, const float* mul, const float* add, const float* centre,
                               int n, float* g1_out, float* acc1, float* acc2);
NormGradKernel norm_grad_kernel();

#if defined(__x86_64__) && defined(MB_HAVE_X86_KERNELS)
int norm_apply_avx2(const float* x, const float* mul, const float* add, int n, float* y, bool silu);
int norm_apply_avx512(const float* x, const float* mul, const float* add, int n, float* y, bool silu);
int norm_grad_avx2(const float* x, const float* dy, const float* mul, const float* add, const float* centre, int n,
                   float* g1_out, float* acc1, float* acc2);
int norm_grad_avx512(const float* x, const float* dy, const float* mul, const float* add, const float* centre, int n,
                     float* g1_out, float* acc1, float* acc2);
#endif

#ifdef MB_APPLY_KERNEL
namespace {
typedef float apply_vec __attribute__((vector_size(MB_APPLY_BYTES)));
typedef int32_t apply_ivec __attribute__((vector_size(MB_APPLY_BYTES)));
typedef float apply_vec_u __attribute__((vector_size(MB_APPLY_BYTES), aligned(4)));
constexpr int kApplyFloats = MB_APPLY_BYTES / 4;

template <bool kSilu>
int apply_span(const float* x, const float* mul, const float* add, int n, float* y) {
  int c = 0;
  for (; c + kApplyFloats <= n; c += kApplyFloats) {
    const apply_vec v = *reinterpret_cast<const apply_vec_u*>(x + c) * *reinterpret_cast<const apply_vec_u*>(mul + c) +
                        *reinterpret_cast<const apply_vec_u*>(add + c);
    *reinterpret_cast<apply_vec_u*>(y + c) = kSilu ? silu_lanes<apply_vec, apply_ivec>(v) : v;
  }
  return c;
}
}  // namespace

int MB_APPLY_KERNEL(const float* x, const float* mul, const float* add, int n, float* y, bool silu) {
  return silu ? apply_span<true>(x, mul, add, n, y) : apply_span<false>(x, mul, add, n, y);
}

int MB_GRAD_KERNEL(const float* x, const float* dy, const float* mul, const float* add, const float* centre, int n,
                   float* g1_out, float* acc1, float* acc2) {
  auto load = [](const float* p) { return *reinterpret_cast<const apply_vec_u*>(p); };
  auto store = [](float* p, apply_vec v) { *reinterpret_cast<apply_vec_u*>(p) = v; };
  int c = 0;
  for (; c + kApplyFloats <= n; c += kApplyFloats) {
    const apply_vec xv = load(x + c);
    const apply_vec y1 = xv * load(mul + c) + load(add + c);
    const apply_vec sig = 1.0f / (1.0f + exp_lanes<apply_vec, apply_ivec>(-y1));
    const apply_vec g1 = load(dy + c) * (sig * (1.0f + y1 * (1.0f - sig)));
    store(g1_out + c, g1);
    store(acc1 + c, load(acc1 + c) + g1);
    store(acc2 + c, load(acc2 + c) + g1 * (xv - load(centre + c)));
  }
  return c;
}
#endif

}  // namespace mb
