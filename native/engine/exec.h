// Internal to the engine: what the forward (unet.cpp) and the backward
// (backward.cpp) share: message buffers, the execution context, and thin
// wrappers that run one layer's op with the model's weights.
#pragma once

#include "../cpu/ops.h"
#include "mathf.h"
#include "ops.h"
#include "unet.h"

namespace mb {

// ---------------------------------------------------------------------------
// Small string helpers (no libc in the wasm build).

struct Name {
  char text[kMaxNameLength];
  int length = 0;
  Name() { text[0] = 0; }
  explicit Name(const char* s) {
    text[0] = 0;
    add(s);
  }
  Name& add(const char* s) {
    while (*s && length < kMaxNameLength - 1) text[length++] = *s++;
    text[length] = 0;
    return *this;
  }
  Name& add_int(long long v) {
    char digits[24];
    int n = 0;
    bool negative = v < 0;
    unsigned long long u = negative ? (unsigned long long)(-v) : (unsigned long long)v;
    do {
      digits[n++] = (char)('0' + u % 10);
      u /= 10;
    } while (u);
    if (negative) add("-");
    while (n && length < kMaxNameLength - 1) text[length++] = digits[--n];
    text[length] = 0;
    return *this;
  }
  Name with(const char* suffix) const {
    Name copy = *this;
    copy.add(suffix);
    return copy;
  }
};

inline int set_error(Model* m, int status, const Name& message) {
  int i = 0;
  for (; message.text[i] && i < (int)sizeof(m->error) - 1; ++i) m->error[i] = message.text[i];
  m->error[i] = 0;
  return status;
}

// Error messages can be longer than a parameter name; build them in a bigger buffer.
struct Message {
  char text[512];
  int length = 0;
  Message() { text[0] = 0; }
  Message& add(const char* s) {
    while (*s && length < 511) text[length++] = *s++;
    text[length] = 0;
    return *this;
  }
  Message& add_int(long long v) {
    Name n;
    n.add_int(v);
    return add(n.text);
  }
};

inline int fail(Model* m, int status, const Message& message) {
  int i = 0;
  for (; message.text[i] && i < (int)sizeof(m->error) - 1; ++i) m->error[i] = message.text[i];
  m->error[i] = 0;
  return status;
}

// The context of one forward (or backward) pass. In planning mode nothing
// runs: the pass only allocates from the arena, to measure it.
struct Exec {
  Model* m;
  Arena* arena;
  bool planning;
  int batch;
  const float* zero_row;
  float* silu_emb;  // SiLU(temb), shared by every resnet's time projection
  bool training = false;  // keep what the backward needs; release nothing
  uint64_t dropout_seed = 0;
  uint64_t dropout_streams = 0;  // one mask stream per resnet, in graph order
  int status = kOk;
  Message error;
  float* temb_projs = nullptr;  // every resnet's time projection: [batch][m->temb_projs.cout]

  Act alloc(int h, int w, int c) { return Act{arena->alloc((uint64_t)batch * h * w * c), h, w, c}; }
  // Room for h x w x c elements of the model's half type (2 bytes each).
  Act alloc_half(int h, int w, int c) {
    return Act{arena->alloc(((uint64_t)batch * h * w * c + 1) / 2), h, w, c, true};
  }
  // Whether a GroupNorm output of `channels` that only a GEMM reads is
  // written in the half type: at inference, on a device that has them.
  bool half_activations(int channels) const {
    return !training && ops().group_norm_forward_half && ops().conv2d_forward_half_input && channels % 8 == 0;
  }
  // A zero-filled buffer (gradients accumulate into these), in the device's memory.
  Act zeros(int h, int w, int c) {
    Act a = alloc(h, w, c);
    if (run()) ops().zero(a.data, sizeof(float) * a.floats(batch));
    return a;
  }
  float* zeros(size_t n) {
    float* p = arena->alloc(n);
    if (run()) ops().zero(p, sizeof(float) * n);
    return p;
  }
  bool run() const { return !planning && status == kOk; }
  const Ops& ops() const { return *m->ops; }
  uint64_t mark() const { return arena->mark(); }
  void release(uint64_t mark) {
    if (!training) arena->release(mark);
  }
  void fail_with(const Message& msg) {
    if (status == kOk) {
      status = kErrInvalidArgument;
      error = msg;
    }
  }
};

// A parameter as the model's ops read it (a device copy on cuda).
inline const float* P(Exec& ex, int index) { return ex.m->params[index].dev; }

inline ConvGeometry make_geometry(const Exec& ex, const Act& x, int upsample, int stride, int pad_top, int pad_left,
                                  const Act& y) {
  ConvGeometry g;
  g.batch = ex.batch;
  g.in_h = x.h;
  g.in_w = x.w;
  g.in_ld = x.c;
  g.upsample = upsample;
  g.out_h = y.h;
  g.out_w = y.w;
  g.out_ld = y.c;
  g.stride = stride;
  g.pad_top = pad_top;
  g.pad_left = pad_left;
  return g;
}

}  // namespace mb
