// Loads a safetensors file into an engine model as its bytes arrive, so a
// large download is never held whole: the header is parsed as soon as it is
// in, checked against the model's parameter table (before any weight is
// read), and each tensor goes to the engine once its own bytes are complete.
// Peak memory beyond the engine's weights is one tensor plus one chunk.
import { SafetensorsError, WeightsError } from '../errors.js';
import type { EngineModel, ParamInfo } from '../backend/backend.js';
import { decodeFloatTensor, parseSafetensorsHeader, safetensorsHeaderLength } from './safetensors.js';
import type { SafetensorsHeader, TensorInfo } from './safetensors.js';
import { throwIfAborted } from './source.js';
import type { OpenedFile, SourceOptions } from './source.js';

/** Grows until it holds `length` bytes; then the bytes are taken. */
class Accumulator {
  private buffer = new Uint8Array(0);
  filled = 0;
  want(length: number): void {
    if (this.buffer.length < length) {
      const grown = new Uint8Array(length);
      grown.set(this.buffer.subarray(0, this.filled));
      this.buffer = grown;
    }
  }
  push(bytes: Uint8Array): void {
    this.buffer.set(bytes, this.filled);
    this.filled += bytes.length;
  }
  /** The first bytes, without taking them. */
  peek(length: number): Uint8Array {
    return this.buffer.subarray(0, length);
  }
  take(): Uint8Array {
    const out = this.buffer.subarray(0, this.filled);
    this.buffer = new Uint8Array(0);
    this.filled = 0;
    return out;
  }
}

/**
 * `match` checks the header against the parameter table (throwing the one
 * error that lists every problem) and returns each table entry's stored name.
 */
export async function streamWeights(
  file: OpenedFile,
  what: string,
  engine: EngineModel,
  table: ParamInfo[],
  match: (header: SafetensorsHeader) => Map<string, string>,
  options: SourceOptions & { progressName?: string } = {},
): Promise<void> {
  const { signal, onProgress } = options;
  const indexOf = new Map(table.map(({ name }, index) => [name, index]));
  const chunks: AsyncIterable<Uint8Array> | Iterable<Uint8Array> =
    file.body instanceof Uint8Array ? [file.body] : readerChunks(file.body, signal);

  let position = 0; // bytes of the file consumed so far
  const prefix = new Accumulator();
  let headerLength: number | null = null;
  let header: SafetensorsHeader | null = null;
  // The tensors to read, in file order, each with its parameter index.
  let pending: { info: TensorInfo; index: number }[] = [];
  let next = 0;
  const current = new Accumulator();
  let lastReport = 0;

  const report = () => onProgress?.({ file: options.progressName ?? what, loaded: position, total: file.size });

  for await (const chunk of chunks) {
    throwIfAborted(signal);
    let at = 0; // within chunk
    // Gather the 8-byte length, then the header itself.
    while (!header && at < chunk.length) {
      const needed = headerLength === null ? 8 : 8 + headerLength;
      prefix.want(needed);
      const take = Math.min(chunk.length - at, needed - prefix.filled);
      prefix.push(chunk.subarray(at, at + take));
      at += take;
      position += take;
      if (prefix.filled < needed) break;
      if (headerLength === null) {
        headerLength = safetensorsHeaderLength(prefix.peek(8), what);
        continue;
      }
      header = parseSafetensorsHeader(prefix.take(), file.size, what);
      const stored = match(header);
      pending = table
        .map(({ name }) => ({ info: header!.tensors.get(stored.get(name)!)!, index: indexOf.get(name)! }))
        .sort((a, b) => a.info.begin - b.info.begin);
    }
    // Hand each tensor to the engine as soon as its bytes are complete.
    while (at < chunk.length && next < pending.length) {
      const { info, index } = pending[next]!;
      if (position < info.begin) {
        const skip = Math.min(info.begin - position, chunk.length - at);
        at += skip;
        position += skip;
        continue;
      }
      const length = info.end - info.begin;
      current.want(length);
      const take = Math.min(length - current.filled, chunk.length - at);
      current.push(chunk.subarray(at, at + take));
      at += take;
      position += take;
      if (current.filled === length) {
        const data = decodeFloatTensor(info.dtype, current.take(), info.name);
        for (let i = 0; i < data.length; i++)
          if (!Number.isFinite(data[i])) throw new WeightsError(`${what}: ${table[index]!.name} contains ${data[i]}`);
        engine.setParam(index, data);
        next++;
      }
    }
    position += chunk.length - at;
    if (onProgress && (position - lastReport >= 1 << 18 || position === file.size)) {
      lastReport = position;
      report();
    }
  }
  throwIfAborted(signal);
  if (!header) throw new SafetensorsError(`${what}: the file ends (${position} bytes) before its header does; it may be truncated`);
  // Empty tensors have no bytes to wait for.
  while (next < pending.length && pending[next]!.info.end === pending[next]!.info.begin) {
    engine.setParam(pending[next]!.index, new Float32Array(0));
    next++;
  }
  if (next < pending.length)
    throw new SafetensorsError(
      `${what}: the file ends at byte ${position}, inside tensor ${JSON.stringify(pending[next]!.info.name)} ` +
        `(bytes ${pending[next]!.info.begin}-${pending[next]!.info.end}); it is truncated`,
    );
  if (position !== lastReport) report();
}

async function* readerChunks(stream: ReadableStream<Uint8Array>, signal?: AbortSignal): AsyncGenerator<Uint8Array> {
  const reader = stream.getReader();
  const onAbort = () => void reader.cancel(signal?.reason).catch(() => undefined);
  signal?.addEventListener('abort', onAbort, { once: true });
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) return;
      if (value.length > 0) yield value;
    }
  } finally {
    signal?.removeEventListener('abort', onAbort);
    reader.releaseLock();
  }
}
