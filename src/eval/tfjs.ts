// TensorFlow.js for the MNIST classifier (src/eval/mnist_cnn.ts), loaded
// on demand: it is a development dependency, not one of marble's, so a
// published marble runs without it and only the classifier rows of
// `marble eval` need it.
//
// The WebAssembly backend (XNNPACK kernels), not the plain-JS "cpu" one: on
// this network it is 10 to 30 times faster (the cpu backend's slices and
// filter gradients are naive loops), and wasm arithmetic is the same on
// every machine, so the classifier reads the same digits the same way
// everywhere. tfjs-node is no option: it downloads libtensorflow at install.
import { BackendError } from '../core/errors.js';

export type Tf = typeof import('@tensorflow/tfjs-core');

export const TFJS_PACKAGES = ['@tensorflow/tfjs-core', '@tensorflow/tfjs-backend-wasm'] as const;

/** How a module is imported: `import()` itself, or a stand-in in tests. */
export type Importer = (specifier: string) => Promise<unknown>;

/**
 * tfjs-core with the wasm backend active. A BackendError that names the
 * packages to install when they are missing; other failures as they are.
 */
export async function importTf(importModule: Importer = (specifier) => import(specifier)): Promise<Tf> {
  let tf: Tf;
  try {
    tf = (await importModule(TFJS_PACKAGES[0])) as Tf;
    await importModule(TFJS_PACKAGES[1]); // registers the 'wasm' backend
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code !== 'ERR_MODULE_NOT_FOUND' && code !== 'MODULE_NOT_FOUND') throw err;
    throw new BackendError(
      `the MNIST classifier needs TensorFlow.js, which marble does not install: npm install ${TFJS_PACKAGES.map((p) => `${p}@4`).join(' ')} (${(err as Error).message})`,
    );
  }
  if (!(await tf.setBackend('wasm'))) throw new BackendError('TensorFlow.js could not start its wasm backend');
  return tf;
}

let loading: Promise<Tf> | null = null;

/** importTf(), once per process (a failure is not kept, so a later call tries again). */
export function loadTf(): Promise<Tf> {
  loading ??= importTf().catch((err: unknown) => {
    loading = null;
    throw err;
  });
  return loading;
}
