// The passes that run at the widest vector the CPU has, avx512 here: Winograd's
// data transforms (winograd_lanes.h) and softmax's exponentials
// (softmax_lanes.h). Compiled with -mavx512f -ffp-contract=off; only called
// when the conv micro-kernel chosen is avx512's.
#define MB_WINO_BYTES 64
#define MB_WINO_INPUT winograd_input_avx512
#define MB_WINO_OUTPUT winograd_output_avx512
#include "winograd_lanes.h"

#define MB_SOFTMAX_BYTES 64
#define MB_SOFTMAX_EXP softmax_exp_avx512
#include "softmax_lanes.h"
