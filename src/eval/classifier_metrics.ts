// What the MNIST classifier (src/eval/mnist_classifier.ts) says about a set
// of generated digits, next to the k-NN metrics of src/eval/metrics.ts:
//
//   class accuracy   the share of samples the CNN reads as the class they were
//                    drawn for; beside it, how often it reads held-out real
//                    digits right (its own error rate bounds what this can show)
//   Fréchet distance between the samples' and the held-out digits' CNN features
//                    (src/eval/frechet.ts), beside its floor: the same distance
//                    between as many real training digits and the held-out ones,
//                    which is what a perfect model would score with this many
//                    samples (the distance has a finite-sample bias, so the two
//                    must be measured with equal set sizes)
import { InputError } from '../core/errors.js';
import { agreement } from './classify.js';
import type { Rows } from './distance.js';
import { frechetDistance, gaussianOf } from './frechet.js';
import type { Gaussian } from './frechet.js';
import type { MnistClassifier } from './mnist_classifier.js';
import type { LabeledRows } from './mnist_reference.js';

/** The real side, computed once per evaluation. */
export interface ClassifierReference {
  classifier: MnistClassifier;
  /** The CNN's accuracy on the held-out real digits. */
  heldOutAccuracy: number;
  heldOut: Gaussian;
  /** Fréchet distance between `floorDigits` training digits and the held-out digits. */
  floor: number;
  floorDigits: number;
}

export interface ClassifierMetrics {
  /** Share of samples the CNN labels as the class asked for; null for an unconditional model. */
  classAccuracy: number | null;
  /** Fréchet distance between the samples' features and the held-out digits'. */
  frechet: number;
  /** frechet / the reference's floor. */
  frechetRatio: number;
}

/** Reads the held-out digits and `floorSet` (real training digits, as many as there will be samples). */
export async function buildClassifierReference(classifier: MnistClassifier, heldOut: LabeledRows, floorSet: Rows): Promise<ClassifierReference> {
  const held = await classifier.classify(heldOut);
  const heldOutGaussian = gaussianOf({ data: held.features, n: held.n, d: held.d });
  const floorRead = await classifier.classify(floorSet);
  const floor = frechetDistance(gaussianOf({ data: floorRead.features, n: floorRead.n, d: floorRead.d }), heldOutGaussian);
  return { classifier, heldOutAccuracy: agreement(held.labels, heldOut.labels), heldOut: heldOutGaussian, floor, floorDigits: floorSet.n };
}

/** `generated.labels`: the class each sample was drawn for, if the model is class-conditional. */
export async function measureWithClassifier(generated: Rows & { labels?: ArrayLike<number> | null }, reference: ClassifierReference): Promise<ClassifierMetrics> {
  if (generated.n !== reference.floorDigits)
    throw new InputError(`the Fréchet floor was measured with ${reference.floorDigits} digits, not the ${generated.n} samples: the two are only comparable at equal sizes`);
  const read = await reference.classifier.classify(generated);
  const frechet = frechetDistance(gaussianOf({ data: read.features, n: read.n, d: read.d }), reference.heldOut);
  return {
    classAccuracy: generated.labels ? agreement(read.labels, generated.labels) : null,
    frechet,
    frechetRatio: frechet / reference.floor,
  };
}
