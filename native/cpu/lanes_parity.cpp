// Development check (dev addons only: MARBLE_DEV_SOURCES): the passes built
// per vector width (lanes_<isa>.cpp) against their four-lane originals on
// random inputs, compared bit for bit. Winograd's transforms and softmax
// claim the same bits at every width; this is where that is tested
// (test/lanes_parity.test.ts).
#include <cstring>

#include "lanes_parity.h"
#include "ops.h"
#include "winograd_transforms.h"

namespace mb {

namespace {

struct Rng {  // xorshift32: reproducible inputs, no library
  uint32_t state;
  float next() {
    state ^= state << 13;
    state ^= state >> 17;
    state ^= state << 5;
    return (float)(state >> 8) / (float)(1 << 24) * 8.0f - 4.0f;  // [-4, 4)
  }
};

bool same_bits(const float* a, const float* b, size_t n) { return std::memcmp(a, b, n * sizeof(float)) == 0; }

struct Variant {
  const char* isa;
  void (*softmax)(float*, int, float);
  WinogradInputPass input;
  WinogradOutputPass output;
};

int variants(Variant* out) {
  int n = 0;
#if defined(__x86_64__) && defined(MB_HAVE_X86_KERNELS)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
    out[n++] = {"avx2", softmax_row_avx2, winograd_input_avx2, winograd_output_avx2};
  if (__builtin_cpu_supports("avx512f"))
    out[n++] = {"avx512", softmax_row_avx512, winograd_input_avx512, winograd_output_avx512};
#else
  (void)out;
#endif
  return n;
}

}  // namespace

int lanes_parity(uint32_t seed, LanesParityResult* results, int max_results) {
  Variant wide[2];
  const int count = variants(wide);
  int written = 0;
  Rng rng{seed ? seed : 1};
  for (int v = 0; v < count && written + 3 <= max_results; ++v) {
    LanesParityResult soft = {"softmax_row", wide[v].isa, 0, 0};
    // Rows of every length to 300 (blocks of 16, vector tails, scalar tails).
    static float a[320], b[320];
    for (int n = 1; n <= 300; ++n) {
      for (int j = 0; j < n; ++j) a[j] = b[j] = rng.next() * (n % 7 == 0 ? 20.0f : 1.0f);
      const float scale = 0.125f + (float)(n % 5) * 0.3f;
      softmax_row_vec4(a, n, scale);
      wide[v].softmax(b, n, scale);
      soft.cases++;
      if (!same_bits(a, b, (size_t)n)) soft.mismatches++;
    }

    LanesParityResult in = {"winograd_input", wide[v].isa, 0, 0};
    LanesParityResult out = {"winograd_output", wide[v].isa, 0, 0};
    static float patch[16][96], va[16 * 96], vb[16 * 96];
    for (int cin = 1; cin <= 96; cin += (cin < 40 ? 1 : 8)) {
      for (int p = 0; p < 16; ++p)
        for (int c = 0; c < cin; ++c) patch[p][c] = rng.next();
      const float* src[4][4];
      for (int p = 0; p < 16; ++p) src[p / 4][p % 4] = patch[p];
      const int nr = 32, c_end = (cin + nr - 1) / nr * nr;
      std::memset(va, 0, sizeof(va));
      std::memset(vb, 0, sizeof(vb));
      // Panels of nr channels, as the weight gradient lays V out.
      winograd_input_vec4(src, cin, c_end, nr, nr, (size_t)c_end, va);
      wide[v].input(src, cin, c_end, nr, nr, (size_t)c_end, vb);
      in.cases++;
      if (!same_bits(va, vb, 16 * (size_t)c_end)) in.mismatches++;

      // 16 products, cin columns, with bias, residual and a divisor.
      static float prod[16 * 96], bias[96], res[4][96], ya[4][96], yb[4][96];
      for (int i = 0; i < 16 * cin; ++i) prod[i] = rng.next();
      for (int c = 0; c < cin; ++c) {
        bias[c] = rng.next();
        for (int r = 0; r < 4; ++r) res[r][c] = rng.next();
      }
      float* da[2][2] = {{ya[0], ya[1]}, {ya[2], ya[3]}};
      float* db[2][2] = {{yb[0], yb[1]}, {yb[2], yb[3]}};
      const float* rr[2][2] = {{res[0], res[1]}, {res[2], res[3]}};
      const float divisor = cin % 2 ? 1.0f : 1.4142135f;
      winograd_output_vec4(prod, (size_t)cin, cin, da, rr, bias, nullptr, divisor);
      wide[v].output(prod, (size_t)cin, cin, db, rr, bias, nullptr, divisor);
      out.cases++;
      if (!same_bits(&ya[0][0], &yb[0][0], 4 * 96)) out.mismatches++;
    }
    results[written++] = soft;
    results[written++] = in;
    results[written++] = out;
  }
  return written;
}

}  // namespace mb
