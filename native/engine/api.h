// The engine's C ABI: the one surface both the Node addon (native/node) and
// the wasm module (wasm/) expose. Status codes are mb::Status; on failure the
// message is in mb_model_error().
#pragma once

#include <stddef.h>
#include <stdint.h>

#if defined(__wasm__)
#define MB_API extern "C" __attribute__((visibility("default")))
#else
#define MB_API extern "C" __attribute__((visibility("default")))
#endif

namespace mb {
struct Model;
}

MB_API mb::Model* mb_model_new(void);
MB_API int mb_model_init(mb::Model* m, const double* config, int config_len);
MB_API const char* mb_model_error(mb::Model* m);
MB_API int mb_model_param_count(mb::Model* m);
MB_API const char* mb_model_param_name(mb::Model* m, int index);
MB_API int mb_model_param_ndim(mb::Model* m, int index);
MB_API int mb_model_param_dim(mb::Model* m, int index, int axis);
MB_API float* mb_model_param_data(mb::Model* m, int index);
MB_API int mb_model_finalize(mb::Model* m);
// Arena bytes a forward at this size needs, or -(status) when it cannot be planned.
MB_API double mb_model_plan_bytes(mb::Model* m, int batch, int height, int width);
MB_API void mb_model_set_memory_limit(mb::Model* m, double bytes);
MB_API int mb_model_forward(mb::Model* m, int batch, int channels, int height, int width, const float* sample_nchw,
                            const float* timesteps, const float* class_cond, int class_cond_len, float* out_nchw);
MB_API void mb_model_set_capture(mb::Model* m, int enabled);
MB_API int mb_model_capture_count(mb::Model* m);
MB_API const char* mb_model_capture_name(mb::Model* m, int index);
MB_API int mb_model_capture_ndim(mb::Model* m, int index);
MB_API int mb_model_capture_dim(mb::Model* m, int index, int axis);
MB_API const float* mb_model_capture_data(mb::Model* m, int index);
MB_API void mb_model_delete(mb::Model* m);

// Training (native/engine/train.cpp), on the model's device. Tensor kinds:
// 0 param, 1 grad, 2 exp_avg, 3 exp_avg_sq, 4 ema. Device failures are
// kErrDevice with the message in mb_model_error().
MB_API int mb_model_train_init(mb::Model* m, int ema);
MB_API int mb_model_train_step(mb::Model* m, int batch, int channels, int height, int width, const float* x0,
                               const float* noise, const float* timesteps, const float* sqrt_alpha_prod,
                               const float* sqrt_one_minus_alpha_prod, const float* class_cond, int class_cond_len,
                               int target, const float* loss_weights, double dropout_seed, float* loss_out);
MB_API int mb_model_zero_grad(mb::Model* m);
// The global gradient norm, or -1 on a device failure.
MB_API double mb_model_grad_norm(mb::Model* m);
MB_API int mb_model_adamw_step(mb::Model* m, double lr, double beta1, double beta2, double eps, double weight_decay,
                               double step, double grad_scale);
MB_API int mb_model_ema_update(mb::Model* m, double decay);
// Op profiling (native builds only: native/engine/profile.cpp). Families in
// the order of PROFILE_FAMILIES (src/core/backend/backend.ts).
MB_API int mb_model_profile_start(mb::Model* m);
MB_API int mb_model_profile_read(mb::Model* m, double* out, int count);
MB_API void mb_model_profile_stop(mb::Model* m);
// A host pointer to a tensor (null until allocated): host-memory devices
// only (cpu, wasm); a device model gives its parameters' host copies (brought
// up to date) and null for the training state.
MB_API float* mb_model_tensor_data(mb::Model* m, int index, int kind);
// Copies one tensor to or from host memory, on any device (numel floats).
MB_API int mb_model_read_tensor(mb::Model* m, int index, int kind, float* out);
MB_API int mb_model_write_tensor(mb::Model* m, int index, int kind, const float* data);
MB_API int mb_model_repack(mb::Model* m);
// Frees the unpacked copies of the conv/linear weights once packed (a model
// that only samples needs the packed ones): returns the bytes freed, or
// -(status) on error. Afterwards train_init and repack are refused and those
// params' data pointers are null; mb_model_weights_released tells why.
MB_API double mb_model_release_host_weights(mb::Model* m);
MB_API int mb_model_weights_released(mb::Model* m);

// The sampling loop on the model's device (native/engine/sampling.cpp): the
// sample, model output and noise stay there between steps. begin returns
// null with *status_out set (message in mb_model_error) on failure; one run
// per model at a time, ended before the model is deleted.
namespace mb {
struct SampleRun;
}
// guidance_scale 1: unguided. Otherwise classifier-free guidance: each
// forward runs the sample twice in one batch of 2 * batch, with class_cond
// (2 * batch labels) the conditional labels then the unconditional ones, and
// the step combines the two passes (StepLayout::guidance_scale).
MB_API mb::SampleRun* mb_sample_begin(mb::Model* m, int batch, int channels, int height, int width,
                                      const float* class_cond, int class_cond_len, float guidance_scale,
                                      int* status_out);
MB_API int mb_sample_init(mb::SampleRun* r, const float* sample, uint32_t seed_lo, uint32_t seed_hi, uint32_t draw_lo,
                          uint32_t draw_hi);
MB_API int mb_sample_steps(mb::SampleRun* r, int count, const float* timesteps, const float* coefficients,
                           uint32_t seed_lo, uint32_t seed_hi, double first_draw, const float* host_noise,
                           float* x0_out);
// The solvers' steps (see sampling.cpp): records hold 22 floats a step.
MB_API int mb_sample_solver_steps(mb::SampleRun* r, int count, const float* timesteps, const float* input_scales,
                                  const float* records, uint32_t seed_lo, uint32_t seed_hi, double first_draw,
                                  const float* host_noise, float* x0_out);
MB_API int mb_sample_read(mb::SampleRun* r, float* out);
MB_API int mb_sample_replays(mb::SampleRun* r);
MB_API int mb_sample_direct_forwards(mb::SampleRun* r);
MB_API void mb_sample_end(mb::SampleRun* r);

MB_API int mb_get_threads(void);
MB_API void mb_set_threads(int n);
// The GEMM micro-kernel in use ("avx512", "avx2", "generic"); select before loading models.
MB_API const char* mb_isa(void);
MB_API const char* mb_select_isa(const char* wanted);
// Winograd's output tile for models set up for training from now on: 4
// (F(4x4, 3x3), the default) or 2 (F(2x2, 3x3), what inference always uses:
// fewer multiplies saved, nearer the direct convolution's bits); other values
// change nothing. Returns the tile in effect.
MB_API int mb_select_training_winograd_tile(int tile);
MB_API int mb_has_non_finite(const float* x, double n);
// Peak float32 throughput micro-benchmark (native/cpu/peak.cpp): isa 0 generic,
// 1 avx2, 2 avx512; `tasks` tasks of `iterations` rounds on the thread pool.
// Returns the float operations done (0 if the ISA is unavailable); the caller times it.
MB_API double mb_peak_fma(int isa, int tasks, double iterations);

// Philox noise (native/cpu/noise.cpp): n standard normals of draw `draw` under
// `seed`, from element `offset`. 64-bit values travel as (lo, hi) 32-bit halves.
MB_API void mb_randn_philox(uint32_t seed_lo, uint32_t seed_hi, uint32_t draw_lo, uint32_t draw_hi, double offset,
                            double n, float* out);
// torch.randn(n >= 16) on CPU from an mt19937 state (native/cpu/torch_normal.cpp,
// the Node addon only): advances the 624 words `mt` from `index` as torch's
// generator would, writes n normals and returns the new index (-1: bad arguments).
MB_API int mb_torch_normal_fill(uint32_t* mt, int index, float* out, double n);
// The fused DDPM/DDIM step (native/cpu/diffusion_step.cpp): `coefficients` holds
// the 15 StepCoefficients slots as floats. `noise` may be null when the step
// adds none. guidance_scale: 1 unguided; otherwise model_output holds the
// conditional then the unconditional pass's batch (2 * batch items) and the
// step uses uncond + guidance_scale * (cond - uncond) (StepLayout, ops.h).
// Returns a status; writes prev_sample and pred_original_sample.
MB_API int mb_diffusion_step(const float* coefficients, int batch, int sample_size, int model_output_stride,
                             float guidance_scale,
                             const float* model_output, const float* sample, const float* noise, float* prev_sample,
                             float* pred_original_sample);
// The fused multistep / sigma-space solver step (native/cpu/diffusion_step.cpp,
// SolverCoefficients in native/cpu/ops.h): `coefficients` holds its 21 slots.
// guidance_scale as for mb_diffusion_step. Inputs whose coefficients are 0 may be null; `converted` receives the
// converted model output, `last_out` (optional) the corrected sample.
MB_API int mb_solver_step(const float* coefficients, int batch, int sample_size, int model_output_stride,
                          float guidance_scale,
                          const float* model_output, const float* sample, const float* last, const float* h0,
                          const float* h1, const float* h2, const float* noise, float* prev_sample, float* converted,
                          float* last_out);
MB_API void mb_add_noise(const float* x0, const float* noise, const float* sqrt_alpha_prod,
                         const float* sqrt_one_minus_alpha_prod, int batch, int sample_size, float* out);

// One raw Philox4x32-10 block, for known-answer tests.
MB_API void mb_philox4x32_10(uint32_t c0, uint32_t c1, uint32_t c2, uint32_t c3, uint32_t k0, uint32_t k1,
                             uint32_t* out4);
