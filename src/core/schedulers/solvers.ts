// The multistep and sigma-space schedulers as one family: the type the
// sampler accepts, and construction by the short names the CLI and
// pipelines use (dpm++, unipc, euler, euler-a, heun).

import { ConfigError } from '../errors.js';
import { DPMSolverMultistepScheduler } from './dpmsolver.js';
import { EulerAncestralDiscreteScheduler, EulerDiscreteScheduler } from './euler.js';
import { HeunDiscreteScheduler } from './heun.js';
import { UniPCMultistepScheduler } from './unipc.js';

export type SolverScheduler =
  | DPMSolverMultistepScheduler
  | UniPCMultistepScheduler
  | EulerDiscreteScheduler
  | EulerAncestralDiscreteScheduler
  | HeunDiscreteScheduler;

export function isSolverScheduler(s: unknown): s is SolverScheduler {
  return (
    s instanceof DPMSolverMultistepScheduler ||
    s instanceof UniPCMultistepScheduler ||
    s instanceof EulerDiscreteScheduler ||
    s instanceof EulerAncestralDiscreteScheduler ||
    s instanceof HeunDiscreteScheduler
  );
}

export const SOLVER_NAMES = ['dpm++', 'unipc', 'euler', 'euler-a', 'heun'] as const;
export type SolverName = (typeof SOLVER_NAMES)[number];

export function isSolverName(name: string): name is SolverName {
  return (SOLVER_NAMES as readonly string[]).includes(name);
}

/**
 * A solver scheduler built from a pipeline's scheduler_config.json (any
 * diffusers scheduler's: the keys the solver does not know are ignored, as
 * diffusers' from_config does), with `karras: true` setting
 * use_karras_sigmas (DPM-Solver++, UniPC, Euler and Heun).
 */
export function solverFromConfig(name: SolverName, config: Record<string, unknown>, options: { karras?: boolean } = {}): SolverScheduler {
  const json: Record<string, unknown> = { ...config };
  if (options.karras) {
    if (name === 'euler-a') throw new ConfigError('euler-a has no Karras sigmas in diffusers (use euler, dpm++, unipc or heun)');
    json.use_karras_sigmas = true;
  }
  switch (name) {
    case 'dpm++':
      return DPMSolverMultistepScheduler.fromConfig(json);
    case 'unipc':
      return UniPCMultistepScheduler.fromConfig(json);
    case 'euler':
      return EulerDiscreteScheduler.fromConfig(json);
    case 'euler-a':
      return EulerAncestralDiscreteScheduler.fromConfig(json);
    case 'heun':
      return HeunDiscreteScheduler.fromConfig(json);
  }
}
