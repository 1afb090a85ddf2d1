// The passes that run at the widest vector the CPU has, avx512 here:
// Winograd's data transforms (winograd_lanes.h), softmax's exponentials
// (softmax_lanes.h) and small-head attention (attention_lanes.h). Compiled
// with -mavx512f -ffp-contract=off; only called when the conv micro-kernel
// chosen is avx512's.
#define MB_WINO_BYTES 64
#define MB_WINO_INPUT winograd_input_avx512
#define MB_WINO_OUTPUT winograd_output_avx512
#define MB_WINO4_INPUT winograd4_input_avx512
#define MB_WINO4_OUTPUT winograd4_output_avx512
#define MB_WINO_GRAD winograd_grad_avx512
#define MB_WINO4_GRAD winograd4_grad_avx512
#include "winograd_lanes.h"

#define MB_SOFTMAX_BYTES 64
#define MB_SOFTMAX_ROW softmax_row_avx512
#include "softmax_lanes.h"

#define MB_ATTN_BYTES 64
#define MB_ATTN_FORWARD attention_small_forward_avx512
#define MB_ATTN_BACKWARD attention_small_backward_avx512
#include "attention_lanes.h"
