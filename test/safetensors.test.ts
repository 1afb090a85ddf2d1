import '../src/node/host.js';
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { SafetensorsError } from '../src/core/errors.js';
import { bfloat16ToFloat32, float16ToFloat32, float32ToBfloat16, float32ToFloat16, parseSafetensors, serializeSafetensors, tensorToFloat32, tensorToInt64AsNumbers } from '../src/core/model/safetensors.js';
import { readSafetensorsFile, writeSafetensorsFile } from '../src/node/safetensors_file.js';

// Tests run from dist/test/, the fixtures stay in the source tree.
const fixture = (relative: string): string => fileURLToPath(new URL(`../../test/fixtures/${relative}`, import.meta.url));

/** Builds a file by hand, so tests can write headers the writer never would. */
function rawFile(header: unknown, data: Uint8Array = new Uint8Array(0), headerText = JSON.stringify(header)): Uint8Array {
  const headerBytes = new TextEncoder().encode(headerText);
  const out = new Uint8Array(8 + headerBytes.length + data.length);
  new DataView(out.buffer).setBigUint64(0, BigInt(headerBytes.length), true);
  out.set(headerBytes, 8);
  out.set(data, 8 + headerBytes.length);
  return out;
}

/** Asserts a SafetensorsError (not e.g. a RangeError from a huge allocation) whose message matches. */
function assertRejects(action: () => unknown, pattern: RegExp): void {
  assert.throws(action, (err: unknown) => {
    assert.ok(err instanceof SafetensorsError, `expected SafetensorsError, got ${String(err)}`);
    assert.match(err.message, pattern);
    return true;
  });
}

function sampleFile(): Uint8Array {
  return serializeSafetensors({
    weight: { dtype: 'F32', shape: [2, 3], data: new Float32Array([1, -2, 3.25, 0, 1e-30, -7]) },
    bias: { dtype: 'F32', shape: [3], data: new Float32Array([0.5, 0.25, -0.125]) },
  });
}

test('round trip of F32, F16, BF16 and I64 tensors with metadata', () => {
  const f32 = new Float32Array([1.5, -0.1, 3.4028234663852886e38, -0, 1e-45, Infinity]);
  const f16 = new Float32Array([0, -0, 1, -2.5, 65504, 2 ** -24, 1023 * 2 ** -24, 0.333251953125, -Infinity]);
  const bf16 = new Float32Array([1, -3.5, 2 ** 100, 2 ** -130, 0.33203125, Infinity]);
  const i64 = new BigInt64Array([0n, 17n, 999n, -5n, BigInt(Number.MAX_SAFE_INTEGER)]);
  const bytes = serializeSafetensors(
    {
      z_f32: { dtype: 'F32', shape: [2, 3], data: f32 },
      a_f16: { dtype: 'F16', shape: [9], data: f16 },
      m_bf16: { dtype: 'BF16', shape: [3, 2, 1], data: bf16 },
      ids: { dtype: 'I64', shape: [5], data: i64 },
      empty: { dtype: 'F32', shape: [0, 4], data: new Float32Array(0) },
    },
    { format: 'pt', note: 'hello' },
  );

  const headerLength = Number(new DataView(bytes.buffer).getBigUint64(0, true));
  assert.equal(headerLength % 8, 0, 'header padded to a multiple of 8');

  const file = parseSafetensors(bytes);
  assert.equal(file.dataStart, 8 + headerLength);
  assert.deepEqual(file.metadata, { format: 'pt', note: 'hello' });
  // Sorted by name, contiguous from the start of the data buffer to its end.
  const infos = [...file.tensors.values()].sort((a, b) => a.begin - b.begin || a.end - b.end);
  assert.deepEqual(infos.map((t) => t.name), ['a_f16', 'empty', 'ids', 'm_bf16', 'z_f32']);
  assert.equal(infos[0].begin, file.dataStart);
  for (let i = 1; i < infos.length; i++) assert.equal(infos[i].begin, infos[i - 1].end);
  assert.equal(infos[infos.length - 1].end, bytes.length);

  assert.deepEqual(file.tensors.get('m_bf16'), { name: 'm_bf16', dtype: 'BF16', shape: [3, 2, 1], begin: file.dataStart + 18 + 40, end: file.dataStart + 18 + 40 + 12 });
  assert.deepEqual(tensorToFloat32(file, 'z_f32'), f32);
  assert.deepEqual(tensorToFloat32(file, 'a_f16'), f16);
  assert.deepEqual(tensorToFloat32(file, 'm_bf16'), bf16);
  assert.deepEqual(tensorToFloat32(file, 'empty'), new Float32Array(0));
  assert.deepEqual(tensorToInt64AsNumbers(file, 'ids'), [0, 17, 999, -5, Number.MAX_SAFE_INTEGER]);
});

test('tensors at unaligned offsets in an unaligned view still read correctly', () => {
  // One F16 element puts the F32 tensor at data offset 2; embedding the file at
  // byte 3 of a larger buffer makes its absolute offset odd as well.
  const data = new Uint8Array(2 + 8);
  const dataView = new DataView(data.buffer);
  dataView.setUint16(0, 0x3c00, true); // 1.0 in f16
  dataView.setFloat32(2, 1.25, true);
  dataView.setFloat32(6, -3, true);
  const file = rawFile({
    h: { dtype: 'F16', shape: [1], data_offsets: [0, 2] },
    f: { dtype: 'F32', shape: [2], data_offsets: [2, 10] },
  }, data);
  const container = new Uint8Array(file.length + 5);
  container.set(file, 3);
  const parsed = parseSafetensors(container.subarray(3, 3 + file.length));
  assert.deepEqual(tensorToFloat32(parsed, 'f'), new Float32Array([1.25, -3]));
  assert.deepEqual(tensorToFloat32(parsed, 'h'), new Float32Array([1]));
});

test('float16ToFloat32 decodes subnormals, infinities and NaN', () => {
  assert.equal(float16ToFloat32(0x0001), 2 ** -24);
  assert.equal(float16ToFloat32(0x03ff), 1023 * 2 ** -24);
  assert.equal(float16ToFloat32(0x0400), 2 ** -14);
  assert.equal(float16ToFloat32(0x3c00), 1);
  assert.equal(float16ToFloat32(0xc000), -2);
  assert.equal(float16ToFloat32(0x7bff), 65504);
  assert.equal(float16ToFloat32(0x7c00), Infinity);
  assert.equal(float16ToFloat32(0xfc00), -Infinity);
  assert.ok(Number.isNaN(float16ToFloat32(0x7e00)));
  assert.ok(Object.is(float16ToFloat32(0x8000), -0));
});

test('float32ToFloat16 rounds to nearest even, overflows to inf, keeps subnormals', () => {
  assert.equal(float32ToFloat16(1 + 2 ** -11), 0x3c00, 'tie rounds down to even');
  assert.equal(float32ToFloat16(1 + 3 * 2 ** -11), 0x3c02, 'tie rounds up to even');
  assert.equal(float32ToFloat16(1 + 2 ** -11 + 2 ** -20), 0x3c01, 'above the tie rounds up');
  assert.equal(float32ToFloat16(65504), 0x7bff);
  assert.equal(float32ToFloat16(65519), 0x7bff);
  assert.equal(float32ToFloat16(65520), 0x7c00, '65520 ties to the even pattern, infinity');
  assert.equal(float32ToFloat16(1e6), 0x7c00);
  assert.equal(float32ToFloat16(-1e6), 0xfc00);
  assert.equal(float32ToFloat16(2 ** -24), 0x0001);
  assert.equal(float32ToFloat16(2 ** -25), 0x0000, 'half the smallest subnormal ties to zero');
  assert.equal(float32ToFloat16(2 ** -25 + 2 ** -40), 0x0001);
  assert.equal(float32ToFloat16(1.5 * 2 ** -24), 0x0002, 'subnormal tie rounds to even');
  assert.equal(float32ToFloat16(2.5 * 2 ** -24), 0x0002, 'subnormal tie rounds to even');
  assert.equal(float32ToFloat16(2 ** -14 - 2 ** -26), 0x0400, 'largest subnormal rounds up into the normals');
  assert.equal(float32ToFloat16(1e-10), 0x0000);
  assert.equal(float32ToFloat16(-0), 0x8000);
  assert.equal(float32ToFloat16(Infinity), 0x7c00);
  assert.ok(Number.isNaN(float16ToFloat32(float32ToFloat16(NaN))));
});

test('float32ToFloat16 agrees with a nearest-value search, and inverts float16ToFloat32', () => {
  // Every finite non-NaN half converts back to its own bit pattern.
  for (let bits = 0; bits < 0x10000; bits++) {
    if ((bits & 0x7c00) === 0x7c00 && (bits & 0x3ff) !== 0) continue; // NaN
    assert.equal(float32ToFloat16(float16ToFloat32(bits)), bits);
  }
  // Positive finite halves are ordered like their bit patterns 0..0x7bff, so
  // the nearest one can be found by bisection; ties go to the even pattern.
  const nearestHalf = (x: number): number => {
    if (x >= 65520) return 0x7c00;
    let low = 0;
    let high = 0x7bff;
    while (high - low > 1) {
      const mid = (low + high) >> 1;
      if (float16ToFloat32(mid) <= x) low = mid;
      else high = mid;
    }
    const below = x - float16ToFloat32(low);
    const above = float16ToFloat32(high) - x;
    if (below < above) return low;
    if (above < below) return high;
    return low % 2 === 0 ? low : high;
  };
  let seed = 12345;
  const random = (): number => (seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) / 2 ** 32;
  for (let i = 0; i < 20000; i++) {
    const x = Math.fround(random() * 2 ** (Math.floor(random() * 44) - 28));
    assert.equal(float32ToFloat16(x), nearestHalf(x), `x = ${x}`);
    assert.equal(float32ToFloat16(-x), nearestHalf(x) | 0x8000, `x = ${-x}`);
  }
});

test('float32ToBfloat16 rounds to nearest even and keeps NaN a NaN', () => {
  assert.equal(float32ToBfloat16(1), 0x3f80);
  assert.equal(float32ToBfloat16(1 + 2 ** -8), 0x3f80, 'tie rounds down to even');
  assert.equal(float32ToBfloat16(1 + 3 * 2 ** -8), 0x3f82, 'tie rounds up to even');
  assert.equal(float32ToBfloat16(1 + 2 ** -8 + 2 ** -20), 0x3f81);
  assert.equal(float32ToBfloat16(3.4028234663852886e38), 0x7f80, 'largest float32 rounds up to infinity');
  assert.equal(float32ToBfloat16(-Infinity), 0xff80);
  assert.equal(bfloat16ToFloat32(0x3f80), 1);
  assert.equal(bfloat16ToFloat32(0xc060), -3.5);
  assert.ok(Number.isNaN(bfloat16ToFloat32(float32ToBfloat16(NaN))));
});

test('reads the tiny UNet forward fixture', async () => {
  const file = await readSafetensorsFile(fixture('unet/tiny/forward.safetensors'));
  assert.deepEqual(file.tensors.get('sample')?.shape, [2, 3, 16, 16]);
  assert.deepEqual(tensorToInt64AsNumbers(file, 'timestep'), [17, 999]);
  assert.match(file.metadata.what, /UNet2DModel forward/);
  const sample = tensorToFloat32(file, 'sample');
  assert.equal(sample.length, 2 * 3 * 16 * 16);
  // Values read independently with Python's struct module.
  assert.equal(sample[0], Math.fround(-0.6027625203132629));
  assert.equal(sample[1], Math.fround(-0.12083420902490616));
  assert.equal(sample[sample.length - 1], Math.fround(0.49513188004493713));
});

test('writeSafetensorsFile writes atomically and leaves no temporary file', async () => {
  const directory = await mkdtemp(join(tmpdir(), 'marble-safetensors-'));
  try {
    const path = join(directory, 'weights.safetensors');
    await writeSafetensorsFile(path, { w: { dtype: 'BF16', shape: [2], data: new Float32Array([1, -2]) } }, { step: '3' });
    assert.deepEqual(await readdir(directory), ['weights.safetensors']);
    const file = await readSafetensorsFile(path);
    assert.deepEqual(tensorToFloat32(file, 'w'), new Float32Array([1, -2]));
    assert.deepEqual(file.metadata, { step: '3' });
  } finally {
    await rm(directory, { recursive: true, force: true });
  }
});

test('a missing file is a SafetensorsError naming the path', async () => {
  const path = fixture('does/not/exist.safetensors');
  await assert.rejects(readSafetensorsFile(path), (err: unknown) => {
    assert.ok(err instanceof SafetensorsError);
    assert.ok(err.message.includes(path));
    assert.match(err.message, /ENOENT/);
    return true;
  });
});

test('rejects files too short to hold the header length', () => {
  assertRejects(() => parseSafetensors(new Uint8Array(5), 'short.safetensors'), /short\.safetensors: file is 5 bytes, shorter than/);
  assertRejects(() => parseSafetensors(new Uint8Array(0)), /file is 0 bytes/);
});

test('rejects header lengths that are zero, huge or past the end of the file', () => {
  const zero = new Uint8Array(16);
  assertRejects(() => parseSafetensors(zero), /header length is 0/);

  const pastEnd = rawFile({});
  new DataView(pastEnd.buffer).setBigUint64(0, 1000n, true);
  assertRejects(() => parseSafetensors(pastEnd), /header length 1000 runs past the end of the file/);

  for (const hugeLength of [200_000_000n, 2n ** 40n, 2n ** 64n - 1n]) {
    const huge = rawFile({});
    new DataView(huge.buffer).setBigUint64(0, hugeLength, true);
    assertRejects(() => parseSafetensors(huge), new RegExp(`header length ${hugeLength} exceeds`));
  }
});

test('rejects headers that are not UTF-8 JSON objects', () => {
  assertRejects(() => parseSafetensors(rawFile(null, undefined, '{"a": ')), /header is not valid UTF-8 JSON/);
  const badUtf8 = rawFile(null, undefined, '{"x":1}');
  badUtf8[10] = 0xff;
  assertRejects(() => parseSafetensors(badUtf8), /header is not valid UTF-8 JSON/);
  assertRejects(() => parseSafetensors(rawFile([1, 2])), /header is not a JSON object/);
  assertRejects(() => parseSafetensors(rawFile(null, undefined, '"text"')), /header is not a JSON object/);
  assertRejects(() => parseSafetensors(rawFile({ __metadata__: { n: 1 } })), /__metadata__ value "n" is not a string/);
});

test('rejects malformed tensor entries', () => {
  const entry = (fields: Record<string, unknown>): Uint8Array =>
    rawFile({ t: { dtype: 'F32', shape: [2], data_offsets: [0, 8], ...fields } }, new Uint8Array(8));
  assertRejects(() => parseSafetensors(rawFile({ t: 5 })), /tensor "t" entry is not an object/);
  assertRejects(() => parseSafetensors(entry({ dtype: 'F128' })), /tensor "t" has unknown dtype "F128"/);
  assertRejects(() => parseSafetensors(entry({ dtype: 'toString' })), /unknown dtype "toString"/);
  assertRejects(() => parseSafetensors(entry({ shape: [-2] })), /tensor "t" shape must be an array of non-negative integers/);
  assertRejects(() => parseSafetensors(entry({ shape: [2.5] })), /shape must be an array of non-negative integers/);
  assertRejects(() => parseSafetensors(entry({ shape: ['2'] })), /shape must be an array of non-negative integers/);
  assertRejects(() => parseSafetensors(entry({ shape: 2 })), /shape must be an array of non-negative integers/);
  assertRejects(() => parseSafetensors(entry({ data_offsets: [8, 0] })), /data_offsets must be two non-negative integers/);
  assertRejects(() => parseSafetensors(entry({ data_offsets: [-8, 0] })), /data_offsets must be two non-negative integers/);
  assertRejects(() => parseSafetensors(entry({ data_offsets: [0, 8, 16] })), /data_offsets must be two non-negative integers/);
  assertRejects(() => parseSafetensors(entry({ data_offsets: [0, 2 ** 60] })), /data_offsets must be two non-negative integers/);
});

test('rejects offsets past the data buffer, including a file truncated mid-data', () => {
  const whole = sampleFile();
  const truncated = whole.subarray(0, whole.length - 10);
  assertRejects(() => parseSafetensors(truncated, 'cut.safetensors'), /cut\.safetensors: tensor "weight" data_offsets \[12, 36\] extend past the end of the 26-byte data buffer; the file may be truncated/);

  const outOfRange = rawFile({ t: { dtype: 'F32', shape: [2 ** 30], data_offsets: [0, 2 ** 32] } }, new Uint8Array(8));
  assertRejects(() => parseSafetensors(outOfRange), /tensor "t" data_offsets \[0, 4294967296\] extend past the end of the 8-byte data buffer/);
});

test('rejects byte lengths that do not match shape and dtype', () => {
  const file = rawFile({ t: { dtype: 'F16', shape: [3], data_offsets: [0, 8] } }, new Uint8Array(8));
  assertRejects(() => parseSafetensors(file), /tensor "t" has 8 bytes but shape \[3\] of F16 needs 6/);
});

test('rejects shapes whose element count overflows, without allocating', () => {
  for (const shape of [[2 ** 40, 2 ** 40], [2 ** 30, 2 ** 30, 2 ** 30], [2 ** 52, 4]]) {
    const file = rawFile({ t: { dtype: 'F32', shape, data_offsets: [0, 8] } }, new Uint8Array(8));
    assertRejects(() => parseSafetensors(file), /tensor "t" element count of shape .* overflows/);
  }
  // Safe as an element count, but not once multiplied by the dtype size.
  const bytesOverflow = rawFile({ t: { dtype: 'I64', shape: [2 ** 51], data_offsets: [0, 8] } }, new Uint8Array(8));
  assertRejects(() => parseSafetensors(bytesOverflow), /overflows/);
  // A zero dimension makes the tensor empty, however large the others.
  const empty = parseSafetensors(rawFile({ t: { dtype: 'F32', shape: [2 ** 40, 2 ** 40, 0], data_offsets: [0, 0] } }));
  assert.equal(tensorToFloat32(empty, 't').length, 0);
});

test('rejects overlapping tensors but tolerates gaps and trailing bytes', () => {
  const overlapping = rawFile({
    a: { dtype: 'F32', shape: [2], data_offsets: [0, 8] },
    b: { dtype: 'F32', shape: [2], data_offsets: [4, 12] },
  }, new Uint8Array(12));
  assertRejects(() => parseSafetensors(overlapping), /data of tensor "a" \[0, 8\] overlaps tensor "b" \[4, 12\]/);

  const aliased = rawFile({
    z: { dtype: 'F32', shape: [2], data_offsets: [0, 8] },
    y: { dtype: 'I32', shape: [2], data_offsets: [0, 8] },
  }, new Uint8Array(8));
  assertRejects(() => parseSafetensors(aliased), /overlaps/);

  const gappy = rawFile({
    a: { dtype: 'F32', shape: [1], data_offsets: [4, 8] },
    b: { dtype: 'F32', shape: [1], data_offsets: [12, 16] },
  }, new Uint8Array(20));
  assert.equal(parseSafetensors(gappy).tensors.size, 2);
});

test('conversions reject dtypes they do not handle and missing tensors', () => {
  const file = parseSafetensors(rawFile({
    d: { dtype: 'F64', shape: [1], data_offsets: [0, 8] },
    u: { dtype: 'U8', shape: [8], data_offsets: [8, 16] },
    big: { dtype: 'I64', shape: [1], data_offsets: [16, 24] },
  }, new Uint8Array(24).fill(0x7f)));
  assertRejects(() => tensorToFloat32(file, 'd'), /dtype F64 of tensor "d" is not supported \(f32, f16, bf16\)/);
  assertRejects(() => tensorToFloat32(file, 'u'), /dtype U8 of tensor "u" is not supported/);
  assertRejects(() => tensorToInt64AsNumbers(file, 'd'), /dtype F64 of tensor "d" is not supported \(i64, i32\)/);
  assertRejects(() => tensorToInt64AsNumbers(file, 'big'), /tensor "big" value 9187201950435737471 is not a safe integer/);
  assertRejects(() => tensorToFloat32(file, 'nope'), /no tensor "nope"/);
});
