// Development check (dev addons only: MARBLE_DEV_SOURCES): the passes built
// per vector width (lanes_<isa>.cpp) against their four-lane originals on
// random inputs, compared bit for bit. Winograd's transforms and softmax
// claim the same bits at every width; this is where that is tested
// (test/lanes_parity.test.ts).
#include <cstring>

#include "groupnorm_apply.h"
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
  WinogradInputPass input4;
  Winograd4OutputPass output4;
  WinogradGradPass grad;
  Winograd4GradPass grad4;
  NormDxKernel norm_dx;
  NormSumsKernel norm_sums;
};

int variants(Variant* out) {
  int n = 0;
#if defined(__x86_64__) && defined(MB_HAVE_X86_KERNELS)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
    out[n++] = {"avx2", softmax_row_avx2, winograd_input_avx2, winograd_output_avx2, winograd4_input_avx2,
                  winograd4_output_avx2, winograd_grad_avx2, winograd4_grad_avx2, norm_dx_avx2, norm_sums_avx2};
  if (__builtin_cpu_supports("avx512f"))
    out[n++] = {"avx512", softmax_row_avx512, winograd_input_avx512, winograd_output_avx512, winograd4_input_avx512,
                  winograd4_output_avx512, winograd_grad_avx512, winograd4_grad_avx512, norm_dx_avx512,
                  norm_sums_avx512};
#else
  (void)out;
#endif
  return n;
}

// The tile's input and output passes, four lanes against a wide variant, on
// 1 to 96 channels: V of a run of three tiles laid out in panels as the
// weight gradient does (and the run against its tiles one at a time, which
// share no columns), the products' transform with bias, residual and a divisor.
template <int M, typename InputPass, typename OutputPass>
void check_tile(Rng& rng, InputPass narrow_input, InputPass wide_input, OutputPass narrow_output, OutputPass wide_output,
                LanesParityResult& in, LanesParityResult& out) {
  constexpr int A = M + 2, Q = A * A, kRun = 3, kCols = M * kRun + 2;
  static float patch[A * kCols][96], va[kRun * Q * 96], vb[kRun * Q * 96], vt[kRun * Q * 96];
  static float prod[Q * 96], bias[96], res[M * M][96], ya[M * M][96], yb[M * M][96];
  for (int cin = 1; cin <= 96; cin += (cin < 40 ? 1 : 8)) {
    for (int p = 0; p < A * kCols; ++p)
      for (int c = 0; c < cin; ++c) patch[p][c] = rng.next();
    const float* src[A * kCols];
    for (int p = 0; p < A * kCols; ++p) src[p] = patch[p];
    const int nr = 32, c_end = (cin + nr - 1) / nr * nr;
    const size_t tile_stride = (size_t)Q * c_end;
    std::memset(va, 0, sizeof(va));
    std::memset(vb, 0, sizeof(vb));
    std::memset(vt, 0, sizeof(vt));
    narrow_input(src, kRun, cin, c_end, nr, nr, (size_t)c_end, tile_stride, va);
    wide_input(src, kRun, cin, c_end, nr, nr, (size_t)c_end, tile_stride, vb);
    for (int k = 0; k < kRun; ++k) {  // tile by tile: its own A x A patch
      const float* one[A * A];
      for (int i = 0; i < A; ++i)
        for (int j = 0; j < A; ++j) one[i * A + j] = src[i * kCols + M * k + j];
      narrow_input(one, 1, cin, c_end, nr, nr, (size_t)c_end, tile_stride, vt + k * tile_stride);
    }
    in.cases++;
    if (!same_bits(va, vb, kRun * tile_stride) || !same_bits(va, vt, kRun * tile_stride)) in.mismatches++;

    for (int i = 0; i < Q * cin; ++i) prod[i] = rng.next();
    for (int c = 0; c < cin; ++c) {
      bias[c] = rng.next();
      for (int r = 0; r < M * M; ++r) res[r][c] = rng.next();
    }
    float* da[M][M];
    float* db[M][M];
    const float* rr[M][M];
    for (int r = 0; r < M * M; ++r) {
      da[r / M][r % M] = ya[r];
      db[r / M][r % M] = yb[r];
      rr[r / M][r % M] = res[r];
    }
    const float divisor = cin % 2 ? 1.0f : 1.4142135f;
    narrow_output(prod, (size_t)cin, cin, da, rr, bias, nullptr, divisor);
    wide_output(prod, (size_t)cin, cin, db, rr, bias, nullptr, divisor);
    out.cases++;
    if (!same_bits(&ya[0][0], &yb[0][0], M * M * 96)) out.mismatches++;
  }
}

// The weight gradient's transform of dY, four lanes against a wide variant,
// on 1 to 96 channels, zeros to the next multiple of 8.
template <int M, typename GradPass>
void check_grad(Rng& rng, GradPass narrow, GradPass wide, LanesParityResult& result) {
  constexpr int Q = (M + 2) * (M + 2);
  static float dy[M * M][96], ma[Q * 104], mb[Q * 104];
  for (int cout = 1; cout <= 96; cout += (cout < 40 ? 1 : 8)) {
    for (int p = 0; p < M * M; ++p)
      for (int c = 0; c < cout; ++c) dy[p][c] = rng.next();
    const float* src[M][M];
    for (int p = 0; p < M * M; ++p) src[p / M][p % M] = dy[p];
    const int c_end = (cout + 7) / 8 * 8;
    std::memset(ma, 0xff, sizeof(ma));
    std::memset(mb, 0xff, sizeof(mb));
    narrow(src, cout, c_end, (size_t)c_end, ma);
    wide(src, cout, c_end, (size_t)c_end, mb);
    result.cases++;
    if (!same_bits(ma, mb, Q * (size_t)c_end)) result.mismatches++;
  }
}

// GroupNorm's backward second pass and forward statistics (groupnorm.cpp,
// whose scalar and four-lane loops do the same operations per channel), on
// 1 to 96 channels: the wide kernel's leading channels against the scalar
// expression.
void check_norm(Rng& rng, NormDxKernel dx_kernel, NormSumsKernel sums_kernel, LanesParityResult& dx_result,
                LanesParityResult& sums_result) {
  static float x[7][96], dx_a[96], dx_b[96], pixels[9][96];
  static double shift[96], sum_a[96], sq_a[96], sum_b[96], sq_b[96];
  for (int n = 1; n <= 96; n += (n < 40 ? 1 : 8)) {
    for (int r = 0; r < 7; ++r)
      for (int c = 0; c < n; ++c) x[r][c] = rng.next();
    const bool overwrite = n % 2 == 0;
    for (int c = 0; c < n; ++c) dx_a[c] = dx_b[c] = x[6][c];
    const int done = dx_kernel(x[0], x[1], x[2], x[3], x[4], x[5], n, dx_b, overwrite);
    for (int c = 0; c < done; ++c) {
      const float v = x[3][c] * x[1][c] + x[4][c] * (x[0][c] - x[2][c]) + x[5][c];
      dx_a[c] = overwrite ? v : dx_a[c] + v;
    }
    dx_result.cases++;
    if (!same_bits(dx_a, dx_b, (size_t)n)) dx_result.mismatches++;

    for (int p = 0; p < 9; ++p)
      for (int c = 0; c < n; ++c) pixels[p][c] = rng.next() * 100.0f;
    for (int c = 0; c < n; ++c) shift[c] = pixels[0][c] + 0.25;
    const int summed = sums_kernel(pixels[0], 9, 96, n, shift, sum_b, sq_b);
    bool same = true;
    for (int c = 0; c < summed; ++c) {
      sum_a[c] = sq_a[c] = 0.0;
      for (int p = 0; p < 9; ++p) {
        const double d = pixels[p][c] - shift[c];
        sum_a[c] += d;
        sq_a[c] += d * d;
      }
      same = same && std::memcmp(&sum_a[c], &sum_b[c], 8) == 0 && std::memcmp(&sq_a[c], &sq_b[c], 8) == 0;
    }
    sums_result.cases++;
    if (!same) sums_result.mismatches++;
  }
}

}  // namespace

int lanes_parity(uint32_t seed, LanesParityResult* results, int max_results) {
  Variant wide[2];
  const int count = variants(wide);
  int written = 0;
  Rng rng{seed ? seed : 1};
  for (int v = 0; v < count && written + 9 <= max_results; ++v) {
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

    LanesParityResult in2 = {"winograd_input", wide[v].isa, 0, 0}, out2 = {"winograd_output", wide[v].isa, 0, 0};
    LanesParityResult in4 = {"winograd4_input", wide[v].isa, 0, 0}, out4 = {"winograd4_output", wide[v].isa, 0, 0};
    check_tile<2>(rng, winograd_input_vec4, wide[v].input, winograd_output_vec4, wide[v].output, in2, out2);
    check_tile<4>(rng, winograd4_input_vec4, wide[v].input4, winograd4_output_vec4, wide[v].output4, in4, out4);
    results[written++] = soft;
    results[written++] = in2;
    results[written++] = out2;
    results[written++] = in4;
    results[written++] = out4;
    LanesParityResult grad2 = {"winograd_grad", wide[v].isa, 0, 0}, grad4 = {"winograd4_grad", wide[v].isa, 0, 0};
    check_grad<2>(rng, winograd_grad_vec4, wide[v].grad, grad2);
    check_grad<4>(rng, winograd4_grad_vec4, wide[v].grad4, grad4);
    results[written++] = grad2;
    results[written++] = grad4;
    LanesParityResult norm_dx = {"groupnorm_dx", wide[v].isa, 0, 0}, norm_sums = {"groupnorm_sums", wide[v].isa, 0, 0};
    check_norm(rng, wide[v].norm_dx, wide[v].norm_sums, norm_dx, norm_sums);
    results[written++] = norm_dx;
    results[written++] = norm_sums;
  }
  return written;
}

}  // namespace mb
