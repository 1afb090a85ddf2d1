// DDIM-20, batch 1, on the embedded model: the median of 5 runs after one
// warm-up, in whichever runtime imports this (bench/runtimes.ts runs it in
// Node, Deno, Bun and Chromium). No imports: the caller hands in marble.
export async function ddim20(marble, { threads, source }) {
  const pipe = await marble.loadPipeline(source ?? marble.embeddedModel(), { backend: 'wasm', threads });
  try {
    const run = () => marble.sample({ unet: pipe.unet, scheduler: pipe.scheduler('ddim'), numInferenceSteps: 20, seed: 0, classLabels: [3] });
    await run();
    const times = [];
    for (let i = 0; i < 5; i++) {
      const started = performance.now();
      await run();
      times.push(performance.now() - started);
    }
    times.sort((a, b) => a - b);
    return { backend: pipe.unet.backend.describe(), medianMs: times[2], minMs: times[0], maxMs: times[4] };
  } finally {
    pipe.dispose();
  }
}
