// The sampling loop kept on the model's device: the sample, the model
// output, the noise and x0 live in device memory from the first step to the
// last, each step being the forward pass, the noise draw and the fused
// DDPM/DDIM step queued one after the other, with no wait for the device and
// no copy but each step's timestep going up. Only reading the result (or a
// preview of x0) waits.
//
// On a device that can record (CUDA graphs), the forward pass of the run's
// size is recorded once, at the second step (the first runs directly, so
// that whatever a first pass sets up happens outside the recording), and
// replayed from then on: the forward's few hundred launches become one. A
// recording holds the addresses of the arena, the packed weights and this
// run's buffers, so it is made again whenever the arena or the packing
// changed (another size was run meanwhile, or the weights were repacked).
//
// On the host (the cpu backend) the same loop runs in place: the results are
// those of calling forward and the step separately, with fewer copies.
//
// Classifier-free guidance (guidance_scale != 1): the forward runs at twice
// the batch, the sample copied into both halves of the model input and the
// class labels the conditional ones then the unconditional ones; the fused
// step reads the two halves of the output and combines them
// (StepLayout::guidance_scale), so the sample, the noise and the solvers'
// history keep the run's own batch.
#include "api.h"
#include "exec.h"

namespace mb {

struct SampleRun {
  Model* m;
  int batch, channels, height, width;
  float guidance_scale = 1.0f;  // 1: unguided
  int forward_batch;     // batch, or 2 * batch guided
  size_t sample_floats;  // batch * channels * height * width
  size_t input_floats;   // forward_batch * channels * height * width
  size_t output_floats;  // forward_batch * out_channels * height * width
  // Device buffers. x is updated in place by each step (the step reads each
  // element before writing it), so a recorded forward always reads it there.
  float* x = nullptr;
  float* model_output = nullptr;
  float* noise = nullptr;
  float* x0 = nullptr;
  float* timesteps = nullptr;  // forward_batch copies of the step's t
  float* class_cond = nullptr;
  int class_cond_len = 0;
  float* timesteps_host = nullptr;

  // The model input where it is not x: the sample scaled by 1 / sqrt(sigma^2
  // + 1) (the solvers), and/or twice over (guided). Allocated at begin when
  // guided, else at the first solver step.
  float* input = nullptr;
  // The solvers' state (mb_sample_solver_steps), allocated at their first
  // step: the converted outputs of the last three steps (hist[0] the newest),
  // the kept sample and the buffer the next converted output goes to.
  float* hist[3] = {nullptr, nullptr, nullptr};
  float* last = nullptr;
  float* converted = nullptr;
  int hist_count = 0;
  bool has_last = false;
  // What the forward reads: x (DDPM / DDIM) or input (the solvers).
  float* forward_in = nullptr;
  const float* recorded_input = nullptr;

  // The recorded forward and what it was recorded against.
  void* recording = nullptr;
  const float* recorded_arena = nullptr;
  unsigned recorded_packing = 0;
  bool recording_failed = false;  // the device refused: run directly from then on
  int direct_forwards = 0;
  int replays = 0;
};

namespace {

void free_run(SampleRun* r) {
  const Ops& ops = *r->m->ops;
  if (r->recording) ops.recording_free(r->recording);
  ops.free(r->x);
  ops.free(r->model_output);
  ops.free(r->noise);
  ops.free(r->x0);
  ops.free(r->timesteps);
  ops.free(r->class_cond);
  ops.free(r->input);
  for (float* h : r->hist) ops.free(h);
  ops.free(r->last);
  ops.free(r->converted);
  mb_free(r->timesteps_host);
  delete r;
}

// The forward pass's arena at the run's size (planned once; other sizes run
// meanwhile make it plan again).
int prepare_arena(SampleRun* r) {
  Model* m = r->m;
  if (r->forward_batch == m->planned_batch && r->height == m->planned_h && r->width == m->planned_w && !m->planned_training &&
      num_threads() == m->planned_threads)
    return kOk;
  size_t bytes = 0;
  int status = model_plan_bytes(m, r->forward_batch, r->height, r->width, &bytes);
  if (status == kOk) status = ensure_arena(m, r->forward_batch, r->height, r->width, false, bytes);
  return status;
}

// One forward pass from r->x, r->timesteps and r->class_cond into r->model_output.
int forward_pass(SampleRun* r) {
  Model* m = r->m;
  float* zero_row = begin_pass(m);
  Exec ex{m, &m->arena, false, r->forward_batch, zero_row, nullptr, false, 0, 0, kOk, Message()};
  run_forward(ex, r->height, r->width, r->forward_in, r->timesteps, r->class_cond, r->model_output);
  if (ex.status != kOk) return fail(m, ex.status, ex.error);
  return kOk;
}

int device_failure(Model* m, int status, const char* during) {
  Message msg;
  msg.add(m->ops->name).add(" error ").add(during).add(": ").add(m->ops->error_message());
  return fail(m, status, msg);
}

// The step's forward: replayed when a valid recording exists, recorded when
// the device records and one direct pass has run, else run directly.
int forward_step(SampleRun* r) {
  Model* m = r->m;
  const Ops& ops = *m->ops;
  int status = prepare_arena(r);
  if (status != kOk) return status;
  if (r->recording && (r->recorded_arena != m->arena.base || r->recorded_packing != m->pack_generation ||
                       r->recorded_input != r->forward_in)) {
    ops.recording_free(r->recording);
    r->recording = nullptr;
  }
  const bool can_record = ops.capture_begin && !m->capture_enabled && !r->recording_failed;
  if (!r->recording && can_record && r->direct_forwards > 0) {
    if (ops.capture_begin() == kOk) {
      const int pass = forward_pass(r);
      void* recording = nullptr;
      const int ended = ops.capture_end(&recording);
      if (pass != kOk) {  // a wrong argument: the same on the direct path
        if (recording) ops.recording_free(recording);
        return pass;
      }
      if (ended == kOk && recording) {
        r->recording = recording;
        r->recorded_arena = m->arena.base;
        r->recorded_packing = m->pack_generation;
        r->recorded_input = r->forward_in;
      } else {
        r->recording_failed = true;
      }
    } else {
      r->recording_failed = true;
    }
  }
  if (r->recording) {
    ++r->replays;
    return ops.replay(r->recording) == kOk ? kOk : device_failure(m, kErrDevice, "replaying the forward pass");
  }
  ++r->direct_forwards;
  return forward_pass(r);
}

// The step's model input: the sample divided by `divisor` (the solvers'
// input scaling; 1 for DDPM / DDIM, which copies exactly), written once, or
// twice over (both halves of the doubled batch) when guided.
void fill_input(SampleRun* r, float divisor) {
  const Ops& ops = *r->m->ops;
  for (int copy = 0; copy < (r->forward_batch == r->batch ? 1 : 2); ++copy)
    ops.divide_scalar(r->x, divisor, (long long)r->sample_floats, r->input + (size_t)copy * r->sample_floats);
}

// The step's timestep for every item the forward runs.
int upload_timestep(SampleRun* r, float t) {
  Model* m = r->m;
  for (int b = 0; b < r->forward_batch; ++b) r->timesteps_host[b] = t;
  const int status = check_timesteps(m, r->forward_batch, r->timesteps_host);
  if (status == kOk) m->ops->upload(r->timesteps, r->timesteps_host, (size_t)r->forward_batch * sizeof(float));
  return status;
}

StepLayout run_layout(const SampleRun* r) {
  StepLayout layout = {r->batch, (int)(r->sample_floats / r->batch), (int)(r->output_floats / r->forward_batch)};
  layout.guidance_scale = r->guidance_scale;
  return layout;
}

}  // namespace

}  // namespace mb

using mb::Model;
using mb::SampleRun;

MB_API SampleRun* mb_sample_begin(Model* m, int batch, int channels, int height, int width, const float* class_cond,
                                  int class_cond_len, float guidance_scale, int* status_out) {
  mb::QueueScope scope(m->ops, m->queue);
  *status_out = mb::kOk;
  const mb::Ops& ops = *m->ops;
  mb::StepLayout probe = {batch, 1, 1};
  probe.guidance_scale = guidance_scale;
  if (!mb::step_guidance_valid(probe)) {
    *status_out = mb::set_error(m, mb::kErrInvalidArgument, mb::Name("the guidance scale must be finite"));
    return nullptr;
  }
  const int forward_batch = guidance_scale != 1.0f ? 2 * batch : batch;
  // The forward's checks but the timesteps' (each step's are checked then).
  int status = mb::check_plan_size(m, forward_batch, height, width);
  if (status == mb::kOk)
    status = mb::check_forward_inputs(m, forward_batch, channels, nullptr, class_cond, class_cond_len);
  if (status != mb::kOk) {
    *status_out = status;
    return nullptr;
  }
  SampleRun* r = new SampleRun();
  r->m = m;
  r->batch = batch;
  r->forward_batch = forward_batch;
  r->guidance_scale = guidance_scale;
  r->channels = channels;
  r->height = height;
  r->width = width;
  r->sample_floats = (size_t)batch * channels * height * width;
  r->input_floats = (size_t)forward_batch * channels * height * width;
  r->output_floats = (size_t)forward_batch * m->out_channels * height * width;
  r->class_cond_len = class_cond_len;
  const size_t f = sizeof(float);
  r->x = static_cast<float*>(ops.alloc(r->sample_floats * f));
  r->forward_in = r->x;
  r->model_output = static_cast<float*>(ops.alloc(r->output_floats * f));
  r->noise = static_cast<float*>(ops.alloc(r->sample_floats * f));
  r->x0 = static_cast<float*>(ops.alloc(r->sample_floats * f));
  r->timesteps = static_cast<float*>(ops.alloc((size_t)forward_batch * f));
  r->timesteps_host = static_cast<float*>(mb::mb_alloc((size_t)forward_batch * f));
  if (class_cond_len > 0) r->class_cond = static_cast<float*>(ops.alloc((size_t)class_cond_len * f));
  const bool guided = forward_batch != batch;
  if (guided) r->input = static_cast<float*>(ops.alloc(r->input_floats * f));
  if (!r->x || !r->model_output || !r->noise || !r->x0 || !r->timesteps || !r->timesteps_host ||
      (class_cond_len > 0 && !r->class_cond) || (guided && !r->input)) {
    mb::free_run(r);
    mb::Message msg;
    msg.add("out of ").add(ops.name).add(" memory for the sampling buffers (batch ").add_int(batch).add(")");
    *status_out = mb::fail(m, mb::kErrOutOfMemory, msg);
    return nullptr;
  }
  if (class_cond_len > 0) ops.upload(r->class_cond, class_cond, (size_t)class_cond_len * f);
  status = mb::prepare_arena(r);
  if (status != mb::kOk) {
    mb::free_run(r);
    *status_out = status;
    return nullptr;
  }
  return r;
}

// The initial sample: from the host (`sample` not null), else draw `draw` of
// the Philox stream under `seed` on the device.
MB_API int mb_sample_init(SampleRun* r, const float* sample, uint32_t seed_lo, uint32_t seed_hi, uint32_t draw_lo,
                          uint32_t draw_hi) {
  Model* m = r->m;
  mb::QueueScope scope(m->ops, m->queue);
  const mb::Ops& ops = *m->ops;
  if (sample) {
    if (mb::has_non_finite(sample, (long long)r->sample_floats))
      return mb::set_error(m, mb::kErrInvalidArgument, mb::Name("sample contains NaN or Inf"));
    ops.upload(r->x, sample, r->sample_floats * sizeof(float));
  } else {
    ops.randn_philox(((uint64_t)seed_hi << 32) | seed_lo, ((uint64_t)draw_hi << 32) | draw_lo, 0,
                     (long long)r->sample_floats, r->x);
  }
  const int status = ops.poll();
  return status == mb::kOk ? status : mb::device_failure(m, status, "setting the initial sample");
}

// `count` steps. Step i: timestep timesteps[i], coefficients
// coefficients[15 i ...] (StepCoefficients' slots), noise (when the step adds
// any) from host_noise + i * sample_floats if given, else draw first_draw + i
// of the Philox stream under `seed`. x0_out (may be null) receives the last
// step's predicted x0, which waits for the device; otherwise nothing does.
MB_API int mb_sample_steps(SampleRun* r, int count, const float* timesteps, const float* coefficients,
                           uint32_t seed_lo, uint32_t seed_hi, double first_draw, const float* host_noise,
                           float* x0_out) {
  Model* m = r->m;
  mb::QueueScope scope(m->ops, m->queue);
  const mb::Ops& ops = *m->ops;
  const uint64_t seed = ((uint64_t)seed_hi << 32) | seed_lo;
  const mb::StepLayout layout = mb::run_layout(r);
  // DDPM / DDIM feed the sample itself to the model (twice over, guided)
  const bool guided = r->forward_batch != r->batch;
  r->forward_in = guided ? r->input : r->x;
  for (int i = 0; i < count; ++i) {
    const mb::StepCoefficients c = mb::step_coefficients_from_slots(coefficients + (size_t)i * mb::kStepCoefficientSlots);
    if (!mb::step_layout_fits(c, layout, true))
      return mb::set_error(m, mb::kErrInvalidArgument, mb::Name("step coefficients do not fit the model output"));
    int status = mb::upload_timestep(r, timesteps[i]);
    if (status != mb::kOk) return status;
    if (guided) mb::fill_input(r, 1.0f);
    status = mb::forward_step(r);
    if (status != mb::kOk) return status;
    const float* noise = nullptr;
    if (c.noise_term != mb::kNoiseNone) {
      if (host_noise)
        ops.upload(r->noise, host_noise + (size_t)i * r->sample_floats, r->sample_floats * sizeof(float));
      else
        ops.randn_philox(seed, (uint64_t)first_draw + (uint64_t)i, 0, (long long)r->sample_floats, r->noise);
      noise = r->noise;
    }
    status = ops.diffusion_step(c, layout, r->model_output, r->x, noise, r->x, r->x0);
    if (status != mb::kOk) return mb::set_error(m, status, mb::Name("out of memory in the scheduler step"));
  }
  if (x0_out) ops.download(x0_out, r->x0, r->sample_floats * sizeof(float));
  const int status = x0_out ? ops.sync() : ops.poll();
  return status == mb::kOk ? status : mb::device_failure(m, status, "in the sampling loop");
}

// `count` solver steps (DPM-Solver++, UniPC, Euler, Euler ancestral, Heun).
// Step i: the model input is the sample divided by input_scales[i] (1 where
// the solver does not scale it), the forward runs at timesteps[i], then the
// fused solver step with records[22 i ...]: SolverCoefficients' 21 slots and
// a keep-last flag (the step's corrected sample becomes the kept sample L).
// Its converted output becomes the newest history buffer. Noise, where the
// record's noise coefficient is not 0: host_noise + i * sample_floats if
// given, else Philox draw first_draw + i. x0_out (may be null) receives the
// last step's converted output (waits for the device).
MB_API int mb_sample_solver_steps(SampleRun* r, int count, const float* timesteps, const float* input_scales,
                                  const float* records, uint32_t seed_lo, uint32_t seed_hi, double first_draw,
                                  const float* host_noise, float* x0_out) {
  Model* m = r->m;
  mb::QueueScope scope(m->ops, m->queue);
  const mb::Ops& ops = *m->ops;
  if (!ops.solver_step) return mb::set_error(m, mb::kErrUnsupported, mb::Name("this device has no solver step"));
  const uint64_t seed = ((uint64_t)seed_hi << 32) | seed_lo;
  const size_t bytes = r->sample_floats * sizeof(float);
  if (!r->converted) {
    if (!r->input) r->input = static_cast<float*>(ops.alloc(r->input_floats * sizeof(float)));
    for (float*& h : r->hist) h = static_cast<float*>(ops.alloc(bytes));
    r->last = static_cast<float*>(ops.alloc(bytes));
    r->converted = static_cast<float*>(ops.alloc(bytes));
    if (!r->input || !r->hist[0] || !r->hist[1] || !r->hist[2] || !r->last || !r->converted) {
      mb::Message msg;
      msg.add("out of ").add(ops.name).add(" memory for the solver's buffers (batch ").add_int(r->batch).add(")");
      return mb::fail(m, mb::kErrOutOfMemory, msg);
    }
  }
  r->forward_in = r->input;
  const mb::StepLayout layout = mb::run_layout(r);
  for (int i = 0; i < count; ++i) {
    const float* rec = records + (size_t)i * (mb::kSolverCoefficientSlots + 1);
    const mb::SolverCoefficients c = mb::solver_coefficients_from_slots(rec);
    const bool keep_last = rec[mb::kSolverCoefficientSlots] != 0.0f;
    const float* noise = nullptr;
    if (c.v_noise != 0.0f) noise = r->noise;
    const mb::SolverArrays a = {r->model_output,
                                r->x,
                                r->has_last ? r->last : nullptr,
                                {r->hist_count > 0 ? r->hist[0] : nullptr, r->hist_count > 1 ? r->hist[1] : nullptr,
                                 r->hist_count > 2 ? r->hist[2] : nullptr},
                                noise,
                                r->x,
                                r->converted,
                                keep_last ? r->last : nullptr};
    if (!mb::solver_step_fits(c, layout, a))
      return mb::set_error(m, mb::kErrInvalidArgument,
                           mb::Name("solver step coefficients do not fit the model output or the steps so far"));
    int status = mb::upload_timestep(r, timesteps[i]);
    if (status != mb::kOk) return status;
    mb::fill_input(r, input_scales[i]);
    status = mb::forward_step(r);
    if (status != mb::kOk) return status;
    if (noise) {
      if (host_noise)
        ops.upload(r->noise, host_noise + (size_t)i * r->sample_floats, bytes);
      else
        ops.randn_philox(seed, (uint64_t)first_draw + (uint64_t)i, 0, (long long)r->sample_floats, r->noise);
    }
    status = ops.solver_step(c, layout, a);
    if (status != mb::kOk) return mb::set_error(m, status, mb::Name("out of memory in the solver step"));
    // The converted output becomes the newest history; the oldest buffer is reused next.
    float* oldest = r->hist[2];
    r->hist[2] = r->hist[1];
    r->hist[1] = r->hist[0];
    r->hist[0] = r->converted;
    r->converted = oldest;
    if (r->hist_count < 3) ++r->hist_count;
    if (keep_last) r->has_last = true;
  }
  if (x0_out && r->hist_count > 0) ops.download(x0_out, r->hist[0], bytes);
  const int status = x0_out ? ops.sync() : ops.poll();
  return status == mb::kOk ? status : mb::device_failure(m, status, "in the sampling loop");
}

// The current sample (waits for the device; reports any failure since).
MB_API int mb_sample_read(SampleRun* r, float* out) {
  Model* m = r->m;
  mb::QueueScope scope(m->ops, m->queue);
  m->ops->download(out, r->x, r->sample_floats * sizeof(float));
  const int status = m->ops->sync();
  return status == mb::kOk ? status : mb::device_failure(m, status, "in the sampling loop");
}

// How the forwards ran so far: replays of a recording (and direct passes).
MB_API int mb_sample_replays(SampleRun* r) { return r->replays; }
MB_API int mb_sample_direct_forwards(SampleRun* r) { return r->direct_forwards; }

MB_API void mb_sample_end(SampleRun* r) {
  if (!r) return;
  mb::QueueScope scope(r->m->ops, r->m->queue);
  r->m->ops->sync();  // nothing may still use the buffers
  mb::free_run(r);
}
