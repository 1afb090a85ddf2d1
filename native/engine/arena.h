// A bump arena for activations. A forward pass at a given (batch, H, W) is
// first run in planning mode, which only counts: the peak it reaches is the
// exact arena size, allocated once. Steady-state forwards then allocate
// nothing. Allocation follows a stack discipline (mark / release).
#pragma once

#include "common.h"

namespace mb {

struct Arena {
  float* base = nullptr;
  size_t capacity = 0;  // floats
  size_t top = 0;       // floats in use
  size_t peak = 0;
  bool planning = false;

  float* alloc(size_t floats) {
    floats = align_up(floats ? floats : 1, 16);  // 64-byte aligned blocks
    size_t offset = top;
    top += floats;
    if (top > peak) peak = top;
    // While planning, hand out distinct fake addresses that are never read.
    if (planning) return reinterpret_cast<float*>((uintptr_t)64 + offset * sizeof(float));
    return base + offset;
  }
  size_t mark() const { return top; }
  void release(size_t mark) { top = mark; }

  void free_storage() {
    mb_free(base);
    base = nullptr;
    capacity = top = peak = 0;
  }
};

}  // namespace mb
