// Softmax's exponentials at the CPU's widest vector (attention.cpp's
// softmax_row): e_j = exp(s_j - max) in place and their sum. They are most
// of a small-head attention's work (one exponential per score against
// head_dim multiply-adds), so four lanes would leave it exp-bound.
//
// Included once per instruction set by lanes_<isa>.cpp with
//   MB_SOFTMAX_BYTES  vector width in bytes (32: AVX2, 64: AVX-512)
//   MB_SOFTMAX_EXP    the function's name
// exp_lanes gives exp_f32's bits lane for lane and the sum is formed the
// same way at every width (16 partial sums, one tree), so results equal the
// four-lane path's. Only templates instantiated on this width's own types
// and internal functions are used.
#pragma once

#include "../engine/mathf.h"
#include "softmax_sum.h"

namespace mb {

namespace {

typedef float softmax_vec __attribute__((vector_size(MB_SOFTMAX_BYTES)));
typedef int32_t softmax_ivec __attribute__((vector_size(MB_SOFTMAX_BYTES)));
typedef float softmax_vec_u __attribute__((vector_size(MB_SOFTMAX_BYTES), aligned(4)));
constexpr int kSoftmaxLanes = MB_SOFTMAX_BYTES / 4;
}  // namespace

// The leading multiple of 16 of s[0..n): s_j = exp(s_j - mx), and the sum
// of those exponentials as attention.cpp's softmax_row forms it (16 partial
// sums, j mod 16, then softmax_sum16's tree). Returns how many it did.
int MB_SOFTMAX_EXP(float* s, int n, float mx, float* sum) {
  constexpr int kPerBlock = 16 / kSoftmaxLanes;
  const softmax_vec vmx = softmax_vec{} + mx;
  softmax_vec acc[kPerBlock];
  for (int k = 0; k < kPerBlock; ++k) acc[k] = softmax_vec{};
  int j = 0;
  for (; j + 16 <= n; j += 16)
    for (int k = 0; k < kPerBlock; ++k) {
      softmax_vec_u* at = reinterpret_cast<softmax_vec_u*>(s + j + k * kSoftmaxLanes);
      const softmax_vec e = exp_lanes<softmax_vec, softmax_ivec>(softmax_vec(*at) - vmx);
      *at = e;
      acc[k] += e;
    }
  float partial[16];
  for (int k = 0; k < kPerBlock; ++k)
    for (int l = 0; l < kSoftmaxLanes; ++l) partial[k * kSoftmaxLanes + l] = acc[k][l];
  *sum = softmax_sum16(partial);
  return j;
}

}  // namespace mb
