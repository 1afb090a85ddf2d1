// The model `marble sample` uses when no --model is given: the class-
// conditional MNIST UNet that ships in the package (models/mnist, a diffusers
// pipeline folder trained by marble itself; see models/README.md).
import { existsSync } from 'node:fs';
import path from 'node:path';

import { packageRoot } from '../node/native.js';
import { InputError } from '../core/errors.js';

/** Where the embedded model lives, relative to the package root. */
export const EMBEDDED_MODEL = path.join('models', 'mnist');

/**
 * The folder to sample from: --model when given, else the embedded model.
 * `root` is the package root (a parameter so tests can point it elsewhere).
 */
export function resolveSampleModel(model: string | undefined, root: string = packageRoot()): string {
  if (model) return model;
  const dir = path.join(root, EMBEDDED_MODEL);
  if (existsSync(path.join(dir, 'unet', 'config.json'))) return dir;
  throw new InputError(
    `no --model given, and this copy of marble has no embedded model (${dir} is missing; it is built by \`npm run train:default\`). ` +
      'Pass --model DIR: a diffusers pipeline folder (unet/, scheduler/) or a UNet2DModel folder, e.g. a `marble train` run\'s checkpoint/.',
  );
}
