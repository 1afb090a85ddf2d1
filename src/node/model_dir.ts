// For the Node CLI, which works with folders on disk (a training run's
// checkpoint, an export's input): the model folder inside a path.
import { stat } from 'node:fs/promises';
import path from 'node:path';

import { ConfigError } from '../core/errors.js';

async function isFile(p: string): Promise<boolean> {
  try {
    return (await stat(p)).isFile();
  } catch {
    return false;
  }
}

/** A model folder (config.json + weights) or a pipeline folder with unet/ inside. */
export async function resolveModelDir(dir: string): Promise<string> {
  if (await isFile(path.join(dir, 'config.json'))) return dir;
  if (await isFile(path.join(dir, 'unet', 'config.json'))) return path.join(dir, 'unet');
  throw new ConfigError(`${dir} is neither a UNet2DModel folder (config.json) nor a pipeline folder (unet/config.json)`);
}
