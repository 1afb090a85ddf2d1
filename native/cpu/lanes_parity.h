// Development check of the per-width passes (lanes_parity.cpp).
#pragma once

#include <stdint.h>

namespace mb {

struct LanesParityResult {
  const char* pass;
  const char* isa;
  int cases;
  int mismatches;
};

// Runs every wide variant this CPU has against the four-lane one; returns the
// number of results written (7 per variant: softmax_row, winograd_input,
// winograd_output, winograd4_input, winograd4_output, winograd_grad,
// winograd4_grad). None on a CPU with
// four lanes only.
int lanes_parity(uint32_t seed, LanesParityResult* results, int max_results);

}  // namespace mb
