// A bump arena for activations. A forward pass at a given (batch, H, W) is
// first run in planning mode, which only counts: the peak it reaches is the
// exact arena size, allocated once. Steady-state forwards then allocate
// nothing. Allocation follows a stack discipline (mark / release).
#pragma once

#include "common.h"

namespace mb {

// Sizes are counted in 64 bits even where size_t has 32 (wasm32), so that a
// plan for an absurd batch reports its true size instead of wrapping around.
struct Arena {
  float* base = nullptr;
  uint64_t capacity = 0;  // floats
  uint64_t top = 0;       // floats in use
  uint64_t peak = 0;
  bool planning = false;

  float* alloc(uint64_t floats) {
    floats = ((floats ? floats : 1) + 15) & ~(uint64_t)15;  // 64-byte aligned blocks
    const uint64_t offset = top;
    top += floats;
    if (top > peak) peak = top;
    // While planning, hand out distinct fake addresses that are never read.
    if (planning) return reinterpret_cast<float*>((uintptr_t)64 + (uintptr_t)(offset * sizeof(float)));
    return base + (size_t)offset;
  }
  uint64_t mark() const { return top; }
  void release(uint64_t mark) { top = mark; }

  void free_storage() {
    mb_free(base);
    base = nullptr;
    capacity = top = peak = 0;
  }
};

}  // namespace mb
