// Many samples for measuring a model: `count` images drawn in batches,
// class labels cycling 0, 1, ..., n-1 over the whole set (so 1,000 samples
// of a 10-class model hold 100 of each digit, like the held-out set
// roughly does), returned as pixel rows in [0, 1].
//
// With a cache folder, every finished batch is written there (atomically)
// under a key of everything that determines it, and a later run with the
// same key reads it back instead of sampling again: a 1000-step evaluation
// of 1,000 digits takes hours on two cores, so it must survive interruption
// and may be spread over several runs.
import { createHash } from 'node:crypto';
import { mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import path from 'node:path';

import { InputError } from '../core/errors.js';
import { classConditioning, dataClassCount } from '../core/model/config.js';
import type { UNet2DModel } from '../core/model/unet.js';
import { sample } from '../core/sampler.js';
import type { DDIMScheduler } from '../core/schedulers/ddim.js';
import type { DDPMScheduler } from '../core/schedulers/ddpm.js';
import type { SolverScheduler } from '../core/schedulers/solvers.js';
import type { Rows } from './distance.js';
import { toPixels } from './mnist_reference.js';

export interface GenerateOptions {
  unet: UNet2DModel;
  scheduler: DDPMScheduler | DDIMScheduler | SolverScheduler;
  count: number;
  steps: number;
  /** DDIM only. */
  eta?: number;
  /** DDIM only: re-derive epsilon from the clipped x0 (diffusers' use_clipped_model_output). */
  useClippedModelOutput?: boolean;
  /** Classifier-free guidance scale (models trained with label dropout); default 1, none. */
  guidanceScale?: number;
  /** Below 2^32: batch b draws its noise with seed (seed << 32) + b, so batches never share noise. */
  seed: number;
  batchSize: number;
  onBatch?: (done: number, total: number, fromCache: boolean) => void;
  signal?: AbortSignal;
  /** Folder for finished batches (see the file header), with `modelKey` naming the weights. */
  cache?: { dir: string; modelKey: string };
}

interface CachedBatch {
  pixels: Float32Array;
  seconds: number;
}

/** Everything a batch's pixels depend on, hashed into its file name. */
function batchKey(o: GenerateOptions, batch: number, size: number): string {
  const what = {
    model: o.cache!.modelKey,
    backend: o.unet.backend.name,
    scheduler: o.scheduler.constructor.name,
    schedulerConfig: o.scheduler.config,
    steps: o.steps,
    eta: o.eta ?? null,
    seed: o.seed,
    batchSize: o.batchSize,
    batch,
    size,
    count: o.count,
    // only when set, so the keys of batches cached before this option existed still match
    ...(o.useClippedModelOutput ? { useClippedModelOutput: true } : {}),
    ...(o.guidanceScale !== undefined && o.guidanceScale !== 1 ? { guidanceScale: o.guidanceScale } : {}),
  };
  return createHash('sha256').update(JSON.stringify(what)).digest('hex').slice(0, 32);
}

async function readCachedBatch(file: string, floats: number): Promise<CachedBatch | null> {
  try {
    const meta = JSON.parse(await readFile(`${file}.json`, 'utf8')) as { seconds: number; floats: number };
    const bytes = await readFile(`${file}.f32`);
    if (meta.floats !== floats || bytes.length !== floats * 4) return null;
    const pixels = new Float32Array(floats);
    new Uint8Array(pixels.buffer).set(bytes);
    return { pixels, seconds: meta.seconds };
  } catch {
    return null;  // absent or unreadable: sample it again
  }
}

async function writeCachedBatch(file: string, batch: CachedBatch): Promise<void> {
  await mkdir(path.dirname(file), { recursive: true });
  // data first, then the meta that vouches for it, each by rename
  await writeFile(`${file}.f32.tmp`, new Uint8Array(batch.pixels.buffer, batch.pixels.byteOffset, batch.pixels.byteLength));
  await rename(`${file}.f32.tmp`, `${file}.f32`);
  await writeFile(`${file}.json.tmp`, JSON.stringify({ seconds: batch.seconds, floats: batch.pixels.length }));
  await rename(`${file}.json.tmp`, `${file}.json`);
}

/** A key for a model folder's weights: the hash of its safetensors files' bytes. */
export async function modelCacheKey(files: string[]): Promise<string> {
  const hash = createHash('sha256');
  for (const file of [...files].sort()) hash.update(await readFile(file));
  return hash.digest('hex').slice(0, 32);
}

export interface Generated extends Rows {
  /** Class label of each row, or null for an unconditional model. */
  labels: number[] | null;
  /** Wall time of the sampling, seconds. */
  seconds: number;
}

function sampleSide(size: number | [number, number] | null): [number, number] {
  if (size === null) throw new InputError('the model config has no sample_size: cannot tell what size to sample');
  return Array.isArray(size) ? [size[0], size[1]] : [size, size];
}

export async function generateSamples(o: GenerateOptions): Promise<Generated> {
  if (!Number.isInteger(o.count) || o.count < 1) throw new InputError(`count must be a positive integer, got ${o.count}`);
  if (!Number.isInteger(o.batchSize) || o.batchSize < 1) throw new InputError(`batchSize must be a positive integer, got ${o.batchSize}`);
  if (!Number.isInteger(o.seed) || o.seed < 0 || o.seed >= 2 ** 32) throw new InputError(`seed must be an integer in [0, 2^32), got ${o.seed}`);
  const { unet } = o;
  const conditional = classConditioning(unet.config) === 'labels';
  // The data's classes: a model trained for guidance has one more embedding, its null class.
  const numClasses = conditional ? dataClassCount(unet.config) : 0;
  const labels: number[] | null = conditional ? Array.from({ length: o.count }, (_, i) => i % numClasses) : null;

  const [channels, height, width] = [unet.config.inChannels, ...sampleSide(unet.config.sampleSize)];
  const d = channels * height * width;
  const data = new Float32Array(o.count * d);
  // Sampling time: this run's batches plus the recorded time of cached ones.
  let seconds = 0;
  for (let start = 0, batch = 0; start < o.count; start += o.batchSize, batch++) {
    const size = Math.min(o.batchSize, o.count - start);
    const file = o.cache ? path.join(o.cache.dir, batchKey(o, batch, size)) : null;
    const cached = file ? await readCachedBatch(file, size * d) : null;
    if (cached) {
      data.set(cached.pixels, start * d);
      seconds += cached.seconds;
      o.onBatch?.(start + size, o.count, true);
      continue;
    }
    const started = performance.now();
    const result = await sample({
      unet,
      scheduler: o.scheduler,
      numInferenceSteps: o.steps,
      batchSize: size,
      seed: (BigInt(o.seed) << 32n) + BigInt(batch),
      eta: o.eta,
      useClippedModelOutput: o.useClippedModelOutput,
      guidanceScale: o.guidanceScale,
      classLabels: labels ? labels.slice(start, start + size) : undefined,
      signal: o.signal,
    });
    if (result.shape[1] * result.shape[2] * result.shape[3] !== d) throw new InputError('sample shape differs from the model config');
    const pixels = toPixels(result.samples);
    const batchSeconds = (performance.now() - started) / 1000;
    seconds += batchSeconds;
    data.set(pixels, start * d);
    if (file) await writeCachedBatch(file, { pixels, seconds: batchSeconds });
    o.onBatch?.(start + size, o.count, false);
  }
  return { data, n: o.count, d, labels, seconds };
}
