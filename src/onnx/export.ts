// UNet2DModel -> ONNX ModelProto bytes, from the engine's own parameter table
// (so whatever loads in marble exports: legacy attention names, f16/bf16
// checkpoints and freshly created models alike). The graph is
// ./unet_graph.ts; the wire format ./onnx_proto.ts.
import { InputError } from '../core/errors.js';
import type { UNet2DModel } from '../core/model/unet.js';
import { engineOf } from '../train/engine_access.js';
import { encodeModel } from './onnx_proto.js';
import { buildUNetGraph } from './unet_graph.js';

/**
 * Opset 17: every op the graph uses is in it (GroupNorm is decomposed, see
 * GraphBuilder.groupNorm), and it loads in onnxruntime 1.13 and later.
 */
export const ONNX_OPSET = 17;
/** The IR version that goes with opset 17. */
export const ONNX_IR_VERSION = 8;
/** A protobuf message (the whole file, without external data) cannot pass 2 GiB. */
export const ONNX_MAX_BYTES = 2 ** 31 - 1;
/** Headroom for everything that is not a weight (nodes, names, shape constants). */
const GRAPH_OVERHEAD_BYTES = 16 * 2 ** 20;

export interface OnnxExportInfo {
  parameters: number;
  initializers: number;
  nodes: number;
}

/** The model as an ONNX file's bytes; `info` (if given) receives counts. */
export function unetToOnnx(unet: UNet2DModel, info?: OnnxExportInfo): Uint8Array {
  const engine = engineOf(unet);
  const table = engine.paramTable();
  const parameters = table.reduce((n, p) => n + p.shape.reduce((a, b) => a * b, 1), 0);
  if (parameters * 4 + GRAPH_OVERHEAD_BYTES > ONNX_MAX_BYTES)
    throw new InputError(
      `this model has ${parameters.toLocaleString('en-US')} parameters (${(parameters * 4 / 2 ** 30).toFixed(2)} GiB in f32); ` +
        'an ONNX file without external data is limited to 2 GiB, and marble does not write external data',
    );
  const graph = buildUNetGraph(unet.config, { table, read: (i) => engine.readTensor(i, 'param') });
  if (info) {
    info.parameters = parameters;
    info.initializers = graph.initializers.length;
    info.nodes = graph.nodes.length;
  }
  return encodeModel({
    irVersion: ONNX_IR_VERSION,
    opsetVersion: ONNX_OPSET,
    producerName: 'marble',
    producerVersion: '0.1.0',
    docString: 'diffusers UNet2DModel forward (inputs sample, timestep[, class_labels]; output out_sample)',
    graph,
  });
}
