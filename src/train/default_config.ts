// The UNet `marble train` builds when no config is given: diffusers'
// UNet2DModel layout (ResNet levels, attention at the middle level), sized
// to train on a CPU in minutes for small images such as MNIST.
import { InputError } from '../core/errors.js';
import { guidanceRecordJson, kGuidanceConfigKey } from '../core/model/guidance.js';

export interface DefaultConfigOptions {
  /** Image side; must be divisible by 4 (two downsamplings). */
  sampleSize: number;
  /** 1 (gray) or 3 (RGB). */
  channels: number;
  /** Class-conditional with this many classes (num_class_embeds). */
  numClasses?: number | null;
  /**
   * Classifier-free guidance: train with this label dropout. The class table
   * gets one more row, the null label numClasses, recorded in the config.
   */
  cfgDropout?: number | null;
}

/** A small diffusers UNet2DModel config.json for `marble train`. */
export function defaultUNetConfig(o: DefaultConfigOptions): Record<string, unknown> {
  if (!Number.isInteger(o.sampleSize) || o.sampleSize < 4 || o.sampleSize % 4 !== 0)
    throw new InputError(`the default UNet halves the image twice: the sample size must be a multiple of 4, got ${o.sampleSize}`);
  const classes = o.numClasses ?? null;
  const cfg = o.cfgDropout ?? null;
  if (cfg !== null && (classes === null || !(cfg > 0 && cfg < 1)))
    throw new InputError(`classifier-free guidance needs a class-conditional model and a dropout in (0, 1), got ${cfg}`);
  return {
    ...(cfg !== null ? { [kGuidanceConfigKey]: guidanceRecordJson({ nullClassLabel: classes!, labelDropout: cfg }) } : {}),
    _class_name: 'UNet2DModel',
    sample_size: o.sampleSize,
    in_channels: o.channels,
    out_channels: o.channels,
    layers_per_block: 1,
    block_out_channels: [32, 64, 64],
    down_block_types: ['DownBlock2D', 'AttnDownBlock2D', 'DownBlock2D'],
    up_block_types: ['UpBlock2D', 'AttnUpBlock2D', 'UpBlock2D'],
    norm_num_groups: 8,
    attention_head_dim: 8,
    num_class_embeds: classes === null ? null : classes + (cfg !== null ? 1 : 0),
  };
}
