// AVX2 + FMA micro-kernel, 6 x 16 tile (12 accumulators of 16 ymm registers).
// Compiled with -mavx2 -mfma; only called when the CPU reports both.
#define MB_VEC_BYTES 32
#define MB_MR 6
#define MB_NV 2
#define MB_KERNEL conv_tile_avx2
#include "gemm_microkernel.h"
