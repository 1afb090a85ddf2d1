// Portable micro-kernel: 4-wide vectors (SSE2 on x86-64 baseline, SIMD128 in
// wasm, NEON on arm64 through the compiler's generic vectors).
#define MB_VEC_BYTES 16
#define MB_MR 4
#define MB_NV 2
#define MB_KERNEL conv_tile_generic
#include "gemm_microkernel.h"
