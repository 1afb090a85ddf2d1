// Multi-head self-attention over a fused qkv buffer, as two GEMMs per
// (sample, head) through the convolution driver: S = Q K^T (K packed as the
// weight matrix), softmax over rows of S, then O = P V (V packed, transposed).
// Queries are processed in blocks so that S never exceeds a few MB, whatever
// the token count.
//
// Forward only for now; the backward joins this file with the training issue.
#include "../engine/mathf.h"
#include "ops.h"

namespace mb {

namespace {
constexpr size_t kMaxScoreFloats = (size_t)4 << 20;  // 16 MB of scores per block

int query_block(const AttentionArgs& a) {
  size_t rows = kMaxScoreFloats / (size_t)a.tokens;
  if (rows < 1) rows = 1;
  return rows >= (size_t)a.tokens ? a.tokens : (int)rows;
}
}  // namespace

size_t attention_scratch_floats(const AttentionArgs& a) {
  return packed_weights_floats(a.tokens, a.head_dim, 1) + packed_weights_floats(a.head_dim, a.tokens, 1) +
         (size_t)query_block(a) * a.tokens + 64;
}

void attention_forward(const float* qkv, const AttentionArgs& a, float* out, float* scratch, const float* zero_row) {
  const int T = a.tokens, dh = a.head_dim, C = a.heads * dh, ld = 3 * C;
  const int qb = query_block(a);
  float* packed_k_storage = scratch;
  float* packed_v_storage = packed_k_storage + packed_weights_floats(T, dh, 1);
  float* scores = packed_v_storage + packed_weights_floats(dh, T, 1);

  for (int b = 0; b < a.batch; ++b) {
    for (int h = 0; h < a.heads; ++h) {
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
        ConvGeometry gs;
        gs.batch = 1;
        gs.in_h = 1;
        gs.in_w = rows;
        gs.in_ld = ld;
        gs.out_h = 1;
        gs.out_w = rows;
        gs.out_ld = T;
        conv2d_forward(q + (size_t)q0 * ld, gs, pk, ConvEpilogue(), scores, zero_row);

        // softmax(scale * s) row by row, in float like torch's upcast softmax
        parallel_for(rows, 4, [&](int i) {
          float* s = scores + (size_t)i * T;
          float mx = s[0] * a.scale;
          for (int j = 0; j < T; ++j) {
            s[j] *= a.scale;
            mx = s[j] > mx ? s[j] : mx;
          }
          float sum = 0.0f;
          for (int j = 0; j < T; ++j) {
            s[j] = exp_f32(s[j] - mx);
            sum += s[j];
          }
          const float inv = 1.0f / sum;
          for (int j = 0; j < T; ++j) s[j] *= inv;
        });

        ConvGeometry go;
        go.batch = 1;
        go.in_h = 1;
        go.in_w = rows;
        go.in_ld = T;
        go.out_h = 1;
        go.out_w = rows;
        go.out_ld = C;
        conv2d_forward(scores, go, pv, ConvEpilogue(), out + ((size_t)b * T + q0) * C + h * dh, zero_row);
      }
    }
  }
}

}  // namespace mb
