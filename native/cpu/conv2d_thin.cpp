// 3x3, stride-1 convolutions with a single channel on one side: a UNet's
// conv_in over one-channel images (MNIST) and conv_out to one channel, and
// conv_out's data gradient (a convolution from one channel). As GEMMs these
// are nearly all padding: a one-channel output fills one column of a 32-wide
// panel, im2col's nine columns of a one-channel image a quarter of one, and
// Winograd's GEMMs over one input channel have K = 1 (every micro-kernel call
// is its epilogue); its dM for one output channel fills one row of eight.
// Directly, with c the wide side's channels in vector lanes and t the nine
// taps (X zero in the padding):
//   forward, cin == 1:   Y[p][co] = sum over t of X[p + t] * W[co][t]
//   forward, cout == 1:  Y[p] = sum over t, ci of X[p + t][ci] * W[ci][t]
//                        (sixteen lane sums, added in one fixed order)
//   weight gradient, cin == 1:  dW[co][t] += sum over p of X[p + t] * dY[p][co]
//   weight gradient, cout == 1: dW[ci][t] += sum over p of dY[p] * X[p + t][ci]
// The forward runs as the direct path of conv2d.cpp's driver (the layer is
// packed for it, not for Winograd: unet.cpp) and applies the same epilogue.
// The weight gradient sums pixels in chunks of kChunkPixels, each in float
// into its own partial, and adds the partials in chunk order in double:
// fixed by the shape, so the same bits on any number of threads. Every lane
// runs the same scalar sequence and the clones below the same operations, so
// the vector width changes no bits.
#include "../engine/mathf.h"
#include "ops.h"

namespace mb {

namespace {

constexpr int kChunkPixels = 256;
constexpr int kThinMaxWide = 512;  // the forward's gathered weights live on the stack
constexpr int kLanes = 16;  // channels per vector
typedef float thin_vec __attribute__((vector_size(kLanes * 4)));
typedef float thin_vec_u __attribute__((vector_size(kLanes * 4), aligned(4)));

// x86-64: an AVX-512 clone (one register per vector), an AVX2 one and the
// baseline, chosen by the loader; the same operations in each (no contraction).
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define MB_THIN_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define MB_THIN_CLONES
#endif

struct ThinShape {
  const float* in;
  const float* dy;
  ConvGeometry g;
  int channels;    // the wide side: cout (one input channel) or cin (one output channel)
  bool one_input;  // cin == 1
};

// The run of output pixels [p, p_end) that lies in one output row: its
// image b, row oy, columns [ox_begin, ox_end), and the three input rows
// under it (null in the padding).
struct RowRun {
  int b, oy, ox_begin, ox_end;
  const float* in_rows[3];
};
inline RowRun row_run(const float* in, const ConvGeometry& g, int p, int p_end) {
  RowRun r;
  r.b = p / (g.out_h * g.out_w);
  r.oy = p / g.out_w % g.out_h;
  r.ox_begin = p % g.out_w;
  r.ox_end = imin(g.out_w, r.ox_begin + (p_end - p));
  for (int ky = 0; ky < 3; ++ky) {
    const int iy = r.oy - g.pad_top + ky;
    r.in_rows[ky] = iy >= 0 && iy < g.in_h ? in + ((size_t)r.b * g.in_h + iy) * g.in_w * g.in_ld : nullptr;
  }
  return r;
}

// The chunk's sums for channels [c0, c0 + V * kLanes) into part[t][c]: 9 x V
// accumulators. The padding reads as zeros (multiplied like any input).
template <int V>
inline __attribute__((always_inline)) void chunk_sums_v(const ThinShape& s, int p_begin, int p_end, int c0,
                                                        float* part) {
  const ConvGeometry& g = s.g;
  thin_vec acc[9][V];
  for (int t = 0; t < 9; ++t)
    for (int v = 0; v < V; ++v) acc[t][v] = thin_vec{};
  for (int p = p_begin; p < p_end;) {
    const RowRun run = row_run(s.in, g, p, p_end);
    const float* const* in_rows = run.in_rows;
    for (int ox = run.ox_begin; ox < run.ox_end; ++ox, ++p) {
      const float* dy = s.dy + (size_t)p * g.out_ld;
      thin_vec d[V];
      if (s.one_input)
        for (int v = 0; v < V; ++v) d[v] = *reinterpret_cast<const thin_vec_u*>(dy + c0 + v * kLanes);
      for (int t = 0; t < 9; ++t) {
        const int ix = ox - g.pad_left + t % 3;
        const float* x = in_rows[t / 3] && ix >= 0 && ix < g.in_w ? in_rows[t / 3] + (size_t)ix * g.in_ld : nullptr;
        if (s.one_input) {
          const float xs = x ? *x : 0.0f;
          for (int v = 0; v < V; ++v) acc[t][v] += xs * d[v];
        } else {
          for (int v = 0; v < V; ++v) {
            const thin_vec xv = x ? *reinterpret_cast<const thin_vec_u*>(x + c0 + v * kLanes) : thin_vec{};
            acc[t][v] += *dy * xv;
          }
        }
      }
    }
  }
  for (int t = 0; t < 9; ++t)
    for (int v = 0; v < V; ++v) *reinterpret_cast<thin_vec_u*>(part + (t * V + v) * kLanes) = acc[t][v];
}

MB_THIN_CLONES
void chunk_sums(const ThinShape& s, int p_begin, int p_end, int c0, int vecs, float* part) {
  if (vecs == 2)
    chunk_sums_v<2>(s, p_begin, p_end, c0, part);
  else
    chunk_sums_v<1>(s, p_begin, p_end, c0, part);
}

// The forward over output pixels [p_begin, p_end). w: the weights gathered
// as w[t][c] for the wide side's `wide` channels (row stride `wide_ld`, a
// multiple of kLanes, zeros past `wide`).
struct ThinForward {
  const float* in;
  ConvGeometry g;
  const float* w;
  int wide, wide_ld;
  bool one_input;  // cin == 1: vectors over cout; else cout == 1, vectors over cin
  const ConvEpilogue* ep;
  float* out;
};

// The epilogue of one output element, in the driver's scalar order.
inline float thin_epilogue(const ConvEpilogue& ep, float v, int b, size_t m, int co) {
  if (ep.bias) v += ep.bias[co];
  if (ep.batch_bias) v += ep.batch_bias[(size_t)b * ep.batch_bias_ld + co];
  if (ep.residual) v = ep.residual[m * ep.residual_ld + co] + v;
  if (ep.divisor != 1.0f) v = v / ep.divisor;
  return v;
}

// Up to kGroup neighbouring output pixels of one row at a time: their sums
// are independent chains, which keeps the adders busy (one pixel's nine taps
// are a chain of dependent additions). Each pixel's sum is the same sequence
// whatever its group, so the grouping changes no bits.
constexpr int kGroup = 4;

MB_THIN_CLONES
void thin_forward_rows(const ThinForward& f, int p_begin, int p_end) {
  const ConvGeometry& g = f.g;
  const int full = f.wide / kLanes * kLanes;  // channels in whole vectors
  for (int p = p_begin; p < p_end;) {
    const RowRun run = row_run(f.in, g, p, p_end);
    const float* const* in_rows = run.in_rows;
    const int b = run.b, ox_begin = run.ox_begin, ox_end = run.ox_end;
    for (int ox0 = ox_begin; ox0 < ox_end; ox0 += kGroup) {
      const int n = imin(kGroup, ox_end - ox0);
      const size_t m0 = (size_t)p + (ox0 - ox_begin);
      const float* x[kGroup][9];
      for (int j = 0; j < kGroup; ++j)
        for (int t = 0; t < 9; ++t) {
          const int ix = ox0 + imin(j, n - 1) - g.pad_left + t % 3;
          x[j][t] = in_rows[t / 3] && ix >= 0 && ix < g.in_w ? in_rows[t / 3] + (size_t)ix * g.in_ld : nullptr;
        }
      if (f.one_input) {
        // Y[p][co] for every co: the nine taps in order, per lane.
        for (int c = 0; c < f.wide; c += kLanes) {
          thin_vec acc[kGroup] = {};
          for (int t = 0; t < 9; ++t) {
            const thin_vec wt = *reinterpret_cast<const thin_vec_u*>(f.w + (size_t)t * f.wide_ld + c);
            for (int j = 0; j < kGroup; ++j) acc[j] += (x[j][t] ? *x[j][t] : 0.0f) * wt;
          }
          for (int j = 0; j < n; ++j) {
            float* y = f.out + (m0 + j) * g.out_ld + c;
            if (c + kLanes <= f.wide) {  // thin_epilogue's operations on a whole vector
              const ConvEpilogue& ep = *f.ep;
              typedef const thin_vec_u* vp;
              thin_vec v = acc[j];
              if (ep.bias) v += *reinterpret_cast<vp>(ep.bias + c);
              if (ep.batch_bias) v += *reinterpret_cast<vp>(ep.batch_bias + (size_t)b * ep.batch_bias_ld + c);
              if (ep.residual) v = *reinterpret_cast<vp>(ep.residual + (m0 + j) * ep.residual_ld + c) + v;
              if (ep.divisor != 1.0f) v = v / ep.divisor;
              *reinterpret_cast<thin_vec_u*>(y) = v;
            } else
              for (int l = 0; l < f.wide - c; ++l) y[l] = thin_epilogue(*f.ep, acc[j][l], b, m0 + j, c + l);
          }
        }
      } else {
        // Lane l sums the taps' channels ci = l (mod 16), tap by tap, whole
        // vectors first; then the sixteen lanes in one fixed order.
        thin_vec acc[kGroup] = {};
        for (int t = 0; t < 9; ++t) {
          const float* wt = f.w + (size_t)t * f.wide_ld;
          for (int c = 0; c < full; c += kLanes) {
            const thin_vec wv = *reinterpret_cast<const thin_vec_u*>(wt + c);
            for (int j = 0; j < kGroup; ++j)
              acc[j] += (x[j][t] ? thin_vec(*reinterpret_cast<const thin_vec_u*>(x[j][t] + c)) : thin_vec{}) * wv;
          }
          for (int c = full; c < f.wide; ++c)
            for (int j = 0; j < kGroup; ++j) acc[j][c - full] += (x[j][t] ? x[j][t][c] : 0.0f) * wt[c];
        }
        for (int j = 0; j < n; ++j) {
          float lanes[kLanes];
          for (int l = 0; l < kLanes; ++l) lanes[l] = acc[j][l];
          for (int step = kLanes / 2; step > 0; step /= 2)
            for (int l = 0; l < step; ++l) lanes[l] += lanes[l + step];
          f.out[(m0 + j) * g.out_ld] = thin_epilogue(*f.ep, lanes[0], b, m0 + j, 0);
        }
      }
    }
    p += ox_end - ox_begin;
  }
}

int chunks_of(const ConvGeometry& g) { return (g.batch * g.out_h * g.out_w + kChunkPixels - 1) / kChunkPixels; }

}  // namespace

bool thin_conv_applies(const ConvGeometry& g, const PackedWeights& w) {
  return w.kh == 3 && w.kw == 3 && g.stride == 1 && g.upsample == 1 && !w.winograd && (w.cin == 1 || w.cout == 1) &&
         (w.cin == 1 ? w.cout : w.cin) <= kThinMaxWide;
}

void thin_conv2d_forward(const float* in, const ConvGeometry& g, const PackedWeights& w, const ConvEpilogue& ep,
                         float* out) {
  // The weights from the direct packing (panels [tap][ci][nr] of nr output
  // channels), gathered as [t][wide channel].
  const int wide = w.cin == 1 ? w.cout : w.cin;
  const int wide_ld = (wide + kLanes - 1) / kLanes * kLanes;
  alignas(64) float weights[9 * kThinMaxWide];
  const size_t panel_floats = (size_t)9 * w.cin * w.nr;
  for (int t = 0; t < 9; ++t)
    for (int c = 0; c < wide_ld; ++c) {
      float v = 0.0f;
      if (c < wide) {
        const int co = w.cin == 1 ? c : 0, ci = w.cin == 1 ? 0 : c;
        v = w.data[(size_t)(co / w.nr) * panel_floats + ((size_t)t * w.cin + ci) * w.nr + co % w.nr];
      }
      weights[t * wide_ld + c] = v;
    }
  const ThinForward f = {in, g, weights, wide, wide_ld, w.cin == 1, &ep, out};
  const int pixels = g.batch * g.out_h * g.out_w;
  parallel_ranges(pixels, 64, [&](int begin, int end) { thin_forward_rows(f, begin, end); });
}

bool thin_weight_grad_applies(const ConvGeometry& g, int cout, int cin, int k) {
  const int wide = cin == 1 ? cout : cout == 1 ? cin : 0;
  return k == 3 && g.stride == 1 && g.upsample == 1 && wide > 0 && wide % kLanes == 0;
}

size_t thin_weight_grad_scratch_floats(const ConvGeometry& g, int cout, int cin) {
  return (size_t)chunks_of(g) * 9 * (cin == 1 ? cout : cin);
}

void thin_weight_grad(const float* in, const ConvGeometry& g, const float* dy, int cout, int cin, float* grad_w,
                      float* scratch) {
  const ThinShape s = {in, dy, g, cin == 1 ? cout : cin, cin == 1};
  const int pixels = g.batch * g.out_h * g.out_w, chunks = chunks_of(g);
  // Channels in blocks of two vectors (one where the count is odd in vectors).
  const int vecs = s.channels % (2 * kLanes) == 0 ? 2 : 1, block_channels = vecs * kLanes;
  const int blocks = s.channels / block_channels;
  const size_t block_floats = (size_t)9 * block_channels;
  // scratch[chunk][block][t][c]: every chunk's partial sums.
  parallel_for(chunks * blocks, 1, [&](int task) {
    const int chunk = task / blocks, block = task % blocks;
    const int p0 = chunk * kChunkPixels;
    chunk_sums(s, p0, imin(pixels, p0 + kChunkPixels), block * block_channels, vecs,
               scratch + ((size_t)chunk * blocks + block) * block_floats);
  });
  // dW in torch layout, [wide channel][t] either way (cout x 1 x 3 x 3 or 1 x cin x 3 x 3).
  parallel_for(blocks, 1, [&](int block) {
    for (int i = 0; i < (int)block_floats; ++i) {
      double sum = 0;
      for (int chunk = 0; chunk < chunks; ++chunk) sum += scratch[((size_t)chunk * blocks + block) * block_floats + i];
      const int t = i / block_channels, c = block * block_channels + i % block_channels;
      grad_w[(size_t)c * 9 + t] += (float)sum;
    }
  });
}

}  // namespace mb
