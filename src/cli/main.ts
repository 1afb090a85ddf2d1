#!/usr/bin/env node
// The `marble` command. `marble info` reports what this machine offers;
// `marble sample` generates images; `marble train` (./train.ts) trains;
// `marble export` (./export.ts) writes a checkpoint as a release model folder;
// `marble eval` (./eval.ts) measures a model's samples against real MNIST.
import { constants } from 'node:fs';
import { access, stat, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Command, InvalidArgumentError, Option } from 'commander';
import cliProgress from 'cli-progress';

import '../node/host.js';
import { MarbleError } from '../core/errors.js';
import { classConditioning, dataClassCount } from '../core/model/config.js';
import { loadPipeline } from '../core/pipeline.js';
import { sample } from '../core/sampler.js';
import { SOLVER_NAMES, type SolverName } from '../core/schedulers/solvers.js';
import { resolveSampleModel } from './embedded_model.js';
import { registerBenchCommand } from './bench.js';
import { registerDemoCommand } from './demo.js';
import { registerEvalCommand } from './eval.js';
import { registerExportCommand } from './export.js';
import { registerServeCommands } from './serve.js';
import { registerTrainCommand } from './train.js';

import { addonOrigin, cudaDevices, loadAddon, nativeAvailable } from '../node/native.js';
import { DTYPES } from '../core/backend/backend.js';
import type { DType } from '../core/backend/backend.js';
import { createWasmBackend, wasmPath, wasmThreadsPath } from '../node/wasm.js';
import { relaxedSimdSupported } from '../core/backend/wasm_features.js';

// The smallest module that uses a SIMD128 instruction (v128.const, drop).
const SIMD_PROBE = new Uint8Array([
  0, 97, 115, 109, 1, 0, 0, 0, // magic, version
  1, 4, 1, 96, 0, 0, // type section: () -> ()
  3, 2, 1, 0, // function section
  10, 23, 1, 21, 0, 253, 12, ...new Array(16).fill(0), 26, 11, // code: v128.const 0; drop; end
]);

async function info(): Promise<void> {
  const lines: [string, string][] = [];
  lines.push(['cpu', `${os.cpus()[0]?.model ?? 'unknown'} (${os.cpus().length} cores, ${os.arch()})`]);
  const origin = addonOrigin();
  if (nativeAvailable()) {
    const addon = loadAddon();
    lines.push(['native addon', `${origin.kind}: ${origin.file}`]);
    lines.push(['backend cpu', `available: ${addon.isa()} GEMM kernel, ${addon.threads()} threads`]);
  } else {
    lines.push(['native addon', `none: ${addonOrigin().reason ?? 'it does not load'}`]);
    lines.push(['backend cpu', 'unavailable (no native addon): marble uses the wasm backend; npm rebuild marble-diffusion --build-from-source builds it']);
  }
  try {
    const wasm = await createWasmBackend();
    const build = typeof SharedArrayBuffer === 'function' ? `threaded build, ${wasm.threads()} threads, ${wasmThreadsPath()}` : wasmPath();
    lines.push(['backend wasm', `available: ${wasm.isa()}, ${build}`]);
    wasm.dispose?.();
  } catch (e) {
    lines.push(['backend wasm', `unavailable: ${(e as Error).message}`]);
  }
  lines.push(['wasm simd128', WebAssembly.validate(SIMD_PROBE) ? 'supported by this runtime' : 'NOT supported by this runtime']);
  lines.push([
    'wasm relaxed simd',
    relaxedSimdSupported()
      ? 'supported; opt-in (MARBLE_WASM_RELAXED=1): not bit-identical across runtimes'
      : 'not supported by this runtime (the plain builds run, as by default)',
  ]);
  const cuda = cudaDevices();
  if (cuda.count > 0) {
    lines.push(['backend cuda', `available: ${cuda.count} device${cuda.count > 1 ? 's' : ''} (${cuda.buildInfo}); sampling and training on the GPU (dtype float32; float16 / bfloat16 on tensor cores, training in mixed precision)`]);
    for (const d of cuda.devices) {
      const driver = d.driverVersion ? `driver ${Math.floor(d.driverVersion / 1000)}.${(d.driverVersion % 1000) / 10}` : 'driver ?';
      lines.push([
        `cuda ${d.index}`,
        d.error ??
          `${d.name}, compute capability ${d.computeCapability}, ${d.multiprocessors} SMs, ${((d.totalBytes ?? 0) / 2 ** 30).toFixed(1)} GiB, ${driver}, PCI ${d.pciBusId}`,
      ]);
    }
  } else {
    lines.push(['backend cuda', `unavailable: ${cuda.built ? cuda.reason : 'this addon was built without CUDA (no nvcc, or MARBLE_CUDA=OFF)'}`]);
  }
  lines.push(['node', process.version]);
  const width = Math.max(...lines.map(([k]) => k.length));
  for (const [key, value] of lines) console.log(`${key.padEnd(width)}  ${value}`);
}

function integer(name: string, min: number) {
  return (value: string): number => {
    const n = Number(value);
    if (!Number.isInteger(n) || n < min) throw new InvalidArgumentError(`${name} must be an integer >= ${min}`);
    return n;
  };
}

interface SampleFlags {
  model?: string;
  scheduler: 'ddim' | 'ddpm' | SolverName;
  karras?: boolean;
  steps?: number;
  eta: number;
  clippedModelOutput?: boolean;
  batch: number;
  seed: string;
  generator: 'philox' | 'torch';
  class?: number;
  guidance?: number;
  backend: 'auto' | 'cpu' | 'wasm' | 'cuda';
  dtype: DType;
  out: string;
}

/** An InvalidArgumentError unless `file` can be written: its folder exists and is writable, and it is not a folder. */
async function checkWritable(file: string): Promise<void> {
  const folder = path.dirname(path.resolve(file));
  try {
    await access(folder, constants.W_OK);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new InvalidArgumentError(
      `--out ${file}: ${code === 'ENOENT' ? `the folder ${folder} does not exist` : `the folder ${folder} is not writable (${code})`}`,
    );
  }
  const existing = await stat(file).catch(() => null);
  if (existing?.isDirectory()) throw new InvalidArgumentError(`--out ${file} is a folder; give a file name, e.g. ${path.join(file, 'samples.png')}`);
}

async function sampleCommand(flags: SampleFlags): Promise<void> {
  if (!/^\d+$/.test(flags.seed)) throw new InvalidArgumentError('--seed must be a non-negative integer');
  if (flags.clippedModelOutput && flags.scheduler !== 'ddim') throw new InvalidArgumentError('--clipped-model-output applies to --scheduler ddim only');
  const solver = flags.scheduler !== 'ddim' && flags.scheduler !== 'ddpm' ? flags.scheduler : null;
  if (flags.karras && (!solver || solver === 'euler-a')) throw new InvalidArgumentError('--karras applies to --scheduler dpm++, unipc, euler and heun');
  await checkWritable(flags.out);  // before sampling: the images must not be lost at the end
  const pipeline = await loadPipeline(resolveSampleModel(flags.model), { backend: flags.backend, dtype: flags.dtype });
  const { unet } = pipeline;
  let scheduler;
  try {
    scheduler = solver ? pipeline.scheduler(solver, { karras: flags.karras }) : pipeline.scheduler(flags.scheduler as 'ddim' | 'ddpm');
  } catch (e) {
    unet.dispose();
    throw e;
  }
  // Refuse a batch beyond memory before building anything per image (the
  // labels below): sample() checks it too, but only once they exist.
  const size = unet.config.sampleSize;
  if (size !== null) {
    const [height, width] = Array.isArray(size) ? size : [size, size];
    try {
      unet.activationBytes(flags.batch, height, width);
    } catch (e) {
      unet.dispose();
      throw e;
    }
  }
  let classLabels: number[] | undefined;
  if (classConditioning(unet.config) === 'labels') {
    // Cycle through the data classes (not a guidance model's null class).
    const n = dataClassCount(unet.config);
    classLabels = Array.from({ length: flags.batch }, (_, i) => flags.class ?? i % n);
  } else if (flags.class !== undefined) {
    throw new MarbleError('ERR_MARBLE_INPUT', '--class: this model is not class-conditional');
  }
  const steps = flags.steps ?? (flags.scheduler === 'ddim' ? 50 : solver ? 20 : scheduler.config.numTrainTimesteps);
  // Heun runs two model calls per step: its schedule lists each timestep twice.
  const barTotal = solver === 'heun' ? 2 * steps - 1 : steps;
  const bar = process.stderr.isTTY
    ? new cliProgress.SingleBar(
        { format: 'sampling [{bar}] {value}/{total} steps | t={t} | {duration_formatted} elapsed, eta {eta_formatted}', hideCursor: true },
        cliProgress.Presets.shades_classic,
      )
    : null;
  bar?.start(barTotal, 0, { t: '-' });
  const controller = new AbortController();
  const onSigint = () => controller.abort(new MarbleError('ERR_MARBLE_ABORTED', 'interrupted'));
  process.once('SIGINT', onSigint);
  const started = performance.now();
  try {
    const result = await sample({
      unet,
      scheduler,
      numInferenceSteps: steps,
      batchSize: flags.batch,
      seed: BigInt(flags.seed),
      generator: flags.generator,
      eta: flags.scheduler === 'ddim' ? flags.eta : undefined,
      useClippedModelOutput: flags.clippedModelOutput,
      classLabels,
      guidanceScale: flags.guidance,
      signal: controller.signal,
      onStep: ({ index, t }) => bar?.update(index + 1, { t }),
    });
    bar?.stop();
    await writeFile(flags.out, result.png());
    const seconds = (performance.now() - started) / 1000;
    console.log(
      `wrote ${flags.out}: ${flags.batch} image(s) ${result.shape[2]}x${result.shape[3]}, ${flags.scheduler} ${steps} steps, ` +
        `seed ${flags.seed} (${flags.generator}), ${flags.guidance !== undefined ? `guidance ${flags.guidance}, ` : ''}${unet.backend.name} backend (${unet.dtype} GEMMs), ${seconds.toFixed(1)} s`,
    );
  } finally {
    bar?.stop();
    process.off('SIGINT', onSigint);
    unet.dispose();
  }
}

const program = new Command();
program.name('marble').description('Diffusion models (diffusers UNet2DModel) for JavaScript runtimes');
program
  .command('sample')
  .description('generate images with a diffusers DDPM/DDIM model folder')
  .option('--model <dir>', 'pipeline folder (unet/, scheduler/) or UNet2DModel folder (default: the embedded MNIST model)')
  .addOption(new Option('--scheduler <kind>', 'sampler: ddim, ddpm, or the fast solvers dpm++ (DPMSolverMultistep), unipc, euler, euler-a (ancestral), heun').choices(['ddim', 'ddpm', ...SOLVER_NAMES]).default('ddim'))
  .option('--karras', 'Karras sigmas (use_karras_sigmas) for dpm++, unipc, euler and heun')
  .option('--steps <n>', 'inference steps (default: 50 for ddim, 20 for the solvers, num_train_timesteps for ddpm)', integer('--steps', 1))
  .option('--eta <e>', 'DDIM eta: 0 deterministic, 1 DDPM-like', (v: string) => {
    const n = Number(v);
    if (!Number.isFinite(n) || n < 0) throw new InvalidArgumentError('--eta must be a number >= 0');
    return n;
  }, 0)
  .option('--clipped-model-output', "DDIM: re-derive epsilon from the clipped x0 (diffusers' use_clipped_model_output); with a clip_sample scheduler it keeps long eta-0 runs consistent")
  .option('--batch <b>', 'images to generate', integer('--batch', 1), 1)
  .option('--seed <s>', 'random seed (an integer below 2^64)', '0')
  .addOption(new Option('--generator <name>', 'noise generator: philox (same on every backend) or torch (matches diffusers on CPU)').choices(['philox', 'torch']).default('philox'))
  .option('--class <k>', 'class label for class-conditional models (default: cycle through the classes)', integer('--class', 0))
  .option('--guidance <s>', 'classifier-free guidance scale (models trained with --cfg-dropout; 1: none, 2-5 typical)', (v: string) => {
    const n = Number(v);
    if (v.trim() === '' || !Number.isFinite(n) || n < 0) throw new InvalidArgumentError('--guidance must be a number >= 0');
    return n;
  })
  .addOption(new Option('--backend <name>', 'engine backend').choices(['auto', 'cpu', 'wasm', 'cuda']).default('auto'))
  .addOption(new Option('--dtype <type>', 'conv/linear GEMM type: float16 and bfloat16 run on tensor cores (cuda only)').choices([...DTYPES]).default('float32'))
  .option('--out <file>', 'output PNG (a grid of the batch)', 'samples.png')
  .action(sampleCommand);
program.command('info').description('backends present, CPU features, threads, wasm SIMD support').action(info);
registerTrainCommand(program);
registerExportCommand(program);
registerEvalCommand(program);
registerDemoCommand(program);
registerBenchCommand(program);
registerServeCommands(program);
program.parseAsync(process.argv).catch((e: unknown) => {
  console.error(`marble: ${(e as Error).message}`);
  process.exit(e instanceof MarbleError && e.code === 'ERR_MARBLE_ABORTED' ? 130 : 1);
});
