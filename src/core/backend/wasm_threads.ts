// The threads of marble-threads.wasm, with no Node built-ins: the starter
// (on the thread that owns the first instance) and what each worker thread
// runs. Node spawns the threads with worker_threads (src/node/wasm.ts,
// wasm_worker_node.ts), browsers with Web Workers (src/web/wasm.ts,
// wasm_worker_web.ts); both go through `SpawnThread`.
//
// Every thread instantiates the same module on the same shared memory and
// points its own __stack_pointer at a stack allocated from the shared heap.
// Roles:
//   pool    enters mb_pool_worker_run() and stays there, taking part in the
//           engine's parallel regions (wasm/thread_pool.cpp), until stopped.
//   engine  serves long engine calls (forward, training step) posted to it,
//           so that the starter's thread stays free (Node's event loop).
import type { Exports, LongCallName } from './wasm_core.js';
import { THREAD_STACK_BYTES, exportsOf, runtimeFailure } from './wasm_core.js';

export type ThreadRole = 'pool' | 'engine';

/** What a new thread is given. Module and shared Memory are shareable across threads. */
export interface ThreadInit {
  role: ThreadRole;
  module: WebAssembly.Module;
  memory: WebAssembly.Memory;
  stackTop: number;
}

/** Messages a thread posts to its starter. */
export type ThreadMessage =
  | { type: 'started' }
  | { type: 'result'; id: number; value: number }
  | { type: 'error'; id?: number; message: string };

/** A long call posted to the engine thread. */
export interface CallMessage {
  id: number;
  name: LongCallName;
  args: number[];
}

/** A started thread as its starter holds it. */
export interface ThreadPort {
  post(message: CallMessage): void;
  terminate(): void;
  /** Node: keep the process alive while a call is in flight (workers are unref'd otherwise). */
  ref?(): void;
  unref?(): void;
}

export type SpawnThread = (
  init: ThreadInit,
  events: { message(message: ThreadMessage): void; error(error: Error): void },
) => ThreadPort;

// ---------------------------------------------------------------------------
// Inside a worker thread

/**
 * A worker thread's body. For a pool thread it returns only when the pool
 * stops; for the engine thread it returns the handler of posted calls.
 */
export function runThread(init: ThreadInit, post: (message: ThreadMessage) => void): ((call: CallMessage) => void) | null {
  let ex: Exports;
  try {
    ex = exportsOf(new WebAssembly.Instance(init.module, { env: { memory: init.memory } }), init.memory);
    if (!ex.__stack_pointer || !ex.mb_pool_worker_run) throw new Error('the module is not marble-threads.wasm');
    ex.__stack_pointer.value = init.stackTop;
  } catch (e) {
    post({ type: 'error', message: `cannot instantiate the wasm module on a worker thread: ${(e as Error).message}` });
    return null;
  }
  if (init.role === 'pool') {
    post({ type: 'started' });
    try {
      ex.mb_pool_worker_run();
    } catch (e) {
      // A trap inside a region: let the region's caller go, and say why.
      ex.mb_pool_worker_failed!();
      post({ type: 'error', message: `a wasm pool worker trapped: ${(e as Error).message}` });
    }
    return null;
  }
  post({ type: 'started' });
  return ({ id, name, args }) => {
    try {
      const value = (ex[name] as (...a: number[]) => number)(...args);
      post({ type: 'result', id, value });
    } catch (e) {
      ex.__stack_pointer!.value = init.stackTop; // a trap leaves the stack pointer where it was
      ex.mb_pool_mark_failed!(); // the main thread's instance refuses further calls too
      post({ type: 'error', id, message: `the wasm engine trapped in ${name}: ${(e as Error).message}` });
    }
  };
}

// ---------------------------------------------------------------------------
// On the starter's thread

export interface WasmThreads {
  /** Runs a long call on the engine thread (when one was started). */
  longCall?(name: LongCallName, args: number[]): Promise<number>;
  /** Stops the pool and terminates every thread, once no call is in flight. */
  dispose(): void;
}

const START_TIMEOUT_MS = 60_000;

/**
 * Starts `poolWorkers` pool threads (and an engine thread when `engineThread`)
 * for the instance whose exports are `ex`. `callerMayWait`: whether the
 * threads that call into the engine may block in memory.atomic.wait32 (not on
 * a browser's main thread).
 */
export async function startThreads(options: {
  module: WebAssembly.Module;
  memory: WebAssembly.Memory;
  ex: Exports;
  poolWorkers: number;
  engineThread: boolean;
  callerMayWait: boolean;
  spawn: SpawnThread;
}): Promise<WasmThreads> {
  const { module, memory, ex, spawn } = options;
  const ports: ThreadPort[] = [];
  let failure: Error | null = null;
  let stopped = false;
  const pending = new Map<number, { resolve(v: number): void; reject(e: Error): void }>();
  let engine: ThreadPort | null = null;
  let engineStarted = false;
  let nextId = 1;
  let disposeRequested = false;

  const fail = (error: Error) => {
    if (stopped) return;
    failure ??= error;
    for (const { reject } of pending.values()) reject(runtimeFailure(error.message));
    pending.clear();
    engine?.unref?.();
  };

  const stop = () => {
    if (stopped) return;
    stopped = true;
    // Workers still waiting for a region leave mb_pool_worker_run; terminate()
    // also ends any that is stuck (a trapped engine call's region, say).
    if (!failure) ex.mb_pool_stop!();
    for (const port of ports) port.terminate();
  };

  const spawnOne = (role: ThreadRole, onMessage: (m: ThreadMessage) => void): ThreadPort => {
    const stack = ex.mb_wasm_alloc(THREAD_STACK_BYTES);
    if (!stack) throw runtimeFailure('out of wasm memory for a thread stack');
    const port = spawn(
      { role, module, memory, stackTop: stack + THREAD_STACK_BYTES },
      {
        message: (m) => {
          if (m.type === 'error' && m.id === undefined) fail(new Error(m.message));
          else onMessage(m);
        },
        error: (e) => fail(new Error(`a wasm worker thread failed: ${e.message}`)),
      },
    );
    ports.push(port);
    return port;
  };

  const until = (done: () => boolean, what: string) =>
    new Promise<void>((resolve, reject) => {
      const started = Date.now();
      const poll = () => {
        if (failure) return reject(runtimeFailure(failure.message));
        if (done()) return resolve();
        if (Date.now() - started > START_TIMEOUT_MS) return reject(runtimeFailure(`${what} did not start within ${START_TIMEOUT_MS / 1000} s`));
        setTimeout(poll, 1);
      };
      poll();
    });

  try {
    for (let i = 0; i < options.poolWorkers; i++) spawnOne('pool', () => undefined);
    // Ready means inside mb_pool_worker_run, having read the region counter:
    // only then may regions count on the workers.
    await until(() => ex.mb_pool_ready!() === options.poolWorkers, 'the wasm pool workers');
    ex.mb_pool_start!(options.poolWorkers, options.callerMayWait ? 1 : 0);
    if (options.engineThread) {
      engine = spawnOne('engine', (m) => {
        if (m.type === 'started') {
          engineStarted = true;
          return;
        }
        const call = pending.get(m.id!);
        if (!call) return;
        pending.delete(m.id!);
        if (pending.size === 0) engine!.unref?.();
        if (m.type === 'result') call.resolve(m.value);
        else {
          // A trap may have left a lock held or a region half done: no more calls.
          fail(new Error(m.message));
          call.reject(runtimeFailure(m.message));
        }
        if (pending.size === 0 && disposeRequested) stop();
      });
      await until(() => engineStarted, 'the wasm engine thread');
    }
  } catch (e) {
    failure ??= e as Error;
    stopped = true;
    for (const port of ports) port.terminate();
    throw e;
  }

  return {
    longCall: engine
      ? (name, args) =>
          new Promise<number>((resolve, reject) => {
            if (failure) return reject(runtimeFailure(`this wasm backend failed earlier: ${failure.message}`));
            if (stopped || disposeRequested) return reject(runtimeFailure('this wasm backend has been disposed'));
            const id = nextId++;
            pending.set(id, { resolve, reject });
            engine!.ref?.();
            engine!.post({ id, name, args });
          })
      : undefined,
    dispose: () => {
      disposeRequested = true;
      if (pending.size === 0) stop();
    },
  };
}
