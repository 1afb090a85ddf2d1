// Model configs used by the benchmarks.

/** google/ddpm-cifar10-32's config.json (35.7M parameters, 11.8 GFLOP per image). */
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

/** Multiply-accumulates x2 of one forward at batch 1, counted from the config (convs, linears, attention). */
export const CIFAR10_GFLOP_PER_IMAGE = 11.8;

/** A small class-free MNIST-sized config (32x32, 1 channel), for training benchmarks. */
export const MNIST_SMALL_CONFIG = {
  block_out_channels: [32, 64, 64],
  down_block_types: ['DownBlock2D', 'DownBlock2D', 'AttnDownBlock2D'],
  up_block_types: ['AttnUpBlock2D', 'UpBlock2D', 'UpBlock2D'],
  layers_per_block: 1,
  norm_num_groups: 8,
  attention_head_dim: 16,
  in_channels: 1,
  out_channels: 1,
  sample_size: 32,
};
