// Many samples for measuring a model: `count` images drawn in batches,
// class labels cycling 0, 1, ..., n-1 over the whole set (so 1,000 samples
// of a 10-class model hold 100 of each digit, like the held-out set
// roughly does), returned as pixel rows in [0, 1].
import { InputError } from '../errors.js';
import { classConditioning } from '../model/config.js';
import type { UNet2DModel } from '../model/unet.js';
import { sample } from '../sampler.js';
import type { DDIMScheduler } from '../schedulers/ddim.js';
import type { DDPMScheduler } from '../schedulers/ddpm.js';
import type { Rows } from './distance.js';
import { toPixels } from './mnist_reference.js';

export interface GenerateOptions {
  unet: UNet2DModel;
  scheduler: DDPMScheduler | DDIMScheduler;
  count: number;
  steps: number;
  /** DDIM only. */
  eta?: number;
  /** Below 2^32: batch b draws its noise with seed (seed << 32) + b, so batches never share noise. */
  seed: number;
  batchSize: number;
  onBatch?: (done: number, total: number) => void;
  signal?: AbortSignal;
}

export interface Generated extends Rows {
  /** Class label of each row, or null for an unconditional model. */
  labels: number[] | null;
  /** Wall time of the sampling, seconds. */
  seconds: number;
}

export async function generateSamples(o: GenerateOptions): Promise<Generated> {
  if (!Number.isInteger(o.count) || o.count < 1) throw new InputError(`count must be a positive integer, got ${o.count}`);
  if (!Number.isInteger(o.batchSize) || o.batchSize < 1) throw new InputError(`batchSize must be a positive integer, got ${o.batchSize}`);
  if (!Number.isInteger(o.seed) || o.seed < 0 || o.seed >= 2 ** 32) throw new InputError(`seed must be an integer in [0, 2^32), got ${o.seed}`);
  const { unet } = o;
  const conditional = classConditioning(unet.config) === 'labels';
  const numClasses = conditional ? unet.config.numClassEmbeds! : 0;
  const labels: number[] | null = conditional ? Array.from({ length: o.count }, (_, i) => i % numClasses) : null;

  let data: Float32Array | null = null;
  let d = 0;
  const started = performance.now();
  for (let start = 0, batch = 0; start < o.count; start += o.batchSize, batch++) {
    const size = Math.min(o.batchSize, o.count - start);
    const result = await sample({
      unet,
      scheduler: o.scheduler,
      numInferenceSteps: o.steps,
      batchSize: size,
      seed: (BigInt(o.seed) << 32n) + BigInt(batch),
      eta: o.eta,
      classLabels: labels ? labels.slice(start, start + size) : undefined,
      signal: o.signal,
    });
    d = result.shape[1] * result.shape[2] * result.shape[3];
    data ??= new Float32Array(o.count * d);
    data.set(toPixels(result.samples), start * d);
    o.onBatch?.(start + size, o.count);
  }
  return { data: data!, n: o.count, d, labels, seconds: (performance.now() - started) / 1000 };
}
