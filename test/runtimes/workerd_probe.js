// The workerd side of test/runtimes.test.ts (config: workerd.capnp beside
// this file): GET /probe?threads=N answers probe()'s JSON report, with the
// model from data modules and marble.wasm as a precompiled module.
import * as marble from './marble.js';
import { probe } from './probe.mjs';
import wasmModule from './marble.wasm';
import unetConfig from './unet/config.json';
import unetWeights from './unet/diffusion_pytorch_model.safetensors';
import schedulerConfig from './scheduler/scheduler_config.json';

const json = (value) => new TextEncoder().encode(JSON.stringify(value));

export default {
  async fetch(request) {
    const url = new URL(request.url);
    if (url.pathname !== '/probe') return new Response('GET /probe?threads=N\n', { status: 404 });
    const threads = Number(url.searchParams.get('threads') ?? 1);
    const files = {
      'unet/config.json': json(unetConfig),
      'unet/diffusion_pytorch_model.safetensors': new Uint8Array(unetWeights),
      'scheduler/scheduler_config.json': json(schedulerConfig),
    };
    const report = await probe(marble, { runtime: 'workerd', threads, sources: { files }, wasm: { single: wasmModule } });
    return Response.json(report);
  },
};
