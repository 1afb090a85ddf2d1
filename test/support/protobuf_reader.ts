// A minimal protobuf wire-format reader for tests: splits a message into its
// fields (number, wire type, raw value), nothing schema-aware. It checks the
// bytes src/onnx/protobuf.ts writes independently of the writer's code.

export interface WireField {
  field: number;
  wireType: 0 | 1 | 2 | 5;
  /** varint: the value (as unsigned 64-bit); fixed32/64: the little-endian bits; length-delimited: the bytes. */
  value: bigint | Uint8Array;
}

export function readFields(bytes: Uint8Array): WireField[] {
  const fields: WireField[] = [];
  let pos = 0;
  const varint = (): bigint => {
    let result = 0n;
    for (let shift = 0n; ; shift += 7n) {
      if (pos >= bytes.length) throw new Error('truncated varint');
      if (shift > 63n) throw new Error('varint longer than 10 bytes');
      const b = bytes[pos++]!;
      result |= BigInt(b & 0x7f) << shift;
      if (b < 0x80) return result;
    }
  };
  const take = (n: number): Uint8Array => {
    if (pos + n > bytes.length) throw new Error(`field runs past the end (${pos + n} > ${bytes.length})`);
    const out = bytes.subarray(pos, pos + n);
    pos += n;
    return out;
  };
  while (pos < bytes.length) {
    const key = varint();
    const field = Number(key >> 3n);
    const wireType = Number(key & 7n);
    if (field < 1) throw new Error(`bad field number ${field}`);
    switch (wireType) {
      case 0:
        fields.push({ field, wireType, value: varint() });
        break;
      case 1:
        fields.push({ field, wireType, value: take(8) });
        break;
      case 2:
        fields.push({ field, wireType, value: take(Number(varint())) });
        break;
      case 5:
        fields.push({ field, wireType, value: take(4) });
        break;
      default:
        throw new Error(`unsupported wire type ${wireType} at field ${field}`);
    }
  }
  return fields;
}

/** Reads a message into a map: field number -> values in order. */
export function readMessage(bytes: Uint8Array): Map<number, WireField['value'][]> {
  const map = new Map<number, WireField['value'][]>();
  for (const f of readFields(bytes)) {
    const list = map.get(f.field) ?? [];
    list.push(f.value);
    map.set(f.field, list);
  }
  return map;
}

const decoder = new TextDecoder('utf-8', { fatal: true });

export function str(m: Map<number, WireField['value'][]>, field: number): string[] {
  return (m.get(field) ?? []).map((v) => decoder.decode(v as Uint8Array));
}

/** Varint fields as signed 64-bit numbers (int64 semantics). */
export function ints(m: Map<number, WireField['value'][]>, field: number): number[] {
  return (m.get(field) ?? []).map((v) => Number(BigInt.asIntN(64, v as bigint)));
}

export function msgs(m: Map<number, WireField['value'][]>, field: number): Map<number, WireField['value'][]>[] {
  return (m.get(field) ?? []).map((v) => readMessage(v as Uint8Array));
}

export function bytesOf(m: Map<number, WireField['value'][]>, field: number): Uint8Array[] {
  return (m.get(field) ?? []) as Uint8Array[];
}
