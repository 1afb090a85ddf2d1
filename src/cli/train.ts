// `marble train`: trains a diffusers UNet2DModel (DDPM objective) on MNIST or
// a folder of images, the way diffusers' train_unconditional.py does, and
// keeps OUT/checkpoint a loadable DDPMPipeline folder throughout.
//
// OUT/checkpoint/      pipeline folder + trainer_state/ (replaced atomically on each save)
// OUT/train_log.jsonl  one line per step: step, loss, lr, grad_norm, epoch, time
// OUT/samples/         step-000500.png grids (DDIM, EMA weights when EMA is on)
//
// Ctrl-C finishes the current step, saves, and exits with status 130; a
// second Ctrl-C exits at once (the last checkpoint is intact either way).
import { appendFile, mkdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { Command, InvalidArgumentError, Option } from 'commander';
import cliProgress from 'cli-progress';

import { DTYPES } from '../core/backend/backend.js';
import type { DType } from '../core/backend/backend.js';
import { ConfigError, InputError, MemoryLimitError } from '../core/errors.js';
import { classConditioning, dataClassCount as dataClasses } from '../core/model/config.js';
import { guidanceRecordJson, kGuidanceConfigKey } from '../core/model/guidance.js';
import { createUNet, defaultMemoryLimit, loadUNet} from '../core/model/unet.js';
import { resolveModelDir } from '../node/model_dir.js';
import type { UNet2DModel } from '../core/model/unet.js';
import { sample } from '../core/sampler.js';
import { DDIMScheduler } from '../core/schedulers/ddim.js';
import { DDPMScheduler } from '../core/schedulers/ddpm.js';
import type { PredictionType } from '../core/schedulers/config.js';
import { DataLoader } from '../data/loader.js';
import type { DataLoaderState } from '../data/loader.js';
import type { Dataset } from '../data/dataset.js';
import { ImageFolderDataset } from '../data/image_folder.js';
import { MnistDataset } from '../data/mnist.js';
import { subsetDataset } from '../data/dataset.js';
import { mnistSplit } from '../eval/mnist_reference.js';
import { exists } from '../train/atomic_fs.js';
import { defaultUNetConfig } from '../train/default_config.js';
import { schedulerToDiffusersConfig } from '../train/diffusers_config.js';
import { formatProfile } from '../train/profile.js';
import { Trainer } from '../train/trainer.js';
import type { LrScheduleKind } from '../train/lr_schedule.js';

interface TrainFlags {
  data?: string;
  out: string;
  config?: string;
  model?: string;
  resolution?: number;
  classConditional?: boolean;
  cfgDropout?: number;
  steps: number;
  stopAt?: number;
  batch?: number;
  lr?: number;
  lrSchedule?: LrScheduleKind;
  warmup?: number;
  adamBeta1?: number;
  adamBeta2?: number;
  adamEps?: number;
  weightDecay?: number;
  gradClip?: number;
  gradAccum?: number;
  minSnrGamma?: number;
  ema?: boolean;
  emaDecay?: number;
  predictionType?: PredictionType;
  numTrainTimesteps?: number;
  randomFlip?: boolean;
  holdout?: number;
  saveEvery: number;
  sampleEvery: number;
  sampleSteps: number;
  sampleBatch: number;
  resume?: boolean;
  profile?: boolean;
  backend: 'auto' | 'cpu' | 'wasm' | 'cuda';
  dtype: DType;
  threads?: number;
  seed?: string;
}

/** What the CLI keeps in the checkpoint besides the trainer: enough to rebuild the data stream. */
interface CliState {
  data: string;
  batch: number;
  randomFlip: boolean;
  /** MNIST digits held out of training (src/eval/mnist_reference.ts, mnistSplit, split seed 0). */
  holdout: number;
  loader: DataLoaderState;
}

function integer(name: string, min: number) {
  return (value: string): number => {
    const n = Number(value);
    if (!Number.isInteger(n) || n < min) throw new InvalidArgumentError(`${name} must be an integer >= ${min}`);
    return n;
  };
}

function number(name: string, check: (n: number) => boolean, what: string) {
  return (value: string): number => {
    const n = Number(value);
    if (!Number.isFinite(n) || !check(n)) throw new InvalidArgumentError(`${name} must be ${what}`);
    return n;
  };
}

/** Flags that define the run; on --resume they come from the checkpoint instead. */
const RUN_FLAGS = [
  'data', 'config', 'model', 'resolution', 'classConditional', 'cfgDropout', 'batch', 'lr', 'lrSchedule', 'warmup', 'adamBeta1',
  'adamBeta2', 'adamEps', 'weightDecay', 'gradClip', 'gradAccum', 'minSnrGamma', 'ema', 'emaDecay', 'predictionType',
  'numTrainTimesteps', 'randomFlip', 'holdout', 'seed',
] as const;

async function openDataset(spec: string, channels: number, size: number | [number, number], holdout: number): Promise<Dataset> {
  if (channels !== 1 && channels !== 3) throw new ConfigError(`the model has in_channels = ${channels}; marble train feeds 1 (gray) or 3 (RGB) channel images`);
  if (spec === 'mnist') {
    if (Array.isArray(size) && size[0] !== size[1]) throw new InputError(`MNIST digits are square; the model's sample_size is [${size.join(', ')}]`);
    const all = await MnistDataset.load({ size: Array.isArray(size) ? size[0] : size, channels });
    // Leave out the digits `marble eval` compares samples with.
    return holdout > 0 ? subsetDataset(all, mnistSplit(all.length, holdout, 0).train) : all;
  }
  if (holdout > 0) throw new InputError('--holdout applies to --data mnist only');
  return ImageFolderDataset.open(spec, { channels, size });
}

/** The UNet to train: --model (fine-tune its weights), --config (fresh weights), or the default. */
async function buildUNet(flags: TrainFlags, seed: bigint): Promise<UNet2DModel> {
  const load = { backend: flags.backend, threads: flags.threads, dtype: flags.dtype } as const;  // auto: cuda, else cpu, else wasm
  if (flags.model && flags.config) throw new InputError('pass --model (start from its weights) or --config (fresh weights), not both');
  if (flags.model) {
    // A fine-tune keeps the model's own record (guidance.ts): its null class is already trained.
    if (flags.cfgDropout !== undefined)
      throw new InputError('--cfg-dropout builds a new model (with --config or the default UNet); a --model keeps the label dropout its config records');
    return loadUNet(await resolveModelDir(flags.model), load);
  }
  let json: unknown;
  if (flags.config) {
    try {
      json = JSON.parse(await readFile(flags.config, 'utf8'));
    } catch (e) {
      throw new ConfigError(`--config ${flags.config}: ${(e as Error).message}`);
    }
    if (flags.cfgDropout !== undefined) json = withNullClass(json, flags.cfgDropout);
  } else {
    const channels = flags.data === 'mnist' ? 1 : 3;
    const size = flags.resolution ?? 32; // MNIST padded to 32: three levels halve it cleanly
    // --cfg-dropout trains a class-conditional model, with or without --class-conditional.
    const conditional = flags.classConditional === true || flags.cfgDropout !== undefined;
    if (conditional && flags.data !== 'mnist')
      throw new InputError(`${flags.classConditional ? '--class-conditional' : '--cfg-dropout'} needs labeled data (--data mnist)`);
    json = defaultUNetConfig({ sampleSize: size, channels, numClasses: conditional ? 10 : null, cfgDropout: flags.cfgDropout ?? null });
  }
  return createUNet(json, { ...load, seed: Number(seed % 4294967296n) });
}

/**
 * A --config made ready for classifier-free guidance: one more class
 * embedding row, the null label (its last row), recorded with the dropout.
 */
function withNullClass(json: unknown, dropout: number): unknown {
  const config = json as Record<string, unknown>;
  const classes = config?.['num_class_embeds'];
  if (typeof classes !== 'number' || !Number.isInteger(classes) || (config['class_embed_type'] ?? null) !== null)
    throw new InputError('--cfg-dropout needs a --config with num_class_embeds (class labels, no class_embed_type)');
  if (config[kGuidanceConfigKey] !== undefined)
    throw new InputError(`--config already has ${kGuidanceConfigKey}: drop --cfg-dropout, or the key`);
  return {
    ...config,
    num_class_embeds: classes + 1,
    [kGuidanceConfigKey]: guidanceRecordJson({ nullClassLabel: classes, labelDropout: dropout }),
  };
}

/** Keeps only the log lines of steps the checkpoint has (a resumed run redoes the rest). */
async function trimLog(file: string, lastStep: number): Promise<void> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch {
    return;
  }
  const kept = text.split('\n').filter((line) => {
    if (!line.trim()) return false;
    try {
      return (JSON.parse(line) as { step?: number }).step! <= lastStep;
    } catch {
      return false;
    }
  });
  await writeFile(file, kept.map((l) => `${l}\n`).join(''));
}

async function writeSamples(trainer: Trainer, flags: TrainFlags, outDir: string, seed: bigint): Promise<string> {
  const json = schedulerToDiffusersConfig(trainer.noiseScheduler);
  let scheduler: DDIMScheduler | DDPMScheduler;
  try {
    scheduler = DDIMScheduler.fromConfig(json);
  } catch {
    scheduler = DDPMScheduler.fromConfig(json); // beta schedules DDIM does not implement
  }
  const unet = trainer.unet;
  const n = flags.sampleBatch;
  const classLabels =
    classConditioning(unet.config) === 'labels' ? Array.from({ length: n }, (_, i) => i % dataClasses(unet.config)) : undefined;
  const [height, width] = trainer.settings.sampleSize;
  const result = await trainer.withEmaWeights(() =>
    sample({ unet, scheduler, numInferenceSteps: flags.sampleSteps, batchSize: n, seed, classLabels, height, width }),
  );
  await mkdir(path.join(outDir, 'samples'), { recursive: true });
  const file = path.join(outDir, 'samples', `step-${String(trainer.globalStep).padStart(6, '0')}.png`);
  await writeFile(file, result.png());
  return file;
}

async function trainCommand(flags: TrainFlags, command: Command): Promise<void> {
  const outDir = path.resolve(flags.out);
  const checkpointDir = path.join(outDir, 'checkpoint');
  const logFile = path.join(outDir, 'train_log.jsonl');
  await mkdir(outDir, { recursive: true }).catch((e: NodeJS.ErrnoException) => {
    throw new InputError(`cannot create --out ${outDir}: ${e.code ?? e.message}`);
  });

  let trainer: Trainer;
  let cli: CliState;
  let runLength = flags.steps;  // the LR schedule's total steps: where the run ends
  if (flags.resume) {
    const ignored = RUN_FLAGS.filter((k) => command.getOptionValueSource(k) === 'cli');
    if (ignored.length)
      console.error(`marble: --resume continues the saved run; ignoring ${ignored.map((k) => `--${k.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}`).join(', ')}`);
    // Without --steps the run keeps the length it was started with (not the
    // option's default, which would cut a longer schedule short).
    const totalSteps = command.getOptionValueSource('steps') === 'cli' ? flags.steps : undefined;
    trainer = await Trainer.resume(checkpointDir, { backend: flags.backend, threads: flags.threads, dtype: flags.dtype, totalSteps });
    runLength = trainer.settings.lrSchedule.totalSteps ?? flags.steps;
    const saved = trainer.userState as Partial<CliState> | null;
    if (!saved || typeof saved.data !== 'string' || !Number.isInteger(saved.batch) || !saved.loader)
      throw new InputError(`${checkpointDir} was not written by marble train (no data loader state); resume it through the API`);
    cli = { data: saved.data, batch: saved.batch!, randomFlip: saved.randomFlip === true, holdout: saved.holdout ?? 0, loader: saved.loader };
    await trimLog(logFile, trainer.globalStep);
  } else {
    if (!flags.data) throw new InputError('--data mnist|DIR is required');
    if (await exists(checkpointDir))
      throw new InputError(`${checkpointDir} already holds a checkpoint: pass --resume to continue it, or another --out`);
    const seedText = flags.seed ?? '0';
    if (!/^\d+$/.test(seedText)) throw new InvalidArgumentError('--seed must be a non-negative integer');
    const seed = BigInt(seedText);
    const unet = await buildUNet(flags, seed);
    try {
      const noiseScheduler = new DDPMScheduler({
        numTrainTimesteps: flags.numTrainTimesteps ?? 1000,
        predictionType: flags.predictionType ?? 'epsilon',
      });
      const warmup = flags.warmup ?? Math.min(500, Math.floor(flags.steps / 10));
      trainer = new Trainer({
        unet,
        noiseScheduler,
        // train_unconditional.py's defaults
        optimizer: {
          lr: flags.lr ?? 1e-4,
          betas: [flags.adamBeta1 ?? 0.95, flags.adamBeta2 ?? 0.999],
          eps: flags.adamEps ?? 1e-8,
          weightDecay: flags.weightDecay ?? 1e-6,
        },
        lrSchedule: { kind: flags.lrSchedule ?? 'cosine', warmupSteps: warmup, totalSteps: flags.steps },
        ema: flags.ema ? { decay: flags.emaDecay ?? 0.9999, useEmaWarmup: true, invGamma: 1, power: 3 / 4 } : null,
        gradClip: flags.gradClip === 0 ? null : (flags.gradClip ?? 1),
        gradAccumulation: flags.gradAccum ?? 1,
        minSnrGamma: flags.minSnrGamma ?? null,
        seed,
        sampleSize: unet.config.sampleSize === null ? flags.resolution ?? 32 : undefined,
      });
    } catch (e) {
      unet.dispose();
      throw e;
    }
    const data = flags.data === 'mnist' ? 'mnist' : path.resolve(flags.data); // a resume may run from elsewhere
    cli = { data, batch: flags.batch ?? 16, randomFlip: flags.randomFlip === true, holdout: flags.holdout ?? 0, loader: { epoch: 0, position: 0 } };
  }

  const unet = trainer.unet;
  try {
    const [height, width] = trainer.settings.sampleSize;
    const dataset = await openDataset(cli.data, unet.config.inChannels, height === width ? height : [height, width], cli.holdout);
    const conditional = classConditioning(unet.config);
    if (conditional !== 'none' && (conditional !== 'labels' || dataset.numClasses === null))
      throw new InputError(`the model is class-conditional (${conditional}) but --data ${cli.data} has no class labels`);
    if (conditional === 'labels' && dataset.numClasses! > dataClasses(unet.config))
      throw new InputError(
        `the data has ${dataset.numClasses} classes but the model has ${dataClasses(unet.config)} (num_class_embeds ${unet.config.numClassEmbeds}` +
          `${unet.config.guidance ? `, null class ${unet.config.guidance.nullClassLabel}` : ''})`,
      );
    const seed = BigInt(trainer.settings.seed);
    // A batch beyond memory is a MemoryLimitError now, before the loader
    // fills one (a training step needs at least a forward's activations).
    if (!Number.isInteger(cli.batch) || cli.batch < 1) throw new InputError(`the batch size must be a positive integer, got ${cli.batch}`);
    const forwardBytes = unet.activationBytes(cli.batch, height, width), usable = defaultMemoryLimit();
    if (forwardBytes > usable)
      throw new MemoryLimitError(
        `batch ${cli.batch} at ${height}x${width} needs over ${Math.ceil(forwardBytes / 2 ** 20)} MB of activations, ` +
          `over the ${Math.floor(usable / 2 ** 20)} MB marble may use (three quarters of this machine's memory)`,
      );
    const loader = new DataLoader(dataset, { batchSize: cli.batch, seed, randomFlip: cli.randomFlip });
    loader.setState(cli.loader);

    const userState = (): CliState => ({ ...cli, loader: loader.getState() });
    const save = async () => {
      await trainer.save(checkpointDir, { userState: userState() });
    };

    const total = runLength;
    // --stop-at: this invocation ends there; the schedule still spans --steps.
    const end = Math.min(total, flags.stopAt ?? total);
    if (trainer.globalStep >= end) {
      const why = end < total ? `--stop-at ${end}` : `--steps ${total}`;
      console.log(`${checkpointDir} is already at step ${trainer.globalStep} (${why}); nothing to do`);
      return;
    }
    console.error(
      `training ${unet.parameterCount.toLocaleString('en-US')} parameters on ${cli.data} (${dataset.length} images, ` +
        `${dataset.shape.join('x')}), batch ${cli.batch}, ${unet.backend.name} backend, steps ${trainer.globalStep + 1}..${end}` +
        (end < total ? ` of ${total}` : ''),
    );

    const bar = process.stderr.isTTY
      ? new cliProgress.SingleBar(
          { format: 'training [{bar}] {value}/{total} | loss {loss} | lr {lr} | {speed} it/s | eta {eta_formatted}', hideCursor: true, etaBuffer: 50 },
          cliProgress.Presets.shades_classic,
        )
      : null;
    let stop = false;
    const onSigint = () => {
      if (stop) process.exit(130); // second Ctrl-C: the last checkpoint is intact
      stop = true;
      bar?.stop();
      console.error('\ninterrupted: finishing this step and saving a checkpoint (Ctrl-C again to quit now)');
    };
    process.on('SIGINT', onSigint);
    bar?.start(total, trainer.globalStep, { loss: '-', lr: '-', speed: '-' });
    const started = performance.now();
    const recent: number[] = [];
    let savedAt = trainer.globalStep;
    let inStep = false;
    // --profile: from the second step of this run on (the first plans the arena).
    let profiledSteps = 0;
    let dataSeconds = 0;
    try {
      while (trainer.globalStep < end && !stop) {
        const loading = performance.now();
        const batch = await loader.next();
        if (profiledSteps > 0) dataSeconds += (performance.now() - loading) / 1000;
        const t0 = performance.now();
        inStep = true;
        const r = await trainer.step(batch.data, batch.labels && conditional === 'labels' ? batch.labels : undefined);
        inStep = false;
        if (flags.profile && profiledSteps++ === 0) trainer.startProfile();
        recent.push(performance.now() - t0);
        if (recent.length > 20) recent.shift();
        const speed = 1000 / (recent.reduce((a, b) => a + b, 0) / recent.length);
        await appendFile(
          logFile,
          `${JSON.stringify({ step: r.step, loss: r.loss, lr: r.lr, grad_norm: r.gradNorm, epoch: loader.getState().epoch, time_s: (performance.now() - started) / 1000 })}\n`,
        );
        if (bar) bar.update(r.step, { loss: r.loss.toFixed(4), lr: r.lr.toExponential(2), speed: speed.toFixed(2) });
        else if (r.step % 50 === 0 || r.step === total)
          console.error(`step ${r.step}/${total} loss ${r.loss.toFixed(4)} lr ${r.lr.toExponential(2)} ${speed.toFixed(2)} it/s`);
        if (r.step % flags.saveEvery === 0 && r.step < end) {
          await save();
          savedAt = r.step;
        }
        if (flags.sampleEvery > 0 && r.step % flags.sampleEvery === 0) {
          const file = await writeSamples(trainer, flags, outDir, seed);
          if (!bar) console.error(`samples: ${file}`);
        }
      }
    } catch (e) {
      // A failure between steps (an image that does not decode, a sample
      // grid that does not fit) keeps the steps made since the last save;
      // one inside a step may have left the trainer half-updated: not saved.
      bar?.stop();
      if (!inStep && trainer.globalStep > savedAt) {
        await save().then(
          () => console.error(`saved ${checkpointDir} at step ${trainer.globalStep}; fix the cause and continue with --resume`),
          () => undefined,
        );
      }
      throw e;
    } finally {
      bar?.stop();
      process.off('SIGINT', onSigint);
    }
    await save();
    if (flags.profile) {
      if (profiledSteps > 1) {
        const profile = trainer.profile(dataSeconds);
        console.error(`\nwhere a step's time went (${unet.backend.name}, batch ${cli.batch}):\n${formatProfile(profile)}`);
        await writeFile(path.join(outDir, 'profile.json'), `${JSON.stringify(profile, null, 2)}\n`);
      } else {
        console.error('--profile: no profile (it starts after the first step of a run; run two steps or more)');
      }
    }
    if (stop) {
      console.error(`saved ${checkpointDir} at step ${trainer.globalStep}; continue with --resume`);
      process.exitCode = 130;
      return;
    }
    const relative = path.relative(process.cwd(), checkpointDir);
    const shown = relative && !relative.startsWith('..') ? relative : checkpointDir;
    if (end < total) console.log(`stopped at step ${trainer.globalStep} of ${total} (--stop-at): ${shown}; continue with --resume`);
    else console.log(`trained to step ${trainer.globalStep}: ${shown} (try: marble sample --model ${shown})`);
  } finally {
    unet.dispose();
  }
}

/** Adds `marble train` to the program. */
export function registerTrainCommand(program: Command): void {
  program
    .command('train')
    .description('train a diffusers UNet2DModel (DDPM) on MNIST or a folder of images')
    .option('--data <source>', "'mnist' (10,000 digits from the mnist package) or a folder of PNG/JPEG images")
    .requiredOption('--out <dir>', 'output folder: checkpoint/, train_log.jsonl, samples/')
    .option('--config <file>', 'UNet2DModel config.json to train from scratch (default: a small UNet for the data)')
    .option('--model <dir>', 'start from this model or pipeline folder\'s weights (fine-tuning)')
    .option('--resolution <n>', 'image size for the default UNet (default 32)', integer('--resolution', 4))
    .option('--class-conditional', 'default UNet with num_class_embeds 10, trained on the MNIST labels')
    .option(
      '--cfg-dropout <p>',
      'classifier-free guidance: replace each label by an extra null class with probability p (0.1 is usual); sample with --guidance',
      number('--cfg-dropout', (n) => n > 0 && n < 1, 'a probability in (0, 1)'),
    )
    .option('--steps <n>', 'total optimizer steps', integer('--steps', 1), 2000)
    .option('--batch <b>', 'images per step (default 16)', integer('--batch', 1))
    .option('--lr <x>', 'peak learning rate (default 1e-4)', number('--lr', (n) => n >= 0, 'a number >= 0'))
    .addOption(new Option('--lr-schedule <kind>', 'learning-rate schedule (default cosine)').choices(['constant', 'cosine', 'linear']))
    .option('--warmup <n>', 'warmup steps (default min(500, steps / 10))', integer('--warmup', 0))
    .option('--adam-beta1 <x>', 'AdamW beta1 (default 0.95)', number('--adam-beta1', (n) => n >= 0 && n < 1, 'in [0, 1)'))
    .option('--adam-beta2 <x>', 'AdamW beta2 (default 0.999)', number('--adam-beta2', (n) => n >= 0 && n < 1, 'in [0, 1)'))
    .option('--adam-eps <x>', 'AdamW epsilon (default 1e-8)', number('--adam-eps', (n) => n > 0, 'a number > 0'))
    .option('--weight-decay <x>', 'AdamW weight decay (default 1e-6)', number('--weight-decay', (n) => n >= 0, 'a number >= 0'))
    .option('--grad-clip <x>', 'max gradient norm (default 1; 0: no clipping)', number('--grad-clip', (n) => n >= 0, 'a number >= 0'))
    .option('--grad-accum <k>', 'split each batch into k micro-batches (less memory, same update)', integer('--grad-accum', 1))
    .option('--min-snr-gamma <g>', 'min-SNR loss weighting (5 is the paper\'s value)', number('--min-snr-gamma', (n) => n > 0, 'a number > 0'))
    .option('--ema', 'keep an EMA of the weights; the checkpoint\'s model is the EMA')
    .option('--ema-decay <x>', 'EMA max decay (default 0.9999)', number('--ema-decay', (n) => n >= 0 && n <= 1, 'in [0, 1]'))
    .addOption(new Option('--prediction-type <type>', 'what the UNet predicts (default epsilon)').choices(['epsilon', 'v_prediction', 'sample']))
    .option('--num-train-timesteps <n>', 'diffusion steps of the noise schedule (default 1000)', integer('--num-train-timesteps', 1))
    .option('--random-flip', 'mirror images left-right at random')
    .option('--holdout <n>', 'MNIST: leave out the n digits marble eval holds out (seeded split, seed 0)', integer('--holdout', 0))
    .option('--stop-at <n>', 'stop after step n and save (the learning-rate schedule still spans --steps; --resume continues)', integer('--stop-at', 1))
    .option('--save-every <n>', 'save a checkpoint every n steps', integer('--save-every', 1), 500)
    .option('--sample-every <n>', 'write a sample grid every n steps (0: never)', integer('--sample-every', 0), 0)
    .option('--sample-steps <n>', 'DDIM steps for sample grids', integer('--sample-steps', 1), 50)
    .option('--sample-batch <n>', 'images per sample grid', integer('--sample-batch', 1), 16)
    .option('--resume', 'continue the run saved in OUT/checkpoint')
    .option('--profile', 'time the steps by op family (native backends) and print the table; also OUT/profile.json')
    .addOption(new Option('--backend <name>', 'engine backend').choices(['auto', 'cpu', 'wasm', 'cuda']).default('auto'))
    .addOption(
      new Option('--dtype <type>', 'GEMM type: float16 and bfloat16 train in mixed precision on tensor cores (cuda only; weights stay float32)')
        .choices([...DTYPES])
        .default('float32'),
    )
    .option('--threads <n>', 'threads for the cpu and wasm backends (default: all cores)', integer('--threads', 1))
    .option('--seed <s>', 'seed of the weights, noise, timesteps and data order (default 0)')
    .action((flags: TrainFlags, command: Command) => trainCommand(flags, command));
}
