// Model sources (src/core/model/source.ts) and streamed weights
// (weights_stream.ts): a folder path, a URL and a map of bytes (Uint8Array,
// ArrayBuffer, Blob, Response, promises of them) load the same model; a
// download streams into the engine tensor by tensor, reports progress and
// can be aborted; every bad source is a typed error.
import './../src/node/host.js';
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import path from 'node:path';

import { InputError, SafetensorsError, SourceError, WeightsError, loadPipeline, loadUNet } from '../src/index.js';
import type { UNet2DModel } from '../src/index.js';
import type { EngineModel, ParamInfo } from '../src/core/backend/backend.js';
import { parseSafetensors, tensorToFloat32 } from '../src/core/model/safetensors.js';
import { streamWeights } from '../src/core/model/weights_stream.js';
import { fixturePath } from './helpers.js';
import { startStaticServer } from './support/static_server.js';
import type { StaticServer } from './support/static_server.js';

const TINY = fixturePath('unet/tiny');
let server: StaticServer;
let config: Uint8Array;
let weights: Uint8Array;

before(async () => {
  server = await startStaticServer(path.dirname(TINY));
  config = new Uint8Array(await readFile(path.join(TINY, 'config.json')));
  weights = new Uint8Array(await readFile(path.join(TINY, 'diffusion_pytorch_model.safetensors')));
});
after(() => server.close());

/** A stream of `bytes` in chunks of `size`, recording how much was handed out. */
function chunked(bytes: Uint8Array, size: number, delivered = { bytes: 0 }): ReadableStream<Uint8Array> {
  let at = 0;
  return new ReadableStream({
    pull(controller) {
      if (at >= bytes.length) return controller.close();
      const chunk = bytes.slice(at, at + size);
      at += chunk.length;
      delivered.bytes = at;
      controller.enqueue(chunk);
    },
  });
}

async function forwardOf(unet: UNet2DModel): Promise<Float32Array> {
  const [c, h, w] = [unet.config.inChannels, 16, 16];
  const x = Float32Array.from({ length: 2 * c * h * w }, (_, i) => Math.sin(i));
  try {
    return await unet.forward(x, [2, c, h, w], [10, 500]);
  } finally {
    unet.dispose();
  }
}

test('tensors reach the engine while the file is still arriving, with the values of the whole file, for any chunking', async () => {
  const file = parseSafetensors(weights);
  const table: ParamInfo[] = [...file.tensors.values()].map(({ name, shape }) => ({ name, shape }));
  for (const size of [13, 4096, 1 << 20]) {
    const delivered = { bytes: 0 };
    const seen: { index: number; data: Float32Array; deliveredBytes: number }[] = [];
    const engine = { setParam: (index: number, data: Float32Array) => seen.push({ index, data, deliveredBytes: delivered.bytes }) } as unknown as EngineModel;
    await streamWeights({ size: weights.length, body: chunked(weights, size, delivered) }, 'tiny', engine, table, (header) => new Map([...header.tensors.keys()].map((n) => [n, n])));
    assert.equal(seen.length, table.length, `chunks of ${size}: every tensor set once`);
    for (const { index, data } of seen) assert.deepEqual(data, tensorToFloat32(file, table[index]!.name));
    if (size < weights.length / 4) {
      const first = Math.min(...seen.map((s) => s.deliveredBytes));
      assert.ok(first < weights.length / 2, `chunks of ${size}: the first tensor was set after ${first} of ${weights.length} bytes`);
    }
  }
});

test('a folder path, a URL and a map of Uint8Array / ArrayBuffer / Blob / Response / promises load the same model', async () => {
  const reference = await forwardOf(await loadUNet(TINY, { backend: 'cpu' }));
  const sources = {
    url: `${server.url}plain/tiny/`,
    urlObject: new URL(`${server.url}plain/tiny`),
    uint8: { 'config.json': config, 'diffusion_pytorch_model.safetensors': weights },
    arrayBuffer: { 'config.json': config.slice().buffer, 'diffusion_pytorch_model.safetensors': weights.slice().buffer },
    blobAndResponse: { 'config.json': new Blob([config as Uint8Array<ArrayBuffer>]), 'diffusion_pytorch_model.safetensors': new Response(weights as Uint8Array<ArrayBuffer>) },
    promises: new Map<string, Promise<Uint8Array | Blob>>([
      ['./config.json', Promise.resolve(config)],
      ['diffusion_pytorch_model.safetensors', Promise.resolve(new Blob([weights as Uint8Array<ArrayBuffer>]))],
    ]),
  };
  for (const [kind, source] of Object.entries(sources))
    assert.deepEqual(await forwardOf(await loadUNet(source, { backend: 'cpu' })), reference, kind);
});

test('a download reports progress up to its size, and an abort stops it with an AbortError', async () => {
  const progress: number[] = [];
  const pipe = await loadPipeline(`${server.url}plain/tiny/`, {
    backend: 'cpu',
    onProgress: ({ file, loaded, total }) => {
      assert.equal(file, 'diffusion_pytorch_model.safetensors');
      assert.equal(total, weights.length);
      progress.push(loaded);
    },
  });
  pipe.dispose();
  assert.ok(progress.length >= 1 && progress.every((v, i) => i === 0 || v >= progress[i - 1]!), `monotone: ${progress}`);
  assert.equal(progress.at(-1), weights.length);

  // A slow server: the abort lands mid-stream.
  const controller = new AbortController();
  let cancelled = false;
  const slowFetch = async (url: URL) => {
    if (!url.pathname.endsWith('.safetensors')) return fetch(url);
    let at = 0;
    const body = new ReadableStream<Uint8Array>({
      async pull(c) {
        if (at === 1024) controller.abort();
        await new Promise((r) => setTimeout(r, 5));
        c.enqueue(weights.slice(at, at + 512));
        at += 512;
      },
      cancel() {
        cancelled = true;
      },
    });
    return new Response(body, { headers: { 'content-length': String(weights.length) } });
  };
  await assert.rejects(loadUNet(`${server.url}plain/tiny/`, { backend: 'cpu', fetch: slowFetch, signal: controller.signal }), { name: 'AbortError' });
  assert.ok(cancelled, 'the download was cancelled');
});

test('bad sources are typed errors: HTTP failures, missing files, truncated streams, wrong types', async () => {
  const failing = async () => new Response('no', { status: 503, statusText: 'Service Unavailable' });
  await assert.rejects(loadUNet('https://models.invalid/tiny/', { fetch: failing }), (e) => e instanceof SourceError && /503/.test(e.message));
  const offline = async () => {
    throw new TypeError('fetch failed');
  };
  await assert.rejects(loadUNet('https://models.invalid/tiny/', { fetch: offline }), SourceError);
  await assert.rejects(loadUNet({ 'config.json': config }, { backend: 'cpu' }), (e) => e instanceof WeightsError && /missing/.test(e.message));
  await assert.rejects(loadUNet({}, { backend: 'cpu' }), /neither a UNet2DModel folder/);
  await assert.rejects(loadUNet({ 'config.json': config, 'diffusion_pytorch_model.safetensors': 42 as unknown as Uint8Array }), InputError);
  await assert.rejects(loadUNet(42 as unknown as string), InputError);
  await assert.rejects(loadUNet('', {}), InputError);
  // A stream that ends early, with and without Content-Length.
  for (const size of [weights.length, null]) {
    const body = chunked(weights.slice(0, weights.length - 100), 4096);
    const headers: Record<string, string> = size === null ? {} : { 'content-length': String(size) };
    const truncated = async (url: URL) =>
      url.pathname.endsWith('.safetensors') ? new Response(body, { headers }) : new Response(config as Uint8Array<ArrayBuffer>);
    await assert.rejects(loadUNet('https://models.invalid/tiny/', { backend: 'cpu', fetch: truncated }), (e) => e instanceof SafetensorsError && /truncated/.test(e.message));
  }
});
