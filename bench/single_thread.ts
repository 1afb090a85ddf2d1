// One-thread forward rows for bench/forward.ts: marble's cpu backend and (when
// installed) onnxruntime-node, each on a single thread, interleaved run by
// run so that other load on a shared machine hits both alike. Multi-threaded
// comparisons on a loaded machine mostly measure how each thread pool copes
// with losing its cores (onnxruntime's spins while it waits); one thread each
// compares the kernels.
import { loadAddon, nativeAvailable } from '../src/node/native.js';
import { createUNet } from '../src/index.js';
import { unetToOnnx } from '../src/onnx/export.js';
import { CIFAR10_CONFIG } from './models.js';
import { createOrtSession, loadOrt } from '../src/node/onnxruntime.js';

export interface SingleThreadRow {
  backend: string;
  isa: string;
  threads: number;
  batch: number;
  ms: number;
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

export async function singleThreadRows(batches: readonly number[], iterations: number): Promise<SingleThreadRow[]> {
  if (!nativeAvailable()) return [];
  const addon = loadAddon();
  const threadsBefore = addon.threads();
  const unet = await createUNet(CIFAR10_CONFIG, { backend: 'cpu', threads: 1, seed: 1 });
  const ortNode = await loadOrt('onnxruntime-node');
  const session = ortNode ? await createOrtSession('onnxruntime-node', ortNode.ort, unetToOnnx(unet), 1) : null;
  const rows: SingleThreadRow[] = [];
  try {
    for (const batch of batches) {
      const shape = [batch, 3, 32, 32];
      const sample = new Float32Array(batch * 3 * 32 * 32).map((_, i) => Math.sin(i));
      const timesteps = new Float32Array(batch).fill(500);
      const feeds = ortNode
        ? { sample: new ortNode.ort.Tensor('float32', sample, shape), timestep: new ortNode.ort.Tensor('float32', timesteps, [batch]) }
        : null;
      await unet.forward(sample, shape, 500); // warm-ups: plan the arena, let onnxruntime settle
      if (session && feeds) await session.run(feeds);
      const marbleMs: number[] = [];
      const ortMs: number[] = [];
      for (let i = 0; i < iterations; i++) {
        let t0 = performance.now();
        await unet.forward(sample, shape, 500);
        marbleMs.push(performance.now() - t0);
        if (session && feeds) {
          t0 = performance.now();
          await session.run(feeds);
          ortMs.push(performance.now() - t0);
        }
      }
      rows.push({ backend: 'cpu', isa: unet.backend.isa(), threads: 1, batch, ms: Math.round(median(marbleMs) * 10) / 10 });
      if (ortMs.length) rows.push({ backend: `onnxruntime-node ${ortNode!.version}`, isa: 'mlas', threads: 1, batch, ms: Math.round(median(ortMs) * 10) / 10 });
    }
  } finally {
    await session?.release();
    unet.dispose();
    addon.setThreads(threadsBefore);
  }
  return rows;
}
