// GroupNorm's apply pass and its backward's SiLU pass, sixteen lanes (groupnorm_apply.h). Compiled with
// -mavx512f; only called when the CPU reports AVX-512F.
#define MB_APPLY_BYTES 64
#define MB_APPLY_KERNEL norm_apply_avx512
#define MB_GRAD_KERNEL norm_grad_avx512
#define MB_DX_KERNEL norm_dx_avx512
#define MB_SUMS_KERNEL norm_sums_avx512
#include "groupnorm_apply.h"
