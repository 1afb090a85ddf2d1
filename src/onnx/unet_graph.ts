// The UNet2DModel forward as an ONNX graph, built from marble's parameter
// table (diffusers names, torch layouts) and following the same structure as
// native/engine/unet.cpp (and diffusers' unet_2d.py / unet_2d_blocks.py /
// resnet.py / attention_processor.py) block for block.
//
// Inputs:  sample [batch, in_channels, height, width] float32
//          timestep [batch] float32
//          class_labels [batch] int64 (num_class_embeds), [batch] float32
//            (class_embed_type timestep) or [batch, time_embed_dim] float32 (identity)
// Output:  out_sample [batch, out_channels, height, width] float32
// Initializers carry the parameter table's names and shapes unchanged;
// layout changes (a linear's W^T, a norm's [C, 1, 1]) are graph nodes on
// initializers, which onnxruntime folds once when it loads the model.
import { classConditioning, timeEmbedDim } from '../core/model/config.js';
import type { UNet2DConfig } from '../core/model/config.js';
import { GraphBuilder } from './graph_builder.js';
import { OnnxDataType } from './onnx_proto.js';
import type { OnnxGraph, OnnxValueInfo } from './onnx_proto.js';

export interface ParameterSource {
  /** The parameter table: names and torch shapes, in engine order. */
  table: readonly { name: string; shape: readonly number[] }[];
  /** A parameter's values (torch layout). */
  read(index: number): Float32Array;
}

/** diffusers' get_timestep_embedding frequencies, each op rounded to float32 as torch computes them. */
export function timestepFrequencies(half: number, freqShift: number): Float32Array {
  const f = Math.fround;
  const negLogPeriod = f(-Math.log(10000));
  const divisor = f(half - freqShift);
  return Float32Array.from({ length: half }, (_, i) => f(Math.exp(f(f(negLogPeriod * i) / divisor))));
}

class UNetGraph {
  readonly g = new GraphBuilder();
  private readonly index = new Map<string, number>();
  private readonly used = new Set<string>();
  /** SiLU(emb), shared by every resnet's time projection. */
  private siluEmb = '';

  constructor(
    private readonly config: UNet2DConfig,
    private readonly params: ParameterSource,
  ) {
    params.table.forEach((p, i) => this.index.set(p.name, i));
  }

  /** A parameter as an initializer (added on first use). */
  w(name: string): string {
    const i = this.index.get(name);
    if (i === undefined) throw new Error(`ONNX export: the parameter table has no ${name}`);
    if (!this.used.has(name)) {
      this.used.add(name);
      this.g.initializer(name, this.params.table[i]!.shape, this.params.read(i));
    }
    return name;
  }

  unusedParameters(): string[] {
    return this.params.table.map((p) => p.name).filter((n) => !this.used.has(n));
  }

  norm(x: string, prefix: string, channels: number, groups: number): string {
    return this.g.groupNorm(x, this.w(`${prefix}.weight`), this.w(`${prefix}.bias`), channels, groups, this.config.normEps, prefix);
  }

  conv(x: string, prefix: string, kernel: number, pads: readonly number[], stride = 1): string {
    return this.g.conv(x, this.w(`${prefix}.weight`), this.w(`${prefix}.bias`), prefix, { kernel, pads, stride });
  }

  linear(x: string, prefix: string): string {
    return this.g.linear(x, this.w(`${prefix}.weight`), this.w(`${prefix}.bias`), prefix);
  }

  /** Linear on the last axis of a 3-D tensor: x @ W^T + b. */
  linear3d(x: string, prefix: string): string {
    const wt = this.g.transpose(this.w(`${prefix}.weight`), [1, 0], prefix);
    return this.g.add(this.g.op('MatMul', [x, wt], prefix), this.w(`${prefix}.bias`), prefix);
  }

  /**
   * Timesteps (or class_embed_type 'timestep' values) [B] to the time_proj
   * features [B, D], as diffusers' self.time_proj does for both.
   */
  timeProjection(t: string, scope: string): string {
    const c0 = this.config.blockOutChannels[0]!;
    const g = this.g;
    if (this.config.timeEmbeddingType === 'learned') {
      // nn.Embedding(num_train_timesteps, c0) indexed by the timestep
      const index = g.op('Cast', [t], scope, { to: { kind: 'int', value: OnnxDataType.Int64 } });
      return g.op('Gather', [this.w('time_proj.weight'), index], scope, { axis: { kind: 'int', value: 0 } });
    }
    if (this.config.timeEmbeddingType === 'fourier') {
      // GaussianFourierProjection(log=True): x[:, None] * W[None, :] * 2 * pi, evaluated left to right
      const logT = g.unsqueeze(g.op('Log', [t], scope), [1], scope);
      let arg = g.mul(logT, this.w('time_proj.weight'), scope);
      arg = g.mul(arg, g.floats([], 2), scope);
      arg = g.mul(arg, g.floats([], Math.fround(Math.PI)), scope);
      return g.concat([g.op('Sin', [arg], scope), g.op('Cos', [arg], scope)], 1, scope);
    }
    // positional: get_timestep_embedding
    const dim = c0;
    const half = Math.floor(dim / 2);
    const freqs = g.floats([half], timestepFrequencies(half, this.config.freqShift), `${scope}/freqs`);
    const arg = g.mul(g.unsqueeze(t, [1], scope), freqs, scope);
    const sin = g.op('Sin', [arg], scope);
    const cos = g.op('Cos', [arg], scope);
    const parts = this.config.flipSinToCos ? [cos, sin] : [sin, cos];
    if (dim % 2) {
      // an odd width gets one zero column: zeros shaped like the first column
      const zeroColumn = g.mul(g.op('Slice', [arg, g.ints([0]), g.ints([1]), g.ints([1])], scope), g.floats([], 0), scope);
      parts.push(zeroColumn);
    }
    return g.concat(parts, 1, scope);
  }

  /** TimestepEmbedding: linear_1, SiLU, linear_2. */
  timestepEmbedding(x: string, prefix: string): string {
    return this.linear(this.g.silu(this.linear(x, `${prefix}.linear_1`), prefix), `${prefix}.linear_2`);
  }

  embedding(timestep: string, classLabels: string | null): void {
    const g = this.g;
    let emb = this.timestepEmbedding(this.timeProjection(timestep, 'time_proj'), 'time_embedding');
    switch (classConditioning(this.config)) {
      case 'labels':
        emb = g.add(emb, g.op('Gather', [this.w('class_embedding.weight'), classLabels!], 'class_embedding', { axis: { kind: 'int', value: 0 } }), 'class_embedding');
        break;
      case 'timestep':
        emb = g.add(emb, this.timestepEmbedding(this.timeProjection(classLabels!, 'class_proj'), 'class_embedding'), 'class_embedding');
        break;
      case 'identity':
        emb = g.add(emb, classLabels!, 'class_embedding');
        break;
      case 'none':
        break;
    }
    this.siluEmb = g.silu(emb, 'time_embedding/silu');
  }

  /** ResnetBlock2D; resample +1 up, -1 down (nearest 2x / avg-pool 2x2 on both paths after norm1). */
  resnet(x: string, prefix: string, cin: number, cout: number, outputScale: number, resample = 0): string {
    const g = this.g;
    const groups = this.config.normNumGroups;
    let h = g.silu(this.norm(x, `${prefix}.norm1`, cin, groups), prefix);
    let xRes = x;
    if (resample > 0) {
      h = g.upsampleNearest2x(h, prefix);
      xRes = g.upsampleNearest2x(x, prefix);
    } else if (resample < 0) {
      h = g.avgPool2x2(h, prefix);
      xRes = g.avgPool2x2(x, prefix);
    }
    h = this.conv(h, `${prefix}.conv1`, 3, [1, 1, 1, 1]);
    const temb = g.unsqueeze(this.linear(this.siluEmb, `${prefix}.time_emb_proj`), [2, 3], prefix);
    if (this.config.resnetTimeScaleShift === 'scale_shift') {
      const [scale, shift] = [0, 1].map((i) => g.op('Slice', [temb, g.ints([i * cout]), g.ints([(i + 1) * cout]), g.ints([1])], prefix)) as [string, string];
      h = this.norm(h, `${prefix}.norm2`, cout, groups);
      h = g.add(g.mul(h, g.add(scale, g.floats([], 1), prefix), prefix), shift, prefix);
    } else {
      h = this.norm(g.add(h, temb, prefix), `${prefix}.norm2`, cout, groups);
    }
    h = this.conv(g.silu(h, prefix), `${prefix}.conv2`, 3, [1, 1, 1, 1]); // dropout: identity at inference
    const shortcut = cin !== cout ? this.conv(xRes, `${prefix}.conv_shortcut`, 1, [0, 0, 0, 0]) : xRes;
    const sum = g.add(shortcut, h, prefix);
    return outputScale === 1 ? sum : g.div(sum, g.floats([], outputScale), prefix);
  }

  /** diffusers Attention (_from_deprecated_attn_block): GroupNorm, q/k/v, softmax(q k^T / sqrt(d)) v, to_out, + residual, / rescale. */
  attention(x: string, prefix: string, channels: number, headDim: number, normGroups: number, rescale: number): string {
    const g = this.g;
    const heads = channels / headDim;
    const normed = normGroups > 0 ? this.norm(x, `${prefix}.group_norm`, channels, normGroups) : x;
    const tokens = g.transpose(g.reshape(normed, [0, 0, -1], prefix), [0, 2, 1], prefix); // [B, T, C]
    const q = g.mul(this.linear3d(tokens, `${prefix}.to_q`), g.floats([], Math.fround(1 / Math.sqrt(headDim))), prefix);
    const k = this.linear3d(tokens, `${prefix}.to_k`);
    const v = this.linear3d(tokens, `${prefix}.to_v`);
    let attended: string;
    if (heads === 1) {
      const scores = g.op('MatMul', [q, g.transpose(k, [0, 2, 1], prefix)], prefix);
      attended = g.op('MatMul', [g.op('Softmax', [scores], prefix, { axis: { kind: 'int', value: -1 } }), v], prefix);
    } else {
      const split = (t: string, perm: number[]) => g.transpose(g.reshape(t, [0, 0, heads, headDim], prefix), perm, prefix);
      const scores = g.op('MatMul', [split(q, [0, 2, 1, 3]), split(k, [0, 2, 3, 1])], prefix); // [B, heads, T, T]
      const probs = g.op('Softmax', [scores], prefix, { axis: { kind: 'int', value: -1 } });
      const merged = g.op('MatMul', [probs, split(v, [0, 2, 1, 3])], prefix); // [B, heads, T, d]
      attended = g.reshape(g.transpose(merged, [0, 2, 1, 3], prefix), [0, 0, channels], prefix);
    }
    const out = this.linear3d(attended, `${prefix}.to_out.0`);
    const spatial = g.reshapeLike(g.transpose(out, [0, 2, 1], prefix), x, prefix);
    const sum = g.add(spatial, x, prefix);
    return rescale === 1 ? sum : g.div(sum, g.floats([], rescale), prefix);
  }

  build(): OnnxGraph {
    const c = this.config;
    const g = this.g;
    const levels = c.blockOutChannels.length;
    const c0 = c.blockOutChannels[0]!;
    const groups = c.normNumGroups;
    const headDimOf = (channels: number) => c.attentionHeadDim ?? channels;

    const inputs: OnnxValueInfo[] = [
      { name: 'sample', elemType: OnnxDataType.Float, dims: ['batch', c.inChannels, 'height', 'width'] },
      { name: 'timestep', elemType: OnnxDataType.Float, dims: ['batch'] },
    ];
    const conditioning = classConditioning(c);
    if (conditioning === 'labels') inputs.push({ name: 'class_labels', elemType: OnnxDataType.Int64, dims: ['batch'] });
    if (conditioning === 'timestep') inputs.push({ name: 'class_labels', elemType: OnnxDataType.Float, dims: ['batch'] });
    if (conditioning === 'identity') inputs.push({ name: 'class_labels', elemType: OnnxDataType.Float, dims: ['batch', timeEmbedDim(c)] });
    for (const input of inputs) g.fresh(input.name);

    // 1. time (and class) embedding
    this.embedding('timestep', conditioning === 'none' ? null : 'class_labels');

    // 2. input
    let h = 'sample';
    if (c.centerInputSample) h = g.op('Sub', [g.mul(h, g.floats([], 2), 'center'), g.floats([], 1)], 'center');
    h = this.conv(h, 'conv_in', 3, [1, 1, 1, 1]);

    // 3. down
    const skips: string[] = [h];
    let outputChannel = c0;
    for (let i = 0; i < levels; i++) {
      const inputChannel = outputChannel;
      outputChannel = c.blockOutChannels[i]!;
      const type = c.downBlockTypes[i]!;
      for (let j = 0; j < c.layersPerBlock; j++) {
        h = this.resnet(h, `down_blocks.${i}.resnets.${j}`, j === 0 ? inputChannel : outputChannel, outputChannel, 1);
        if (type === 'AttnDownBlock2D') h = this.attention(h, `down_blocks.${i}.attentions.${j}`, outputChannel, headDimOf(outputChannel), groups, 1);
        skips.push(h);
      }
      if (i < levels - 1) {
        const resnetDown = type === 'ResnetDownsampleBlock2D' || (type === 'AttnDownBlock2D' && c.downsampleType === 'resnet');
        if (resnetDown) {
          h = this.resnet(h, `down_blocks.${i}.downsamplers.0`, outputChannel, outputChannel, 1, -1);
        } else {
          // padding 0 is diffusers' F.pad(0, 1, 0, 1) before an unpadded stride-2 conv
          const p = c.downsamplePadding;
          h = this.conv(h, `down_blocks.${i}.downsamplers.0.conv`, 3, p === 0 ? [0, 0, 1, 1] : [p, p, p, p], 2);
        }
        skips.push(h);
      }
    }

    // 4. mid
    if (c.midBlockType !== null) {
      const channels = c.blockOutChannels[levels - 1]!;
      const scale = c.midBlockScaleFactor;
      h = this.resnet(h, 'mid_block.resnets.0', channels, channels, scale);
      if (c.addAttention) {
        const attnGroups = c.attnNormNumGroups ?? (c.resnetTimeScaleShift === 'scale_shift' ? 0 : groups);
        h = this.attention(h, 'mid_block.attentions.0', channels, headDimOf(channels), attnGroups, scale);
      }
      h = this.resnet(h, 'mid_block.resnets.1', channels, channels, scale);
    }

    // 5. up
    outputChannel = c.blockOutChannels[levels - 1]!;
    for (let i = 0; i < levels; i++) {
      const prevOutputChannel = outputChannel;
      outputChannel = c.blockOutChannels[levels - 1 - i]!;
      const inputChannel = c.blockOutChannels[Math.max(levels - 2 - i, 0)]!;
      const type = c.upBlockTypes[i]!;
      const numLayers = c.layersPerBlock + 1;
      for (let j = 0; j < numLayers; j++) {
        const skipChannels = j === numLayers - 1 ? inputChannel : outputChannel;
        const resnetIn = j === 0 ? prevOutputChannel : outputChannel;
        h = g.concat([h, skips.pop()!], 1, `up_blocks.${i}.resnets.${j}`);
        h = this.resnet(h, `up_blocks.${i}.resnets.${j}`, resnetIn + skipChannels, outputChannel, 1);
        if (type === 'AttnUpBlock2D') h = this.attention(h, `up_blocks.${i}.attentions.${j}`, outputChannel, headDimOf(outputChannel), groups, 1);
      }
      if (i < levels - 1) {
        const resnetUp = type === 'ResnetUpsampleBlock2D' || (type === 'AttnUpBlock2D' && c.upsampleType === 'resnet');
        if (resnetUp) h = this.resnet(h, `up_blocks.${i}.upsamplers.0`, outputChannel, outputChannel, 1, +1);
        else h = this.conv(g.upsampleNearest2x(h, `up_blocks.${i}.upsamplers.0`), `up_blocks.${i}.upsamplers.0.conv`, 3, [1, 1, 1, 1]);
      }
    }

    // 6. out (fourier models divide by the timestep)
    h = this.conv(g.silu(this.norm(h, 'conv_norm_out', c0, groups), 'conv_norm_out'), 'conv_out', 3, [1, 1, 1, 1]);
    if (c.timeEmbeddingType === 'fourier') h = g.div(h, g.reshape('timestep', [-1, 1, 1, 1], 'out'), 'out');
    g.renameOutput(h, 'out_sample');
    const unused = this.unusedParameters();
    if (unused.length) throw new Error(`ONNX export: the graph does not use ${unused.join(', ')}`);
    return {
      name: 'UNet2DModel',
      nodes: g.nodes,
      initializers: g.initializers,
      inputs,
      outputs: [{ name: 'out_sample', elemType: OnnxDataType.Float, dims: ['batch', c.outChannels, 'height', 'width'] }],
    };
  }
}

/** The ONNX graph of a UNet2DModel config with the given parameters. */
export function buildUNetGraph(config: UNet2DConfig, params: ParameterSource): OnnxGraph {
  return new UNetGraph(config, params).build();
}
