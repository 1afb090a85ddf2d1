// Winograd's data transforms (F(2x2, 3x3) and F(4x4, 3x3)) of
// conv2d_winograd.cpp at a vector width of MB_WINO_BYTES: included once per
// instruction set (lanes_<isa>.cpp, or conv2d_winograd.cpp itself at 16
// bytes), with
//   MB_WINO_BYTES   vector width in bytes (16: SSE2 / SIMD128, 32: AVX2, 64: AVX-512)
//   MB_WINO_INPUT   F(2x2, 3x3)'s input transform's name, MB_WINO_OUTPUT its output transform's
//   MB_WINO4_INPUT  F(4x4, 3x3)'s, MB_WINO4_OUTPUT
//   MB_WINO_GRAD    the weight gradient's transform of dY, MB_WINO4_GRAD F(4x4, 3x3)'s
// The transforms only add, subtract and multiply by small powers of two and
// 5 (the epilogue also divides), each lane on its own channel, so every
// width gives the same bits; wider vectors only move more channels per
// instruction (these passes are a fifth of a small-channel training step at
// four lanes).
#pragma once

#include "winograd_transforms.h"

namespace mb {

namespace {
typedef float wino_vec __attribute__((vector_size(MB_WINO_BYTES)));
typedef float wino_vec_u __attribute__((vector_size(MB_WINO_BYTES), aligned(4)));
constexpr int kWinoLanes = MB_WINO_BYTES / 4;
inline wino_vec wino_load(const float* p) { return *reinterpret_cast<const wino_vec_u*>(p); }
inline void wino_store(float* p, wino_vec v) { *reinterpret_cast<wino_vec_u*>(p) = v; }

// V = B^T d B of a run of `tiles` neighbouring tiles (WinogradInputPass) for
// channels [0, c_end), zeros from cin on. `rows` is B^T along one axis: on
// each patch column (t[.][j]), then on each row of those (V's row i). A
// tile's first two columns are its left neighbour's last two, already
// transformed: 2 + M column transforms per tile of the run instead of A.
template <int A, typename Rows>
inline void wino_input_pass(const float* const* src, int tiles, int cin, int c_end, int nr, size_t panel_stride,
                            size_t q_stride, size_t tile_stride, float* dst, Rows rows) {
  constexpr int M = A - 2;
  const int cols = M * tiles + 2;
  // One run of channels (a vector, or one channel: T = float) across the tiles.
  auto run = [&](auto zero, auto load, int c) {
    using T = decltype(zero);
    T t[A][A];  // t[i][j]: entry i of patch column j's transform
    float* out = dst + (size_t)(c / nr) * panel_stride + c % nr;
    for (int k = 0; k < tiles; ++k, out += tile_stride) {
      if (k > 0)
        for (int i = 0; i < A; ++i) t[i][0] = t[i][M], t[i][1] = t[i][M + 1];
      for (int j = k > 0 ? 2 : 0; j < A; ++j) {
        T d[A], col[A];
        for (int i = 0; i < A; ++i) d[i] = load(src[(size_t)i * cols + M * k + j] + c);
        rows(d, col);
        for (int i = 0; i < A; ++i) t[i][j] = col[i];
      }
      for (int i = 0; i < A; ++i) {
        T v[A];
        rows(t[i], v);
        for (int l = 0; l < A; ++l) {
          if constexpr (sizeof(T) == sizeof(float)) out[(i * A + l) * q_stride] = v[l];
          else wino_store(out + (i * A + l) * q_stride, v[l]);
        }
      }
    }
  };
  int c = 0;
  // Whole vectors that stay inside one panel (nr is a multiple of every width).
  for (; c + kWinoLanes <= cin; c += kWinoLanes) run(wino_vec{}, wino_load, c);
  for (; c < c_end; ++c)  // the same arithmetic one channel at a time; zeros past cin
    run(0.0f, [&](const float* p) { return c < cin ? *p : 0.0f; }, c);
}

// The output transform A^T m A of one tile's products (prod[q * m_q + j],
// columns j < ncols) into an M x M tile, and the convolution's epilogue in
// the direct convolution's order: y + bias + batch_bias, residual + that, /
// divisor. dst[a][c] null: the pixel lies outside the output.
template <int M, int Q, typename Transform>
inline void wino_output_pass(const float* prod, size_t m_q, int ncols, float* const dst[M][M],
                             const float* const res[M][M], const float* bias, const float* batch_bias, float divisor,
                             Transform transform) {
  auto finish = [&](auto y, auto load, auto store, int j) {
    for (int a = 0; a < M; ++a)
      for (int c = 0; c < M; ++c) {
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
    wino_vec mq[Q], y[M][M];
    for (int q = 0; q < Q; ++q) mq[q] = wino_load(prod + q * m_q + j);
    transform(mq, y);
    finish(y, wino_load, wino_store, j);
  }
  for (; j < ncols; ++j) {
    float mq[Q], y[M][M];
    for (int q = 0; q < Q; ++q) mq[q] = prod[q * m_q + j];
    transform(mq, y);
    finish(y, [](const float* p) { return *p; }, [](float* p, float x) { *p = x; }, j);
  }
}

// dM = A dY A^T of one M x M block of output gradients for channels
// [0, c_end) (zeros from cout on): channel c of matrix q to dst[q * q_stride + c].
template <int M, int Q, typename Transform>
inline void wino_grad_pass(const float* const src[M][M], int cout, int c_end, size_t q_stride, float* dst,
                           Transform transform) {
  int c = 0;
  for (; c + kWinoLanes <= cout; c += kWinoLanes) {
    wino_vec d[M][M], m[Q];
    for (int i = 0; i < M; ++i)
      for (int j = 0; j < M; ++j) d[i][j] = wino_load(src[i][j] + c);
    transform(d, m);
    for (int q = 0; q < Q; ++q) wino_store(dst + q * q_stride + c, m[q]);
  }
  for (; c < c_end; ++c) {  // the same arithmetic one channel at a time; zeros past cout
    float d[M][M], m[Q];
    for (int i = 0; i < M; ++i)
      for (int j = 0; j < M; ++j) d[i][j] = c < cout ? src[i][j][c] : 0.0f;
    transform(d, m);
    for (int q = 0; q < Q; ++q) dst[q * q_stride + c] = m[q];
  }
}
}  // namespace

void MB_WINO_INPUT(const float* const* src, int tiles, int cin, int c_end, int nr, size_t panel_stride,
                   size_t q_stride, size_t tile_stride, float* dst) {
  wino_input_pass<4>(src, tiles, cin, c_end, nr, panel_stride, q_stride, tile_stride, dst,
                     [](const auto& d, auto& t) { winograd_input_rows(d, t); });
}

void MB_WINO_OUTPUT(const float* prod, size_t m_q, int ncols, float* const dst[2][2], const float* const res[2][2],
                    const float* bias, const float* batch_bias, float divisor) {
  wino_output_pass<2, 16>(prod, m_q, ncols, dst, res, bias, batch_bias, divisor,
                          [](const auto& m, auto& y) { winograd_output_transform(m, y); });
}

void MB_WINO4_INPUT(const float* const* src, int tiles, int cin, int c_end, int nr, size_t panel_stride,
                    size_t q_stride, size_t tile_stride, float* dst) {
  wino_input_pass<6>(src, tiles, cin, c_end, nr, panel_stride, q_stride, tile_stride, dst,
                     [](const auto& d, auto& t) { winograd4_input_rows(d, t); });
}

void MB_WINO4_OUTPUT(const float* prod, size_t m_q, int ncols, float* const dst[4][4], const float* const res[4][4],
                     const float* bias, const float* batch_bias, float divisor) {
  wino_output_pass<4, 36>(prod, m_q, ncols, dst, res, bias, batch_bias, divisor,
                          [](const auto& m, auto& y) { winograd4_output_transform(m, y); });
}

void MB_WINO_GRAD(const float* const src[2][2], int cout, int c_end, size_t q_stride, float* dst) {
  wino_grad_pass<2, 16>(src, cout, c_end, q_stride, dst, [](const auto& d, auto& m) { winograd_grad_transform(d, m); });
}

void MB_WINO4_GRAD(const float* const src[4][4], int cout, int c_end, size_t q_stride, float* dst) {
  wino_grad_pass<4, 36>(src, cout, c_end, q_stride, dst, [](const auto& d, auto& m) { winograd4_grad_transform(d, m); });
}

}  // namespace mb
