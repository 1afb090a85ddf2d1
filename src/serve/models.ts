// The models a service serves: operator-given names mapped to folders
// (requests name a model, never a path), loaded onto a backend, or only
// described (an API node in front of Redis workers loads no weights).
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import path from 'node:path';

import { DDPMScheduler, loadPipeline, parseUNet2DConfig } from '../index.js';
import type { Pipeline, UNet2DConfig } from '../index.js';
import { dataClassCount } from '../core/model/config.js';
import type { ModelSummary } from './spec.js';

export interface ModelSpec {
  name: string;
  /** a diffusers pipeline folder (unet/, scheduler/) or a UNet2DModel folder */
  path: string;
}

export type BackendChoice = 'auto' | 'cpu' | 'wasm' | 'cuda';

const NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

/** "NAME=PATH" (a --model flag) as a ModelSpec. */
export function parseModelFlag(value: string): ModelSpec {
  const eq = value.indexOf('=');
  if (eq <= 0) throw new Error(`--model ${value}: expected NAME=PATH`);
  const spec = { name: value.slice(0, eq), path: value.slice(eq + 1) };
  checkModelSpecs([spec]);
  return spec;
}

export function checkModelSpecs(specs: ModelSpec[]): void {
  if (specs.length === 0) throw new Error('no models to serve');
  const seen = new Set<string>();
  for (const s of specs) {
    if (!NAME.test(s.name)) throw new Error(`model name ${JSON.stringify(s.name)}: use 1 to 64 letters, digits, '.', '_' or '-'`);
    if (seen.has(s.name)) throw new Error(`model name ${s.name} is given twice`);
    if (!s.path) throw new Error(`model ${s.name}: no path`);
    seen.add(s.name);
  }
}

function summarize(name: string, config: UNet2DConfig, trainTimesteps: number, backend: string, dtype: string, parameters: number | null): ModelSummary {
  const size = config.sampleSize;
  return {
    name,
    sampleSize: size === null ? null : Array.isArray(size) ? [size[0], size[1]] : [size, size],
    inChannels: config.inChannels,
    numClasses: config.numClassEmbeds !== null && config.classEmbedType === null ? dataClassCount(config) : null,
    guidance: config.guidance !== null,
    sizeMultiple: 2 ** (config.blockOutChannels.length - 1),
    backend,
    dtype,
    parameters,
    blockOutChannels: config.blockOutChannels.slice(),
    trainTimesteps,
  };
}

async function readJson(file: string): Promise<Record<string, unknown> | null> {
  if (!existsSync(file)) return null;
  return JSON.parse(await readFile(file, 'utf8')) as Record<string, unknown>;
}

/** A model's summary from its folder's config files alone (no weights). */
export async function describeModel(spec: ModelSpec): Promise<ModelSummary> {
  const unetDir = existsSync(path.join(spec.path, 'config.json')) ? spec.path : path.join(spec.path, 'unet');
  const config = await readJson(path.join(unetDir, 'config.json'));
  if (!config) throw new Error(`model ${spec.name}: ${spec.path} is neither a UNet2DModel folder nor a pipeline folder`);
  const root = unetDir === spec.path ? spec.path : path.dirname(unetDir);
  const schedulerConfig = await readJson(path.join(root, 'scheduler', 'scheduler_config.json'));
  const trainTimesteps = DDPMScheduler.fromConfig(schedulerConfig ?? {}).config.numTrainTimesteps;
  return summarize(spec.name, parseUNet2DConfig(config), trainTimesteps, 'remote', 'float32', null);
}

export interface LoadedModel {
  summary: ModelSummary;
  pipeline: Pipeline;
}

/** Loads every model onto the backend (disposing those loaded already when one fails). */
export async function loadModels(
  specs: ModelSpec[],
  options: { backend?: BackendChoice; threads?: number; memoryLimitBytes?: number } = {},
): Promise<LoadedModel[]> {
  checkModelSpecs(specs);
  const loaded: LoadedModel[] = [];
  try {
    for (const spec of specs) {
      const pipeline = await loadPipeline(spec.path, { backend: options.backend ?? 'auto', threads: options.threads, memoryLimitBytes: options.memoryLimitBytes });
      const { unet } = pipeline;
      const trainTimesteps = pipeline.scheduler('ddpm').config.numTrainTimesteps;
      loaded.push({ summary: summarize(spec.name, unet.config, trainTimesteps, unet.backend.name, unet.dtype, unet.parameterCount), pipeline });
    }
  } catch (e) {
    for (const m of loaded) m.pipeline.unet.dispose();
    throw e;
  }
  return loaded;
}
