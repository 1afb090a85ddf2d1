// Winograd F(2x2, 3x3)'s data transforms, for any lane type T (float, or a
// vector of floats: each lane is one channel, so every width computes the
// same bits). Shared by conv2d_winograd.cpp and the per-ISA passes of
// winograd_lanes.h.
#pragma once

#include <stddef.h>

namespace mb {

// Internal linkage: each per-ISA translation unit (winograd_lanes.h) keeps
// its own copies, so the linker can never use one built for AVX-512 in the
// generic build's place.
namespace {

// V = B^T d B of a 4x4 input patch; d[i][j] is input row i, column j.
template <typename T>
inline void winograd_input_transform(const T d[4][4], T v[16]) {
  T t[4][4];
  for (int j = 0; j < 4; ++j) {
    t[0][j] = d[0][j] - d[2][j];
    t[1][j] = d[1][j] + d[2][j];
    t[2][j] = d[2][j] - d[1][j];
    t[3][j] = d[1][j] - d[3][j];
  }
  for (int i = 0; i < 4; ++i) {
    v[i * 4 + 0] = t[i][0] - t[i][2];
    v[i * 4 + 1] = t[i][1] + t[i][2];
    v[i * 4 + 2] = t[i][2] - t[i][1];
    v[i * 4 + 3] = t[i][1] - t[i][3];
  }
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

}  // namespace

// The per-ISA passes (winograd_lanes.h): the input transform of one tile, and
// the output transform of one tile with the convolution's epilogue.
using WinogradInputPass = void (*)(const float* const src[4][4], int cin, int c_end, int nr, size_t panel_stride,
                                   size_t q_stride, float* dst);
using WinogradOutputPass = void (*)(const float* prod, size_t m_q, int ncols, float* const dst[2][2],
                                    const float* const res[2][2], const float* bias, const float* batch_bias,
                                    float divisor);
struct WinogradPasses {
  WinogradInputPass input;
  WinogradOutputPass output;
};
// The passes at the selected micro-kernel's width (conv2d.cpp).
const WinogradPasses& winograd_passes();

void winograd_input_vec4(const float* const src[4][4], int cin, int c_end, int nr, size_t panel_stride, size_t q_stride,
                        float* dst);
void winograd_output_vec4(const float* prod, size_t m_q, int ncols, float* const dst[2][2], const float* const res[2][2],
                         const float* bias, const float* batch_bias, float divisor);
#if defined(__x86_64__) && defined(MB_HAVE_X86_KERNELS)
void winograd_input_avx2(const float* const src[4][4], int cin, int c_end, int nr, size_t panel_stride,
                         size_t q_stride, float* dst);
void winograd_output_avx2(const float* prod, size_t m_q, int ncols, float* const dst[2][2],
                          const float* const res[2][2], const float* bias, const float* batch_bias, float divisor);
void winograd_input_avx512(const float* const src[4][4], int cin, int c_end, int nr, size_t panel_stride,
                           size_t q_stride, float* dst);
void winograd_output_avx512(const float* prod, size_t m_q, int ncols, float* const dst[2][2],
                            const float* const res[2][2], const float* bias, const float* batch_bias, float divisor);
#endif

}  // namespace mb
