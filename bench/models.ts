// Model configs used by the benchmarks.

// google/ddpm-cifar10-32's config.json: the same one `marble bench --arch cifar10-32` builds.
export { CIFAR10_CONFIG } from '../src/core/bench/archs.js';

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

/** The class-conditional MNIST UNet of issue #24 (1.62M parameters at 28x28, attention at 7x7), as diffusers builds it. */
export const MNIST_CLASS_CONFIG = {
  sample_size: 28,
  in_channels: 1,
  out_channels: 1,
  layers_per_block: 2,
  block_out_channels: [32, 64, 64],
  down_block_types: ['DownBlock2D', 'DownBlock2D', 'AttnDownBlock2D'],
  up_block_types: ['AttnUpBlock2D', 'UpBlock2D', 'UpBlock2D'],
  num_class_embeds: 10,
};
