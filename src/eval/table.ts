// The steps-versus-quality table `marble eval --table` writes: one markdown
// row per sampler setting, under a header that says what was measured, so
// the file can be pasted into models/README.md as it is.
import type { ClassifierMetrics, ClassifierReference } from './classifier_metrics.js';
import type { Reference, SampleMetrics } from './metrics.js';

export interface TableRow {
  scheduler: 'ddim' | 'ddpm';
  steps: number;
  eta: number | null;
  /** DDIM: epsilon re-derived from the clipped x0 (use_clipped_model_output), rather than the model's own. */
  clippedModelOutput?: boolean;
  metrics: SampleMetrics;
  /** The MNIST CNN's rows, when `marble eval` ran it. */
  classifier?: ClassifierMetrics | null;
  /** Wall time of generating the samples, seconds. */
  seconds: number;
}

export interface TableContext {
  model: string;
  samples: number;
  seed: number;
  batch: number;
  backend: string;
  heldOut: number;
  train: number;
  k: number;
  reference: Reference;
  /** Precision/recall of as many real training digits as samples, against the held-out: what a perfect model would score. */
  realBaseline: { precision: number; recall: number };
  classifier?: ClassifierReference | null;
  /** The classifier folder as the table should name it (default: the folder it was loaded from). */
  classifierDir?: string;
}

const f3 = (x: number) => x.toFixed(3);

export function tableHeader(c: TableContext): string {
  return [
    `Model \`${c.model}\`: ${c.samples} samples (classes cycling), seed ${c.seed}, batch ${c.batch}, ${c.backend} backend.`,
    `Real digits: ${c.heldOut} held out of the mnist package's 10,000 (seeded split), ${c.train} as the training reference.`,
    `Pixel space, values in [0, 1]; precision/recall with k = ${c.k} (Kynkäänniemi et al. 2019).`,
    `Real-data baseline (${c.samples} training digits vs the held-out): precision ${f3(c.realBaseline.precision)}, recall ${f3(c.realBaseline.recall)}; ` +
      `held-out digits' distance to the nearest training digit: mean ${f3(c.reference.heldOutNn.mean)}, median ${f3(c.reference.heldOutNn.median)}.`,
    `Class accuracy: the share of samples a ${c.k}-NN vote among the training digits labels as the class asked for ` +
      `(the same vote reads the held-out real digits right ${f3(c.reference.heldOutClassAccuracy)} of the time).`,
    ...(c.classifier
      ? [
          `CNN class accuracy: the same share by the MNIST CNN (\`${c.classifierDir ?? c.classifier.classifier.dir}\`; ${f3(c.classifier.heldOutAccuracy)} right on the held-out digits). ` +
            `FD: Fréchet distance between the samples' and the held-out digits' CNN features; its floor (${c.classifier.floorDigits} real training digits vs the held-out) is ${f3(c.classifier.floor)}, and FD / floor is the ratio column.`,
        ]
      : []),
    '',
    '| sampler | steps | eta | epsilon | precision | recall | class accuracy | CNN class accuracy | FD | FD / floor | NN to train, mean | NN to train, median | below held-out p1 | sampling time (s) |',
    '|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|',
  ].join('\n');
}

export function tableRow(r: TableRow): string {
  const m = r.metrics;
  // which epsilon the DDIM update's direction term uses (see models/README.md)
  const epsilon = r.scheduler === 'ddim' ? (r.clippedModelOutput ? 'from clipped x0' : 'model') : '-';
  const c = r.classifier;
  const cnn = c ? `${c.classAccuracy === null ? '-' : f3(c.classAccuracy)} | ${f3(c.frechet)} | ${c.frechetRatio.toFixed(2)}` : '- | - | -';
  return `| ${r.scheduler} | ${r.steps} | ${r.eta ?? '-'} | ${epsilon} | ${f3(m.precision)} | ${f3(m.recall)} | ${m.classAccuracy === null ? '-' : f3(m.classAccuracy)} | ${cnn} | ${f3(m.nnToTrain.mean)} | ${f3(m.nnToTrain.median)} | ${f3(m.belowHeldOutP1)} | ${r.seconds.toFixed(1)} |`;
}
