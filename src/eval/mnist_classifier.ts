// The trained MNIST classifier on disk (models/mnist-classifier/, made by
// tools/train_mnist_classifier.mjs): loading and checking its files, and
// reading digits with it, in batches, as labels and feature vectors.
import { readFile } from 'node:fs/promises';
import path from 'node:path';

import { ConfigError, WeightsError } from '../core/errors.js';
import { tensorToFloat32 } from '../core/model/safetensors.js';
import { packageRoot } from '../node/native.js';
import { readSafetensorsFile } from '../node/safetensors_file.js';
import type { Rows } from './distance.js';
import { classifyWith } from './mnist_cnn.js';
import type { CnnParams } from './mnist_cnn.js';
import { CNN_CLASSES, cnnConfig, parameterShapes } from './mnist_cnn_spec.js';
import type { ClassifiedDigits, CnnConfig } from './mnist_cnn_spec.js';
import { loadTf } from './tfjs.js';
import type { Tf } from './tfjs.js';

/** The classifier that ships with marble, relative to the package root. */
export const DEFAULT_CLASSIFIER = path.join('models', 'mnist-classifier');

export const CLASSIFIER_FILES = { weights: 'model.safetensors', config: 'config.json' } as const;

export class MnistClassifier {
  readonly config: CnnConfig;
  readonly dir: string;
  private readonly tf: Tf;
  private readonly params: CnnParams;

  private constructor(tf: Tf, dir: string, config: CnnConfig, params: CnnParams) {
    this.tf = tf;
    this.dir = dir;
    this.config = config;
    this.params = params;
  }

  /**
   * Loads a classifier folder (default: the one shipped in the package).
   * ConfigError for a bad config.json, SafetensorsError for an unreadable
   * weights file, WeightsError when its tensors are not the architecture's,
   * BackendError when TensorFlow.js is not installed.
   */
  static async load(dir: string = path.join(packageRoot(), DEFAULT_CLASSIFIER)): Promise<MnistClassifier> {
    const configFile = path.join(dir, CLASSIFIER_FILES.config);
    let json: unknown;
    try {
      json = JSON.parse(await readFile(configFile, 'utf8'));
    } catch (err) {
      throw new ConfigError(`cannot read the MNIST classifier's ${configFile}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
    }
    const config = cnnConfig(json, configFile);
    const weightsFile = path.join(dir, CLASSIFIER_FILES.weights);
    const file = await readSafetensorsFile(weightsFile);
    const expected = parameterShapes(config);
    const missing = Object.keys(expected).filter((name) => !file.tensors.has(name));
    const unexpected = [...file.tensors.keys()].filter((name) => !(name in expected));
    const misshaped = Object.entries(expected)
      .filter(([name, shape]) => file.tensors.has(name) && file.tensors.get(name)!.shape.join(',') !== shape.join(','))
      .map(([name, shape]) => `${name}: ${JSON.stringify(file.tensors.get(name)!.shape)}, expected ${JSON.stringify(shape)}`);
    if (missing.length || unexpected.length || misshaped.length)
      throw new WeightsError(
        `${weightsFile} does not hold the classifier that ${configFile} describes:` +
          `${missing.length ? ` missing ${missing.join(', ')};` : ''}${unexpected.length ? ` unexpected ${unexpected.join(', ')};` : ''}` +
          `${misshaped.length ? ` misshaped ${misshaped.join('; ')}` : ''}`,
        missing,
        unexpected,
        misshaped,
      );
    const tf = await loadTf();
    const params: CnnParams = {};
    for (const [name, shape] of Object.entries(expected)) params[name] = tf.tensor(tensorToFloat32(file, name), shape);
    return new MnistClassifier(tf, dir, config, params);
  }

  /** Labels and penultimate features of 28x28 or 32x32 digits in [0, 1]. */
  classify(set: Rows): Promise<ClassifiedDigits> {
    return classifyWith(this.tf, this.params, this.config, set);
  }

  get classes(): number {
    return CNN_CLASSES;
  }

  dispose(): void {
    for (const t of Object.values(this.params)) t.dispose();
  }
}
