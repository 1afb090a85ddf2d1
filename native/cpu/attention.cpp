// Multi-head self-attention over a fused qkv buffer, as two GEMMs per
// (sample, head) through the convolution driver: S = Q K^T (K packed as the
// weight matrix), softmax over rows of S, then O = P V (V packed, transposed).
// Queries are processed in blocks so that S never exceeds a few MB, whatever
// the token count.
//
// Backward (at the end): recomputes P = softmax(scale * Q K^T) per head (or,
// small heads in training, reads what the forward kept: AttentionArgs::probs), then
// dV = P^T dO, dP = dO V^T, dS = P * (dP - rowsum(dP * P)) * scale,
// dQ = dS K, dK = dS^T Q, all through the GEMM driver.
//
// Small heads (head_dim <= 16, the 8 diffusers' UNet2DModel defaults to):
// GEMMs whose K or N is the head size waste most of a register tile and
// spend more on packing than on arithmetic, so those pairs run direct loops
// instead, one query row at a time, vectorised over keys or head channels
// (attention_lanes.h). Each pair is still one thread's, in a fixed order.
#include "../engine/mathf.h"
#include "ops.h"
#include "softmax_sum.h"

// The small-head loops at four lanes (SSE2, wasm SIMD128); wider ones in lanes_<isa>.cpp.
#define MB_ATTN_BYTES 16
#define MB_ATTN_FORWARD attention_small_forward_vec4
#define MB_ATTN_BACKWARD attention_small_backward_vec4
#include "attention_lanes.h"

namespace mb {

namespace {
constexpr size_t kMaxScoreFloats = (size_t)4 << 20;  // 16 MB of scores per block
// Training keeps the forward's probabilities up to this many floats per
// layer (64 MB: the MNIST UNet's 7x7 layers at batch 64 take 6.4 MB each).
constexpr size_t kMaxKeptProbFloats = (size_t)16 << 20;

// softmax(scale * s) over each of `rows` rows of length T, in place, in float
// like torch's upcast softmax (max subtracted first). The exponentials are
// the bulk of the work (T^2 per head, as many as the two GEMMs have
// multiply-adds per head_dim/2), so they go four lanes at a time: exp_f32x4
// returns exp_f32's bits, the maximum does not depend on the order, and the
// sum is still taken element by element in index order, so every result is
// what the scalar loop gave.
void softmax_row(float* s, int T, float scale) {
  if (const SoftmaxRowKernel wide = softmax_row_kernel()) return wide(s, T, scale);  // the same bits, more lanes
  softmax_row_vec4(s, T, scale);
}

void softmax_rows(float* scores, int rows, int T, float scale) {
  parallel_for(rows, 4, [&](int i) { softmax_row(scores + (size_t)i * T, T, scale); });
}
}  // namespace

void softmax_row_vec4(float* s, int T, float scale) {
  const f32x4 vscale = f32x4{} + scale;
  f32x4 vmx = f32x4{} + s[0] * scale;
  int j = 0;
  for (; j + 4 <= T; j += 4) {
    const f32x4 v = load_f32x4(s + j) * vscale;
    store_f32x4(s + j, v);
    vmx = select_f32x4(v > vmx, v, vmx);
  }
  float mx = vmx[0];
  for (int l = 1; l < 4; ++l) mx = vmx[l] > mx ? vmx[l] : mx;
  for (; j < T; ++j) {
    s[j] *= scale;
    mx = s[j] > mx ? s[j] : mx;
  }
  // The exponentials, and their sum as 16 partial sums (j mod 16, whole
  // blocks of 16) added by one tree, then the rest in order: the same bits
  // at four lanes here as at the CPU's widest vector (softmax_lanes.h).
  const f32x4 vmxs = f32x4{} + mx;
  f32x4 acc[4] = {f32x4{}, f32x4{}, f32x4{}, f32x4{}};
  for (j = 0; j + 16 <= T; j += 16)
    for (int k = 0; k < 4; ++k) {
      const f32x4 e = exp_f32x4(load_f32x4(s + j + 4 * k) - vmxs);
      store_f32x4(s + j + 4 * k, e);
      acc[k] += e;
    }
  float partial[16];
  for (int k = 0; k < 4; ++k)
    for (int l = 0; l < 4; ++l) partial[4 * k + l] = acc[k][l];
  float sum = softmax_sum16(partial);
  for (; j + 4 <= T; j += 4) {
    const f32x4 e = exp_f32x4(load_f32x4(s + j) - vmxs);
    store_f32x4(s + j, e);
    sum += e[0];
    sum += e[1];
    sum += e[2];
    sum += e[3];
  }
  for (; j < T; ++j) {
    s[j] = exp_f32(s[j] - mx);
    sum += s[j];
  }
  const float inv = 1.0f / sum;
  const f32x4 vinv = f32x4{} + inv;
  for (j = 0; j + 4 <= T; j += 4) store_f32x4(s + j, load_f32x4(s + j) * vinv);
  for (; j < T; ++j) s[j] *= inv;
}

namespace {

int query_block(const AttentionArgs& a) {
  size_t rows = kMaxScoreFloats / (size_t)a.tokens;
  if (rows < 1) rows = 1;
  return rows >= (size_t)a.tokens ? a.tokens : (int)rows;
}

// How the (sample, head) pairs are spread over the threads. With a few pairs
// they run one after another, each GEMM split across the threads; with at
// least two per thread, whole pairs go to the threads (their GEMMs, packing
// and softmax then run serially there), which saves the hundreds of small
// parallel regions per pair that a training batch otherwise pays for. Either
// way each pair's arithmetic is the same, so are the results.
int pair_slots(const AttentionArgs& a) {
  const int pairs = a.batch * a.heads, threads = num_threads();
  return threads > 1 && pairs >= 2 * threads ? threads : 1;
}

// Runs one(pair, slot_scratch) for every (sample, head) pair.
template <typename F>
void for_each_pair(const AttentionArgs& a, float* scratch, size_t slot_floats, F&& one) {
  const int pairs = a.batch * a.heads, slots = pair_slots(a);
  if (slots == 1) {
    for (int pair = 0; pair < pairs; ++pair) one(pair, scratch);
    return;
  }
  // A thread takes runs of neighbouring heads of one sample that together
  // fill whole 64-byte lines of the outputs (two heads of 8 channels), so
  // two threads never write the same cache line.
  const int run = a.head_dim < 16 && a.heads % (16 / a.head_dim) == 0 ? 16 / a.head_dim : 1;
  parallel_items(slots, pairs / run, [&](int slot, int r) {
    for (int pair = r * run; pair < (r + 1) * run; ++pair) one(pair, scratch + (size_t)slot * slot_floats);
  });
}

// --- small heads: direct loops (attention_lanes.h) ---------------------------

bool small_heads(const AttentionArgs& a) { return a.head_dim % 4 == 0 && a.head_dim <= 16; }
size_t padded_tokens(const AttentionArgs& a) { return ((size_t)a.tokens + 15) / 16 * 16; }
size_t small_forward_floats(const AttentionArgs& a) {
  return align_up((2 * (size_t)a.head_dim + kAttnSmallRows) * padded_tokens(a), 16);
}
size_t small_backward_floats(const AttentionArgs& a) {
  return align_up((4 * (size_t)a.head_dim + 2 * kAttnSmallRows) * padded_tokens(a), 16);
}

// --- the GEMM path ----------------------------------------------------------

size_t forward_slot_floats(const AttentionArgs& a) {
  if (small_heads(a)) return small_forward_floats(a);
  return align_up(packed_weights_floats(a.tokens, a.head_dim, 1) + packed_weights_floats(a.head_dim, a.tokens, 1) +
                      (size_t)query_block(a) * a.tokens + 64,
                  16);
}

size_t backward_slot_floats(const AttentionArgs& a) {
  if (small_heads(a)) return small_backward_floats(a);
  const size_t t2 = align_up((size_t)a.tokens * a.tokens, 16);  // keeps each buffer 64-byte aligned
  const int big = imax(a.tokens, a.head_dim);
  return align_up(3 * t2 + matmul_scratch_floats(big, big) + 64, 16);
}
}  // namespace

size_t attention_probs_floats(const AttentionArgs& a) {
  if (!small_heads(a)) return 0;
  const size_t floats = (size_t)a.batch * a.heads * a.tokens * padded_tokens(a);
  return floats <= kMaxKeptProbFloats ? floats : 0;
}

size_t attention_scratch_floats(const AttentionArgs& a) { return pair_slots(a) * forward_slot_floats(a); }

void attention_forward(const float* qkv, const AttentionArgs& a, float* out, float* scratch, const float* zero_row) {
  const int T = a.tokens, dh = a.head_dim, C = a.heads * dh, ld = 3 * C;
  const int qb = query_block(a);
  for_each_pair(a, scratch, forward_slot_floats(a), [&](int pair, float* slot) {
    const int b = pair / a.heads, h = pair % a.heads;
    if (small_heads(a)) {
      const float* q = qkv + (size_t)b * T * ld + h * dh;
      float* probs = a.probs ? a.probs + (size_t)pair * T * padded_tokens(a) : nullptr;
      attention_small_kernels().forward(q, q + C, q + 2 * C, ld, T, dh, a.scale, softmax_row,
                                        out + (size_t)b * T * C + h * dh, C, slot, probs);
      return;
    }
    float* packed_k_storage = slot;
    float* packed_v_storage = packed_k_storage + packed_weights_floats(T, dh, 1);
    float* scores = packed_v_storage + packed_weights_floats(dh, T, 1);
    const float* q = qkv + (size_t)b * T * ld + h * dh;
    const float* k = q + C;
    const float* v = q + 2 * C;
    PackedWeights pk, pv;
    WeightSource ks = {k, ld, 1, 0};  // weight (n = key token j, ci = d) = K[j][d]
    int kcout = T;
    pack_weights(&pk, packed_k_storage, &ks, &kcout, 1, dh, 1, 1);
    WeightSource vs = {v, 1, ld, 0};  // weight (n = d, ci = value token j) = V[j][d]
    int vcout = dh;
    pack_weights(&pv, packed_v_storage, &vs, &vcout, 1, T, 1, 1);

    for (int q0 = 0; q0 < T; q0 += qb) {
      const int rows = imin(qb, T - q0);
      conv2d_forward(q + (size_t)q0 * ld, rows_geometry(rows, ld, T), pk, ConvEpilogue(), scores, zero_row);

      softmax_rows(scores, rows, T, a.scale);

      conv2d_forward(scores, rows_geometry(rows, T, C), pv, ConvEpilogue(), out + ((size_t)b * T + q0) * C + h * dh,
                     zero_row);
    }
  });
}

size_t attention_backward_scratch_floats(const AttentionArgs& a) { return pair_slots(a) * backward_slot_floats(a); }

void attention_backward(const float* qkv, const AttentionArgs& a, const float* dout, float* dqkv, float* scratch) {
  const int T = a.tokens, dh = a.head_dim, C = a.heads * dh, ld = 3 * C;
  const size_t t2 = align_up((size_t)T * T, 16);  // the micro-kernels load packed panels aligned
  for_each_pair(a, scratch, backward_slot_floats(a), [&](int pair, float* slot) {
    const int b = pair / a.heads, h = pair % a.heads;
    float* probs = slot;
    float* dprobs = probs + t2;
    float* transposed = dprobs + t2;
    float* pack = transposed + t2;
    const float* q = qkv + (size_t)b * T * ld + h * dh;
    const float* k = q + C;
    const float* v = q + 2 * C;
    const float* d_o = dout + (size_t)b * T * C + h * dh;
    float* dq = dqkv + (size_t)b * T * ld + h * dh;
    float* dk = dq + C;
    float* dv = dq + 2 * C;
    if (small_heads(a)) {
      const float* probs = a.probs ? a.probs + (size_t)pair * T * padded_tokens(a) : nullptr;
      attention_small_kernels().backward(q, k, v, ld, d_o, C, T, dh, a.scale, softmax_row, dq, dk, dv, slot, probs);
      return;
    }
    // P = softmax(scale * Q K^T)
    matmul(q, ld, T, dh, WeightSource{k, ld, 1, 0}, T, probs, T, false, pack);
    softmax_rows(probs, T, T, a.scale);
    // dV = P^T dO
    transpose(probs, T, T, T, transposed, T);
    matmul(transposed, T, T, T, WeightSource{d_o, 1, C, 0}, dh, dv, ld, false, pack);
    // dP = dO V^T, then dS = P * (dP - rowsum(dP * P)) * scale
    matmul(d_o, C, T, dh, WeightSource{v, ld, 1, 0}, T, dprobs, T, false, pack);
    parallel_for(T, 4, [&](int i) {
      const float* p = probs + (size_t)i * T;
      float* dp = dprobs + (size_t)i * T;
      double dot = 0;
      for (int j = 0; j < T; ++j) dot += (double)dp[j] * p[j];
      const float rowsum = (float)dot;
      for (int j = 0; j < T; ++j) dp[j] = p[j] * (dp[j] - rowsum) * a.scale;
    });
    // dQ = dS K, dK = dS^T Q
    matmul(dprobs, T, T, T, WeightSource{k, 1, ld, 0}, dh, dq, ld, false, pack);
    transpose(dprobs, T, T, T, transposed, T);
    matmul(transposed, T, T, T, WeightSource{q, 1, ld, 0}, dh, dk, ld, false, pack);
  });
}

}  // namespace mb
