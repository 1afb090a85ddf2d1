// Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3",
// SC 2011): a counter-based generator, so element i of draw d is a pure
// function of (seed, d, i). Every backend (cpu threads, wasm, cuda) computes
// the same bits without sharing state.
#pragma once

#include <stdint.h>

#ifndef MB_HD
#if defined(__CUDACC__)
#define MB_HD __host__ __device__  // native/cuda/noise.cu runs the same rounds
#else
#define MB_HD
#endif
#endif

namespace mb {

struct Philox4 {
  uint32_t v[4];
};

MB_HD inline void philox_mulhilo(uint32_t a, uint32_t b, uint32_t* hi, uint32_t* lo) {
  uint64_t product = (uint64_t)a * (uint64_t)b;
  *hi = (uint32_t)(product >> 32);
  *lo = (uint32_t)product;
}

// counter = (c0, c1, c2, c3), key = (k0, k1); ten rounds with the key bumped
// by the Weyl constants between rounds (the Random123 / cuRAND constants).
MB_HD inline Philox4 philox4x32_10(uint32_t c0, uint32_t c1, uint32_t c2, uint32_t c3, uint32_t k0, uint32_t k1) {
  const uint32_t kM0 = 0xD2511F53u, kM1 = 0xCD9E8D57u;
  const uint32_t kW0 = 0x9E3779B9u, kW1 = 0xBB67AE85u;
  for (int round = 0; round < 10; ++round) {
    if (round > 0) {
      k0 += kW0;
      k1 += kW1;
    }
    uint32_t hi0, lo0, hi1, lo1;
    philox_mulhilo(kM0, c0, &hi0, &lo0);
    philox_mulhilo(kM1, c2, &hi1, &lo1);
    uint32_t n0 = hi1 ^ c1 ^ k0;
    uint32_t n2 = hi0 ^ c3 ^ k1;
    c0 = n0;
    c1 = lo1;
    c2 = n2;
    c3 = lo0;
  }
  return Philox4{{c0, c1, c2, c3}};
}

}  // namespace mb
