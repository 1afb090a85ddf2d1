// The CPU op set the UNet graph is built from. Every tensor is channels-last
// (NHWC), float32, with an explicit channel stride ("ld") where an op can read
// or write a channel slice of a wider tensor.
//
// This header is the seam for other devices: a CUDA build implements the same
// functions over device pointers (see native/cuda, planned).
#pragma once

#include "../engine/common.h"

namespace mb {

// ---------------------------------------------------------------------------
// conv2d.cpp: convolution as an implicit GEMM, and linear layers as 1x1 convs.

// Where element (n, ci, tap) of the logical weight lives in a source buffer,
// so that torch's [Cout][Cin][kh][kw] weights, attention keys ([T][dh] rows of
// a fused qkv buffer) and values (transposed) all pack with one routine.
struct WeightSource {
  const float* data;
  long long stride_n, stride_ci, stride_tap;
};

// The weight ("B") matrix of a convolution, packed once at load into panels of
// `nr` output channels: data[panel][tap][ci][nr], zero-padded past cout. The
// micro-kernel streams one panel contiguously while it accumulates a tile.
// Winograd-packed 3x3 weights (conv2d_winograd.cpp) are instead 36 (F(4x4,
// 3x3)) or 16 (F(2x2, 3x3)) transformed matrices, each [panel][ci][nr]; lean
// ones are the 3x3 weights as [panel][ci][tap][nr], transformed per call (no
// larger than torch's).
struct PackedWeights {
  float* data = nullptr;
  int cout = 0, cin = 0, kh = 1, kw = 1, nr = 0;
  bool winograd = false;
  bool lean = false;
  int tile = 2;  // Winograd: the output tile's side, 4 or 2
  // Winograd: the torch-layout weights it was packed from, which the data
  // gradient of F(4x4, 3x3) packs its flipped kernel from (training keeps them).
  WeightSource source = {nullptr, 0, 0, 0};
  // A device's own layout for the data gradient where it has one (cuda's
  // half types in a model that may train: conv2d_mma.cu), else null.
  float* transposed = nullptr;
};

int conv_panel_width();  // nr of the micro-kernel chosen for this CPU
size_t packed_weights_floats(int cout, int cin, int taps);
// Packs `cout` output channels from several sources stacked along cout (used
// to fuse the q, k and v projections into one GEMM).
void pack_weights(PackedWeights* packed, float* storage, const WeightSource* sources, const int* source_couts,
                  int num_sources, int cin, int kh, int kw);

struct ConvGeometry {
  int batch = 1;
  int in_h = 1, in_w = 1, in_ld = 0;  // in_ld: floats between input pixels
  int upsample = 1;                   // 1, or 2: read the input nearest-upsampled x2
  int out_h = 1, out_w = 1, out_ld = 0;
  int stride = 1, pad_top = 0, pad_left = 0;
};

// A GEMM as a convolution: `rows` vectors (rows of A, in_ld apart) form a
// 1 x rows image, so linear layers and matmuls share the conv driver.
inline ConvGeometry rows_geometry(int rows, int in_ld, int out_ld) {
  ConvGeometry g;
  g.batch = 1;
  g.in_h = 1;
  g.in_w = rows;
  g.in_ld = in_ld;
  g.out_h = 1;
  g.out_w = rows;
  g.out_ld = out_ld;
  return g;
}

// out = (conv(in) + bias + batch_bias[b] + residual) / divisor, all fused into
// the GEMM's store (diffusers divides by output_scale_factor, so do we). Any of
// the extra terms may be null.
struct ConvEpilogue {
  const float* bias = nullptr;        // [cout]
  const float* batch_bias = nullptr;  // [batch][batch_bias_ld], e.g. a projected time embedding
  int batch_bias_ld = 0;
  const float* residual = nullptr;  // NHWC, same pixels as out
  int residual_ld = 0;
  float divisor = 1.0f;
};

void conv2d_forward(const float* in, const ConvGeometry& g, const PackedWeights& w, const ConvEpilogue& ep, float* out,
                    const float* zero_row);

// Backward. Every backward op ADDS into its input gradients (dx), since most
// activations feed more than one consumer.
//
// dX for the convolution whose forward ran with geometry g (stride 1, stride 2
// or upsample 2) and packed weights w: a convolution with the flipped,
// transposed kernel, whose packing is the forward's transposed (so the
// backward uses exactly the weights the forward did). Winograd layers' dX
// goes by Winograd too. The scratch size takes w's shape (cout, cin, k, winograd).
// accumulate = false overwrites dx instead (not for upsampling convs).
size_t conv2d_backward_scratch_floats(const ConvGeometry& g, int cout, int cin, int k, bool winograd);
void conv2d_backward_data(const float* dy, const ConvGeometry& g, const PackedWeights& w, float* dx, float* scratch,
                          const float* zero_row, bool accumulate = true);
// The packing of B^T from a packed B (one matrix with n columns, n = its
// cout, and k rows, panels src_panel_floats apart): panel p of the result,
// [n][nr], zero past k. Used to derive the backward's weights from the forward's.
void transpose_packed_panel(const float* src, size_t src_panel_floats, int n, int k, int p, float* dst);
// dW (torch layout) and db, accumulated; by Winograd for stride-1 3x3 convs
// where that saves work.
size_t conv2d_backward_weights_scratch_floats(const ConvGeometry& g, int cout, int cin, int k);
void conv2d_backward_weights(const float* in, const ConvGeometry& g, const float* dy, int cout, int cin, int k,
                             float* grad_w, float* grad_b, float* scratch, const float* zero_row);
// C[m][n] (+)= sum_k A[m][k] * B(n, k), B read through a WeightSource (any strides).
size_t matmul_scratch_floats(int n, int k);
void matmul(const float* a, int lda, int m, int k, const WeightSource& b, int n, float* c, int ldc, bool accumulate,
            float* scratch);
void transpose(const float* a, int rows, int cols, int lda, float* out, int ldo);

// conv2d_winograd.cpp: 3x3 convolutions with stride 1 (upsampled input
// allowed) by Winograd, F(2x2, 3x3) (2.25x fewer multiplies) or F(4x4, 3x3)
// (4x fewer): `tile`, the output tile's side, 2 or 4. Weights from a
// torch-layout source (kept in PackedWeights::source); scratch of
// winograd_scratch_floats() for the current thread count. `lean` packs the
// 3x3 weights and transforms them per call (9/16 or 9/36 of the memory, a
// few percent slower, the same results bit for bit).
size_t winograd_weights_floats(int cout, int cin, bool lean, int tile);
void pack_winograd_weights(PackedWeights* packed, float* storage, const WeightSource& src, int cout, int cin,
                           bool lean, int tile);
size_t winograd_scratch_floats(const ConvGeometry& g, const PackedWeights& w);
void winograd_conv2d_forward(const float* in, const ConvGeometry& g, const PackedWeights& w, const ConvEpilogue& ep,
                             float* out, const float* zero_row, float* scratch);
// The flipped, transposed Winograd weights for dX, from the forward's packing
// (F(2x2, 3x3)) or its source (F(4x4, 3x3)); never a lean one: lean models
// are sampling-only.
void pack_winograd_backward_data_weights(PackedWeights* out, float* storage, const PackedWeights& w);
// 3x3, stride-1 convs with one input or one output channel (conv2d_thin.cpp):
// the forward (conv2d_forward takes it for direct-packed weights) and the
// weight gradient (torch layout, accumulated; no bias), where they apply.
bool thin_conv_applies(const ConvGeometry& g, const PackedWeights& w);  // direct-packed, one channel on a side
void thin_conv2d_forward(const float* in, const ConvGeometry& g, const PackedWeights& w, const ConvEpilogue& ep,
                         float* out);
bool thin_weight_grad_applies(const ConvGeometry& g, int cout, int cin, int k);
size_t thin_weight_grad_scratch_floats(const ConvGeometry& g, int cout, int cin);
void thin_weight_grad(const float* in, const ConvGeometry& g, const float* dy, int cout, int cin, float* grad_w,
                      float* scratch);
// The weight gradient (torch layout, accumulated; no bias) of any other conv
// or linear layer, by im2col (conv2d_im2col_grad.cpp).
size_t im2col_weight_grad_scratch_floats(const ConvGeometry& g, int cout, int cin, int k);
void im2col_weight_grad(const float* in, const ConvGeometry& g, const float* dy, int cout, int cin, int k,
                        float* grad_w, float* scratch);
// The weight gradient (torch layout, accumulated; no bias) of such a conv by
// the transposed algorithm; worth it when winograd_weight_grad_pays(cin).
bool winograd_weight_grad_pays(int cin);
size_t winograd_backward_weights_scratch_floats(const ConvGeometry& g, int cout, int cin);
void winograd_conv2d_backward_weights(const float* in, const ConvGeometry& g, const float* dy, int cout, int cin,
                                      float* grad_w, float* scratch, const float* zero_row);

// ---------------------------------------------------------------------------
// groupnorm.cpp: GroupNorm over NHWC, with the tails that follow it in the
// UNet fused in: an optional per-sample scale/shift (resnet scale_shift time
// conditioning) and an optional SiLU.
struct GroupNormArgs {
  int batch = 1, pixels = 1, channels = 0, groups = 1;
  float eps = 1e-5f;
  const float* gamma = nullptr;
  const float* beta = nullptr;
  const float* scale_shift = nullptr;  // [batch][scale_shift_ld]: scale in [0,C), shift in [C,2C)
  int scale_shift_ld = 0;
  bool silu = false;
  bool dx_overwrite = false;  // backward: dx = ... into a fresh buffer (no zero-fill first), else dx += ...
};
void group_norm_forward(const float* x, const GroupNormArgs& a, float* y, float* stats_scratch /* 2*batch*groups */);
// Backward from the saved input and statistics: dx += ... (= with
// dx_overwrite), dgamma/dbeta +=,
// and d(scale_shift) += ([batch][scale_shift_ld]) when the forward had one.
size_t group_norm_backward_scratch_floats(const GroupNormArgs& a);
void group_norm_backward(const float* x, const GroupNormArgs& a, const float* stats, const float* dy, float* dx,
                         float* dgamma, float* dbeta, float* dscale_shift, float* scratch);

// ---------------------------------------------------------------------------
// attention.cpp: softmax(q k^T * scale) v per head, over a fused qkv buffer
// [batch*tokens][3*channels] (q | k | v). Writes [batch*tokens][channels].
struct AttentionArgs {
  int batch = 1, tokens = 1, heads = 1, head_dim = 1;
  float scale = 1.0f;
  // Training's keep of the softmax (attention_probs_floats of them, or null):
  // the forward writes every pair's probabilities there and the backward
  // reads them instead of recomputing scores and softmax. The same bits
  // either way (the same code computes them). CPU small heads only.
  float* probs = nullptr;
};
// Floats the forward's kept probabilities take ([pair][token][padded
// tokens]), or 0 where the backward recomputes them (large heads, or more
// than kMaxKeptProbFloats: the kept rows then cost more memory than time).
size_t attention_probs_floats(const AttentionArgs& a);
// Softmax over a row at the CPU's widest vector (softmax_lanes.h), or null
// where four lanes are the widest (attention.cpp's softmax_row then runs).
using SoftmaxRowKernel = void (*)(float* s, int n, float scale);
SoftmaxRowKernel softmax_row_kernel();
void softmax_row_vec4(float* s, int n, float scale);
#if defined(__x86_64__) && defined(MB_HAVE_X86_KERNELS)
void softmax_row_avx2(float* s, int n, float scale);
void softmax_row_avx512(float* s, int n, float scale);
#endif
// Small-head attention, one (sample, head) pair (attention_lanes.h), at the
// widest vector the CPU has, kAttnSmallRows query rows at a time (the rows'
// scratch is part of the slot).
using SoftmaxRowFn = void (*)(float* s, int n, float scale);
constexpr int kAttnSmallRows = 4;
struct AttentionSmallKernels {
  // probs: where the forward keeps the pair's softmax rows (tokens x padded
  // tokens) and the backward finds them, or null (scores and softmax in the slot).
  void (*forward)(const float* q, const float* k, const float* v, int ld, int tokens, int dh, float scale,
                  SoftmaxRowFn softmax, float* out, int out_ld, float* slot, float* probs);
  void (*backward)(const float* q, const float* k, const float* v, int ld, const float* d_o, int do_ld, int tokens,
                   int dh, float scale, SoftmaxRowFn softmax, float* dq, float* dk, float* dv, float* slot,
                   const float* probs);
};
const AttentionSmallKernels& attention_small_kernels();
#define MB_DECLARE_ATTENTION_SMALL(isa)                                                                            \
  void attention_small_forward_##isa(const float* q, const float* k, const float* v, int ld, int tokens, int dh,  \
                                     float scale, SoftmaxRowFn softmax, float* out, int out_ld, float* slot,      \
                                     float* probs);                                                               \
  void attention_small_backward_##isa(const float* q, const float* k, const float* v, int ld, const float* d_o,   \
                                      int do_ld, int tokens, int dh, float scale, SoftmaxRowFn softmax, float* dq, \
                                      float* dk, float* dv, float* slot, const float* probs);
MB_DECLARE_ATTENTION_SMALL(vec4)
#if defined(__x86_64__) && defined(MB_HAVE_X86_KERNELS)
MB_DECLARE_ATTENTION_SMALL(avx2)
MB_DECLARE_ATTENTION_SMALL(avx512)
#endif
#undef MB_DECLARE_ATTENTION_SMALL
size_t attention_scratch_floats(const AttentionArgs& a);
void attention_forward(const float* qkv, const AttentionArgs& a, float* out, float* scratch, const float* zero_row);
// dqkv (overwritten) from the saved qkv and d(out); recomputes the softmax.
size_t attention_backward_scratch_floats(const AttentionArgs& a);
void attention_backward(const float* qkv, const AttentionArgs& a, const float* dout, float* dqkv, float* scratch);

// ---------------------------------------------------------------------------
// resample.cpp: layout changes and resampling on NHWC.
void nchw_to_nhwc(const float* x, int batch, int channels, int h, int w, float* y, float scale, float shift);
void nhwc_to_nchw(const float* x, int batch, int channels, int h, int w, float* y);
// Divides each sample's output by its timestep (fourier time embedding).
void nhwc_to_nchw_div(const float* x, int batch, int channels, int h, int w, const float* divisors, float* y);
void upsample_nearest2x(const float* x, int batch, int h, int w, int channels, float* y);
void avgpool2x2(const float* x, int batch, int h, int w, int channels, float* y);
// y[:, :, :, 0:ca] = a, y[:, :, :, ca:ca+cb] = b
void concat_channels(const float* a, int ca, const float* b, int cb, int pixels, float* y);
// Backward (accumulating): dx[y][x] += sum of the 2x2 block it was copied to.
void upsample_nearest2x_backward(const float* dy, int batch, int h, int w, int channels, float* dx, int dx_ld);
void avgpool2x2_backward(const float* dy, int batch, int h, int w, int channels, float* dx);
// concat's backward writes (does not add): da = dy's first ca channels, db the other cb.
void concat_channels_backward(const float* dy, int ca, int cb, int pixels, float* da, float* db);

// ---------------------------------------------------------------------------
// embed.cpp: timestep and class embeddings.
// diffusers get_timestep_embedding: [batch][dim] sinusoids in float32.
void timestep_embedding(const float* timesteps, int batch, int dim, bool flip_sin_to_cos, float freq_shift,
                        float* out);
// GaussianFourierProjection(log=True): [sin(2 pi log(t) w), cos(...)], [batch][2*n].
void fourier_embedding(const float* timesteps, int batch, const float* weight, int n, float* out);
// Rows of an embedding table: out[b] = table[index[b]].
void embedding_lookup(const float* table, int dim, const int* index, int batch, float* out);
// The backward of a row lookup (class tables, the learned time table):
// table[(int)index[b]] += rows[b], b in order, the indices floats already
// validated as integers in range (they may repeat).
void scatter_add_rows(float* table, int dim, const float* index, int batch, const float* rows);

// ---------------------------------------------------------------------------
// diffusion_step.cpp: the fused per-element DDPM/DDIM step (the C++ twin of
// src/schedulers/step_kernel.ts; slots documented there), and add_noise.
enum StepPrediction { kPredictEpsilon = 0, kPredictSample = 1, kPredictV = 2 };
enum StepX0Clip { kX0None = 0, kX0Clamp = 1, kX0DynamicThreshold = 2 };
enum StepCombine { kCombineSample = 0, kCombineEpsilon = 1 };
enum StepEpsilonFrom { kEpsilonFromModelOutput = 0, kEpsilonFromClippedX0 = 1 };
enum StepNoise { kNoiseNone = 0, kNoiseScalar = 1, kNoiseLearnedVariance = 2, kNoiseLearnedRange = 3 };

// The per-step scalars, in the order the C ABI receives them (mb_diffusion_step).
struct StepCoefficients {
  int prediction, x0_clip, combine, epsilon_from, noise_term;
  float sqrt_alpha_prod, sqrt_beta_prod;
  float clip_sample_range, dynamic_thresholding_ratio, sample_max_value;
  float x0_coeff, other_coeff;
  float noise_std, min_log, max_log;
};
constexpr int kStepCoefficientSlots = 15;

struct StepLayout {
  int batch_size;
  int sample_size;          // C*H*W per sample
  int model_output_stride;  // sample_size, or 2*sample_size with a predicted variance
  // Classifier-free guidance. 1: the model output holds batch_size items and
  // is used as is. Any other value s: it holds 2 * batch_size items, the
  // conditional pass's [cond_0..cond_B-1] then the unconditional pass's
  // [uncond_0..uncond_B-1] (one doubled forward), and the step reads
  // uncond + s * (cond - uncond) (step_math.h, guided_output) in their place.
  // A predicted variance half is the conditional pass's.
  float guidance_scale = 1.0f;
};
// How many items the model output holds (see guidance_scale).
inline int step_output_items(const StepLayout& l) { return l.guidance_scale != 1.0f ? 2 * l.batch_size : l.batch_size; }
// A finite guidance scale (NaN or infinity would poison every sample).
inline bool step_guidance_valid(const StepLayout& l) {
  const float s = l.guidance_scale;
  return s == s && s - s == 0.0f;
}
// The record from its kStepCoefficientSlots floats, the form the C ABI and
// the sampling loop receive (src/schedulers/engine_step.ts packs them).
inline StepCoefficients step_coefficients_from_slots(const float* k) {
  StepCoefficients c;
  c.prediction = (int)k[0];
  c.x0_clip = (int)k[1];
  c.combine = (int)k[2];
  c.epsilon_from = (int)k[3];
  c.noise_term = (int)k[4];
  c.sqrt_alpha_prod = k[5];
  c.sqrt_beta_prod = k[6];
  c.clip_sample_range = k[7];
  c.dynamic_thresholding_ratio = k[8];
  c.sample_max_value = k[9];
  c.x0_coeff = k[10];
  c.other_coeff = k[11];
  c.noise_std = k[12];
  c.min_log = k[13];
  c.max_log = k[14];
  return c;
}
// Whether a step's layout fits its coefficients: a learned variance needs the
// model output's second half, a noise term needs noise.
inline bool step_layout_fits(const StepCoefficients& c, const StepLayout& l, bool has_noise) {
  if (!step_guidance_valid(l)) return false;
  if (l.batch_size < 1 || l.sample_size < 1 ||
      (l.model_output_stride != l.sample_size && l.model_output_stride != 2 * l.sample_size))
    return false;
  if ((c.noise_term == kNoiseLearnedVariance || c.noise_term == kNoiseLearnedRange) &&
      l.model_output_stride != 2 * l.sample_size)
    return false;
  return c.noise_term == kNoiseNone || has_noise;
}
size_t diffusion_step_scratch_floats(const StepCoefficients& c, const StepLayout& layout);
void diffusion_step(const StepCoefficients& c, const StepLayout& layout, const float* model_output, const float* sample,
                    const float* noise, float* prev_sample, float* pred_original_sample, float* scratch);
// The fused per-element step of the multistep and sigma-space solvers
// (DPM-Solver++, UniPC, Euler, Euler ancestral, Heun; the C++ twin of
// src/schedulers/solver_kernel.ts, which documents the slots). Per element,
// with m the model output, x the sample, L the kept sample (UniPC's last
// sample, Heun's first-stage sample), h0..h2 the previous converted outputs
// and z the noise:
//   conv = the converted model output (x0 or epsilon), clamped or thresholded
//   y    = corrector ? u_x x + u_l L + u_c conv + sum u_k h_k : x
//   out  = v_y y + v_l L + v_c conv + sum v_k h_k + v_z z
// Terms whose coefficient is exactly 0 are skipped (their input may be null).
enum SolverConvert {
  kConvertIdentity = 0,  // m
  kConvertSubDiv = 1,    // (x - p m) / q
  kConvertSub = 2,       // p x - q m
  kConvertAdd = 3,       // p m + q x
  kConvertAddDiv = 4,    // p m + x / q
};
struct SolverCoefficients {
  int convert, x0_clip, corrector;
  float p, q;
  float clip_sample_range, dynamic_thresholding_ratio, sample_max_value;
  float u_x, u_last, u_conv, u_h[3];
  float v_y, v_last, v_conv, v_h[3], v_noise;
};
constexpr int kSolverCoefficientSlots = 21;
inline SolverCoefficients solver_coefficients_from_slots(const float* k) {
  SolverCoefficients c;
  c.convert = (int)k[0];
  c.x0_clip = (int)k[1];
  c.p = k[2];
  c.q = k[3];
  c.clip_sample_range = k[4];
  c.dynamic_thresholding_ratio = k[5];
  c.sample_max_value = k[6];
  c.corrector = (int)k[7];
  c.u_x = k[8];
  c.u_last = k[9];
  c.u_conv = k[10];
  for (int i = 0; i < 3; ++i) c.u_h[i] = k[11 + i];
  c.v_y = k[14];
  c.v_last = k[15];
  c.v_conv = k[16];
  for (int i = 0; i < 3; ++i) c.v_h[i] = k[17 + i];
  c.v_noise = k[20];
  return c;
}
// The arrays of one solver step; inputs a coefficient does not use may be null.
struct SolverArrays {
  const float* model_output;  // [B, model_output_stride]
  const float* sample;        // x
  const float* last;          // L
  const float* history[3];    // h0..h2
  const float* noise;         // z
  float* prev_sample;         // out (may alias sample or last)
  float* converted;           // conv (required; must alias no input)
  float* last_out;            // y (optional; may alias sample or last)
};
// Whether the coefficients' inputs are present and the record is valid.
bool solver_step_fits(const SolverCoefficients& c, const StepLayout& layout, const SolverArrays& a);
size_t solver_step_scratch_floats(const SolverCoefficients& c, const StepLayout& layout);
void solver_step(const SolverCoefficients& c, const StepLayout& layout, const SolverArrays& a, float* scratch);
// x_t = sqrt(a_t) * x0 + sqrt(1 - a_t) * noise, with per-sample coefficients.
void add_noise(const float* x0, const float* noise, const float* sqrt_alpha_prod, const float* sqrt_one_minus_alpha_prod,
               int batch, int sample_size, float* out);
// The training loss and its gradient: per sample b, w_b * mean((out - target)^2)
// where out is the UNet output (NHWC, divided by t for fourier embeddings) and
// target the noise (epsilon), x0 (sample) or sa * noise - sb * x0 (v_prediction),
// both NCHW. Writes dy = d(mean over samples of the loss)/d(UNet output) (NHWC)
// and each sample's sum of squared errors into sample_sums[b] (double, summed
// pixel by pixel, channel by channel); the caller forms the loss from those.
enum DiffusionTarget { kTargetEpsilon = 0, kTargetSample = 1, kTargetV = 2 };
struct DiffusionLossArgs {
  int batch = 1, channels = 1, pixels = 1;
  int target = kTargetEpsilon;
  const float* x0 = nullptr;     // NCHW
  const float* noise = nullptr;  // NCHW
  const float* sqrt_alpha_prod = nullptr;            // [batch]
  const float* sqrt_one_minus_alpha_prod = nullptr;  // [batch]
  const float* loss_weights = nullptr;  // [batch], or null for 1
  const float* divisors = nullptr;      // [batch] timesteps when the output is divided by t (fourier), or null
};
void diffusion_loss(const float* out, const DiffusionLossArgs& a, float* dy, double* sample_sums);

// ---------------------------------------------------------------------------
// noise.cpp: standard normal noise from Philox4x32-10, bit-identical on every
// backend: n values of draw `draw` under `seed`, starting at element `offset`.
void randn_philox(uint64_t seed, uint64_t draw, uint64_t offset, long long n, float* out);
// y = dropout(x) with a Philox mask keyed by (seed, stream); also its own backward.
void dropout_apply(uint64_t seed, uint64_t stream, float p, const float* x, long long n, float* y);

// ---------------------------------------------------------------------------
// adamw.cpp: the optimizer's per-tensor updates (engine/train.cpp drives them).
// torch.optim.AdamW's single-tensor float32 order of operations:
//   w *= decay; m += (1 - beta1) (g - m); v = v beta2 + (1 - beta2) g g;
//   w += -step_size * m / (sqrt(v) / bc2_sqrt + eps), with g = grad * scale.
struct AdamwCoefs {
  float decay, one_minus_beta1, beta2, one_minus_beta2, step_size, bc2_sqrt, eps, scale;
};
void adamw_update(float* w, float* exp_avg, float* exp_avg_sq, const float* grad, size_t n, const AdamwCoefs& c);
// ema -= (1 - decay) (ema - w)
void ema_update(float* ema, const float* w, size_t n, float one_minus_decay);
// out[0] = sum of x[i]^2, accumulated in double in index order (a term of the global gradient norm).
void sum_squares(const float* x, size_t n, double* out);

// ---------------------------------------------------------------------------
// elementwise.cpp
void silu_forward(const float* x, long long n, float* y);
// dx += dy * silu'(x)
void silu_backward(const float* x, const float* dy, long long n, float* dx);
void add_forward(const float* a, const float* b, long long n, float* y);
// y = x / divisor (a block's output_scale_factor, in the backward)
void divide_scalar(const float* x, float divisor, long long n, float* y);
// dbias[b][c] += sum over pixels of dy[b][p][c]: the backward of adding a
// per-sample vector to every pixel (a resnet's time embedding), pixels in order.
void add_broadcast_backward(const float* dy, int batch, int pixels, int channels, float* dbias);
// x[0..n) = 0, in parallel (gradient buffers are large)
void zero_floats(float* x, size_t n);
// Any NaN or Inf in x? (input validation)
bool has_non_finite(const float* x, long long n);

}  // namespace mb
