// The development addon (build/dev/marble_dev.node, scripts/dev_addons.mjs):
// the product addon plus the CUDA self-test and benchmark entry points, which
// the product addon does not export.
import { createRequire } from 'node:module';
import path from 'node:path';

import type { Addon } from '../../src/node/native.js';
import { packageRoot } from '../../src/node/native.js';

export const DEV_ADDON = path.join(packageRoot(), 'build', 'dev', 'marble_dev.node');

export function loadDevAddon(): Addon {
  return createRequire(import.meta.url)(DEV_ADDON) as Addon;
}
