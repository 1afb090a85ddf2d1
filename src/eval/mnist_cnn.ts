// The small CNN that reads MNIST digits for `marble eval` (class accuracy,
// and the features the Fréchet distance compares): its forward graph in
// TensorFlow.js ops (its configuration, parameter table and input are in
// src/eval/mnist_cnn_spec.ts). The training script (tools/train_mnist_classifier.mjs) and the
// evaluator (src/eval/mnist_classifier.ts) both run this very graph, so
// real and generated digits go through the same computation it was trained
// with.
//
//   28x28x1 -> conv 3x3 (c1) ReLU -> max pool 2 -> conv 3x3 (c2) ReLU -> max pool 2
//           -> dense (hidden) ReLU = the features -> [dropout, training only] -> dense (10) = logits
//
// Two gradients are spelled out rather than taken from tfjs, because on its
// wasm backend parts are missing or 10x slower than the forward: the
// convolution's (no Conv2DBackpropFilter kernel in wasm, and a slow
// Conv2DBackpropInput; here both are plain convolutions), and the matmul's
// (tfjs asks for transposed operands, which the XNNPACK kernels do not do
// fast; here explicit transposes). The forward is plain tfjs, and
// test/eval_classifier.test.ts checks both gradients against tfjs's own on
// its cpu backend.
import type { Rows } from './distance.js';
import { CNN_SIDE, cnnInput } from './mnist_cnn_spec.js';
import type { ClassifiedDigits, CnnConfig } from './mnist_cnn_spec.js';
import type { Tf } from './tfjs.js';
import type { Tensor, Tensor2D, Tensor4D } from '@tensorflow/tfjs-core';

export type CnnParams = Record<string, Tensor>;

/** x [m, k] times w [k, n], with a gradient that transposes explicitly (see the file header). */
function fastMatMul(tf: Tf): (x: Tensor2D, w: Tensor2D) => Tensor2D {
  return tf.customGrad((...args) => {
    const [x, w, save] = args as [Tensor2D, Tensor2D, (t: Tensor[]) => void];
    save([x, w]);
    return {
      value: tf.matMul(x, w),
      gradFunc: (dy: Tensor, saved: Tensor[]) => {
        const [sx, sw] = saved as [Tensor2D, Tensor2D];
        return [tf.matMul(dy as Tensor2D, tf.transpose(sw)), tf.matMul(tf.transpose(sx), dy as Tensor2D)];
      },
    };
  }) as (x: Tensor2D, w: Tensor2D) => Tensor2D;
}

/**
 * 3x3 convolution, stride 1, zero "same" padding (tf.conv2d), with its
 * gradients spelled out as convolutions too (see the file header):
 *
 *   dx = conv2d(dy, w rotated 180 degrees with in/out swapped, 'same')
 *   dw[ky, kx, ci, co] = sum over n, y, x of xpad[n, y+ky, x+kx, ci] dy[n, y, x, co]
 *      = a 'valid' conv2d of xpad seen as [ci, H+2, W+2, n] (ci as the batch, n as
 *        channels) with dy seen as an [H, W, n, co] kernel.
 */
function conv3x3(tf: Tf): (x: Tensor4D, w: Tensor4D) => Tensor4D {
  return tf.customGrad((...args) => {
    const [x, w, save] = args as [Tensor4D, Tensor4D, (t: Tensor[]) => void];
    save([x, w]);
    return {
      value: tf.conv2d(x, w, 1, 'same'),
      gradFunc: (dy: Tensor, saved: Tensor[]) => {
        const [sx, sw] = saved as [Tensor4D, Tensor4D];
        const g = dy as Tensor4D;
        const rotated = tf.transpose(tf.reverse(sw, [0, 1]), [0, 1, 3, 2]);
        const dx = tf.conv2d(g, rotated, 1, 'same');
        const xpad = tf.transpose(tf.pad(sx, [[0, 0], [1, 1], [1, 1], [0, 0]]), [3, 1, 2, 0]);
        const dw = tf.transpose(tf.conv2d(xpad, tf.transpose(g, [1, 2, 0, 3]), 1, 'valid'), [1, 2, 0, 3]);
        return [dx, dw];
      },
    };
  }) as (x: Tensor4D, w: Tensor4D) => Tensor4D;
}

export interface CnnOutput {
  /** [n, 10], before softmax. */
  logits: Tensor2D;
  /** [n, hidden]: the penultimate layer (after its ReLU), the Fréchet distance's features. */
  features: Tensor2D;
}

/**
 * The forward graph on x [n, 28, 28, 1]. `dropoutKeep`, training only: a
 * [n, hidden] mask of 0 and 1/p (drawn by the caller from its own seeded
 * generator, so training is reproducible) applied to the features before
 * the last layer. Call inside tf.tidy.
 */
export function cnnForward(tf: Tf, params: CnnParams, x: Tensor4D, dropoutKeep?: Tensor2D): CnnOutput {
  const matMul = fastMatMul(tf);
  const conv = conv3x3(tf);
  const block = (input: Tensor4D, layer: string): Tensor4D =>
    tf.maxPool(tf.relu(tf.add(conv(input, params[`${layer}.weight`] as Tensor4D), params[`${layer}.bias`])) as Tensor4D, 2, 2, 'valid');
  const h = block(block(x, 'conv1'), 'conv2');
  const flat = tf.reshape(h, [h.shape[0], -1]) as Tensor2D;
  const features = tf.relu(tf.add(matMul(flat, params['fc1.weight'] as Tensor2D), params['fc1.bias'])) as Tensor2D;
  const kept = dropoutKeep ? (tf.mul(features, dropoutKeep) as Tensor2D) : features;
  const logits = tf.add(matMul(kept, params['fc2.weight'] as Tensor2D), params['fc2.bias']) as Tensor2D;
  return { logits, features };
}

/** Digits per forward call: bounds the activations to a few tens of MB. */
const BATCH = 250;

/** Reads `set` (28x28 or 32x32 digits in [0, 1]) with the given weights. */
export async function classifyWith(tf: Tf, params: CnnParams, config: CnnConfig, set: Rows): Promise<ClassifiedDigits> {
  const input = cnnInput(set);
  const pixels = CNN_SIDE * CNN_SIDE;
  const labels = new Int32Array(set.n);
  const features = new Float32Array(set.n * config.hidden);
  for (let start = 0; start < set.n; start += BATCH) {
    const size = Math.min(BATCH, set.n - start);
    const [predicted, feature] = tf.tidy(() => {
      const x = tf.tensor4d(input.subarray(start * pixels, (start + size) * pixels), [size, CNN_SIDE, CNN_SIDE, 1]) as Tensor4D;
      const out = cnnForward(tf, params, x);
      return [tf.argMax(out.logits, 1), out.features];
    });
    labels.set(await predicted.data(), start);
    features.set(await feature.data(), start * config.hidden);
    predicted.dispose();
    feature.dispose();
  }
  return { labels, features, n: set.n, d: config.hidden };
}
