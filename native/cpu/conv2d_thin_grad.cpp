// The weight gradient of a 3x3, stride-1 convolution with a single channel on
// one side: a UNet's conv_in (one input channel, e.g. MNIST) and conv_out
// (one output channel). As GEMMs these are all padding: im2col's nine columns
// of a one-channel image fill a 32-wide panel a quarter full, and Winograd's
// dM for one output channel fills an 8-row tile an eighth full (3.3 and 1.2 ms
// of a 460 ms MNIST training step at batch 64). Directly, with c the wide
// side's channels in vector lanes:
//   cin == 1:  dW[co][t] += sum over pixels p of X[p + t] * dY[p][co]
//   cout == 1: dW[ci][t] += sum over pixels p of dY[p] * X[p + t][ci]
// (t one of the nine taps, X zero in the padding): a scalar times a vector
// into nine accumulators per vector of channels.
//
// Pixels are summed in chunks of kChunkPixels, each in float into its own
// partial, and the partials added in chunk order in double: fixed by the
// shape, so the same bits on any number of threads. Every lane runs the same
// scalar sequence, so the vector width (the clones below) changes no bits.
#include "../engine/mathf.h"
#include "ops.h"

namespace mb {

namespace {

constexpr int kChunkPixels = 256;
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
    // One output row's run of the chunk: the three input rows under it.
    const int b = p / (g.out_h * g.out_w), oy = p / g.out_w % g.out_h, ox0 = p % g.out_w;
    const int ox_end = imin(g.out_w, ox0 + (p_end - p));
    const float* in_rows[3];
    for (int ky = 0; ky < 3; ++ky) {
      const int iy = oy - g.pad_top + ky;
      in_rows[ky] = iy >= 0 && iy < g.in_h ? s.in + ((size_t)b * g.in_h + iy) * g.in_w * g.in_ld : nullptr;
    }
    for (int ox = ox0; ox < ox_end; ++ox, ++p) {
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

int chunks_of(const ConvGeometry& g) { return (g.batch * g.out_h * g.out_w + kChunkPixels - 1) / kChunkPixels; }

}  // namespace

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
