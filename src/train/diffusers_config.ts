// Configs back to diffusers' JSON: the inverse of parseUNet2DConfig and of
// DDPMScheduler.fromConfig, so a saved checkpoint loads in diffusers
// (UNet2DModel.from_pretrained, DDPMPipeline.from_pretrained) and in marble.
import type { UNet2DConfig } from '../core/model/config.js';
import { guidanceRecordJson, kGuidanceConfigKey } from '../core/model/guidance.js';
import { snakeCase } from '../core/schedulers/config.js';
import type { DDIMScheduler } from '../core/schedulers/ddim.js';
import { DDPMScheduler } from '../core/schedulers/ddpm.js';

/** The diffusers version written into configs (the version of the reference fixtures). */
export const DIFFUSERS_VERSION = '0.40.0';

type Json = Record<string, unknown>;

/** Keys sorted, as diffusers' to_json_string writes them (json.dumps(sort_keys=True)). */
function sortedObject(entries: [string, unknown][]): Json {
  const out: Json = {};
  for (const [k, v] of entries.sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) out[k] = v;
  return out;
}

/**
 * A UNet2DConfig as diffusers' config.json: every option in snake_case, with
 * _class_name and _diffusers_version. parseUNet2DConfig(toDiffusersConfig(c))
 * gives c back.
 */
export function toDiffusersConfig(config: UNet2DConfig): Json {
  const { guidance, ...options } = config;
  const entries: [string, unknown][] = Object.entries(options).map(([key, value]) => [
    snakeCase(key),
    Array.isArray(value) ? [...value] : value,
  ]);
  entries.push(['_class_name', 'UNet2DModel'], ['_diffusers_version', DIFFUSERS_VERSION]);
  // A private key: diffusers ignores it (see core/model/guidance.ts).
  if (guidance) entries.push([kGuidanceConfigKey, guidanceRecordJson(guidance)]);
  return sortedObject(entries);
}

/**
 * A scheduler's resolved options as diffusers' scheduler_config.json, with
 * _class_name DDPMScheduler or DDIMScheduler.
 */
export function schedulerToDiffusersConfig(scheduler: DDPMScheduler | DDIMScheduler): Json {
  const entries: [string, unknown][] = Object.entries(scheduler.config).map(([key, value]) => [
    snakeCase(key),
    Array.isArray(value) ? [...value] : value,
  ]);
  const className = scheduler instanceof DDPMScheduler ? 'DDPMScheduler' : 'DDIMScheduler';
  entries.push(['_class_name', className], ['_diffusers_version', DIFFUSERS_VERSION]);
  return sortedObject(entries);
}

/** model_index.json of a DDPMPipeline folder (unet/ + scheduler/). */
export function ddpmPipelineIndex(): Json {
  return {
    _class_name: 'DDPMPipeline',
    _diffusers_version: DIFFUSERS_VERSION,
    scheduler: ['diffusers', 'DDPMScheduler'],
    unet: ['diffusers', 'UNet2DModel'],
  };
}
