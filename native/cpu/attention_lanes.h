// Attention with small heads (head_dim <= 16), one (sample, head) pair at a
// time, vectorised over the key tokens at the CPU's widest vector: included
// once per instruction set (lanes_<isa>.cpp; attention.cpp itself at four
// lanes) with
//   MB_ATTN_BYTES     vector width in bytes
//   MB_ATTN_FORWARD   the forward's name, MB_ATTN_BACKWARD the backward's
// With head_dim 8 (diffusers' default) a GEMM's K or N would be 8: most of a
// register tile idle and more packing than arithmetic. Here every pass runs
// along the tokens instead, with keys and values transposed once per pair
// ([d][token], zero-padded to a multiple of 16 tokens) so each stays in L1.
//
// Per query row i, with p = softmax(scale * q_i K^T):
//   forward   out_i = p V
//   backward  dp = dO_i V^T, ds = p * (dp - sum(dp p)) * scale,
//             dQ_i = ds K, dK += ds^T q_i, dV += p^T dO_i
// Sums along the tokens are taken lane by lane, then across the lanes in
// order, so results are the same on any thread count (each pair is one
// thread's) though not across vector widths. No contraction (compiled with
// -ffp-contract=off). Only this width's own types and internal functions.
#pragma once

#include "ops.h"

namespace mb {

namespace {
typedef float attn_vec __attribute__((vector_size(MB_ATTN_BYTES)));
typedef float attn_vec_u __attribute__((vector_size(MB_ATTN_BYTES), aligned(4)));
constexpr int kAttnLanes = MB_ATTN_BYTES / 4;
constexpr int kAttnMaxHead = 16;

inline attn_vec attn_load(const float* p) { return *reinterpret_cast<const attn_vec_u*>(p); }
inline void attn_store(float* p, attn_vec v) { *reinterpret_cast<attn_vec_u*>(p) = v; }

inline float attn_lane_sum(attn_vec v) {
  float s = v[0];
  for (int l = 1; l < kAttnLanes; ++l) s += v[l];
  return s;
}

// dst[d * tp + j] = src[j * ld + d], zeros for tokens tokens..tp.
void attn_transpose(const float* src, int ld, int tokens, int dh, int tp, float* dst) {
  for (int d = 0; d < dh; ++d) {
    for (int j = 0; j < tokens; ++j) dst[(size_t)d * tp + j] = src[(size_t)j * ld + d];
    for (int j = tokens; j < tp; ++j) dst[(size_t)d * tp + j] = 0.0f;
  }
}

// Each pass takes `rows` (up to kAttnSmallRows) query rows at once, so that
// every vector of keys, values or accumulators loaded serves all of them;
// each row's arithmetic, and its order, is what one row alone would do.

// s_r[j] = x_r . kt[.][j] for every token j (d in order), rows r.
void attn_scores(const float* const x[], int rows, const float* kt, int dh, int tp, float* const s[]) {
  for (int j = 0; j < tp; j += kAttnLanes) {
    attn_vec acc[kAttnSmallRows] = {};
    for (int d = 0; d < dh; ++d) {
      const attn_vec k = attn_load(kt + (size_t)d * tp + j);
      for (int r = 0; r < rows; ++r) acc[r] += x[r][d] * k;
    }
    for (int r = 0; r < rows; ++r) attn_store(s[r] + j, acc[r]);
  }
}

// out_r[d] = sum over tokens of w_r[j] * vt[d][j] (w zero past the last token).
void attn_weighted(const float* const w[], int rows, const float* vt, int dh, int tp, float* const out[]) {
  attn_vec acc[kAttnSmallRows][kAttnMaxHead];
  for (int r = 0; r < rows; ++r)
    for (int d = 0; d < dh; ++d) acc[r][d] = attn_vec{};
  for (int j = 0; j < tp; j += kAttnLanes) {
    attn_vec wj[kAttnSmallRows];
    for (int r = 0; r < rows; ++r) wj[r] = attn_load(w[r] + j);
    for (int d = 0; d < dh; ++d) {
      const attn_vec v = attn_load(vt + (size_t)d * tp + j);
      for (int r = 0; r < rows; ++r) acc[r][d] += wj[r] * v;
    }
  }
  for (int r = 0; r < rows; ++r)
    for (int d = 0; d < dh; ++d) out[r][d] = attn_lane_sum(acc[r][d]);
}

// The forward's out_r[0..dh) = sum over tokens j, in order, of w_r[j] * V's
// row j, vectorised along the head's channels (NV vectors of L lanes) with V
// read in place: each row's sums end in registers, where attn_weighted's
// per-lane partial sums each need a horizontal sum (most of its time at 49
// tokens). Always kAttnSmallRows rows; rows past `rows` repeat the last and
// are not stored.
template <int L, int NV>
void attn_weighted_rows(const float* const w[], int rows, const float* v, int ld, int tokens, float* const out[]) {
  typedef float lane_vec __attribute__((vector_size(4 * L)));
  typedef float lane_vec_u __attribute__((vector_size(4 * L), aligned(4)));
  const float* wr[kAttnSmallRows];
  for (int r = 0; r < kAttnSmallRows; ++r) wr[r] = w[r < rows ? r : rows - 1];
  lane_vec acc[kAttnSmallRows][NV] = {};
  for (int j = 0; j < tokens; ++j) {
    const float* vj = v + (size_t)j * ld;
    lane_vec vv[NV];
    for (int c = 0; c < NV; ++c) vv[c] = *reinterpret_cast<const lane_vec_u*>(vj + c * L);
    for (int r = 0; r < kAttnSmallRows; ++r) {
      const lane_vec p = lane_vec{} + wr[r][j];
      for (int c = 0; c < NV; ++c) acc[r][c] += p * vv[c];
    }
  }
  for (int r = 0; r < rows; ++r)
    for (int c = 0; c < NV; ++c) *reinterpret_cast<lane_vec_u*>(out[r] + c * L) = acc[r][c];
}

// attn_weighted_rows at the widest lanes that divide dh (head_dim is a
// multiple of 4, at most 16).
void attn_weighted_forward(const float* const w[], int rows, const float* v, int ld, int tokens, int dh,
                           float* const out[]) {
  if constexpr (MB_ATTN_BYTES >= 32) {
    if (dh == 8) return attn_weighted_rows<8, 1>(w, rows, v, ld, tokens, out);
    if (dh == 16) return attn_weighted_rows<8, 2>(w, rows, v, ld, tokens, out);
  }
  switch (dh) {
    case 4: return attn_weighted_rows<4, 1>(w, rows, v, ld, tokens, out);
    case 8: return attn_weighted_rows<4, 2>(w, rows, v, ld, tokens, out);
    case 12: return attn_weighted_rows<4, 3>(w, rows, v, ld, tokens, out);
    default: return attn_weighted_rows<4, 4>(w, rows, v, ld, tokens, out);
  }
}

// acc[d][j] += w_r[j] * x_r[d] for every token j, rows r in order.
void attn_add_outer(const float* const w[], const float* const x[], int rows, int dh, int tp, float* acc) {
  for (int j = 0; j < tp; j += kAttnLanes) {
    attn_vec wj[kAttnSmallRows];
    for (int r = 0; r < rows; ++r) wj[r] = attn_load(w[r] + j);
    for (int d = 0; d < dh; ++d) {
      float* at = acc + (size_t)d * tp + j;
      attn_vec sum = attn_load(at);
      for (int r = 0; r < rows; ++r) sum = sum + wj[r] * x[r][d];
      attn_store(at, sum);
    }
  }
}
}  // namespace

// Scratch (floats) for one pair: keys transposed, room for values transposed
// (the backward's layout; the forward reads V in place), kAttnSmallRows score rows.
void MB_ATTN_FORWARD(const float* q, const float* k, const float* v, int ld, int tokens, int dh, float scale,
                     SoftmaxRowFn softmax, float* out, int out_ld, float* slot, float* probs) {
  const int tp = (tokens + 15) / 16 * 16;
  float* kt = slot;
  float* vt = kt + (size_t)dh * tp;
  float* s[kAttnSmallRows];
  for (int r = 0; r < kAttnSmallRows; ++r) s[r] = vt + (size_t)(dh + r) * tp;
  attn_transpose(k, ld, tokens, dh, tp, kt);
  for (int i0 = 0; i0 < tokens; i0 += kAttnSmallRows) {
    const int rows = imin(kAttnSmallRows, tokens - i0);
    const float* qi[kAttnSmallRows];
    float* oi[kAttnSmallRows];
    for (int r = 0; r < rows; ++r) qi[r] = q + (size_t)(i0 + r) * ld, oi[r] = out + (size_t)(i0 + r) * out_ld;
    if (probs)  // training: the rows go where the backward will read them
      for (int r = 0; r < rows; ++r) s[r] = probs + (size_t)(i0 + r) * tp;
    attn_scores(qi, rows, kt, dh, tp, s);
    for (int r = 0; r < rows; ++r) {
      softmax(s[r], tokens, scale);
      for (int j = tokens; j < tp; ++j) s[r][j] = 0.0f;  // padding: weight 0
    }
    attn_weighted_forward(s, rows, v, ld, tokens, dh, oi);
  }
}

// dq, dk, dv overwritten (ld apart).
void MB_ATTN_BACKWARD(const float* q, const float* k, const float* v, int ld, const float* d_o, int do_ld, int tokens,
                      int dh, float scale, SoftmaxRowFn softmax, float* dq, float* dk, float* dv, float* slot,
                      const float* probs) {
  const int tp = (tokens + 15) / 16 * 16;
  float* kt = slot;
  float* vt = kt + (size_t)dh * tp;
  float* dkt = vt + (size_t)dh * tp;  // dK and dV, transposed, summed over the query rows
  float* dvt = dkt + (size_t)dh * tp;
  const float* p[kAttnSmallRows];
  float* ds[kAttnSmallRows];
  for (int r = 0; r < kAttnSmallRows; ++r) ds[r] = dvt + (size_t)(dh + kAttnSmallRows + r) * tp;
  attn_transpose(k, ld, tokens, dh, tp, kt);
  attn_transpose(v, ld, tokens, dh, tp, vt);
  for (size_t n = 0; n < 2 * (size_t)dh * tp; ++n) dkt[n] = 0.0f;
  const attn_vec vscale = attn_vec{} + scale;
  for (int i0 = 0; i0 < tokens; i0 += kAttnSmallRows) {
    const int rows = imin(kAttnSmallRows, tokens - i0);
    const float* qi[kAttnSmallRows];
    const float* doi[kAttnSmallRows];
    float* dqi[kAttnSmallRows];
    for (int r = 0; r < rows; ++r) {
      qi[r] = q + (size_t)(i0 + r) * ld;
      doi[r] = d_o + (size_t)(i0 + r) * do_ld;
      dqi[r] = dq + (size_t)(i0 + r) * ld;
    }
    if (probs) {  // the forward's rows, computed by the same code as below
      for (int r = 0; r < rows; ++r) p[r] = probs + (size_t)(i0 + r) * tp;
    } else {
      float* rows_p[kAttnSmallRows];
      for (int r = 0; r < rows; ++r) rows_p[r] = dvt + (size_t)(dh + r) * tp, p[r] = rows_p[r];
      attn_scores(qi, rows, kt, dh, tp, rows_p);
      for (int r = 0; r < rows; ++r) {
        softmax(rows_p[r], tokens, scale);
        for (int j = tokens; j < tp; ++j) rows_p[r][j] = 0.0f;
      }
    }
    attn_scores(doi, rows, vt, dh, tp, ds);  // dp, zero past the last token (vt is)
    for (int r = 0; r < rows; ++r) {
      attn_vec dot = attn_vec{};
      for (int j = 0; j < tp; j += kAttnLanes) dot += attn_load(ds[r] + j) * attn_load(p[r] + j);
      const attn_vec rowsum = attn_vec{} + attn_lane_sum(dot);
      for (int j = 0; j < tp; j += kAttnLanes)
        attn_store(ds[r] + j, attn_load(p[r] + j) * (attn_load(ds[r] + j) - rowsum) * vscale);
    }
    attn_weighted(ds, rows, kt, dh, tp, dqi);
    attn_add_outer(ds, qi, rows, dh, tp, dkt);
    attn_add_outer(p, doi, rows, dh, tp, dvt);
  }
  for (int j = 0; j < tokens; ++j)
    for (int d = 0; d < dh; ++d) {
      dk[(size_t)j * ld + d] = dkt[(size_t)d * tp + j];
      dv[(size_t)j * ld + d] = dvt[(size_t)d * tp + j];
    }
}

}  // namespace mb
