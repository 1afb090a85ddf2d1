// UNet2DModel: graph construction (with diffusers' parameter names), weight
// packing and the forward pass. The structure follows diffusers'
// unet_2d.py / unet_2d_blocks.py / resnet.py block for block, so a reader can
// hold the two side by side; the arithmetic is channels-last and fused.
#include "unet.h"

#include "../cpu/ops.h"
#include "exec.h"
#include "mathf.h"
#include "ops.h"

namespace mb {

namespace {

// ---------------------------------------------------------------------------
// Graph construction.

constexpr int kWinogradLevels = 3;

struct Builder {
  Model* m;
  int status = kOk;
  // Winograd for the 3x3 convs built while this is set: the three finest
  // levels (kWinogradLevels), which hold most of the FLOPs. On the coarser
  // maps there are too few 2x2 tiles at batch 1 for its GEMMs to beat the
  // direct convolution's (a 32x32 model's fourth level: 4 tiles, half a
  // micro-kernel tile). The third level (MNIST's 7x7, cifar10-32's 8x8: 16
  // tiles) pays: see the commit that made it three.
  bool winograd_level = true;

  int param(const Name& name, int d0, int d1 = 0, int d2 = 0, int d3 = 0) {
    Param p;
    for (int i = 0; i <= name.length; ++i) p.name[i] = name.text[i];
    int dims[4] = {d0, d1, d2, d3};
    p.ndim = 0;
    p.numel = 1;
    for (int i = 0; i < 4 && dims[i] > 0; ++i) {
      p.shape[p.ndim++] = dims[i];
      p.numel *= (size_t)dims[i];
    }
    for (int i = p.ndim; i < 4; ++i) p.shape[i] = 0;
    p.data = p.dev = nullptr;
    p.grad = p.exp_avg = p.exp_avg_sq = p.ema = nullptr;
    p.trainable = true;
    p.packed_only = p.released = false;
    if (!m->params.push(p)) status = kErrOutOfMemory;
    return m->params.size - 1;
  }

  NormLayer norm(const Name& prefix, int channels, int groups, float eps) {
    NormLayer n;
    n.channels = channels;
    n.groups = groups;
    n.eps = eps;
    n.gamma = param(prefix.with(".weight"), channels);
    n.beta = param(prefix.with(".bias"), channels);
    if (groups <= 0 || channels % groups != 0) {
      Message msg;
      msg.add(prefix.text).add(": ").add_int(channels).add(" channels cannot be split into ").add_int(groups).add(
          " groups (norm_num_groups must divide every block's channel count)");
      status = fail(m, kErrUnsupported, msg);
    }
    if (channels > m->max_channels) m->max_channels = channels;
    return n;
  }

  ConvLayer conv(const Name& prefix, int cin, int cout, int k) {
    ConvLayer c;
    c.cin = cin;
    c.cout = cout;
    c.k = k;
    // A conv with one channel on a side goes direct: the CPU's thin kernels
    // (conv2d_thin.cpp) take it; Winograd's GEMMs would be mostly padding.
    const bool thin = cin == 1 || cout == 1;
    c.winograd = k == 3 && winograd_level && !thin;  // the downsampler (stride 2) clears both
    c.winograd_coarse = k == 3 && !winograd_level && !thin;
    c.weight = param(prefix.with(".weight"), cout, cin, k, k);
    c.bias = param(prefix.with(".bias"), cout);
    if (cin > m->max_channels) m->max_channels = cin;
    if (cout > m->max_channels) m->max_channels = cout;
    return c;
  }

  ConvLayer linear(const Name& prefix, int in, int out) {
    ConvLayer c;
    c.cin = in;
    c.cout = out;
    c.k = 1;
    c.weight = param(prefix.with(".weight"), out, in);
    c.bias = param(prefix.with(".bias"), out);
    if (in > m->max_channels) m->max_channels = in;
    if (out > m->max_channels) m->max_channels = out;
    return c;
  }

  ResnetLayer resnet(const Name& prefix, int cin, int cout, int groups, float out_scale, int resample) {
    ResnetLayer r;
    r.cin = cin;
    r.cout = cout;
    r.resample = resample;
    r.output_scale_factor = out_scale;
    r.norm1 = norm(prefix.with(".norm1"), cin, groups, m->norm_eps);
    r.conv1 = conv(prefix.with(".conv1"), cin, cout, 3);
    r.time_emb_proj = linear(prefix.with(".time_emb_proj"), m->time_embed_dim, m->scale_shift ? 2 * cout : cout);
    r.norm2 = norm(prefix.with(".norm2"), cout, groups, m->norm_eps);
    r.conv2 = conv(prefix.with(".conv2"), cout, cout, 3);
    r.has_shortcut = cin != cout;
    if (r.has_shortcut) r.conv_shortcut = conv(prefix.with(".conv_shortcut"), cin, cout, 1);
    return r;
  }

  AttnLayer attention(const Name& prefix, int channels, int head_dim, int norm_groups, float rescale) {
    AttnLayer a;
    a.channels = channels;
    a.head_dim = head_dim;
    a.heads = channels / head_dim;
    a.rescale_output_factor = rescale;
    if (head_dim <= 0 || channels % head_dim != 0) {
      Message msg;
      msg.add(prefix.text).add(": attention_head_dim ").add_int(head_dim).add(" does not divide ").add_int(channels).add(
          " channels; marble supports head counts that split the channels exactly");
      status = fail(m, kErrUnsupported, msg);
      a.head_dim = channels;
      a.heads = 1;
    }
    a.has_norm = norm_groups > 0;
    if (a.has_norm) a.norm = norm(prefix.with(".group_norm"), channels, norm_groups, m->norm_eps);
    ConvLayer q = linear(prefix.with(".to_q"), channels, channels);
    ConvLayer k = linear(prefix.with(".to_k"), channels, channels);
    ConvLayer v = linear(prefix.with(".to_v"), channels, channels);
    a.q_w = q.weight, a.q_b = q.bias, a.k_w = k.weight, a.k_b = k.bias, a.v_w = v.weight, a.v_b = v.bias;
    a.qkv.cin = channels;
    a.qkv.cout = 3 * channels;
    a.qkv.k = 1;
    a.out = linear(prefix.with(".to_out.0"), channels, channels);
    return a;
  }
};

bool in_range(double v, double lo, double hi) { return v == v && v >= lo && v <= hi; }

// Calls f(resnet) for every ResnetBlock2D of the model, in a fixed order.
template <typename F>
void for_each_resnet(Model* m, F&& f) {
  auto block = [&](Block& blk) {
    for (int j = 0; j < blk.num_layers; ++j) f(blk.resnets[j]);
    if (blk.resample_kind == kResampleResnet) f(blk.resample_resnet);
  };
  for (int i = 0; i < m->num_levels; ++i) block(m->down[i]);
  if (m->has_mid) block(m->mid);
  for (int i = 0; i < m->num_levels; ++i) block(m->up[i]);
}

}  // namespace

static bool list_packing_sources(Model* m, Vec<int>* order);

int model_init(Model* m, const double* cfg, int n) {
  if (!m->ops) m->ops = cpu_ops();
  if (n < kCfgFixedSlots) return set_error(m, kErrInvalidArgument, Name("engine config too short"));
  const int levels = (int)cfg[kCfgNumLevels];
  if (!in_range(cfg[kCfgNumLevels], 1, kMaxLevels))
    return set_error(m, kErrUnsupported, Name("block_out_channels: between 1 and 8 levels are supported"));
  if (n != kCfgFixedSlots + 3 * levels) return set_error(m, kErrInvalidArgument, Name("engine config length mismatch"));
  if (!in_range(cfg[kCfgLayersPerBlock], 1, kMaxLayers - 1))
    return set_error(m, kErrUnsupported, Name("layers_per_block: 1 to 8 are supported"));
  if (!in_range(cfg[kCfgInChannels], 1, 4096) || !in_range(cfg[kCfgOutChannels], 1, 4096))
    return set_error(m, kErrUnsupported, Name("in_channels/out_channels must be between 1 and 4096"));

  m->in_channels = (int)cfg[kCfgInChannels];
  m->out_channels = (int)cfg[kCfgOutChannels];
  m->center_input_sample = cfg[kCfgCenterInputSample] != 0;
  m->time_embedding_type = (int)cfg[kCfgTimeEmbeddingType];
  m->time_embed_dim = (int)cfg[kCfgTimeEmbedDim];
  m->flip_sin_to_cos = cfg[kCfgFlipSinToCos] != 0;
  m->freq_shift = (float)cfg[kCfgFreqShift];
  m->num_levels = levels;
  m->layers_per_block = (int)cfg[kCfgLayersPerBlock];
  m->downsample_padding = (int)cfg[kCfgDownsamplePadding];
  m->norm_eps = (float)cfg[kCfgNormEps];
  m->scale_shift = cfg[kCfgResnetTimeScaleShift] != 0;
  m->class_embed = (int)cfg[kCfgClassEmbed];
  m->num_class_embeds = (int)cfg[kCfgNumClassEmbeds];
  m->num_train_timesteps = (int)cfg[kCfgNumTrainTimesteps];
  m->dropout = (float)cfg[kCfgDropout];
  const double* boc = cfg + kCfgFixedSlots;
  const double* down_types = boc + levels;
  const double* up_types = down_types + levels;
  for (int i = 0; i < levels; ++i) {
    if (!in_range(boc[i], 1, 8192)) return set_error(m, kErrUnsupported, Name("block_out_channels out of range"));
    m->block_out_channels[i] = (int)boc[i];
    if (!in_range(down_types[i], 0, 2) || !in_range(up_types[i], 0, 2))
      return set_error(m, kErrUnsupported, Name("unsupported block type code"));
  }
  const int groups = (int)cfg[kCfgNormNumGroups];
  const int head_dim_cfg = (int)cfg[kCfgAttentionHeadDim];
  const int attn_groups_cfg = (int)cfg[kCfgAttnNormNumGroups];
  const int downsample_type = (int)cfg[kCfgDownsampleType];
  const int upsample_type = (int)cfg[kCfgUpsampleType];
  const float mid_scale = (float)cfg[kCfgMidBlockScaleFactor];
  const int c0 = m->block_out_channels[0];
  if (m->time_embed_dim < 1) return set_error(m, kErrUnsupported, Name("time_embedding_dim must be positive"));

  Builder b{m};
  b.param(Name("conv_in.weight"), c0, m->in_channels, 3, 3);
  m->conv_in = ConvLayer();
  m->conv_in.weight = m->params.size - 1;
  m->conv_in.bias = b.param(Name("conv_in.bias"), c0);
  m->conv_in.cin = m->in_channels;
  m->conv_in.cout = c0;
  m->conv_in.k = 3;
  m->conv_in.winograd = m->in_channels > 1;  // one channel: direct (see Builder::conv)
  m->max_channels = imax(m->in_channels, c0);

  // time
  switch (m->time_embedding_type) {
    case 0:
      m->time_proj_dim = c0;
      break;
    case 1:
      m->time_proj_dim = 2 * c0;
      m->time_proj_weight = b.param(Name("time_proj.weight"), c0);
      m->params[m->time_proj_weight].trainable = false;  // requires_grad=False in diffusers
      break;
    case 2:
      if (m->num_train_timesteps < 1)
        return set_error(m, kErrUnsupported, Name("time_embedding_type 'learned' needs num_train_timesteps"));
      m->time_proj_dim = c0;
      m->time_proj_weight = b.param(Name("time_proj.weight"), m->num_train_timesteps, c0);
      break;
    default:
      return set_error(m, kErrUnsupported, Name("unsupported time_embedding_type code"));
  }
  m->time_linear_1 = b.linear(Name("time_embedding.linear_1"), m->time_proj_dim, m->time_embed_dim);
  m->time_linear_2 = b.linear(Name("time_embedding.linear_2"), m->time_embed_dim, m->time_embed_dim);

  // class conditioning
  switch (m->class_embed) {
    case 0:
      break;
    case 1:
      if (m->num_class_embeds < 1) return set_error(m, kErrUnsupported, Name("num_class_embeds must be positive"));
      m->class_table = b.param(Name("class_embedding.weight"), m->num_class_embeds, m->time_embed_dim);
      break;
    case 2:
      m->class_linear_1 = b.linear(Name("class_embedding.linear_1"), m->time_proj_dim, m->time_embed_dim);
      m->class_linear_2 = b.linear(Name("class_embedding.linear_2"), m->time_embed_dim, m->time_embed_dim);
      break;
    case 3:
      break;
    default:
      return set_error(m, kErrUnsupported, Name("unsupported class_embed_type code"));
  }

  // down
  int output_channel = c0;
  for (int i = 0; i < levels; ++i) {
    const int input_channel = output_channel;
    output_channel = m->block_out_channels[i];
    const bool is_final = i == levels - 1;
    Block& blk = m->down[i];
    b.winograd_level = i < kWinogradLevels;
    blk.type = (int)down_types[i];
    blk.num_layers = m->layers_per_block;
    blk.in_channels = input_channel;
    blk.out_channels = output_channel;
    blk.has_attention = blk.type == kAttnDownBlock2D;
    Name prefix("down_blocks.");
    prefix.add_int(i);
    for (int j = 0; j < blk.num_layers; ++j) {
      Name rp = prefix.with(".resnets.");
      rp.add_int(j);
      blk.resnets[j] = b.resnet(rp, j == 0 ? input_channel : output_channel, output_channel, groups, 1.0f, 0);
      if (blk.has_attention) {
        Name ap = prefix.with(".attentions.");
        ap.add_int(j);
        blk.attentions[j] = b.attention(ap, output_channel, head_dim_cfg ? head_dim_cfg : output_channel, groups, 1.0f);
      }
    }
    if (!is_final) {
      b.winograd_level = i + 1 < kWinogradLevels;  // the downsampler's convs work at the next coarser level
      bool resnet_down = blk.type == kResnetDownsampleBlock2D || (blk.type == kAttnDownBlock2D && downsample_type == 1);
      if (resnet_down) {
        blk.resample_kind = kResampleResnet;
        blk.resample_resnet = b.resnet(prefix.with(".downsamplers.0"), output_channel, output_channel, groups, 1.0f, -1);
      } else {
        blk.resample_kind = kResampleConv;
        blk.resample_conv = b.conv(prefix.with(".downsamplers.0.conv"), output_channel, output_channel, 3);
        blk.resample_conv.winograd = blk.resample_conv.winograd_coarse = false;
      }
    }
  }

  // mid
  m->has_mid = cfg[kCfgMidBlock] != 0;
  if (m->has_mid) {
    const int c = m->block_out_channels[levels - 1];
    Block& mid = m->mid;
    b.winograd_level = levels - 1 < kWinogradLevels;
    mid.num_layers = 2;
    mid.in_channels = mid.out_channels = c;
    mid.resnets[0] = b.resnet(Name("mid_block.resnets.0"), c, c, groups, mid_scale, 0);
    mid.has_attention = cfg[kCfgAddAttention] != 0;
    if (mid.has_attention) {
      // diffusers: attn_groups = attn_norm_num_groups, else norm_num_groups
      // when resnet_time_scale_shift is "default", else no norm at all.
      int attn_groups = attn_groups_cfg ? attn_groups_cfg : (m->scale_shift ? 0 : groups);
      mid.attentions[0] = b.attention(Name("mid_block.attentions.0"), c, head_dim_cfg ? head_dim_cfg : c, attn_groups, mid_scale);
    }
    mid.resnets[1] = b.resnet(Name("mid_block.resnets.1"), c, c, groups, mid_scale, 0);
  }

  // up
  output_channel = m->block_out_channels[levels - 1];
  for (int i = 0; i < levels; ++i) {
    const int prev_output_channel = output_channel;
    output_channel = m->block_out_channels[levels - 1 - i];
    const int input_channel = m->block_out_channels[imax(levels - 2 - i, 0)];
    const bool is_final = i == levels - 1;
    Block& blk = m->up[i];
    b.winograd_level = levels - 1 - i < kWinogradLevels;
    blk.type = (int)up_types[i];
    blk.num_layers = m->layers_per_block + 1;
    blk.in_channels = prev_output_channel;
    blk.out_channels = output_channel;
    blk.has_attention = blk.type == kAttnUpBlock2D;
    Name prefix("up_blocks.");
    prefix.add_int(i);
    for (int j = 0; j < blk.num_layers; ++j) {
      const int res_skip = j == blk.num_layers - 1 ? input_channel : output_channel;
      const int resnet_in = j == 0 ? prev_output_channel : output_channel;
      Name rp = prefix.with(".resnets.");
      rp.add_int(j);
      blk.resnets[j] = b.resnet(rp, resnet_in + res_skip, output_channel, groups, 1.0f, 0);
      if (blk.has_attention) {
        Name ap = prefix.with(".attentions.");
        ap.add_int(j);
        blk.attentions[j] = b.attention(ap, output_channel, head_dim_cfg ? head_dim_cfg : output_channel, groups, 1.0f);
      }
    }
    if (!is_final) {
      b.winograd_level = levels - 2 - i < kWinogradLevels;  // the upsampler works at the next finer level
      bool resnet_up = blk.type == kResnetUpsampleBlock2D || (blk.type == kAttnUpBlock2D && upsample_type == 1);
      if (resnet_up) {
        blk.resample_kind = kResampleResnet;
        blk.resample_resnet = b.resnet(prefix.with(".upsamplers.0"), output_channel, output_channel, groups, 1.0f, +1);
      } else {
        blk.resample_kind = kResampleConv;
        blk.resample_conv = b.conv(prefix.with(".upsamplers.0.conv"), output_channel, output_channel, 3);
      }
    }
  }

  b.winograd_level = true;
  m->norm_out = b.norm(Name("conv_norm_out"), c0, groups, m->norm_eps);
  m->conv_out = b.conv(Name("conv_out"), c0, m->out_channels, 3);
  if (m->time_embed_dim > m->max_channels) m->max_channels = m->time_embed_dim;
  if (b.status != kOk) return b.status;

  // The resnets' time projections, side by side in one linear layer.
  m->temb_projs = ConvLayer();
  m->temb_projs.cin = m->time_embed_dim;
  for_each_resnet(m, [&](ResnetLayer& r) {
    r.temb_offset = m->temb_projs.cout;
    m->temb_projs.cout += r.time_emb_proj.cout;
  });

  // Parameters live in one allocation each; the TypeScript side fills them.
  // Those the kernels read as they are (norms, biases, embeddings) come
  // first, then the packed layers' weights in packing order: in wasm, where
  // each weight is freed as its layer is packed, a layer's freed weights then
  // form one hole next to the previous layer's, and its packed block (no
  // larger: see pack_all) goes right there.
  Vec<int> packing_order;
  if (!list_packing_sources(m, &packing_order)) return set_error(m, kErrOutOfMemory, Name("out of memory"));
  bool ok = true;
  auto allocate = [&](int i) {
    Param& p = m->params[i];
    if (p.data || !ok) return;
    p.data = static_cast<float*>(mb_alloc(p.numel * sizeof(float)));
    ok = p.data != nullptr;
    p.dev = p.data;  // a device model points these at its device copies when it packs
  };
  for (int i = 0; i < m->params.size; ++i)
    if (!m->params[i].packed_only) allocate(i);
  for (int k = 0; k < packing_order.size; ++k) allocate(packing_order[k]);
  for (int i = 0; i < m->params.size; ++i) allocate(i);  // anything the listing missed
  packing_order.release();
  if (!ok) return set_error(m, kErrOutOfMemory, Name("out of memory allocating parameters"));
  return kOk;
}

// ---------------------------------------------------------------------------
// Packing.

namespace {

// When a model releases its unpacked weights while packing (release_on_pack),
// wasm frees each as soon as its layer is packed: linear memory never shrinks,
// so the two copies must never coexist whole. Native heaps give freed memory
// back (mb_return_free_memory), and there freeing them all after packing
// leaves less fragmentation (measured: 184 vs 224 MB for cifar10-32).
#if defined(__wasm__)
constexpr bool kReleaseWhilePacking = true;
#else
constexpr bool kReleaseWhilePacking = false;
#endif

// Frees one packed-only weight's host copy (see model_release_host_weights).
size_t release_param(Model* m, int index) {
  Param& p = m->params[index];
  if (!p.packed_only || p.released || !p.data) return 0;
  // A host-memory device reads parameters in place (dev == data); packed-only
  // ones are never read that way, so dev goes too.
  if (p.dev == p.data) p.dev = nullptr;
  mb_free(p.data);
  p.data = nullptr;
  p.released = true;
  return p.numel * sizeof(float);
}

// Hands out each packing step's block of m->packed_blocks, allocating it on
// the first packing and finding it again, in the same order, on a repack.
// Natively all blocks are one slab (packed_blocks[0]), carved in order.
//
// Each packing job (one packed block from one or more torch-layout weights)
// first names its sources (`sources`). When weights are released while
// packing (wasm), they are copied out to a staging buffer and freed before
// the block is taken, so the block lands in the hole they leave (the
// parameters were allocated in packing order, see model_init) and linear
// memory ends at weights + the largest job instead of weights + packed copy.
// In listing mode (model_init) the jobs only record their sources.
struct Packer {
  Model* m;
  float* slab = nullptr;
  int next = 0;
  size_t failed_floats = 0;  // the request that could not be allocated
  Vec<int>* listing = nullptr;
  bool staging = false;
  float* staged = nullptr;  // the current job's sources, copied out
  Vec<int> job;             // the current job's sources

  void sources(const int* params, int n) {
    end_job();
    if (listing) {
      for (int i = 0; i < n; ++i)
        if (!listing->push(params[i])) failed_floats = 1;
      return;
    }
    if (!staging) return;
    size_t floats = 0;
    for (int i = 0; i < n; ++i) {
      const Param& p = m->params[params[i]];
      if (p.released || !p.data || !job.push(params[i])) {
        job.size = 0;  // not staged: pack_all's final release frees them
        return;
      }
      floats += align_up(p.numel, 16);
    }
    staged = static_cast<float*>(mb_alloc(floats * sizeof(float)));
    if (!staged) return;  // pack from the weights in place; end_job frees them
    float* cursor = staged;
    for (int k = 0; k < job.size; ++k) {
      Param& p = m->params[job[k]];
      mb_copy(cursor, p.data, p.numel * sizeof(float));
      mb_free(p.data);
      p.data = nullptr;
      p.dev = cursor;
      p.released = true;
      cursor += align_up(p.numel, 16);
    }
  }
  // Frees the finished job's staged copies (or, if staging failed, its weights).
  void end_job() {
    for (int k = 0; k < job.size; ++k) {
      Param& p = m->params[job[k]];
      if (staged) p.dev = nullptr;
      else release_param(m, job[k]);
    }
    if (staged) mb_free(staged);
    staged = nullptr;
    job.size = 0;
  }
  void finish() {
    end_job();
    job.release();
  }

  float* take(size_t floats) {
    if (listing) return nullptr;
    if (slab) {
      float* block = slab;
      slab += floats;
      return block;
    }
    if (next < m->packed_blocks.size) return m->packed_blocks[next++];
    float* block = static_cast<float*>(m->ops->alloc(floats * sizeof(float)));
    if (!block || !m->packed_blocks.push(block)) {
      if (block) m->ops->free(block);
      failed_floats = floats;
      return nullptr;
    }
    ++next;
    return block;
  }
};

// kConvTrainable unless the model gives its weights up while packing (it cannot train then).
int trainable_flag(const Model* m) { return m->release_on_pack ? 0 : kConvTrainable; }

int conv_algo(const Model* m, const ConvLayer& c) {
  if (!conv_uses_winograd(m, c)) return kConvDirect | trainable_flag(m);
  const int tile = m->winograd_tile == 4 ? kConvTile4 : 0;
  return (m->winograd_lean ? kConvWinogradLean : kConvWinograd) | tile | trainable_flag(m);
}

// Packing is the device's concern (its own layouts, in its own memory): these
// walk the layers and hand each one's torch-layout weights to m->ops.
size_t conv_packed_floats(const Model* m, const ConvLayer& c) {
  return m->ops->conv_packed_floats(c.cout, c.cin, c.k, conv_algo(m, c));
}

void pack_conv(Model* m, ConvLayer& c, Packer& packer) {
  m->params[c.weight].packed_only = true;
  packer.sources(&c.weight, 1);
  float* storage = packer.take(conv_packed_floats(m, c));
  if (!storage) return;
  const float* w = m->params[c.weight].dev;  // the device copy (upload_params, or an optimizer step)
  const int taps = c.k * c.k;
  WeightSource src = {w, (long long)c.cin * taps, taps, 1};  // torch [Cout][Cin][kh][kw]
  m->ops->pack_conv(&c.packed, storage, &src, &c.cout, 1, c.cin, c.k, conv_algo(m, c));
}

size_t resnet_packed_floats(const Model* m, const ResnetLayer& r) {
  size_t n = conv_packed_floats(m, r.conv1) + conv_packed_floats(m, r.conv2);  // time_emb_proj: pack_temb_projs
  if (r.has_shortcut) n += conv_packed_floats(m, r.conv_shortcut);
  return n;
}

void pack_resnet(Model* m, ResnetLayer& r, Packer& packer) {
  pack_conv(m, r.conv1, packer);
  pack_conv(m, r.conv2, packer);
  if (r.has_shortcut) pack_conv(m, r.conv_shortcut, packer);
}

size_t temb_projs_packed_floats(const Model* m) {
  return conv_packed_floats(m, m->temb_projs) + (size_t)align_up(m->temb_projs.cout, 16);
}

// Model::temb_projs from every resnet's time_emb_proj weight, and its bias.
void pack_temb_projs(Model* m, Packer& packer) {
  Vec<WeightSource> sources;  // Vec frees nothing by itself: released below
  Vec<int> couts, weights;
  bool listed = true;
  for_each_resnet(m, [&](ResnetLayer& r) {
    const ConvLayer& c = r.time_emb_proj;
    m->params[c.weight].packed_only = true;
    listed = listed && weights.push(c.weight) && couts.push(c.cout);
  });
  if (listed) packer.sources(weights.data, weights.size);
  for (int k = 0; listed && k < weights.size; ++k)
    listed = sources.push(WeightSource{m->params[weights[k]].dev, m->temb_projs.cin, 1, 0});
  float* storage = packer.take(conv_packed_floats(m, m->temb_projs));
  float* bias = packer.take((size_t)align_up(m->temb_projs.cout, 16));
  if (!listed) packer.failed_floats = 1;  // out of host memory for the lists
  if (storage && bias && listed) {
    m->ops->pack_conv(&m->temb_projs.packed, storage, sources.data, couts.data, sources.size, m->temb_projs.cin, 1,
                      kConvDirect | trainable_flag(m));
    m->temb_projs_bias = bias;
    for_each_resnet(m, [&](ResnetLayer& r) {
      const ConvLayer& c = r.time_emb_proj;
      m->ops->copy(bias + r.temb_offset, m->params[c.bias].dev, sizeof(float) * c.cout);
    });
  }
  sources.release();
  couts.release();
  weights.release();
}

size_t attention_packed_floats(const Model* m, const AttnLayer& a) {
  return conv_packed_floats(m, a.qkv) + conv_packed_floats(m, a.out) + (size_t)align_up(3 * a.channels, 16);
}

void pack_attention(Model* m, AttnLayer& a, Packer& packer) {
  const int c = a.channels;
  m->params[a.q_w].packed_only = m->params[a.k_w].packed_only = m->params[a.v_w].packed_only = true;
  const int qkv_weights[3] = {a.q_w, a.k_w, a.v_w};
  packer.sources(qkv_weights, 3);
  float* qkv = packer.take(conv_packed_floats(m, a.qkv));
  if (qkv) {
    WeightSource sources[3] = {{m->params[a.q_w].dev, c, 1, 0}, {m->params[a.k_w].dev, c, 1, 0}, {m->params[a.v_w].dev, c, 1, 0}};
    int couts[3] = {c, c, c};
    m->ops->pack_conv(&a.qkv.packed, qkv, sources, couts, 3, c, 1, kConvDirect | trainable_flag(m));
  }
  pack_conv(m, a.out, packer);
  a.qkv_bias = packer.take((size_t)align_up(3 * c, 16));
  if (!a.qkv_bias) return;
  m->ops->copy(a.qkv_bias, m->params[a.q_b].dev, sizeof(float) * c);
  m->ops->copy(a.qkv_bias + c, m->params[a.k_b].dev, sizeof(float) * c);
  m->ops->copy(a.qkv_bias + 2 * c, m->params[a.v_b].dev, sizeof(float) * c);
}

size_t block_packed_floats(const Model* m, const Block& blk, bool is_mid) {
  size_t n = 0;
  for (int j = 0; j < blk.num_layers; ++j) {
    n += resnet_packed_floats(m, blk.resnets[j]);
    if (blk.has_attention && (!is_mid || j == 0)) n += attention_packed_floats(m, blk.attentions[j]);
  }
  if (blk.resample_kind == kResampleConv) n += conv_packed_floats(m, blk.resample_conv);
  if (blk.resample_kind == kResampleResnet) n += resnet_packed_floats(m, blk.resample_resnet);
  return n;
}

void pack_block(Model* m, Block& blk, bool is_mid, Packer& packer) {
  for (int j = 0; j < blk.num_layers; ++j) {
    pack_resnet(m, blk.resnets[j], packer);
    if (blk.has_attention && (!is_mid || j == 0)) pack_attention(m, blk.attentions[j], packer);
  }
  if (blk.resample_kind == kResampleConv) pack_conv(m, blk.resample_conv, packer);
  if (blk.resample_kind == kResampleResnet) pack_resnet(m, blk.resample_resnet, packer);
}

}  // namespace

static int pack_all(Model* m);

int model_finalize(Model* m) {
  if (m->finalized) return set_error(m, kErrState, Name("model already finalized"));
  return pack_all(m);
}

int model_repack(Model* m) {
  if (!m->finalized) return set_error(m, kErrState, Name("weights are not loaded"));
  if (model_weights_released(m)) {
    Message msg;
    msg.add("this model released its unpacked weights to save memory (loadPipeline does): it can only sample");
    return fail(m, kErrState, msg);
  }
  return pack_all(m);
}

namespace {
int g_training_winograd_tile = 4;
}  // namespace

int select_training_winograd_tile(int tile) {
  if (tile == 2 || tile == 4) g_training_winograd_tile = tile;
  return g_training_winograd_tile;
}

int model_set_winograd_tile(Model* m, int tile) {
  if (tile == m->winograd_tile) return kOk;
  // The packed blocks change size: pack into new ones, keeping the old ones
  // until that succeeds. On failure the old tile is packed back into them
  // (they fit it), so the model stays as it was and usable.
  Vec<float*> old = m->packed_blocks;
  const int old_tile = m->winograd_tile;
  m->packed_blocks = Vec<float*>();
  m->winograd_tile = tile;
  m->planned_batch = m->planned_h = m->planned_w = 0;
  const int status = pack_all(m);
  Vec<float*>& drop = status == kOk ? old : m->packed_blocks;
  for (int i = 0; i < drop.size; ++i) m->ops->free(drop[i]);
  drop.release();
  if (status == kOk) return kOk;
  m->packed_blocks = old;
  m->winograd_tile = old_tile;
  if (pack_all(m) != kOk) m->finalized = false;  // unusable: says "weights are not loaded"
  return status;
}

bool model_weights_released(const Model* m) {
  for (int i = 0; i < m->params.size; ++i)
    if (m->params[i].released) return true;
  return false;
}

int model_release_host_weights(Model* m, size_t* released_bytes) {
  if (released_bytes) *released_bytes = 0;
  if (m->training_ready) return set_error(m, kErrState, Name("a model set up for training keeps its weights"));
  if (!m->finalized) {
    m->release_on_pack = true;  // pack_all frees each weight once its layer is packed
    return kOk;
  }
  size_t bytes = 0;
  for (int i = 0; i < m->params.size; ++i) bytes += release_param(m, i);
  if (released_bytes) *released_bytes = bytes;
  mb_return_free_memory();
  return kOk;
}

// A device model's parameters as its ops read them and packing reads the
// weights: one device allocation, uploaded from the host copies, unless an
// optimizer step on the device left those behind (then the device's stand).
static int upload_params(Model* m) {
  if (!m->ops->device_memory) {
    for (int i = 0; i < m->params.size; ++i) m->params[i].dev = m->params[i].data;
    return kOk;
  }
  if (m->device_params_newer) return kOk;
  size_t total = 0;
  for (int i = 0; i < m->params.size; ++i) total += align_up(m->params[i].numel, 16);
  if (!m->param_device_storage) {
    m->param_device_storage = static_cast<float*>(m->ops->alloc(total * sizeof(float)));
    if (!m->param_device_storage) {
      Message msg;
      msg.add("out of ").add(m->ops->name).add(" memory for the parameters (").add_int((long long)(total * 4 >> 20)).add(" MB)");
      return fail(m, kErrOutOfMemory, msg);
    }
  }
  float* cursor = m->param_device_storage;
  for (int i = 0; i < m->params.size; ++i) {
    Param& p = m->params[i];
    m->ops->upload(cursor, p.data, p.numel * sizeof(float));
    p.dev = cursor;
    cursor += align_up(p.numel, 16);
  }
  return kOk;
}

// Every packing job, in packing order.
static void pack_layers(Model* m, Packer& packer) {
  pack_conv(m, m->conv_in, packer);
  pack_conv(m, m->time_linear_1, packer);
  pack_conv(m, m->time_linear_2, packer);
  if (m->class_embed == 2) {
    pack_conv(m, m->class_linear_1, packer);
    pack_conv(m, m->class_linear_2, packer);
  }
  for (int i = 0; i < m->num_levels; ++i) pack_block(m, m->down[i], false, packer);
  if (m->has_mid) pack_block(m, m->mid, true, packer);
  for (int i = 0; i < m->num_levels; ++i) pack_block(m, m->up[i], false, packer);
  pack_conv(m, m->conv_out, packer);
  pack_temb_projs(m, packer);
}

// The packed layers' weights in the order packing reads them (and marks
// them packed_only); false when out of memory for the list.
static bool list_packing_sources(Model* m, Vec<int>* order) {
  Packer lister{m};
  lister.listing = order;
  pack_layers(m, lister);
  lister.finish();
  return lister.failed_floats == 0;
}

static int pack_all(Model* m) {
  // Lean Winograd packing where weights go as they are packed (wasm): the
  // packed blocks are then no larger than the weights they replace.
  if (!m->packed_blocks.size) m->winograd_lean = m->release_on_pack && kReleaseWhilePacking && !m->ops->device_memory;
  size_t total = conv_packed_floats(m, m->conv_in) + conv_packed_floats(m, m->time_linear_1) +
                 conv_packed_floats(m, m->time_linear_2) + conv_packed_floats(m, m->conv_out);
  if (m->class_embed == 2) total += conv_packed_floats(m, m->class_linear_1) + conv_packed_floats(m, m->class_linear_2);
  for (int i = 0; i < m->num_levels; ++i) total += block_packed_floats(m, m->down[i], false);
  if (m->has_mid) total += block_packed_floats(m, m->mid, true);
  for (int i = 0; i < m->num_levels; ++i) total += block_packed_floats(m, m->up[i], false);
  total += temb_projs_packed_floats(m);

  int status = upload_params(m);
  if (status != kOk) return status;
  Packer packer{m};
  packer.staging = m->release_on_pack && kReleaseWhilePacking && !m->ops->device_memory;
  ++m->pack_generation;
  if (!kReleaseWhilePacking) {
    if (!m->packed_blocks.size) {
      float* slab = static_cast<float*>(m->ops->alloc(total * sizeof(float)));
      if (!slab || !m->packed_blocks.push(slab)) {
        if (slab) m->ops->free(slab);
        Message msg;
        msg.add("out of ").add(m->ops->name).add(" memory packing weights (").add_int((long long)(total * 4 >> 20)).add(" MB)");
        return fail(m, kErrOutOfMemory, msg);
      }
    }
    packer.slab = m->packed_blocks[0];
  }
  pack_layers(m, packer);
  packer.finish();
  if (packer.failed_floats) {
    Message msg;
    msg.add("out of ").add(m->ops->name).add(" memory packing weights (").add_int((long long)(total * 4 >> 20))
        .add(" MB in all)");
    return fail(m, kErrOutOfMemory, msg);
  }
  if (m->release_on_pack) {
    for (int i = 0; i < m->params.size; ++i) release_param(m, i);
    mb_return_free_memory();
  }
  status = m->ops->sync();
  if (status != kOk) {
    Message msg;
    msg.add(m->ops->name).add(" error while packing weights: ").add(m->ops->error_message());
    return fail(m, status, msg);
  }
  m->finalized = true;
  return kOk;
}

// ---------------------------------------------------------------------------
// Forward. In training mode (ex.training) nothing is released and each layer
// records in its `saved` what backward.cpp needs; inference keeps nothing.

namespace {

void capture(Exec& ex, const char* name, const Act& a, int level = -1) {
  Model* m = ex.m;
  if (!m->capture_enabled || !ex.run()) return;
  Capture cap;
  Name n(name);
  if (level >= 0) n.add_int(level);
  for (int i = 0; i <= n.length && i < 16; ++i) cap.name[i] = n.text[i];
  cap.name[15] = 0;
  cap.ndim = 4;
  cap.shape[0] = ex.batch;
  cap.shape[1] = a.c;
  cap.shape[2] = a.h;
  cap.shape[3] = a.w;
  const size_t bytes = a.floats(ex.batch) * sizeof(float);
  cap.data = static_cast<float*>(mb_alloc(bytes));
  if (!cap.data) return;
  const Ops& ops = *m->ops;
  if (ops.device_memory) {  // a debugging aid: converted on the device, then copied back
    float* staged = static_cast<float*>(ops.alloc(bytes));
    if (!staged) {
      mb_free(cap.data);
      return;
    }
    ops.nhwc_to_nchw(a.data, ex.batch, a.c, a.h, a.w, staged);
    ops.download(cap.data, staged, bytes);
    ops.free(staged);
  } else {
    nhwc_to_nchw(a.data, ex.batch, a.c, a.h, a.w, cap.data);
  }
  m->captures.push(cap);
}

void capture_matrix(Exec& ex, const char* name, const float* data, int rows, int cols) {
  Model* m = ex.m;
  if (!m->capture_enabled || !ex.run()) return;
  Capture cap;
  Name n(name);
  for (int i = 0; i <= n.length && i < 16; ++i) cap.name[i] = n.text[i];
  cap.name[15] = 0;
  cap.ndim = 2;
  cap.shape[0] = rows;
  cap.shape[1] = cols;
  cap.shape[2] = cap.shape[3] = 0;
  cap.data = static_cast<float*>(mb_alloc((size_t)rows * cols * sizeof(float)));
  if (!cap.data) return;
  m->ops->download(cap.data, data, (size_t)rows * cols * sizeof(float));
  m->captures.push(cap);
}

// y = conv(x) with the given epilogue.
void conv_apply(Exec& ex, const ConvLayer& c, const Act& x, int upsample, int stride, int pad_top, int pad_left,
                const Act& y, ConvEpilogue ep, ConvSaved* saved = nullptr) {
  const ConvGeometry g = make_geometry(ex, x, upsample, stride, pad_top, pad_left, y);
  if (saved) *saved = ConvSaved{x, y, g};
  // Packing happens after planning: size the scratch from the layer's shape.
  const size_t scratch_floats = ex.ops().conv_scratch_floats(g, c.cout, c.cin, c.k, conv_algo(ex.m, c));
  const uint64_t mark = ex.arena->mark();
  float* scratch = scratch_floats ? ex.arena->alloc(scratch_floats) : nullptr;
  if (ex.run()) {
    if (!ep.bias) ep.bias = P(ex, c.bias);
    if (x.half)
      ex.ops().conv2d_forward_half_input(x.data, g, c.packed, ep, y.data, ex.zero_row, scratch);
    else
      ex.ops().conv2d_forward(x.data, g, c.packed, ep, y.data, ex.zero_row, scratch);
  }
  ex.arena->release(mark);
}

// A linear layer over `rows` vectors of length c.cin (x_half: in the half type).
void linear_apply(Exec& ex, const ConvLayer& c, const float* x, int rows, float* y, const float* bias = nullptr,
                  bool x_half = false) {
  if (!ex.run()) return;
  ConvEpilogue ep;
  ep.bias = bias ? bias : P(ex, c.bias);
  const ConvGeometry g = rows_geometry(rows, c.cin, c.cout);
  if (x_half)
    ex.ops().conv2d_forward_half_input(x, g, c.packed, ep, y, ex.zero_row, nullptr);
  else
    ex.ops().conv2d_forward(x, g, c.packed, ep, y, ex.zero_row, nullptr);
}

// Returns the statistics buffer (mean, rstd) for the backward.
float* norm_apply(Exec& ex, const NormLayer& n, const Act& x, const Act& y, bool silu, const float* scale_shift = nullptr,
                  int scale_shift_ld = 0) {
  float* stats = ex.arena->alloc((size_t)2 * ex.batch * n.groups);
  if (!ex.run()) return stats;
  GroupNormArgs a;
  a.batch = ex.batch;
  a.pixels = x.h * x.w;
  a.channels = x.c;
  a.groups = n.groups;
  a.eps = n.eps;
  a.gamma = P(ex, n.gamma);
  a.beta = P(ex, n.beta);
  a.scale_shift = scale_shift;
  a.scale_shift_ld = scale_shift_ld;
  a.silu = silu;
  if (y.half)
    ex.ops().group_norm_forward_half(x.data, a, y.data, stats);
  else
    ex.ops().group_norm_forward(x.data, a, y.data, stats);
  return stats;
}

// GroupNorm's output buffer for a GEMM's input: in the half type where the
// device keeps such activations in it (Exec::half_activations).
Act norm_output(Exec& ex, int h, int w, int c) { return ex.half_activations(c) ? ex.alloc_half(h, w, c) : ex.alloc(h, w, c); }

// ResnetBlock2D (pre-norm, SiLU), writing into `out` (already allocated, the
// output size). Temporaries are released before returning (inference).
void resnet_forward(Exec& ex, ResnetLayer& r, const Act& x, const Act& out) {
  const uint64_t mark = ex.mark();
  ResnetSaved& s = r.saved;
  // A resampling block resamples GroupNorm1's output before conv1 reads it: float32 then.
  Act h = r.resample == 0 ? norm_output(ex, x.h, x.w, x.c) : ex.alloc(x.h, x.w, x.c);
  s.x = x;
  s.h0 = h;
  s.stats1 = norm_apply(ex, r.norm1, x, h, true);
  Act x_res = x;
  if (r.resample != 0) {
    Act h2 = ex.alloc(out.h, out.w, x.c);
    x_res = ex.alloc(out.h, out.w, x.c);
    if (ex.run()) {
      if (r.resample > 0) {
        ex.ops().upsample_nearest2x(h.data, ex.batch, x.h, x.w, x.c, h2.data);
        ex.ops().upsample_nearest2x(x.data, ex.batch, x.h, x.w, x.c, x_res.data);
      } else {
        ex.ops().avgpool2x2(h.data, ex.batch, x.h, x.w, x.c, h2.data);
        ex.ops().avgpool2x2(x.data, ex.batch, x.h, x.w, x.c, x_res.data);
      }
    }
    h = h2;
  }
  s.hin = h;
  s.xres = x_res;
  // This block's slice of every resnet's time projection (run_forward).
  const int temb_ld = ex.m->temb_projs.cout;  // the slice's row stride
  float* temb_proj = ex.temb_projs + r.temb_offset;
  s.temb_proj = temb_proj;

  Act h1 = ex.alloc(out.h, out.w, r.cout);
  ConvEpilogue ep1;
  if (!ex.m->scale_shift) {
    ep1.batch_bias = temb_proj;  // hidden + temb[:, :, None, None]
    ep1.batch_bias_ld = temb_ld;
  }
  conv_apply(ex, r.conv1, h, 1, 1, 1, 1, h1, ep1);
  // Training keeps GroupNorm2's input; inference normalises in place, or
  // into a half buffer (Exec::half_activations).
  Act h2 = ex.training || ex.half_activations(r.cout) ? norm_output(ex, out.h, out.w, r.cout) : h1;
  s.h1 = h1;
  s.h2 = h2;
  if (ex.m->scale_shift)
    s.stats2 = norm_apply(ex, r.norm2, h1, h2, true, temb_proj, temb_ld);
  else
    s.stats2 = norm_apply(ex, r.norm2, h1, h2, true);
  // dropout: identity at inference; a Philox mask when training
  Act h2d = h2;
  if (ex.training && ex.m->dropout > 0) {
    h2d = ex.alloc(out.h, out.w, r.cout);
    s.dropout_stream = ex.dropout_streams;
    if (ex.run()) ex.ops().dropout_apply(ex.dropout_seed, s.dropout_stream, ex.m->dropout, h2.data, (long long)h2.floats(ex.batch), h2d.data);
  }
  if (ex.training) ++ex.dropout_streams;
  s.h2d = h2d;

  Act shortcut = x_res;
  if (r.has_shortcut) {
    shortcut = ex.alloc(out.h, out.w, r.cout);
    conv_apply(ex, r.conv_shortcut, x_res, 1, 1, 0, 0, shortcut, ConvEpilogue());
  }
  ConvEpilogue ep2;
  ep2.residual = shortcut.data;
  ep2.residual_ld = shortcut.c;
  ep2.divisor = r.output_scale_factor;
  conv_apply(ex, r.conv2, h2d, 1, 1, 1, 1, out, ep2);
  ex.release(mark);
}

Act resnet_new(Exec& ex, ResnetLayer& r, const Act& x) {
  int oh = x.h, ow = x.w;
  if (r.resample > 0) oh *= 2, ow *= 2;
  if (r.resample < 0) oh /= 2, ow /= 2;
  Act out = ex.alloc(oh, ow, r.cout);
  resnet_forward(ex, r, x, out);
  return out;
}

// Attention block (diffusers Attention with residual_connection). Inference
// updates x in place; training writes a new tensor so x stays for the backward.
Act attention_forward_block(Exec& ex, AttnLayer& a, const Act& x) {
  Act out = ex.training ? ex.alloc(x.h, x.w, x.c) : x;
  const uint64_t mark = ex.mark();
  AttnSaved& s = a.saved;
  const int tokens = x.h * x.w;
  const int rows = ex.batch * tokens;
  s.x = x;
  Act normed = x;
  s.stats = nullptr;
  if (a.has_norm) {
    normed = norm_output(ex, x.h, x.w, x.c);
    s.stats = norm_apply(ex, a.norm, x, normed, false);
  }
  s.normed = normed;
  float* qkv = ex.arena->alloc((size_t)rows * 3 * a.channels);
  s.qkv = qkv;
  linear_apply(ex, a.qkv, normed.data, rows, qkv, a.qkv_bias, normed.half);
  float* attn = ex.arena->alloc((size_t)rows * a.channels);
  s.attn = attn;
  AttentionArgs args;
  args.batch = ex.batch;
  args.tokens = tokens;
  args.heads = a.heads;
  args.head_dim = a.head_dim;
  args.scale = 1.0f / sqrt_f32((float)a.head_dim);
  // Training keeps the softmax for the backward (host memory only: the CPU kernels').
  const size_t kept = ex.training && !ex.ops().device_memory ? attention_probs_floats(args) : 0;
  s.probs = kept ? ex.arena->alloc(kept) : nullptr;
  args.probs = s.probs;
  float* scratch = ex.arena->alloc(ex.ops().attention_scratch_floats(args));
  if (ex.run()) ex.ops().attention_forward(qkv, args, attn, scratch, ex.zero_row);
  if (ex.run()) {
    ConvEpilogue ep;
    ep.bias = P(ex, a.out.bias);
    ep.residual = x.data;  // each output element reads only its own residual: in place is safe
    ep.residual_ld = x.c;
    ep.divisor = a.rescale_output_factor;
    ex.ops().conv2d_forward(attn, rows_geometry(rows, a.channels, a.channels), a.out.packed, ep, out.data, ex.zero_row,
                            nullptr);
  }
  ex.release(mark);
  return out;
}

int downsample_size(int n, int padding) {
  const int total_pad = padding == 0 ? 1 : 2 * padding;  // padding 0: F.pad(0, 1, 0, 1)
  return (n + total_pad - 3) / 2 + 1;
}

}  // namespace

// The forward pass. Returns the NHWC output (before the fourier division) so
// the training step can take the loss on it; writes NCHW to out_nchw if given.
Act run_forward(Exec& ex, int height, int width, const float* x_nchw, const float* timesteps, const float* class_cond,
                float* out_nchw) {
  Model* m = ex.m;
  ForwardSaved& saved = m->saved;
  const int B = ex.batch;

  // 1. time embedding (and class embedding), then SiLU of it for the resnets
  float* t_proj = ex.arena->alloc((size_t)B * m->time_proj_dim);
  saved.t_proj = t_proj;
  const Ops& ops = ex.ops();
  if (ex.run()) {
    if (m->time_embedding_type == 0)
      ops.timestep_embedding(timesteps, B, m->time_proj_dim, m->flip_sin_to_cos, m->freq_shift, t_proj);
    else if (m->time_embedding_type == 1)
      ops.fourier_embedding(timesteps, B, P(ex, m->time_proj_weight), m->block_out_channels[0], t_proj);
    else
      ops.gather_rows(P(ex, m->time_proj_weight), m->time_proj_dim, timesteps, B, t_proj, false);
  }
  const int TE = m->time_embed_dim;
  float* emb_hidden = ex.arena->alloc((size_t)B * TE);
  float* emb_hidden_act = ex.arena->alloc((size_t)B * TE);
  float* emb = ex.arena->alloc((size_t)B * TE);
  saved.emb_hidden = emb_hidden;
  saved.emb = emb;
  linear_apply(ex, m->time_linear_1, t_proj, B, emb_hidden);
  if (ex.run()) ops.silu_forward(emb_hidden, (long long)B * TE, emb_hidden_act);
  linear_apply(ex, m->time_linear_2, emb_hidden_act, B, emb);
  capture_matrix(ex, "temb", emb, B, TE);
  if (m->class_embed == 1 && ex.run()) {
    ops.gather_rows(P(ex, m->class_table), TE, class_cond, B, emb, true);
  } else if (m->class_embed == 2) {
    float* c_proj = ex.arena->alloc((size_t)B * m->time_proj_dim);
    float* c_hidden = ex.arena->alloc((size_t)B * TE);
    float* c_hidden_act = ex.arena->alloc((size_t)B * TE);
    float* c_emb = ex.arena->alloc((size_t)B * TE);
    saved.c_proj = c_proj;
    saved.c_hidden = c_hidden;
    // diffusers projects the labels with the model's own time_proj, whichever
    // it is: sinusoids, the Fourier features, or rows of the learned table.
    if (ex.run()) {
      if (m->time_embedding_type == 1)
        ops.fourier_embedding(class_cond, B, P(ex, m->time_proj_weight), m->block_out_channels[0], c_proj);
      else if (m->time_embedding_type == 2)
        ops.gather_rows(P(ex, m->time_proj_weight), m->time_proj_dim, class_cond, B, c_proj, false);
      else
        ops.timestep_embedding(class_cond, B, m->time_proj_dim, m->flip_sin_to_cos, m->freq_shift, c_proj);
    }
    linear_apply(ex, m->class_linear_1, c_proj, B, c_hidden);
    if (ex.run()) ops.silu_forward(c_hidden, (long long)B * TE, c_hidden_act);
    linear_apply(ex, m->class_linear_2, c_hidden_act, B, c_emb);
    if (ex.run()) ops.add_forward(emb, c_emb, (long long)B * TE, emb);
  } else if (m->class_embed == 3 && ex.run()) {
    ops.add_forward(emb, class_cond, (long long)B * TE, emb);
  }
  ex.silu_emb = ex.arena->alloc((size_t)B * TE);
  saved.silu_emb = ex.silu_emb;
  if (ex.run()) ops.silu_forward(emb, (long long)B * TE, ex.silu_emb);
  ex.temb_projs = ex.arena->alloc((size_t)B * m->temb_projs.cout);
  linear_apply(ex, m->temb_projs, ex.silu_emb, B, ex.temb_projs, m->temb_projs_bias);

  // 2. input, to NHWC (centering fused), and conv_in
  Act input = ex.alloc(height, width, m->in_channels);
  if (ex.run())
    ops.nchw_to_nhwc(x_nchw, B, m->in_channels, height, width, input.data, m->center_input_sample ? 2.0f : 1.0f,
                 m->center_input_sample ? -1.0f : 0.0f);
  Act h = ex.alloc(height, width, m->block_out_channels[0]);
  conv_apply(ex, m->conv_in, input, 1, 1, 1, 1, h, ConvEpilogue(), &saved.conv_in);
  capture(ex, "conv_in", h);

  // 3. down; every resnet output (and downsample output) is a skip connection
  Act* skips = saved.skips;
  int num_skips = 0;
  skips[num_skips++] = h;
  for (int i = 0; i < m->num_levels; ++i) {
    Block& blk = m->down[i];
    for (int j = 0; j < blk.num_layers; ++j) {
      h = resnet_new(ex, blk.resnets[j], h);
      if (blk.has_attention) h = attention_forward_block(ex, blk.attentions[j], h);
      skips[num_skips++] = h;
    }
    if (blk.resample_kind == kResampleConv) {
      const int p = m->downsample_padding;
      Act y = ex.alloc(downsample_size(h.h, p), downsample_size(h.w, p), blk.out_channels);
      if (y.h < 1 || y.w < 1) {
        Message msg;
        msg.add("input of ").add_int(height).add("x").add_int(width).add(" is too small: down block ").add_int(i).add(
            " would produce an empty feature map");
        ex.fail_with(msg);
        return Act();
      }
      conv_apply(ex, blk.resample_conv, h, 1, 2, p, p, y, ConvEpilogue(), &blk.resample_saved);
      h = y;
      skips[num_skips++] = h;
    } else if (blk.resample_kind == kResampleResnet) {
      if (h.h < 2 || h.w < 2) {
        Message msg;
        msg.add("input of ").add_int(height).add("x").add_int(width).add(" is too small for down block ").add_int(i);
        ex.fail_with(msg);
        return Act();
      }
      h = resnet_new(ex, blk.resample_resnet, h);
      skips[num_skips++] = h;
    }
    capture(ex, "down.", h, i);
  }
  saved.num_skips = num_skips;

  // 4. mid
  if (m->has_mid) {
    h = resnet_new(ex, m->mid.resnets[0], h);
    if (m->mid.has_attention) h = attention_forward_block(ex, m->mid.attentions[0], h);
    h = resnet_new(ex, m->mid.resnets[1], h);
    capture(ex, "mid", h);
  }

  // 5. up: concatenate the matching skip, then resnet (and attention)
  for (int i = 0; i < m->num_levels; ++i) {
    Block& blk = m->up[i];
    for (int j = 0; j < blk.num_layers; ++j) {
      const Act skip = skips[--num_skips];
      if (skip.h != h.h || skip.w != h.w) {
        Message msg;
        msg.add("input of ").add_int(height).add("x").add_int(width).add(" does not fit this UNet: up block ").add_int(i).add(
            " has a ").add_int(h.h).add("x").add_int(h.w).add(" feature map but its skip connection is ").add_int(skip.h).add(
            "x").add_int(skip.w).add("; use a height and width divisible by ").add_int(1 << (m->num_levels - 1));
        ex.fail_with(msg);
        return Act();
      }
      Act out = ex.alloc(h.h, h.w, blk.resnets[j].cout);
      const uint64_t mark = ex.mark();
      Act cat = ex.alloc(h.h, h.w, h.c + skip.c);
      blk.prev[j] = h;
      blk.cat[j] = cat;
      if (ex.run()) ops.concat_channels(h.data, h.c, skip.data, skip.c, B * h.h * h.w, cat.data);
      resnet_forward(ex, blk.resnets[j], cat, out);
      ex.release(mark);
      h = out;
      if (blk.has_attention) h = attention_forward_block(ex, blk.attentions[j], h);
    }
    if (blk.resample_kind == kResampleConv) {
      Act y = ex.alloc(2 * h.h, 2 * h.w, blk.out_channels);
      conv_apply(ex, blk.resample_conv, h, 2, 1, 1, 1, y, ConvEpilogue(), &blk.resample_saved);
      h = y;
    } else if (blk.resample_kind == kResampleResnet) {
      h = resnet_new(ex, blk.resample_resnet, h);
    }
    capture(ex, "up.", h, i);
  }

  // 6. out: GroupNorm + SiLU, conv_out, back to NCHW (fourier: divide by t)
  saved.h_last = h;
  Act normed = norm_output(ex, h.h, h.w, h.c);
  saved.norm_out_stats = norm_apply(ex, m->norm_out, h, normed, true);
  Act y = ex.alloc(h.h, h.w, m->out_channels);
  conv_apply(ex, m->conv_out, normed, 1, 1, 1, 1, y, ConvEpilogue(), &saved.conv_out);
  if (ex.run() && out_nchw) {
    if (m->time_embedding_type == 1)
      ops.nhwc_to_nchw_div(y.data, B, m->out_channels, y.h, y.w, timesteps, out_nchw);
    else
      ops.nhwc_to_nchw(y.data, B, m->out_channels, y.h, y.w, out_nchw);
  }
  return y;
}

// run_forward with host inputs and output. On a device with its own memory
// they are staged through arena buffers (allocated while planning too, so the
// plan counts them) and the result is copied back; on the host they are used
// in place.
static void run_forward_staged(Exec& ex, int channels, int height, int width, const float* x_nchw,
                               const float* timesteps, const float* class_cond, int class_cond_len, float* out_nchw) {
  const Ops& ops = ex.ops();
  if (!ops.device_memory) {
    run_forward(ex, height, width, x_nchw, timesteps, class_cond, out_nchw);
    return;
  }
  Model* m = ex.m;
  const size_t in_floats = (size_t)ex.batch * channels * height * width;
  const size_t out_floats = (size_t)ex.batch * m->out_channels * height * width;
  float* x_dev = ex.arena->alloc(in_floats);
  float* t_dev = ex.arena->alloc((size_t)ex.batch);
  float* c_dev = class_cond_len > 0 || (ex.planning && m->class_embed != 0)
                     ? ex.arena->alloc(m->class_embed == 3 ? (size_t)ex.batch * m->time_embed_dim : (size_t)ex.batch)
                     : nullptr;
  float* out_dev = ex.arena->alloc(out_floats);
  if (ex.run()) {
    ops.upload(x_dev, x_nchw, in_floats * sizeof(float));
    ops.upload(t_dev, timesteps, (size_t)ex.batch * sizeof(float));
    if (c_dev && class_cond) ops.upload(c_dev, class_cond, (size_t)class_cond_len * sizeof(float));
  }
  run_forward(ex, height, width, x_dev, t_dev, class_cond ? c_dev : nullptr, out_dev);
  if (ex.run() && out_nchw) ops.download(out_nchw, out_dev, out_floats * sizeof(float));
}

// The most tokens (pixels) any attention layer sees at this input size: the
// finest level that has attention (each level rounds its size up when halving).
static double attention_tokens(const Model* m, int height, int width) {
  double most = 0;
  for (int level = 0, h = height, w = width; level < m->num_levels; ++level, h = (h + 1) / 2, w = (w + 1) / 2) {
    const bool attends = m->down[level].has_attention || m->up[m->num_levels - 1 - level].has_attention ||
                         (level == m->num_levels - 1 && m->has_mid && m->mid.has_attention);
    if (attends && (double)h * w > most) most = (double)h * w;
  }
  return most;
}

int check_plan_size(Model* m, int batch, int height, int width, bool training) {
  if (batch < 1 || height < 1 || width < 1 || batch > (1 << 20) || height > (1 << 15) || width > (1 << 15))
    return set_error(m, kErrInvalidArgument, Name("batch, height and width must be positive and reasonable"));
  // Each buffer's size is computed in size_t; on 32-bit builds (wasm) refuse
  // shapes where one could pass 4 GB before any of them is computed. The
  // widest buffers are the widest activation (max_channels counts concats),
  // q|k|v (3x a block's channels) and, in training, the attention backward's
  // 3 T x T scores per thread (the forward takes its scores in blocks of
  // queries, a few MB whatever T).
  if (sizeof(size_t) < 8) {
    const double pixels = (double)batch * height * width;
    const double widest = pixels * (m->max_channels + 1) * 3.0 * sizeof(float);
    const double tokens = training ? attention_tokens(m, height, width) : 0.0;
    const double scores = 3.0 * tokens * tokens * sizeof(float) * num_threads();
    if (widest >= 4294967296.0 || scores >= 4294967296.0) {
      Message msg;
      msg.add("batch ").add_int(batch).add(" at ").add_int(height).add("x").add_int(width).add(
          " is beyond what this 32-bit (wasm) build can address");
      return fail(m, kErrOutOfMemory, msg);
    }
  }
  return kOk;
}

int plan_total_bytes(Model* m, const Arena& planner, size_t* bytes) {
  const uint64_t total = planner.peak * sizeof(float) + (uint64_t)align_up(m->max_channels, 16) * sizeof(float);
  // wasm32: one allocation may take up to 3.75 GiB of the 4 GiB (wasm/runtime.cpp)
  const uint64_t most = sizeof(size_t) == 4 ? 0xF0000000ull : (uint64_t)(size_t)-1 / 2;
  if (total > most) {
    Message msg;
    msg.add("needs ").add_int((long long)(total >> 20)).add(" MB of activations, beyond what this build can address");
    return fail(m, kErrOutOfMemory, msg);
  }
  *bytes = (size_t)total;
  return kOk;
}

int model_plan_bytes(Model* m, int batch, int height, int width, size_t* bytes) {
  int status = check_plan_size(m, batch, height, width);
  if (status != kOk) return status;
  Arena planner;
  planner.planning = true;
  Exec ex{m, &planner, true, batch, nullptr, nullptr, false, 0, 0, kOk, Message()};
  run_forward_staged(ex, m->in_channels, height, width, nullptr, nullptr, nullptr, 0, nullptr);
  if (ex.status != kOk) return fail(m, ex.status, ex.error);
  return plan_total_bytes(m, planner, bytes);
}

void model_clear_captures(Model* m) {
  for (int i = 0; i < m->captures.size; ++i) mb_free(m->captures[i].data);
  m->captures.size = 0;
}

int check_forward_inputs(Model* m, int batch, int channels, const float* timesteps, const float* class_cond,
                         int class_cond_len) {
  if (!m->finalized) return set_error(m, kErrState, Name("weights are not loaded"));
  if (channels != m->in_channels) {
    Message msg;
    msg.add("sample has ").add_int(channels).add(" channels but the model expects in_channels = ").add_int(m->in_channels);
    return fail(m, kErrInvalidArgument, msg);
  }
  // Class conditioning must be present exactly when the model has it.
  if (m->class_embed == 0 && class_cond_len > 0)
    return set_error(m, kErrInvalidArgument, Name("class labels given but the model is not class-conditional"));
  if (m->class_embed != 0) {
    const int expected = m->class_embed == 3 ? batch * m->time_embed_dim : batch;
    if (class_cond_len != expected || !class_cond) {
      Message msg;
      msg.add("class conditioning needs ").add_int(expected).add(" values (got ").add_int(class_cond_len).add(")");
      return fail(m, kErrInvalidArgument, msg);
    }
    if (m->class_embed == 1)
      for (int b = 0; b < batch; ++b) {
        const float v = class_cond[b];
        if (!(v >= 0 && v < m->num_class_embeds) || v != (float)(int)v) {
          Message msg;
          msg.add("class label at index ").add_int(b).add(" is not an integer in [0, ").add_int(m->num_class_embeds).add(")");
          return fail(m, kErrInvalidArgument, msg);
        }
      }
    // class_embed_type timestep with a learned time table: the labels index that table
    if (m->class_embed == 2 && m->time_embedding_type == 2)
      for (int b = 0; b < batch; ++b) {
        const float v = class_cond[b];
        if (!(v >= 0 && v < m->num_train_timesteps) || v != (float)(int)v) {
          Message msg;
          msg.add("class label at index ").add_int(b).add(" indexes the learned time table: it must be an integer in [0, ")
              .add_int(m->num_train_timesteps).add(")");
          return fail(m, kErrInvalidArgument, msg);
        }
      }
    if (has_non_finite(class_cond, class_cond_len))
      return set_error(m, kErrInvalidArgument, Name("class conditioning contains NaN or Inf"));
  }
  return timesteps ? check_timesteps(m, batch, timesteps) : kOk;  // (null: the caller checks them later)
}

int check_timesteps(Model* m, int batch, const float* timesteps) {
  for (int b = 0; b < batch; ++b) {
    const float t = timesteps[b];
    if (!is_finite_f32(t)) return set_error(m, kErrInvalidArgument, Name("timestep is NaN or Inf"));
    if (m->time_embedding_type == 1 && !(t > 0))
      return set_error(m, kErrInvalidArgument, Name("fourier time embedding needs timesteps > 0 (it takes log(t))"));
    if (m->time_embedding_type == 2 && (!(t >= 0 && t < m->num_train_timesteps) || t != (float)(int)t)) {
      Message msg;
      msg.add("learned time embedding needs integer timesteps in [0, ").add_int(m->num_train_timesteps).add(")");
      return fail(m, kErrInvalidArgument, msg);
    }
  }
  return kOk;
}

int ensure_arena(Model* m, int batch, int height, int width, bool training, size_t bytes) {
  if (batch == m->planned_batch && height == m->planned_h && width == m->planned_w && training == m->planned_training &&
      num_threads() == m->planned_threads)
    return kOk;
  const char* what = training ? "a training step" : "a forward";
  if (m->arena_limit_bytes && bytes > m->arena_limit_bytes) {
    Message msg;
    msg.add(what).add(" at batch ").add_int(batch).add(", ").add_int(height).add("x").add_int(width).add(" needs ").add_int(
        (long long)(bytes >> 20)).add(" MB of activations, over the limit of ").add_int((long long)(m->arena_limit_bytes >> 20)).add(" MB");
    return fail(m, kErrOutOfMemory, msg);
  }
  // Storage that is already big enough stays (say a training step's arena
  // serving the forwards between steps): a new one would page-fault all over.
  const Ops& ops = *m->ops;
  if (!m->arena.base || m->arena.capacity < bytes / sizeof(float)) {
    ops.free(m->arena.base);
    m->arena.base = nullptr;
    m->arena.capacity = 0;
    m->planned_batch = m->planned_h = m->planned_w = 0;
    // A device says how much it has left: refuse before asking for more.
    const size_t available = ops.available_bytes();
    if (available && bytes > available) {
      Message msg;
      msg.add("out of ").add(ops.name).add(" memory: ").add(what).add(" at batch ").add_int(batch).add(", ").add_int(height).add(
          "x").add_int(width).add(" needs ").add_int((long long)(bytes >> 20)).add(" MB of activations, ").add_int(
          (long long)(available >> 20)).add(" MB are free");
      return fail(m, kErrOutOfMemory, msg);
    }
    m->arena.base = static_cast<float*>(ops.alloc(bytes));
    m->arena.capacity = bytes / sizeof(float);
  }
  if (!m->arena.base) {
    Message msg;
    msg.add("out of ").add(ops.name).add(" memory: ").add(what).add(" at batch ").add_int(batch).add(", ").add_int(height).add("x").add_int(width).add(
        " needs ").add_int((long long)(bytes >> 20)).add(" MB of activations");
    m->arena.capacity = 0;
    return fail(m, kErrOutOfMemory, msg);
  }
  m->planned_batch = batch;
  m->planned_h = height;
  m->planned_w = width;
  m->planned_training = training;
  m->planned_threads = num_threads();  // conv scratch is per thread
  return kOk;
}

float* begin_pass(Model* m) {
  model_clear_captures(m);
  m->arena.top = 0;
  m->arena.peak = 0;
  float* zero_row = m->arena.alloc((size_t)m->max_channels);
  m->ops->zero(zero_row, sizeof(float) * (size_t)m->max_channels);
  return zero_row;
}

int model_forward(Model* m, int batch, int channels, int height, int width, const float* sample_nchw,
                  const float* timesteps, const float* class_cond, int class_cond_len, float* out_nchw) {
  int status = check_forward_inputs(m, batch, channels, timesteps, class_cond, class_cond_len);
  if (status != kOk) return status;
  if (batch != m->planned_batch || height != m->planned_h || width != m->planned_w || m->planned_training ||
      num_threads() != m->planned_threads) {
    size_t bytes = 0;
    status = model_plan_bytes(m, batch, height, width, &bytes);
    if (status == kOk) status = ensure_arena(m, batch, height, width, false, bytes);
    if (status != kOk) return status;
  }
  float* zero_row = begin_pass(m);
  Exec ex{m, &m->arena, false, batch, zero_row, nullptr, false, 0, 0, kOk, Message()};
  run_forward_staged(ex, channels, height, width, sample_nchw, timesteps, class_cond, class_cond_len, out_nchw);
  if (ex.status != kOk) return fail(m, ex.status, ex.error);
  status = m->ops->sync();  // a device reports launch errors and faults here
  if (status != kOk) {
    Message msg;
    msg.add(m->ops->name).add(" error in the forward pass: ").add(m->ops->error_message());
    return fail(m, status, msg);
  }
  return kOk;
}

void model_release(Model* m) {
  const Ops* ops = m->ops ? m->ops : cpu_ops();
  for (int i = 0; i < m->params.size; ++i) {
    Param& p = m->params[i];
    mb_free(p.data);
    ops->free(p.grad);  // the training state is in the device's memory
    ops->free(p.exp_avg);
    ops->free(p.exp_avg_sq);
    ops->free(p.ema);
  }
  m->params.release();
  ops->free(m->grad_norm_sums);
  m->grad_norm_sums = nullptr;
  for (int i = 0; i < m->packed_blocks.size; ++i) ops->free(m->packed_blocks[i]);
  m->packed_blocks.release();
  ops->free(m->param_device_storage);
  m->param_device_storage = nullptr;
  ops->free(m->arena.base);
  m->arena.base = nullptr;
  if (m->queue && ops->queue_free) ops->queue_free(m->queue);
  m->queue = nullptr;
  m->arena.capacity = m->arena.top = m->arena.peak = 0;
  model_clear_captures(m);
  m->captures.release();
}

}  // namespace mb
