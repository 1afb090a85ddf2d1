// The MNIST classifier's architecture as data, without TensorFlow.js: its
// configuration, the names and shapes of its parameters, and the input it
// reads. The graph itself is src/eval/mnist_cnn.ts; this file is apart so
// that loading and checking a classifier's files (and marble's typings)
// need no tfjs.
import { ConfigError, InputError } from '../core/errors.js';
import type { Rows } from './distance.js';

/** The side of the digits the CNN reads: MNIST's own 28. */
export const CNN_SIDE = 28;
export const CNN_CLASSES = 10;

export interface CnnConfig {
  /** Channels of the first and second convolution. */
  conv1: number;
  conv2: number;
  /** Width of the penultimate layer: the feature vector's length. */
  hidden: number;
}

/** Checks a parsed config.json; ConfigError on anything else. */
export function cnnConfig(json: unknown, what = 'classifier config'): CnnConfig {
  const o = json as Record<string, unknown> | null;
  const positive = (key: string): number => {
    const v = o?.[key];
    if (typeof v !== 'number' || !Number.isInteger(v) || v < 1 || v > 4096) throw new ConfigError(`${what}: "${key}" must be a positive integer, got ${JSON.stringify(v)}`);
    return v;
  };
  if (typeof o !== 'object' || o === null) throw new ConfigError(`${what}: expected a JSON object`);
  return { conv1: positive('conv1'), conv2: positive('conv2'), hidden: positive('hidden') };
}

/** Every parameter's name and shape (convolutions HWIO, as tf.conv2d takes them; dense [in, out]). */
export function parameterShapes(c: CnnConfig): Record<string, number[]> {
  const pooled = (CNN_SIDE / 4) * (CNN_SIDE / 4) * c.conv2;
  return {
    'conv1.weight': [3, 3, 1, c.conv1],
    'conv1.bias': [c.conv1],
    'conv2.weight': [3, 3, c.conv1, c.conv2],
    'conv2.bias': [c.conv2],
    'fc1.weight': [pooled, c.hidden],
    'fc1.bias': [c.hidden],
    'fc2.weight': [c.hidden, CNN_CLASSES],
    'fc2.bias': [CNN_CLASSES],
  };
}

/**
 * Digits as the CNN takes them: [n, 28, 28] values in [0, 1]. Rows of
 * 28x28 pass as they are; rows of 32x32 (marble's MNIST models, and
 * MnistDataset at size 32: the digit padded with 2 background pixels a
 * side) lose that 2-pixel frame. Real and generated digits both come
 * through here.
 */
export function cnnInput(set: Rows): Float32Array {
  if (set.d === CNN_SIDE * CNN_SIDE) return set.data;
  const side = Math.round(Math.sqrt(set.d));
  if (side * side !== set.d || side !== CNN_SIDE + 4)
    throw new InputError(`the MNIST classifier reads 28x28 or 32x32 one-channel digits, not rows of ${set.d} values`);
  const out = new Float32Array(set.n * CNN_SIDE * CNN_SIDE);
  for (let i = 0; i < set.n; i++)
    for (let y = 0; y < CNN_SIDE; y++) {
      const from = i * set.d + (y + 2) * side + 2;
      out.set(set.data.subarray(from, from + CNN_SIDE), (i * CNN_SIDE + y) * CNN_SIDE);
    }
  return out;
}

/** What the classifier says about a set of digits. */
export interface ClassifiedDigits {
  /** The most likely class of each digit. */
  labels: Int32Array;
  /** [n, hidden] penultimate-layer activations, row-major. */
  features: Float32Array;
  n: number;
  d: number;
}
