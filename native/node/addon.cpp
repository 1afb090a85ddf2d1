// The Node-API binding: a thin wrapper over the engine's C ABI. Forward passes
// run on the libuv thread pool (Napi::AsyncWorker) so the event loop stays
// free; inputs are copied before the worker starts, so JS may reuse its
// arrays at once. Errors carry the engine's status in `status`.
#include <napi.h>

#include <atomic>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "../cuda/cuda_api.h"
#include "../engine/api.h"
#ifdef MB_DEV_HOOKS
#include "dev_hooks.h"
#endif

namespace {

Napi::Error engine_error(Napi::Env env, int status, const std::string& message) {
  Napi::Error e = Napi::Error::New(env, message);
  e.Set("status", Napi::Number::New(env, status));
  return e;
}

std::vector<float> copy_f32(const Napi::Value& v) {
  if (!v.IsTypedArray()) return {};
  Napi::Float32Array a = v.As<Napi::Float32Array>();
  return std::vector<float>(a.Data(), a.Data() + a.ElementLength());
}

class ModelWrap : public Napi::ObjectWrap<ModelWrap> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "Model",
                       {
                           InstanceMethod("paramTable", &ModelWrap::ParamTable),
                           InstanceMethod("setParam", &ModelWrap::SetParam),
                           InstanceMethod("finalize", &ModelWrap::Finalize),
                           InstanceMethod("planBytes", &ModelWrap::PlanBytes),
                           InstanceMethod("setMemoryLimit", &ModelWrap::SetMemoryLimit),
                           InstanceMethod("forward", &ModelWrap::Forward),
                           InstanceMethod("setCapture", &ModelWrap::SetCapture),
                           InstanceMethod("captures", &ModelWrap::Captures),
                           InstanceMethod("dispose", &ModelWrap::Dispose),
                           InstanceMethod("trainInit", &ModelWrap::TrainInit),
                           InstanceMethod("trainStep", &ModelWrap::TrainStep),
                           InstanceMethod("zeroGrad", &ModelWrap::ZeroGrad),
                           InstanceMethod("gradNorm", &ModelWrap::GradNorm),
                           InstanceMethod("adamwStep", &ModelWrap::AdamwStep),
                           InstanceMethod("emaUpdate", &ModelWrap::EmaUpdate),
                           InstanceMethod("profileStart", &ModelWrap::ProfileStart),
                           InstanceMethod("profileRead", &ModelWrap::ProfileRead),
                           InstanceMethod("profileStop", &ModelWrap::ProfileStop),
                           InstanceMethod("readTensor", &ModelWrap::ReadTensor),
                           InstanceMethod("writeTensor", &ModelWrap::WriteTensor),
                           InstanceMethod("repack", &ModelWrap::Repack),
                           InstanceMethod("releaseHostWeights", &ModelWrap::ReleaseHostWeights),
                           InstanceMethod("useCuda", &ModelWrap::UseCuda),
                           InstanceMethod("device", &ModelWrap::Device),
                           InstanceMethod("sampleBegin", &ModelWrap::SampleBegin),
                           InstanceMethod("sampleInit", &ModelWrap::SampleInit),
                           InstanceMethod("sampleSteps", &ModelWrap::SampleSteps),
                           InstanceMethod("sampleSolverSteps", &ModelWrap::SampleSolverSteps),
                           InstanceMethod("sampleRead", &ModelWrap::SampleRead),
                           InstanceMethod("sampleStats", &ModelWrap::SampleStats),
                           InstanceMethod("sampleEnd", &ModelWrap::SampleEnd),
                       });
  }

  ModelWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<ModelWrap>(info) {
    Napi::Env env = info.Env();
    if (info.Length() < 1 || !info[0].IsTypedArray() ||
        info[0].As<Napi::TypedArray>().TypedArrayType() != napi_float64_array) {
      Napi::TypeError::New(env, "Model(config: Float64Array)").ThrowAsJavaScriptException();
      return;
    }
    Napi::Float64Array cfg = info[0].As<Napi::Float64Array>();
    model_ = mb_model_new();
    int status = mb_model_init(model_, cfg.Data(), (int)cfg.ElementLength());
    if (status != 0) {
      std::string message = mb_model_error(model_);
      mb_model_delete(model_);
      model_ = nullptr;
      engine_error(env, status, message).ThrowAsJavaScriptException();
    }
  }

  ~ModelWrap() override {
    EndRun();
    if (model_) mb_model_profile_stop(model_);
    if (model_) mb_model_delete(model_);
  }

  mb::Model* model() const { return model_; }
  mb::SampleRun* run() const { return run_; }
  std::atomic<bool> busy{false};

 private:
  bool Alive(Napi::Env env) {
    if (!model_) {
      engine_error(env, 4, "the model has been disposed").ThrowAsJavaScriptException();
      return false;
    }
    if (busy.load()) {
      engine_error(env, 4, "a forward pass is already running on this model").ThrowAsJavaScriptException();
      return false;
    }
    return true;
  }

  Napi::Value ParamTable(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!Alive(env)) return env.Undefined();
    int n = mb_model_param_count(model_);
    Napi::Array table = Napi::Array::New(env, n);
    for (int i = 0; i < n; ++i) {
      Napi::Object entry = Napi::Object::New(env);
      entry.Set("name", mb_model_param_name(model_, i));
      int ndim = mb_model_param_ndim(model_, i);
      Napi::Array shape = Napi::Array::New(env, ndim);
      for (int d = 0; d < ndim; ++d) shape.Set(d, mb_model_param_dim(model_, i, d));
      entry.Set("shape", shape);
      table.Set(i, entry);
    }
    return table;
  }

  Napi::Value SetParam(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!Alive(env)) return env.Undefined();
    int index = info[0].As<Napi::Number>().Int32Value();
    Napi::Float32Array data = info[1].As<Napi::Float32Array>();
    if (index < 0 || index >= mb_model_param_count(model_)) {
      Napi::RangeError::New(env, "parameter index out of range").ThrowAsJavaScriptException();
      return env.Undefined();
    }
    size_t numel = 1;
    for (int d = 0; d < mb_model_param_ndim(model_, index); ++d) numel *= (size_t)mb_model_param_dim(model_, index, d);
    if (data.ElementLength() != numel) {
      Napi::RangeError::New(env, "parameter size mismatch").ThrowAsJavaScriptException();
      return env.Undefined();
    }
    float* dst = mb_model_param_data(model_, index);
    if (!dst) {
      engine_error(env, 4, "this weight was released after packing to save memory: the model can only sample")
          .ThrowAsJavaScriptException();
      return env.Undefined();
    }
    std::memcpy(dst, data.Data(), numel * sizeof(float));
    return env.Undefined();
  }

  Napi::Value Finalize(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!Alive(env)) return env.Undefined();
    int status = mb_model_finalize(model_);
    if (status != 0) engine_error(env, status, mb_model_error(model_)).ThrowAsJavaScriptException();
    return env.Undefined();
  }

  Napi::Value PlanBytes(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!Alive(env)) return env.Undefined();
    double bytes = mb_model_plan_bytes(model_, info[0].As<Napi::Number>().Int32Value(),
                                       info[1].As<Napi::Number>().Int32Value(), info[2].As<Napi::Number>().Int32Value());
    if (bytes < 0) {
      engine_error(env, (int)-bytes, mb_model_error(model_)).ThrowAsJavaScriptException();
      return env.Undefined();
    }
    return Napi::Number::New(env, bytes);
  }

  Napi::Value SetMemoryLimit(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!Alive(env)) return env.Undefined();
    mb_model_set_memory_limit(model_, info[0].As<Napi::Number>().DoubleValue());
    return env.Undefined();
  }

  Napi::Value Forward(const Napi::CallbackInfo& info);

  Napi::Value SetCapture(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!Alive(env)) return env.Undefined();
    mb_model_set_capture(model_, info[0].ToBoolean().Value() ? 1 : 0);
    return env.Undefined();
  }

  Napi::Value Captures(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!Alive(env)) return env.Undefined();
    int n = mb_model_capture_count(model_);
    Napi::Array list = Napi::Array::New(env, n);
    for (int i = 0; i < n; ++i) {
      Napi::Object entry = Napi::Object::New(env);
      entry.Set("name", mb_model_capture_name(model_, i));
      int ndim = mb_model_capture_ndim(model_, i);
      Napi::Array shape = Napi::Array::New(env, ndim);
      size_t numel = 1;
      for (int d = 0; d < ndim; ++d) {
        int dim = mb_model_capture_dim(model_, i, d);
        shape.Set(d, dim);
        numel *= (size_t)dim;
      }
      entry.Set("shape", shape);
      Napi::Float32Array data = Napi::Float32Array::New(env, numel);
      std::memcpy(data.Data(), mb_model_capture_data(model_, i), numel * sizeof(float));
      entry.Set("data", data);
      list.Set(i, entry);
    }
    return list;
  }

  Napi::Value Dispose(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (busy.load()) {
      engine_error(env, 4, "cannot dispose while a forward pass is running").ThrowAsJavaScriptException();
      return env.Undefined();
    }
    EndRun();
    if (model_) mb_model_profile_stop(model_);
    if (model_) mb_model_delete(model_);
    model_ = nullptr;
    return env.Undefined();
  }

  // --- the sampling loop on the model's device (engine/sampling.cpp) ---
  void EndRun() {
    if (run_) mb_sample_end(run_);
    run_ = nullptr;
  }
  bool HasRun(Napi::Env env) {
    if (!Alive(env)) return false;
    if (!run_) {
      engine_error(env, 4, "no sampling run: call sampleBegin first").ThrowAsJavaScriptException();
      return false;
    }
    return true;
  }
  // sampleBegin(b, c, h, w, classCond: Float32Array | null, guidanceScale = 1)
  Napi::Value SampleBegin(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!Alive(env)) return env.Undefined();
    EndRun();
    std::vector<float> class_cond = copy_f32(info[4]);
    int status = 0;
    run_ = mb_sample_begin(model_, info[0].As<Napi::Number>().Int32Value(), info[1].As<Napi::Number>().Int32Value(),
                           info[2].As<Napi::Number>().Int32Value(), info[3].As<Napi::Number>().Int32Value(),
                           class_cond.empty() ? nullptr : class_cond.data(), (int)class_cond.size(),
                           info[5].IsNumber() ? info[5].As<Napi::Number>().FloatValue() : 1.0f, &status);
    if (!run_) engine_error(env, status, mb_model_error(model_)).ThrowAsJavaScriptException();
    run_sample_floats_ = (size_t)info[0].As<Napi::Number>().Int32Value() * info[1].As<Napi::Number>().Int32Value() *
                         info[2].As<Napi::Number>().Int32Value() * info[3].As<Napi::Number>().Int32Value();
    return env.Undefined();
  }
  // sampleInit(sample: Float32Array | null, seedLo, seedHi, drawLo, drawHi)
  Napi::Value SampleInit(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!HasRun(env)) return env.Undefined();
    std::vector<float> sample = copy_f32(info[0]);
    if (info[0].IsTypedArray() && sample.size() != RunSampleFloats()) {
      Napi::RangeError::New(env, "sampleInit: the sample does not match the run's shape").ThrowAsJavaScriptException();
      return env.Undefined();
    }
    auto u32 = [&](int i) { return info[i].As<Napi::Number>().Uint32Value(); };
    int status = mb_sample_init(run_, sample.empty() ? nullptr : sample.data(), u32(1), u32(2), u32(3), u32(4));
    if (status != 0) engine_error(env, status, mb_model_error(model_)).ThrowAsJavaScriptException();
    return env.Undefined();
  }
  Napi::Value SampleSteps(const Napi::CallbackInfo& info);
  Napi::Value SampleSolverSteps(const Napi::CallbackInfo& info);
  Napi::Value SampleRead(const Napi::CallbackInfo& info);
  Napi::Value SampleStats(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!HasRun(env)) return env.Undefined();
    Napi::Object o = Napi::Object::New(env);
    o.Set("replays", Napi::Number::New(env, mb_sample_replays(run_)));
    o.Set("directForwards", Napi::Number::New(env, mb_sample_direct_forwards(run_)));
    return o;
  }
  Napi::Value SampleEnd(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (busy.load()) {
      engine_error(env, 4, "cannot end a sampling run while its steps are running").ThrowAsJavaScriptException();
      return env.Undefined();
    }
    EndRun();
    return env.Undefined();
  }
  size_t RunSampleFloats() const { return run_sample_floats_; }

  Napi::Value TrainInit(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!Alive(env)) return env.Undefined();
    bool ema = info[0].As<Napi::Object>().Get("ema").ToBoolean().Value();
    int status = mb_model_train_init(model_, ema ? 1 : 0);
    if (status != 0) engine_error(env, status, mb_model_error(model_)).ThrowAsJavaScriptException();
    return env.Undefined();
  }

  Napi::Value TrainStep(const Napi::CallbackInfo& info);

  Napi::Value ZeroGrad(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!Alive(env)) return env.Undefined();
    if (mb_model_zero_grad(model_) != 0) engine_error(env, 5, mb_model_error(model_)).ThrowAsJavaScriptException();
    return env.Undefined();
  }

  Napi::Value GradNorm(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!Alive(env)) return env.Undefined();
    const double norm = mb_model_grad_norm(model_);
    if (norm < 0) {  // a device failure (a norm is never negative)
      engine_error(env, 5, mb_model_error(model_)).ThrowAsJavaScriptException();
      return env.Undefined();
    }
    return Napi::Number::New(env, norm);
  }

  Napi::Value AdamwStep(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!Alive(env)) return env.Undefined();
    Napi::Object a = info[0].As<Napi::Object>();
    auto num = [&](const char* k) { return a.Get(k).As<Napi::Number>().DoubleValue(); };
    int status = mb_model_adamw_step(model_, num("lr"), num("beta1"), num("beta2"), num("eps"), num("weightDecay"),
                                     num("step"), num("gradScale"));
    if (status != 0) engine_error(env, status, mb_model_error(model_)).ThrowAsJavaScriptException();
    return env.Undefined();
  }

  Napi::Value EmaUpdate(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!Alive(env)) return env.Undefined();
    const int status = mb_model_ema_update(model_, info[0].As<Napi::Number>().DoubleValue());
    if (status != 0) engine_error(env, status, mb_model_error(model_)).ThrowAsJavaScriptException();
    return env.Undefined();
  }

  // --- op profiling (engine/profile.cpp) ---
  Napi::Value ProfileStart(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!Alive(env)) return env.Undefined();
    const int status = mb_model_profile_start(model_);
    if (status != 0) engine_error(env, status, mb_model_error(model_)).ThrowAsJavaScriptException();
    return env.Undefined();
  }
  // Float64Array [seconds, calls] per family, or null when not profiling.
  Napi::Value ProfileRead(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!Alive(env)) return env.Undefined();
    const int families = mb_model_profile_read(model_, nullptr, 0);
    if (families == 0) return env.Null();
    Napi::Float64Array out = Napi::Float64Array::New(env, 2 * (size_t)families);
    mb_model_profile_read(model_, out.Data(), families);
    return out;
  }
  Napi::Value ProfileStop(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!Alive(env)) return env.Undefined();
    mb_model_profile_stop(model_);
    return env.Undefined();
  }

  static int Kind(const std::string& k) {
    if (k == "param") return 0;
    if (k == "grad") return 1;
    if (k == "exp_avg") return 2;
    if (k == "exp_avg_sq") return 3;
    if (k == "ema") return 4;
    return -1;
  }

  size_t Numel(int index) {
    size_t numel = 1;
    for (int d = 0; d < mb_model_param_ndim(model_, index); ++d) numel *= (size_t)mb_model_param_dim(model_, index, d);
    return numel;
  }

  // (index, kind) of a tensor call, or false after throwing a RangeError.
  bool TensorArgs(Napi::Env env, const Napi::CallbackInfo& info, int* index, int* kind) {
    *index = info[0].As<Napi::Number>().Int32Value();
    *kind = Kind(info[1].As<Napi::String>().Utf8Value());
    if (*index < 0 || *index >= mb_model_param_count(model_) || *kind < 0) {
      Napi::RangeError::New(env, "tensor index or kind out of range").ThrowAsJavaScriptException();
      return false;
    }
    return true;
  }

  void ThrowTensorError(Napi::Env env, int status, int kind) {
    if (status == 4 && kind == 0 && mb_model_weights_released(model_))  // kErrState
      engine_error(env, 4, "this weight was released after packing to save memory (loadPipeline does): load with loadUNet to read it")
          .ThrowAsJavaScriptException();
    else if (status == 4)
      engine_error(env, 4, "that tensor is not allocated (call trainInit first)").ThrowAsJavaScriptException();
    else
      engine_error(env, status, mb_model_error(model_)).ThrowAsJavaScriptException();
  }

  // Copied through the engine, which downloads from (or uploads to) a device.
  Napi::Value ReadTensor(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!Alive(env)) return env.Undefined();
    int index = 0, kind = 0;
    if (!TensorArgs(env, info, &index, &kind)) return env.Undefined();
    Napi::Float32Array out = Napi::Float32Array::New(env, Numel(index));
    const int status = mb_model_read_tensor(model_, index, kind, out.Data());
    if (status != 0) {
      ThrowTensorError(env, status, kind);
      return env.Undefined();
    }
    return out;
  }

  Napi::Value WriteTensor(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!Alive(env)) return env.Undefined();
    int index = 0, kind = 0;
    if (!TensorArgs(env, info, &index, &kind)) return env.Undefined();
    Napi::Float32Array in = info[2].As<Napi::Float32Array>();
    if (in.ElementLength() != Numel(index)) {
      Napi::RangeError::New(env, "tensor size mismatch").ThrowAsJavaScriptException();
      return env.Undefined();
    }
    const int status = mb_model_write_tensor(model_, index, kind, in.Data());
    if (status != 0) ThrowTensorError(env, status, kind);
    return env.Undefined();
  }

  // releaseHostWeights(): frees the unpacked conv/linear weights; returns the bytes freed.
  Napi::Value ReleaseHostWeights(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!Alive(env)) return env.Undefined();
    const double result = mb_model_release_host_weights(model_);
    if (result < 0) {
      engine_error(env, (int)-result, mb_model_error(model_)).ThrowAsJavaScriptException();
      return env.Undefined();
    }
    return Napi::Number::New(env, result);
  }

  Napi::Value Repack(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!Alive(env)) return env.Undefined();
    int status = mb_model_repack(model_);
    if (status != 0) engine_error(env, status, mb_model_error(model_)).ThrowAsJavaScriptException();
    return env.Undefined();
  }

  // useCuda(device, weightType = 0): run this model on a CUDA device (before
  // finalize), conv/linear weights packed as float32 (0), float16 (1) or bfloat16 (2).
  Napi::Value UseCuda(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!Alive(env)) return env.Undefined();
    const int weight_type = info.Length() > 1 && info[1].IsNumber() ? info[1].As<Napi::Number>().Int32Value() : 0;
    int status = mb_model_use_cuda(model_, info[0].As<Napi::Number>().Int32Value(), weight_type);
    if (status != 0) engine_error(env, status, mb_model_error(model_)).ThrowAsJavaScriptException();
    return env.Undefined();
  }

  Napi::Value Device(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!Alive(env)) return env.Undefined();
    return Napi::String::New(env, mb_model_device(model_));
  }

  mb::Model* model_ = nullptr;
  mb::SampleRun* run_ = nullptr;  // the model's sampling run, if one is open
  size_t run_sample_floats_ = 0;
};



// Runs `work` (an engine call returning a status) on the libuv pool and
// resolves with `out` (a Float32Array) when it is non-empty, else undefined.
class RunWorker : public Napi::AsyncWorker {
 public:
  RunWorker(Napi::Env env, ModelWrap* wrap, Napi::Object keep_alive, std::function<int(std::vector<float>&)> work)
      : Napi::AsyncWorker(env), deferred_(Napi::Promise::Deferred::New(env)), wrap_(wrap), work_(std::move(work)) {
    keep_alive_ = Napi::Persistent(keep_alive);
  }
  Napi::Promise Promise() { return deferred_.Promise(); }
  void Execute() override {
    status_ = work_(out_);
    if (status_ != 0) message_ = mb_model_error(wrap_->model());
  }
  void OnOK() override {
    wrap_->busy.store(false);
    Napi::Env env = Env();
    if (status_ != 0) {
      deferred_.Reject(engine_error(env, status_, message_).Value());
      return;
    }
    if (out_.empty()) {
      deferred_.Resolve(env.Undefined());
      return;
    }
    Napi::Float32Array result = Napi::Float32Array::New(env, out_.size());
    std::memcpy(result.Data(), out_.data(), out_.size() * sizeof(float));
    deferred_.Resolve(result);
  }
  void OnError(const Napi::Error& e) override {
    wrap_->busy.store(false);
    deferred_.Reject(e.Value());
  }

 private:
  Napi::Promise::Deferred deferred_;
  ModelWrap* wrap_;
  Napi::ObjectReference keep_alive_;
  std::function<int(std::vector<float>&)> work_;
  std::vector<float> out_;
  int status_ = 0;
  std::string message_;
};

// forward(sample: Float32Array, b, c, h, w, timesteps: Float32Array, classCond: Float32Array | null, outSize)
Napi::Value ModelWrap::Forward(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!Alive(env)) return env.Undefined();
  if (info.Length() < 8 || !info[0].IsTypedArray() || !info[5].IsTypedArray()) {
    Napi::TypeError::New(env, "forward(sample, b, c, h, w, timesteps, classCond, outSize)").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  int b = info[1].As<Napi::Number>().Int32Value();
  int c = info[2].As<Napi::Number>().Int32Value();
  int h = info[3].As<Napi::Number>().Int32Value();
  int w = info[4].As<Napi::Number>().Int32Value();
  size_t out_size = (size_t)info[7].As<Napi::Number>().Int64Value();
  std::vector<float> sample = copy_f32(info[0]);
  std::vector<float> timesteps = copy_f32(info[5]);
  std::vector<float> class_cond = copy_f32(info[6]);
  if (sample.size() != (size_t)b * c * h * w || timesteps.size() != (size_t)b) {
    Napi::RangeError::New(env, "forward: array sizes do not match the shape").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  busy.store(true);
  mb::Model* model = model_;
  auto* worker = new RunWorker(env, this, Value(),
                               [=, sample = std::move(sample), timesteps = std::move(timesteps),
                                class_cond = std::move(class_cond)](std::vector<float>& out) {
                                 out.resize(out_size);
                                 return mb_model_forward(model, b, c, h, w, sample.data(), timesteps.data(),
                                                         class_cond.empty() ? nullptr : class_cond.data(),
                                                         (int)class_cond.size(), out.data());
                               });
  Napi::Promise promise = worker->Promise();
  worker->Queue();
  return promise;
}


// sampleSteps(count, timesteps: Float32Array(count), coefficients: Float32Array(15 count),
//             seedLo, seedHi, firstDraw, hostNoise: Float32Array(count * sample) | null, wantX0)
Napi::Value ModelWrap::SampleSteps(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!HasRun(env)) return env.Undefined();
  const int count = info[0].As<Napi::Number>().Int32Value();
  std::vector<float> timesteps = copy_f32(info[1]);
  std::vector<float> coefficients = copy_f32(info[2]);
  std::vector<float> noise = copy_f32(info[6]);
  if (count < 1 || timesteps.size() != (size_t)count || coefficients.size() != (size_t)count * 15 ||
      (info[6].IsTypedArray() && noise.size() != (size_t)count * RunSampleFloats())) {
    Napi::RangeError::New(env, "sampleSteps: array sizes do not match the step count").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  const uint32_t seed_lo = info[3].As<Napi::Number>().Uint32Value(), seed_hi = info[4].As<Napi::Number>().Uint32Value();
  const double first_draw = info[5].As<Napi::Number>().DoubleValue();
  const bool want_x0 = info[7].ToBoolean().Value();
  const size_t x0_floats = want_x0 ? RunSampleFloats() : 0;
  mb::SampleRun* run = run_;
  busy.store(true);
  auto* worker = new RunWorker(env, this, Value(), [=, timesteps = std::move(timesteps), coefficients = std::move(coefficients),
                                                    noise = std::move(noise)](std::vector<float>& out) {
    out.resize(x0_floats);
    return mb_sample_steps(run, count, timesteps.data(), coefficients.data(), seed_lo, seed_hi, first_draw,
                           noise.empty() ? nullptr : noise.data(), x0_floats ? out.data() : nullptr);
  });
  Napi::Promise promise = worker->Promise();
  worker->Queue();
  return promise;
}

// sampleSolverSteps(count, timesteps: Float32Array(count), inputScales: Float32Array(count),
//                   records: Float32Array(22 count), seedLo, seedHi, firstDraw,
//                   hostNoise: Float32Array(count * sample) | null, wantX0)
Napi::Value ModelWrap::SampleSolverSteps(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!HasRun(env)) return env.Undefined();
  const int count = info[0].As<Napi::Number>().Int32Value();
  std::vector<float> timesteps = copy_f32(info[1]);
  std::vector<float> scales = copy_f32(info[2]);
  std::vector<float> records = copy_f32(info[3]);
  std::vector<float> noise = copy_f32(info[7]);
  if (count < 1 || timesteps.size() != (size_t)count || scales.size() != (size_t)count ||
      records.size() != (size_t)count * 22 || (info[7].IsTypedArray() && noise.size() != (size_t)count * RunSampleFloats())) {
    Napi::RangeError::New(env, "sampleSolverSteps: array sizes do not match the step count").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  const uint32_t seed_lo = info[4].As<Napi::Number>().Uint32Value(), seed_hi = info[5].As<Napi::Number>().Uint32Value();
  const double first_draw = info[6].As<Napi::Number>().DoubleValue();
  const bool want_x0 = info[8].ToBoolean().Value();
  const size_t x0_floats = want_x0 ? RunSampleFloats() : 0;
  mb::SampleRun* run = run_;
  busy.store(true);
  auto* worker = new RunWorker(env, this, Value(),
                               [=, timesteps = std::move(timesteps), scales = std::move(scales),
                                records = std::move(records), noise = std::move(noise)](std::vector<float>& out) {
                                 out.resize(x0_floats);
                                 return mb_sample_solver_steps(run, count, timesteps.data(), scales.data(),
                                                               records.data(), seed_lo, seed_hi, first_draw,
                                                               noise.empty() ? nullptr : noise.data(),
                                                               x0_floats ? out.data() : nullptr);
                               });
  Napi::Promise promise = worker->Promise();
  worker->Queue();
  return promise;
}

// sampleRead(): the current sample (waits for the device).
Napi::Value ModelWrap::SampleRead(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!HasRun(env)) return env.Undefined();
  mb::SampleRun* run = run_;
  const size_t floats = RunSampleFloats();
  busy.store(true);
  auto* worker = new RunWorker(env, this, Value(), [=](std::vector<float>& out) {
    out.resize(floats);
    return mb_sample_read(run, out.data());
  });
  Napi::Promise promise = worker->Promise();
  worker->Queue();
  return promise;
}

class TrainWorker : public Napi::AsyncWorker {
 public:
  TrainWorker(Napi::Env env, ModelWrap* wrap, Napi::Object keep_alive, int b, int c, int h, int w,
              std::vector<std::vector<float>> arrays, int target, double dropout_seed)
      : Napi::AsyncWorker(env), deferred_(Napi::Promise::Deferred::New(env)), wrap_(wrap), b_(b), c_(c), h_(h), w_(w),
        arrays_(std::move(arrays)), target_(target), dropout_seed_(dropout_seed) {
    keep_alive_ = Napi::Persistent(keep_alive);
  }
  Napi::Promise Promise() { return deferred_.Promise(); }

  void Execute() override {
    auto ptr = [&](int i) -> const float* { return arrays_[i].empty() ? nullptr : arrays_[i].data(); };
    status_ = mb_model_train_step(wrap_->model(), b_, c_, h_, w_, ptr(0), ptr(1), ptr(2), ptr(3), ptr(4), ptr(5),
                                  (int)arrays_[5].size(), target_, ptr(6), dropout_seed_, &loss_);
    if (status_ != 0) message_ = mb_model_error(wrap_->model());
  }
  void OnOK() override {
    wrap_->busy.store(false);
    Napi::Env env = Env();
    if (status_ != 0) deferred_.Reject(engine_error(env, status_, message_).Value());
    else deferred_.Resolve(Napi::Number::New(env, loss_));
  }
  void OnError(const Napi::Error& e) override {
    wrap_->busy.store(false);
    deferred_.Reject(e.Value());
  }

 private:
  Napi::Promise::Deferred deferred_;
  ModelWrap* wrap_;
  Napi::ObjectReference keep_alive_;
  int b_, c_, h_, w_;
  std::vector<std::vector<float>> arrays_;
  int target_;
  double dropout_seed_;
  int status_ = 0;
  float loss_ = 0;
  std::string message_;
};

// trainStep({ x0, noise, shape, timesteps, sqrtAlphaProd, sqrtOneMinusAlphaProd, classCond, target, lossWeights, dropoutSeed })
Napi::Value ModelWrap::TrainStep(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!Alive(env)) return env.Undefined();
  Napi::Object a = info[0].As<Napi::Object>();
  Napi::Array shape = a.Get("shape").As<Napi::Array>();
  int b = shape.Get((uint32_t)0).As<Napi::Number>().Int32Value();
  int c = shape.Get((uint32_t)1).As<Napi::Number>().Int32Value();
  int h = shape.Get((uint32_t)2).As<Napi::Number>().Int32Value();
  int w = shape.Get((uint32_t)3).As<Napi::Number>().Int32Value();
  const char* keys[] = {"x0", "noise", "timesteps", "sqrtAlphaProd", "sqrtOneMinusAlphaProd", "classCond", "lossWeights"};
  std::vector<std::vector<float>> arrays;
  for (const char* k : keys) arrays.push_back(copy_f32(a.Get(k)));
  const size_t n = (size_t)b * c * h * w;
  if (b < 1 || arrays[0].size() != n || arrays[1].size() != n || arrays[2].size() != (size_t)b ||
      arrays[3].size() != (size_t)b || arrays[4].size() != (size_t)b ||
      (!arrays[6].empty() && arrays[6].size() != (size_t)b)) {
    Napi::RangeError::New(env, "trainStep: array sizes do not match the shape").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  busy.store(true);
  auto* worker = new TrainWorker(env, this, Value(), b, c, h, w, std::move(arrays),
                                 a.Get("target").As<Napi::Number>().Int32Value(),
                                 a.Get("dropoutSeed").As<Napi::Number>().DoubleValue());
  Napi::Promise promise = worker->Promise();
  worker->Queue();
  return promise;
}

Napi::Value Threads(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), mb_get_threads()); }
Napi::Value SetThreads(const Napi::CallbackInfo& info) {
  mb_set_threads(info[0].As<Napi::Number>().Int32Value());
  return Napi::Number::New(info.Env(), mb_get_threads());
}
Napi::Value Isa(const Napi::CallbackInfo& info) { return Napi::String::New(info.Env(), mb_isa()); }
// selectTrainingWinogradTile(4 | 2): Winograd's output tile for models set up for training from now on.
Napi::Value SelectTrainingWinogradTile(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), mb_select_training_winograd_tile(info[0].As<Napi::Number>().Int32Value()));
}

Napi::Value SelectIsa(const Napi::CallbackInfo& info) {
  std::string wanted = info[0].As<Napi::String>().Utf8Value();
  return Napi::String::New(info.Env(), mb_select_isa(wanted.c_str()));
}

// randnPhilox(seedLo, seedHi, drawLo, drawHi, offset, n) -> Float32Array
Napi::Value RandnPhilox(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  double n = info[5].As<Napi::Number>().DoubleValue();
  if (!(n >= 0) || n > 1e10) {
    Napi::RangeError::New(env, "randnPhilox: bad length").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  Napi::Float32Array out = Napi::Float32Array::New(env, (size_t)n);
  mb_randn_philox(info[0].As<Napi::Number>().Uint32Value(), info[1].As<Napi::Number>().Uint32Value(),
                  info[2].As<Napi::Number>().Uint32Value(), info[3].As<Napi::Number>().Uint32Value(),
                  info[4].As<Napi::Number>().DoubleValue(), n, out.Data());
  return out;
}

// torchNormalFill(mt: Uint32Array(624), index, out: Float32Array) -> the new index:
// torch.randn's normal_fill (out.length >= 16), advancing the twister in place.
Napi::Value TorchNormalFill(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 3 || !info[0].IsTypedArray() || !info[1].IsNumber() || !info[2].IsTypedArray() ||
      info[0].As<Napi::TypedArray>().TypedArrayType() != napi_uint32_array ||
      info[2].As<Napi::TypedArray>().TypedArrayType() != napi_float32_array) {
    Napi::TypeError::New(env, "torchNormalFill(mt: Uint32Array, index: number, out: Float32Array)")
        .ThrowAsJavaScriptException();
    return env.Undefined();
  }
  Napi::Uint32Array mt = info[0].As<Napi::Uint32Array>();
  Napi::Float32Array out = info[2].As<Napi::Float32Array>();
  const int index = mt.ElementLength() == 624 ? mb_torch_normal_fill(mt.Data(), info[1].As<Napi::Number>().Int32Value(),
                                                                     out.Data(), (double)out.ElementLength())
                                              : -1;
  if (index < 0) {
    Napi::RangeError::New(env, "torchNormalFill: 624 words, an index in [0, 624] and 16 outputs or more")
        .ThrowAsJavaScriptException();
    return env.Undefined();
  }
  return Napi::Number::New(env, index);
}

// philoxBlock(c0, c1, c2, c3, k0, k1) -> Uint32Array(4)
Napi::Value PhiloxBlock(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  uint32_t a[6];
  for (int i = 0; i < 6; ++i) a[i] = info[i].As<Napi::Number>().Uint32Value();
  Napi::Uint32Array out = Napi::Uint32Array::New(env, 4);
  mb_philox4x32_10(a[0], a[1], a[2], a[3], a[4], a[5], out.Data());
  return out;
}

// The fused step bindings' array arguments: a Float32Array's data and length,
// or null and 0 for an optional one given as null.
float* float_arg(const Napi::CallbackInfo& info, int i) {
  return info[i].IsTypedArray() ? info[i].As<Napi::Float32Array>().Data() : nullptr;
}
size_t float_arg_length(const Napi::CallbackInfo& info, int i) {
  return info[i].IsTypedArray() ? info[i].As<Napi::Float32Array>().ElementLength() : 0;
}

// The layout both step functions take: arguments 1-3 (batch, sampleSize,
// modelOutputStride) and the guidance scale at `guidance_arg` (default 1:
// unguided; otherwise the model output holds twice the batch).
struct StepArgs {
  int batch, sample_size, stride;
  float guidance;
  size_t output_floats;  // the model output's expected length
  size_t sample_floats;  // batch * sample_size
};
StepArgs step_args(const Napi::CallbackInfo& info, int guidance_arg) {
  StepArgs a;
  a.batch = info[1].As<Napi::Number>().Int32Value();
  a.sample_size = info[2].As<Napi::Number>().Int32Value();
  a.stride = info[3].As<Napi::Number>().Int32Value();
  a.guidance = info[guidance_arg].IsNumber() ? info[guidance_arg].As<Napi::Number>().FloatValue() : 1.0f;
  a.output_floats = (size_t)a.batch * (a.guidance != 1.0f ? 2 : 1) * (size_t)a.stride;
  a.sample_floats = (size_t)a.batch * (size_t)a.sample_size;
  return a;
}

// diffusionStep(coefficients: Float32Array(15), batch, sampleSize, modelOutputStride,
//               modelOutput, sample, noise | null, prevSample, predOriginalSample,
//               guidanceScale = 1) -> status. Guided (scale != 1), modelOutput holds 2 * batch items.
// Synchronous: one elementwise pass, microseconds for a sampling step.
Napi::Value DiffusionStep(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto f32 = [&](int i) { return float_arg(info, i); };
  auto len = [&](int i) { return float_arg_length(info, i); };
  const StepArgs a = step_args(info, 9);
  const size_t n = a.sample_floats;
  if (len(0) != 15 || len(4) != a.output_floats || len(5) != n || (info[6].IsTypedArray() && len(6) != n) ||
      len(7) != n || len(8) != n) {
    Napi::RangeError::New(env, "diffusionStep: array sizes do not match the layout").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  int status =
      mb_diffusion_step(f32(0), a.batch, a.sample_size, a.stride, a.guidance, f32(4), f32(5), f32(6), f32(7), f32(8));
  return Napi::Number::New(env, status);
}

// solverStep(coefficients: Float32Array(21), batch, sampleSize, modelOutputStride, modelOutput, sample,
//            last | null, h0 | null, h1 | null, h2 | null, noise | null, prevSample, converted, lastOut | null,
//            guidanceScale = 1) -> status. Synchronous: one elementwise pass, as diffusionStep.
Napi::Value SolverStep(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto f32 = [&](int i) { return float_arg(info, i); };
  auto len = [&](int i) { return float_arg_length(info, i); };
  const StepArgs a = step_args(info, 14);
  const size_t n = a.sample_floats;
  bool sizes_ok = len(0) == 21 && len(4) == a.output_floats && len(5) == n && len(11) == n && len(12) == n;
  for (int i : {6, 7, 8, 9, 10, 13})
    if (info[i].IsTypedArray() && len(i) != n) sizes_ok = false;
  if (!sizes_ok) {
    Napi::RangeError::New(env, "solverStep: array sizes do not match the layout").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  int status = mb_solver_step(f32(0), a.batch, a.sample_size, a.stride, a.guidance, f32(4), f32(5), f32(6), f32(7),
                              f32(8), f32(9), f32(10), f32(11), f32(12), f32(13));
  return Napi::Number::New(env, status);
}

// addNoise(x0, noise, sqrtAlphaProd, sqrtOneMinusAlphaProd, batch, sampleSize, out)
Napi::Value AddNoise(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const int batch = info[4].As<Napi::Number>().Int32Value();
  const int sample_size = info[5].As<Napi::Number>().Int32Value();
  const size_t n = (size_t)batch * (size_t)sample_size;
  auto arr = [&](int i) { return info[i].As<Napi::Float32Array>(); };
  if (arr(0).ElementLength() != n || arr(1).ElementLength() != n || arr(2).ElementLength() != (size_t)batch ||
      arr(3).ElementLength() != (size_t)batch || arr(6).ElementLength() != n) {
    Napi::RangeError::New(env, "addNoise: array sizes do not match").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  mb_add_noise(arr(0).Data(), arr(1).Data(), arr(2).Data(), arr(3).Data(), batch, sample_size, arr(6).Data());
  return env.Undefined();
}

// cudaDevices() -> { built, buildInfo, count, reason, devices: [...] }
Napi::Value CudaDevices(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object result = Napi::Object::New(env);
  char reason[512] = {0};
  const int count = mb_cuda_device_count(reason, sizeof(reason));
  result.Set("built", Napi::Boolean::New(env, mb_cuda_built() != 0));
  result.Set("buildInfo", mb_cuda_build_info());
  result.Set("count", count);
  result.Set("reason", std::string(reason));
  Napi::Array devices = Napi::Array::New(env);
  for (int i = 0; i < count; ++i) {
    MbCudaDevice d;
    char why[512] = {0};
    Napi::Object entry = Napi::Object::New(env);
    entry.Set("index", i);
    if (mb_cuda_device_info(i, &d, why, sizeof(why)) != 0) {
      entry.Set("error", std::string(why));
    } else {
      entry.Set("name", std::string(d.name));
      entry.Set("computeCapability", std::to_string(d.major) + "." + std::to_string(d.minor));
      entry.Set("multiprocessors", d.multiprocessors);
      entry.Set("totalBytes", d.total_bytes);
      entry.Set("driverVersion", d.driver_version);
      entry.Set("runtimeVersion", d.runtime_version);
      entry.Set("pciBusId", std::string(d.pci_bus_id));
    }
    devices.Set((uint32_t)i, entry);
  }
  result.Set("devices", devices);
  return result;
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("cudaDevices", Napi::Function::New(env, CudaDevices));
  exports.Set("diffusionStep", Napi::Function::New(env, DiffusionStep));
  exports.Set("solverStep", Napi::Function::New(env, SolverStep));
  exports.Set("addNoise", Napi::Function::New(env, AddNoise));
  exports.Set("randnPhilox", Napi::Function::New(env, RandnPhilox));
  exports.Set("philoxBlock", Napi::Function::New(env, PhiloxBlock));
  exports.Set("torchNormalFill", Napi::Function::New(env, TorchNormalFill));
  exports.Set("Model", ModelWrap::Define(env));
  exports.Set("threads", Napi::Function::New(env, Threads));
  exports.Set("setThreads", Napi::Function::New(env, SetThreads));
  exports.Set("isa", Napi::Function::New(env, Isa));
  exports.Set("selectIsa", Napi::Function::New(env, SelectIsa));
  exports.Set("selectTrainingWinogradTile", Napi::Function::New(env, SelectTrainingWinogradTile));
#ifdef MB_DEV_HOOKS
  // Test and benchmark entry points: only in marble_dev.node and
  // marble_emulated.node, never in the product addon (dev_hooks.cpp).
  mb_register_dev_hooks(env, exports);
#endif
  return exports;
}

}  // namespace

NODE_API_MODULE(marble, Init)
