// A protobuf wire-format writer: just what encoding an ONNX ModelProto needs
// (varints, 64-bit ints, fixed32 floats, strings, bytes, nested messages).
//
// Why hand-written rather than protobufjs: we only ever write, the ONNX
// messages we emit are eight small ones, and this file is the whole encoder
// (no .proto schema to ship, no runtime dependency, no Node built-ins, so it
// works from the "./wasm" entry too). Large payloads (weights) are referenced,
// not copied, until finish() lays the message out once.
//
// Wire format: https://protobuf.dev/programming-guides/encoding/

const enum WireType {
  Varint = 0,
  Fixed32 = 5,
  LengthDelimited = 2,
}

/** One message being built: a list of byte chunks and their total length. */
export class ProtoMessage {
  private readonly chunks: Uint8Array[] = [];
  private pending: number[] = [];
  private length = 0;

  get byteLength(): number {
    return this.length + this.pending.length;
  }

  /** An unsigned or signed integer field (int32/int64/enum); negatives take ten bytes, as protobuf's int64 does. */
  int(field: number, value: number | bigint): this {
    this.tag(field, WireType.Varint);
    this.varint(value);
    return this;
  }

  /** A float field (fixed32, little-endian). */
  float(field: number, value: number): this {
    this.tag(field, WireType.Fixed32);
    const bytes = new Uint8Array(4);
    new DataView(bytes.buffer).setFloat32(0, value, true);
    for (const b of bytes) this.pending.push(b);
    return this;
  }

  string(field: number, value: string): this {
    return this.bytes(field, new TextEncoder().encode(value));
  }

  /** A bytes field. The array is referenced, not copied: do not modify it before finish(). */
  bytes(field: number, value: Uint8Array): this {
    this.tag(field, WireType.LengthDelimited);
    this.varint(value.byteLength);
    this.append(value);
    return this;
  }

  /** A nested message field. `message` must not change afterwards. */
  message(field: number, message: ProtoMessage): this {
    this.tag(field, WireType.LengthDelimited);
    this.varint(message.byteLength);
    message.flushPending();
    for (const chunk of message.chunks) this.append(chunk);
    return this;
  }

  /** The encoded message, laid out once. */
  finish(): Uint8Array {
    this.flushPending();
    const out = new Uint8Array(this.length);
    let offset = 0;
    for (const chunk of this.chunks) {
      out.set(chunk, offset);
      offset += chunk.byteLength;
    }
    return out;
  }

  private tag(field: number, wireType: WireType): void {
    if (!Number.isInteger(field) || field < 1 || field > 536870911) throw new RangeError(`bad protobuf field number ${field}`);
    this.varint(field * 8 + wireType);
  }

  private varint(value: number | bigint): void {
    let v = BigInt(value);
    if (v < -(1n << 63n) || v >= 1n << 64n) throw new RangeError(`${value} does not fit in 64 bits`);
    if (v < 0n) v += 1n << 64n; // two's complement, as protobuf encodes negative int64
    if (v < 0x80n) {
      this.pending.push(Number(v));
      return;
    }
    while (v >= 0x80n) {
      this.pending.push(Number(v & 0x7fn) | 0x80);
      v >>= 7n;
    }
    this.pending.push(Number(v));
  }

  private append(chunk: Uint8Array): void {
    // Small chunks are merged into the pending bytes; large ones are kept by reference.
    if (chunk.byteLength < 256) {
      for (let i = 0; i < chunk.byteLength; i++) this.pending.push(chunk[i]!);
      return;
    }
    this.flushPending();
    this.chunks.push(chunk);
    this.length += chunk.byteLength;
  }

  private flushPending(): void {
    if (this.pending.length === 0) return;
    this.chunks.push(Uint8Array.from(this.pending));
    this.length += this.pending.length;
    this.pending = [];
  }
}
