// The register-blocked micro-kernel at the heart of every convolution and
// linear layer (see conv2d.cpp and the contract in gemm_tile.h). Included once
// per instruction set by gemm_<isa>.cpp, each compiled with its own target
// flags, with:
//   MB_VEC_BYTES  vector width in bytes (16: SSE2/SIMD128, 32: AVX2, 64: AVX-512)
//   MB_MR         rows (output pixels) per tile
//   MB_NV         vectors per row; the tile is MB_MR x (MB_NV * floats per vector)
//   MB_KERNEL     the function's name
//
// Accumulators stay in registers for the whole K loop (taps x cin); the
// epilogue is applied in registers and each row is stored once.
#pragma once

#include "gemm_tile.h"

namespace mb {

typedef float mb_vec __attribute__((vector_size(MB_VEC_BYTES)));
// Output rows, biases and residuals start at any float: unaligned access.
typedef float mb_vec_u __attribute__((vector_size(MB_VEC_BYTES), aligned(4)));
static constexpr int kVecFloats = MB_VEC_BYTES / 4;
static constexpr int kMR = MB_MR;
static constexpr int kNV = MB_NV;
static constexpr int kNR = MB_NV * kVecFloats;

namespace {
// One body per way of reading A, every loop over the accumulators unrolled,
// so that they are registers from the zeroing to the stores: before, the
// compiler kept them on the stack (16 stores at entry, 16 after the K loop,
// 16 loads in the epilogue), which a K = 32 tile pays for on every call.
template <bool kPackedA>
inline __attribute__((always_inline)) void tile_body(const GemmTile& tile) {
  mb_vec acc[kMR][kNV];
#pragma GCC unroll 16
  for (int i = 0; i < kMR; ++i)
#pragma GCC unroll 4
    for (int j = 0; j < kNV; ++j) acc[i][j] = mb_vec{};
  const float* b = tile.panel;
  const int cin = tile.cin;
  const int b_step = tile.b_ld ? tile.b_ld : kNR;
  // acc[i] += a(i) * B's row at b, for every k of every tap: A packed by k
  // (one "tap"), or each tap's rows read in place. Plain loops unrolled by
  // pragma rather than a lambda over acc, which kept it addressable.
  const float* a_packed = tile.a_packed;
  const int taps = kPackedA ? 1 : tile.taps;
  for (int t = 0; t < taps; ++t) {
    const float* a[kMR];
    if (!kPackedA)
      for (int i = 0; i < kMR; ++i) a[i] = tile.rows[t * kMR + i];
    for (int k = 0; k < cin; ++k, b += b_step) {
      mb_vec bv[kNV];
#pragma GCC unroll 4
      for (int j = 0; j < kNV; ++j) bv[j] = *reinterpret_cast<const mb_vec*>(b + j * kVecFloats);
#pragma GCC unroll 16
      for (int i = 0; i < kMR; ++i) {
        const float av = kPackedA ? a_packed[i] : a[i][k];
#if defined(__wasm_relaxed_simd__)
        // The relaxed-SIMD build (wasm/build.sh): f32x4.relaxed_madd, a fused
        // multiply-add where the engine has one (one rounding, as the AVX
        // kernels), else the same two roundings as below.
        const mb_vec as = mb_vec{} + av;
#pragma GCC unroll 4
        for (int j = 0; j < kNV; ++j) acc[i][j] = __builtin_wasm_relaxed_madd_f32x4(as, bv[j], acc[i][j]);
#else
#pragma GCC unroll 4
        for (int j = 0; j < kNV; ++j) acc[i][j] += av * bv[j];
#endif
      }
      if (kPackedA) a_packed += tile.a_ld;
    }
  }

  // Same operations in the same order as the driver's scalar epilogue for
  // partial tiles, so full and partial tiles round alike.
  const bool divide = tile.divisor != 1.0f;
  const mb_vec divisor = mb_vec{} + tile.divisor;
#pragma GCC unroll 16
  for (int i = 0; i < kMR; ++i) {
    if (i >= tile.nrows) break;
#pragma GCC unroll 4
    for (int j = 0; j < kNV; ++j) {
      const int o = j * kVecFloats;
      mb_vec v = acc[i][j];
      if (tile.bias) v += *reinterpret_cast<const mb_vec_u*>(tile.bias + o);
      if (tile.batch_bias) v += *reinterpret_cast<const mb_vec_u*>(tile.batch_bias[i] + o);
      if (tile.residual) v = *reinterpret_cast<const mb_vec_u*>(tile.residual[i] + o) + v;
      if (divide) v = v / divisor;
      *reinterpret_cast<mb_vec_u*>(tile.out[i] + o) = v;
    }
  }
}
}  // namespace

void MB_KERNEL(const GemmTile& tile) {
  if (tile.a_packed)
    tile_body<true>(tile);
  else
    tile_body<false>(tile);
}

}  // namespace mb
