// The ONNX messages marble writes (onnx/onnx.proto, field numbers as there):
// ModelProto, OperatorSetIdProto, GraphProto, NodeProto, AttributeProto,
// TensorProto, ValueInfoProto with its TypeProto / TensorShapeProto.
// Repeated scalars are written unpacked, as onnx.proto is proto2.
import { ProtoMessage } from './protobuf.js';

/** TensorProto.DataType values used here. */
export const enum OnnxDataType {
  Float = 1,
  Int64 = 7,
}

/** AttributeProto.AttributeType values used here. */
const enum AttributeType {
  Float = 1,
  Int = 2,
  String = 3,
  Floats = 6,
  Ints = 7,
}

export type AttributeValue =
  | { kind: 'int'; value: number }
  | { kind: 'float'; value: number }
  | { kind: 'string'; value: string }
  | { kind: 'ints'; value: readonly number[] }
  | { kind: 'floats'; value: readonly number[] };

export interface OnnxNode {
  opType: string;
  inputs: readonly string[];
  outputs: readonly string[];
  name: string;
  attributes?: Readonly<Record<string, AttributeValue>>;
}

export interface OnnxTensor {
  name: string;
  dims: readonly number[];
  /** float32 or int64 data, stored as little-endian raw_data. */
  data: Float32Array | BigInt64Array;
}

/** A graph input or output: element type and dimensions (a string names a symbolic dimension). */
export interface OnnxValueInfo {
  name: string;
  elemType: OnnxDataType;
  dims: readonly (number | string)[];
}

export interface OnnxGraph {
  name: string;
  nodes: readonly OnnxNode[];
  initializers: readonly OnnxTensor[];
  inputs: readonly OnnxValueInfo[];
  outputs: readonly OnnxValueInfo[];
}

export interface OnnxModel {
  irVersion: number;
  opsetVersion: number;
  producerName: string;
  producerVersion: string;
  docString?: string;
  graph: OnnxGraph;
  metadata?: Readonly<Record<string, string>>;
}

function isLittleEndian(): boolean {
  return new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;
}

function encodeAttribute(name: string, attribute: AttributeValue): ProtoMessage {
  const m = new ProtoMessage().string(1, name);
  switch (attribute.kind) {
    case 'float':
      m.float(2, attribute.value).int(20, AttributeType.Float);
      break;
    case 'int':
      m.int(3, attribute.value).int(20, AttributeType.Int);
      break;
    case 'string':
      m.string(4, attribute.value).int(20, AttributeType.String);
      break;
    case 'floats':
      for (const v of attribute.value) m.float(7, v);
      m.int(20, AttributeType.Floats);
      break;
    case 'ints':
      for (const v of attribute.value) m.int(8, v);
      m.int(20, AttributeType.Ints);
      break;
  }
  return m;
}

function encodeNode(node: OnnxNode): ProtoMessage {
  const m = new ProtoMessage();
  for (const input of node.inputs) m.string(1, input);
  for (const output of node.outputs) m.string(2, output);
  m.string(3, node.name).string(4, node.opType);
  for (const [name, value] of Object.entries(node.attributes ?? {})) m.message(5, encodeAttribute(name, value));
  return m;
}

/** A TensorProto with raw_data (referenced, not copied). */
export function encodeTensor(tensor: OnnxTensor): ProtoMessage {
  if (!isLittleEndian()) throw new Error('ONNX raw_data is little-endian; big-endian hosts are not supported');
  const m = new ProtoMessage();
  for (const d of tensor.dims) m.int(1, d);
  m.int(2, tensor.data instanceof Float32Array ? OnnxDataType.Float : OnnxDataType.Int64);
  m.string(8, tensor.name);
  m.bytes(9, new Uint8Array(tensor.data.buffer, tensor.data.byteOffset, tensor.data.byteLength));
  return m;
}

function encodeValueInfo(info: OnnxValueInfo): ProtoMessage {
  const shape = new ProtoMessage();
  for (const d of info.dims) {
    const dim = typeof d === 'number' ? new ProtoMessage().int(1, d) : new ProtoMessage().string(2, d);
    shape.message(1, dim);
  }
  const tensorType = new ProtoMessage().int(1, info.elemType).message(2, shape);
  const type = new ProtoMessage().message(1, tensorType);
  return new ProtoMessage().string(1, info.name).message(2, type);
}

function encodeGraph(graph: OnnxGraph): ProtoMessage {
  const m = new ProtoMessage();
  for (const node of graph.nodes) m.message(1, encodeNode(node));
  m.string(2, graph.name);
  for (const tensor of graph.initializers) m.message(5, encodeTensor(tensor));
  for (const input of graph.inputs) m.message(11, encodeValueInfo(input));
  for (const output of graph.outputs) m.message(12, encodeValueInfo(output));
  return m;
}

/** Serialises a ModelProto (default domain only). */
export function encodeModel(model: OnnxModel): Uint8Array {
  const m = new ProtoMessage()
    .int(1, model.irVersion)
    .string(2, model.producerName)
    .string(3, model.producerVersion);
  if (model.docString) m.string(6, model.docString);
  m.message(7, encodeGraph(model.graph));
  m.message(8, new ProtoMessage().string(1, '').int(2, model.opsetVersion));
  for (const [key, value] of Object.entries(model.metadata ?? {}))
    m.message(14, new ProtoMessage().string(1, key).string(2, value));
  return m.finish();
}
