// marble: diffusers UNet2DModel inference for JavaScript runtimes.
export { createUNet, loadUNet, UNet2DModel } from './model/unet.js';
export type { LoadOptions, ForwardOptions } from './model/unet.js';
export { parseUNet2DConfig } from './model/config.js';
export type { UNet2DConfig } from './model/config.js';
export { parseSafetensors, readSafetensorsFile, serializeSafetensors, writeSafetensorsFile } from './model/safetensors.js';
export { createBackend } from './backend/select.js';
export { loadPipeline } from './pipeline.js';
export type { Pipeline } from './pipeline.js';
export { sample } from './sampler.js';
export type { SampleOptions, SampleResult, StepInfo, GeneratorName } from './sampler.js';
export { DDPMScheduler } from './schedulers/ddpm.js';
export { DDIMScheduler } from './schedulers/ddim.js';
export { TorchGenerator } from './rng/torch.js';
export { samplesToImages, imagesToGridPng } from './image/png.js';
export type { Backend, BackendName } from './backend/backend.js';
export * from './errors.js';
export * from './train/index.js';
export * from './data/index.js';
