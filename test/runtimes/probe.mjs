// One runtime's report for test/runtimes.test.ts: the embedded model sampled
// (DDIM 10 steps, batch 4, seed 0, philox) from every source this runtime
// has (a folder path, a URL, a map of file bytes), plus a truncated
// safetensors file that must be a typed error. Plain ES module with no
// imports, so Node, Deno, Bun, workerd and a browser's Web Worker all run
// this same file: the caller hands it the marble module and the sources.
//
//   probe(marble, { runtime, threads, sources: { path?, url?, files }, wasm? })
//   -> { runtime, backend, sources: { [kind]: { samples (base64), ms } }, png (base64), truncated }

const SAMPLE = { numInferenceSteps: 10, batchSize: 4, seed: 0, generator: 'philox', classLabels: [0, 1, 2, 3] };

function base64(bytes) {
  let text = '';
  for (let i = 0; i < bytes.length; i += 0x8000) text += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(text);
}

export async function probe(marble, { runtime, threads, sources, wasm }) {
  const { loadPipeline, sample, SafetensorsError } = marble;
  const report = { runtime, sources: {} };
  let png = null;
  for (const [kind, source] of Object.entries(sources)) {
    if (source === undefined) continue;
    const started = performance.now();
    const pipe = await loadPipeline(source, { backend: 'wasm', threads, wasm });
    const loaded = performance.now();
    try {
      report.backend ??= pipe.unet.backend.describe();
      const result = await sample({ unet: pipe.unet, scheduler: pipe.scheduler('ddim'), ...SAMPLE });
      report.sources[kind] = {
        samples: base64(new Uint8Array(result.samples.buffer, result.samples.byteOffset, result.samples.byteLength)),
        loadMs: Math.round(loaded - started),
        sampleMs: Math.round(performance.now() - loaded),
      };
      png ??= result.png();
      report.rgbaBytes = result.images().reduce((n, image) => n + image.data.length, 0);
    } finally {
      pipe.dispose();
    }
  }
  report.png = base64(png);

  // A truncated weights file: the typed error, not a crash or a hang.
  const weights = sources.files['unet/diffusion_pytorch_model.safetensors'];
  const bytes = weights instanceof Uint8Array ? weights : new Uint8Array(weights);
  const truncated = { ...sources.files, 'unet/diffusion_pytorch_model.safetensors': bytes.slice(0, Math.floor(bytes.length / 2)) };
  try {
    const pipe = await loadPipeline(truncated, { backend: 'wasm', threads: 1, wasm });
    pipe.dispose();
    report.truncated = 'loaded';
  } catch (e) {
    report.truncated = e instanceof SafetensorsError ? 'SafetensorsError' : `${e?.name}: ${e?.message}`;
  }
  // benchmark() through the same core, where the runtime's clock runs (not workerd's).
  if (sources.path ?? sources.url) {
    const bench = await marble.benchmark({ model: sources.path ?? sources.url, backends: ['cpu', 'wasm', 'wasm-1'], batches: [1], steps: 2, iterations: 1, wasm });
    report.bench = { rows: bench.rows.map((r) => `${r.backend} ${r.identity.threads}`), skipped: bench.skipped.map((s) => s.backend) };
  }
  return report;
}

/** The embedded model's files, fetched from `base` (a URL of the package root), as a map of bytes. */
export async function fetchModelFiles(base) {
  const files = {};
  for (const name of ['model_index.json', 'unet/config.json', 'unet/diffusion_pytorch_model.safetensors', 'scheduler/scheduler_config.json']) {
    const response = await fetch(new URL(`models/mnist/${name}`, base));
    if (!response.ok) throw new Error(`${name}: HTTP ${response.status}`);
    files[name] = new Uint8Array(await response.arrayBuffer());
  }
  return files;
}
