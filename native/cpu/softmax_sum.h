// The softmax denominator's order of additions, shared by attention.cpp's
// four lanes and the wider softmax_lanes.h so that every width gives the
// same bits: 16 partial sums (element j into j mod 16, whole blocks of 16),
// added by this one tree, then the remaining elements in order.
#pragma once

namespace mb {

namespace {  // internal: each instruction set's translation unit keeps its own copy

inline float softmax_sum16(const float p[16]) {
  float h[8], q[4];
  for (int i = 0; i < 8; ++i) h[i] = p[i] + p[i + 8];
  for (int i = 0; i < 4; ++i) q[i] = h[i] + h[i + 4];
  return (q[0] + q[2]) + (q[1] + q[3]);
}

}  // namespace

}  // namespace mb
