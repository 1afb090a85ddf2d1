// The register-blocked micro-kernel at the heart of every convolution and
// linear layer (see conv2d.cpp). Included once per instruction set by
// gemm_<isa>.cpp, each compiled with its own target flags, with:
//   MB_VEC_BYTES  vector width in bytes (16: SSE2/SIMD128, 32: AVX2, 64: AVX-512)
//   MB_MR         rows (output pixels) per tile
//   MB_NV         vectors per row; the tile is MB_MR x (MB_NV * floats per vector)
//   MB_KERNEL     the function's name
//
// It computes one MR x NR tile of C = A * B where row r of A, for filter tap
// t, is rows[t*MR + r][0..cin) (a pixel's channels, or a zero row for
// padding) and B is a packed panel [tap][ci][NR]. Accumulators stay in
// registers for the whole K loop; the caller applies the epilogue.
#pragma once

namespace mb {

typedef float mb_vec __attribute__((vector_size(MB_VEC_BYTES)));
static constexpr int kVecFloats = MB_VEC_BYTES / 4;
static constexpr int kMR = MB_MR;
static constexpr int kNV = MB_NV;
static constexpr int kNR = MB_NV * kVecFloats;

void MB_KERNEL(const float* const* rows, int taps, int cin, const float* panel, float* acc_out) {
  mb_vec acc[kMR][kNV];
  for (int i = 0; i < kMR; ++i)
    for (int j = 0; j < kNV; ++j) acc[i][j] = mb_vec{} ;
  const float* b = panel;
  for (int t = 0; t < taps; ++t) {
    const float* a[kMR];
    for (int i = 0; i < kMR; ++i) a[i] = rows[t * kMR + i];
    for (int ci = 0; ci < cin; ++ci, b += kNR) {
      mb_vec bv[kNV];
      for (int j = 0; j < kNV; ++j) bv[j] = *reinterpret_cast<const mb_vec*>(b + j * kVecFloats);
      for (int i = 0; i < kMR; ++i) {
        const float av = a[i][ci];
        for (int j = 0; j < kNV; ++j) acc[i][j] += av * bv[j];
      }
    }
  }
  for (int i = 0; i < kMR; ++i)
    for (int j = 0; j < kNV; ++j) *reinterpret_cast<mb_vec*>(acc_out + i * kNR + j * kVecFloats) = acc[i][j];
}

}  // namespace mb
