// diffusers UNet2DModel config.json: parsing, defaults and validation.
//
// Every option the supported blocks use is read here with diffusers' default
// for an absent key; an unsupported value is a ConfigError naming the key and
// the value. The result is encoded into the flat array the engine reads
// (native/engine/unet.h, ConfigSlot) — keep the two in sync.
import { ConfigError } from '../errors.js';
import { parseGuidanceRecord, type GuidanceRecord } from './guidance.js';

export type DownBlockType = 'DownBlock2D' | 'AttnDownBlock2D' | 'ResnetDownsampleBlock2D';
export type UpBlockType = 'UpBlock2D' | 'AttnUpBlock2D' | 'ResnetUpsampleBlock2D';

export interface UNet2DConfig {
  sampleSize: number | [number, number] | null;
  inChannels: number;
  outChannels: number;
  centerInputSample: boolean;
  timeEmbeddingType: 'positional' | 'fourier' | 'learned';
  timeEmbeddingDim: number | null;
  freqShift: number;
  flipSinToCos: boolean;
  downBlockTypes: DownBlockType[];
  midBlockType: 'UNetMidBlock2D' | null;
  upBlockTypes: UpBlockType[];
  blockOutChannels: number[];
  layersPerBlock: number;
  midBlockScaleFactor: number;
  downsamplePadding: number;
  downsampleType: 'conv' | 'resnet';
  upsampleType: 'conv' | 'resnet';
  dropout: number;
  actFn: 'silu';
  attentionHeadDim: number | null;
  normNumGroups: number;
  attnNormNumGroups: number | null;
  normEps: number;
  resnetTimeScaleShift: 'default' | 'scale_shift';
  addAttention: boolean;
  classEmbedType: 'timestep' | 'identity' | null;
  numClassEmbeds: number | null;
  numTrainTimesteps: number | null;
  /** Classifier-free guidance: the null class label and the training's label dropout (guidance.ts); null without. */
  guidance: GuidanceRecord | null;
}

const DOWN_TYPES: readonly DownBlockType[] = ['DownBlock2D', 'AttnDownBlock2D', 'ResnetDownsampleBlock2D'];
const UP_TYPES: readonly UpBlockType[] = ['UpBlock2D', 'AttnUpBlock2D', 'ResnetUpsampleBlock2D'];

type Json = Record<string, unknown>;

function describe(value: unknown): string {
  return JSON.stringify(value) ?? String(value);
}

function unsupported(key: string, value: unknown, supported: string): never {
  throw new ConfigError(`config.json: ${key} = ${describe(value)} is not supported (supported: ${supported})`);
}

function readInt(json: Json, key: string, fallback: number, min: number, max = 1 << 20): number {
  const value = json[key] ?? fallback;
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max)
    unsupported(key, value, `an integer from ${min} to ${max}`);
  return value;
}

function readOptionalInt(json: Json, key: string, min: number, max = 1 << 20): number | null {
  const value = json[key];
  if (value === undefined || value === null) return null;
  return readInt(json, key, 0, min, max);
}

function readNumber(json: Json, key: string, fallback: number, check: (v: number) => boolean, what: string): number {
  const value = json[key] ?? fallback;
  if (typeof value !== 'number' || !Number.isFinite(value) || !check(value)) unsupported(key, value, what);
  return value;
}

function readBool(json: Json, key: string, fallback: boolean): boolean {
  const value = json[key] ?? fallback;
  if (typeof value !== 'boolean') unsupported(key, value, 'true or false');
  return value;
}

function readChoice<T extends string>(json: Json, key: string, fallback: T, choices: readonly T[]): T {
  const value = json[key] ?? fallback;
  if (typeof value !== 'string' || !choices.includes(value as T)) unsupported(key, value, choices.join(', '));
  return value as T;
}

function readBlockList<T extends string>(json: Json, key: string, fallback: readonly T[], choices: readonly T[]): T[] {
  const value = json[key] ?? fallback;
  if (!Array.isArray(value) || value.length === 0) unsupported(key, value, `a non-empty list of ${choices.join(', ')}`);
  return value.map((entry: unknown, i: number) => {
    // diffusers strips a "UNetRes" prefix from block names.
    const name = typeof entry === 'string' && entry.startsWith('UNetRes') ? entry.slice(7) : entry;
    if (typeof name !== 'string' || !choices.includes(name as T))
      unsupported(`${key}[${i}]`, entry, choices.join(', '));
    return name as T;
  });
}

/** Parses a diffusers UNet2DModel config.json object, applying diffusers' defaults. */
export function parseUNet2DConfig(input: unknown): UNet2DConfig {
  if (typeof input !== 'object' || input === null || Array.isArray(input))
    throw new ConfigError('config.json must be a JSON object');
  const json = input as Json;
  const className = json['_class_name'];
  if (className !== undefined && className !== 'UNet2DModel')
    unsupported('_class_name', className, 'UNet2DModel');

  const blockOutChannels = json['block_out_channels'] ?? [224, 448, 672, 896];
  if (
    !Array.isArray(blockOutChannels) ||
    blockOutChannels.length === 0 ||
    blockOutChannels.length > 8 ||
    !blockOutChannels.every((c) => Number.isInteger(c) && c >= 1 && c <= 8192)
  )
    unsupported('block_out_channels', blockOutChannels, '1 to 8 positive integers up to 8192');

  const downBlockTypes = readBlockList(
    json,
    'down_block_types',
    ['DownBlock2D', 'AttnDownBlock2D', 'AttnDownBlock2D', 'AttnDownBlock2D'],
    DOWN_TYPES,
  );
  const upBlockTypes = readBlockList(
    json,
    'up_block_types',
    ['AttnUpBlock2D', 'AttnUpBlock2D', 'AttnUpBlock2D', 'UpBlock2D'],
    UP_TYPES,
  );
  if (downBlockTypes.length !== upBlockTypes.length)
    throw new ConfigError(
      `config.json: down_block_types has ${downBlockTypes.length} entries but up_block_types has ${upBlockTypes.length}`,
    );
  if (blockOutChannels.length !== downBlockTypes.length)
    throw new ConfigError(
      `config.json: block_out_channels has ${blockOutChannels.length} entries but down_block_types has ${downBlockTypes.length}`,
    );

  const midBlockType = json['mid_block_type'] === undefined ? 'UNetMidBlock2D' : json['mid_block_type'];
  if (midBlockType !== null && midBlockType !== 'UNetMidBlock2D')
    unsupported('mid_block_type', midBlockType, 'UNetMidBlock2D, null');

  const timeEmbeddingType = readChoice(json, 'time_embedding_type', 'positional', ['positional', 'fourier', 'learned'] as const);
  const numTrainTimesteps = readOptionalInt(json, 'num_train_timesteps', 1, 1 << 20);
  if (timeEmbeddingType === 'learned' && numTrainTimesteps === null)
    throw new ConfigError("config.json: time_embedding_type 'learned' needs num_train_timesteps");

  const classEmbedRaw = json['class_embed_type'] ?? null;
  if (classEmbedRaw !== null && classEmbedRaw !== 'timestep' && classEmbedRaw !== 'identity')
    unsupported('class_embed_type', classEmbedRaw, 'null, timestep, identity');
  const numClassEmbeds = readOptionalInt(json, 'num_class_embeds', 1, 1 << 20);

  const actFn = json['act_fn'] ?? 'silu';
  if (actFn !== 'silu' && actFn !== 'swish') unsupported('act_fn', actFn, 'silu');

  const sampleSize = json['sample_size'] ?? null;

  const config: UNet2DConfig = {
    sampleSize: sampleSize as UNet2DConfig['sampleSize'],
    inChannels: readInt(json, 'in_channels', 3, 1, 4096),
    outChannels: readInt(json, 'out_channels', 3, 1, 4096),
    centerInputSample: readBool(json, 'center_input_sample', false),
    timeEmbeddingType,
    timeEmbeddingDim: readOptionalInt(json, 'time_embedding_dim', 1, 1 << 16),
    freqShift: readNumber(json, 'freq_shift', 0, () => true, 'a number'),
    flipSinToCos: readBool(json, 'flip_sin_to_cos', true),
    downBlockTypes,
    midBlockType: midBlockType as UNet2DConfig['midBlockType'],
    upBlockTypes,
    blockOutChannels: blockOutChannels as number[],
    layersPerBlock: readInt(json, 'layers_per_block', 2, 1, 8),
    midBlockScaleFactor: readNumber(json, 'mid_block_scale_factor', 1, (v) => v > 0, 'a positive number'),
    downsamplePadding: readInt(json, 'downsample_padding', 1, 0, 1),
    downsampleType: readChoice(json, 'downsample_type', 'conv', ['conv', 'resnet'] as const),
    upsampleType: readChoice(json, 'upsample_type', 'conv', ['conv', 'resnet'] as const),
    dropout: readNumber(json, 'dropout', 0, (v) => v >= 0 && v < 1, 'a probability in [0, 1)'),
    actFn: 'silu',
    // diffusers' default is 8 when the key is absent; an explicit null means one head per block
    attentionHeadDim: json['attention_head_dim'] === undefined ? 8 : readOptionalInt(json, 'attention_head_dim', 1, 8192),
    normNumGroups: readInt(json, 'norm_num_groups', 32, 1, 8192),
    attnNormNumGroups: readOptionalInt(json, 'attn_norm_num_groups', 1, 8192),
    normEps: readNumber(json, 'norm_eps', 1e-5, (v) => v > 0, 'a positive number'),
    resnetTimeScaleShift: readChoice(json, 'resnet_time_scale_shift', 'default', ['default', 'scale_shift'] as const),
    addAttention: readBool(json, 'add_attention', true),
    classEmbedType: classEmbedRaw as UNet2DConfig['classEmbedType'],
    numClassEmbeds,
    numTrainTimesteps,
    guidance: parseGuidanceRecord(json, classEmbedRaw === null ? numClassEmbeds : null),
  };
  if (json['norm_num_groups'] === null)
    unsupported('norm_num_groups', null, 'an integer (null is only valid for the VAE blocks)');

  // Group counts must divide every normalised channel count; say which.
  for (const c of config.blockOutChannels) {
    if (c % config.normNumGroups !== 0)
      throw new ConfigError(
        `config.json: norm_num_groups = ${config.normNumGroups} does not divide block_out_channels entry ${c}`,
      );
    const headDim = config.attentionHeadDim ?? c;
    const usesAttention =
      config.downBlockTypes.some((t, i) => t === 'AttnDownBlock2D' && config.blockOutChannels[i] === c) ||
      config.upBlockTypes.some(
        (t, i) => t === 'AttnUpBlock2D' && config.blockOutChannels[config.blockOutChannels.length - 1 - i] === c,
      );
    if (usesAttention && c % headDim !== 0)
      throw new ConfigError(`config.json: attention_head_dim = ${headDim} does not divide ${c} channels`);
  }
  return config;
}

/** Channels of the time embedding the resnets receive. */
export function timeEmbedDim(config: UNet2DConfig): number {
  return config.timeEmbeddingDim ?? config.blockOutChannels[0] * 4;
}

/** Whether forward() needs class labels, and what kind. */
export function classConditioning(config: UNet2DConfig): 'none' | 'labels' | 'timestep' | 'identity' {
  if (config.classEmbedType === 'timestep') return 'timestep';
  if (config.classEmbedType === 'identity') return 'identity';
  return config.numClassEmbeds !== null ? 'labels' : 'none';
}

/**
 * How many data classes a label-conditional model has: num_class_embeds,
 * less the null class of a model trained for classifier-free guidance when
 * it is the last row (as marble trains them), so labels 0..n-1 are classes.
 */
export function dataClassCount(config: UNet2DConfig): number {
  const n = config.numClassEmbeds ?? 0;
  return config.guidance && config.guidance.nullClassLabel === n - 1 ? n - 1 : n;
}

/** The flat array the engine's model_init reads (native/engine/unet.h, ConfigSlot). */
export function encodeEngineConfig(config: UNet2DConfig): Float64Array {
  const classCode = { none: 0, labels: 1, timestep: 2, identity: 3 }[classConditioning(config)];
  const fixed = [
    config.inChannels,
    config.outChannels,
    config.centerInputSample ? 1 : 0,
    { positional: 0, fourier: 1, learned: 2 }[config.timeEmbeddingType],
    timeEmbedDim(config),
    config.flipSinToCos ? 1 : 0,
    config.freqShift,
    config.blockOutChannels.length,
    config.layersPerBlock,
    config.midBlockType === null ? 0 : 1,
    config.midBlockScaleFactor,
    config.downsamplePadding,
    config.downsampleType === 'resnet' ? 1 : 0,
    config.upsampleType === 'resnet' ? 1 : 0,
    config.attentionHeadDim ?? 0,
    config.normNumGroups,
    config.attnNormNumGroups ?? 0,
    config.normEps,
    config.resnetTimeScaleShift === 'scale_shift' ? 1 : 0,
    config.addAttention ? 1 : 0,
    classCode,
    config.numClassEmbeds ?? 0,
    config.numTrainTimesteps ?? 0,
    config.dropout,
  ];
  return new Float64Array([
    ...fixed,
    ...config.blockOutChannels,
    ...config.downBlockTypes.map((t) => DOWN_TYPES.indexOf(t)),
    ...config.upBlockTypes.map((t) => UP_TYPES.indexOf(t)),
  ]);
}
