// The demo's sampling thread: marble's browser bundle in a module Web Worker,
// so the page stays responsive. Messages in: {type: 'generate', ...settings},
// {type: 'stop'}. Out: loaded, step (with an x0 preview), done, stopped, error.
import { loadPipeline, sample, embeddedModel, samplesToImages, imagesToRgba } from '../../dist/browser/marble.js';

const pipelines = new Map(); // threads -> Promise<Pipeline>
let controller = null;

function pipelineFor(threads) {
  if (!pipelines.has(threads)) pipelines.set(threads, loadPipeline(embeddedModel(), { backend: 'wasm', threads }));
  return pipelines.get(threads);
}

async function generate({ digit, scheduler, steps, guidance, batch, seed, threads }) {
  controller = new AbortController();
  const pipe = await pipelineFor(threads);
  self.postMessage({ type: 'loaded', backend: pipe.unet.backend.describe() });
  const labels = Array.from({ length: batch }, (_, i) => (digit === 'mixed' ? i % 10 : Number(digit)));
  const { inChannels, sampleSize } = pipe.unet.config;
  const shape = [batch, inChannels, sampleSize, sampleSize];
  const started = performance.now();
  let last = started;
  const result = await sample({
    unet: pipe.unet,
    scheduler: pipe.scheduler(scheduler),
    numInferenceSteps: steps,
    // classifier-free guidance: the embedded model records its null class (1: none)
    guidanceScale: guidance,
    batchSize: batch,
    seed,
    classLabels: labels,
    preview: true,
    signal: controller.signal,
    onStep: async ({ index, total, predOriginalSample }) => {
      const now = performance.now();
      const preview = imagesToRgba(samplesToImages(predOriginalSample, shape));
      self.postMessage({ type: 'step', index, total, ms: now - last, preview });
      last = now;
      // Let a Stop message in between steps.
      await new Promise((resolve) => setTimeout(resolve, 0));
    },
  });
  const ms = performance.now() - started;
  self.postMessage({ type: 'done', images: result.images(), ms, msPerStep: ms / steps });
}

self.onmessage = async ({ data }) => {
  if (data.type === 'stop') {
    controller?.abort();
    return;
  }
  try {
    await generate(data);
  } catch (e) {
    if (e?.name === 'AbortError') self.postMessage({ type: 'stopped' });
    else self.postMessage({ type: 'error', message: `${e?.name}: ${e?.message}` });
  }
};
