// The CPU's entry in the device seam (engine/ops.h): the functions of
// cpu/ops.h behind the Ops table, plus host memory. The wrappers only adapt
// signatures; the work is the same functions the CPU path always called.
#include "../engine/ops.h"

namespace mb {

namespace {

void* host_alloc(size_t bytes) { return mb_alloc(bytes); }
void host_free(void* p) { mb_free(p); }
size_t host_available() { return 0; }
void host_copy(void* dst, const void* src, size_t bytes) { mb_copy(dst, src, bytes); }
// Gradient buffers are large: whole floats are cleared on the thread pool.
void host_zero(void* dst, size_t bytes) {
  if (bytes % sizeof(float) == 0)
    zero_floats(static_cast<float*>(dst), bytes / sizeof(float));
  else
    mb_zero(dst, bytes);
}
int host_sync() { return kOk; }
const char* host_error() { return ""; }

int winograd_tile_of(int algo) { return algo & kConvTile4 ? 4 : 2; }

size_t cpu_conv_packed_floats(int cout, int cin, int k, int algo) {
  const int tile = winograd_tile_of(algo);
  algo &= kConvAlgoMask;  // the cpu's backward reads the forward's layout: kConvTrainable changes nothing
  if (algo == kConvDirect) return packed_weights_floats(cout, cin, k * k);
  return winograd_weights_floats(cout, cin, algo == kConvWinogradLean, tile);
}

void cpu_pack_conv(PackedWeights* packed, float* storage, const WeightSource* sources, const int* couts, int n, int cin,
                   int k, int algo) {
  const int tile = winograd_tile_of(algo);
  algo &= kConvAlgoMask;
  if (algo == kConvDirect)
    pack_weights(packed, storage, sources, couts, n, cin, k, k);
  else
    pack_winograd_weights(packed, storage, sources[0], couts[0], cin, algo == kConvWinogradLean, tile);
}

size_t cpu_conv_scratch_floats(const ConvGeometry& g, int cout, int cin, int k, int algo) {
  (void)k;
  const int tile = winograd_tile_of(algo);
  algo &= kConvAlgoMask;
  if (algo == kConvDirect) return 0;
  PackedWeights shape;  // the scratch depends on the shape only, not on packed data
  shape.cout = cout, shape.cin = cin, shape.kh = shape.kw = 3, shape.nr = conv_panel_width(), shape.winograd = true;
  shape.lean = algo == kConvWinogradLean;
  shape.tile = tile;
  return winograd_scratch_floats(g, shape);
}

// Below these sizes an op runs on the calling thread (SerialScope): its work
// takes about ten microseconds on one core, about what handing half of it to
// another core costs (the region's hand-off, moving the data to its cache).
// What they cover in the embedded MNIST model at batch 1: the time-embedding
// linears, the GroupNorms and layout ops of the 16 x 16 and 8 x 8 levels; the
// 32 x 32 GroupNorms (32K floats), the attention and the 3x3 convs (about 19
// MFLOP each) still use every thread. Measured on 2 cores, quiet: thresholds
// of 3 MFLOP / 64K floats made batch 1 10-25% slower than these (work the
// second core could have shared), and with a core busy both stayed within 5%
// of one thread (the pool's backoff, threadpool.cpp, covers that case).
#if defined(__wasm__)
// wasm's SIMD128 kernels do the same op in about three times the native
// AVX-512 time, so an op pays for the hand-off at a third of the size:
// wasm threads build, 2 threads, batch 1, two alternating rounds of 200
// forwards: minimum 9.22 / 9.31 ms with the native thresholds, 8.98 / 8.97
// with these, 9.06 / 9.10 at a tenth.
constexpr double kSerialFlops = 3e5;
constexpr long long kSerialFloats = 1 << 12;
#else
constexpr double kSerialFlops = 1e6;        // GEMMs, attention: multiply-adds x 2
constexpr long long kSerialFloats = 1 << 14;  // one pass over memory: GroupNorm, layout, resampling
#endif
// Work that costs more per FLOP or per float than those two measures assume,
// as multiples (batch 1, one thread, avx512): the thin convs run at about a
// fifth of the GEMM's rate (conv_in / conv_out at 28x28: 0.45 MFLOP in 21 us);
// SiLU's exponential and division cost about four passes over memory; each
// attention score's share of the softmax (an exponential, the max, the sum,
// the scaling) costs about 40 multiply-adds. Without them the MNIST model's
// attention (8 heads of 49 tokens: 0.6 MFLOP of multiply-adds, 68 us), its
// conv_in / conv_out and its 14x14 GroupNorms ran on one thread; with them,
// 2 threads, batch 1, four alternating pairs of 1500 forwards: minimum
// 2.95-2.98 -> 2.76-2.78 ms. With a core busy, 2 threads stay at or under
// the 1-thread time.
constexpr double kThinCost = 5.0;
constexpr long long kSiluCost = 4;
constexpr double kSoftmaxCost = 40.0;

void cpu_conv2d_forward(const float* in, const ConvGeometry& g, const PackedWeights& w, const ConvEpilogue& ep,
                        float* out, const float* zero_row, float* scratch) {
  const double flops = 2.0 * g.batch * g.out_h * g.out_w * w.cout * w.cin * w.kh * w.kw;
  SerialScope small(flops * (thin_conv_applies(g, w) ? kThinCost : 1.0) < kSerialFlops);
  if (w.winograd)
    winograd_conv2d_forward(in, g, w, ep, out, zero_row, scratch);
  else
    conv2d_forward(in, g, w, ep, out, zero_row);
}

void cpu_group_norm_forward(const float* x, const GroupNormArgs& a, float* y, float* stats) {
  SerialScope small((long long)a.batch * a.pixels * a.channels * (a.silu ? kSiluCost : 1) < kSerialFloats);
  group_norm_forward(x, a, y, stats);
}

void cpu_attention_forward(const float* qkv, const AttentionArgs& a, float* out, float* scratch, const float* zero_row) {
  const double scores = (double)a.batch * a.heads * a.tokens * a.tokens;
  SerialScope small(scores * (4.0 * a.head_dim + kSoftmaxCost) < kSerialFlops);
  attention_forward(qkv, a, out, scratch, zero_row);
}

bool small_image(int batch, int channels, int h, int w) { return (long long)batch * channels * h * w < kSerialFloats; }

void cpu_nchw_to_nhwc(const float* x, int batch, int channels, int h, int w, float* y, float scale, float shift) {
  SerialScope small(small_image(batch, channels, h, w));
  nchw_to_nhwc(x, batch, channels, h, w, y, scale, shift);
}
void cpu_nhwc_to_nchw(const float* x, int batch, int channels, int h, int w, float* y) {
  SerialScope small(small_image(batch, channels, h, w));
  nhwc_to_nchw(x, batch, channels, h, w, y);
}
void cpu_nhwc_to_nchw_div(const float* x, int batch, int channels, int h, int w, const float* divisors, float* y) {
  SerialScope small(small_image(batch, channels, h, w));
  nhwc_to_nchw_div(x, batch, channels, h, w, divisors, y);
}
void cpu_upsample_nearest2x(const float* x, int batch, int h, int w, int channels, float* y) {
  SerialScope small(small_image(batch, channels, 2 * h, 2 * w));
  upsample_nearest2x(x, batch, h, w, channels, y);
}
void cpu_avgpool2x2(const float* x, int batch, int h, int w, int channels, float* y) {
  SerialScope small(small_image(batch, channels, h, w));
  avgpool2x2(x, batch, h, w, channels, y);
}
void cpu_concat_channels(const float* a, int ca, const float* b, int cb, int pixels, float* y) {
  SerialScope small(small_image(1, ca + cb, 1, pixels));
  concat_channels(a, ca, b, cb, pixels, y);
}
void cpu_add_forward(const float* a, const float* b, long long n, float* y) {
  SerialScope small(n < kSerialFloats);
  add_forward(a, b, n, y);
}
void cpu_randn_philox(uint64_t seed, uint64_t draw, uint64_t offset, long long n, float* out) {
  SerialScope small(n < kSerialFloats / 8);  // a log, a sine and a cosine per pair: ~10x a copy's work
  randn_philox(seed, draw, offset, n, out);
}

void cpu_gather_rows(const float* table, int dim, const float* index, int batch, float* out, bool accumulate) {
  for (int b = 0; b < batch; ++b) {
    const float* row = table + (size_t)(int)index[b] * dim;
    float* o = out + (size_t)b * dim;
    if (accumulate)
      for (int c = 0; c < dim; ++c) o[c] += row[c];
    else
      mb_copy(o, row, sizeof(float) * dim);
  }
}

int cpu_diffusion_step(const StepCoefficients& c, const StepLayout& layout, const float* model_output,
                       const float* sample, const float* noise, float* prev_sample, float* pred_original_sample) {
  float* scratch = nullptr;
  const size_t scratch_floats = diffusion_step_scratch_floats(c, layout);
  if (scratch_floats) {
    scratch = static_cast<float*>(mb_alloc(scratch_floats * sizeof(float)));
    if (!scratch) return kErrOutOfMemory;
  }
  {
    SerialScope small((long long)layout.batch_size * layout.sample_size < kSerialFloats);
    diffusion_step(c, layout, model_output, sample, noise, prev_sample, pred_original_sample, scratch);
  }
  mb_free(scratch);
  return kOk;
}

void cpu_conv2d_backward_data(const float* dy, const ConvGeometry& g, const PackedWeights& w, float* dx, float* scratch,
                              const float* zero_row, bool accumulate) {
  conv2d_backward_data(dy, g, w, dx, scratch, zero_row, accumulate);  // (a default argument cannot go through a pointer)
}

int cpu_solver_step(const SolverCoefficients& c, const StepLayout& layout, const SolverArrays& a) {
  float* scratch = nullptr;
  const size_t scratch_floats = solver_step_scratch_floats(c, layout);
  if (scratch_floats) {
    scratch = static_cast<float*>(mb_alloc(scratch_floats * sizeof(float)));
    if (!scratch) return kErrOutOfMemory;
  }
  solver_step(c, layout, a, scratch);
  mb_free(scratch);
  return kOk;
}

const Ops kCpuOps = {
    "cpu",
    false,
    host_alloc,
    host_free,
    host_available,
    host_copy,
    host_copy,
    host_zero,
    host_copy,
    host_sync,
    host_error,
    cpu_conv_packed_floats,
    cpu_pack_conv,
    cpu_conv_scratch_floats,
    cpu_conv2d_forward,
    cpu_group_norm_forward,
    attention_scratch_floats,
    cpu_attention_forward,
    cpu_nchw_to_nhwc,
    cpu_nhwc_to_nchw,
    cpu_nhwc_to_nchw_div,
    cpu_upsample_nearest2x,
    cpu_avgpool2x2,
    cpu_concat_channels,
    timestep_embedding,
    fourier_embedding,
    cpu_gather_rows,
    scatter_add_rows,
    silu_forward,
    cpu_add_forward,
    dropout_apply,
    cpu_randn_philox,
    add_noise,
    cpu_diffusion_step,
    diffusion_loss,
    divide_scalar,
    add_broadcast_backward,
    conv2d_backward_scratch_floats,
    cpu_conv2d_backward_data,
    conv2d_backward_weights_scratch_floats,
    conv2d_backward_weights,
    group_norm_backward_scratch_floats,
    group_norm_backward,
    attention_backward_scratch_floats,
    attention_backward,
    upsample_nearest2x_backward,
    avgpool2x2_backward,
    concat_channels_backward,
    silu_backward,
    adamw_update,
    ema_update,
    sum_squares,
    nullptr,  // queue_new: the host runs each op as it is called
    nullptr,
    nullptr,
    nullptr,  // capture_begin
    nullptr,
    nullptr,
    nullptr,
    host_sync,  // poll: host ops cannot fail once their memory exists
    nullptr,    // group_norm_forward_half: activations stay float32 on the host
    nullptr,
    cpu_solver_step,
};

}  // namespace

const Ops* cpu_ops() { return &kCpuOps; }

}  // namespace mb
