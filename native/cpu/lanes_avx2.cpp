// The passes that run at the widest vector the CPU has, avx2 here:
// Winograd's data transforms (winograd_lanes.h), softmax's exponentials
// (softmax_lanes.h) and small-head attention (attention_lanes.h). Compiled
// with -mavx2 -ffp-contract=off; only called when the conv micro-kernel
// chosen is avx2's.
#define MB_WINO_BYTES 32
#define MB_WINO_INPUT winograd_input_avx2
#define MB_WINO_OUTPUT winograd_output_avx2
#define MB_WINO4_INPUT winograd4_input_avx2
#define MB_WINO4_OUTPUT winograd4_output_avx2
#define MB_WINO_GRAD winograd_grad_avx2
#define MB_WINO4_GRAD winograd4_grad_avx2
#include "winograd_lanes.h"

#define MB_SOFTMAX_BYTES 32
#define MB_SOFTMAX_ROW softmax_row_avx2
#include "softmax_lanes.h"

#define MB_ATTN_BYTES 32
#define MB_ATTN_FORWARD attention_small_forward_avx2
#define MB_ATTN_BACKWARD attention_small_backward_avx2
#include "attention_lanes.h"
