// `marble eval`: how good are a model's MNIST digits? Samples N digits
// (classes cycling), and compares them in pixel space with N real digits
// held out of the mnist package's 10,000 (src/eval/mnist_reference.ts):
//
//   precision, recall   improved k-NN precision/recall, k = 3 (src/eval/precision_recall.ts)
//   NN to train         L2 distance of each sample to its nearest training digit, next to
//                       the same for the held-out real digits (copying shows as much smaller)
//   CNN class accuracy  the share of samples a small CNN trained on the training digits
//                       (models/mnist-classifier) reads as the class asked for
//   Fréchet distance    between the samples' and the held-out digits' CNN features, next to
//                       its floor: the same between as many real training digits and the
//                       held-out (src/eval/classifier_metrics.ts)
//
// A baseline line scores N real training digits the same way: what a
// perfect model would get with this many samples. --table runs DDIM at
// several step counts with eta 0 and 1 and writes a markdown table, one row
// at a time (an interrupted run keeps the rows it finished).
import { mkdir, readdir, writeFile, appendFile } from 'node:fs/promises';
import path from 'node:path';
import { Command, InvalidArgumentError, Option } from 'commander';

import { InputError, MarbleError } from '../core/errors.js';
import { MnistDataset } from '../data/mnist.js';
import { buildReference, measureSamples } from '../eval/metrics.js';
import type { Reference, SampleMetrics } from '../eval/metrics.js';
import { buildClassifierReference, measureWithClassifier } from '../eval/classifier_metrics.js';
import type { ClassifierMetrics, ClassifierReference } from '../eval/classifier_metrics.js';
import { MnistClassifier } from '../eval/mnist_classifier.js';
import { datasetRows, evenSubset, mnistSplit } from '../eval/mnist_reference.js';
import { generateSamples, modelCacheKey } from '../eval/generate.js';
import { precisionRecall } from '../eval/precision_recall.js';
import { tableHeader, tableRow } from '../eval/table.js';
import type { TableContext, TableRow } from '../eval/table.js';
import { imagesToGridPng, samplesToImages } from '../core/image/png.js';
import { loadPipeline } from '../core/pipeline.js';
import type { Pipeline } from '../core/pipeline.js';
import { resolveSampleModel } from './embedded_model.js';
import { SOLVER_NAMES, type SolverName } from '../core/schedulers/solvers.js';

const K = 3;
/** The DDIM grid of --table: the issue's steps-versus-quality question. */
const TABLE_STEPS = [10, 20, 50, 100, 1000];
const TABLE_ETAS = [0, 1];

interface EvalFlags {
  model?: string;
  samples: number;
  scheduler: 'ddim' | 'ddpm' | SolverName;
  steps?: number;
  eta: number;
  seed: number;
  batch: number;
  realHoldout: number;
  splitSeed: number;
  backend: 'auto' | 'cpu' | 'wasm' | 'cuda';
  json?: string;
  table?: string;
  tableSteps: number[];
  tableEtas: number[];
  clippedModelOutput?: boolean;
  guidance?: number;
  grid?: string;
  cache?: string;
  /** A classifier folder; undefined: the shipped one; false: --no-classifier. */
  classifier?: string | false;
}

/** A folder as the reports show it: relative when under the working folder (e.g. models/mnist). */
function shown(dir: string): string {
  const relative = path.relative(process.cwd(), dir);
  return relative && !relative.startsWith('..') && !path.isAbsolute(relative) ? relative : dir;
}

/** The model folder's weights and configs (pipeline or bare UNet folder), for the cache key. */
async function modelFiles(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { recursive: true, withFileTypes: true });
  return entries
    .filter((e) => e.isFile() && (e.name.endsWith('.safetensors') || e.name.endsWith('.json')))
    .map((e) => path.join(e.parentPath ?? e.path, e.name));
}

function integer(name: string, min: number, max = Number.MAX_SAFE_INTEGER) {
  return (value: string): number => {
    const n = Number(value);
    if (!Number.isInteger(n) || n < min || n > max) throw new InvalidArgumentError(`${name} must be an integer from ${min} to ${max}`);
    return n;
  };
}

function etaList(value: string): number[] {
  const etas = value.split(',').map((s) => Number(s.trim()));
  if (etas.length === 0 || !etas.every((n) => Number.isFinite(n) && n >= 0))
    throw new InvalidArgumentError('--table-etas must be a comma-separated list of numbers >= 0');
  return etas;
}

function stepList(value: string): number[] {
  const steps = value.split(',').map((s) => Number(s.trim()));
  if (steps.length === 0 || !steps.every((n) => Number.isInteger(n) && n >= 1))
    throw new InvalidArgumentError('--table-steps must be a comma-separated list of positive integers');
  return steps;
}

const f3 = (x: number) => x.toFixed(3);

function describeClassifier(m: ClassifierMetrics, c: ClassifierReference): string[] {
  return [
    ...(m.classAccuracy === null
      ? []
      : [`class accuracy by the MNIST CNN: ${f3(m.classAccuracy)} (it reads the held-out real digits right ${f3(c.heldOutAccuracy)} of the time)`]),
    `Fréchet distance in the CNN's feature space, samples vs held-out: ${f3(m.frechet)}; floor (${c.floorDigits} real training digits vs held-out) ${f3(c.floor)}; ratio ${m.frechetRatio.toFixed(2)}x`,
  ];
}

/** The classifier rows of the --json output. */
function classifierJson(m: ClassifierMetrics | null, c: ClassifierReference | null) {
  if (!m || !c) return null;
  return { dir: shown(c.classifier.dir), heldOutAccuracy: c.heldOutAccuracy, classAccuracy: m.classAccuracy, frechet: m.frechet, frechetFloor: c.floor, frechetRatio: m.frechetRatio, floorDigits: c.floorDigits, features: c.classifier.config.hidden };
}

function describe(metrics: SampleMetrics, reference: Reference): string[] {
  return [
    `precision ${f3(metrics.precision)}  recall ${f3(metrics.recall)}  (k = ${metrics.k})`,
    `nearest training digit, L2 in [0, 1] pixels: samples mean ${f3(metrics.nnToTrain.mean)} median ${f3(metrics.nnToTrain.median)} min ${f3(metrics.nnToTrain.min)}; ` +
      `held-out real mean ${f3(reference.heldOutNn.mean)} median ${f3(reference.heldOutNn.median)} min ${f3(reference.heldOutNn.min)}`,
    `samples nearer to the training set than 99% of held-out digits: ${(100 * metrics.belowHeldOutP1).toFixed(1)}% (about 1% when the model does not copy)`,
    ...(metrics.classAccuracy === null
      ? []
      : [`class accuracy (${metrics.k}-NN vote among training digits): ${f3(metrics.classAccuracy)}; the same vote on held-out real digits ${f3(reference.heldOutClassAccuracy)}`]),
  ];
}

/** Loads the real side: held-out rows, training reference rows, and their NN distances. */
async function loadReference(pipeline: Pipeline, flags: EvalFlags, classifier: MnistClassifier | null) {
  const config = pipeline.unet.config;
  if (config.inChannels !== 1) throw new InputError(`marble eval compares with MNIST digits: the model must have in_channels 1, not ${config.inChannels}`);
  const size = config.sampleSize;
  const side = Array.isArray(size) ? size[0] : size;
  if (typeof side !== 'number' || (Array.isArray(size) && size[0] !== size[1]))
    throw new InputError('marble eval needs a square sample_size in the model config (MNIST digits are square)');
  const dataset = await MnistDataset.load({ size: side, channels: 1 });
  const split = mnistSplit(dataset.length, flags.realHoldout, flags.splitSeed);
  const heldOut = await datasetRows(dataset, split.heldOut);
  const train = await datasetRows(dataset, split.train);
  console.error(`comparing with ${heldOut.n} held-out MNIST digits (split seed ${flags.splitSeed}); ${train.n} training digits as the copy reference`);
  const started = performance.now();
  const reference = buildReference(heldOut, train, K);
  // Real digits scored as if they were samples: the ceiling for this many samples.
  const baseline = evenSubset(train, Math.min(flags.samples, train.n));
  const realBaseline = precisionRecall(heldOut, baseline, K);
  console.error(
    `real-data baseline (${baseline.n} training digits vs held-out): precision ${f3(realBaseline.precision)} recall ${f3(realBaseline.recall)}; ` +
      `k-NN class vote right on ${f3(reference.heldOutClassAccuracy)} of the held-out (${((performance.now() - started) / 1000).toFixed(1)} s)`,
  );
  let classifierReference: ClassifierReference | null = null;
  if (classifier) {
    // The Fréchet floor uses as many real digits as there will be samples: the distance's bias depends on the set sizes.
    if (baseline.n !== flags.samples)
      throw new InputError(`the Fréchet floor needs as many training digits as samples: --samples ${flags.samples} is more than the ${train.n} there are (or pass --no-classifier)`);
    classifierReference = await buildClassifierReference(classifier, heldOut, baseline);
    console.error(
      `MNIST CNN (${shown(classifier.dir)}): reads ${f3(classifierReference.heldOutAccuracy)} of the held-out digits right; ` +
        `Fréchet floor (${baseline.n} training digits vs held-out) ${f3(classifierReference.floor)}`,
    );
  }
  return { reference, realBaseline, side, classifierReference };
}

async function evalCommand(flags: EvalFlags): Promise<void> {
  if (flags.scheduler !== 'ddim' && flags.eta !== 0) throw new InputError('--eta applies to --scheduler ddim only');
  if (flags.scheduler !== 'ddim' && flags.clippedModelOutput && !flags.table)
    throw new InputError('--clipped-model-output applies to --scheduler ddim only');
  const resolved = resolveSampleModel(flags.model);
  const pipeline = await loadPipeline(resolved, { backend: flags.backend });
  const modelDir = shown(resolved);
  const { unet } = pipeline;
  let disposeClassifier = () => {};
  const controller = new AbortController();
  const onSigint = () => controller.abort(new MarbleError('ERR_MARBLE_ABORTED', 'interrupted'));
  process.once('SIGINT', onSigint);
  try {
    // first, so that a bad classifier folder or a missing TensorFlow.js stops the run before any work
    const classifier = flags.classifier === false ? null : await MnistClassifier.load(flags.classifier);
    disposeClassifier = () => classifier?.dispose();
    const { reference, realBaseline, side, classifierReference } = await loadReference(pipeline, flags, classifier);
    const cache = flags.cache ? { dir: flags.cache, modelKey: await modelCacheKey(await modelFiles(resolved)) } : undefined;
    const run = async (scheduler: 'ddim' | 'ddpm' | SolverName, steps: number, eta: number | undefined) => {
      const clipped = scheduler === 'ddim' && flags.clippedModelOutput === true;
      const guided = flags.guidance !== undefined && flags.guidance !== 1 ? `, guidance ${flags.guidance}` : '';
      const label = `${scheduler} ${steps} steps${eta === undefined ? '' : `, eta ${eta}`}${clipped ? ', epsilon from clipped x0' : ''}${guided}`;
      const generated = await generateSamples({
        unet,
        scheduler: pipeline.scheduler(scheduler),
        count: flags.samples,
        steps,
        eta,
        useClippedModelOutput: clipped || undefined,
        guidanceScale: flags.guidance,
        seed: flags.seed,
        batchSize: flags.batch,
        signal: controller.signal,
        cache,
        onBatch: (done, total, fromCache) => console.error(`${label}: ${done}/${total} samples${fromCache ? ' (cached)' : ''}`),
      });
      const metrics = measureSamples(generated, reference, K);
      const classifierMetrics = classifierReference ? await measureWithClassifier(generated, classifierReference) : null;
      return { generated, metrics, classifierMetrics, label };
    };

    if (flags.table) {
      const context: TableContext = {
        model: modelDir,
        samples: flags.samples,
        seed: flags.seed,
        batch: flags.batch,
        backend: unet.backend.name,
        heldOut: reference.heldOut.n,
        train: reference.train.n,
        k: K,
        reference,
        realBaseline,
        classifier: classifierReference,
        classifierDir: classifierReference ? shown(classifierReference.classifier.dir) : undefined,
      };
      await mkdir(path.dirname(path.resolve(flags.table)), { recursive: true });
      await writeFile(flags.table, `${tableHeader(context)}\n`);
      const rows: TableRow[] = [];
      for (const steps of flags.tableSteps)
        for (const eta of flags.tableEtas) {
          const { generated, metrics, classifierMetrics, label } = await run('ddim', steps, eta);
          const row: TableRow = { scheduler: 'ddim', steps, eta, clippedModelOutput: flags.clippedModelOutput === true, metrics, classifier: classifierMetrics, seconds: generated.seconds };
          rows.push(row);
          await appendFile(flags.table, `${tableRow(row)}\n`);
          console.log(
            `${label}: precision ${f3(metrics.precision)} recall ${f3(metrics.recall)}` +
              `${metrics.classAccuracy === null ? '' : ` class accuracy ${f3(metrics.classAccuracy)}`}, NN to train mean ${f3(metrics.nnToTrain.mean)} ` +
              `(held-out ${f3(reference.heldOutNn.mean)}), below held-out p1 ${(100 * metrics.belowHeldOutP1).toFixed(1)}%, sampling ${generated.seconds.toFixed(1)} s`,
          );
          if (classifierMetrics && classifierReference) for (const line of describeClassifier(classifierMetrics, classifierReference)) console.log(`  ${line}`);
        }
      if (flags.json) {
        const classifier = classifierReference && { dir: shown(classifierReference.classifier.dir), heldOutAccuracy: classifierReference.heldOutAccuracy, frechetFloor: classifierReference.floor, floorDigits: classifierReference.floorDigits };
        await writeFile(flags.json, `${JSON.stringify({ model: modelDir, samples: flags.samples, seed: flags.seed, realBaseline, heldOutNn: reference.heldOutNn, heldOutClassAccuracy: reference.heldOutClassAccuracy, classifier, rows }, null, 2)}\n`);
      }
      console.log(`wrote ${flags.table}`);
      return;
    }

    const steps = flags.steps ?? (flags.scheduler === 'ddim' ? 50 : flags.scheduler !== 'ddpm' ? 20 : pipeline.scheduler('ddpm').config.numTrainTimesteps);
    const { generated, metrics, classifierMetrics, label } = await run(flags.scheduler, steps, flags.scheduler === 'ddim' ? flags.eta : undefined);
    console.log(`${modelDir}, ${flags.samples} samples, ${label}, seed ${flags.seed}, ${unet.backend.name} backend, sampling ${generated.seconds.toFixed(1)} s`);
    for (const line of describe(metrics, reference)) console.log(line);
    console.log(`real-data baseline: precision ${f3(realBaseline.precision)} recall ${f3(realBaseline.recall)}`);
    if (classifierMetrics && classifierReference) for (const line of describeClassifier(classifierMetrics, classifierReference)) console.log(line);
    if (flags.grid) {
      const count = Math.min(100, generated.n);
      // rows are pixels in [0, 1]; the PNG helpers take model space
      const modelSpace = generated.data.subarray(0, count * generated.d).map((v) => v * 2 - 1);
      await writeFile(flags.grid, imagesToGridPng(samplesToImages(modelSpace, [count, 1, side, side]), { columns: 10 }));
      console.log(`wrote ${flags.grid} (the first ${count} samples)`);
    }
    if (flags.json)
      await writeFile(
        flags.json,
        `${JSON.stringify({ model: modelDir, samples: flags.samples, scheduler: flags.scheduler, steps, eta: flags.scheduler === 'ddim' ? flags.eta : null, clippedModelOutput: flags.scheduler === 'ddim' && flags.clippedModelOutput === true, guidanceScale: flags.guidance ?? 1, seed: flags.seed, seconds: generated.seconds, ...metrics, heldOutNn: reference.heldOutNn, heldOutClassAccuracy: reference.heldOutClassAccuracy, realBaseline, classifier: classifierJson(classifierMetrics, classifierReference) }, null, 2)}\n`,
      );
  } finally {
    process.off('SIGINT', onSigint);
    disposeClassifier();
    unet.dispose();
  }
}

/** Adds `marble eval` to the program. */
export function registerEvalCommand(program: Command): void {
  program
    .command('eval')
    .description('measure an MNIST model: k-NN precision/recall against held-out digits, nearest-training-digit distances, class accuracy and Fréchet distance by an MNIST CNN')
    .option('--model <dir>', 'pipeline or UNet2DModel folder (default: the embedded MNIST model)')
    .option('--samples <n>', 'digits to generate (classes cycling)', integer('--samples', K + 1), 1000)
    .addOption(new Option('--scheduler <kind>', 'sampler (the solvers: dpm++, unipc, euler, euler-a, heun)').choices(['ddim', 'ddpm', ...SOLVER_NAMES]).default('ddim'))
    .option('--steps <n>', 'inference steps (default: 50 for ddim, num_train_timesteps for ddpm)', integer('--steps', 1))
    .option('--eta <e>', 'DDIM eta', (v: string) => {
      const n = Number(v);
      if (!Number.isFinite(n) || n < 0) throw new InvalidArgumentError('--eta must be a number >= 0');
      return n;
    }, 0)
    .option('--clipped-model-output', "DDIM: re-derive epsilon from the clipped x0 (diffusers' use_clipped_model_output; matters when the scheduler config clips)")
    .option('--guidance <s>', 'classifier-free guidance scale (models trained with --cfg-dropout; default 1: none)', (v: string) => {
      const s = Number(v);
      if (v.trim() === '' || !Number.isFinite(s) || s < 0) throw new InvalidArgumentError('--guidance must be a number >= 0');
      return s;
    })
    .option('--seed <s>', 'sampling seed, below 2^32 (batch b uses seed * 2^32 + b)', integer('--seed', 0, 2 ** 32 - 1), 0)
    .option('--batch <b>', 'images per sampling call (the samples depend on it too)', integer('--batch', 1), 100)
    .option('--real-holdout <n>', 'real digits held out of the 10,000 to compare with', integer('--real-holdout', K + 1, 9999), 1000)
    .option('--split-seed <s>', 'seed of the held-out split', integer('--split-seed', 0), 0)
    .addOption(new Option('--backend <name>', 'engine backend').choices(['auto', 'cpu', 'wasm', 'cuda']).default('auto'))
    .option('--json <file>', 'also write the results as JSON')
    .option('--table <file>', 'run DDIM at --table-steps x --table-etas and write a markdown table (--scheduler, --steps, --eta are then unused)')
    .addOption(new Option('--table-steps <list>', 'step counts for --table').argParser(stepList).default(TABLE_STEPS, TABLE_STEPS.join(',')))
    .addOption(new Option('--table-etas <list>', 'DDIM etas for --table').argParser(etaList).default(TABLE_ETAS, TABLE_ETAS.join(',')))
    .option('--grid <file>', 'write the first 100 samples as a PNG grid')
    .option('--classifier <dir>', 'MNIST classifier folder for the CNN rows (default: models/mnist-classifier; needs @tensorflow/tfjs-core and @tensorflow/tfjs-backend-wasm)')
    .option('--no-classifier', 'leave out the CNN rows (class accuracy by the CNN, Fréchet distance)')
    .option('--cache <dir>', 'keep finished batches here and reuse them: an interrupted run resumes (keyed by weights, sampler, seed, batch)')
    .action((flags: EvalFlags) => evalCommand(flags));
}
