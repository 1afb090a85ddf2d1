// Reader and writer for the safetensors format
// (https://github.com/huggingface/safetensors):
//
//   u64 little-endian N | N bytes of UTF-8 JSON header | data buffer
//
// The header maps tensor names to {dtype, shape, data_offsets: [begin, end]},
// offsets being relative to the first byte after the header, plus an optional
// "__metadata__" object of string -> string.
//
// Files may come from anywhere, so the reader treats every number in them as
// hostile: each one is range-checked before it is used to size or index
// anything, and every failure is a SafetensorsError naming the file and tensor.

import { InputError, SafetensorsError } from '../errors.js';

/** Bytes per element of every dtype the format defines. */
const DTYPE_SIZES: Readonly<Record<string, number>> = {
  BOOL: 1, U8: 1, I8: 1, F8_E5M2: 1, F8_E4M3: 1,
  I16: 2, U16: 2, F16: 2, BF16: 2,
  I32: 4, U32: 4, F32: 4,
  I64: 8, U64: 8, F64: 8,
};

/** Same limit as the reference implementation; real headers are kilobytes. */
export const MAX_HEADER_BYTES = 100_000_000;
const METADATA_KEY = '__metadata__';

export interface TensorInfo {
  name: string;
  dtype: string;
  shape: number[];
  /** Absolute byte positions within SafetensorsFile.bytes, begin <= end. */
  begin: number;
  end: number;
}

/** What the header says: enough to check a file against a model before reading its data. */
export interface SafetensorsHeader {
  tensors: Map<string, TensorInfo>;
  metadata: Record<string, string>;
  /** Absolute position of the data buffer (8 + header length). */
  dataStart: number;
}

export interface SafetensorsFile extends SafetensorsHeader {
  bytes: Uint8Array;
}

/** Tensor names are attacker-controlled and may be megabytes long. */
function quote(name: string): string {
  return JSON.stringify(name.length > 200 ? `${name.slice(0, 200)}...` : name);
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function isNonNegativeSafeInteger(value: unknown): value is number {
  return Number.isSafeInteger(value) && (value as number) >= 0;
}

/** Product of the dims, or undefined if it is not a safe integer. */
function elementCount(shape: readonly number[]): number | undefined {
  // A zero dim makes the tensor empty whatever the other dims are.
  if (shape.includes(0)) return 0;
  let count = 1;
  for (const dim of shape) {
    count *= dim;
    if (!Number.isSafeInteger(count)) return undefined;
  }
  return count;
}

/**
 * The header's length from the file's first 8 bytes (a u64), range-checked:
 * a streaming reader knows from it how many bytes to wait for.
 */
export function safetensorsHeaderLength(first8: Uint8Array, what = 'safetensors file'): number {
  if (first8.length < 8) throw new SafetensorsError(`${what}: file is ${first8.length} bytes, shorter than the 8-byte header length`);
  const view = new DataView(first8.buffer, first8.byteOffset, 8);
  // Read the u64 as two u32 halves so a huge value never becomes a lossy number.
  const headerLengthLow = view.getUint32(0, true);
  const headerLengthHigh = view.getUint32(4, true);
  if (headerLengthHigh !== 0 || headerLengthLow > MAX_HEADER_BYTES) {
    throw new SafetensorsError(`${what}: header length ${view.getBigUint64(0, true)} exceeds the ${MAX_HEADER_BYTES}-byte limit`);
  }
  if (headerLengthLow === 0) throw new SafetensorsError(`${what}: header length is 0`);
  return headerLengthLow;
}

export function parseSafetensors(bytes: Uint8Array, what = 'safetensors file'): SafetensorsFile {
  return { ...parseSafetensorsHeader(bytes, bytes.length, what), bytes };
}

/**
 * Parses the header from a file's first bytes (at least 8 + header length of
 * them). `fileLength` bounds the tensors' offsets; null when it is not known
 * yet (a download without Content-Length: the reader then finds truncation
 * at the end of the stream).
 */
export function parseSafetensorsHeader(bytes: Uint8Array, fileLength: number | null, what = 'safetensors file'): SafetensorsHeader {
  const fail = (message: string): never => {
    throw new SafetensorsError(`${what}: ${message}`);
  };

  const headerLength = safetensorsHeaderLength(bytes, what);
  const dataStart = 8 + headerLength;
  if (dataStart > (fileLength ?? bytes.length)) {
    fail(`header length ${headerLength} runs past the end of the file (${fileLength ?? bytes.length} bytes); the file may be truncated`);
  }
  const dataLength = fileLength === null ? Infinity : fileLength - dataStart;

  let header: unknown;
  try {
    const headerText = new TextDecoder('utf-8', { fatal: true }).decode(bytes.subarray(8, dataStart));
    header = JSON.parse(headerText);
  } catch (err) {
    fail(`header is not valid UTF-8 JSON (${(err as Error).message})`);
  }
  if (!isObject(header)) fail('header is not a JSON object');
  const headerObject = header as Record<string, unknown>;

  let metadata: Record<string, string> = {};
  const tensors = new Map<string, TensorInfo>();
  for (const [name, entry] of Object.entries(headerObject)) {
    if (name === METADATA_KEY) {
      if (!isObject(entry)) fail(`${METADATA_KEY} is not an object`);
      const metadataEntries = Object.entries(entry as Record<string, unknown>);
      for (const [key, value] of metadataEntries) {
        if (typeof value !== 'string') fail(`${METADATA_KEY} value ${quote(key)} is not a string`);
      }
      // fromEntries defines own properties, so a "__proto__" key stays data.
      metadata = Object.fromEntries(metadataEntries) as Record<string, string>;
      continue;
    }
    const tensor = `tensor ${quote(name)}`;
    if (!isObject(entry)) fail(`${tensor} entry is not an object`);
    const { dtype, shape, data_offsets: offsets } = entry as Record<string, unknown>;

    if (typeof dtype !== 'string' || !Object.hasOwn(DTYPE_SIZES, dtype)) {
      fail(`${tensor} has unknown dtype ${JSON.stringify(dtype)}`);
    }
    const dtypeSize = DTYPE_SIZES[dtype as string];

    if (!Array.isArray(shape) || !shape.every(isNonNegativeSafeInteger)) {
      fail(`${tensor} shape must be an array of non-negative integers, got ${JSON.stringify(shape)?.slice(0, 200)}`);
    }
    const dims = shape as number[];

    if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every(isNonNegativeSafeInteger) || offsets[0] > offsets[1]) {
      fail(`${tensor} data_offsets must be two non-negative integers [begin, end] with begin <= end, got ${JSON.stringify(offsets)?.slice(0, 200)}`);
    }
    const [relativeBegin, relativeEnd] = offsets as [number, number];
    if (relativeEnd > dataLength) {
      fail(`${tensor} data_offsets [${relativeBegin}, ${relativeEnd}] extend past the end of the ${dataLength}-byte data buffer; the file may be truncated`);
    }

    const count = elementCount(dims);
    const byteLength = count === undefined ? undefined : count * dtypeSize;
    if (byteLength === undefined || !Number.isSafeInteger(byteLength)) {
      fail(`${tensor} element count of shape [${dims.join(', ')}] overflows`);
    }
    if (relativeEnd - relativeBegin !== byteLength) {
      fail(`${tensor} has ${relativeEnd - relativeBegin} bytes but shape [${dims.join(', ')}] of ${dtype} needs ${byteLength}`);
    }

    tensors.set(name, { name, dtype: dtype as string, shape: dims, begin: dataStart + relativeBegin, end: dataStart + relativeEnd });
  }

  // Gaps and trailing bytes are tolerated; two tensors sharing bytes are not.
  // Empty tensors occupy no bytes, so they cannot overlap anything.
  const byPosition = [...tensors.values()].filter((t) => t.end > t.begin).sort((a, b) => a.begin - b.begin);
  for (let i = 1; i < byPosition.length; i++) {
    const previous = byPosition[i - 1];
    const current = byPosition[i];
    if (previous.end > current.begin) {
      fail(`data of tensor ${quote(previous.name)} [${previous.begin - dataStart}, ${previous.end - dataStart}] overlaps tensor ${quote(current.name)} [${current.begin - dataStart}, ${current.end - dataStart}]`);
    }
  }

  return { tensors, metadata, dataStart };
}

// ---------------------------------------------------------------------------
// Scalar conversions. A shared scratch word reinterprets float bits; endianness
// does not matter since both views address the same single element.

const scratchFloat = new Float32Array(1);
const scratchBits = new Uint32Array(scratchFloat.buffer);

export function float16ToFloat32(u16: number): number {
  const sign = u16 & 0x8000 ? -1 : 1;
  const exponent = (u16 >> 10) & 0x1f;
  const mantissa = u16 & 0x3ff;
  if (exponent === 0) return sign * mantissa * 2 ** -24; // zero and subnormals
  if (exponent === 0x1f) return mantissa ? NaN : sign * Infinity;
  return sign * (1 + mantissa / 1024) * 2 ** (exponent - 15);
}

/** Round-to-nearest-even, overflowing to infinity like IEEE conversions do. */
export function float32ToFloat16(f: number): number {
  scratchFloat[0] = f;
  const bits = scratchBits[0];
  const sign = (bits >>> 16) & 0x8000;
  const exponent = (bits >>> 23) & 0xff;
  const mantissa = bits & 0x7fffff;

  if (exponent === 0xff) return sign | 0x7c00 | (mantissa ? 0x200 : 0); // inf, quiet NaN
  const halfExponent = exponent - 127 + 15;
  if (halfExponent >= 0x1f) return sign | 0x7c00; // >= 2^16: beyond any rounding to 65504
  if (halfExponent <= 0) {
    // Subnormal half: value / 2^-24, with the implicit leading 1 made explicit.
    // Anything below 2^-25 rounds to zero (2^-25 itself ties to even zero).
    if (halfExponent < -10) return sign;
    const shift = 14 - halfExponent; // 14..24
    const significand = mantissa | 0x800000;
    let half = significand >>> shift;
    const remainder = significand & ((1 << shift) - 1);
    const halfway = 1 << (shift - 1);
    if (remainder > halfway || (remainder === halfway && half & 1)) half++; // may carry into the smallest normal
    return sign | half;
  }
  let half = (halfExponent << 10) | (mantissa >>> 13);
  const remainder = mantissa & 0x1fff;
  if (remainder > 0x1000 || (remainder === 0x1000 && half & 1)) half++; // carries may reach 0x7c00 = inf
  return sign | half;
}

export function bfloat16ToFloat32(u16: number): number {
  scratchBits[0] = (u16 & 0xffff) << 16;
  return scratchFloat[0];
}

/** Round-to-nearest-even on the upper 16 bits of the float32. */
export function float32ToBfloat16(f: number): number {
  scratchFloat[0] = f;
  const bits = scratchBits[0];
  // Truncating a NaN's payload could leave the all-zero mantissa of infinity.
  if ((bits & 0x7fffffff) > 0x7f800000) return (bits >>> 16) | 0x40;
  return (bits + 0x7fff + ((bits >>> 16) & 1)) >>> 16;
}

// ---------------------------------------------------------------------------
// Tensor conversions

const hostIsLittleEndian = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

let float16Table: Float32Array | undefined;
/** All 65536 halves decoded once (256 KiB), since weights have millions. */
function getFloat16Table(): Float32Array {
  if (!float16Table) {
    float16Table = new Float32Array(0x10000);
    for (let u16 = 0; u16 < 0x10000; u16++) float16Table[u16] = float16ToFloat32(u16);
  }
  return float16Table;
}

function getTensor(file: SafetensorsFile, name: string): TensorInfo {
  const info = file.tensors.get(name);
  if (!info) throw new SafetensorsError(`safetensors file has no tensor ${quote(name)}`);
  return info;
}

export function tensorToFloat32(file: SafetensorsFile, name: string): Float32Array {
  const info = getTensor(file, name);
  return decodeFloatTensor(info.dtype, file.bytes.subarray(info.begin, info.end), name);
}

/** A tensor's own bytes (F32, F16 or BF16, little-endian) as a fresh Float32Array. */
export function decodeFloatTensor(dtype: string, bytes: Uint8Array, name = 'tensor'): Float32Array {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  switch (dtype) {
    case 'F32': {
      if (hostIsLittleEndian) {
        // Copy into a fresh, aligned buffer: the file offset may be odd. (Not
        // bytes.slice(): on a Buffer, as readFile returns, that is a view.)
        return new Float32Array(new Uint8Array(bytes).buffer);
      }
      const out = new Float32Array(bytes.length / 4);
      for (let i = 0; i < out.length; i++) out[i] = view.getFloat32(4 * i, true);
      return out;
    }
    case 'F16': {
      const table = getFloat16Table();
      const out = new Float32Array(bytes.length / 2);
      for (let i = 0; i < out.length; i++) out[i] = table[view.getUint16(2 * i, true)];
      return out;
    }
    case 'BF16': {
      const out = new Float32Array(bytes.length / 2);
      const outBits = new Uint32Array(out.buffer);
      for (let i = 0; i < out.length; i++) outBits[i] = view.getUint16(2 * i, true) << 16;
      return out;
    }
    default:
      throw new SafetensorsError(`dtype ${dtype} of tensor ${quote(name)} is not supported (f32, f16, bf16)`);
  }
}

/** Integer tensors (timesteps, class labels) as plain numbers. */
export function tensorToInt64AsNumbers(file: SafetensorsFile, name: string): number[] {
  const info = getTensor(file, name);
  const { bytes } = file;
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const values: number[] = [];
  if (info.dtype === 'I32') {
    for (let pos = info.begin; pos < info.end; pos += 4) values.push(view.getInt32(pos, true));
  } else if (info.dtype === 'I64') {
    for (let pos = info.begin; pos < info.end; pos += 8) {
      const value = view.getBigInt64(pos, true);
      if (value > BigInt(Number.MAX_SAFE_INTEGER) || value < BigInt(Number.MIN_SAFE_INTEGER)) {
        throw new SafetensorsError(`tensor ${quote(name)} value ${value} is not a safe integer`);
      }
      values.push(Number(value));
    }
  } else {
    throw new SafetensorsError(`dtype ${info.dtype} of tensor ${quote(name)} is not supported (i64, i32)`);
  }
  return values;
}

// ---------------------------------------------------------------------------
// Writer

export type WritableDtype = 'F32' | 'F16' | 'BF16' | 'I64';
const WRITABLE_DTYPES: readonly string[] = ['F32', 'F16', 'BF16', 'I64'];

export interface TensorToWrite {
  dtype: WritableDtype;
  shape: number[];
  data: Float32Array | BigInt64Array;
}

/** Encodes data as little-endian bytes of the given dtype. */
function encodeTensor(name: string, tensor: TensorToWrite): Uint8Array {
  const { dtype, shape, data } = tensor;
  const what = `tensor ${quote(name)}`;
  if (!WRITABLE_DTYPES.includes(dtype)) {
    throw new InputError(`${what}: cannot write dtype ${JSON.stringify(dtype)} (${WRITABLE_DTYPES.join(', ')})`);
  }
  const wantsBigInt = dtype === 'I64';
  if (wantsBigInt ? !(data instanceof BigInt64Array) : !(data instanceof Float32Array)) {
    throw new InputError(`${what}: dtype ${dtype} needs a ${wantsBigInt ? 'BigInt64Array' : 'Float32Array'}`);
  }
  if (!Array.isArray(shape) || !shape.every(isNonNegativeSafeInteger)) {
    throw new InputError(`${what}: shape must be an array of non-negative integers, got ${JSON.stringify(shape)}`);
  }
  const count = elementCount(shape);
  if (count !== data.length) {
    throw new InputError(`${what}: shape [${shape.join(', ')}] needs ${count ?? 'too many'} elements, data has ${data.length}`);
  }

  const out = new Uint8Array(count * DTYPE_SIZES[dtype]);
  if ((dtype === 'F32' || dtype === 'I64') && hostIsLittleEndian) {
    out.set(new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
    return out;
  }
  const view = new DataView(out.buffer);
  for (let i = 0; i < count; i++) {
    if (dtype === 'F32') view.setFloat32(4 * i, data[i] as number, true);
    else if (dtype === 'I64') view.setBigInt64(8 * i, data[i] as bigint, true);
    else if (dtype === 'F16') view.setUint16(2 * i, float32ToFloat16(data[i] as number), true);
    else view.setUint16(2 * i, float32ToBfloat16(data[i] as number), true);
  }
  return out;
}

export function serializeSafetensors(tensors: Record<string, TensorToWrite>, metadata?: Record<string, string>): Uint8Array {
  const header: Record<string, unknown> = {};
  if (metadata && Object.keys(metadata).length > 0) {
    for (const [key, value] of Object.entries(metadata)) {
      if (typeof value !== 'string') throw new InputError(`metadata value ${quote(key)} is not a string`);
    }
    header[METADATA_KEY] = metadata;
  }

  // Sorted names make the output deterministic, as the reference writer does.
  const names = Object.keys(tensors).sort();
  const encoded: Uint8Array[] = [];
  let offset = 0;
  for (const name of names) {
    if (name === METADATA_KEY) throw new InputError(`${METADATA_KEY} is reserved and cannot name a tensor`);
    const data = encodeTensor(name, tensors[name]);
    Object.defineProperty(header, name, {
      value: { dtype: tensors[name].dtype, shape: tensors[name].shape, data_offsets: [offset, offset + data.length] },
      enumerable: true,
    });
    encoded.push(data);
    offset += data.length;
  }

  // Padding the header to a multiple of 8 keeps the data buffer 8-byte aligned.
  const headerBytes = new TextEncoder().encode(JSON.stringify(header));
  const paddedLength = Math.ceil(headerBytes.length / 8) * 8;
  const out = new Uint8Array(8 + paddedLength + offset);
  new DataView(out.buffer).setBigUint64(0, BigInt(paddedLength), true);
  out.set(headerBytes, 8);
  out.fill(0x20, 8 + headerBytes.length, 8 + paddedLength);
  let position = 8 + paddedLength;
  for (const data of encoded) {
    out.set(data, position);
    position += data.length;
  }
  return out;
}
