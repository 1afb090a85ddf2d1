// AVX-512 micro-kernel, 8 x 32 tile (16 accumulators of 32 zmm registers).
// Compiled with -mavx512f -mfma; only called when the CPU reports AVX-512F.
#define MB_VEC_BYTES 64
#define MB_MR 8
#define MB_NV 2
#define MB_KERNEL conv_tile_avx512
#include "gemm_microkernel.h"
