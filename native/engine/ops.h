// The device seam: the op set the UNet graph walk (unet.cpp) calls, as a
// table of function pointers that each device fills once — native/cpu
// (cpu_ops.cpp, over the functions of cpu/ops.h) and native/cuda
// (ops_table.cu, over device pointers). The graph exists once; a model runs
// on the device whose table it holds (Model::ops).
//
// Pointers handed to these functions point into the device's own memory
// (what `alloc` returned, the arena, the parameters' `dev` copies) unless a
// parameter says "host". A plain struct of function pointers rather than a
// class with virtual functions: the wasm build has no C++ runtime.
//
// Errors: the CPU ops cannot fail once their memory exists. A device's ops
// may fail asynchronously (a kernel fault, a launch error): they record the
// first failure and `sync` reports it as a status with `error_message`.
#pragma once

#include "../cpu/ops.h"

namespace mb {

// Device failures (a launch error, a kernel fault, a lost device). The model
// stays usable for another try only if the device recovered.
constexpr int kErrDevice = 5;

// How a convolution runs (the ops' `algo` argument): directly, or, for 3x3
// stride-1 convs, by Winograd F(2x2, 3x3) with the transformed filters packed
// at load, or with the 3x3 weights packed and transformed per call (lean:
// sampling-only models in wasm, where the packed filters' extra 7/9 of the
// weights' memory would stay for good).
enum ConvAlgo : int { kConvDirect = 0, kConvWinograd = 1, kConvWinogradLean = 2 };
// Or-ed into `algo` for a model that may train (one that keeps its weights,
// not released while packing): a device whose data gradient reads a weight
// layout of its own (cuda's float16 / bfloat16 GEMMs: the weights transposed
// and flipped, conv2d_mma.cu) packs that too. Sampling-only models skip it.
constexpr int kConvTrainable = 8;
// Or-ed into a Winograd `algo`: F(4x4, 3x3) instead of F(2x2, 3x3) (a model
// set up for training, Model::winograd_tile). Devices without it ignore it.
constexpr int kConvTile4 = 16;
constexpr int kConvAlgoMask = 7;

struct Ops {
  const char* name;    // "cpu", "cuda"
  bool device_memory;  // buffers are not host-addressable: stage host data through upload/download

  // --- memory -------------------------------------------------------------
  void* (*alloc)(size_t bytes);  // null when out of memory
  void (*free)(void* ptr);
  // Bytes that `alloc` can still give (the device's free memory), or 0 when unknown.
  size_t (*available_bytes)();
  void (*upload)(void* dst, const void* host_src, size_t bytes);
  void (*download)(void* host_dst, const void* src, size_t bytes);
  void (*zero)(void* dst, size_t bytes);
  // Device to device (the EMA's first copy of the weights, the fused qkv bias).
  void (*copy)(void* dst, const void* src, size_t bytes);
  // Waits for queued work; kOk, or kErrDevice with the reason in error_message().
  int (*sync)();
  const char* (*error_message)();

  // --- convolution / linear (the GEMMs) ------------------------------------
  // Weights are packed into the device's own layout from torch-layout
  // sources (WeightSource) that are themselves in device memory (the
  // parameters' `dev` copies), so an optimizer step on the device repacks
  // without a round trip through the host; `storage` is device memory.
  // `algo` is a ConvAlgo (a device free to run any 3x3 conv its own way ignores it).
  size_t (*conv_packed_floats)(int cout, int cin, int k, int algo);
  void (*pack_conv)(PackedWeights* packed, float* storage, const WeightSource* sources, const int* source_couts,
                    int num_sources, int cin, int k, int algo);
  // Scratch a forward conv with this geometry needs (0: none).
  size_t (*conv_scratch_floats)(const ConvGeometry& g, int cout, int cin, int k, int algo);
  void (*conv2d_forward)(const float* in, const ConvGeometry& g, const PackedWeights& w, const ConvEpilogue& ep,
                         float* out, const float* zero_row, float* scratch);

  // --- normalisation, attention --------------------------------------------
  void (*group_norm_forward)(const float* x, const GroupNormArgs& a, float* y, float* stats);
  size_t (*attention_scratch_floats)(const AttentionArgs& a);
  void (*attention_forward)(const float* qkv, const AttentionArgs& a, float* out, float* scratch,
                            const float* zero_row);

  // --- layout, resampling ---------------------------------------------------
  void (*nchw_to_nhwc)(const float* x, int batch, int channels, int h, int w, float* y, float scale, float shift);
  void (*nhwc_to_nchw)(const float* x, int batch, int channels, int h, int w, float* y);
  void (*nhwc_to_nchw_div)(const float* x, int batch, int channels, int h, int w, const float* divisors, float* y);
  void (*upsample_nearest2x)(const float* x, int batch, int h, int w, int channels, float* y);
  void (*avgpool2x2)(const float* x, int batch, int h, int w, int channels, float* y);
  void (*concat_channels)(const float* a, int ca, const float* b, int cb, int pixels, float* y);

  // --- embeddings -----------------------------------------------------------
  void (*timestep_embedding)(const float* timesteps, int batch, int dim, bool flip_sin_to_cos, float freq_shift,
                             float* out);
  void (*fourier_embedding)(const float* timesteps, int batch, const float* weight, int n, float* out);
  // out[b] (+)= table[(int)index[b]]: the indices are floats in device memory
  // (timesteps, class labels), already validated as integers in range.
  void (*gather_rows)(const float* table, int dim, const float* index, int batch, float* out, bool accumulate);
  // Its backward: table[(int)index[b]] += rows[b], in order of b (indices may repeat).
  void (*scatter_add_rows)(float* table, int dim, const float* index, int batch, const float* rows);

  // --- elementwise, noise, the diffusion step --------------------------------
  void (*silu_forward)(const float* x, long long n, float* y);
  void (*add_forward)(const float* a, const float* b, long long n, float* y);
  void (*dropout_apply)(uint64_t seed, uint64_t stream, float p, const float* x, long long n, float* y);
  void (*randn_philox)(uint64_t seed, uint64_t draw, uint64_t offset, long long n, float* out);
  void (*add_noise)(const float* x0, const float* noise, const float* sqrt_alpha_prod,
                    const float* sqrt_one_minus_alpha_prod, int batch, int sample_size, float* out);
  // kOk, or kErrOutOfMemory (a host scratch for dynamic thresholding).
  int (*diffusion_step)(const StepCoefficients& c, const StepLayout& layout, const float* model_output,
                        const float* sample, const float* noise, float* prev_sample, float* pred_original_sample);

  // --- the training step, backward and the optimizer ----------------------------
  // Semantics as in cpu/ops.h (every backward op ADDS into its input
  // gradients unless it says otherwise). The backward walk (backward.cpp)
  // and the optimizer (train.cpp) call them through this table, over
  // gradients and optimizer state in the device's memory.
  void (*diffusion_loss)(const float* out, const DiffusionLossArgs& a, float* dy, double* sample_sums);
  void (*divide_scalar)(const float* x, float divisor, long long n, float* y);
  void (*add_broadcast_backward)(const float* dy, int batch, int pixels, int channels, float* dbias);
  size_t (*conv2d_backward_data_scratch_floats)(const ConvGeometry& g, int cout, int cin, int k, bool winograd);
  void (*conv2d_backward_data)(const float* dy, const ConvGeometry& g, const PackedWeights& w, float* dx,
                               float* scratch, const float* zero_row, bool accumulate);
  size_t (*conv2d_backward_weights_scratch_floats)(const ConvGeometry& g, int cout, int cin, int k);
  void (*conv2d_backward_weights)(const float* in, const ConvGeometry& g, const float* dy, int cout, int cin, int k,
                                  float* grad_w, float* grad_b, float* scratch, const float* zero_row);
  size_t (*group_norm_backward_scratch_floats)(const GroupNormArgs& a);
  void (*group_norm_backward)(const float* x, const GroupNormArgs& a, const float* stats, const float* dy, float* dx,
                              float* dgamma, float* dbeta, float* dscale_shift, float* scratch);
  size_t (*attention_backward_scratch_floats)(const AttentionArgs& a);
  void (*attention_backward)(const float* qkv, const AttentionArgs& a, const float* dout, float* dqkv, float* scratch);
  void (*upsample_nearest2x_backward)(const float* dy, int batch, int h, int w, int channels, float* dx, int dx_ld);
  void (*avgpool2x2_backward)(const float* dy, int batch, int h, int w, int channels, float* dx);
  void (*concat_channels_backward)(const float* dy, int ca, int cb, int pixels, float* da, float* db);
  void (*silu_backward)(const float* x, const float* dy, long long n, float* dx);
  void (*adamw_update)(float* w, float* exp_avg, float* exp_avg_sq, const float* grad, size_t n, const AdamwCoefs& c);
  void (*ema_update)(float* ema, const float* w, size_t n, float one_minus_decay);
  // out[0] = sum of x[i]^2 in double (out in device memory): the gradient norm's terms.
  void (*sum_squares)(const float* x, size_t n, double* out);

  // --- queues: one per model (a CUDA stream); null where a device has none ---
  // A model's calls may come from any thread (libuv's pool) and need not wait
  // for the device between them (the sampling loop), so its work goes to one
  // queue of its own: in order, and never into another model's recording.
  void* (*queue_new)();
  void (*queue_free)(void* queue);
  // This thread's ops go to `queue` from now on (null: the thread's default).
  void (*queue_use)(void* queue);

  // --- replaying a recorded pass (CUDA graphs); null where a device has none ---
  // Between capture_begin and capture_end the ops are recorded, not run; the
  // recording keeps every pointer and scalar argument as it was, so a replay
  // must find its inputs in the same buffers (the sampling loop of
  // engine/sampling.cpp writes each step's timesteps there first). kOk, or a
  // failure (the capture is abandoned; run the ops directly instead).
  int (*capture_begin)();
  int (*capture_end)(void** recording);
  int (*replay)(void* recording);
  void (*recording_free)(void* recording);
  // A failure recorded by an earlier op on this thread, reported (as sync
  // does) without waiting for the device: kOk when there is none.
  int (*poll)();

  // --- half activations (sampling); null where a device has none ------------
  // A float16 / bfloat16 model on cuda: at inference, a GroupNorm(+SiLU)
  // output that only a conv or linear layer reads (the resnets' two conv
  // inputs, the attention's qkv input, conv_out's) is written in the model's
  // half type (2 bytes an element, channels a multiple of 8), rounded as the
  // tensor-core GEMM would round it when reading floats, so the forward's
  // results are bit-identical and its memory traffic there halves.
  void (*group_norm_forward_half)(const float* x, const GroupNormArgs& a, void* y, float* stats);
  void (*conv2d_forward_half_input)(const void* in, const ConvGeometry& g, const PackedWeights& w,
                                    const ConvEpilogue& ep, float* out, const float* zero_row, float* scratch);

  // --- the multistep / sigma-space solver step (cpu/ops.h, SolverCoefficients) ---
  // kOk, or kErrOutOfMemory (a host scratch for dynamic thresholding). The
  // caller has checked solver_step_fits.
  int (*solver_step)(const SolverCoefficients& c, const StepLayout& layout, const SolverArrays& a);
};

// For the length of an engine call: the calling thread's ops go to the
// model's queue (see Ops::queue_use).
class QueueScope {
 public:
  QueueScope(const Ops* ops, void* queue) : ops_(ops && ops->queue_use && queue ? ops : nullptr) {
    if (ops_) ops_->queue_use(queue);
  }
  ~QueueScope() {
    if (ops_) ops_->queue_use(nullptr);
  }
  QueueScope(const QueueScope&) = delete;
  QueueScope& operator=(const QueueScope&) = delete;

 private:
  const Ops* ops_;
};

// The CPU table (native/cpu/cpu_ops.cpp): every build has it.
const Ops* cpu_ops();
// The CUDA table (native/cuda/ops_table.cu), or null in a build without CUDA
// or on a machine without a usable device (see native/cuda/cuda_api.h).
const Ops* cuda_ops();

}  // namespace mb
