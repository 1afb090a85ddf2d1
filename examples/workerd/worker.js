// A Cloudflare Worker that draws MNIST digits with marble's embedded model:
//   GET /digit?class=7&seed=1  ->  a 28x28 PNG
// workerd compiles no WebAssembly from bytes at run time, so marble.wasm and
// the model's files are modules declared in config.capnp, handed to marble as
// a precompiled module and a map of file bytes.
import { loadPipeline, sample, InputError } from './marble.js';
import wasmModule from './marble.wasm';
import unetConfig from './unet/config.json';
import unetWeights from './unet/diffusion_pytorch_model.safetensors';
import schedulerConfig from './scheduler/scheduler_config.json';

let pipeline = null; // loaded once per isolate, on the first request

async function pipe() {
  pipeline ??= loadPipeline(
    {
      'unet/config.json': new TextEncoder().encode(JSON.stringify(unetConfig)),
      'unet/diffusion_pytorch_model.safetensors': unetWeights,
      'scheduler/scheduler_config.json': new TextEncoder().encode(JSON.stringify(schedulerConfig)),
    },
    { backend: 'wasm', threads: 1, wasm: { single: wasmModule } },
  );
  return pipeline;
}

export default {
  async fetch(request) {
    const url = new URL(request.url);
    if (url.pathname !== '/digit') return new Response('GET /digit?class=0..9&seed=N\n', { status: 404 });
    const label = Number(url.searchParams.get('class') ?? 0);
    const seed = Number(url.searchParams.get('seed') ?? 0);
    try {
      const { unet, scheduler } = await pipe();
      const result = await sample({
        unet,
        scheduler: scheduler('ddim'),
        numInferenceSteps: 20,
        seed,
        classLabels: [label],
      });
      const memory = unet.backend.describe().memoryBytes;
      return new Response(result.png(), { headers: { 'content-type': 'image/png', 'x-wasm-memory-bytes': String(memory) } });
    } catch (e) {
      if (e instanceof InputError) return Response.json({ error: e.message }, { status: 400 });
      throw e;
    }
  },
};
