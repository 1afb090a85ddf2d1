// The threaded wasm build's runtime: worker threads end with dispose, the
// process never waits for them, and failures on a worker thread surface as
// typed errors instead of hangs.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { Worker } from 'node:worker_threads';

import { BackendError, loadUNet } from '../src/index.js';
import { WASM_THREADS_MEMORY, backendOver, exportsOf, guardedExports, EngineFailure } from '../src/core/backend/wasm_core.js';
import { spawnNodeThread, wasmPath, wasmThreadsPath } from '../src/node/wasm.js';
import { startThreads } from '../src/core/backend/wasm_threads.js';
import { engineError } from '../src/core/model/unet.js';
import { createWasmBackend } from '../src/web/wasm.js';
import type { WorkerLike } from '../src/web/wasm.js';
import { fixturePath } from './helpers.js';

/** OS threads of this process (Linux); every worker_thread is at least one. */
function osThreads(): number {
  const status = readFileSync('/proc/self/status', 'utf8');
  return Number(/^Threads:\s+(\d+)/m.exec(status)![1]);
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

test('dispose terminates the wasm worker threads', { skip: !existsSync('/proc/self/status') && 'needs /proc' }, async () => {
  const load = () => loadUNet(fixturePath('unet/tiny'), { backend: 'wasm', threads: 3 });
  (await load()).dispose(); // warms up what starts once per process (libuv's pool, V8's helpers)
  await sleep(200);
  const before = osThreads();
  const unet = await load();
  const sample = new Float32Array(2 * 3 * 32 * 32).fill(0.5);
  await unet.forward(sample, [2, 3, 32, 32], 10);
  const during = osThreads();
  assert.ok(during >= before + 3, `an engine thread and 2 pool workers: ${before} -> ${during} OS threads`);
  unet.dispose();
  await assert.rejects(unet.forward(sample, [2, 3, 32, 32], 10), BackendError);
  let after = osThreads();
  for (let i = 0; i < 100 && after > before; i++) {
    await sleep(20);
    after = osThreads();
  }
  assert.ok(after <= before, `after dispose: ${after} OS threads, ${before} before loading`);
});

test('dispose during a forward waits for it, then stops the threads', async () => {
  const unet = await loadUNet(fixturePath('unet/cifar-slim'), { backend: 'wasm', threads: 2 });
  const sample = new Float32Array(4 * 3 * 32 * 32).fill(0.25);
  const pending = unet.forward(sample, [4, 3, 32, 32], 10);
  await new Promise((resolve) => setImmediate(resolve)); // the call is on the engine thread now
  unet.dispose();
  const out = await pending;
  assert.equal(out.length, sample.length);
  assert.ok(out.every(Number.isFinite));
});

test('worker threads do not keep the process alive', async () => {
  // A script that loads a wasm model, runs a forward and neither disposes it
  // nor exits: Node must end by itself once the forward resolved.
  const index = new URL('../src/index.js', import.meta.url).href;
  const script = `
    const { loadUNet } = await import(${JSON.stringify(index)});
    const unet = await loadUNet(${JSON.stringify(fixturePath('unet/tiny'))}, { backend: 'wasm', threads: 2 });
    const out = await unet.forward(new Float32Array(3 * 32 * 32), [1, 3, 32, 32], 5);
    console.log('forward', out.length);`;
  const { stdout } = await new Promise<{ stdout: string }>((resolve, reject) => {
    execFile(process.execPath, ['--input-type=module', '-e', script], { timeout: 30_000 }, (error, stdout, stderr) =>
      error ? reject(new Error(`${error.message}\n${stderr}`)) : resolve({ stdout }),
    );
  });
  assert.equal(stdout.trim(), `forward ${3 * 32 * 32}`);
});

async function threadedInstance() {
  const module = new WebAssembly.Module(readFileSync(wasmThreadsPath()));
  const memory = new WebAssembly.Memory(WASM_THREADS_MEMORY);
  const ex = exportsOf(new WebAssembly.Instance(module, { env: { memory } }), memory);
  return { module, memory, ex };
}

test('a worker that cannot start is a typed error, not a hang', async () => {
  const { memory, ex } = await threadedInstance();
  const wrongModule = new WebAssembly.Module(readFileSync(wasmPath())); // the single-threaded build
  await assert.rejects(
    startThreads({ module: wrongModule, memory, ex, poolWorkers: 1, engineThread: false, callerMayWait: true, spawn: spawnNodeThread }),
    (e: unknown) => e instanceof EngineFailure && engineError(e) instanceof BackendError && /instantiate/.test((e as Error).message),
  );
});

test('a trap on the engine thread rejects the call and every later one with a typed error', async () => {
  const { module, memory, ex } = await threadedInstance();
  const threads = await startThreads({ module, memory, ex, poolWorkers: 1, engineThread: true, callerMayWait: true, spawn: spawnNodeThread });
  try {
    // A model handle far outside the memory: the engine's first read traps.
    const bogus = [0x7ffffff0, 1, 3, 8, 8, 0, 0, 0, 0, 0];
    const isTrap = (e: unknown) => engineError(e) instanceof BackendError && /trapped/.test((e as Error).message);
    await assert.rejects(threads.longCall!('mb_model_forward', bogus), isTrap);
    await assert.rejects(threads.longCall!('mb_model_forward', bogus), (e: unknown) => engineError(e) instanceof BackendError && /failed earlier/.test((e as Error).message));
  } finally {
    threads.dispose();
  }
});

test('the module is initialised once: a second thread sees the first one\'s heap', async () => {
  // lld's __wasm_init_memory must not re-run the data/bss initialisation for
  // later instances, or the allocator's state (in .bss) would be wiped.
  const { module, memory, ex } = await threadedInstance();
  const first = ex.mb_wasm_alloc(1000);
  const second = exportsOf(new WebAssembly.Instance(module, { env: { memory } }), memory);
  const next = second.mb_wasm_alloc(1000);
  assert.ok(first > 0 && next > 0);
  assert.ok(next >= first + 1000, `the second instance allocated ${next}, over the first's block at ${first}`);
});

test('marble-diffusion/wasm: the threaded build with a Web Worker pool matches the single-threaded build bit for bit', async () => {
  // Node has no Web Worker: worker_threads dressed as one (test/support/web_worker_scope.ts).
  const scopeScript = new URL('./support/web_worker_scope.js', import.meta.url);
  let spawned = 0;
  const createWorker = (): WorkerLike => {
    const worker = new Worker(scopeScript, { execArgv: [] });
    worker.unref();
    spawned++;
    const like: WorkerLike = {
      onmessage: null,
      onerror: null,
      postMessage: (message) => worker.postMessage(message),
      terminate: () => void worker.terminate(),
    };
    worker.on('message', (data) => like.onmessage?.({ data }));
    worker.on('error', (e) => like.onerror?.({ message: e.message }));
    return like;
  };
  const threaded = await createWasmBackend({ threads: 3, threaded: readFileSync(wasmThreadsPath()), createWorker });
  const single = await createWasmBackend({ threads: 1, single: readFileSync(wasmPath()), createWorker });
  assert.equal(threaded.threads(), 3);
  assert.equal(single.threads(), 1);
  assert.equal(spawned, 2, 'two pool workers for three threads, none for the single-threaded build');
  const sample = new Float32Array(2 * 3 * 32 * 32).map((_, i) => Math.sin(i * 0.1));
  const outputs: Float32Array[] = [];
  for (const backend of [threaded, single]) {
    const unet = await loadUNet(fixturePath('unet/cifar-slim'), { backend });
    outputs.push(await unet.forward(sample, [2, 3, 32, 32], [10, 900]));
    unet.dispose();
  }
  assert.ok(outputs[0]!.some((v) => v !== 0));
  assert.deepEqual(outputs[0], outputs[1]);
  threaded.dispose!();
});

test('pool workers run a share of the parallel loops, with the same bits as without them', async () => {
  const { module, memory, ex } = await threadedInstance();
  const threads = await startThreads({ module, memory, ex, poolWorkers: 1, engineThread: false, callerMayWait: true, spawn: spawnNodeThread });
  const sample = new Float32Array(2 * 3 * 32 * 32).map((_, i) => Math.cos(i * 0.3));
  const outputs: Float32Array[] = [];
  try {
    const backend = backendOver(ex, { threads: 2 });
    const unet = await loadUNet(fixturePath('unet/cifar-slim'), { backend });
    outputs.push(await unet.forward(sample, [2, 3, 32, 32], 400));
    unet.dispose();
    assert.ok(ex.mb_pool_worker_chunks!() > 0, 'the pool worker ran chunks');
  } finally {
    threads.dispose();
  }
  const single = await createWasmBackend({ threads: 1, single: readFileSync(wasmPath()) });
  const unet = await loadUNet(fixturePath('unet/cifar-slim'), { backend: single });
  outputs.push(await unet.forward(sample, [2, 3, 32, 32], 400));
  unet.dispose();
  assert.deepEqual(outputs[0], outputs[1]);
});

test('marble-diffusion/wasm and its Web Worker import no Node built-ins', () => {
  // Follows the relative imports of the compiled entry points; any other
  // specifier (node:fs, worker_threads, ...) would break browsers and workerd.
  const seen = new Set<string>();
  const visit = (file: URL) => {
    if (seen.has(file.href)) return;
    seen.add(file.href);
    const source = readFileSync(file, 'utf8');
    for (const [, from, bare] of source.matchAll(/(?:^|\n)\s*(?:import|export)\b[^'"]*?from\s*['"]([^'"]+)['"]|(?:^|\n)\s*import\s*['"]([^'"]+)['"]/g)) {
      const specifier = (from ?? bare)!;
      assert.ok(specifier.startsWith('.'), `${file.pathname} imports ${specifier}`);
      visit(new URL(specifier, file));
    }
  };
  visit(new URL('../src/web/wasm.js', import.meta.url));
  visit(new URL('../src/web/wasm_worker_web.js', import.meta.url));
  assert.ok(seen.size >= 5, `followed ${seen.size} modules`);
});

test('a trap inside a parallel loop, on a pool worker or on the caller, is a typed error and never a hang', async () => {
  // Philox normals are written in tasks of 4096 floats spread over the pool;
  // the output runs past the end of memory in the last task only, so whoever
  // takes that task traps: a pool worker (the caller must still wake up) or
  // the caller. Which one varies from run to run (both were seen when this
  // test was written); six rounds make each likely.
  for (let round = 0; round < 6; round++) {
    const { module, memory, ex: raw } = await threadedInstance();
    const threads = await startThreads({ module, memory, ex: raw, poolWorkers: 1, engineThread: false, callerMayWait: true, spawn: spawnNodeThread });
    const ex = guardedExports(raw);
    try {
      const n = 32 * 4096;
      const out = memory.buffer.byteLength - (n - 100) * 4;
      const isTyped = (e: unknown) => e instanceof EngineFailure && engineError(e) instanceof BackendError;
      assert.throws(() => ex.mb_randn_philox(1, 0, 0, 0, 0, n, out), isTyped);
      // Nothing runs on a backend in that state.
      assert.throws(() => ex.mb_wasm_alloc(16), (e: unknown) => isTyped(e) && /failed earlier/.test((e as Error).message));
    } finally {
      threads.dispose();
    }
  }
});
