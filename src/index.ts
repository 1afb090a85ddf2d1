// marble-diffusion for Node: the shared API (src/core/api.ts) on the Node
// adapter (native addon for cpu and cuda, wasm on worker_threads, files
// through node:fs). Training and evaluation helpers are the subpath exports
// marble-diffusion/train and marble-diffusion/eval.
import './node/host.js';

import path from 'node:path';

import { packageRoot } from './node/native.js';

export * from './core/api.js';
export { readSafetensorsFile, writeSafetensorsFile } from './node/safetensors_file.js';
export { createBackend } from './node/select.js';
export { Trainer } from './train/trainer.js';
export type { TrainerOptions, TrainerProgress, TrainerSaveOptions, StepResult, OptimizerOptions } from './train/trainer.js';
export { unetToOnnx, ONNX_OPSET } from './onnx/export.js';

/**
 * The embedded MNIST model (a diffusers pipeline folder in the package):
 * `loadPipeline(embeddedModel())`. A folder path here; a URL in the web entry.
 */
export function embeddedModel(): string {
  return path.join(packageRoot(), 'models', 'mnist');
}
