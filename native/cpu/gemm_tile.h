// The contract between the convolution driver (conv2d.cpp) and the
// register-blocked micro-kernels (gemm_microkernel.h, compiled once per
// instruction set): one MR x NR tile of C = A * B, with the convolution's
// epilogue applied as the tile leaves the registers.
#pragma once

namespace mb {

struct GemmTile {
  // Row r of A for filter tap t is rows[t * MR + r][0..cin): an input pixel's
  // channels, or a zero row where the tap falls in the padding.
  const float* const* rows;
  int taps, cin;
  // Or A packed by k (taps 1, rows unused): row r's element k at
  // a_packed[k * a_ld + r], for every r < MR (rows past nrows are read and
  // dropped). The weight gradient's dM is laid out so (conv2d_winograd.cpp).
  const float* a_packed = nullptr;
  int a_ld = 0;
  const float* panel;  // packed B: [tap][ci][NR]
  // Or B's rows b_ld floats apart rather than NR (0: NR, a packed panel):
  // rows of an activation read in place (each 64-byte aligned).
  int b_ld = 0;
  // out[r][0..NR) = (acc[r] + bias + batch_bias[r] + residual[r]) / divisor
  // for r < nrows; bias, batch_bias and residual may each be null.
  int nrows;
  float* const* out;
  const float* bias;
  const float* const* batch_bias;
  const float* const* residual;
  float divisor;
};

// A tile whose A is packed by k (K = k, rows a_ld apart) and whose epilogue
// only accumulates into out (or overwrites it); the caller sets a_packed,
// panel, nrows and the out rows per call.
inline GemmTile packed_a_tile(int k, int a_ld, float* const* out, bool accumulate) {
  GemmTile t;
  t.rows = nullptr;
  t.taps = 1;
  t.cin = k;
  t.a_ld = a_ld;
  t.out = out;
  t.bias = nullptr;
  t.batch_bias = nullptr;
  t.residual = accumulate ? out : nullptr;
  t.divisor = 1.0f;
  return t;
}

using TileKernel = void (*)(const GemmTile&);

// The micro-kernel chosen for this CPU (conv2d.cpp) and its MR.
TileKernel conv_tile_kernel();
int conv_tile_rows();

void conv_tile_generic(const GemmTile& tile);
#if defined(__x86_64__) && defined(MB_HAVE_X86_KERNELS)
void conv_tile_avx2(const GemmTile& tile);
void conv_tile_avx512(const GemmTile& tile);
#endif

}  // namespace mb
