// The Winograd F(2x2, 3x3) data transforms of conv2d_winograd.cpp at a
// vector width of MB_WINO_BYTES: included once per instruction set
// (lanes_<isa>.cpp, or conv2d_winograd.cpp itself at 16 bytes), with
//   MB_WINO_BYTES  vector width in bytes (16: SSE2 / SIMD128, 32: AVX2, 64: AVX-512)
//   MB_WINO_INPUT  the input transform's name, MB_WINO_OUTPUT the output transform's
// The transforms only add and subtract (the epilogue also divides), each
// lane on its own channel, so every width gives the same bits; wider
// vectors only move more channels per instruction (these passes are a fifth
// of a small-channel training step at four lanes).
#pragma once

#include "winograd_transforms.h"

namespace mb {

namespace {
typedef float wino_vec __attribute__((vector_size(MB_WINO_BYTES)));
typedef float wino_vec_u __attribute__((vector_size(MB_WINO_BYTES), aligned(4)));
constexpr int kWinoLanes = MB_WINO_BYTES / 4;
inline wino_vec wino_load(const float* p) { return *reinterpret_cast<const wino_vec_u*>(p); }
inline void wino_store(float* p, wino_vec v) { *reinterpret_cast<wino_vec_u*>(p) = v; }
}  // namespace

// V = B^T d B of one tile for channels [0, c_end) (zeros from cin on):
// channel c of matrix q goes to dst[q * q_stride + (c / nr) * panel_stride + c % nr].
void MB_WINO_INPUT(const float* const src[4][4], int cin, int c_end, int nr, size_t panel_stride, size_t q_stride,
                   float* dst) {
  int c = 0;
  // Whole vectors that stay inside one panel (nr is a multiple of every width).
  for (; c + kWinoLanes <= cin; c += kWinoLanes) {
    wino_vec d[4][4], r[16];
    for (int i = 0; i < 4; ++i)
      for (int j = 0; j < 4; ++j) d[i][j] = wino_load(src[i][j] + c);
    winograd_input_transform(d, r);
    float* out = dst + (size_t)(c / nr) * panel_stride + c % nr;
    for (int q = 0; q < 16; ++q) wino_store(out + q * q_stride, r[q]);
  }
  for (; c < c_end; ++c) {  // the same arithmetic one channel at a time; zeros past cin
    float d[4][4], r[16];
    for (int i = 0; i < 4; ++i)
      for (int j = 0; j < 4; ++j) d[i][j] = c < cin ? src[i][j][c] : 0.0f;
    winograd_input_transform(d, r);
    float* out = dst + (size_t)(c / nr) * panel_stride + c % nr;
    for (int q = 0; q < 16; ++q) out[q * q_stride] = r[q];
  }
}

// The output transform A^T m A of one tile's 16 products (prod[q * m_q + j],
// columns j < ncols) and the convolution's epilogue, in the direct
// convolution's order: y + bias + batch_bias, residual + that, / divisor.
// dst[a][c] null: the pixel lies outside the output.
void MB_WINO_OUTPUT(const float* prod, size_t m_q, int ncols, float* const dst[2][2], const float* const res[2][2],
                    const float* bias, const float* batch_bias, float divisor) {
  auto finish = [&](auto y, auto load, auto store, int j) {
    for (int a = 0; a < 2; ++a)
      for (int c = 0; c < 2; ++c) {
        if (!dst[a][c]) continue;
        auto val = y[a][c];
        if (bias) val += load(bias + j);
        if (batch_bias) val += load(batch_bias + j);
        if (res[a][c]) val = load(res[a][c] + j) + val;
        if (divisor != 1.0f) val = val / divisor;
        store(dst[a][c] + j, val);
      }
  };
  int j = 0;
  for (; j + kWinoLanes <= ncols; j += kWinoLanes) {
    wino_vec mq[16], y[2][2];
    for (int q = 0; q < 16; ++q) mq[q] = wino_load(prod + q * m_q + j);
    winograd_output_transform(mq, y);
    finish(y, wino_load, wino_store, j);
  }
  for (; j < ncols; ++j) {
    float mq[16], y[2][2];
    for (int q = 0; q < 16; ++q) mq[q] = prod[q * m_q + j];
    winograd_output_transform(mq, y);
    finish(y, [](const float* p) { return *p; }, [](float* p, float x) { *p = x; }, j);
  }
}

}  // namespace mb
