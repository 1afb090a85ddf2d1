// Winograd's data transforms, F(2x2, 3x3) and F(4x4, 3x3), for any lane
// type T (float, or a vector of floats: each lane is one channel, so every
// width computes the same bits). Shared by conv2d_winograd.cpp and the
// per-ISA passes of winograd_lanes.h.
#pragma once

#include <stddef.h>

namespace mb {

// Internal linkage: each per-ISA translation unit (winograd_lanes.h) keeps
// its own copies, so the linker can never use one built for AVX-512 in the
// generic build's place.
namespace {

// V = B^T d B of a 4x4 input patch, one axis at a time: B^T applied to the
// four values of a patch column (d[0..3] = rows 0..3), then to each row of
// those results. B^T = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1].
template <typename T>
inline void winograd_input_rows(const T d[4], T t[4]) {
  t[0] = d[0] - d[2];
  t[1] = d[1] + d[2];
  t[2] = d[2] - d[1];
  t[3] = d[1] - d[3];
}

// A^T m A: the 2x2 outputs y[a][b] from the 16 products m[i*4+j].
template <typename T>
inline void winograd_output_transform(const T m[16], T y[2][2]) {
  T r[2][4];
  for (int j = 0; j < 4; ++j) {
    r[0][j] = m[0 * 4 + j] + m[1 * 4 + j] + m[2 * 4 + j];
    r[1][j] = m[1 * 4 + j] - m[2 * 4 + j] - m[3 * 4 + j];
  }
  for (int a = 0; a < 2; ++a) {
    y[a][0] = r[a][0] + r[a][1] + r[a][2];
    y[a][1] = r[a][1] - r[a][2] - r[a][3];
  }
}

// F(4x4, 3x3) at the points 0, 1, -1, 2, -2 and infinity (Lavin & Gray's
// matrices): a 6x6 input patch gives 36 products per 4x4 output tile, 2.25
// multiplies per output against F(2x2, 3x3)'s 4 and the direct 9. The
// transforms multiply by 2, 4, 5 and 8, so the result moves further from
// the direct convolution's than F(2x2, 3x3)'s: about 1e-6 of the output's
// scale through a whole UNet (measured against diffusers' fixtures), 1% of
// the forward tests' tolerance.
//
// V = B^T d B of a 6x6 input patch, one axis at a time (as for F(2x2, 3x3)), B^T =
//   [4  0 -5  0 1 0; 0 -4 -4  1 1 0; 0 4 -4 -1 1 0;
//    0 -2 -1  2 1 0; 0  2 -1 -2 1 0; 0 4  0 -5 0 1].
template <typename T>
inline void winograd4_input_rows(const T d[6], T t[6]) {
  t[0] = (d[0] * 4.0f - d[2] * 5.0f) + d[4];
  t[1] = (d[3] + d[4]) - (d[1] + d[2]) * 4.0f;
  t[2] = (d[4] - d[3]) + (d[1] - d[2]) * 4.0f;
  t[3] = (d[4] - d[2]) + (d[3] - d[1]) * 2.0f;
  t[4] = (d[4] - d[2]) - (d[3] - d[1]) * 2.0f;
  t[5] = (d[1] * 4.0f - d[3] * 5.0f) + d[5];
}

// A^T m A: the 4x4 outputs from the 36 products, A^T =
//   [1 1 1 1 1 0; 0 1 -1 2 -2 0; 0 1 1 4 4 0; 0 1 -1 8 -8 1].
template <typename T>
inline void winograd4_output_rows(const T m0, const T m1, const T m2, const T m3, const T m4, const T m5, T r[4]) {
  const T s12 = m1 + m2, d12 = m1 - m2, s34 = m3 + m4, d34 = m3 - m4;
  r[0] = (m0 + s12) + s34;
  r[1] = d12 + d34 * 2.0f;
  r[2] = s12 + s34 * 4.0f;
  r[3] = (d12 + d34 * 8.0f) + m5;
}

template <typename T>
inline void winograd4_output_transform(const T m[36], T y[4][4]) {
  T r[4][6], row[4];
  for (int j = 0; j < 6; ++j) {
    winograd4_output_rows(m[j], m[6 + j], m[12 + j], m[18 + j], m[24 + j], m[30 + j], row);
    for (int a = 0; a < 4; ++a) r[a][j] = row[a];
  }
  for (int a = 0; a < 4; ++a) winograd4_output_rows(r[a][0], r[a][1], r[a][2], r[a][3], r[a][4], r[a][5], y[a]);
}

// The weight gradient's transform of the output gradient, dM = A dY A^T (the
// transpose of the output transform): F(2x2, 3x3)'s 16 values from a 2x2
// block of dY, A's rows [1 0; 1 1; 1 -1; 0 -1] along each axis.
template <typename T>
inline void winograd_grad_transform(const T dy[2][2], T m[16]) {
  T r[4][2];
  for (int b = 0; b < 2; ++b) {
    r[0][b] = dy[0][b];
    r[1][b] = dy[0][b] + dy[1][b];
    r[2][b] = dy[0][b] - dy[1][b];
    r[3][b] = T{} - dy[1][b];
  }
  for (int i = 0; i < 4; ++i) {
    m[i * 4 + 0] = r[i][0];
    m[i * 4 + 1] = r[i][0] + r[i][1];
    m[i * 4 + 2] = r[i][0] - r[i][1];
    m[i * 4 + 3] = T{} - r[i][1];
  }
}

// F(4x4, 3x3): A's rows are A^T's columns, [1 0 0 0; 1 1 1 1; 1 -1 1 -1;
// 1 2 4 8; 1 -2 4 -8; 0 0 0 1], applied to four values along one axis.
template <typename T>
inline void winograd4_grad_rows(const T y0, const T y1, const T y2, const T y3, T r[6]) {
  const T s02 = y0 + y2, s13 = y1 + y3;
  const T even = y0 + y2 * 4.0f, odd = y1 * 2.0f + y3 * 8.0f;
  r[0] = y0;
  r[1] = s02 + s13;
  r[2] = s02 - s13;
  r[3] = even + odd;
  r[4] = even - odd;
  r[5] = y3;
}

template <typename T>
inline void winograd4_grad_transform(const T dy[4][4], T m[36]) {
  T r[6][4], col[6];
  for (int b = 0; b < 4; ++b) {
    winograd4_grad_rows(dy[0][b], dy[1][b], dy[2][b], dy[3][b], col);
    for (int i = 0; i < 6; ++i) r[i][b] = col[i];
  }
  for (int i = 0; i < 6; ++i) winograd4_grad_rows(r[i][0], r[i][1], r[i][2], r[i][3], m + i * 6);
}

}  // namespace

// The per-ISA passes (winograd_lanes.h). The input transforms of a run of
// `tiles` neighbouring tiles along one tile row: src[i * (M * tiles + 2) + j]
// is row i, column j of the run's strip of input (A rows), tile k's patch
// its columns M k .. M k + A - 1; channel c of tile k's matrix q goes to
// dst[k * tile_stride + q * q_stride + (c / nr) * panel_stride + c % nr],
// zeros for channels cin .. c_end. Neighbours share two patch columns, whose
// column transforms are computed once: the same operations as tile by tile.
// The output transform of one tile with the convolution's epilogue.
using WinogradInputPass = void (*)(const float* const* src, int tiles, int cin, int c_end, int nr, size_t panel_stride,
                                   size_t q_stride, size_t tile_stride, float* dst);
using WinogradOutputPass = void (*)(const float* prod, size_t m_q, int ncols, float* const dst[2][2],
                                    const float* const res[2][2], const float* bias, const float* batch_bias,
                                    float divisor);
// The same for F(4x4, 3x3): 6x6 input patches, 4x4 output tiles.
using Winograd4OutputPass = void (*)(const float* prod, size_t m_q, int ncols, float* const dst[4][4],
                                     const float* const res[4][4], const float* bias, const float* batch_bias,
                                     float divisor);
// The weight gradient's dM = A dY A^T of one tile for channels [0, c_end)
// (zeros from cout on): channel c of matrix q goes to dst[q * q_stride + c].
using WinogradGradPass = void (*)(const float* const src[2][2], int cout, int c_end, size_t q_stride, float* dst);
using Winograd4GradPass = void (*)(const float* const src[4][4], int cout, int c_end, size_t q_stride, float* dst);
struct WinogradPasses {
  WinogradInputPass input;
  WinogradOutputPass output;
  WinogradInputPass input4;
  Winograd4OutputPass output4;
  WinogradGradPass grad;
  Winograd4GradPass grad4;
};
// The passes at the selected micro-kernel's width (conv2d.cpp).
const WinogradPasses& winograd_passes();

void winograd_input_vec4(const float* const* src, int tiles, int cin, int c_end, int nr, size_t panel_stride,
                         size_t q_stride, size_t tile_stride, float* dst);
void winograd_output_vec4(const float* prod, size_t m_q, int ncols, float* const dst[2][2], const float* const res[2][2],
                         const float* bias, const float* batch_bias, float divisor);
void winograd4_input_vec4(const float* const* src, int tiles, int cin, int c_end, int nr, size_t panel_stride,
                          size_t q_stride, size_t tile_stride, float* dst);
void winograd4_output_vec4(const float* prod, size_t m_q, int ncols, float* const dst[4][4],
                           const float* const res[4][4], const float* bias, const float* batch_bias, float divisor);
void winograd_grad_vec4(const float* const src[2][2], int cout, int c_end, size_t q_stride, float* dst);
void winograd4_grad_vec4(const float* const src[4][4], int cout, int c_end, size_t q_stride, float* dst);
#if defined(__x86_64__) && defined(MB_HAVE_X86_KERNELS)
void winograd_input_avx2(const float* const* src, int tiles, int cin, int c_end, int nr, size_t panel_stride,
                         size_t q_stride, size_t tile_stride, float* dst);
void winograd_output_avx2(const float* prod, size_t m_q, int ncols, float* const dst[2][2],
                          const float* const res[2][2], const float* bias, const float* batch_bias, float divisor);
void winograd4_input_avx2(const float* const* src, int tiles, int cin, int c_end, int nr, size_t panel_stride,
                          size_t q_stride, size_t tile_stride, float* dst);
void winograd4_output_avx2(const float* prod, size_t m_q, int ncols, float* const dst[4][4],
                           const float* const res[4][4], const float* bias, const float* batch_bias, float divisor);
void winograd_grad_avx2(const float* const src[2][2], int cout, int c_end, size_t q_stride, float* dst);
void winograd4_grad_avx2(const float* const src[4][4], int cout, int c_end, size_t q_stride, float* dst);
void winograd_input_avx512(const float* const* src, int tiles, int cin, int c_end, int nr, size_t panel_stride,
                           size_t q_stride, size_t tile_stride, float* dst);
void winograd_output_avx512(const float* prod, size_t m_q, int ncols, float* const dst[2][2],
                            const float* const res[2][2], const float* bias, const float* batch_bias, float divisor);
void winograd4_input_avx512(const float* const* src, int tiles, int cin, int c_end, int nr, size_t panel_stride,
                            size_t q_stride, size_t tile_stride, float* dst);
void winograd4_output_avx512(const float* prod, size_t m_q, int ncols, float* const dst[4][4],
                           const float* const res[4][4], const float* bias, const float* batch_bias, float divisor);
void winograd_grad_avx512(const float* const src[2][2], int cout, int c_end, size_t q_stride, float* dst);
void winograd4_grad_avx512(const float* const src[4][4], int cout, int c_end, size_t q_stride, float* dst);
#endif

}  // namespace mb
