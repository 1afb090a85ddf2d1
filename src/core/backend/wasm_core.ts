// The wasm backend over an instantiated marble.wasm or marble-threads.wasm,
// with no Node built-ins so that browsers, Deno and workerd can use it (see
// src/wasm.ts). Every call goes through the engine's C ABI (api.h).
//
// marble.wasm has no imports and its own memory. marble-threads.wasm imports
// a shared memory (env.memory) that every thread's instance works on; its
// long calls (forward, training step, a sampling run's steps) may run on
// another thread (the engine worker in Node, src/node/wasm.ts), the light
// ones run here.
import { MemoryLimitError } from '../errors.js';
import { dtypeUnsupported, split64 } from './backend.js';
import type { Backend, CapturedTensor, EngineModel, ParamInfo, TensorKind, TrainStepArgs } from './backend.js';
import { modelOutputItems } from '../schedulers/step_kernel.js';

export interface Exports {
  memory: WebAssembly.Memory;
  mb_wasm_alloc(bytes: number): number;
  mb_wasm_free(ptr: number): void;
  mb_model_new(): number;
  mb_model_init(m: number, cfg: number, n: number): number;
  mb_model_error(m: number): number;
  mb_isa(): number;
  mb_model_param_count(m: number): number;
  mb_model_param_name(m: number, i: number): number;
  mb_model_param_ndim(m: number, i: number): number;
  mb_model_param_dim(m: number, i: number, axis: number): number;
  mb_model_param_data(m: number, i: number): number;
  mb_model_finalize(m: number): number;
  mb_model_plan_bytes(m: number, b: number, h: number, w: number): number;
  mb_model_set_memory_limit(m: number, bytes: number): void;
  mb_model_forward(
    m: number,
    b: number,
    c: number,
    h: number,
    w: number,
    x: number,
    t: number,
    cls: number,
    clsLen: number,
    out: number,
  ): number;
  mb_model_set_capture(m: number, on: number): void;
  mb_model_capture_count(m: number): number;
  mb_model_capture_name(m: number, i: number): number;
  mb_model_capture_ndim(m: number, i: number): number;
  mb_model_capture_dim(m: number, i: number, axis: number): number;
  mb_model_capture_data(m: number, i: number): number;
  mb_model_delete(m: number): void;
  mb_model_train_init(m: number, ema: number): number;
  mb_model_train_step(
    m: number,
    b: number,
    c: number,
    h: number,
    w: number,
    x0: number,
    noise: number,
    t: number,
    sa: number,
    sb: number,
    cls: number,
    clsLen: number,
    target: number,
    weights: number,
    dropoutSeed: number,
    lossOut: number,
  ): number;
  mb_model_zero_grad(m: number): void;
  mb_model_grad_norm(m: number): number;
  mb_model_adamw_step(m: number, lr: number, b1: number, b2: number, eps: number, wd: number, step: number, scale: number): number;
  mb_model_ema_update(m: number, decay: number): void;
  mb_model_tensor_data(m: number, index: number, kind: number): number;
  mb_model_repack(m: number): number;
  mb_model_release_host_weights(m: number): number;
  mb_model_weights_released(m: number): number;
  mb_randn_philox(seedLo: number, seedHi: number, drawLo: number, drawHi: number, offset: number, n: number, out: number): void;
  mb_diffusion_step(
    coefficients: number,
    batch: number,
    sampleSize: number,
    stride: number,
    guidanceScale: number,
    modelOutput: number,
    sample: number,
    noise: number,
    prev: number,
    x0: number,
  ): number;
  mb_solver_step(
    coefficients: number,
    batch: number,
    sampleSize: number,
    stride: number,
    guidanceScale: number,
    modelOutput: number,
    sample: number,
    last: number,
    h0: number,
    h1: number,
    h2: number,
    noise: number,
    prev: number,
    converted: number,
    lastOut: number,
  ): number;
  mb_add_noise(x0: number, noise: number, sa: number, sb: number, batch: number, sampleSize: number, out: number): void;
  mb_philox4x32_10(c0: number, c1: number, c2: number, c3: number, k0: number, k1: number, out: number): void;
  // The sampling loop in the engine (native/engine/sampling.cpp)
  mb_sample_begin(
    m: number,
    b: number,
    c: number,
    h: number,
    w: number,
    cls: number,
    clsLen: number,
    guidance: number,
    statusOut: number,
  ): number;
  mb_sample_init(run: number, sample: number, seedLo: number, seedHi: number, drawLo: number, drawHi: number): number;
  mb_sample_steps(
    run: number,
    count: number,
    t: number,
    coefficients: number,
    seedLo: number,
    seedHi: number,
    firstDraw: number,
    noise: number,
    x0: number,
  ): number;
  mb_sample_solver_steps(
    run: number,
    count: number,
    t: number,
    inputScales: number,
    records: number,
    seedLo: number,
    seedHi: number,
    firstDraw: number,
    noise: number,
    x0: number,
  ): number;
  mb_sample_read(run: number, out: number): number;
  mb_sample_replays(run: number): number;
  mb_sample_direct_forwards(run: number): number;
  mb_sample_end(run: number): void;
  // marble-threads.wasm only (wasm/thread_pool.cpp)
  __stack_pointer?: WebAssembly.Global;
  mb_pool_worker_run?(): void;
  mb_pool_ready?(): number;
  mb_pool_start?(workers: number, callerMayWait: number): void;
  mb_pool_stop?(): void;
  mb_pool_worker_failed?(): void;
  mb_pool_failed?(): number;
  mb_pool_mark_failed?(): void;
  mb_pool_worker_chunks?(): number;
}

/** The engine calls that take long enough to run off the caller's thread. */
export type LongCallName = 'mb_model_forward' | 'mb_model_train_step' | 'mb_sample_steps' | 'mb_sample_solver_steps';

/**
 * Where a backend runs its long calls and what it tears down at dispose:
 * by default the calls run synchronously on this thread.
 */
export interface WasmRuntime {
  /** The pool size the engine uses (1: serial). */
  threads: number;
  /** Runs a long call (on another thread for the Node engine worker); resolves to its status. */
  longCall?(name: LongCallName, args: number[]): Promise<number>;
  /** Stops the threads the backend started. */
  dispose?(): void;
  /** Why this backend runs single-threaded although more threads were asked for (or another note). */
  note?: string;
}

/**
 * The shared memory of marble-threads.wasm, created by the loader. The
 * numbers are wasm/build.sh's INITIAL_MEMORY and MAX_MEMORY in 64 KiB pages.
 */
export const WASM_THREADS_MEMORY = { initial: 16777216 / 65536, maximum: 4294967296 / 65536, shared: true } as const;

/** Stack of each extra thread's instance (the first instance has the linker's 1 MiB one). */
export const THREAD_STACK_BYTES = 1 << 20;

// Exports that return an address. Wasm hands an i32 result to JS as a signed
// number, and linear memory may pass 2 GiB (a large training arena), so these
// are read as unsigned; addresses going the other way wrap back to the same bits.
const ADDRESS_RESULTS = [
  'mb_wasm_alloc',
  'mb_model_new',
  'mb_model_error',
  'mb_isa',
  'mb_model_param_name',
  'mb_model_param_data',
  'mb_model_capture_name',
  'mb_model_capture_data',
  'mb_model_tensor_data',
  'mb_sample_begin',
] as const;

/** Exports of an instance, with the memory it works on (imported by marble-threads.wasm). */
export function exportsOf(instance: WebAssembly.Instance, memory?: WebAssembly.Memory): Exports {
  const raw = instance.exports as unknown as Record<string, unknown>;
  const ex: Record<string, unknown> = { ...raw };
  for (const name of ADDRESS_RESULTS) {
    const fn = raw[name] as ((...args: number[]) => number) | undefined;
    if (typeof fn === 'function') ex[name] = (...args: number[]) => fn(...args) >>> 0;
  }
  if (memory) ex.memory = memory;
  return ex as unknown as Exports;
}

/**
 * The threaded build's exports for the thread that owns the backend: a trap
 * becomes a typed error and sets the pool's failure flag, and every call
 * checks that flag before and after. A thread that trapped may have left a
 * lock held or its share of a parallel loop undone, so the backend refuses
 * further work rather than hang or return wrong numbers.
 */
export function guardedExports(ex: Exports): Exports {
  const failed = ex.mb_pool_failed!;
  const guarded: Record<string, unknown> = { ...ex };
  for (const [name, value] of Object.entries(ex)) {
    if (typeof value !== 'function' || name.startsWith('mb_pool_')) continue;
    const call = value as (...args: number[]) => unknown;
    guarded[name] = (...args: number[]) => {
      if (failed()) throw runtimeFailure('a wasm pool worker failed earlier; this backend cannot be used any more');
      let result: unknown;
      try {
        result = call(...args);
      } catch (e) {
        if (!(e instanceof WebAssembly.RuntimeError)) throw e;
        ex.mb_pool_mark_failed!();
        throw runtimeFailure(`the wasm engine trapped in ${name}: ${e.message}`);
      }
      if (failed()) throw runtimeFailure(`a wasm pool worker trapped during ${name}; its result is incomplete`);
      return result;
    };
  }
  return guarded as unknown as Exports;
}

/** A failure in the wasm runtime itself (a trap, a dead worker): status State, a BackendError to callers. */
export function runtimeFailure(message: string): Error {
  return new EngineFailure(4, message);
}

export class EngineFailure extends Error {
  readonly status: number;
  constructor(status: number, message: string) {
    super(message);
    this.status = status;
  }
}

function readCString(mem: WebAssembly.Memory, ptr: number): string {
  const bytes = new Uint8Array(mem.buffer, ptr);
  let end = 0;
  while (bytes[end] !== 0) end++;
  // slice: TextDecoder refuses views of a SharedArrayBuffer (the threaded build's memory)
  return new TextDecoder().decode(bytes.slice(0, end));
}

class WasmModel implements EngineModel {
  private handle: number;
  /** The long call in flight, if any: dispose() waits for it before deleting the model. */
  private inflight: Promise<unknown> | null = null;
  /** The open sampling run (mb_sample_begin's SampleRun*), 0 when none, and its sample's size in floats. */
  private run = 0;
  private runSampleFloats = 0;
  constructor(
    private readonly ex: Exports,
    private readonly runtime: WasmRuntime,
    config: Float64Array,
  ) {
    const cfg = this.alloc(config.byteLength);
    new Float64Array(ex.memory.buffer, cfg, config.length).set(config);
    this.handle = ex.mb_model_new();
    if (!this.handle) throw new EngineFailure(2, 'out of wasm memory');
    const status = ex.mb_model_init(this.handle, cfg, config.length);
    ex.mb_wasm_free(cfg);
    if (status !== 0) {
      const message = this.error();
      ex.mb_model_delete(this.handle);
      this.handle = 0;
      throw new EngineFailure(status, message);
    }
  }

  private alloc(bytes: number): number {
    const ptr = this.ex.mb_wasm_alloc(bytes);
    if (!ptr) throw new EngineFailure(2, `out of wasm memory allocating ${bytes} bytes`);
    return ptr;
  }

  private error(): string {
    return readCString(this.ex.memory, this.ex.mb_model_error(this.handle));
  }

  private live(): number {
    if (!this.handle) throw new EngineFailure(4, 'the model has been disposed');
    return this.handle;
  }

  paramTable(): ParamInfo[] {
    const m = this.live();
    const table: ParamInfo[] = [];
    let bytes = 0;
    for (let i = 0, n = this.ex.mb_model_param_count(m); i < n; i++) {
      const shape: number[] = [];
      for (let d = 0, nd = this.ex.mb_model_param_ndim(m, i); d < nd; d++) shape.push(this.ex.mb_model_param_dim(m, i, d));
      table.push({ name: readCString(this.ex.memory, this.ex.mb_model_param_name(m, i)), shape });
      bytes += 4 * shape.reduce((a, b) => a * b, 1);
    }
    // The engine's sizes are 32-bit here: weights that do not fit the 4 GB
    // address space would wrap around in its arithmetic, not fail.
    if (bytes >= 2 ** 32)
      throw new MemoryLimitError(
        `the model's weights need ${Math.ceil(bytes / 2 ** 20)} MB, beyond what this 32-bit build can address (4096 MB)`,
      );
    return table;
  }

  setParam(index: number, data: Float32Array): void {
    const m = this.live();
    if (!Number.isInteger(index) || index < 0 || index >= this.ex.mb_model_param_count(m)) throw new RangeError('parameter index out of range');
    let numel = 1;
    for (let d = 0, nd = this.ex.mb_model_param_ndim(m, index); d < nd; d++) numel *= this.ex.mb_model_param_dim(m, index, d);
    if (data.length !== numel) throw new RangeError('parameter size mismatch');  // as the native addon says
    const ptr = this.ex.mb_model_param_data(m, index);
    if (!ptr) throw new EngineFailure(4, 'this weight was released after packing to save memory: the model can only sample');
    new Float32Array(this.ex.memory.buffer, ptr, data.length).set(data);
  }

  finalize(): void {
    const status = this.ex.mb_model_finalize(this.live());
    if (status !== 0) throw new EngineFailure(status, this.error());
  }

  planBytes(batch: number, height: number, width: number): number {
    const bytes = this.ex.mb_model_plan_bytes(this.live(), batch, height, width);
    if (bytes < 0) throw new EngineFailure(-bytes, this.error());
    return bytes;
  }

  setMemoryLimit(bytes: number): void {
    this.ex.mb_model_set_memory_limit(this.live(), bytes);
  }

  async forward(
    sample: Float32Array,
    batch: number,
    channels: number,
    height: number,
    width: number,
    timesteps: Float32Array,
    classCond: Float32Array | null,
    outSize: number,
  ): Promise<Float32Array> {
    const m = this.live();
    const ex = this.ex;
    const ptrs: number[] = [];
    try {
      const put = (data: Float32Array) => {
        const ptr = this.alloc(Math.max(4, data.byteLength));
        ptrs.push(ptr);
        new Float32Array(ex.memory.buffer, ptr, data.length).set(data);
        return ptr;
      };
      const x = put(sample);
      const t = put(timesteps);
      const cls = classCond ? put(classCond) : 0;
      const out = this.alloc(outSize * 4);
      ptrs.push(out);
      const status = await this.longCall('mb_model_forward', [m, batch, channels, height, width, x, t, cls, classCond?.length ?? 0, out]);
      if (status !== 0) throw new EngineFailure(status, this.error());
      return new Float32Array(ex.memory.buffer, out, outSize).slice();
    } finally {
      for (const p of ptrs) ex.mb_wasm_free(p);
    }
  }

  /** Runs a long engine call where the runtime says (here, or the engine worker), then checks the pool. */
  private async longCall(name: LongCallName, args: number[]): Promise<number> {
    const here = () => {
      try {
        return Promise.resolve((this.ex[name] as (...a: number[]) => number)(...args));
      } catch (e) {
        return Promise.reject(e instanceof WebAssembly.RuntimeError ? runtimeFailure(`the wasm engine trapped in ${name}: ${e.message}`) : e);
      }
    };
    const call = this.runtime.longCall ? this.runtime.longCall(name, args) : here();
    this.inflight = call.catch(() => undefined);
    try {
      const status = await call;
      if (this.ex.mb_pool_failed?.()) throw runtimeFailure('a wasm pool worker failed during the call; its result is incomplete');
      return status;
    } finally {
      this.inflight = null;
    }
  }

  setCapture(enabled: boolean): void {
    this.ex.mb_model_set_capture(this.live(), enabled ? 1 : 0);
  }

  captures(): CapturedTensor[] {
    const m = this.live();
    const list: CapturedTensor[] = [];
    for (let i = 0, n = this.ex.mb_model_capture_count(m); i < n; i++) {
      const shape: number[] = [];
      for (let d = 0, nd = this.ex.mb_model_capture_ndim(m, i); d < nd; d++) shape.push(this.ex.mb_model_capture_dim(m, i, d));
      const numel = shape.reduce((a, b) => a * b, 1);
      const ptr = this.ex.mb_model_capture_data(m, i);
      list.push({
        name: readCString(this.ex.memory, this.ex.mb_model_capture_name(m, i)),
        shape,
        data: new Float32Array(this.ex.memory.buffer, ptr, numel).slice(),
      });
    }
    return list;
  }

  dispose(): void {
    const handle = this.handle;
    this.handle = 0;
    if (!handle) return;
    const release = () => {
      this.endRun();
      this.ex.mb_model_delete(handle);
    };
    // A forward still running on another thread uses the model: delete it after.
    if (this.inflight) void this.inflight.then(release);
    else release();
  }

  // --- the sampling loop inside the engine (native/engine/sampling.cpp) ---
  // As on the native backends: the sample, the model output and the noise
  // stay in wasm memory from the first step to the last, and one call runs
  // all the steps it is given (forward, noise, fused step each) on the
  // engine thread, instead of one forward call and one step per step.

  private endRun(): void {
    if (this.run) this.ex.mb_sample_end(this.run);
    this.run = 0;
  }

  private liveRun(): number {
    this.live();
    if (!this.run) throw new EngineFailure(4, 'no sampling run: call sampleBegin first');
    return this.run;
  }

  sampleBegin(batch: number, channels: number, height: number, width: number, classCond: Float32Array | null, guidanceScale = 1): void {
    const m = this.live();
    this.endRun();
    const statusPtr = this.alloc(4);
    try {
      const run = withArrays(this.ex, [classCond], [], (p) =>
        this.ex.mb_sample_begin(m, batch, channels, height, width, p[0]!, classCond?.length ?? 0, guidanceScale, statusPtr),
      );
      if (!run) throw new EngineFailure(new Int32Array(this.ex.memory.buffer, statusPtr, 1)[0]!, this.error());
      this.run = run;
    } finally {
      this.ex.mb_wasm_free(statusPtr);
    }
    this.runSampleFloats = batch * channels * height * width;
  }

  sampleInit(sample: Float32Array | null, seedLo: number, seedHi: number, drawLo: number, drawHi: number): void {
    const run = this.liveRun();
    if (sample && sample.length !== this.runSampleFloats) throw new RangeError("sampleInit: the sample does not match the run's shape");
    const status = withArrays(this.ex, [sample], [], (p) => this.ex.mb_sample_init(run, p[0]!, seedLo, seedHi, drawLo, drawHi));
    if (status !== 0) throw new EngineFailure(status, this.error());
  }

  /** Runs one of the step calls on the engine thread; resolves to x0 when wantX0. */
  private async runSteps(
    name: 'mb_sample_steps' | 'mb_sample_solver_steps',
    perStep: Float32Array[],
    hostNoise: Float32Array | null,
    count: number,
    args: (p: number[]) => number[],
    wantX0: boolean,
  ): Promise<Float32Array | undefined> {
    this.liveRun();
    if (count < 1 || (hostNoise && hostNoise.length !== count * this.runSampleFloats))
      throw new RangeError(`${name}: array sizes do not match the step count`);
    const x0 = wantX0 ? new Float32Array(this.runSampleFloats) : null;
    const status = await withArrays(this.ex, [...perStep, hostNoise], x0 ? [x0] : [], (p) =>
      this.longCall(name, args(p).concat(x0 ? p[perStep.length + 1]! : 0)),
    );
    if (status !== 0) throw new EngineFailure(status, this.error());
    return x0 ?? undefined;
  }

  sampleSteps(
    count: number,
    timesteps: Float32Array,
    coefficients: Float32Array,
    seedLo: number,
    seedHi: number,
    firstDraw: number,
    hostNoise: Float32Array | null,
    wantX0: boolean,
  ): Promise<Float32Array | undefined> {
    if (timesteps.length !== count || coefficients.length !== 15 * count)
      throw new RangeError('sampleSteps: array sizes do not match the step count');
    const run = this.run;
    return this.runSteps(
      'mb_sample_steps',
      [timesteps, coefficients],
      hostNoise,
      count,
      (p) => [run, count, p[0]!, p[1]!, seedLo, seedHi, firstDraw, p[2]!],
      wantX0,
    );
  }

  sampleSolverSteps(
    count: number,
    timesteps: Float32Array,
    inputScales: Float32Array,
    records: Float32Array,
    seedLo: number,
    seedHi: number,
    firstDraw: number,
    hostNoise: Float32Array | null,
    wantX0: boolean,
  ): Promise<Float32Array | undefined> {
    if (timesteps.length !== count || inputScales.length !== count || records.length !== 22 * count)
      throw new RangeError('sampleSolverSteps: array sizes do not match the step count');
    const run = this.run;
    return this.runSteps(
      'mb_sample_solver_steps',
      [timesteps, inputScales, records],
      hostNoise,
      count,
      (p) => [run, count, p[0]!, p[1]!, p[2]!, seedLo, seedHi, firstDraw, p[3]!],
      wantX0,
    );
  }

  async sampleRead(): Promise<Float32Array> {
    const run = this.liveRun();
    const out = new Float32Array(this.runSampleFloats);
    const status = withArrays(this.ex, [], [out], (p) => this.ex.mb_sample_read(run, p[0]!));
    if (status !== 0) throw new EngineFailure(status, this.error());
    return out;
  }

  sampleStats(): { replays: number; directForwards: number } {
    const run = this.liveRun();
    return { replays: this.ex.mb_sample_replays(run), directForwards: this.ex.mb_sample_direct_forwards(run) };
  }

  sampleEnd(): void {
    if (this.inflight) throw new EngineFailure(4, 'cannot end a sampling run while its steps are running');
    this.endRun();
  }

  trainInit(options: { ema: boolean }): void {
    const status = this.ex.mb_model_train_init(this.live(), options.ema ? 1 : 0);
    if (status !== 0) throw new EngineFailure(status, this.error());
  }

  async trainStep(a: TrainStepArgs): Promise<number> {
    const m = this.live();
    const ex = this.ex;
    const [b, c, h, w] = a.shape;
    const inputs = [a.x0, a.noise, a.timesteps, a.sqrtAlphaProd, a.sqrtOneMinusAlphaProd, a.classCond, a.lossWeights];
    const loss = new Float32Array(1);
    const status = await withArrays(ex, inputs, [loss], (p) =>
      this.longCall('mb_model_train_step', [m, b, c, h, w, p[0]!, p[1]!, p[2]!, p[3]!, p[4]!, p[5]!, a.classCond?.length ?? 0, a.target, p[6]!, a.dropoutSeed, p[7]!]),
    );
    if (status !== 0) throw new EngineFailure(status, this.error());
    return loss[0]!;
  }

  zeroGrad(): void {
    this.ex.mb_model_zero_grad(this.live());
  }

  gradNorm(): number {
    return this.ex.mb_model_grad_norm(this.live());
  }

  adamwStep(a: { lr: number; beta1: number; beta2: number; eps: number; weightDecay: number; step: number; gradScale: number }): void {
    const status = this.ex.mb_model_adamw_step(this.live(), a.lr, a.beta1, a.beta2, a.eps, a.weightDecay, a.step, a.gradScale);
    if (status !== 0) throw new EngineFailure(status, this.error());
  }

  emaUpdate(decay: number): void {
    this.ex.mb_model_ema_update(this.live(), decay);
  }

  private tensor(index: number, kind: TensorKind): { ptr: number; numel: number } {
    const m = this.live();
    const kinds: TensorKind[] = ['param', 'grad', 'exp_avg', 'exp_avg_sq', 'ema'];
    if (!Number.isInteger(index) || index < 0 || index >= this.ex.mb_model_param_count(m) || !kinds.includes(kind))
      throw new RangeError('tensor index or kind out of range');
    const ptr = this.ex.mb_model_tensor_data(m, index, kinds.indexOf(kind));
    if (!ptr)
      throw new EngineFailure(
        4,
        kind === 'param' && this.ex.mb_model_weights_released(m)
          ? 'this weight was released after packing to save memory (loadPipeline does): load with loadUNet to read it'
          : 'that tensor is not allocated (call trainInit first)',
      );
    let numel = 1;
    for (let d = 0, nd = this.ex.mb_model_param_ndim(m, index); d < nd; d++) numel *= this.ex.mb_model_param_dim(m, index, d);
    return { ptr, numel };
  }

  readTensor(index: number, kind: TensorKind): Float32Array {
    const { ptr, numel } = this.tensor(index, kind);
    return new Float32Array(this.ex.memory.buffer, ptr, numel).slice();
  }

  writeTensor(index: number, kind: TensorKind, data: Float32Array): void {
    const { ptr, numel } = this.tensor(index, kind);
    if (data.length !== numel) throw new RangeError('tensor size mismatch');
    new Float32Array(this.ex.memory.buffer, ptr, numel).set(data);
  }

  repack(): void {
    const status = this.ex.mb_model_repack(this.live());
    if (status !== 0) throw new EngineFailure(status, this.error());
  }

  releaseHostWeights(): number {
    const result = this.ex.mb_model_release_host_weights(this.live());
    if (result < 0) throw new EngineFailure(-result, this.error());
    return result;
  }
}

/** Copies arrays into wasm memory for one call, and results back out (sync or async calls). */
function withArrays<T>(ex: Exports, inputs: (Float32Array | null)[], outputs: Float32Array[], call: (ptrs: number[]) => T): T;
function withArrays<T>(
  ex: Exports,
  inputs: (Float32Array | null)[],
  outputs: Float32Array[],
  call: (ptrs: number[]) => Promise<T>,
): Promise<T>;
function withArrays<T>(ex: Exports, inputs: (Float32Array | null)[], outputs: Float32Array[], call: (ptrs: number[]) => T | Promise<T>) {
  const ptrs: number[] = [];
  const release = () => {
    for (const p of ptrs) if (p) ex.mb_wasm_free(p);
  };
  const copyOut = () =>
    outputs.forEach((out, i) => out.set(new Float32Array(ex.memory.buffer, ptrs[inputs.length + i]!, out.length)));
  let result: T | Promise<T>;
  try {
    for (const a of [...inputs, ...outputs]) {
      if (!a) {
        ptrs.push(0);
        continue;
      }
      const ptr = ex.mb_wasm_alloc(Math.max(4, a.byteLength));
      if (!ptr) throw new EngineFailure(2, 'out of wasm memory');
      ptrs.push(ptr);
      new Float32Array(ex.memory.buffer, ptr, a.length).set(a);
    }
    result = call(ptrs);
  } catch (e) {
    release();
    throw e;
  }
  if (result instanceof Promise)
    return result.then(
      (value) => {
        copyOut();
        return value;
      },
    ).finally(release);
  try {
    copyOut();
    return result;
  } finally {
    release();
  }
}

/** A wasm Backend over compiled marble.wasm (the single-threaded build) bytes or module. */
export async function instantiateWasmBackend(source: BufferSource | WebAssembly.Module, note?: string): Promise<Backend> {
  const module = source instanceof WebAssembly.Module ? source : await WebAssembly.compile(source);
  return backendOver(exportsOf(await WebAssembly.instantiate(module, {})), { threads: 1, ...(note ? { note } : {}) });
}

/** Synchronous instantiation (fine in Node and workers; browsers limit it on the main thread). */
export function instantiateWasmBackendSync(module: WebAssembly.Module): Backend {
  return backendOver(exportsOf(new WebAssembly.Instance(module, {})), { threads: 1 });
}

/**
 * A Backend over exports of either build: marble.wasm, or an instance of
 * marble-threads.wasm on its shared memory (src/core/backend/wasm_threads.ts
 * starts its pool; `runtime` says where long calls run and what dispose stops).
 */
export function backendOver(ex: Exports, runtime: WasmRuntime): Backend {
  let disposed = false;
  return {
    name: 'wasm',
    createModel: (config, dtype = 'float32') => {
      if (disposed) throw new EngineFailure(4, 'this wasm backend has been disposed');
      if (dtype !== 'float32') throw dtypeUnsupported('wasm', dtype);
      return new WasmModel(ex, runtime, config);
    },
    threads: () => runtime.threads,
    describe: () => ({
      name: 'wasm',
      isa: readCString(ex.memory, ex.mb_isa()),
      threads: runtime.threads,
      ...(runtime.note ? { note: runtime.note } : {}),
      memoryBytes: ex.memory.buffer.byteLength,
    }),
    isa: () => readCString(ex.memory, ex.mb_isa()),  // "simd128", or "relaxed-simd128" (the *-relaxed.wasm builds)
    dispose: () => {
      if (disposed) return;
      disposed = true;
      runtime.dispose?.();
    },
    randn: (seed, draw, n, offset = 0) => {
      const [seedLo, seedHi] = split64(seed, 'seed');
      const [drawLo, drawHi] = split64(draw, 'draw');
      const ptr = ex.mb_wasm_alloc(Math.max(4, n * 4));
      if (!ptr) throw new EngineFailure(2, `out of wasm memory for ${n} normals`);
      try {
        ex.mb_randn_philox(seedLo, seedHi, drawLo, drawHi, offset, n, ptr);
        return new Float32Array(ex.memory.buffer, ptr, n).slice();
      } finally {
        ex.mb_wasm_free(ptr);
      }
    },
    diffusionStep: (coefficients, layout, modelOutput, sample, noise, prevSample, predOriginalSample) => {
      const n = layout.batchSize * layout.sampleSize;
      if (
        coefficients.length !== 15 ||
        modelOutput.length !== modelOutputItems(layout) * layout.modelOutputStride ||
        sample.length !== n ||
        (noise && noise.length !== n) ||
        prevSample.length !== n ||
        predOriginalSample.length !== n
      )
        throw new RangeError('diffusionStep: array sizes do not match the layout');
      const status = withArrays(ex, [coefficients, modelOutput, sample, noise], [prevSample, predOriginalSample], (p) =>
        ex.mb_diffusion_step(p[0]!, layout.batchSize, layout.sampleSize, layout.modelOutputStride, layout.guidanceScale ?? 1, p[1]!, p[2]!, p[3]!, p[4]!, p[5]!),
      );
      if (status !== 0) throw new EngineFailure(status, `diffusion step: invalid coefficients or layout (status ${status})`);
    },
    solverStep: (coefficients, layout, a) => {
      const n = layout.batchSize * layout.sampleSize;
      const h = [a.history[0] ?? null, a.history[1] ?? null, a.history[2] ?? null];
      const optional = [a.last, ...h, a.noise, a.lastOut];
      if (
        coefficients.length !== 21 ||
        a.modelOutput.length !== modelOutputItems(layout) * layout.modelOutputStride ||
        a.sample.length !== n ||
        a.prevSample.length !== n ||
        a.converted.length !== n ||
        optional.some((x) => x && x.length !== n)
      )
        throw new RangeError('solverStep: array sizes do not match the layout');
      // lastOut goes in as an input too (copied in and out): the kernel may leave it alone.
      const outputs = a.lastOut ? [a.prevSample, a.converted, a.lastOut] : [a.prevSample, a.converted];
      const status = withArrays(ex, [coefficients, a.modelOutput, a.sample, a.last, h[0], h[1], h[2], a.noise], outputs, (p) =>
        ex.mb_solver_step(p[0]!, layout.batchSize, layout.sampleSize, layout.modelOutputStride, layout.guidanceScale ?? 1, p[1]!, p[2]!, p[3]!, p[4]!, p[5]!, p[6]!, p[7]!, p[8]!, p[9]!, a.lastOut ? p[10]! : 0),
      );
      if (status !== 0) throw new EngineFailure(status, `solver step: invalid coefficients or layout (status ${status})`);
    },
    addNoise: (x0, noise, sqrtAlphaProd, sqrtOneMinusAlphaProd, out) => {
      const batch = sqrtAlphaProd.length;
      withArrays(ex, [x0, noise, sqrtAlphaProd, sqrtOneMinusAlphaProd], [out], (p) =>
        ex.mb_add_noise(p[0]!, p[1]!, p[2]!, p[3]!, batch, x0.length / batch, p[4]!),
      );
    },
    philoxBlock: (c, k) => {
      const ptr = ex.mb_wasm_alloc(16);
      try {
        ex.mb_philox4x32_10(c[0]!, c[1]!, c[2]!, c[3]!, k[0]!, k[1]!, ptr);
        return new Uint32Array(ex.memory.buffer, ptr, 4).slice();
      } finally {
        ex.mb_wasm_free(ptr);
      }
    },
  };
}
