// GroupNorm's apply pass over a run of channels, y = x * mul + add, then
// optionally SiLU, a whole vector of the chosen instruction set at a time;
// its backward's first pass through the SiLU (MB_GRAD_KERNEL below), its
// backward's second pass (MB_DX_KERNEL) and the forward's statistics
// (MB_SUMS_KERNEL), which at four float (two double) lanes were half the
// time of the simple passes.
// The pass is SiLU-bound (some fifty vector operations per vector of
// outputs), so natively it runs at the width of the CPU's widest unit rather
// than groupnorm.cpp's four lanes. The operations are exp_f32's, lane for
// lane, with no contraction: every width gives the same bits.
//
// Included once per instruction set by groupnorm_<isa>.cpp, each compiled
// with its own target flags, with
//   MB_APPLY_BYTES   vector width in bytes (32: AVX2, 64: AVX-512)
//   MB_APPLY_KERNEL  the function's name (MB_GRAD_KERNEL, MB_DX_KERNEL, MB_SUMS_KERNEL the others')
// A kernel does the leading multiple of its width and returns how many
// channels it did; groupnorm.cpp does the rest. Only templates instantiated
// on this width's own types are used here, never a shared inline function,
// so no code built for these flags can stand in for the generic build's.
#pragma once

#include <stddef.h>

#include "../engine/mathf.h"

namespace mb {

// The apply pass: y = x * mul + add (then SiLU), the leading multiple of the width.
using NormApplyKernel = int (*)(const float* x, const float* mul, const float* add, int n, float* y, bool silu);

// The backward's pass 1 at one pixel, through the SiLU (groupnorm.cpp's
// norm_backward_sums): g1 = dy * SiLU'(x * mul + add) into g1_out, and per
// channel acc1 += g1, acc2 += g1 * (x - centre). Also the leading multiple of
// the width; the same operations as groupnorm.cpp's four lanes, lane for lane.
using NormGradKernel = int (*)(const float* x, const float* dy, const float* mul, const float* add, const float* centre,
                               int n, float* g1_out, float* acc1, float* acc2);

// The backward's second pass at one pixel: dx = (dx +) k1 * g1 + k2 * (x -
// centre) + k3 (groupnorm.cpp's norm_backward_pixel), the leading multiple
// of the width. Elementwise: the same bits at every width.
using NormDxKernel = int (*)(const float* x, const float* g1, const float* centre, const float* k1, const float* k2,
                             const float* k3, int n, float* dx, bool overwrite);
// The forward's statistics over one sample's pixels for channels [0, n):
// sum[c] += x - shift[c], sq[c] += (x - shift[c])^2 in double, pixel by
// pixel (groupnorm.cpp's shifted_sums); the leading multiple of the width.
// Each channel's sum runs over the pixels in order: the same bits at every width.
using NormSumsKernel = int (*)(const float* base, int pixels, int ld, int n, const double* shift, double* sum,
                               double* sq);
struct NormKernels {
  NormApplyKernel apply;
  NormGradKernel grad;
  NormDxKernel dx;
  NormSumsKernel sums;
};
// The kernels for the instruction set the GEMM kernels were chosen for
// (conv2d.cpp; MARBLE_ISA forces both), or nulls (groupnorm.cpp's four lanes).
const NormKernels& norm_kernels();

#if defined(__x86_64__) && defined(MB_HAVE_X86_KERNELS)
int norm_apply_avx2(const float* x, const float* mul, const float* add, int n, float* y, bool silu);
int norm_apply_avx512(const float* x, const float* mul, const float* add, int n, float* y, bool silu);
int norm_grad_avx2(const float* x, const float* dy, const float* mul, const float* add, const float* centre, int n,
                   float* g1_out, float* acc1, float* acc2);
int norm_grad_avx512(const float* x, const float* dy, const float* mul, const float* add, const float* centre, int n,
                     float* g1_out, float* acc1, float* acc2);
int norm_dx_avx2(const float* x, const float* g1, const float* centre, const float* k1, const float* k2,
                 const float* k3, int n, float* dx, bool overwrite);
int norm_dx_avx512(const float* x, const float* g1, const float* centre, const float* k1, const float* k2,
                   const float* k3, int n, float* dx, bool overwrite);
int norm_sums_avx2(const float* base, int pixels, int ld, int n, const double* shift, double* sum, double* sq);
int norm_sums_avx512(const float* base, int pixels, int ld, int n, const double* shift, double* sum, double* sq);
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

int MB_DX_KERNEL(const float* x, const float* g1, const float* centre, const float* k1, const float* k2,
                 const float* k3, int n, float* dx, bool overwrite) {
  auto load = [](const float* p) { return *reinterpret_cast<const apply_vec_u*>(p); };
  int c = 0;
  for (; c + kApplyFloats <= n; c += kApplyFloats) {
    const apply_vec d = load(x + c) - load(centre + c);
    const apply_vec v = load(k1 + c) * load(g1 + c) + load(k2 + c) * d + load(k3 + c);
    *reinterpret_cast<apply_vec_u*>(dx + c) = overwrite ? v : load(dx + c) + v;
  }
  return c;
}

int MB_SUMS_KERNEL(const float* base, int pixels, int ld, int n, const double* shift, double* sum, double* sq) {
  typedef double dvec __attribute__((vector_size(MB_APPLY_BYTES)));
  typedef double dvec_u __attribute__((vector_size(MB_APPLY_BYTES), aligned(8)));
  typedef float fhalf_u __attribute__((vector_size(MB_APPLY_BYTES / 2), aligned(4)));
  constexpr int kLanes = MB_APPLY_BYTES / 8;  // doubles per vector
  int c = 0;
  // Four vectors of channels at a time, their accumulators in registers.
  for (; c + 4 * kLanes <= n; c += 4 * kLanes) {
    dvec s[4] = {}, q[4] = {}, k[4];
    for (int v = 0; v < 4; ++v) k[v] = *reinterpret_cast<const dvec_u*>(shift + c + v * kLanes);
    for (int p = 0; p < pixels; ++p) {
      const float* px = base + (size_t)p * ld + c;
      for (int v = 0; v < 4; ++v) {
        const dvec d = __builtin_convertvector(*reinterpret_cast<const fhalf_u*>(px + v * kLanes), dvec) - k[v];
        s[v] += d;
        q[v] += d * d;
      }
    }
    for (int v = 0; v < 4; ++v) {
      *reinterpret_cast<dvec_u*>(sum + c + v * kLanes) = s[v];
      *reinterpret_cast<dvec_u*>(sq + c + v * kLanes) = q[v];
    }
  }
  for (; c + kLanes <= n; c += kLanes) {
    dvec s = {}, q = {};
    const dvec k = *reinterpret_cast<const dvec_u*>(shift + c);
    for (int p = 0; p < pixels; ++p) {
      const dvec d = __builtin_convertvector(*reinterpret_cast<const fhalf_u*>(base + (size_t)p * ld + c), dvec) - k;
      s += d;
      q += d * d;
    }
    *reinterpret_cast<dvec_u*>(sum + c) = s;
    *reinterpret_cast<dvec_u*>(sq + c) = q;
  }
  return c;
}
#endif

}  // namespace mb
