// A diffusers pipeline folder: unet/ (or a bare model folder) plus an
// optional scheduler/scheduler_config.json.
import { readFile } from 'node:fs/promises';
import path from 'node:path';

import { ConfigError } from './errors.js';
import { loadUNet, resolveModelDir } from './model/unet.js';
import type { LoadOptions, UNet2DModel } from './model/unet.js';
import { DDIMScheduler } from './schedulers/ddim.js';
import { DDPMScheduler } from './schedulers/ddpm.js';
import { parsePythonJson } from './schedulers/config_json.js';
import { isSolverName, solverFromConfig, type SolverName, type SolverScheduler } from './schedulers/solvers.js';

export interface Pipeline {
  unet: UNet2DModel;
  /** The folder's scheduler config (diffusers' snake_case), or null when it has none. */
  schedulerConfig: Record<string, unknown> | null;
  /**
   * A scheduler of the kind asked for, built from the folder's config (DDPM
   * defaults without one): 'ddpm', 'ddim', or a solver ('dpm++', 'unipc',
   * 'euler', 'euler-a', 'heun'; `karras: true` sets use_karras_sigmas).
   */
  scheduler(kind: 'ddpm' | 'ddim'): DDPMScheduler | DDIMScheduler;
  scheduler(kind: SolverName, options?: { karras?: boolean }): SolverScheduler;
  scheduler(kind: 'ddpm' | 'ddim' | SolverName, options?: { karras?: boolean }): DDPMScheduler | DDIMScheduler | SolverScheduler;
}

/**
 * A diffusers pipeline folder (unet/ + scheduler/) or a bare UNet2DModel
 * folder, for sampling: unless `keepWeights: true`, its UNet keeps only the
 * packed weights (half the memory; it cannot train or be read back).
 */
export async function loadPipeline(dir: string, options: LoadOptions = {}): Promise<Pipeline> {
  const modelDir = await resolveModelDir(dir);
  const root = path.basename(modelDir) === 'unet' && modelDir !== dir ? path.dirname(modelDir) : dir;
  let schedulerConfig: Record<string, unknown> | null = null;
  const configPath = path.join(root, 'scheduler', 'scheduler_config.json');
  try {
    // Python's json writes -Infinity / NaN (DPMSolverMultistep's lambda_min_clipped).
    schedulerConfig = parsePythonJson(await readFile(configPath, 'utf8')) as Record<string, unknown>;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw new ConfigError(`${configPath}: ${(e as Error).message}`);
  }
  // A pipeline samples: by default its UNet keeps only the packed weights.
  const unet = await loadUNet(modelDir, { ...options, keepWeights: options.keepWeights ?? false });
  return {
    unet,
    schedulerConfig,
    scheduler: ((kind: 'ddpm' | 'ddim' | SolverName, options: { karras?: boolean } = {}) => {
      const json = schedulerConfig ?? {};
      if (isSolverName(kind)) return solverFromConfig(kind, json, options);
      return kind === 'ddim' ? DDIMScheduler.fromConfig(json) : DDPMScheduler.fromConfig(json);
    }) as Pipeline['scheduler'],
  };
}
