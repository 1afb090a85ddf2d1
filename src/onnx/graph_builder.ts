// Builds an ONNX graph op by op: each helper adds nodes and returns the name
// of its output. Only standard ONNX ops (default domain, opset 17), all with
// dynamic batch and spatial sizes (reshapes copy dimensions with 0 or take
// them from a Shape node), so one exported file serves every N, H, W.
import type { AttributeValue, OnnxNode, OnnxTensor } from './onnx_proto.js';

export class GraphBuilder {
  readonly nodes: OnnxNode[] = [];
  readonly initializers: OnnxTensor[] = [];
  private readonly names = new Set<string>();
  private readonly int64Constants = new Map<string, string>();
  private readonly floatConstants = new Map<string, string>();
  private counter = 0;

  /** A fresh value name under `hint` (scope/op style, as exporters write them). */
  fresh(hint: string): string {
    let name = hint;
    while (this.names.has(name)) name = `${hint}_${++this.counter}`;
    this.names.add(name);
    return name;
  }

  /** Adds a weight; the name must be new (parameter names are unique). */
  initializer(name: string, dims: readonly number[], data: Float32Array | BigInt64Array): string {
    if (this.names.has(name)) throw new Error(`ONNX graph: duplicate value name ${name}`);
    this.names.add(name);
    return this.pushInitializer(name, dims, data);
  }

  private pushInitializer(name: string, dims: readonly number[], data: Float32Array | BigInt64Array): string {
    const numel = dims.reduce((a, b) => a * b, 1);
    if (numel !== data.length) throw new Error(`ONNX graph: ${name} has ${data.length} values for dims [${dims.join(', ')}]`);
    this.initializers.push({ name, dims, data });
    return name;
  }

  /** A shared int64 vector constant (shapes, axes). */
  ints(values: readonly number[]): string {
    const key = values.join(',');
    let name = this.int64Constants.get(key);
    if (!name) {
      name = this.pushInitializer(this.fresh(`const_i64_${values.map((v) => (v < 0 ? `m${-v}` : v)).join('_')}`), [values.length], BigInt64Array.from(values.map(BigInt)));
      this.int64Constants.set(key, name);
    }
    return name;
  }

  /** A shared float32 constant of the given dims, filled with one value or from data. */
  floats(dims: readonly number[], values: number | Float32Array, hint = 'const_f32'): string {
    const data = typeof values === 'number' ? new Float32Array(dims.reduce((a, b) => a * b, 1)).fill(values) : values;
    const key = typeof values === 'number' ? `${dims.join('x')}:${Object.is(values, -0) ? '-0' : values}` : null;
    if (key !== null) {
      const existing = this.floatConstants.get(key);
      if (existing) return existing;
    }
    const name = this.pushInitializer(this.fresh(hint), dims, data);
    if (key !== null) this.floatConstants.set(key, name);
    return name;
  }

  /** One node; returns its (first) output. */
  op(opType: string, inputs: readonly string[], scope: string, attributes?: Record<string, AttributeValue>, outputCount = 1): string {
    const outputs = Array.from({ length: outputCount }, (_, i) => this.fresh(`${scope}/${opType}${outputCount > 1 ? `_${i}` : ''}`));
    this.nodes.push({ opType, inputs, outputs, name: outputs[0]!, attributes });
    return outputs[0]!;
  }

  /** Gives a node's output a fixed name (a graph output). */
  renameOutput(value: string, name: string): void {
    if (this.names.has(name)) throw new Error(`ONNX graph: duplicate value name ${name}`);
    const node = this.nodes.find((n) => n.outputs.includes(value));
    if (!node || this.nodes.some((n) => n.inputs.includes(value))) throw new Error(`ONNX graph: ${value} is not a final node output`);
    (node.outputs as string[])[node.outputs.indexOf(value)] = name;
    this.names.add(name);
  }

  add(a: string, b: string, scope: string): string {
    return this.op('Add', [a, b], scope);
  }

  mul(a: string, b: string, scope: string): string {
    return this.op('Mul', [a, b], scope);
  }

  div(a: string, b: string, scope: string): string {
    return this.op('Div', [a, b], scope);
  }

  /** x * sigmoid(x) (torch's SiLU). */
  silu(x: string, scope: string): string {
    return this.mul(x, this.op('Sigmoid', [x], scope), scope);
  }

  reshape(x: string, shape: readonly number[], scope: string): string {
    return this.op('Reshape', [x, this.ints(shape)], scope);
  }

  reshapeLike(x: string, like: string, scope: string): string {
    return this.op('Reshape', [x, this.op('Shape', [like], scope)], scope);
  }

  transpose(x: string, perm: readonly number[], scope: string): string {
    return this.op('Transpose', [x], scope, { perm: { kind: 'ints', value: perm } });
  }

  unsqueeze(x: string, axes: readonly number[], scope: string): string {
    return this.op('Unsqueeze', [x, this.ints(axes)], scope);
  }

  concat(xs: readonly string[], axis: number, scope: string): string {
    return this.op('Concat', xs, scope, { axis: { kind: 'int', value: axis } });
  }

  /** A 2-D convolution, NCHW; pads are [top, left, bottom, right]. */
  conv(x: string, weight: string, bias: string, scope: string, options: { pads: readonly number[]; stride?: number; kernel: number }): string {
    const stride = options.stride ?? 1;
    return this.op('Conv', [x, weight, bias], scope, {
      kernel_shape: { kind: 'ints', value: [options.kernel, options.kernel] },
      pads: { kind: 'ints', value: options.pads },
      strides: { kind: 'ints', value: [stride, stride] },
    });
  }

  /** y = x W^T + b for x [rows, in], W [out, in] (torch's Linear). */
  linear(x: string, weight: string, bias: string, scope: string): string {
    return this.op('Gemm', [x, weight, bias], scope, { transB: { kind: 'int', value: 1 } });
  }

  /**
   * torch GroupNorm on NCHW: Reshape to [N, G, -1], InstanceNormalization
   * (unit scale, zero bias) per group, back to the input's shape, then the
   * per-channel affine map. Opset 18's GroupNormalization has per-group
   * scale/bias (not torch's per-channel) and onnxruntime runs it as this same
   * expansion anyway; InstanceNormalization has a dedicated kernel everywhere.
   */
  groupNorm(x: string, gamma: string, beta: string, channels: number, groups: number, eps: number, scope: string): string {
    const grouped = this.reshape(x, [0, groups, -1], scope);
    const normed = this.op('InstanceNormalization', [grouped, this.floats([groups], 1), this.floats([groups], 0)], scope, {
      epsilon: { kind: 'float', value: eps },
    });
    const back = this.reshapeLike(normed, x, scope);
    const g = this.reshape(gamma, [channels, 1, 1], scope);
    const b = this.reshape(beta, [channels, 1, 1], scope);
    return this.add(this.mul(back, g, scope), b, scope);
  }

  /** Nearest-neighbour 2x upsampling (torch F.interpolate(scale_factor=2, mode='nearest')). */
  upsampleNearest2x(x: string, scope: string): string {
    return this.op('Resize', [x, '', this.floats([4], new Float32Array([1, 1, 2, 2]), 'const_scales_2x')], scope, {
      mode: { kind: 'string', value: 'nearest' },
      coordinate_transformation_mode: { kind: 'string', value: 'asymmetric' },
      nearest_mode: { kind: 'string', value: 'floor' },
    });
  }

  /** 2x2 average pooling, stride 2 (torch AvgPool2d(2, 2)). */
  avgPool2x2(x: string, scope: string): string {
    return this.op('AveragePool', [x], scope, {
      kernel_shape: { kind: 'ints', value: [2, 2] },
      strides: { kind: 'ints', value: [2, 2] },
    });
  }
}
