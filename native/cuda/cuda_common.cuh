// Shared by the CUDA op files: the stream every op is queued on, launch
// bookkeeping and the sticky error record that Ops::sync reports.
//
// Error model. Kernels are queued on the calling model's own stream (Ops
// queues: a model's calls come from whichever libuv worker runs them, and a
// sampling loop that does not wait between steps needs them in one queue to
// keep their order). Every launch is followed by cudaGetLastError; the first failure is
// recorded (thread-local) and later launches on this thread are skipped, so a
// bad launch never cascades. Ops::sync waits for the stream and returns
// kErrDevice with the recorded or reported reason; the engine turns it into
// a typed error and the process lives on. A kernel fault (illegal address)
// leaves the CUDA context unusable: the message says so.
#pragma once

#include <stddef.h>
#include <stdint.h>

#if defined(MB_CUDA_EMULATION)
// The kernels compiled as plain C++ and run on the CPU (native/cuda/emulation):
// a check of their index math that needs no GPU.
#include "emulation/cuda_emulation.h"
#define MB_LAUNCH(kernel, grid, block) ::mb_emu::launch((grid), (block), kernel, false)
#define MB_LAUNCH_SYNC(kernel, grid, block) ::mb_emu::launch((grid), (block), kernel, true)
#define MB_LAUNCH_SYNC_SHARED(kernel, grid, block, bytes) ::mb_emu::launch((grid), (block), kernel, true, (bytes))
#else
#include <cuda_runtime.h>
// kernel<<<grid, block, 0, stream>>> spelled so that the emulation can take it
// over; kernels that use __syncthreads or warp shuffles launch with
// MB_LAUNCH_SYNC (the emulation runs their threads as fibers).
#define MB_LAUNCH(kernel, grid, block) kernel<<<(grid), (block), 0, ::mb::cuda::stream()>>>
#define MB_LAUNCH_SYNC(kernel, grid, block) kernel<<<(grid), (block), 0, ::mb::cuda::stream()>>>
// ... with `bytes` of dynamic shared memory.
#define MB_LAUNCH_SYNC_SHARED(kernel, grid, block, bytes) kernel<<<(grid), (block), (bytes), ::mb::cuda::stream()>>>
#endif

#include "../engine/ops.h"
#include "half_bits.h"

namespace mb {
namespace cuda {

// The device chosen for this process (mb_model_use_cuda); every op sets it
// on the calling thread first, since libuv workers start on device 0.
void use_device_on_this_thread();
int current_device();
// The current device's multiprocessors (1 under the emulation): tile choices.
int multiprocessor_count();
// Hopper's warpgroup MMA for the half-type convolutions (conv2d_mma.cu):
// decided at device selection (MARBLE_CUDA_WGMMA=1 and sm_90a code for the
// device); the parity self-test switches it on and off (returns whether it is on).
void conv_wgmma_prepare();
bool conv_wgmma_set(bool on);
bool conv_wgmma_enabled();
// The parity self-test: the half-type GEMMs' large tiles whatever the tile count.
void conv_force_large_tiles(bool on);

// True when an earlier failure on this thread means nothing more should run.
bool failed();
// Records `what` failed with `err` (the first failure wins); returns false.
bool record(cudaError_t err, const char* what);
// cudaGetLastError after a launch; false (and recorded) on failure.
bool check_launch(const char* kernel);
// Clears the thread's record (a new pass starts; sticky context errors persist in CUDA itself).
void clear_error();
int sync_stream();
const char* error_text();
// Ops::poll: a failure recorded on this thread, reported without waiting.
int poll();
// Stream capture into a CUDA graph and its replay (Ops::capture_begin ...).
int capture_begin();
int capture_end(void** recording);
int replay(void* recording);
void recording_free(void* recording);

// The stream this thread's ops go to: the model's (queue_use), else the
// thread's default stream.
cudaStream_t stream();
void* queue_new();
void queue_free(void* queue);
void queue_use(void* queue);

// Threads per block for the elementwise kernels, and a grid that covers n
// items with a grid-stride loop (the x dimension takes up to 2^31 - 1 blocks;
// capping keeps the launch small and the loop does the rest).
constexpr int kThreads = 256;
inline unsigned grid_for(size_t n, int threads = kThreads) {
  size_t blocks = (n + (size_t)threads - 1) / (size_t)threads;
  if (blocks < 1) blocks = 1;
  const size_t cap = (size_t)1 << 20;
  return (unsigned)(blocks < cap ? blocks : cap);
}

// Must run before a launch: false when an earlier failure means skip it.
inline bool begin_launch() {
  if (failed()) return false;
  use_device_on_this_thread();
  return true;
}

// Memory (device.cu). Allocation failures return null (the caller reports
// out of memory); copies and fills are queued on stream(); download waits.
// copy is device to device.
void* device_alloc(size_t bytes);
void device_free(void* p);
size_t device_available();
void upload(void* dst, const void* host_src, size_t bytes);
void download(void* host_dst, const void* src, size_t bytes);
void zero(void* dst, size_t bytes);
void copy(void* dst, const void* src, size_t bytes);
int device_count(char* reason, int reason_len);
int select_device(int device, char* reason, int reason_len);

#define MB_GRID_STRIDE(i, n) \
  for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < (size_t)(n); i += (size_t)gridDim.x * blockDim.x)

// The entries of each op family, called by the Ops table (ops_table.cu).
// conv2d.cu
size_t conv_packed_floats(int cout, int cin, int k, int algo);
void pack_conv(PackedWeights* packed, float* storage, const WeightSource* sources, const int* couts, int num_sources,
               int cin, int k, int algo);
size_t conv_scratch_floats(const ConvGeometry& g, int cout, int cin, int k, int algo);
size_t conv_scratch_floats_half(const ConvGeometry& g, int cout, int cin, int k, int algo);
void conv2d_forward(const float* in, const ConvGeometry& g, const PackedWeights& w, const ConvEpilogue& ep, float* out,
                    const float* zero_row, float* scratch);
size_t conv2d_backward_data_scratch_floats(const ConvGeometry& g, int cout, int cin, int k, bool winograd);
void conv2d_backward_data(const float* dy, const ConvGeometry& g, const PackedWeights& w, float* dx, float* scratch,
                          const float* zero_row, bool accumulate);
size_t conv2d_backward_weights_scratch_floats(const ConvGeometry& g, int cout, int cin, int k);
void conv2d_backward_weights(const float* in, const ConvGeometry& g, const float* dy, int cout, int cin, int k,
                             float* grad_w, float* grad_b, float* scratch, const float* zero_row);
// A batched GEMM with arbitrary strides (attention.cu uses it): for z in [0, batches),
// C_z[i][j] = alpha * sum_k A_z(i, k) B_z(k, j), where batch z's base offsets are
// (z / inner) * outer_stride + (z % inner) * inner_stride for A, B and C alike.
struct BatchedGemm {
  const float* a;
  long long a_i, a_k, a_outer, a_inner;
  const float* b;
  long long b_k, b_j, b_outer, b_inner;
  float* c;
  long long c_i, c_outer, c_inner;  // C(i, j) at c + c_i * i + j
  int m, n, k, batches, inner;
};
void batched_gemm(const BatchedGemm& g);
// conv2d_mma.cu: the forward and the data gradient on tensor cores, weights packed as float16 or
// bfloat16 (the Ops tables of models loaded with that dtype, ops_table.cu).
size_t conv_packed_floats_half(int cout, int cin, int k, int algo);
void pack_conv_f16(PackedWeights* packed, float* storage, const WeightSource* sources, const int* couts,
                   int num_sources, int cin, int k, int algo);
void pack_conv_bf16(PackedWeights* packed, float* storage, const WeightSource* sources, const int* couts,
                    int num_sources, int cin, int k, int algo);
void conv2d_forward_f16(const float* in, const ConvGeometry& g, const PackedWeights& w, const ConvEpilogue& ep,
                        float* out, const float* zero_row, float* scratch);
void conv2d_forward_bf16(const float* in, const ConvGeometry& g, const PackedWeights& w, const ConvEpilogue& ep,
                         float* out, const float* zero_row, float* scratch);
// Half activations: the input already in the half type (a GroupNorm's half
// output); cin a multiple of 8, rows (in_ld) too, 16-byte aligned.
inline bool half_input_ok(const ConvGeometry& g, int cin, const void* in) {
  return cin % 8 == 0 && g.in_ld % 8 == 0 && ((uintptr_t)in & 15) == 0;
}
void conv2d_forward_half_input_f16(const void* in, const ConvGeometry& g, const PackedWeights& w,
                                   const ConvEpilogue& ep, float* out, const float* zero_row, float* scratch);
void conv2d_forward_half_input_bf16(const void* in, const ConvGeometry& g, const PackedWeights& w,
                                    const ConvEpilogue& ep, float* out, const float* zero_row, float* scratch);
// The backward of both half types' models, in bfloat16 (conv2d_mma.cu says why), on tensor cores:
// dW and db with dY and the input rounded (conv2d.cu, conv2d_mma.cu);
void conv2d_backward_weights_bf16(const float* in, const ConvGeometry& g, const float* dy, int cout, int cin, int k,
                                  float* grad_w, float* grad_b, float* scratch, const float* zero_row);
// dX from the data-gradient layout a trainable model packs (kConvTrainable).
void conv2d_backward_data_bf16(const float* dy, const ConvGeometry& g, const PackedWeights& w, float* dx,
                               float* scratch, const float* zero_row, bool accumulate);
// groupnorm.cu
void group_norm_forward(const float* x, const GroupNormArgs& a, float* y, float* stats);
// The output rounded to float16 / bfloat16 (half activations; channels even).
void group_norm_forward_f16(const float* x, const GroupNormArgs& a, void* y, float* stats);
void group_norm_forward_bf16(const float* x, const GroupNormArgs& a, void* y, float* stats);
size_t group_norm_backward_scratch_floats(const GroupNormArgs& a);
void group_norm_backward(const float* x, const GroupNormArgs& a, const float* stats, const float* dy, float* dx,
                         float* dgamma, float* dbeta, float* dscale_shift, float* scratch);
// attention.cu
size_t attention_scratch_floats(const AttentionArgs& a);
void attention_forward(const float* qkv, const AttentionArgs& a, float* out, float* scratch, const float* zero_row);
size_t attention_backward_scratch_floats(const AttentionArgs& a);
void attention_backward(const float* qkv, const AttentionArgs& a, const float* dout, float* dqkv, float* scratch);
// resample.cu
void nchw_to_nhwc(const float* x, int batch, int channels, int h, int w, float* y, float scale, float shift);
void nhwc_to_nchw(const float* x, int batch, int channels, int h, int w, float* y);
void nhwc_to_nchw_div(const float* x, int batch, int channels, int h, int w, const float* divisors, float* y);
void upsample_nearest2x(const float* x, int batch, int h, int w, int channels, float* y);
void avgpool2x2(const float* x, int batch, int h, int w, int channels, float* y);
void concat_channels(const float* a, int ca, const float* b, int cb, int pixels, float* y);
void upsample_nearest2x_backward(const float* dy, int batch, int h, int w, int channels, float* dx, int dx_ld);
void avgpool2x2_backward(const float* dy, int batch, int h, int w, int channels, float* dx);
void concat_channels_backward(const float* dy, int ca, int cb, int pixels, float* da, float* db);
// embed.cu
void timestep_embedding(const float* timesteps, int batch, int dim, bool flip_sin_to_cos, float freq_shift, float* out);
void fourier_embedding(const float* timesteps, int batch, const float* weight, int n, float* out);
void gather_rows(const float* table, int dim, const float* index, int batch, float* out, bool accumulate);
void scatter_add_rows(float* table, int dim, const float* index, int batch, const float* rows);
// elementwise.cu
void silu_forward(const float* x, long long n, float* y);
void add_forward(const float* a, const float* b, long long n, float* y);
void silu_backward(const float* x, const float* dy, long long n, float* dx);
void divide_scalar(const float* x, float divisor, long long n, float* y);
void add_broadcast_backward(const float* dy, int batch, int pixels, int channels, float* dbias);
// adamw.cu
void adamw_update(float* w, float* exp_avg, float* exp_avg_sq, const float* grad, size_t n, const AdamwCoefs& c);
void ema_update(float* ema, const float* w, size_t n, float one_minus_decay);
void sum_squares(const float* x, size_t n, double* out);
// noise.cu
void randn_philox(uint64_t seed, uint64_t draw, uint64_t offset, long long n, float* out);
void dropout_apply(uint64_t seed, uint64_t stream, float p, const float* x, long long n, float* y);
// diffusion_step.cu
void add_noise(const float* x0, const float* noise, const float* sqrt_alpha_prod, const float* sqrt_one_minus_alpha_prod,
               int batch, int sample_size, float* out);
int diffusion_step(const StepCoefficients& c, const StepLayout& layout, const float* model_output, const float* sample,
                   const float* noise, float* prev_sample, float* pred_original_sample);
void diffusion_loss(const float* out, const DiffusionLossArgs& a, float* dy, double* sample_sums);
int solver_step(const SolverCoefficients& c, const StepLayout& layout, const SolverArrays& a);

}  // namespace cuda

// The CUDA Ops table for weights of type `t` (ops_table.cu): float32 is the
// fp32 table; float16 / bfloat16 differ in the conv/linear entries, and have
// half activations (engine/ops.h) unless `half_activations` is false.
const Ops* cuda_ops_table(WeightType t, bool half_activations = true);
// Whether models get half activations: yes, unless the environment has
// MARBLE_CUDA_HALF_ACTIVATIONS=0 (read when a model chooses its device).
bool cuda_half_activations_wanted();

}  // namespace mb
