// Softmax over a row at the CPU's widest vector (attention.cpp's
// softmax_row). Its exponentials are most of a small-head attention's work
// (one per score against head_dim multiply-adds), so four lanes would leave
// it exp-bound.
//
// Included once per instruction set by lanes_<isa>.cpp with
//   MB_SOFTMAX_BYTES  vector width in bytes (32: AVX2, 64: AVX-512)
//   MB_SOFTMAX_ROW    the function's name
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

// softmax(scale * s[0..n)) in place, as attention.cpp's softmax_row: the
// maximum (order-free), the exponentials with their sum formed by 16
// partial sums and softmax_sum16's tree, then the rest in order, and the
// normalisation. Only the lane count differs.
void MB_SOFTMAX_ROW(float* s, int n, float scale) {
  constexpr int kPerBlock = 16 / kSoftmaxLanes;
  const softmax_vec vscale = softmax_vec{} + scale;
  float mx = s[0] * scale;
  softmax_vec vmx = softmax_vec{} + mx;
  int j = 0;
  for (; j + kSoftmaxLanes <= n; j += kSoftmaxLanes) {
    softmax_vec_u* at = reinterpret_cast<softmax_vec_u*>(s + j);
    const softmax_vec v = softmax_vec(*at) * vscale;
    *at = v;
    vmx = v > vmx ? v : vmx;
  }
  for (int l = 0; l < kSoftmaxLanes; ++l) mx = vmx[l] > mx ? vmx[l] : mx;
  for (; j < n; ++j) {
    s[j] *= scale;
    mx = s[j] > mx ? s[j] : mx;
  }

  const softmax_vec vmxs = softmax_vec{} + mx;
  softmax_vec acc[kPerBlock];
  for (int k = 0; k < kPerBlock; ++k) acc[k] = softmax_vec{};
  for (j = 0; j + 16 <= n; j += 16)
    for (int k = 0; k < kPerBlock; ++k) {
      softmax_vec_u* at = reinterpret_cast<softmax_vec_u*>(s + j + k * kSoftmaxLanes);
      const softmax_vec e = exp_lanes<softmax_vec, softmax_ivec>(softmax_vec(*at) - vmxs);
      *at = e;
      acc[k] += e;
    }
  float partial[16];
  for (int k = 0; k < kPerBlock; ++k)
    for (int l = 0; l < kSoftmaxLanes; ++l) partial[k * kSoftmaxLanes + l] = acc[k][l];
  float sum = softmax_sum16(partial);
  // The last n % 16: their exponentials in one vector (the unused lanes
  // are discarded), added one at a time in order.
  for (; j < n; j += kSoftmaxLanes) {
    softmax_vec x = softmax_vec{};
    const int m = n - j < kSoftmaxLanes ? n - j : kSoftmaxLanes;
    for (int l = 0; l < m; ++l) x[l] = s[j + l] - mx;
    const softmax_vec e = exp_lanes<softmax_vec, softmax_ivec>(x);
    for (int l = 0; l < m; ++l) {
      s[j + l] = e[l];
      sum += e[l];
    }
  }

  const softmax_vec vinv = softmax_vec{} + 1.0f / sum;
  for (j = 0; j + kSoftmaxLanes <= n; j += kSoftmaxLanes) {
    softmax_vec_u* at = reinterpret_cast<softmax_vec_u*>(s + j);
    *at = softmax_vec(*at) * vinv;
  }
  const float inv = 1.0f / sum;
  for (; j < n; ++j) s[j] *= inv;
}

}  // namespace mb
