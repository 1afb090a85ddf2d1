// GroupNorm's apply pass and its backward's SiLU pass, eight lanes (groupnorm_apply.h). Compiled with
// -mavx2; only called when the CPU reports AVX2.
#define MB_APPLY_BYTES 32
#define MB_APPLY_KERNEL norm_apply_avx2
#define MB_GRAD_KERNEL norm_grad_avx2
#define MB_DX_KERNEL norm_dx_avx2
#define MB_SUMS_KERNEL norm_sums_avx2
#include "groupnorm_apply.h"
