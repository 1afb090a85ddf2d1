// UNet2DModel: a loaded diffusers UNet on one backend, and loadUNet().
import { BackendError, ConfigError, InputError, MarbleError, MemoryLimitError, WeightsError } from '../errors.js';
import { DTYPES, EngineStatus, dtypeUnsupported, split64 } from '../backend/backend.js';
import type { Backend, BackendName, CapturedTensor, DType, EngineModel, ParamInfo } from '../backend/backend.js';
import { host } from '../host.js';
import type { WasmOptions } from '../host.js';
import { classConditioning, encodeEngineConfig, parseUNet2DConfig, timeEmbedDim } from './config.js';
import type { UNet2DConfig } from './config.js';
import type { SafetensorsHeader } from './safetensors.js';
import { fileSource, readJson, throwIfAborted } from './source.js';
import type { FileSource, ModelSource, SourceOptions } from './source.js';
import { streamWeights } from './weights_stream.js';

export interface LoadOptions {
  /**
   * 'auto' picks the native cpu addon when it is built, else wasm. A Backend
   * object (createBackend(), or marble-diffusion/wasm's createWasmBackend())
   * is used as it is, and the caller keeps ownership of it.
   */
  backend?: 'auto' | BackendName | Backend;
  /**
   * Threads for the cpu and wasm backends (default: the machine's cores; 1:
   * the single-threaded path). The cpu addon's pool is one per process, so
   * the last value set wins there.
   */
  threads?: number;
  /** Refuse forwards whose activations need more than this many bytes (checked before allocating). */
  memoryLimitBytes?: number;
  /**
   * Keep the unpacked (torch-layout) copy of the conv and linear weights next
   * to the packed one the kernels read. Needed to train, repack, export or
   * read the weights back; without it a model holds its weights once, about
   * half the memory. Default: true for loadUNet and createUNet, false for
   * loadPipeline (a pipeline samples). See UNet2DModel.releaseWeights().
   */
  keepWeights?: boolean;
  /**
   * The element type of the conv and linear GEMMs (default 'float32'). On
   * cuda, 'float16' and 'bfloat16' pack those weights once in that type and
   * run the GEMMs on tensor cores with float32 accumulation, rounding the
   * activations as they are read; everything else stays float32. Such a
   * model trains in mixed precision (float32 weights and optimizer state;
   * the forward's GEMMs in its type, the backward's in bfloat16, all on
   * tensor cores). The cpu and
   * wasm backends compute in float32 only (another dtype is a BackendError).
   */
  dtype?: DType;
  /** Which wasm builds the wasm backend runs (precompiled modules for workerd, relaxed SIMD). */
  wasm?: WasmOptions;
}

/**
 * A sampling run kept on the model's device (every engine backend): see
 * UNet2DModel.startSampling. Calls queue behind the model's other calls.
 */
export interface DeviceSampling {
  /** The initial sample: from the host, or Philox draw `draw` under `seed` made on the device. */
  init(sample: Float32Array | null, seed: bigint, draw: bigint): Promise<void>;
  /**
   * timesteps.length steps, queued on the device without waiting for it (see
   * EngineModel.sampleSteps). Resolves to the last step's predicted x0 when wantX0.
   */
  steps(
    timesteps: Float32Array,
    coefficients: Float32Array,
    seed: bigint,
    firstDraw: number,
    hostNoise: Float32Array | null,
    wantX0: boolean,
  ): Promise<Float32Array | undefined>;
  /**
   * Solver steps (EngineModel.sampleSolverSteps), or undefined where the
   * engine has none: the multistep history stays on the device.
   */
  solverSteps?(
    timesteps: Float32Array,
    inputScales: Float32Array,
    records: Float32Array,
    seed: bigint,
    firstDraw: number,
    hostNoise: Float32Array | null,
    wantX0: boolean,
  ): Promise<Float32Array | undefined>;
  /** The current sample, NCHW. */
  read(): Promise<Float32Array>;
  /** Forward passes so far: replayed from a recording (CUDA graphs) or run directly. */
  stats(): { replays: number; directForwards: number };
  /** Frees the run's buffers (after its queued calls). */
  end(): Promise<void>;
}

export interface ForwardOptions {
  /** Also return the intermediates (temb, conv_in, down.i, mid, up.i), NCHW, for debugging and tests. */
  capture?: boolean;
}

/**
 * The engine takes sizes as int32: a larger or fractional number would be
 * truncated on the way (2^32 + 1 becomes 1) and a run would silently do
 * another size's work. Checked before any engine call that takes a size.
 */
function checkSize(what: string, sizes: readonly number[]): void {
  if (!sizes.every((d) => Number.isInteger(d) && d >= 1 && d <= 0x7fffffff))
    throw new InputError(`${what}: batch, height and width must be positive integers below 2^31, got ${sizes.join(', ')}`);
}

/**
 * Activation memory a forward may use unless the caller says otherwise: three
 * quarters of the machine's memory (wasm is bounded by its 4 GB address space
 * anyway). Checked before allocating, so an oversized batch is an error, not
 * an out-of-memory kill. Where the runtime does not say (browsers, workerd),
 * 3 GiB: wasm32's address space less room for the weights.
 */
export function defaultMemoryLimit(): number {
  const total = host().totalMemoryBytes();
  return total === null ? 3 * 2 ** 30 : Math.floor(total * 0.75);
}

/** Maps an engine failure to the typed error it stands for. */
export function engineError(e: unknown): Error {
  if (e instanceof MarbleError) return e;
  const status = (e as { status?: number }).status;
  const message = (e as Error).message ?? String(e);
  switch (status) {
    case EngineStatus.InvalidArgument:
      return new InputError(message);
    case EngineStatus.OutOfMemory:
      return new MemoryLimitError(message);
    case EngineStatus.Unsupported:
      return new ConfigError(`config.json: ${message}`);
    case EngineStatus.State:
    case EngineStatus.Device:
      return new BackendError(message);
    default:
      return e instanceof Error ? e : new Error(message);
  }
}

export class UNet2DModel {
  readonly config: UNet2DConfig;
  readonly backend: Backend;
  readonly parameterCount: number;
  /** The element type its conv and linear GEMMs run in (LoadOptions.dtype). */
  readonly dtype: DType;
  private engine: EngineModel | null;
  private queue: Promise<unknown> = Promise.resolve();
  private lastCaptures: CapturedTensor[] = [];

  /** Whether dispose() also disposes the backend (one loadUNet made for this model). */
  private readonly ownsBackend: boolean;

  constructor(
    config: UNet2DConfig,
    backend: Backend,
    engine: EngineModel,
    parameterCount: number,
    ownsBackend = false,
    dtype: DType = 'float32',
  ) {
    this.config = config;
    this.backend = backend;
    this.engine = engine;
    this.parameterCount = parameterCount;
    this.dtype = dtype;
    this.ownsBackend = ownsBackend;
  }

  /**
   * The UNet's output (the predicted noise, for epsilon models) for a batch.
   * @param sample NCHW float32, `shape` = [B, C, H, W]
   * @param timesteps one per sample, or one for all
   * @param classLabels class indices (num_class_embeds models), or per-sample values for class_embed_type
   *   timestep, or B x time_embed_dim values for identity
   */
  forward(
    sample: Float32Array,
    shape: readonly number[],
    timesteps: number | readonly number[],
    classLabels?: readonly number[],
    options: ForwardOptions = {},
  ): Promise<Float32Array> {
    const run = () => this.forwardNow(sample, shape, timesteps, classLabels, options);
    const result = this.queue.then(run, run);
    this.queue = result.catch(() => undefined);
    return result;
  }

  /**
   * Opens a sampling run on the model's device, or resolves to null when the
   * backend has none (then the sampler goes through forward()). The sampler's inputs
   * are its own: shape [B, C, H, W] and class labels were checked by it.
   */
  async startSampling(
    shape: readonly [number, number, number, number],
    classCond: Float32Array | null,
    guidanceScale = 1,
  ): Promise<DeviceSampling | null> {
    checkSize('sample', shape);
    const engine = this.live();
    const { sampleBegin, sampleInit, sampleSteps, sampleSolverSteps, sampleRead, sampleStats, sampleEnd } = engine;
    if (!sampleBegin || !sampleInit || !sampleSteps || !sampleRead || !sampleStats || !sampleEnd) return null;
    const call = <T>(fn: () => T | Promise<T>): Promise<T> => {
      const run = async () => {
        try {
          return await fn();
        } catch (e) {
          throw engineError(e);
        }
      };
      const result = this.queue.then(run, run);
      this.queue = result.catch(() => undefined);
      return result;
    };
    await call(() => sampleBegin.call(engine, shape[0], shape[1], shape[2], shape[3], classCond, guidanceScale));
    return {
      init: (sample, seed, draw) =>
        call(() => sampleInit.call(engine, sample, ...split64(seed, 'seed'), ...split64(draw, 'draw'))),
      steps: (timesteps, coefficients, seed, firstDraw, hostNoise, wantX0) =>
        call(() =>
          sampleSteps.call(engine, timesteps.length, timesteps, coefficients, ...split64(seed, 'seed'), firstDraw, hostNoise, wantX0),
        ),
      solverSteps: sampleSolverSteps
        ? (timesteps, inputScales, records, seed, firstDraw, hostNoise, wantX0) =>
            call(() =>
              sampleSolverSteps.call(engine, timesteps.length, timesteps, inputScales, records, ...split64(seed, 'seed'), firstDraw, hostNoise, wantX0),
            )
        : undefined,
      read: () => call(() => sampleRead.call(engine)),
      stats: () => sampleStats.call(engine),
      end: () => call(() => sampleEnd.call(engine)),
    };
  }

  /** The parameter table: diffusers' names and shapes, in the engine's order. */
  parameters(): ParamInfo[] {
    try {
      return this.live().paramTable();
    } catch (e) {
      throw engineError(e);
    }
  }

  /** Intermediates of the last forward called with { capture: true }. */
  captures(): CapturedTensor[] {
    return this.lastCaptures;
  }

  /** Bytes of activation memory a forward at this size needs. */
  activationBytes(batch: number, height: number, width: number): number {
    checkSize('activationBytes', [batch, height, width]);
    try {
      return this.live().planBytes(batch, height, width);
    } catch (e) {
      throw engineError(e);
    }
  }

  /**
   * Frees the unpacked copy of the conv and linear weights, keeping only the
   * packed one the kernels read: a model that only samples needs half the
   * memory. Afterwards it still samples, but training, repacking and reading
   * those weights back fail with a typed error. Returns the bytes freed.
   */
  releaseWeights(): number {
    try {
      return this.live().releaseHostWeights();
    } catch (e) {
      throw engineError(e);
    }
  }

  /** Frees the model (after a forward still in flight) and the worker threads its backend started. */
  dispose(): void {
    if (!this.engine) return;
    this.engine.dispose();
    this.engine = null;
    if (this.ownsBackend) this.backend.dispose?.();
  }

  private live(): EngineModel {
    if (!this.engine) throw new BackendError('this UNet2DModel has been disposed');
    return this.engine;
  }

  private async forwardNow(
    sample: Float32Array,
    shape: readonly number[],
    timesteps: number | readonly number[],
    classLabels: readonly number[] | undefined,
    options: ForwardOptions,
  ): Promise<Float32Array> {
    const engine = this.live();
    if (!(sample instanceof Float32Array)) throw new InputError('sample must be a Float32Array');
    if (!Array.isArray(shape) || shape.length !== 4 || !shape.every((d) => Number.isInteger(d) && d >= 1))
      throw new InputError(`shape must be [batch, channels, height, width] of positive integers, got ${JSON.stringify(shape)}`);
    const [batch, channels, height, width] = shape as [number, number, number, number];
    if (channels !== this.config.inChannels)
      throw new InputError(`sample has ${channels} channels but the model expects in_channels = ${this.config.inChannels}`);
    const numel = batch * channels * height * width;
    if (sample.length !== numel)
      throw new InputError(`sample has ${sample.length} values but shape ${JSON.stringify(shape)} needs ${numel}`);
    for (let i = 0; i < sample.length; i++)
      if (!Number.isFinite(sample[i])) throw new InputError(`sample contains ${sample[i]} at index ${i}`);

    const tList = typeof timesteps === 'number' ? [timesteps] : Array.from(timesteps);
    if (tList.length !== 1 && tList.length !== batch)
      throw new InputError(`timesteps must be one number or one per sample (${batch}), got ${tList.length}`);
    if (!tList.every((t) => typeof t === 'number' && Number.isFinite(t)))
      throw new InputError('timesteps must be finite numbers');
    const tArray = new Float32Array(batch).fill(tList[0]!);
    if (tList.length === batch) tArray.set(tList);

    const conditioning = classConditioning(this.config);
    let classCond: Float32Array | null = null;
    if (conditioning === 'none') {
      if (classLabels !== undefined && classLabels.length > 0)
        throw new InputError('class labels were given but this model is not class-conditional');
    } else {
      if (classLabels === undefined)
        throw new InputError('this model is class-conditional: pass class labels (one per sample)');
      const expected = conditioning === 'identity' ? batch * timeEmbedDim(this.config) : batch;
      if (classLabels.length !== expected)
        throw new InputError(`expected ${expected} class conditioning values, got ${classLabels.length}`);
      if (conditioning === 'labels') {
        const n = this.config.numClassEmbeds!;
        classLabels.forEach((label, i) => {
          if (!Number.isInteger(label) || label < 0 || label >= n)
            throw new InputError(`class label ${label} at index ${i} is not an integer in [0, ${n})`);
        });
      } else if (!classLabels.every((v) => Number.isFinite(v))) {
        throw new InputError('class conditioning values must be finite');
      }
      classCond = Float32Array.from(classLabels);
    }

    const outSize = batch * this.config.outChannels * height * width;
    try {
      engine.setCapture(options.capture === true);
      const out = await engine.forward(sample, batch, channels, height, width, tArray, classCond, outSize);
      this.lastCaptures = options.capture ? engine.captures() : [];
      return out;
    } catch (e) {
      throw engineError(e);
    }
  }
}

/**
 * The model folder of a source: the source itself when it has config.json (a
 * UNet2DModel folder), else its unet/ (a pipeline folder).
 */
export async function resolveModelSource(source: FileSource, signal?: AbortSignal): Promise<{ model: FileSource; config: unknown }> {
  // A pipeline says so with model_index.json: then unet/ is read without
  // probing config.json first (a 404 a page's console would show).
  if ((await readJson(source, 'model_index.json', signal)) !== null) {
    const config = await readJson(source.sub('unet'), 'config.json', signal);
    if (config !== null) return { model: source.sub('unet'), config };
  }
  const bare = await readJson(source, 'config.json', signal);
  if (bare !== null) return { model: source, config: bare };
  const unet = source.sub('unet');
  const inPipeline = await readJson(unet, 'config.json', signal);
  if (inPipeline !== null) return { model: unet, config: inPipeline };
  throw new ConfigError(
    `${source.describe('')} is neither a UNet2DModel folder (config.json) nor a pipeline folder (unet/config.json)`,
  );
}

// Checkpoints saved before diffusers 0.14 name attention weights differently;
// diffusers renames them on load, and so do we.
const LEGACY_ATTENTION_NAMES: [RegExp, string][] = [
  [/\.query\.(weight|bias)$/, '.to_q.$1'],
  [/\.key\.(weight|bias)$/, '.to_k.$1'],
  [/\.value\.(weight|bias)$/, '.to_v.$1'],
  [/\.proj_attn\.(weight|bias)$/, '.to_out.0.$1'],
];

function canonicalName(name: string): string {
  for (const [pattern, replacement] of LEGACY_ATTENTION_NAMES) if (pattern.test(name)) return name.replace(pattern, replacement);
  return name;
}

/** Checks weights against the parameter table; one error lists every problem. */
function matchWeights(
  table: { name: string; shape: number[] }[],
  weights: SafetensorsHeader,
  file: string,
): Map<string, string> {
  const byCanonical = new Map<string, string>();
  for (const stored of weights.tensors.keys()) byCanonical.set(canonicalName(stored), stored);
  const missing: string[] = [];
  const misshaped: string[] = [];
  const expected = new Set<string>();
  for (const { name, shape } of table) {
    expected.add(name);
    const stored = byCanonical.get(name);
    if (stored === undefined) {
      missing.push(name);
      continue;
    }
    const info = weights.tensors.get(stored)!;
    const sameNumel = info.shape.reduce((a, b) => a * b, 1) === shape.reduce((a, b) => a * b, 1);
    // Old checkpoints store attention projections as 1x1 convs [C, C, 1, 1]; same data.
    const squeezed = info.shape.filter((d, i) => i < 2 || d !== 1);
    const same = JSON.stringify(info.shape) === JSON.stringify(shape) || (sameNumel && JSON.stringify(squeezed) === JSON.stringify(shape));
    if (!same) misshaped.push(`${name}: expected [${shape.join(', ')}], found [${info.shape.join(', ')}]`);
    else if (!['F32', 'F16', 'BF16'].includes(info.dtype))
      misshaped.push(`${name}: dtype ${info.dtype} is not supported (F32, F16, BF16)`);
  }
  const unexpected = [...byCanonical.keys()].filter((n) => !expected.has(n));
  if (missing.length || unexpected.length || misshaped.length) {
    const parts: string[] = [];
    if (missing.length) parts.push(`missing (${missing.length}): ${missing.join(', ')}`);
    if (unexpected.length) parts.push(`unexpected (${unexpected.length}): ${unexpected.join(', ')}`);
    if (misshaped.length) parts.push(`wrong shape or dtype (${misshaped.length}): ${misshaped.join('; ')}`);
    throw new WeightsError(
      `${file} does not match the config's parameter table:\n  ${parts.join('\n  ')}`,
      missing,
      unexpected,
      misshaped,
    );
  }
  return byCanonical;
}

/**
 * Creates the engine model for a config on the requested backend, lets
 * `fill` set every parameter (by index in the parameter table), then packs
 * the weights. Any failure disposes the engine and surfaces as a typed error.
 */
async function buildUNet(
  config: UNet2DConfig,
  options: LoadOptions,
  fill: (engine: EngineModel, table: ParamInfo[]) => Promise<void> | void,
): Promise<UNet2DModel> {
  const dtype = options.dtype ?? 'float32';
  if (!DTYPES.includes(dtype))
    throw new InputError(`dtype: unknown value ${JSON.stringify(dtype)} (expected one of ${DTYPES.map((d) => `'${d}'`).join(', ')})`);
  const given = typeof options.backend === 'object' ? options.backend : null;
  const backend =
    given ??
    (await host().createBackend((options.backend as 'auto' | BackendName | undefined) ?? 'auto', {
      threads: options.threads,
      wasm: options.wasm,
    }));
  const disposeBackend = () => {
    if (!given) backend.dispose?.();
  };
  let engine: EngineModel;
  try {
    if (dtype !== 'float32' && backend.name !== 'cuda') throw dtypeUnsupported(backend.name, dtype);
    engine = backend.createModel(encodeEngineConfig(config), dtype);
  } catch (e) {
    disposeBackend();
    throw engineError(e);
  }
  try {
    const table = engine.paramTable();
    // The weights are allocated (natively: reserved, not yet touched) but
    // not filled: refuse a model whose weights alone exceed the machine
    // before `fill` writes them and the process is killed for memory.
    // Kept weights coexist with their packed copy (about as large).
    const copies = options.keepWeights === false ? 1 : 2;
    const weightBytes = 4 * copies * table.reduce((n, p) => n + p.shape.reduce((a, b) => a * b, 1), 0);
    const machineLimit = defaultMemoryLimit();
    if (weightBytes > machineLimit)
      throw new MemoryLimitError(
        `the model's weights need ${Math.ceil(weightBytes / 2 ** 20)} MB, over the ${Math.floor(machineLimit / 2 ** 20)} MB ` +
          'marble may use (three quarters of this machine\'s memory)',
      );
    await fill(engine, table);
    // Before finalize: each weight is freed as soon as its layer is packed, so
    // the two copies never coexist whole (wasm memory cannot shrink later).
    if (options.keepWeights === false) engine.releaseHostWeights();
    engine.finalize();
    engine.setMemoryLimit(options.memoryLimitBytes ?? defaultMemoryLimit());
    const parameterCount = table.reduce((n, p) => n + p.shape.reduce((a, b) => a * b, 1), 0);
    return new UNet2DModel(config, backend, engine, parameterCount, !given, dtype);
  } catch (e) {
    engine.dispose();
    disposeBackend();
    throw engineError(e);
  }
}

/**
 * A UNet with freshly initialised weights, as torch initialises a new
 * UNet2DModel: conv and linear weights and biases U(-1/sqrt(fan_in), 1/sqrt(fan_in)),
 * GroupNorm weight 1 and bias 0, embeddings N(0, 1). For training from scratch
 * and for benchmarks.
 */
export async function createUNet(
  configJson: unknown,
  options: LoadOptions & { seed?: number } = {},
): Promise<UNet2DModel> {
  const config = parseUNet2DConfig(configJson);
  return buildUNet(config, options, (engine, table) => {
    // mulberry32: small, seeded, good enough for an initialisation
    let state = (options.seed ?? 0) >>> 0;
    const uniform = () => {
      state = (state + 0x6d2b79f5) >>> 0;
      let t = state;
      t = Math.imul(t ^ (t >>> 15), t | 1);
      t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
      return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
    };
    // fan_in of a bias is its layer's weight's fan_in
    const fanIn = new Map<string, number>();
    for (const { name, shape } of table)
      if (name.endsWith('.weight') && shape.length >= 2)
        fanIn.set(name.slice(0, -'.weight'.length), shape.slice(1).reduce((x, y) => x * y, 1));
    table.forEach(({ name, shape }, index) => {
      const data = new Float32Array(shape.reduce((x, y) => x * y, 1));
      const layer = name.slice(0, name.lastIndexOf('.'));
      const isNorm = /norm/.test(layer) && shape.length === 1;
      if (isNorm) {
        if (name.endsWith('.weight')) data.fill(1);
      } else if (fanIn.has(layer)) {
        const bound = 1 / Math.sqrt(fanIn.get(layer)!);
        for (let i = 0; i < data.length; i++) data[i] = (2 * uniform() - 1) * bound;
      } else {
        // embedding tables and the fourier projection: N(0, 1) by Box-Muller
        for (let i = 0; i < data.length; i++)
          data[i] = Math.sqrt(-2 * Math.log(1 - uniform())) * Math.cos(2 * Math.PI * uniform());
      }
      engine.setParam(index, data);
    });
  });
}

/**
 * Loads a diffusers UNet2DModel (or the unet/ of a pipeline) from a folder
 * path, a URL, or a map of file names to bytes, onto a backend. The weights
 * stream into the engine as they arrive (see weights_stream.ts).
 */
export async function loadUNet(source: ModelSource, options: LoadOptions & SourceOptions = {}): Promise<UNet2DModel> {
  const files = fileSource(source, options);
  const { model, config: json } = await resolveModelSource(files, options.signal);
  return loadUNetFrom(model, json, options);
}

/** loadUNet for a model folder already found (its config.json read). */
export async function loadUNetFrom(model: FileSource, json: unknown, options: LoadOptions & SourceOptions): Promise<UNet2DModel> {
  const config = parseUNet2DConfig(json);
  const weightsName = 'diffusion_pytorch_model.safetensors';
  const weightsPath = model.describe(weightsName);
  const weights = await model.open(weightsName, options.signal);
  if (!weights) throw new WeightsError(`${weightsPath} is missing (marble reads safetensors weights, not .bin pickles)`);
  throwIfAborted(options.signal);
  return buildUNet(config, options, (engine, table) =>
    streamWeights(weights, weightsPath, engine, table, (header) => matchWeights(table, header, weightsPath), {
      ...options,
      progressName: weightsName,
    }),
  );
}
