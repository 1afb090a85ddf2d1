// onnxruntime-node and onnxruntime-web, when installed, for marble bench's and npm run bench's side-by-side
// benchmark rows and the ONNX export's parity test. Neither is a dependency
// of marble (`npm run bench:ort` installs them without saving; README's
// Speed section says why): they are imported by a name TypeScript does not
// resolve, and typed here by the little we use.

export type OrtRuntime = 'onnxruntime-node' | 'onnxruntime-web';

export interface OrtTensor {
  readonly data: Float32Array | BigInt64Array | unknown;
  readonly dims: readonly number[];
}

export interface OrtSession {
  run(feeds: Record<string, OrtTensor>): Promise<Record<string, OrtTensor>>;
  release(): Promise<void>;
}

export interface OrtModule {
  Tensor: new (type: 'float32' | 'int64', data: Float32Array | BigInt64Array, dims: readonly number[]) => OrtTensor;
  InferenceSession: { create(model: Uint8Array, options?: Record<string, unknown>): Promise<OrtSession> };
  env: { wasm?: { numThreads?: number; simd?: boolean } };
}

/** The runtime's module and version, or null when it is not installed (any other load failure throws). */
export async function loadOrt(runtime: OrtRuntime): Promise<{ ort: OrtModule; version: string } | null> {
  let loaded: Record<string, unknown>;
  try {
    const specifier: string = runtime; // a variable: tsc must not require the package
    loaded = (await import(specifier)) as Record<string, unknown>;
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ERR_MODULE_NOT_FOUND' || code === 'MODULE_NOT_FOUND') return null;
    throw e;
  }
  // onnxruntime-node is CommonJS: its API arrives as the default export
  const ort = ((loaded.InferenceSession ? loaded : loaded.default) ?? loaded) as unknown as OrtModule & { env: { versions?: Record<string, string> } };
  const version = ort.env.versions?.[runtime === 'onnxruntime-node' ? 'node' : 'web'] ?? ort.env.versions?.common ?? 'unknown';
  return { ort, version };
}

/** A session with the runtime's fastest CPU settings for `threads` threads. */
export async function createOrtSession(runtime: OrtRuntime, ort: OrtModule, model: Uint8Array, threads: number): Promise<OrtSession> {
  if (runtime === 'onnxruntime-web') {
    // the wasm backend's thread count is global and read when the first session is created
    ort.env.wasm!.numThreads = threads;
    return ort.InferenceSession.create(model, { executionProviders: ['wasm'], graphOptimizationLevel: 'all' });
  }
  return ort.InferenceSession.create(model, {
    executionProviders: ['cpu'],
    graphOptimizationLevel: 'all',
    intraOpNumThreads: threads,
    interOpNumThreads: 1,
  });
}
