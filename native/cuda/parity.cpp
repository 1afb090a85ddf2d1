// The CUDA op self-test: every op family of the device seam (engine/ops.h)
// run on the GPU and on the CPU over the same random inputs, case by case.
// A case that fails to launch or faults is recorded and the next one runs
// anyway, so one run on a GPU reports every op. test/cuda_ops.test.ts turns
// the cases into one subtest each, with the tolerances: bit-identical for
// the ops whose float operations are the CPU's (layouts, resampling,
// embeddings, SiLU, Philox noise, the diffusion step), relative for the
// GEMM-based ops and the reductions (conv, attention, GroupNorm statistics).
//
// Compiled into every addon (it is plain C++ over the Ops tables): a dry run
// puts the CPU table on both sides, so machines without a GPU still check
// that every case runs end to end and that the CPU ops are deterministic.
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <chrono>
#include <functional>
#include <new>
#include <string>
#include <vector>

#include "../engine/ops.h"
#include "cuda_api.h"
#include "half_bits.h"

namespace mb {
namespace cuda {
int select_device(int device, char* reason, int reason_len);
bool conv_wgmma_set(bool on);  // Hopper's warpgroup MMA for the half convolutions (false: not available)
bool conv_wgmma_enabled();
void conv_split_force(int splits);  // split-K count for the fp32 conv forward (0: its own rule)
void conv_force_large_tiles(bool on);  // the half GEMMs' 128 x 128 tiles whatever the tile count
void attention_flash_mode(int mode);   // 1: the fused attention kernel for every head of <= 64 channels; -1 never; 0 its rule
}  // namespace cuda
const Ops* cuda_ops_table(WeightType t, bool half_activations = true);  // null in a build without CUDA

namespace {

// Host buffers as the engine's own: 64-byte aligned (the CPU micro-kernels
// store whole aligned vectors, as they may into arena memory).
template <typename T>
struct EngineAllocator {
  using value_type = T;
  EngineAllocator() = default;
  template <typename U>
  EngineAllocator(const EngineAllocator<U>&) {}
  T* allocate(size_t n) {
    void* p = mb_alloc(n * sizeof(T) + 64);
    if (!p) throw std::bad_alloc();
    return static_cast<T*>(p);
  }
  void deallocate(T* p, size_t) { mb_free(p); }
  bool operator==(const EngineAllocator&) const { return true; }
  bool operator!=(const EngineAllocator&) const { return false; }
};
using Floats = std::vector<float, EngineAllocator<float>>;

std::vector<MbParityCase> g_cases;
const Ops* g_device_ops = nullptr;  // the side under test: cuda, or cpu in a dry run
// The device's tables for half-packed weights (tensor cores), indexed by WeightType; cpu in a dry run.
const Ops* g_half_ops[3] = {};
// Prefixes the conv and linear cases' names while a variant runs ("wgmma ", "split-K 3 ").
std::string g_case_tag;

// v rounded to the half type and back: the inputs the tensor-core GEMMs
// multiply. Their products are exact in fp32 (11 + 11 or 8 + 8 significant
// bits), so an fp32 GEMM of the rounded inputs differs from the tensor
// cores' only by the order of the fp32 sums.
Floats rounded(const Floats& v, WeightType t) {
  if (t == WeightType::kFloat32) return v;
  Floats r(v.size());
  for (size_t i = 0; i < v.size(); ++i) r[i] = half_bits_to_float(t, float_to_half_bits(t, v[i]));
  return r;
}
const char* type_name(WeightType t) {
  return t == WeightType::kFloat16 ? "float16" : t == WeightType::kBfloat16 ? "bfloat16" : "float32";
}

struct Rng {
  uint64_t s;
  explicit Rng(uint64_t seed) : s(seed * 0x9E3779B97F4A7C15ull + 1) {}
  uint32_t next() {
    s ^= s << 13;
    s ^= s >> 7;
    s ^= s << 17;
    return (uint32_t)(s >> 16);
  }
  float uniform(float lo, float hi) { return lo + (hi - lo) * (float)(next() & 0xffffff) / 16777216.0f; }
  Floats vec(size_t n, float lo = -1.0f, float hi = 1.0f) {
    Floats v(n);
    for (auto& x : v) x = uniform(lo, hi);
    return v;
  }
};

// A device copy of a host vector, freed with the case.
struct Device {
  const Ops* ops;
  std::vector<void*> owned;
  explicit Device(const Ops* o) : ops(o) {}
  ~Device() {
    for (void* p : owned) ops->free(p);
  }
  // Filled with NaN (0xFF bytes: NaN as float32 and both half types), as a
  // GPU leaves fresh memory holding garbage: an op that reads what it was
  // not given (an output it should only write, scratch, packing padding)
  // then fails its case instead of seeing zeros.
  float* alloc(size_t n) {
    void* p = ops->alloc((n ? n : 1) * sizeof(float));
    if (p) {
      owned.push_back(p);
      const std::vector<uint8_t> garbage((n ? n : 1) * sizeof(float), 0xFF);
      ops->upload(p, garbage.data(), garbage.size());
    }
    return static_cast<float*>(p);
  }
  // Zeros, for what the engine itself keeps zero (the arena's zero row).
  float* zeros(size_t n) {
    float* p = alloc(n);
    if (p) ops->zero(p, (n ? n : 1) * sizeof(float));
    return p;
  }
  float* put(const Floats& v) {
    float* p = alloc(v.size());
    if (p) ops->upload(p, v.data(), v.size() * sizeof(float));
    return p;
  }
  Floats get(const float* p, size_t n) {
    Floats v(n, 0.0f);
    if (p) ops->download(v.data(), p, n * sizeof(float));
    return v;
  }
};

// v rounded to the half type as packed bits, two to a float slot: a half
// activation buffer (Ops::conv2d_forward_half_input's input).
Floats half_packed(const Floats& v, WeightType t) {
  Floats packed((v.size() + 1) / 2, 0.0f);
  uint16_t* bits = reinterpret_cast<uint16_t*>(packed.data());
  for (size_t i = 0; i < v.size(); ++i) bits[i] = float_to_half_bits(t, v[i]);
  return packed;
}
// Back: n half values from packed bits, as floats.
Floats half_unpacked(const Floats& packed, size_t n, WeightType t) {
  Floats v(n);
  const uint16_t* bits = reinterpret_cast<const uint16_t*>(packed.data());
  for (size_t i = 0; i < n; ++i) v[i] = half_bits_to_float(t, bits[i]);
  return v;
}

void copy_text(char* dst, size_t len, const std::string& s) {
  strncpy(dst, s.c_str(), len - 1);
  dst[len - 1] = 0;
}

// Runs one case: `body` computes the CPU reference and the CUDA result.
void run_case(const char* op, const std::string& name, bool exact,
              const std::function<bool(Device& dev, Floats& cpu, Floats& gpu)>& body, const Ops* device = nullptr) {
  MbParityCase c;
  memset(&c, 0, sizeof(c));
  copy_text(c.op, sizeof(c.op), op);
  copy_text(c.name, sizeof(c.name), name);
  if (getenv("MB_PARITY_TRACE")) {  // names the case before it runs: a crash inside still says which
    fprintf(stderr, "parity case %s: %s\n", op, name.c_str());
    fflush(stderr);
  }
  c.exact = exact ? 1 : 0;
  const Ops* cu = device ? device : g_device_ops;
  Floats cpu, gpu;
  bool ok;
  {
    Device dev(cu);
    ok = body(dev, cpu, gpu);
    const int status = cu->sync();
    if (status != kOk) {
      c.status = status;
      copy_text(c.error, sizeof(c.error), cu->error_message());
    } else if (!ok) {
      c.status = kErrOutOfMemory;
      copy_text(c.error, sizeof(c.error), "device allocation failed");
    }
  }
  if (c.status == kOk) {
    c.elements = (double)cpu.size();
    if (cpu.size() != gpu.size()) {
      c.status = kErrInvalidArgument;
      copy_text(c.error, sizeof(c.error), "result sizes differ");
    }
    for (size_t i = 0; i < cpu.size() && c.status == kOk; ++i) {
      const double a = cpu[i], b = gpu[i];
      uint32_t ba, bb;
      memcpy(&ba, &cpu[i], 4);
      memcpy(&bb, &gpu[i], 4);
      double err;
      if (ba == bb) err = 0;
      else if (isnan(a) || isnan(b) || isinf(a) || isinf(b)) err = INFINITY;
      else err = fabs(a - b);
      if (exact && ba != bb && err == 0) err = 1e-45;  // +0 vs -0 still counts for bit-identical ops
      if (err > c.max_abs_err) c.max_abs_err = err;
      if (fabs(a) > c.max_ref && !isinf(a)) c.max_ref = fabs(a);
    }
  }
  g_cases.push_back(c);
}

std::string shape(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
std::string shape(const char* fmt, ...) {
  char buf[128];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf, sizeof(buf), fmt, ap);
  va_end(ap);
  return buf;
}

// --- conv2d and linear -----------------------------------------------------

struct ConvCase {
  int batch, cin, cout, k, in_h, in_w, upsample, stride, pad_top, pad_left;
  bool bias, batch_bias, residual, winograd_ref;
  float divisor;
};

// `type` float16 / bfloat16: the device's tensor-core GEMM against the CPU's
// fp32 one over the same inputs rounded to that type (op "conv2d_half").
// `half_input`: the device reads the input already in that type (half
// activations: Ops::conv2d_forward_half_input).
void conv_case(Rng& rng, const ConvCase& cc, WeightType type = WeightType::kFloat32, bool half_input = false) {
  const Ops* cpu = cpu_ops();
  const bool half = type != WeightType::kFloat32;
  const Ops* device = half ? g_half_ops[(int)type] : g_device_ops;
  if (!device || (half_input && !device->conv2d_forward_half_input)) return;
  const int lh = cc.in_h * cc.upsample, lw = cc.in_w * cc.upsample;
  // diffusers' output size; padding 0 with stride 2 means F.pad(0, 1, 0, 1) (one extra on the far side)
  const int extra = cc.stride == 2 && cc.pad_top == 0 ? 1 : 2 * cc.pad_top;
  const int out_h = (lh + extra - cc.k) / cc.stride + 1, out_w = (lw + (cc.stride == 2 && cc.pad_left == 0 ? 1 : 2 * cc.pad_left) - cc.k) / cc.stride + 1;
  ConvGeometry g;
  g.batch = cc.batch, g.in_h = cc.in_h, g.in_w = cc.in_w, g.in_ld = cc.cin, g.upsample = cc.upsample;
  g.out_h = out_h, g.out_w = out_w, g.out_ld = cc.cout, g.stride = cc.stride, g.pad_top = cc.pad_top, g.pad_left = cc.pad_left;
  const size_t in_n = (size_t)cc.batch * cc.in_h * cc.in_w * cc.cin, out_n = (size_t)cc.batch * out_h * out_w * cc.cout;
  auto x = rng.vec(in_n);
  auto w = rng.vec((size_t)cc.cout * cc.cin * cc.k * cc.k, -0.2f, 0.2f);
  auto bias = rng.vec(cc.cout);
  auto bb = rng.vec((size_t)cc.batch * (cc.cout + 3));
  auto res = rng.vec(out_n);
  // The reference's inputs, and the device's (a dry run's CPU "device" cannot round them itself).
  const Floats x_ref = rounded(x, type), w_ref = rounded(w, type);
  const Floats& x_dev = device == cpu ? x_ref : x;
  const Floats& w_dev = device == cpu ? w_ref : w;
  std::string name = g_case_tag + (half ? std::string(type_name(type)) + " " : std::string());
  if (half_input) name += "half input ";
  name += shape("b%d %dx%d%s cin %d cout %d k%d s%d pad %d,%d", cc.batch, cc.in_h, cc.in_w,
                           cc.upsample == 2 ? " up2" : "", cc.cin, cc.cout, cc.k, cc.stride, cc.pad_top, cc.pad_left);
  if (cc.bias) name += " +bias";
  if (cc.batch_bias) name += " +temb";
  if (cc.residual) name += " +residual";
  if (cc.divisor != 1.0f) name += " /divisor";
  if (cc.winograd_ref) name += " (cpu: winograd)";
  run_case(half ? "conv2d_half" : "conv2d", name, false, [&](Device& dev, Floats& ref, Floats& got) {
    const int taps = cc.k * cc.k;
    WeightSource src = {w_ref.data(), (long long)cc.cin * taps, taps, 1};
    int couts[1] = {cc.cout};
    // cpu
    Floats cpu_packed(cpu->conv_packed_floats(cc.cout, cc.cin, cc.k, cc.winograd_ref) + 64);
    PackedWeights pw;
    cpu->pack_conv(&pw, cpu_packed.data(), &src, couts, 1, cc.cin, cc.k, cc.winograd_ref);
    Floats zero_row(cc.cin + cc.cout + 64, 0.0f);
    Floats scratch(cpu->conv_scratch_floats(g, cc.cout, cc.cin, cc.k, cc.winograd_ref) + 64);
    ConvEpilogue ep;
    ep.bias = cc.bias ? bias.data() : nullptr;
    ep.batch_bias = cc.batch_bias ? bb.data() : nullptr;
    ep.batch_bias_ld = cc.cout + 3;
    ep.residual = cc.residual ? res.data() : nullptr;
    ep.residual_ld = cc.cout;
    ep.divisor = cc.divisor;
    ref.assign(out_n, 0.0f);
    cpu->conv2d_forward(x_ref.data(), g, pw, ep, ref.data(), zero_row.data(), scratch.data());
    // cuda
    const Ops* cu = dev.ops;
    float* dw = dev.alloc(cu->conv_packed_floats(cc.cout, cc.cin, cc.k, cc.winograd_ref));
    float* dx = dev.put(half_input ? half_packed(x, type) : x_dev);
    float* dout = dev.alloc(out_n);
    float* dbias = dev.put(bias);
    float* dbb = dev.put(bb);
    float* dres = dev.put(res);
    float* dscratch = dev.alloc(cu->conv_scratch_floats(g, cc.cout, cc.cin, cc.k, cc.winograd_ref));
    float* dzero = dev.zeros(zero_row.size());  // the arena's zero row, as the engine passes it
    float* dsrc = dev.put(w_dev);  // packing reads the torch-layout weights in device memory
    if (!dw || !dx || !dout || !dbias || !dbb || !dres || !dscratch || !dzero || !dsrc) return false;
    PackedWeights dpw;
    WeightSource dsource = {dsrc, src.stride_n, src.stride_ci, src.stride_tap};
    cu->pack_conv(&dpw, dw, &dsource, couts, 1, cc.cin, cc.k, cc.winograd_ref);
    ConvEpilogue dep = ep;
    dep.bias = cc.bias ? dbias : nullptr;
    dep.batch_bias = cc.batch_bias ? dbb : nullptr;
    dep.residual = cc.residual ? dres : nullptr;
    if (half_input)
      cu->conv2d_forward_half_input(dx, g, dpw, dep, dout, dzero, dscratch);
    else
      cu->conv2d_forward(dx, g, dpw, dep, dout, dzero, dscratch);
    got = dev.get(dout, out_n);
    return true;
  }, device);
}

void linear_case(Rng& rng, int rows, int cin, int cout, bool fused_sources, bool residual_in_place,
                 WeightType type = WeightType::kFloat32, bool half_input = false) {
  const Ops* cpu = cpu_ops();
  const bool half = type != WeightType::kFloat32;
  const Ops* device = half ? g_half_ops[(int)type] : g_device_ops;
  if (!device || (half_input && !device->conv2d_forward_half_input)) return;
  auto x = rng.vec((size_t)rows * cin);
  const int parts = fused_sources ? 3 : 1;
  const int part_out = cout / parts;
  std::vector<Floats> ws, ws_ref;
  for (int s = 0; s < parts; ++s) ws.push_back(rng.vec((size_t)part_out * cin, -0.2f, 0.2f));
  for (int s = 0; s < parts; ++s) ws_ref.push_back(rounded(ws[s], type));
  auto bias = rng.vec(cout);
  auto res = rng.vec((size_t)rows * cout);
  const Floats x_ref = rounded(x, type);
  const Floats& x_dev = device == cpu ? x_ref : x;
  const std::vector<Floats>& ws_dev = device == cpu ? ws_ref : ws;
  std::string name = g_case_tag + (half ? std::string(type_name(type)) + " " : std::string());
  if (half_input) name += "half input ";
  name += shape("%d rows, %d -> %d%s%s", rows, cin, cout, fused_sources ? " (q|k|v from 3 sources)" : "",
                           residual_in_place ? " +residual in place" : "");
  run_case(half ? "linear_half" : "linear", name, false, [&](Device& dev, Floats& ref, Floats& got) {
    WeightSource src[3];
    int couts[3];
    for (int s = 0; s < parts; ++s) src[s] = {ws_ref[s].data(), cin, 1, 0}, couts[s] = part_out;
    const ConvGeometry g = rows_geometry(rows, cin, cout);
    Floats packed(cpu->conv_packed_floats(cout, cin, 1, false) + 64), zero_row(cin + cout + 64, 0.0f);
    PackedWeights pw;
    cpu->pack_conv(&pw, packed.data(), src, couts, parts, cin, 1, false);
    ConvEpilogue ep;
    ep.bias = bias.data();
    ref = res;
    if (residual_in_place) ep.residual = ref.data(), ep.residual_ld = cout;
    cpu->conv2d_forward(x_ref.data(), g, pw, ep, ref.data(), zero_row.data(), nullptr);
    const Ops* cu = dev.ops;
    float* dw = dev.alloc(cu->conv_packed_floats(cout, cin, 1, false));
    float* dx = dev.put(half_input ? half_packed(x, type) : x_dev);
    float* dout = dev.put(res);
    float* dbias = dev.put(bias);
    float* dzero = dev.zeros(zero_row.size());
    if (!dw || !dx || !dout || !dbias || !dzero) return false;
    WeightSource dsrc[3];  // the sources in device memory, as packing reads them
    for (int s = 0; s < parts; ++s) {
      dsrc[s] = src[s];
      dsrc[s].data = dev.put(ws_dev[s]);
      if (!dsrc[s].data) return false;
    }
    PackedWeights dpw;
    cu->pack_conv(&dpw, dw, dsrc, couts, parts, cin, 1, false);
    ConvEpilogue dep;
    dep.bias = dbias;
    if (residual_in_place) dep.residual = dout, dep.residual_ld = cout;
    if (half_input)
      cu->conv2d_forward_half_input(dx, g, dpw, dep, dout, dzero, nullptr);
    else
      cu->conv2d_forward(dx, g, dpw, dep, dout, dzero, nullptr);
    got = dev.get(dout, (size_t)rows * cout);
    return true;
  }, device);
}

// --- GroupNorm ----------------------------------------------------------------

void group_norm_case(Rng& rng, int batch, int pixels, int channels, int groups, bool silu, bool scale_shift,
                     float offset) {
  const Ops* cpu = cpu_ops();
  auto x = rng.vec((size_t)batch * pixels * channels);
  for (auto& v : x) v = v * 3.0f + offset;  // an offset stresses the two-pass variance
  auto gamma = rng.vec(channels, 0.5f, 1.5f), beta = rng.vec(channels);
  auto ss = rng.vec((size_t)batch * 2 * channels, -0.5f, 0.5f);
  std::string name = shape("b%d %d px, C %d, G %d%s%s, mean %+g", batch, pixels, channels, groups, silu ? " +silu" : "",
                           scale_shift ? " +scale_shift" : "", offset);
  run_case("group_norm", name, false, [&](Device& dev, Floats& ref, Floats& got) {
    GroupNormArgs a;
    a.batch = batch, a.pixels = pixels, a.channels = channels, a.groups = groups, a.eps = 1e-5f, a.silu = silu;
    a.gamma = gamma.data(), a.beta = beta.data();
    a.scale_shift = scale_shift ? ss.data() : nullptr, a.scale_shift_ld = 2 * channels;
    ref.assign(x.size(), 0.0f);
    Floats stats(2 * (size_t)batch * groups);
    cpu->group_norm_forward(x.data(), a, ref.data(), stats.data());
    float* dx = dev.put(x);
    float* dy = dev.alloc(x.size());
    float* dg = dev.put(gamma);
    float* db = dev.put(beta);
    float* dss = dev.put(ss);
    float* dstats = dev.alloc(2 * (size_t)batch * groups);
    if (!dx || !dy || !dg || !db || !dss || !dstats) return false;
    GroupNormArgs d = a;
    d.gamma = dg, d.beta = db, d.scale_shift = scale_shift ? dss : nullptr;
    dev.ops->group_norm_forward(dx, d, dy, dstats);
    got = dev.get(dy, x.size());
    // the statistics too: the backward will read them
    auto got_stats = dev.get(dstats, stats.size());
    ref.insert(ref.end(), stats.begin(), stats.end());
    got.insert(got.end(), got_stats.begin(), got_stats.end());
    return true;
  });
}

// Half activations (Ops::group_norm_forward_half): the output in the half
// type. Against the CPU's fp32 GroupNorm rounded to that type (a statistic a
// rounding apart may flip an element's last bit), and, bit for bit, against
// the device's own fp32 GroupNorm rounded on the host: what a conv reading
// floats would have multiplied.
void group_norm_half_case(Rng& rng, WeightType type, int batch, int pixels, int channels, int groups, bool silu,
                          bool scale_shift) {
  const Ops* cpu = cpu_ops();
  const Ops* device = g_half_ops[(int)type];
  if (!device) return;
  auto x = rng.vec((size_t)batch * pixels * channels);
  for (auto& v : x) v = v * 3.0f + 1.0f;
  auto gamma = rng.vec(channels, 0.5f, 1.5f), beta = rng.vec(channels);
  auto ss = rng.vec((size_t)batch * 2 * channels, -0.5f, 0.5f);
  const std::string name = shape("%s b%d %d px, C %d, G %d%s%s", type_name(type), batch, pixels, channels, groups,
                                 silu ? " +silu" : "", scale_shift ? " +scale_shift" : "");
  GroupNormArgs a;
  a.batch = batch, a.pixels = pixels, a.channels = channels, a.groups = groups, a.eps = 1e-5f, a.silu = silu;
  a.scale_shift_ld = 2 * channels;
  // Runs the device's GroupNorm, fp32 and half; false when memory ran out.
  auto run_device = [&](Device& dev, Floats& as_float, Floats& as_half) {
    float* dx = dev.put(x);
    float* dy = dev.alloc(x.size());
    float* dy_half = dev.alloc((x.size() + 1) / 2);
    float* dg = dev.put(gamma);
    float* db = dev.put(beta);
    float* dss = dev.put(ss);
    float* dstats = dev.alloc(2 * (size_t)batch * groups);
    if (!dx || !dy || !dy_half || !dg || !db || !dss || !dstats) return false;
    GroupNormArgs d = a;
    d.gamma = dg, d.beta = db, d.scale_shift = scale_shift ? dss : nullptr;
    dev.ops->group_norm_forward(dx, d, dy, dstats);
    as_float = dev.get(dy, x.size());
    if (!dev.ops->group_norm_forward_half) {  // a dry run: the CPU has no half output; round its floats
      as_half = rounded(as_float, type);
      return true;
    }
    dev.ops->group_norm_forward_half(dx, d, dy_half, dstats);
    as_half = half_unpacked(dev.get(dy_half, (x.size() + 1) / 2), x.size(), type);
    return true;
  };
  run_case("group_norm_half", name + " vs cpu", false, [&](Device& dev, Floats& ref, Floats& got) {
    GroupNormArgs c = a;
    c.gamma = gamma.data(), c.beta = beta.data(), c.scale_shift = scale_shift ? ss.data() : nullptr;
    Floats y(x.size()), stats(2 * (size_t)batch * groups);
    cpu->group_norm_forward(x.data(), c, y.data(), stats.data());
    ref = rounded(y, type);
    Floats as_float;
    return run_device(dev, as_float, got);
  }, device);
  run_case("group_norm_half", name + " = its fp32 output rounded", true, [&](Device& dev, Floats& ref, Floats& got) {
    Floats as_float;
    if (!run_device(dev, as_float, got)) return false;
    ref = rounded(as_float, type);
    return true;
  }, device);
}

// --- attention ----------------------------------------------------------------

// `spread`: q, k and v in [-spread, spread] (wide scores stress the softmax's maximum).
void attention_case(Rng& rng, int batch, int tokens, int heads, int head_dim, float spread = 2.0f) {
  const Ops* cpu = cpu_ops();
  const int C = heads * head_dim;
  auto qkv = rng.vec((size_t)batch * tokens * 3 * C, -spread, spread);
  std::string name = g_case_tag + shape("b%d, %d tokens, %d heads x %d", batch, tokens, heads, head_dim);
  if (spread != 2.0f) name += shape(", values within +-%g", spread);
  run_case("attention", name, false, [&](Device& dev, Floats& ref, Floats& got) {
    AttentionArgs a;
    a.batch = batch, a.tokens = tokens, a.heads = heads, a.head_dim = head_dim;
    a.scale = 1.0f / sqrtf((float)head_dim);
    ref.assign((size_t)batch * tokens * C, 0.0f);
    Floats scratch(cpu->attention_scratch_floats(a) + 64), zero_row(3 * C + 64, 0.0f);
    cpu->attention_forward(qkv.data(), a, ref.data(), scratch.data(), zero_row.data());
    float* dqkv = dev.put(qkv);
    float* dout = dev.alloc(ref.size());
    float* dscratch = dev.alloc(dev.ops->attention_scratch_floats(a));
    float* dzero = dev.zeros(zero_row.size());
    if (!dqkv || !dout || !dscratch || !dzero) return false;
    dev.ops->attention_forward(dqkv, a, dout, dscratch, dzero);
    got = dev.get(dout, ref.size());
    return true;
  });
}

// --- layouts and resampling (bit-identical) -----------------------------------------

void resample_cases(Rng& rng) {
  const Ops* cpu = cpu_ops();
  const int B = 3, C = 5, H = 6, W = 10;
  const size_t n = (size_t)B * C * H * W;
  auto x = rng.vec(n), a = rng.vec(n), divisors = rng.vec(B, 0.5f, 900.0f);
  auto run_unary = [&](const char* label, size_t out_n,
                       const std::function<void(const Ops*, const float*, const float*, float*)>& f) {
    run_case("resample", label, true, [&](Device& dev, Floats& ref, Floats& got) {
      ref.assign(out_n, 0.0f);
      f(cpu, x.data(), divisors.data(), ref.data());
      float* dx = dev.put(x);
      float* dd = dev.put(divisors);
      float* dy = dev.alloc(out_n);
      if (!dx || !dd || !dy) return false;
      f(dev.ops, dx, dd, dy);
      got = dev.get(dy, out_n);
      return true;
    });
  };
  run_unary("nchw_to_nhwc, center_input_sample (2x - 1)", n, [&](const Ops* o, const float* in, const float*, float* out) {
    o->nchw_to_nhwc(in, B, C, H, W, out, 2.0f, -1.0f);
  });
  run_unary("nhwc_to_nchw", n, [&](const Ops* o, const float* in, const float*, float* out) {
    o->nhwc_to_nchw(in, B, C, H, W, out);
  });
  run_unary("nhwc_to_nchw_div (fourier output / t)", n, [&](const Ops* o, const float* in, const float* d, float* out) {
    o->nhwc_to_nchw_div(in, B, C, H, W, d, out);
  });
  run_unary("upsample_nearest2x", n * 4, [&](const Ops* o, const float* in, const float*, float* out) {
    o->upsample_nearest2x(in, B, H, W, C, out);
  });
  run_unary("avgpool2x2", n / 4, [&](const Ops* o, const float* in, const float*, float* out) {
    o->avgpool2x2(in, B, H, W, C, out);
  });
  run_case("resample", "concat_channels (5 | 7)", true, [&](Device& dev, Floats& ref, Floats& got) {
    const int pixels = B * H * W, ca = 5, cb = 7;
    auto b = rng.vec((size_t)pixels * cb);
    ref.assign((size_t)pixels * (ca + cb), 0.0f);
    cpu->concat_channels(a.data(), ca, b.data(), cb, pixels, ref.data());
    float* da = dev.put(a);
    float* db = dev.put(b);
    float* dy = dev.alloc(ref.size());
    if (!da || !db || !dy) return false;
    dev.ops->concat_channels(da, ca, db, cb, pixels, dy);
    got = dev.get(dy, ref.size());
    return true;
  });
}

// --- embeddings, elementwise (bit-identical) ----------------------------------------

void embed_cases(Rng& rng) {
  const Ops* cpu = cpu_ops();
  Floats t = {0.0f, 1.0f, 17.0f, 250.5f, 999.0f, 4095.0f};
  const int B = (int)t.size();
  struct Sin { int dim; bool flip; float shift; };
  for (Sin s : {Sin{128, true, 0.0f}, Sin{64, false, 1.0f}, Sin{33, true, 1.0f}}) {
    run_case("embed", shape("timestep_embedding dim %d flip %d shift %g", s.dim, s.flip, s.shift), true,
             [&](Device& dev, Floats& ref, Floats& got) {
               ref.assign((size_t)B * s.dim, 0.0f);
               cpu->timestep_embedding(t.data(), B, s.dim, s.flip, s.shift, ref.data());
               float* dt = dev.put(t);
               float* dy = dev.alloc(ref.size());
               if (!dt || !dy) return false;
               dev.ops->timestep_embedding(dt, B, s.dim, s.flip, s.shift, dy);
               got = dev.get(dy, ref.size());
               return true;
             });
  }
  Floats tf = {0.002f, 0.5f, 1.0f, 80.0f, 999.0f};
  auto fw = rng.vec(32, -16.0f, 16.0f);
  run_case("embed", "fourier_embedding n 32", true, [&](Device& dev, Floats& ref, Floats& got) {
    const int Bf = (int)tf.size();
    ref.assign((size_t)Bf * 64, 0.0f);
    cpu->fourier_embedding(tf.data(), Bf, fw.data(), 32, ref.data());
    float* dt = dev.put(tf);
    float* dw = dev.put(fw);
    float* dy = dev.alloc(ref.size());
    if (!dt || !dw || !dy) return false;
    dev.ops->fourier_embedding(dt, Bf, dw, 32, dy);
    got = dev.get(dy, ref.size());
    return true;
  });
  auto table = rng.vec(10 * 48);
  Floats idx = {3, 0, 9, 3};
  auto base = rng.vec(4 * 48);
  for (bool acc : {false, true}) {
    run_case("embed", acc ? "gather_rows accumulate (class embedding)" : "gather_rows (learned time embedding)", true,
             [&](Device& dev, Floats& ref, Floats& got) {
               ref = base;
               cpu->gather_rows(table.data(), 48, idx.data(), 4, ref.data(), acc);
               float* dt = dev.put(table);
               float* di = dev.put(idx);
               float* dy = dev.put(base);
               if (!dt || !di || !dy) return false;
               dev.ops->gather_rows(dt, 48, di, 4, dy, acc);
               got = dev.get(dy, ref.size());
               return true;
             });
  }
}

void elementwise_cases(Rng& rng) {
  const Ops* cpu = cpu_ops();
  auto x = rng.vec(100003, -30.0f, 30.0f), y = rng.vec(100003);
  run_case("elementwise", "silu over [-30, 30], 100003 values", true,
           [&](Device& dev, Floats& ref, Floats& got) {
             ref.assign(x.size(), 0.0f);
             cpu->silu_forward(x.data(), (long long)x.size(), ref.data());
             float* dx = dev.put(x);
             float* dy = dev.alloc(x.size());
             if (!dx || !dy) return false;
             dev.ops->silu_forward(dx, (long long)x.size(), dy);
             got = dev.get(dy, x.size());
             return true;
           });
  run_case("elementwise", "add, 100003 values", true, [&](Device& dev, Floats& ref, Floats& got) {
    ref.assign(x.size(), 0.0f);
    cpu->add_forward(x.data(), y.data(), (long long)x.size(), ref.data());
    float* dx = dev.put(x);
    float* dy = dev.put(y);
    float* dz = dev.alloc(x.size());
    if (!dx || !dy || !dz) return false;
    dev.ops->add_forward(dx, dy, (long long)x.size(), dz);
    got = dev.get(dz, x.size());
    return true;
  });
}

// --- noise, diffusion step (bit-identical) ------------------------------------------

void noise_cases(Rng& rng) {
  const Ops* cpu = cpu_ops();
  struct Draw { uint64_t seed, draw, offset; long long n; };
  for (Draw d : {Draw{0, 0, 0, 4096}, Draw{42, 7, 3, 1001}, Draw{0xFFFFFFFF12345678ull, 0x100000001ull, 1ull << 33, 999},
                 Draw{1, 2, 5, 1}}) {
    run_case("noise", shape("randn_philox seed %llu draw %llu offset %llu n %lld", (unsigned long long)d.seed,
                            (unsigned long long)d.draw, (unsigned long long)d.offset, d.n),
             true, [&](Device& dev, Floats& ref, Floats& got) {
               ref.assign((size_t)d.n, 0.0f);
               cpu->randn_philox(d.seed, d.draw, d.offset, d.n, ref.data());
               float* dy = dev.alloc((size_t)d.n);
               if (!dy) return false;
               dev.ops->randn_philox(d.seed, d.draw, d.offset, d.n, dy);
               got = dev.get(dy, (size_t)d.n);
               return true;
             });
  }
  auto x = rng.vec(10001);
  run_case("noise", "dropout p 0.1, 10001 values", true, [&](Device& dev, Floats& ref, Floats& got) {
    ref.assign(x.size(), 0.0f);
    cpu->dropout_apply(5, 9, 0.1f, x.data(), (long long)x.size(), ref.data());
    float* dx = dev.put(x);
    float* dy = dev.alloc(x.size());
    if (!dx || !dy) return false;
    dev.ops->dropout_apply(5, 9, 0.1f, dx, (long long)x.size(), dy);
    got = dev.get(dy, x.size());
    return true;
  });
}

void step_cases(Rng& rng) {
  const Ops* cpu = cpu_ops();
  const int B = 3, n = 3 * 17 * 13;
  auto sample = rng.vec((size_t)B * n, -3.0f, 3.0f), noise = rng.vec((size_t)B * n, -3.0f, 3.0f);
  auto out2 = rng.vec((size_t)B * 2 * n, -1.0f, 1.0f);  // a learned-variance model output: [eps | v]
  struct Variant { const char* name; int prediction, clip, combine, eps_from, noise_term; };
  const Variant variants[] = {
      {"ddpm epsilon, clip, scalar noise", kPredictEpsilon, kX0Clamp, kCombineSample, kEpsilonFromModelOutput, kNoiseScalar},
      {"ddim epsilon, no clip, eta 0", kPredictEpsilon, kX0None, kCombineEpsilon, kEpsilonFromModelOutput, kNoiseNone},
      {"ddim v_prediction, clip, epsilon from clipped x0", kPredictV, kX0Clamp, kCombineEpsilon, kEpsilonFromClippedX0, kNoiseScalar},
      {"ddpm sample prediction", kPredictSample, kX0Clamp, kCombineSample, kEpsilonFromModelOutput, kNoiseScalar},
      {"ddpm learned_range variance", kPredictEpsilon, kX0Clamp, kCombineSample, kEpsilonFromModelOutput, kNoiseLearnedRange},
      {"ddpm learned variance", kPredictEpsilon, kX0None, kCombineSample, kEpsilonFromModelOutput, kNoiseLearnedVariance},
      {"ddpm dynamic thresholding", kPredictEpsilon, kX0DynamicThreshold, kCombineSample, kEpsilonFromModelOutput, kNoiseScalar},
      {"ddim dynamic thresholding, ratio at an exact rank", kPredictV, kX0DynamicThreshold, kCombineEpsilon, kEpsilonFromClippedX0, kNoiseNone},
  };
  for (const Variant& v : variants) {
    StepCoefficients c;
    c.prediction = v.prediction, c.x0_clip = v.clip, c.combine = v.combine, c.epsilon_from = v.eps_from;
    c.noise_term = v.noise_term;
    c.sqrt_alpha_prod = 0.3f, c.sqrt_beta_prod = 0.9539392f, c.clip_sample_range = 1.0f;
    c.dynamic_thresholding_ratio = 0.995f, c.sample_max_value = 1.0f;
    c.x0_coeff = 0.21f, c.other_coeff = 0.77f, c.noise_std = 0.13f, c.min_log = -9.0f, c.max_log = -2.5f;
    if (v.clip == kX0DynamicThreshold) {
      // A bound above every |x0| (up to ~13 for epsilon here, ~1.9 for v), so
      // the quantile decides s (a sabotaged rank fails both cases); ratio 1
      // lands on rank n - 1 exactly (hi == lo), 0.995 between two ranks.
      c.sample_max_value = 100.0f;
      if (v.prediction == kPredictV) c.dynamic_thresholding_ratio = 1.0f;
    }
    const bool learned = v.noise_term == kNoiseLearnedRange || v.noise_term == kNoiseLearnedVariance;
    Floats model = learned ? out2 : Floats(out2.begin(), out2.begin() + (size_t)B * n);
    if (v.noise_term == kNoiseLearnedVariance)  // a variance must be positive
      for (int b = 0; b < B; ++b)
        for (int i = 0; i < n; ++i) model[(size_t)b * 2 * n + n + i] = fabsf(model[(size_t)b * 2 * n + n + i]) + 1e-3f;
    const StepLayout layout = {B, n, learned ? 2 * n : n};
    run_case("diffusion_step", v.name, true, [&](Device& dev, Floats& ref, Floats& got) {
      Floats prev((size_t)B * n), x0((size_t)B * n);
      cpu->diffusion_step(c, layout, model.data(), sample.data(), noise.data(), prev.data(), x0.data());
      ref = prev;
      ref.insert(ref.end(), x0.begin(), x0.end());
      float* dm = dev.put(model);
      float* ds = dev.put(sample);
      float* dn = dev.put(noise);
      float* dp = dev.alloc(prev.size());
      float* dx0 = dev.alloc(x0.size());
      if (!dm || !ds || !dn || !dp || !dx0) return false;
      if (dev.ops->diffusion_step(c, layout, dm, ds, dn, dp, dx0) != kOk) return false;
      got = dev.get(dp, prev.size());
      auto g0 = dev.get(dx0, x0.size());
      got.insert(got.end(), g0.begin(), g0.end());
      return true;
    });
  }
  auto x0 = rng.vec((size_t)B * n);
  Floats sa = {0.99f, 0.5f, 0.01f}, sb = {0.1410674f, 0.8660254f, 0.99995f};
  run_case("diffusion_step", "add_noise, 3 samples", true, [&](Device& dev, Floats& ref, Floats& got) {
    ref.assign(x0.size(), 0.0f);
    cpu->add_noise(x0.data(), noise.data(), sa.data(), sb.data(), B, n, ref.data());
    float* dx = dev.put(x0);
    float* dn = dev.put(noise);
    float* dsa = dev.put(sa);
    float* dsb = dev.put(sb);
    float* dy = dev.alloc(x0.size());
    if (!dx || !dn || !dsa || !dsb || !dy) return false;
    dev.ops->add_noise(dx, dn, dsa, dsb, B, n, dy);
    got = dev.get(dy, x0.size());
    return true;
  });
}


// --- backward and the optimizer ---------------------------------------------------

// dX and dW/db of one convolution geometry; accumulated outputs start from
// random values (the backward adds into them). `model_type` float16 /
// bfloat16 (op "conv2d_backward_half"): dX from the data-gradient layout of a
// trainable model (kConvTrainable) and dW on tensor cores, both in bfloat16,
// against the CPU's fp32 ones of the inputs rounded to bfloat16.
void conv_backward_cases(Rng& rng, const ConvCase& cc, bool accumulate, WeightType model_type = WeightType::kFloat32) {
  const Ops* cpu = cpu_ops();
  const bool half = model_type != WeightType::kFloat32;
  const Ops* device = half ? g_half_ops[(int)model_type] : g_device_ops;
  if (!device) return;
  // Both half types' models run the backward's GEMMs in bfloat16 (conv2d_mma.cu).
  const WeightType type = half ? WeightType::kBfloat16 : WeightType::kFloat32;
  const int lh = cc.in_h * cc.upsample, lw = cc.in_w * cc.upsample;
  const int out_h = (lh + (cc.stride == 2 && cc.pad_top == 0 ? 1 : 2 * cc.pad_top) - cc.k) / cc.stride + 1;
  const int out_w = (lw + (cc.stride == 2 && cc.pad_left == 0 ? 1 : 2 * cc.pad_left) - cc.k) / cc.stride + 1;
  ConvGeometry g;
  g.batch = cc.batch, g.in_h = cc.in_h, g.in_w = cc.in_w, g.in_ld = cc.cin, g.upsample = cc.upsample;
  g.out_h = out_h, g.out_w = out_w, g.out_ld = cc.cout, g.stride = cc.stride, g.pad_top = cc.pad_top, g.pad_left = cc.pad_left;
  const size_t in_n = (size_t)cc.batch * cc.in_h * cc.in_w * cc.cin, out_n = (size_t)cc.batch * out_h * out_w * cc.cout;
  const int taps = cc.k * cc.k;
  auto x = rng.vec(in_n), dy = rng.vec(out_n), dx0 = rng.vec(in_n);
  auto w = rng.vec((size_t)cc.cout * cc.cin * taps, -0.2f, 0.2f);
  auto gw0 = rng.vec(w.size()), gb0 = rng.vec(cc.cout);
  const std::string geometry = shape("b%d %dx%d%s cin %d cout %d k%d s%d pad %d,%d", cc.batch, cc.in_h, cc.in_w,
                                     cc.upsample == 2 ? " up2" : "", cc.cin, cc.cout, cc.k, cc.stride, cc.pad_top, cc.pad_left);
  // The reference's inputs, and the device's (a dry run's CPU "device" cannot round them itself).
  const Floats w_ref = rounded(w, type), dy_ref = rounded(dy, type);
  const Floats& w_dev = device == cpu ? w_ref : w;
  const Floats& dy_dev = device == cpu ? dy_ref : dy;
  const std::string model = half ? std::string(type_name(model_type)) + " model, " : std::string();
  const std::string prefix = model + "dX ";
  run_case(half ? "conv2d_backward_half" : "conv2d_backward",
           prefix + geometry + (accumulate ? " (added)" : " (written)") + (cc.winograd_ref ? " (cpu: winograd)" : ""),
           false, [&](Device& dev, Floats& ref, Floats& got) {
             WeightSource src = {w_ref.data(), (long long)cc.cin * taps, taps, 1};
             int couts[1] = {cc.cout};
             Floats packed(cpu->conv_packed_floats(cc.cout, cc.cin, cc.k, cc.winograd_ref) + 64);
             PackedWeights pw;
             cpu->pack_conv(&pw, packed.data(), &src, couts, 1, cc.cin, cc.k, cc.winograd_ref);
             Floats scratch(cpu->conv2d_backward_data_scratch_floats(g, cc.cout, cc.cin, cc.k, cc.winograd_ref) + 64);
             Floats zero_row(cc.cin + cc.cout + 64, 0.0f);
             ref = dx0;
             cpu->conv2d_backward_data(dy_ref.data(), g, pw, ref.data(), scratch.data(), zero_row.data(), accumulate);
             const Ops* cu = dev.ops;
             const int algo = cc.winograd_ref | kConvTrainable;  // as the engine packs a model that may train
             float* dw = dev.alloc(cu->conv_packed_floats(cc.cout, cc.cin, cc.k, algo));
             float* ddy = dev.put(dy_dev);
             float* ddx = dev.put(dx0);
             float* dscratch = dev.alloc(cu->conv2d_backward_data_scratch_floats(g, cc.cout, cc.cin, cc.k, cc.winograd_ref));
             float* dzero = dev.zeros(zero_row.size());
             float* dsrc = dev.put(w_dev);
             if (!dw || !ddy || !ddx || !dscratch || !dzero || !dsrc) return false;
             PackedWeights dpw;
             WeightSource dsource = {dsrc, src.stride_n, src.stride_ci, src.stride_tap};
             cu->pack_conv(&dpw, dw, &dsource, couts, 1, cc.cin, cc.k, algo);
             cu->conv2d_backward_data(ddy, g, dpw, ddx, dscratch, dzero, accumulate);
             got = dev.get(ddx, in_n);
             return true;
           }, device);
  if (!accumulate) return;  // the weight gradient does not depend on it
  // Half: dW from dY and the input rounded to the type (the tensor cores'),
  // db from the unrounded dY (kept in float32 and double).
  const Floats x_ref = rounded(x, type);
  const Floats& x_dev = device == cpu ? x_ref : x;
  run_case(half ? "conv2d_backward_half" : "conv2d_backward", model + "dW, db " + geometry,
           false, [&](Device& dev, Floats& ref, Floats& got) {
    Floats scratch(cpu->conv2d_backward_weights_scratch_floats(g, cc.cout, cc.cin, cc.k) + 64);
    Floats zero_row(cc.cin + cc.cout + 64, 0.0f);
    Floats gw = gw0, gb = gb0;
    cpu->conv2d_backward_weights(x_ref.data(), g, dy_ref.data(), cc.cout, cc.cin, cc.k, gw.data(), gb.data(),
                                 scratch.data(), zero_row.data());
    if (half && device != cpu) {  // the bias gradient of the unrounded dY (a dry run's CPU "device" rounds it all)
      Floats unused = gw0;
      gb = gb0;
      cpu->conv2d_backward_weights(x.data(), g, dy.data(), cc.cout, cc.cin, cc.k, unused.data(), gb.data(),
                                   scratch.data(), zero_row.data());
    }
    ref = gw;
    ref.insert(ref.end(), gb.begin(), gb.end());
    const Ops* cu = dev.ops;
    float* dx = dev.put(x_dev);
    float* ddy = dev.put(device == cpu ? dy_ref : dy);
    float* dgw = dev.put(gw0);
    float* dgb = dev.put(gb0);
    float* dscratch = dev.alloc(cu->conv2d_backward_weights_scratch_floats(g, cc.cout, cc.cin, cc.k));
    float* dzero = dev.zeros(zero_row.size());
    if (!dx || !ddy || !dgw || !dgb || !dscratch || !dzero) return false;
    cu->conv2d_backward_weights(dx, g, ddy, cc.cout, cc.cin, cc.k, dgw, dgb, dscratch, dzero);
    got = dev.get(dgw, gw0.size());
    auto b = dev.get(dgb, gb0.size());
    got.insert(got.end(), b.begin(), b.end());
    return true;
  }, device);
}

// A linear layer's dW over a column slice of a wider gradient (attention's
// q|k|v), the way backward.cpp calls it.
void linear_weight_grad_case(Rng& rng, int rows, int cin, int cout, int dy_ld) {
  const Ops* cpu = cpu_ops();
  auto x = rng.vec((size_t)rows * cin), dy = rng.vec((size_t)rows * dy_ld + 1);  // read from dy + 1: an unaligned slice
  auto gw0 = rng.vec((size_t)cout * cin), gb0 = rng.vec(cout);
  ConvGeometry g = rows_geometry(rows, cin, cout);
  g.out_ld = dy_ld;
  run_case("conv2d_backward", shape("linear dW, db: %d rows, %d -> %d, dy ld %d", rows, cin, cout, dy_ld), false,
           [&](Device& dev, Floats& ref, Floats& got) {
             Floats scratch(cpu->conv2d_backward_weights_scratch_floats(g, cout, cin, 1) + 64), zero_row(cin + cout + 64, 0.0f);
             Floats gw = gw0, gb = gb0;
             cpu->conv2d_backward_weights(x.data(), g, dy.data() + 1, cout, cin, 1, gw.data(), gb.data(), scratch.data(),
                                          zero_row.data());
             ref = gw;
             ref.insert(ref.end(), gb.begin(), gb.end());
             const Ops* cu = dev.ops;
             float* dx = dev.put(x);
             float* ddy = dev.put(dy);
             float* dgw = dev.put(gw0);
             float* dgb = dev.put(gb0);
             float* dscratch = dev.alloc(cu->conv2d_backward_weights_scratch_floats(g, cout, cin, 1));
             if (!dx || !ddy || !dgw || !dgb || !dscratch) return false;
             cu->conv2d_backward_weights(dx, g, ddy + 1, cout, cin, 1, dgw, dgb, dscratch, nullptr);
             got = dev.get(dgw, gw0.size());
             auto b = dev.get(dgb, gb0.size());
             got.insert(got.end(), b.begin(), b.end());
             return true;
           });
}

void group_norm_backward_case(Rng& rng, int batch, int pixels, int channels, int groups, bool silu, bool scale_shift) {
  const Ops* cpu = cpu_ops();
  const size_t n = (size_t)batch * pixels * channels;
  auto x = rng.vec(n), dy = rng.vec(n), dx0 = rng.vec(n);
  for (auto& v : x) v = v * 2.0f + 0.5f;
  auto gamma = rng.vec(channels, 0.5f, 1.5f), beta = rng.vec(channels), ss = rng.vec((size_t)batch * 2 * channels, -0.5f, 0.5f);
  auto dg0 = rng.vec(channels), db0 = rng.vec(channels), dss0 = rng.vec(ss.size());
  run_case("group_norm_backward",
           shape("b%d %d px, C %d, G %d%s%s", batch, pixels, channels, groups, silu ? " +silu" : "", scale_shift ? " +scale_shift" : ""),
           false, [&](Device& dev, Floats& ref, Floats& got) {
             GroupNormArgs a;
             a.batch = batch, a.pixels = pixels, a.channels = channels, a.groups = groups, a.eps = 1e-5f, a.silu = silu;
             a.gamma = gamma.data(), a.beta = beta.data();
             a.scale_shift = scale_shift ? ss.data() : nullptr, a.scale_shift_ld = 2 * channels;
             // the statistics from the CPU forward, on both sides
             Floats y(n), stats(2 * (size_t)batch * groups);
             cpu->group_norm_forward(x.data(), a, y.data(), stats.data());
             Floats scratch(cpu->group_norm_backward_scratch_floats(a) + 64);
             Floats dx = dx0, dg = dg0, db = db0, dss = dss0;
             cpu->group_norm_backward(x.data(), a, stats.data(), dy.data(), dx.data(), dg.data(), db.data(),
                                      scale_shift ? dss.data() : nullptr, scratch.data());
             ref = dx;
             ref.insert(ref.end(), dg.begin(), dg.end());
             ref.insert(ref.end(), db.begin(), db.end());
             if (scale_shift) ref.insert(ref.end(), dss.begin(), dss.end());
             float* d_x = dev.put(x);
             float* d_dy = dev.put(dy);
             float* d_dx = dev.put(dx0);
             float* d_g = dev.put(gamma);
             float* d_b = dev.put(beta);
             float* d_ss = dev.put(ss);
             float* d_stats = dev.put(stats);
             float* d_dg = dev.put(dg0);
             float* d_db = dev.put(db0);
             float* d_dss = dev.put(dss0);
             float* d_scratch = dev.alloc(dev.ops->group_norm_backward_scratch_floats(a));
             if (!d_x || !d_dy || !d_dx || !d_g || !d_b || !d_ss || !d_stats || !d_dg || !d_db || !d_dss || !d_scratch) return false;
             GroupNormArgs d = a;
             d.gamma = d_g, d.beta = d_b, d.scale_shift = scale_shift ? d_ss : nullptr;
             dev.ops->group_norm_backward(d_x, d, d_stats, d_dy, d_dx, d_dg, d_db, scale_shift ? d_dss : nullptr, d_scratch);
             got = dev.get(d_dx, n);
             auto g1 = dev.get(d_dg, channels), g2 = dev.get(d_db, channels);
             got.insert(got.end(), g1.begin(), g1.end());
             got.insert(got.end(), g2.begin(), g2.end());
             if (scale_shift) {
               auto g3 = dev.get(d_dss, ss.size());
               got.insert(got.end(), g3.begin(), g3.end());
             }
             return true;
           });
}

void attention_backward_case(Rng& rng, int batch, int tokens, int heads, int head_dim, float spread = 1.5f) {
  const Ops* cpu = cpu_ops();
  const int C = heads * head_dim;
  auto qkv = rng.vec((size_t)batch * tokens * 3 * C, -spread, spread), dout = rng.vec((size_t)batch * tokens * C);
  std::string name = g_case_tag + shape("b%d, %d tokens, %d heads x %d", batch, tokens, heads, head_dim);
  if (spread != 1.5f) name += shape(", values within +-%g", spread);
  run_case("attention_backward", name, false,
           [&](Device& dev, Floats& ref, Floats& got) {
             AttentionArgs a;
             a.batch = batch, a.tokens = tokens, a.heads = heads, a.head_dim = head_dim;
             a.scale = 1.0f / sqrtf((float)head_dim);
             ref.assign(qkv.size(), 0.0f);
             Floats scratch(cpu->attention_backward_scratch_floats(a) + 64);
             cpu->attention_backward(qkv.data(), a, dout.data(), ref.data(), scratch.data());
             float* dq = dev.put(qkv);
             float* dd = dev.put(dout);
             float* dout_qkv = dev.alloc(qkv.size());
             float* ds = dev.alloc(dev.ops->attention_backward_scratch_floats(a));
             if (!dq || !dd || !dout_qkv || !ds) return false;
             dev.ops->attention_backward(dq, a, dd, dout_qkv, ds);
             got = dev.get(dout_qkv, qkv.size());
             return true;
           });
}

void elementwise_backward_cases(Rng& rng) {
  const Ops* cpu = cpu_ops();
  // resampling backward (bit-identical): dx starts random, the ops add into it
  const int B = 2, H = 6, W = 7, C = 5;
  auto run = [&](const char* name, size_t dy_n, size_t dx_n, const std::function<void(const Ops*, const float*, float*)>& f) {
    auto dy = rng.vec(dy_n), dx0 = rng.vec(dx_n);
    run_case("resample_backward", name, true, [&](Device& dev, Floats& ref, Floats& got) {
      ref = dx0;
      f(cpu, dy.data(), ref.data());
      float* ddy = dev.put(dy);
      float* ddx = dev.put(dx0);
      if (!ddy || !ddx) return false;
      f(dev.ops, ddy, ddx);
      got = dev.get(ddx, dx_n);
      return true;
    });
  };
  run("upsample_nearest2x_backward into a wider tensor (ld 8)", (size_t)B * 4 * H * W * C, (size_t)B * H * W * 8,
      [&](const Ops* o, const float* dy, float* dx) { o->upsample_nearest2x_backward(dy, B, H, W, C, dx, 8); });
  run("avgpool2x2_backward, odd width", (size_t)B * (H / 2) * (W / 2) * C, (size_t)B * H * W * C,
      [&](const Ops* o, const float* dy, float* dx) { o->avgpool2x2_backward(dy, B, H, W, C, dx); });
  run("concat_channels_backward (3 | 4)", (size_t)B * H * W * 7, (size_t)B * H * W * 7,
      [&](const Ops* o, const float* dy, float* dx) {
        // da and db live side by side in one buffer
        o->concat_channels_backward(dy, 3, 4, B * H * W, dx, dx + (size_t)B * H * W * 3);
      });
  auto x = rng.vec(50001, -20.0f, 20.0f), dy = rng.vec(50001), dx0 = rng.vec(50001);
  run_case("elementwise", "silu_backward, 50001 values", true, [&](Device& dev, Floats& ref, Floats& got) {
    ref = dx0;
    cpu->silu_backward(x.data(), dy.data(), (long long)x.size(), ref.data());
    float* d_x = dev.put(x);
    float* d_dy = dev.put(dy);
    float* d_dx = dev.put(dx0);
    if (!d_x || !d_dy || !d_dx) return false;
    dev.ops->silu_backward(d_x, d_dy, (long long)x.size(), d_dx);
    got = dev.get(d_dx, x.size());
    return true;
  });
}

void optimizer_cases(Rng& rng) {
  const Ops* cpu = cpu_ops();
  const size_t n = 70001;
  auto w0 = rng.vec(n), m0 = rng.vec(n, -0.01f, 0.01f), v0 = rng.vec(n, 0.0f, 1e-4f), g = rng.vec(n, -0.1f, 0.1f);
  for (float scale : {1.0f, 0.5f}) {
    AdamwCoefs c;
    c.decay = 1.0f - 1e-4f * 0.01f, c.one_minus_beta1 = 0.1f, c.beta2 = 0.999f, c.one_minus_beta2 = 0.001f;
    c.step_size = 1e-4f / 0.271f, c.bc2_sqrt = 0.0627f, c.eps = 1e-8f, c.scale = scale;
    run_case("optimizer", shape("adamw, %zu values, grad scale %g", n, scale), true, [&](Device& dev, Floats& ref, Floats& got) {
      Floats w = w0, m = m0, v = v0;
      cpu->adamw_update(w.data(), m.data(), v.data(), g.data(), n, c);
      ref = w;
      ref.insert(ref.end(), m.begin(), m.end());
      ref.insert(ref.end(), v.begin(), v.end());
      float* dw = dev.put(w0);
      float* dm = dev.put(m0);
      float* dv = dev.put(v0);
      float* dg = dev.put(g);
      if (!dw || !dm || !dv || !dg) return false;
      dev.ops->adamw_update(dw, dm, dv, dg, n, c);
      got = dev.get(dw, n);
      auto a = dev.get(dm, n), b = dev.get(dv, n);
      got.insert(got.end(), a.begin(), a.end());
      got.insert(got.end(), b.begin(), b.end());
      return true;
    });
  }
  run_case("optimizer", "ema decay 0.9999", true, [&](Device& dev, Floats& ref, Floats& got) {
    ref = m0;
    cpu->ema_update(ref.data(), w0.data(), n, (float)(1.0 - 0.9999));
    float* de = dev.put(m0);
    float* dw = dev.put(w0);
    if (!de || !dw) return false;
    dev.ops->ema_update(de, dw, n, (float)(1.0 - 0.9999));
    got = dev.get(de, n);
    return true;
  });
}

// The ops the training step added to the seam: the loss and its gradient,
// the row-lookup gradient, the backward's elementwise pieces, the norm's sums.
void training_cases(Rng& rng) {
  const Ops* cpu = cpu_ops();
  const int B = 3, C = 3, pixels = 50;
  const size_t n = (size_t)B * C * pixels;
  auto out = rng.vec(n, -2.0f, 2.0f), x0 = rng.vec(n), noise = rng.vec(n, -2.0f, 2.0f);
  Floats sa = {0.9f, 0.5f, 0.1f}, sb = {0.43589f, 0.86603f, 0.99499f}, weights = {0.5f, 1.0f, 2.0f};
  Floats timesteps = {3.0f, 400.0f, 999.0f};
  for (int variant = 0; variant < 3; ++variant) {
    DiffusionLossArgs a;
    a.batch = B, a.channels = C, a.pixels = pixels, a.target = variant;
    const char* label = variant == 0 ? "diffusion_loss epsilon" : variant == 1 ? "diffusion_loss sample, loss weights"
                                                                               : "diffusion_loss v_prediction, fourier 1/t";
    // dy must be bit-identical; the per-sample sums differ in double rounding only.
    for (bool sums_case : {false, true})
      run_case("diffusion_loss", std::string(label) + (sums_case ? ": per-sample squared sums" : ": gradient"), !sums_case,
               [&](Device& dev, Floats& ref, Floats& got) {
                 DiffusionLossArgs h = a;
                 h.x0 = x0.data(), h.noise = noise.data(), h.sqrt_alpha_prod = sa.data();
                 h.sqrt_one_minus_alpha_prod = sb.data();
                 h.loss_weights = variant == 1 ? weights.data() : nullptr;
                 h.divisors = variant == 2 ? timesteps.data() : nullptr;
                 Floats dy(n, 0.0f);
                 double sums[B];
                 cpu->diffusion_loss(out.data(), h, dy.data(), sums);
                 ref = dy;
                 if (sums_case) ref.assign(sums, sums + B);
                 DiffusionLossArgs d = a;
                 float* dout = dev.put(out);
                 float* ddy = dev.alloc(n);
                 float* dsums = dev.alloc(2 * B);
                 d.x0 = dev.put(x0), d.noise = dev.put(noise), d.sqrt_alpha_prod = dev.put(sa);
                 d.sqrt_one_minus_alpha_prod = dev.put(sb);
                 d.loss_weights = variant == 1 ? dev.put(weights) : nullptr;
                 d.divisors = variant == 2 ? dev.put(timesteps) : nullptr;
                 if (!dout || !ddy || !dsums || !d.x0 || !d.noise || !d.sqrt_alpha_prod || !d.sqrt_one_minus_alpha_prod)
                   return false;
                 dev.ops->diffusion_loss(dout, d, ddy, reinterpret_cast<double*>(dsums));
                 got = dev.get(ddy, n);
                 if (sums_case) {
                   double gsums[B];
                   dev.ops->download(gsums, dsums, sizeof(gsums));
                   got.assign(gsums, gsums + B);
                 }
                 return true;
               });
  }
  auto table = rng.vec(10 * 40), rows = rng.vec(5 * 40);
  Floats idx = {3, 0, 9, 3, 3};  // repeated rows add in order of b
  run_case("embed_backward", "scatter_add_rows, 5 rows into 10 (repeats)", true, [&](Device& dev, Floats& ref, Floats& got) {
    ref = table;
    cpu->scatter_add_rows(ref.data(), 40, idx.data(), 5, rows.data());
    float* dt = dev.put(table);
    float* di = dev.put(idx);
    float* dr = dev.put(rows);
    if (!dt || !di || !dr) return false;
    dev.ops->scatter_add_rows(dt, 40, di, 5, dr);
    got = dev.get(dt, table.size());
    return true;
  });
  auto x = rng.vec(30011, -3.0f, 3.0f);
  run_case("elementwise", "divide_scalar by 1.4142135, 30011 values", true, [&](Device& dev, Floats& ref, Floats& got) {
    ref.assign(x.size(), 0.0f);
    cpu->divide_scalar(x.data(), 1.4142135f, (long long)x.size(), ref.data());
    float* dx = dev.put(x);
    float* dy = dev.alloc(x.size());
    if (!dx || !dy) return false;
    dev.ops->divide_scalar(dx, 1.4142135f, (long long)x.size(), dy);
    got = dev.get(dy, x.size());
    return true;
  });
  auto dy = rng.vec(2 * 70 * 96), bias0 = rng.vec(2 * 96);
  run_case("elementwise", "add_broadcast_backward, b2, 70 pixels, 96 channels", true,
           [&](Device& dev, Floats& ref, Floats& got) {
             ref = bias0;
             cpu->add_broadcast_backward(dy.data(), 2, 70, 96, ref.data());
             float* ddy = dev.put(dy);
             float* db = dev.put(bias0);
             if (!ddy || !db) return false;
             dev.ops->add_broadcast_backward(ddy, 2, 70, 96, db);
             got = dev.get(db, bias0.size());
             return true;
           });
  auto grad = rng.vec(100003, -0.1f, 0.1f);
  run_case("grad_norm", "sum_squares, 100003 values", false,
           [&](Device& dev, Floats& ref, Floats& got) {
             double sum = 0;
             cpu->sum_squares(grad.data(), grad.size(), &sum);
             ref.assign(1, (float)sum);
             float* dg = dev.put(grad);
             float* dsum = dev.alloc(2);
             if (!dg || !dsum) return false;
             dev.ops->sum_squares(dg, grad.size(), reinterpret_cast<double*>(dsum));
             double gsum = 0;
             dev.ops->download(&gsum, dsum, sizeof(gsum));
             got.assign(1, (float)gsum);
             return true;
           });
}

}  // namespace
}  // namespace mb

using namespace mb;

namespace mb {
// Every case, with `device_ops` as the side under test (also the entry of
// the CUDA emulation test, native/cuda/emulation/main.cpp).
int run_parity(const Ops* device_ops, uint32_t seed);
}  // namespace mb

MB_API int mb_cuda_parity_run(int device, uint32_t seed, int dry_run) {
  g_cases.clear();
  if (dry_run) {
    g_half_ops[1] = g_half_ops[2] = cpu_ops();
    return run_parity(cpu_ops(), seed);
  }
  char reason[400];
  if (cuda::select_device(device, reason, sizeof(reason)) != kOk || !cuda_ops()) return 0;
  g_half_ops[1] = cuda_ops_table(WeightType::kFloat16);
  g_half_ops[2] = cuda_ops_table(WeightType::kBfloat16);
  return run_parity(cuda_ops(), seed);
}

int mb::run_parity(const Ops* device_ops, uint32_t seed) {
  g_cases.clear();
  g_device_ops = device_ops;
  Rng rng(seed);
  // conv2d: the UNet's shapes (conv_in, resnet convs with the time bias and the
  // residual, the shortcut, down- and upsampling), odd sizes that leave partial
  // tiles, and the CPU's Winograd path as the reference where the UNet uses it.
  conv_case(rng, {2, 3, 32, 3, 8, 8, 1, 1, 1, 1, true, false, false, false, 1.0f});
  conv_case(rng, {2, 3, 32, 3, 8, 8, 1, 1, 1, 1, true, false, false, true, 1.0f});
  conv_case(rng, {2, 64, 64, 3, 16, 16, 1, 1, 1, 1, true, true, false, true, 1.0f});
  conv_case(rng, {3, 48, 80, 3, 9, 7, 1, 1, 1, 1, true, false, true, false, 1.0f});
  conv_case(rng, {2, 35, 70, 3, 5, 6, 1, 1, 1, 1, true, true, true, false, 1.4142135f});
  conv_case(rng, {2, 64, 96, 1, 8, 8, 1, 1, 0, 0, true, false, false, false, 1.0f});
  conv_case(rng, {2, 32, 32, 3, 16, 16, 1, 2, 1, 1, true, false, false, false, 1.0f});
  conv_case(rng, {2, 32, 32, 3, 15, 15, 1, 2, 0, 0, true, false, false, false, 1.0f});
  conv_case(rng, {2, 64, 64, 3, 8, 8, 2, 1, 1, 1, true, false, false, false, 1.0f});
  conv_case(rng, {2, 64, 64, 3, 8, 8, 2, 1, 1, 1, true, false, false, true, 1.0f});
  conv_case(rng, {1, 128, 3, 3, 32, 32, 1, 1, 1, 1, true, false, false, true, 1.0f});
  conv_case(rng, {4, 256, 256, 3, 4, 4, 1, 1, 1, 1, true, true, true, false, 1.0f});
  linear_case(rng, 3, 128, 512, false, false);
  linear_case(rng, 70, 96, 3 * 96, true, false);
  linear_case(rng, 130, 64, 64, false, true);
  // Split-K (conv2d.cu, conv2d_mma.cu: GEMMs with too few tiles to fill the GPU):
  // forced here, since the emulation's one multiprocessor never asks for
  // it; split counts that do not divide the 16-deep chunks, every epilogue
  // term, a residual in place.
  if (g_device_ops != cpu_ops()) {
    for (int splits : {3, 7}) {
      cuda::conv_split_force(splits);
      g_case_tag = "split-K " + std::to_string(splits) + " ";
      conv_case(rng, {1, 256, 256, 3, 4, 4, 1, 1, 1, 1, true, true, true, false, 1.4142135f});
      conv_case(rng, {2, 48, 80, 3, 9, 7, 1, 1, 1, 1, true, false, true, false, 1.0f});
      conv_case(rng, {2, 64, 96, 1, 8, 8, 1, 1, 0, 0, true, true, false, false, 1.0f});
      conv_case(rng, {2, 64, 64, 3, 8, 8, 2, 1, 1, 1, true, false, false, false, 1.0f});
      // The tensor-core GEMMs' 64 x 64 tiles (32-deep slices): the 8-channel vector path and the general gather.
      for (WeightType t : {WeightType::kFloat16, WeightType::kBfloat16}) {
        conv_case(rng, {2, 64, 64, 3, 8, 8, 2, 1, 1, 1, true, true, true, false, 1.4142135f}, t);
        conv_case(rng, {2, 35, 70, 3, 5, 6, 1, 1, 1, 1, true, false, false, false, 1.0f}, t);
        conv_case(rng, {1, 64, 256, 3, 4, 4, 1, 1, 1, 1, true, true, true, false, 1.4142135f}, t, true);
      }
    }
    cuda::conv_split_force(0);
    g_case_tag.clear();
  }
  // The tensor-core GEMMs (conv2d_mma.cu), per half type: odd M, N and K
  // (partial tiles and K slices), channel counts off the 8-wide vector loads
  // (3, 35: the general gather, 64 x 64 tiles), both tile sizes of the vector
  // path (128 x 128 for N > 64 when there are enough tiles: always under the
  // emulation's one multiprocessor), every epilogue term, stride 2,
  // upsampling, fused q|k|v sources and a residual in place.
  for (WeightType t : {WeightType::kFloat16, WeightType::kBfloat16}) {
    conv_case(rng, {2, 3, 32, 3, 8, 8, 1, 1, 1, 1, true, false, false, false, 1.0f}, t);
    conv_case(rng, {3, 48, 80, 3, 9, 7, 1, 1, 1, 1, true, false, true, false, 1.0f}, t);
    conv_case(rng, {2, 35, 70, 3, 5, 6, 1, 1, 1, 1, true, true, true, false, 1.4142135f}, t);
    conv_case(rng, {2, 32, 32, 3, 15, 15, 1, 2, 0, 0, true, false, false, false, 1.0f}, t);
    conv_case(rng, {2, 64, 64, 3, 8, 8, 2, 1, 1, 1, true, false, false, false, 1.0f}, t);
    conv_case(rng, {2, 64, 96, 1, 8, 8, 1, 1, 0, 0, true, true, false, false, 1.0f}, t);
    conv_case(rng, {1, 16, 136, 3, 20, 20, 1, 1, 1, 1, false, false, true, false, 2.0f}, t);
    linear_case(rng, 3, 128, 512, false, false, t);
    linear_case(rng, 70, 96, 3 * 96, true, false, t);
    linear_case(rng, 130, 64, 64, false, true, t);
    // Half activations: the input already in the type (the 8-channel kernels
    // only), read by cp.async; the resnets' convs, conv_out, the qkv linear.
    conv_case(rng, {3, 48, 80, 3, 9, 7, 1, 1, 1, 1, true, false, true, false, 1.0f}, t, true);
    conv_case(rng, {2, 64, 64, 3, 8, 8, 1, 1, 1, 1, true, true, true, false, 1.4142135f}, t, true);
    conv_case(rng, {1, 128, 3, 3, 32, 32, 1, 1, 1, 1, true, false, false, false, 1.0f}, t, true);
    conv_case(rng, {2, 64, 64, 3, 8, 8, 2, 1, 1, 1, true, false, false, false, 1.0f}, t, true);
    conv_case(rng, {2, 32, 32, 3, 15, 15, 1, 2, 0, 0, true, false, false, false, 1.0f}, t, true);
    linear_case(rng, 70, 96, 3 * 96, true, false, t, true);
  }
  // The 8-channel cases with N > 64 again with the 128 x 128 tiles forced
  // (a GPU gives these small GEMMs the 64 x 64 ones: too few tiles), on
  // mma.sync, then on Hopper's warpgroup MMA (conv2d_mma.cu's
  // conv_wgmma_gemm) where this build and device have it (sm_90a, or the
  // emulation).
  if (g_device_ops != cpu_ops()) {
    const bool was_on = cuda::conv_wgmma_enabled();
    cuda::conv_force_large_tiles(true);
    for (bool wgmma : {false, true}) {
      if (cuda::conv_wgmma_set(wgmma) != wgmma) continue;
      g_case_tag = wgmma ? "wgmma " : "128x128 ";
      for (WeightType t : {WeightType::kFloat16, WeightType::kBfloat16}) {
        conv_case(rng, {3, 48, 80, 3, 9, 7, 1, 1, 1, 1, true, false, true, false, 1.0f}, t);
        conv_case(rng, {2, 64, 96, 1, 8, 8, 1, 1, 0, 0, true, true, false, false, 1.0f}, t);
        conv_case(rng, {1, 16, 136, 3, 20, 20, 1, 1, 1, 1, false, false, true, false, 2.0f}, t);
        conv_case(rng, {2, 128, 256, 3, 6, 6, 1, 1, 1, 1, true, true, true, false, 1.4142135f}, t);
        linear_case(rng, 3, 128, 512, false, false, t);
        linear_case(rng, 70, 96, 3 * 96, true, false, t);
        conv_case(rng, {3, 48, 80, 3, 9, 7, 1, 1, 1, 1, true, false, true, false, 1.0f}, t, true);
        conv_case(rng, {2, 128, 256, 3, 6, 6, 1, 1, 1, 1, true, true, true, false, 1.4142135f}, t, true);
        linear_case(rng, 70, 96, 3 * 96, true, false, t, true);
      }
    }
    g_case_tag.clear();
    cuda::conv_force_large_tiles(false);
    cuda::conv_wgmma_set(was_on);
  }
  group_norm_case(rng, 2, 64, 64, 32, true, false, 0.0f);
  group_norm_case(rng, 2, 64, 64, 32, true, true, 0.0f);
  group_norm_case(rng, 3, 49, 96, 8, false, false, 40.0f);
  group_norm_case(rng, 1, 1024, 128, 32, true, false, -3.0f);
  for (WeightType t : {WeightType::kFloat16, WeightType::kBfloat16}) {
    group_norm_half_case(rng, t, 2, 64, 64, 32, true, false);
    group_norm_half_case(rng, t, 2, 49, 96, 8, true, true);
    group_norm_half_case(rng, t, 3, 16, 40, 8, false, false);
  }
  attention_case(rng, 2, 64, 1, 64);
  attention_case(rng, 2, 100, 4, 32);
  attention_case(rng, 1, 256, 2, 64);
  attention_case(rng, 3, 16, 8, 8);
  // The fused (flash-style) kernel, which a GPU takes from 1024 tokens on:
  // forced here for small cases. Partial query and key tiles, several query
  // tiles, head sizes off the 16-wide padding (40), wide scores whose
  // running maximum moves from tile to tile.
  if (g_device_ops != cpu_ops()) {
    cuda::attention_flash_mode(1);
    g_case_tag = "fused ";
    attention_case(rng, 2, 64, 1, 64);
    attention_case(rng, 2, 100, 4, 32);
    attention_case(rng, 3, 16, 8, 8);
    attention_case(rng, 1, 300, 2, 40);
    attention_case(rng, 2, 150, 2, 16, 6.0f);
    attention_case(rng, 1, 70, 1, 64, 4.0f);
    g_case_tag.clear();
    cuda::attention_flash_mode(0);
  }
  resample_cases(rng);
  embed_cases(rng);
  elementwise_cases(rng);
  noise_cases(rng);
  step_cases(rng);
  // The backward and the optimizer last, so that a fault there cannot hide a forward result.
  conv_backward_cases(rng, {2, 32, 48, 3, 8, 8, 1, 1, 1, 1, true, false, false, false, 1.0f}, true);
  conv_backward_cases(rng, {2, 32, 48, 3, 8, 8, 1, 1, 1, 1, true, false, false, false, 1.0f}, false);
  conv_backward_cases(rng, {2, 64, 64, 3, 16, 16, 1, 1, 1, 1, true, false, false, true, 1.0f}, true);
  conv_backward_cases(rng, {2, 32, 40, 3, 16, 16, 1, 2, 1, 1, true, false, false, false, 1.0f}, true);
  conv_backward_cases(rng, {2, 32, 32, 3, 15, 15, 1, 2, 0, 0, true, false, false, false, 1.0f}, true);
  conv_backward_cases(rng, {2, 48, 48, 3, 8, 8, 2, 1, 1, 1, true, false, false, false, 1.0f}, true);
  conv_backward_cases(rng, {2, 64, 96, 1, 8, 8, 1, 1, 0, 0, true, false, false, false, 1.0f}, true);
  conv_backward_cases(rng, {8, 128, 128, 3, 8, 8, 1, 1, 1, 1, true, false, false, false, 1.0f}, true);
  // The half types' gradients. dX (a trainable model's transposed, flipped
  // layout): on the tensor-core kernels for stride 1 (both tile sizes, the
  // general gather for cout off the 8-wide loads, upsampling, 1x1, added and
  // written), through the fp32 kernel for stride 2. dW (the "added" cases):
  // the tensor-core weight gradient, partial tiles in n and k included. The
  // sums are <= 576 long (K = taps * cout for dX, the pixels for dW), as for
  // conv2d_half's bound.
  for (WeightType t : {WeightType::kFloat16, WeightType::kBfloat16}) {
    conv_backward_cases(rng, {2, 32, 48, 3, 8, 8, 1, 1, 1, 1, true, false, false, false, 1.0f}, true, t);
    conv_backward_cases(rng, {2, 32, 48, 3, 8, 8, 1, 1, 1, 1, true, false, false, false, 1.0f}, false, t);
    conv_backward_cases(rng, {2, 16, 35, 3, 5, 6, 1, 1, 1, 1, true, false, false, false, 1.0f}, true, t);
    conv_backward_cases(rng, {2, 16, 2, 3, 8, 8, 1, 1, 1, 1, true, false, false, false, 1.0f}, false, t);  // conv_out's
    conv_backward_cases(rng, {2, 96, 64, 3, 8, 8, 1, 1, 1, 1, true, false, false, false, 1.0f}, true, t);
    conv_backward_cases(rng, {2, 48, 48, 3, 8, 8, 2, 1, 1, 1, true, false, false, false, 1.0f}, true, t);
    conv_backward_cases(rng, {2, 64, 96, 1, 8, 8, 1, 1, 0, 0, true, false, false, false, 1.0f}, true, t);
    conv_backward_cases(rng, {2, 32, 40, 3, 16, 16, 1, 2, 1, 1, true, false, false, false, 1.0f}, true, t);
    conv_backward_cases(rng, {2, 32, 32, 3, 15, 15, 1, 2, 0, 0, true, false, false, false, 1.0f}, true, t);
    conv_backward_cases(rng, {3, 16, 24, 3, 15, 15, 1, 1, 1, 1, true, false, false, false, 1.0f}, true, t);  // dW: 2 splits, a partial slice
  }
  linear_weight_grad_case(rng, 100, 64, 64, 3 * 64);
  linear_weight_grad_case(rng, 4, 128, 512, 512);
  group_norm_backward_case(rng, 2, 64, 64, 32, true, false);
  group_norm_backward_case(rng, 2, 64, 64, 32, true, true);
  group_norm_backward_case(rng, 3, 49, 96, 8, false, false);
  attention_backward_case(rng, 2, 64, 1, 64);
  attention_backward_case(rng, 2, 100, 4, 32);
  // The fused backward (where the forward fuses), forced for small cases as above.
  if (g_device_ops != cpu_ops()) {
    cuda::attention_flash_mode(1);
    g_case_tag = "fused ";
    attention_backward_case(rng, 2, 64, 1, 64);
    attention_backward_case(rng, 2, 100, 4, 32);
    attention_backward_case(rng, 1, 300, 2, 40);
    attention_backward_case(rng, 2, 150, 2, 16, 4.0f);
    g_case_tag.clear();
    cuda::attention_flash_mode(0);
  }
  elementwise_backward_cases(rng);
  optimizer_cases(rng);
  training_cases(rng);
  return (int)g_cases.size();
}

namespace {
// The benchmarks' timing: `launch` once to warm up, then `iterations` times;
// the mean ms per launch in *ms. kOk, or the device's failure (its message in reason).
int time_launches(const Ops* ops, int iterations, double* ms, char* reason, int reason_len,
                  const std::function<void()>& launch) {
  launch();
  int status = ops->sync();
  if (status == kOk) {
    const auto start = std::chrono::steady_clock::now();
    for (int i = 0; i < iterations; ++i) launch();
    status = ops->sync();
    *ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count() / iterations;
  }
  if (status != kOk) copy_text(reason, (size_t)reason_len, ops->error_message());
  return status;
}
}  // namespace

MB_API int mb_cuda_conv_bench(int device, int weight_type, int flags, int batch, int cin, int cout, int h, int w,
                              int iterations, double* ms, char* reason, int reason_len) {
  const bool wgmma = (flags & kConvBenchWgmma) != 0, half_input = (flags & kConvBenchHalfInput) != 0;
  *ms = 0.0;
  auto fail = [&](int status, const char* text) {
    copy_text(reason, (size_t)reason_len, text);
    return status;
  };
  if (weight_type < 0 || weight_type > 2 || batch < 1 || cin < 1 || cout < 1 || h < 1 || w < 1 || iterations < 1)
    return fail(kErrInvalidArgument, "conv bench: a size or the weight type is out of range");
  if (cuda::select_device(device, reason, reason_len) != kOk || !cuda_ops()) return kErrUnsupported;
  const WeightType type = (WeightType)weight_type;
  const Ops* ops = cuda_ops_table(type);
  if (half_input && !ops->conv2d_forward_half_input)
    return fail(kErrUnsupported, "conv bench: a half input needs a half weight type");
  const bool was_on = cuda::conv_wgmma_enabled();
  if (cuda::conv_wgmma_set(wgmma && type != WeightType::kFloat32) != wgmma) {
    cuda::conv_wgmma_set(was_on);
    return fail(kErrUnsupported, "conv bench: the warpgroup MMA needs a half weight type and an sm_90a device");
  }
  ConvGeometry g;
  g.batch = batch, g.in_h = h, g.in_w = w, g.in_ld = cin, g.upsample = 1;
  g.out_h = h, g.out_w = w, g.out_ld = cout, g.stride = 1, g.pad_top = 1, g.pad_left = 1;
  Rng rng(7);
  const size_t in_n = (size_t)batch * h * w * cin, out_n = (size_t)batch * h * w * cout;
  int status = kOk;
  {
    Device dev(ops);
    float* dw = dev.alloc(ops->conv_packed_floats(cout, cin, 3, false));
    float* dx = dev.put(half_input ? half_packed(rng.vec(in_n), type) : rng.vec(in_n));
    float* dout = dev.alloc(out_n);
    float* dbias = dev.put(rng.vec((size_t)cout));
    float* dsrc = dev.put(rng.vec((size_t)cout * cin * 9, -0.05f, 0.05f));
    float* dzero = dev.zeros((size_t)cin + cout + 64);
    float* dscratch = dev.alloc(ops->conv_scratch_floats(g, cout, cin, 3, false));
    if (!dw || !dx || !dout || !dbias || !dsrc || !dzero || !dscratch) {
      cuda::conv_wgmma_set(was_on);
      return fail(kErrOutOfMemory, "conv bench: device allocation failed");
    }
    PackedWeights pw;
    WeightSource source = {dsrc, (long long)cin * 9, 9, 1};
    int couts[1] = {cout};
    ops->pack_conv(&pw, dw, &source, couts, 1, cin, 3, false);
    ConvEpilogue ep;
    ep.bias = dbias;
    ep.divisor = 1.0f;
    status = time_launches(ops, iterations, ms, reason, reason_len, [&]() {
      if (half_input)
        ops->conv2d_forward_half_input(dx, g, pw, ep, dout, dzero, dscratch);
      else
        ops->conv2d_forward(dx, g, pw, ep, dout, dzero, dscratch);
    });
  }
  cuda::conv_wgmma_set(was_on);
  return status;
}

MB_API int mb_cuda_attention_bench(int device, int fused, int batch, int tokens, int heads, int head_dim,
                                   int iterations, double* ms, char* reason, int reason_len) {
  *ms = 0.0;
  auto fail = [&](int status, const char* text) {
    copy_text(reason, (size_t)reason_len, text);
    return status;
  };
  if (batch < 1 || tokens < 1 || heads < 1 || head_dim < 1 || iterations < 1)
    return fail(kErrInvalidArgument, "attention bench: a size is out of range");
  if (fused && head_dim > 64) return fail(kErrUnsupported, "attention bench: the fused kernel takes heads of up to 64 channels");
  if (cuda::select_device(device, reason, reason_len) != kOk || !cuda_ops()) return kErrUnsupported;
  const Ops* ops = cuda_ops();
  AttentionArgs a;
  a.batch = batch, a.tokens = tokens, a.heads = heads, a.head_dim = head_dim;
  a.scale = 1.0f / sqrtf((float)head_dim);
  const size_t rows = (size_t)batch * tokens, C = (size_t)heads * head_dim;
  cuda::attention_flash_mode(fused ? 1 : -1);
  int status = kOk;
  {
    Device dev(ops);
    Rng rng(11);
    float* dqkv = dev.put(rng.vec(rows * 3 * C));
    float* dout = dev.alloc(rows * C);
    float* dscratch = dev.alloc(ops->attention_scratch_floats(a));
    float* dzero = dev.zeros(3 * C + 64);
    if (!dqkv || !dout || !dscratch || !dzero) {
      cuda::attention_flash_mode(0);
      return fail(kErrOutOfMemory, "attention bench: device allocation failed");
    }
    status = time_launches(ops, iterations, ms, reason, reason_len,
                           [&]() { ops->attention_forward(dqkv, a, dout, dscratch, dzero); });
  }
  cuda::attention_flash_mode(0);
  return status;
}

MB_API int mb_cuda_parity_case(int index, MbParityCase* out) {
  if (index < 0 || index >= (int)g_cases.size()) return kErrInvalidArgument;
  *out = g_cases[(size_t)index];
  return kOk;
}
