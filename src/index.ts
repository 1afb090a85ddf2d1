// marble: diffusers UNet2DModel inference for JavaScript runtimes.
export { createUNet, loadUNet, UNet2DModel } from './model/unet.js';
export type { LoadOptions, ForwardOptions } from './model/unet.js';
export { parseUNet2DConfig } from './model/config.js';
export type { UNet2DConfig } from './model/config.js';
export { parseSafetensors, readSafetensorsFile, serializeSafetensors, writeSafetensorsFile } from './model/safetensors.js';
export { createBackend } from './backend/select.js';
export type { Backend, BackendName } from './backend/backend.js';
export * from './errors.js';
