// Architectures the benchmark can build with random weights (no download).

/** google/ddpm-cifar10-32's config.json (35.7M parameters). */
export const CIFAR10_CONFIG = {
  _class_name: 'UNet2DModel',
  act_fn: 'silu',
  attention_head_dim: null,
  block_out_channels: [128, 256, 256, 256],
  center_input_sample: false,
  down_block_types: ['DownBlock2D', 'AttnDownBlock2D', 'DownBlock2D', 'DownBlock2D'],
  downsample_padding: 0,
  flip_sin_to_cos: false,
  freq_shift: 1,
  in_channels: 3,
  layers_per_block: 2,
  mid_block_scale_factor: 1,
  norm_eps: 1e-6,
  norm_num_groups: 32,
  out_channels: 3,
  sample_size: 32,
  time_embedding_type: 'positional',
  up_block_types: ['UpBlock2D', 'UpBlock2D', 'AttnUpBlock2D', 'UpBlock2D'],
};

// What the embedded MNIST models, old and new, share: one channel, three
// levels with attention at the lowest, diffusers' defaults elsewhere.
const MNIST_COMMON = {
  act_fn: 'silu',
  add_attention: true,
  attn_norm_num_groups: null,
  center_input_sample: false,
  class_embed_type: null,
  down_block_types: ['DownBlock2D', 'DownBlock2D', 'AttnDownBlock2D'],
  downsample_padding: 1,
  downsample_type: 'conv',
  dropout: 0,
  flip_sin_to_cos: true,
  freq_shift: 0,
  in_channels: 1,
  mid_block_scale_factor: 1,
  mid_block_type: 'UNetMidBlock2D',
  norm_eps: 1e-05,
  num_train_timesteps: null,
  out_channels: 1,
  resnet_time_scale_shift: 'default',
  time_embedding_dim: null,
  time_embedding_type: 'positional',
  up_block_types: ['AttnUpBlock2D', 'UpBlock2D', 'UpBlock2D'],
  upsample_type: 'conv',
};

/**
 * The embedded MNIST model's config (models/mnist/unet/config.json, from
 * 2026-12-07: 1.62M parameters, 28x28, 10 classes and the null class of
 * classifier-free guidance).
 */
export const MNIST_CONFIG = {
  ...MNIST_COMMON,
  attention_head_dim: 8,
  block_out_channels: [32, 64, 64],
  layers_per_block: 2,
  norm_num_groups: 32,
  num_class_embeds: 11,
  sample_size: 28,
};

/** The embedded MNIST model until 2026-12-07 (1.8M parameters, 32x32, class-conditional): the earlier speed figures' model. */
export const MNIST_V1_CONFIG = {
  ...MNIST_COMMON,
  attention_head_dim: 32,
  block_out_channels: [32, 64, 96],
  layers_per_block: 1,
  norm_num_groups: 8,
  num_class_embeds: 10,
  sample_size: 32,
};

export const ARCHS = { mnist: MNIST_CONFIG, 'mnist-v1': MNIST_V1_CONFIG, 'cifar10-32': CIFAR10_CONFIG } as const;
export type ArchName = keyof typeof ARCHS;
