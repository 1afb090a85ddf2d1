// One process of bench/small.ts: times unet.forward for one backend and thread
// count over the small models and batches it is given, and prints one JSON
// line per (model, batch); on marble's backends also sample() DDIM-20 of one
// image (the "one digit"), what a user waits for. A process of its own per configuration, because
// the cpu addon's pool is one per process and onnxruntime-web's thread count
// is global and fixed by its first session.
//
//   node dist/bench/small_child.js <backend> <threads> <models,...> <batches,...> <iterations>
//   backend: cpu | wasm | wasm-single | ort-node | ort-web
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { DDIMScheduler, loadUNet, sample } from '../src/index.js';
import type { LoadOptions, UNet2DModel } from '../src/index.js';
import { wasmPath } from '../src/node/wasm.js';
import { createWasmBackend } from '../src/web/wasm.js';
import { unetToOnnx } from '../src/onnx/export.js';
import { createOrtSession, loadOrt } from '../src/node/onnxruntime.js';

const [backend = 'cpu', threadsArg = '1', modelsArg = 'mnist', batchesArg = '1', itersArg = '30'] = process.argv.slice(2);
const threads = Number(threadsArg);
const iterations = Number(itersArg);
const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
/** The small models: the embedded one and the smallest diffusers fixture. */
const MODEL_DIRS: Record<string, string> = {
  mnist: path.join(root, 'models', 'mnist'),
  tiny: path.join(root, 'test', 'fixtures', 'unet', 'tiny'),
};
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

async function load(dir: string): Promise<UNet2DModel> {
  if (backend === 'cpu' || backend === 'ort-node' || backend === 'ort-web') return loadUNet(dir, { backend: 'cpu', threads });
  if (backend === 'wasm-single') {
    const single = await createWasmBackend({ threads: 1, single: readFileSync(wasmPath()) } as Parameters<typeof createWasmBackend>[0]);
    return loadUNet(dir, { backend: single } as LoadOptions);
  }
  return loadUNet(dir, { backend: 'wasm', threads });
}

for (const model of modelsArg.split(',')) {
  const unet = await load(MODEL_DIRS[model]!);
  const c = unet.config;
  const ortName = backend === 'ort-node' ? 'onnxruntime-node' : backend === 'ort-web' ? 'onnxruntime-web' : null;
  const ort = ortName ? await loadOrt(ortName) : null;
  if (ortName && !ort) {
    unet.dispose();
    console.log(JSON.stringify({ model, skipped: `${ortName} is not installed (npm run bench:ort)` }));
    continue;
  }
  const session = ort ? await createOrtSession(ortName!, ort.ort, unetToOnnx(unet), threads) : null;
  for (const batch of batchesArg.split(',').map(Number)) {
    const size = c.sampleSize ?? 32;
    const shape = [batch, c.inChannels, ...(typeof size === 'number' ? [size, size] : size)];
    const x = new Float32Array(shape.reduce((a, b) => a * b, 1)).map((_, i) => Math.sin(i));
    const labels = c.numClassEmbeds ? Array.from({ length: batch }, (_, i) => i % c.numClassEmbeds!) : undefined;
    const t = Array.from({ length: batch }, (_, i) => 100 + 37 * i);
    let run: () => Promise<unknown>;
    if (session && ort) {
      const feeds: Record<string, unknown> = {
        sample: new ort.ort.Tensor('float32', x, shape),
        timestep: new ort.ort.Tensor('float32', Float32Array.from(t), [batch]),
      };
      if (labels) feeds.class_labels = new ort.ort.Tensor('int64', BigInt64Array.from(labels.map(BigInt)), [batch]);
      run = () => session.run(feeds as never);
    } else {
      run = () => unet.forward(x, shape, t, labels);
    }
    for (let i = 0; i < 3; i++) await run(); // plan the arena, wake the pools
    const ms: number[] = [];
    for (let i = 0; i < iterations; i++) {
      const t0 = performance.now();
      await run();
      ms.push(performance.now() - t0);
    }
    console.log(JSON.stringify({ model, batch, what: 'forward', ms: median(ms), min: Math.min(...ms), isa: unet.backend.isa(), version: ort?.version }));
  }
  if (!ort && batchesArg.split(',').includes('1')) {
    // The whole sampling loop: 20 forwards and steps, noise, the copies out.
    const digit = () =>
      sample({ unet, scheduler: new DDIMScheduler(), numInferenceSteps: 20, batchSize: 1, seed: 0, classLabels: c.numClassEmbeds ? [3] : undefined });
    await digit();
    const ms: number[] = [];
    for (let i = 0; i < Math.max(3, Math.floor(iterations / 5)); i++) {
      const t0 = performance.now();
      await digit();
      ms.push(performance.now() - t0);
    }
    console.log(JSON.stringify({ model, batch: 1, what: 'sample DDIM-20', ms: median(ms), min: Math.min(...ms), isa: unet.backend.isa() }));
  }
  await session?.release();
  unet.dispose();
}
