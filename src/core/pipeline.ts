// A diffusers pipeline (unet/ + scheduler/scheduler_config.json) or a bare
// UNet2DModel folder, from a path, a URL or a map of file bytes.
import { ConfigError } from './errors.js';
import { loadUNetFrom, resolveModelSource } from './model/unet.js';
import type { LoadOptions, UNet2DModel } from './model/unet.js';
import { fileSource, readJson } from './model/source.js';
import type { ModelSource, SourceOptions } from './model/source.js';
import { parsePythonJson } from './schedulers/config_json.js';
import { DDIMScheduler } from './schedulers/ddim.js';
import { DDPMScheduler } from './schedulers/ddpm.js';
import { isSolverName, solverFromConfig } from './schedulers/solvers.js';
import type { SolverName, SolverScheduler } from './schedulers/solvers.js';

export type SchedulerName = 'ddpm' | 'ddim' | SolverName;

export interface Pipeline {
  unet: UNet2DModel;
  /** The folder's scheduler config (diffusers' snake_case), or null when it has none. */
  schedulerConfig: Record<string, unknown> | null;
  /** model_index.json, or null when the folder has none (a bare UNet2DModel folder). */
  modelIndex: Record<string, unknown> | null;
  /**
   * A scheduler of the kind asked for, built from the folder's config (DDPM
   * defaults without one): 'ddpm', 'ddim', or a solver ('dpm++', 'unipc',
   * 'euler', 'euler-a', 'heun'; `karras: true` sets use_karras_sigmas).
   */
  scheduler(kind: 'ddpm' | 'ddim'): DDPMScheduler | DDIMScheduler;
  scheduler(kind: SolverName, options?: { karras?: boolean }): SolverScheduler;
  scheduler(kind: SchedulerName, options?: { karras?: boolean }): DDPMScheduler | DDIMScheduler | SolverScheduler;
  /** Frees the UNet and the backend it started. */
  dispose(): void;
}

export type PipelineOptions = LoadOptions & SourceOptions;

function objectOrNull(value: unknown, what: string): Record<string, unknown> | null {
  if (value === null) return null;
  if (typeof value !== 'object' || Array.isArray(value)) throw new ConfigError(`${what} is not a JSON object`);
  return value as Record<string, unknown>;
}

/**
 * A diffusers pipeline folder (unet/ + scheduler/) or a bare UNet2DModel
 * folder, for sampling: a folder path (Node, Deno, Bun), a URL or URL string
 * (fetched; weights stream, with onProgress and signal), or an object mapping
 * relative file names ('unet/config.json', ...) to bytes. Unless
 * `keepWeights: true`, its UNet keeps only the packed weights (half the
 * memory; it cannot train or be read back).
 */
export async function loadPipeline(source: ModelSource, options: PipelineOptions = {}): Promise<Pipeline> {
  const root = fileSource(source, options);
  const { model, config } = await resolveModelSource(root, options.signal);
  const pipelineRoot = model === root ? null : root;
  // Python's json writes -Infinity / NaN (DPMSolverMultistep's lambda_min_clipped).
  const schedulerConfig = pipelineRoot
    ? objectOrNull(await readJson(pipelineRoot.sub('scheduler'), 'scheduler_config.json', options.signal, parsePythonJson), 'scheduler_config.json')
    : null;
  const modelIndex = pipelineRoot ? objectOrNull(await readJson(pipelineRoot, 'model_index.json', options.signal), 'model_index.json') : null;
  // A pipeline samples: by default its UNet keeps only the packed weights.
  const unet = await loadUNetFrom(model, config, { ...options, keepWeights: options.keepWeights ?? false });
  return {
    unet,
    schedulerConfig,
    modelIndex,
    scheduler: ((kind: SchedulerName, schedulerOptions: { karras?: boolean } = {}) => {
      const json = schedulerConfig ?? {};
      if (isSolverName(kind)) return solverFromConfig(kind, json, schedulerOptions);
      if (kind === 'ddim') return DDIMScheduler.fromConfig(json);
      if (kind === 'ddpm') return DDPMScheduler.fromConfig(json);
      throw new ConfigError(`unknown scheduler ${JSON.stringify(kind)} (ddpm, ddim, dpm++, unipc, euler, euler-a, heun)`);
    }) as Pipeline['scheduler'],
    dispose: () => unet.dispose(),
  };
}
