// The UNet2DModel graph: built once from a config, it owns the parameter table
// (diffusers names and shapes), the packed weights and the activation arena,
// and runs the forward pass, the backward and the optimizer on the op set of
// its device (engine/ops.h: cpu or cuda).
#pragma once

#include "../cpu/ops.h"
#include "arena.h"
#include "common.h"

namespace mb {

// The config as the TypeScript side encodes it (src/model/config.ts,
// encodeEngineConfig): a flat array of doubles, validated there first and
// checked again here. Keep the two in sync.
enum ConfigSlot {
  kCfgInChannels = 0,
  kCfgOutChannels,
  kCfgCenterInputSample,
  kCfgTimeEmbeddingType,  // 0 positional, 1 fourier, 2 learned
  kCfgTimeEmbedDim,       // resolved: time_embedding_dim or 4 * block_out_channels[0]
  kCfgFlipSinToCos,
  kCfgFreqShift,
  kCfgNumLevels,
  kCfgLayersPerBlock,
  kCfgMidBlock,  // 0 none, 1 UNetMidBlock2D
  kCfgMidBlockScaleFactor,
  kCfgDownsamplePadding,
  kCfgDownsampleType,  // 0 conv, 1 resnet
  kCfgUpsampleType,    // 0 conv, 1 resnet
  kCfgAttentionHeadDim,  // 0: null (one head per block)
  kCfgNormNumGroups,
  kCfgAttnNormNumGroups,  // 0: null
  kCfgNormEps,
  kCfgResnetTimeScaleShift,  // 0 default, 1 scale_shift
  kCfgAddAttention,
  kCfgClassEmbed,  // 0 none, 1 embedding table, 2 timestep, 3 identity
  kCfgNumClassEmbeds,
  kCfgNumTrainTimesteps,
  kCfgDropout,
  kCfgFixedSlots,  // then block_out_channels[L], down_block_types[L], up_block_types[L]
};
enum DownBlockType { kDownBlock2D = 0, kAttnDownBlock2D = 1, kResnetDownsampleBlock2D = 2 };
enum UpBlockType { kUpBlock2D = 0, kAttnUpBlock2D = 1, kResnetUpsampleBlock2D = 2 };

constexpr int kMaxLevels = 8;
constexpr int kMaxLayers = 9;  // up blocks have layers_per_block + 1
constexpr int kMaxNameLength = 96;

struct Param {
  char name[kMaxNameLength];
  int ndim;
  int shape[4];
  size_t numel;
  float* data;  // host, torch layout: what the loader fills (stale on a device after an optimizer step: see Model)
  float* dev;   // the values as the model's ops read and the optimizer updates them: `data` on cpu, a device copy on cuda
  // Training state in the device's memory (host memory on cpu), allocated
  // by train_init (null until then), torch layout.
  float* grad;
  float* exp_avg;
  float* exp_avg_sq;
  float* ema;
  bool trainable;  // false for GaussianFourierProjection's fixed weight
  // Conv/linear weights the kernels read only in packed form: `data` may be
  // released after packing (model_release_host_weights) to halve a sampling
  // model's memory; released ones are null and the model can no longer train.
  bool packed_only;
  bool released;
};

// An NHWC activation: `batch` images of h x w pixels, c channels each.
struct Act {
  float* data = nullptr;
  int h = 0, w = 0, c = 0;
  // The elements are the model's half type, not floats (half activations,
  // Ops::group_norm_forward_half): only a GEMM's input, at inference.
  bool half = false;
  size_t floats(int batch) const { return (size_t)batch * h * w * c; }
};

// What a training forward keeps for the backward, per layer (pointers into
// the arena, valid until the next forward).
struct ConvSaved {
  Act in, out;
  ConvGeometry geometry;
};
struct ResnetSaved {
  Act x;     // block input
  Act h0;    // SiLU(GroupNorm1(x)), at the input size
  Act hin;   // conv1's input: h0, resampled when the block up/downsamples
  Act xres;  // the residual branch: x, resampled likewise
  Act h1;    // conv1(hin) + bias (+ temb): GroupNorm2's input
  Act h2;    // SiLU(GroupNorm2(h1)) (scale/shift applied)
  Act h2d;   // conv2's input: h2, after dropout when training with dropout
  uint64_t dropout_stream = 0;
  float* temb_proj = nullptr;
  float* stats1 = nullptr;
  float* stats2 = nullptr;
};
struct AttnSaved {
  Act x;       // block input (the residual)
  Act normed;  // GroupNorm(x), or x
  float* stats = nullptr;
  float* qkv = nullptr;
  float* attn = nullptr;  // attention output before to_out
  float* probs = nullptr; // the softmax kept for the backward (AttentionArgs::probs), or null
};

struct NormLayer {
  int gamma = -1, beta = -1;  // parameter indices
  int channels = 0, groups = 1;
  float eps = 1e-5f;
};

// A convolution or a linear layer (a 1x1 convolution), packed for the GEMM.
struct ConvLayer {
  int weight = -1, bias = -1;
  int cin = 0, cout = 0, k = 1;
  bool winograd = false;  // a 3x3 conv only ever run with stride 1: packed for Winograd
  // Such a conv at a coarse level (few tiles per image): Winograd only in a
  // model set up for training (F(4x4, 3x3); its batches give the GEMMs rows).
  bool winograd_coarse = false;
  PackedWeights packed;
};

struct ResnetLayer {
  int cin = 0, cout = 0;
  int resample = 0;  // 0 none, +1 nearest x2 up, -1 2x2 average-pool down
  NormLayer norm1, norm2;
  ConvLayer conv1, time_emb_proj, conv2, conv_shortcut;  // time_emb_proj: parameters only (see Model::temb_projs)
  int temb_offset = 0;  // first column of this block's time projection in Model::temb_projs
  bool has_shortcut = false;
  float output_scale_factor = 1.0f;
  ResnetSaved saved;
};

struct AttnLayer {
  int channels = 0, heads = 1, head_dim = 0;
  bool has_norm = false;
  NormLayer norm;
  int q_w = -1, q_b = -1, k_w = -1, k_b = -1, v_w = -1, v_b = -1;
  ConvLayer qkv;  // q, k and v fused into one GEMM at pack time
  float* qkv_bias = nullptr;
  ConvLayer out;
  float rescale_output_factor = 1.0f;
  AttnSaved saved;
};

enum ResampleKind { kResampleNone = 0, kResampleConv = 1, kResampleResnet = 2 };

struct Block {
  int type = 0;
  int num_layers = 0;
  int in_channels = 0, out_channels = 0;
  bool has_attention = false;
  ResnetLayer resnets[kMaxLayers];
  AttnLayer attentions[kMaxLayers];
  int resample_kind = kResampleNone;
  ConvLayer resample_conv;
  ResnetLayer resample_resnet;
  ConvSaved resample_saved;
  Act cat[kMaxLayers];  // up blocks: each resnet's concatenated input (training)
  Act prev[kMaxLayers];  // up blocks: the hidden state before each concat (training)
};

// Model-level tensors a training forward keeps.
struct ForwardSaved {
  float* t_proj = nullptr;      // time projection (sinusoids / fourier / table row)
  float* emb_hidden = nullptr;  // time_embedding.linear_1 output, before SiLU
  float* emb = nullptr;         // time (+ class) embedding
  float* silu_emb = nullptr;
  float* c_proj = nullptr;      // class_embed_type timestep: projection and hidden
  float* c_hidden = nullptr;
  ConvSaved conv_in;
  Act skips[kMaxLevels * (kMaxLayers + 1) + 1];
  int num_skips = 0;
  Act h_last;  // input of conv_norm_out
  float* norm_out_stats = nullptr;
  ConvSaved conv_out;  // input: SiLU(GroupNorm(h_last))
};

struct Capture {
  char name[16];
  int shape[4];
  int ndim;
  float* data;
};

struct Ops;

struct Model {
  const Ops* ops = nullptr;  // the device the forward runs on (cpu unless chosen before finalize)
  void* queue = nullptr;     // the model's own queue of device work (Ops::queue_new), if the device has queues
  float* param_device_storage = nullptr;  // one device allocation for every Param::dev (device ops only)
  // An optimizer step on a device updates Param::dev only: the host copies
  // (Param::data) are stale until sync_host_params downloads them, and a
  // repack must pack from the device copies rather than upload the host's.
  bool device_params_newer = false;
  double* grad_norm_sums = nullptr;  // device memory, one double per parameter (grad_norm's terms)

  // config
  int in_channels = 0, out_channels = 0;
  bool center_input_sample = false;
  int time_embedding_type = 0, time_embed_dim = 0, time_proj_dim = 0;
  bool flip_sin_to_cos = true;
  float freq_shift = 0;
  int num_levels = 0, layers_per_block = 0;
  int block_out_channels[kMaxLevels] = {};
  int downsample_padding = 1;
  float norm_eps = 1e-5f;
  bool scale_shift = false;
  int class_embed = 0, num_class_embeds = 0, num_train_timesteps = 0;

  Vec<Param> params;
  ConvLayer conv_in;
  int time_proj_weight = -1;  // fourier W or learned table
  ConvLayer time_linear_1, time_linear_2;
  // Every resnet's time_emb_proj stacked along the output channels, packed
  // from their parameters: all of them read the same SiLU(temb), so one GEMM
  // per forward computes every projection (each output element is the same
  // dot product as the layer's own, in the same order). Small-M GEMMs are
  // bound by streaming the weights; one region instead of one per resnet.
  ConvLayer temb_projs;
  float* temb_projs_bias = nullptr;
  int class_table = -1;
  ConvLayer class_linear_1, class_linear_2;
  Block down[kMaxLevels];
  bool has_mid = false;
  Block mid;  // resnets[0..1], attentions[0] when has_attention
  Block up[kMaxLevels];
  NormLayer norm_out;
  ConvLayer conv_out;

  int max_channels = 0;  // widest activation; sizes the zero row
  // The packed weights, one block per packing step in packing order (a repack
  // reuses them in the same order): separate blocks, so that a model that
  // releases its unpacked weights as it packs never holds both copies whole.
  Vec<float*> packed_blocks;
  bool release_on_pack = false;  // set by model_release_host_weights before finalize
  bool winograd_lean = false;    // Winograd convs packed lean (kConvWinogradLean): released while packing, in wasm
  unsigned pack_generation = 0;  // counts packings: a recorded pass holds the packed weights' addresses
  // Winograd's output tile on this model's 3x3 layers: 2 (F(2x2, 3x3), the
  // nearest to the direct convolution's bits, which the samplers' parity
  // with diffusers needs), or 4 once set up for training (F(4x4, 3x3): 1.8x
  // fewer multiplies; train_init repacks, see select_training_winograd_tile).
  int winograd_tile = 2;
  bool finalized = false;

  // Activation arena, planned per (batch, height, width).
  Arena arena;
  int planned_batch = 0, planned_h = 0, planned_w = 0;
  bool planned_training = false;
  int planned_threads = 0;  // conv scratch is per thread
  size_t arena_limit_bytes = (size_t)0;  // 0: no limit beyond what the allocator gives

  bool training_ready = false;
  float dropout = 0.0f;
  ForwardSaved saved;

  bool capture_enabled = false;
  Vec<Capture> captures;

  char error[512] = {};
};

// Builds the graph and the parameter table, and allocates the parameters
// (uninitialised; the caller fills them). Returns kOk or an error in m->error.
int model_init(Model* m, const double* config, int config_len);
// Packs the weights into kernel layouts. Call once after the parameters are set.
int model_finalize(Model* m);
// Bytes of arena a forward at this size needs (planning only, no allocation).
int model_plan_bytes(Model* m, int batch, int height, int width, size_t* bytes);
int model_forward(Model* m, int batch, int channels, int height, int width, const float* sample_nchw,
                  const float* timesteps, const float* class_cond, int class_cond_len, float* out_nchw);
void model_release(Model* m);
struct Exec;
// The graph walk itself (unet.cpp); the backward walk mirrors it (backward.cpp).
Act run_forward(Exec& ex, int height, int width, const float* x_nchw, const float* timesteps, const float* class_cond,
                float* out_nchw);
// Arena planning and the checks shared by forward and train_step (timesteps
// may be null, to be checked later by check_timesteps).
int check_forward_inputs(Model* m, int batch, int channels, const float* timesteps, const float* class_cond,
                         int class_cond_len);
// The timesteps' part of it: finite, and in range for the time embedding.
int check_timesteps(Model* m, int batch, const float* timesteps);
// Refuses sizes whose buffers could not be addressed (32-bit builds), before planning.
int check_plan_size(Model* m, int batch, int height, int width, bool training = false);
// The planned arena in bytes, or an error when the build cannot address it.
int plan_total_bytes(Model* m, const Arena& planner, size_t* bytes);
// Starts a pass over the planned arena: clears it and lays the zero row that
// convolutions read for padding (first in the arena, as planned). Returns it.
float* begin_pass(Model* m);
// (Re)allocates the arena for this size and mode when it changed; checks the memory limit first.
int ensure_arena(Model* m, int batch, int height, int width, bool training, size_t bytes);
// Repacks the weights after the parameters changed (an optimizer step, a load).
int model_repack(Model* m);
// Whether a conv layer runs by Winograd in this model (see ConvLayer).
inline bool conv_uses_winograd(const Model* m, const ConvLayer& c) {
  return c.winograd || (c.winograd_coarse && m->winograd_tile == 4);
}
// Repacks the Winograd layers with another output tile (2 or 4) into new
// blocks, and forgets the planned arena (its scratch depends on the tile).
int model_set_winograd_tile(Model* m, int tile);
// The tile train_init gives a model: 4 unless changed (any value but 2 or 4
// keeps it); returns the tile in effect. Call before train_init.
int select_training_winograd_tile(int tile);
// Frees the torch-layout host copies of the weights that exist only to be
// packed (conv and linear weights): what a model that only samples needs is
// the packed copy. Before finalize it marks the model to free each weight as
// soon as its layer is packed (the peak then never holds both copies: wasm
// memory cannot shrink afterwards); after, it frees them at once. Afterwards
// the model refuses train_init and repack, and those tensors read as absent.
// kErrState after train_init. `released_bytes` (may be null) gets what was
// freed now.
int model_release_host_weights(Model* m, size_t* released_bytes);
// True when model_release_host_weights released anything.
bool model_weights_released(const Model* m);

// train.cpp
int train_init(Model* m, bool ema);
struct TrainBatch {
  int batch, channels, height, width;
  const float* x0;
  const float* noise;
  const float* timesteps;
  const float* sqrt_alpha_prod;
  const float* sqrt_one_minus_alpha_prod;
  const float* class_cond;
  int class_cond_len;
  int target;  // 0 epsilon, 1 sample, 2 v_prediction
  const float* loss_weights;
  uint64_t dropout_seed;
};
int train_step(Model* m, const TrainBatch& batch, float* loss_out);
// These report device failures (kErrDevice, message in m->error).
int zero_grad(Model* m);
int grad_norm(Model* m, double* norm);
int adamw_step(Model* m, double lr, double beta1, double beta2, double eps, double weight_decay, double step,
               double grad_scale);
int ema_update(Model* m, double decay);
// Tensor kinds as in api.h (0 param, 1 grad, 2 exp_avg, 3 exp_avg_sq, 4 ema),
// copied between the device and host memory: kErrState when the tensor is
// not allocated (or released), kErrDevice on a device failure.
int model_read_tensor(Model* m, int index, int kind, float* host_out);
int model_write_tensor(Model* m, int index, int kind, const float* host_in);
// Downloads the device copies of the parameters into Param::data when an
// optimizer step on the device made them newer (a no-op otherwise).
int sync_host_params(Model* m);
// The sticky device error of the last calls as a typed status (kOk, or
// kErrDevice with `what` and the device's reason in m->error).
int device_status(Model* m, const char* what);
void model_clear_captures(Model* m);

}  // namespace mb
