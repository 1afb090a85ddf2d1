// The public API every runtime shares: the package's entries (src/index.ts
// for Node, src/web/index.ts for browsers, Deno, Bun and workerd) re-export
// this after registering their Host.
export { createUNet, loadUNet, UNet2DModel } from './model/unet.js';
export type { LoadOptions, ForwardOptions, DeviceSampling } from './model/unet.js';
export { parseUNet2DConfig } from './model/config.js';
export type { UNet2DConfig } from './model/config.js';
export { parseSafetensors, serializeSafetensors } from './model/safetensors.js';
export type { SafetensorsFile, SafetensorsHeader, TensorInfo, TensorToWrite } from './model/safetensors.js';
export type { FileBytes, FileMap, ModelSource, FetchProgress, SourceOptions } from './model/source.js';
export { loadPipeline } from './pipeline.js';
export type { Pipeline, PipelineOptions, SchedulerName } from './pipeline.js';
export { sample } from './sampler.js';
export type { SampleOptions, SampleResult, StepInfo, GeneratorName } from './sampler.js';
export { DDPMScheduler } from './schedulers/ddpm.js';
export { DDIMScheduler } from './schedulers/ddim.js';
export { DPMSolverMultistepScheduler } from './schedulers/dpmsolver.js';
export { UniPCMultistepScheduler } from './schedulers/unipc.js';
export { EulerDiscreteScheduler, EulerAncestralDiscreteScheduler } from './schedulers/euler.js';
export { HeunDiscreteScheduler } from './schedulers/heun.js';
export { solverFromConfig, SOLVER_NAMES } from './schedulers/solvers.js';
export type { SolverScheduler, SolverName } from './schedulers/solvers.js';
export type { SolverStepOptions, SolverStepOutput, NoiseSource } from './schedulers/solver_base.js';
export { parsePythonJson } from './schedulers/config_json.js';
export { TorchGenerator } from './rng/torch.js';
export { samplesToImages, imagesToGridPng, imagesToRgba } from './image/png.js';
export type { ImageData8, RgbaImage } from './image/png.js';
export type { Backend, BackendDescription, BackendName, DType } from './backend/backend.js';
export type { BackendOptions, WasmOptions, WasmSource } from './host.js';
export * from './errors.js';
export { benchmark, BENCH_BACKENDS } from './bench/benchmark.js';
export type { BenchBackend, BenchmarkOptions, BenchmarkReport, BenchmarkRow } from './bench/benchmark.js';
export { ARCHS } from './bench/archs.js';
export type { ArchName } from './bench/archs.js';
